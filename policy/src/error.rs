//! Load errors: every policy mistake is reported with the file, line and column of the
//! key or value at fault, in the `FILE:LINE:COL: message` form editors and CI jump to.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::{Location, PatternError, path::PathError};

/// Whether an id in the file names a user or a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdKind {
    Uid,
    Gid,
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdKind::Uid => "uid",
            IdKind::Gid => "gid",
        })
    }
}

/// Why an octal mode string is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ModeError {
    #[error("expected an octal string like \"0640\"")]
    NotOctal,
    #[error("must be at most 0777")]
    TooLarge,
    #[error("setuid, setgid and sticky bits are not allowed")]
    SpecialBits,
}

/// What is wrong, independent of where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadErrorKind {
    #[error("cannot read: {0}")]
    Read(#[source] std::io::Error),
    /// TOML syntax, unknown keys, missing keys and wrong value types, in the TOML
    /// parser's words.
    #[error("{0}")]
    Toml(String),
    #[error("too large: a policy file holds at most {max} bytes")]
    TooLarge { max: u64 },
    #[error("too many rules: {count}, a policy holds at most {max} (this is the first beyond)")]
    TooManyRules { count: usize, max: usize },
    #[error("policy has no [[client]]: it would refuse every connection")]
    NoClients,
    /// `learn_scope` in more than one client: learn mode under `fdbroker serve` is for
    /// one client at a time, so that no one else's grants widen by mistake.
    #[error(
        "learn_scope is set in client {second:?} and in client {first:?}: learn mode is for \
         one client at a time"
    )]
    LearnTwice { first: String, second: String },
    /// A `learn_scope` entry that is not a plain directory path beneath `/`.
    #[error("learn_scope {path:?} must be a directory path without globs, and not `/`")]
    BadLearnScope { path: String },
    #[error("client name is empty")]
    EmptyClientName,
    #[error("duplicate client name {name:?} (first defined at {first})")]
    DuplicateClient { name: String, first: Location },
    #[error("client {client:?} matches no one: give it `users` or `groups`")]
    MatchesNoOne { client: String },
    #[error(
        "{kind} {id} is listed in client {first:?} and in client {second:?}: \
         a peer must match exactly one client"
    )]
    AmbiguousId {
        kind: IdKind,
        id: u32,
        first: String,
        second: String,
    },
    #[error("{kind} {id} is listed twice in client {client:?}")]
    RepeatedId {
        kind: IdKind,
        id: u32,
        client: String,
    },
    #[error("{kind} {value} is out of range (0 to 4294967294)")]
    IdOutOfRange { kind: IdKind, value: i64 },
    #[error("unknown user {0:?} (write numeric uids without quotes)")]
    UnknownUser(String),
    #[error("unknown group {0:?} (write numeric gids without quotes)")]
    UnknownGroup(String),
    #[error("cannot look up {kind} name {name:?}: {errno}")]
    Lookup {
        kind: IdKind,
        name: String,
        errno: nix::Error,
    },
    #[error("unknown access {0:?}: expected read, write, create or directory")]
    UnknownAccess(String),
    #[error("unknown symlinks setting {0:?}: expected \"none\" or \"beneath\"")]
    UnknownSymlinks(String),
    #[error("unknown audit_failure setting {0:?}: expected \"refuse\" or \"serve\"")]
    UnknownAuditFailure(String),
    #[error("empty access list: a rule must grant something")]
    EmptyAccess,
    #[error(
        "{0} applies only to files the rule creates, and this rule does not grant create \
         (an existing file's ownership is never changed)"
    )]
    OwnershipWithoutCreate(&'static str),
    #[error("bad path {path:?}: {reason}")]
    BadPath { path: String, reason: PatternError },
    #[error("bad {what} {path:?}: {reason}")]
    BadSettingPath {
        what: &'static str,
        path: String,
        reason: PathError,
    },
    #[error("socket path {path:?} is {len} bytes; a Unix socket path holds at most 107")]
    SocketPathTooLong { path: String, len: usize },
    #[error("bad {what} {value:?}: {reason}")]
    BadMode {
        what: &'static str,
        value: String,
        reason: ModeError,
    },
    #[error("{key} must be {expected}, not {value}")]
    OutOfRange {
        key: &'static str,
        value: i64,
        expected: &'static str,
    },
    #[error("the sandbox user must not be root")]
    SandboxRoot,
    #[error(
        "uid_range {0:?} is not FIRST-LAST with 0 < FIRST <= LAST < 4294967295 \
         and without 65534 (nobody)"
    )]
    BadUidRange(String),
    #[error("bad {key} {value:?}: {reason}")]
    BadLimit {
        key: &'static str,
        value: String,
        reason: crate::limits::LimitError,
    },
    #[error(
        "allow rule {allow:?} is fully denied by deny rule {deny:?} at {deny_at}: \
         it can never grant anything"
    )]
    FullyDenied {
        allow: String,
        deny: String,
        deny_at: Location,
    },
    #[error(
        "allow rule {allow:?} has symlinks = \"beneath\" but deny rule {deny:?} at {deny_at} \
         lies inside its root {root:?}: a symlink under the root could lead to the denied \
         path; use symlinks = \"none\" or narrow the rule"
    )]
    SymlinksReachDeny {
        allow: String,
        deny: String,
        deny_at: Location,
        root: String,
    },
    #[error(
        "allow rule {allow:?} has hardlinks = true but deny rule {deny:?} at {deny_at} lies \
         inside its root {root:?}: a hard link under the root to a denied file is that file; \
         drop hardlinks or narrow the rule"
    )]
    HardlinksReachDeny {
        allow: String,
        deny: String,
        deny_at: Location,
        root: String,
    },
}

/// A policy that cannot be used, and where the problem is. Boxed so that the
/// `Result`s threaded through every load step stay one pointer wide.
#[derive(Debug)]
pub struct LoadError(Box<Details>);

#[derive(Debug)]
struct Details {
    file: PathBuf,
    location: Option<Location>,
    kind: LoadErrorKind,
    message: String,
}

impl LoadError {
    pub(crate) fn new(file: &Path, location: Option<Location>, kind: LoadErrorKind) -> Self {
        let message = kind.to_string();
        LoadError(Box::new(Details {
            file: file.to_owned(),
            location,
            kind,
            message,
        }))
    }

    pub fn file(&self) -> &Path {
        &self.0.file
    }

    /// 1-based line, when the problem has a position (I/O errors do not).
    pub fn line(&self) -> Option<usize> {
        self.0.location.map(|l| l.line)
    }

    /// 1-based column in characters, when the problem has a position.
    pub fn col(&self) -> Option<usize> {
        self.0.location.map(|l| l.col)
    }

    pub fn location(&self) -> Option<Location> {
        self.0.location
    }

    /// The message without the `FILE:LINE:COL: ` prefix.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    pub fn kind(&self) -> &LoadErrorKind {
        &self.0.kind
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.0;
        match d.location {
            Some(at) => write!(f, "{}:{at}: {}", d.file.display(), d.message),
            None => write!(f, "{}: {}", d.file.display(), d.message),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0.kind)
    }
}
