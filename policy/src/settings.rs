//! The `[broker]` and `[sandbox]` tables after validation, with their defaults.
//!
//! Limits are parsed and range-checked here so a typo fails at load with a position;
//! enforcing them is the broker's job.

use std::path::PathBuf;
use std::time::Duration;

/// `[broker]`: where and how the broker listens, and its resource limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerSettings {
    /// Listening socket path; `None` leaves the choice to the broker (its built-in
    /// default or a socket passed by systemd).
    pub socket: Option<PathBuf>,
    /// Permission bits of the socket file, at most `0o777`.
    pub socket_mode: u32,
    /// Group that owns the socket file, resolved to a gid at load.
    pub socket_group: Option<u32>,
    pub max_connections: usize,
    pub max_connections_per_uid: usize,
    /// Most paths per `OpenMany` and descriptors per reply (1..=128).
    pub max_batch: usize,
    /// Close a connection idle this long; `None` (written `0`) never does.
    pub idle_timeout: Option<Duration>,
    /// Whether the broker confines itself (capabilities, no_new_privs, seccomp) after
    /// setup.
    pub confine: bool,
}

impl BrokerSettings {
    pub const DEFAULT_SOCKET_MODE: u32 = 0o660;
    pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
    pub const DEFAULT_MAX_CONNECTIONS_PER_UID: usize = 1024;
    /// Also the hard ceiling: `SCM_RIGHTS` carries at most 253 descriptors per message
    /// (`SCM_MAX_FD`), and cap_fileargs' 128 leaves room to spare.
    pub const MAX_BATCH: usize = 128;
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
}

impl Default for BrokerSettings {
    fn default() -> Self {
        BrokerSettings {
            socket: None,
            socket_mode: BrokerSettings::DEFAULT_SOCKET_MODE,
            socket_group: None,
            max_connections: BrokerSettings::DEFAULT_MAX_CONNECTIONS,
            max_connections_per_uid: BrokerSettings::DEFAULT_MAX_CONNECTIONS_PER_UID,
            max_batch: BrokerSettings::MAX_BATCH,
            idle_timeout: Some(BrokerSettings::DEFAULT_IDLE_TIMEOUT),
            confine: true,
        }
    }
}

/// A user as written in the file: spawn mode resolves names when it runs, so a policy
/// can be checked on a machine where the user does not exist.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum UserSpec {
    Name(String),
    Id(u32),
}

impl std::fmt::Display for UserSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UserSpec::Name(name) => f.write_str(name),
            UserSpec::Id(id) => write!(f, "{id}"),
        }
    }
}

/// `[sandbox]`: the worker environment `fdbroker run` builds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxSettings {
    /// Paths the worker may read directly (its program and libraries), not through
    /// the broker.
    pub read_only: Vec<PathBuf>,
    /// Never root: load refuses uid 0 and the name `root`.
    pub user: UserSpec,
}

impl SandboxSettings {
    pub const DEFAULT_READ_ONLY: [&'static str; 6] = [
        "/usr",
        "/bin",
        "/sbin",
        "/lib",
        "/lib64",
        "/etc/ld.so.cache",
    ];
    pub const DEFAULT_USER: &'static str = "nobody";
}

impl Default for SandboxSettings {
    fn default() -> Self {
        SandboxSettings {
            read_only: SandboxSettings::DEFAULT_READ_ONLY
                .iter()
                .map(PathBuf::from)
                .collect(),
            user: UserSpec::Name(SandboxSettings::DEFAULT_USER.to_owned()),
        }
    }
}
