//! One `[[client.allow]]` or `[[client.deny]]` entry after validation.

use crate::{AccessSet, ClientId, Location, PatternKind, RootId, RuleId};

/// Whether a rule grants or refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Effect {
    Allow,
    Deny,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        }
    }
}

/// How the broker may resolve symlinks under a rule's root.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Symlinks {
    /// `RESOLVE_NO_SYMLINKS`: any symlink on the way fails the open.
    #[default]
    None,
    /// Symlinks are followed while they stay beneath the rule's root
    /// (`RESOLVE_BENEATH` alone). Whoever can write inside the root can then point an
    /// allowed name at any other file in it, which is why load refuses this option
    /// when a deny rule of the same client lies inside the root.
    Beneath,
}

impl Symlinks {
    pub fn as_str(self) -> &'static str {
        match self {
            Symlinks::None => "none",
            Symlinks::Beneath => "beneath",
        }
    }
}

/// How the broker opens and checks a file granted by an allow rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleOptions {
    pub symlinks: Symlinks,
    /// Allow FIFOs, sockets and character/block devices, not only regular files (and
    /// directories for `directory` access).
    pub devices: bool,
    /// Allow regular files with more than one link: a hard link is a way to bring a
    /// file from outside the root under an allowed name.
    pub hardlinks: bool,
    /// Mode of files made by `create`, before the broker's umask of 0.
    pub create_mode: u32,
    /// `RESOLVE_NO_XDEV`: refuse to cross a mount point beneath the root.
    pub same_filesystem: bool,
    /// Owner and group given to files made by `create`, before the descriptor is
    /// passed; `None` leaves the broker's own (the kernel's default for a new file).
    pub owner: Option<u32>,
    pub group: Option<u32>,
    /// Pass descriptors even for files whose own mode would let the peer reopen them
    /// (through `/proc/self/fd`) with more access than the rule grants. Off by
    /// default: a descriptor for reading must not be a way to write.
    pub allow_reopen: bool,
}

impl RuleOptions {
    pub const DEFAULT_CREATE_MODE: u32 = 0o600;
}

impl Default for RuleOptions {
    fn default() -> Self {
        RuleOptions {
            symlinks: Symlinks::None,
            devices: false,
            hardlinks: false,
            create_mode: RuleOptions::DEFAULT_CREATE_MODE,
            same_filesystem: false,
            owner: None,
            group: None,
            allow_reopen: false,
        }
    }
}

/// A validated rule. Deny rules carry an empty access set, default options and no
/// root: they only ever refuse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub id: RuleId,
    pub client: ClientId,
    pub effect: Effect,
    /// The path exactly as written in the file, for logs and explanations.
    pub pattern: String,
    pub kind: PatternKind,
    pub access: AccessSet,
    pub options: RuleOptions,
    /// The held directory this rule opens beneath; `Some` for every allow rule.
    pub root: Option<RootId>,
    /// Where the rule's `path` value is in the file.
    pub location: Location,
    /// Made from a `learn_scope` entry, not written as a rule: it grants only while
    /// the client learns, and a learned policy replaces it with what was used.
    pub learning: bool,
    /// A deny rule with `listed = true`: the names it denies show in listings, so a
    /// program walking a tree meets the carve-out as an error (as it would meet an
    /// unreadable directory) instead of not at all. `false` for allow rules.
    pub listed: bool,
}
