//! Landlock for the broker: its policy's roots with the rights the policy grants, its
//! policy's directory and the user database for reloads, and nothing else.

use super::{ConfineError, LandlockKept, root_needs_writes};
use crate::request::roots::Roots;
use fdbroker_policy::Policy;
use landlock::{
    ABI, Access as _, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
};
use std::path::{Path, PathBuf};

/// Filesystem rights are those of ABI 6 (all of v1..v5); later ABIs add rights over
/// Unix socket paths that would also block the broker's own `sd_notify`.
const FS_ABI: ABI = ABI::V6;

/// Files the broker may still read to reload: its policy's directory (editors replace
/// the file by rename, so the directory, not the inode) and the user database that
/// resolves names in it.
const NAME_DATABASES: [&str; 3] = ["/etc/passwd", "/etc/group", "/etc/nsswitch.conf"];

pub(super) fn restrict_filesystem(
    policy: &Policy,
    roots: &Roots,
    policy_file: Option<&Path>,
    own_socket: Option<&Path>,
) -> Result<Option<LandlockKept>, ConfineError> {
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    // RemoveFile: a file created for a request that is refused after the fact (its
    // audit line could not be written, `audit_failure = "refuse"`) is removed again.
    let write = AccessFs::WriteFile | AccessFs::Truncate | AccessFs::MakeReg | AccessFs::RemoveFile;
    let mut created = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(FS_ABI))?
        .handle_access(AccessNet::from_all(FS_ABI))?
        .create()?;
    let mut kept = Vec::new();
    // The roots by the descriptors the broker serves from (opened by the checked walk
    // in roots.rs), so the rules cannot name other directories than the ones served.
    // A root that is not open now stays unreachable until a restart.
    for (root, fd) in roots.iter() {
        let Some(fd) = fd else { continue };
        let w = root_needs_writes(policy, root);
        created = created.add_rule(PathBeneath::new(fd, if w { read | write } else { read }))?;
        kept.push((root.to_owned(), w));
    }
    let mut rules: Vec<(PathBuf, BitFlags<AccessFs>)> = Vec::new();
    if let Some(dir) = policy_file.and_then(Path::parent) {
        rules.push((dir.to_owned(), read));
    }
    if let Some(dir) = own_socket.and_then(Path::parent) {
        // Removing the socket file on shutdown is the only change outside the roots.
        rules.push((dir.to_owned(), AccessFs::RemoveFile.into()));
    }
    for db in NAME_DATABASES {
        rules.push((PathBuf::from(db), AccessFs::ReadFile.into()));
    }
    for (path, access) in rules {
        let fd = match PathFd::new(&path) {
            Ok(fd) => fd,
            Err(_) if !path.exists() => continue,
            Err(source) => return Err(ConfineError::LandlockPath { path, source }),
        };
        // Rights that only make sense on directories are dropped for a file.
        let access = if path.is_dir() {
            access
        } else {
            access & AccessFs::from_file(FS_ABI)
        };
        created = created.add_rule(PathBeneath::new(fd, access))?;
    }
    let status = created.restrict_self()?;
    Ok(match status.ruleset {
        RulesetStatus::NotEnforced => None,
        s => Some(LandlockKept {
            fully_enforced: s == RulesetStatus::FullyEnforced,
            roots: kept,
        }),
    })
}
