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
    /// What happens to a request whose audit line cannot be written (`audit_failure`).
    pub audit_failure: AuditFailure,
}

/// `audit_failure`: what the broker does while its audit trail cannot be written (a full
/// disk, a log reader that exited or stopped reading), as auditd's `disk_full_action`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuditFailure {
    /// `"refuse"`, the default: a reply that would pass a descriptor is refused instead
    /// (`EIO`), so nothing is granted that the audit trail does not record. A security
    /// tool that cannot say what it granted should not grant.
    #[default]
    Refuse,
    /// `"serve"`: grant as usual; the lines are lost, and counted.
    Serve,
}

impl AuditFailure {
    /// The word the policy file uses.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditFailure::Refuse => "refuse",
            AuditFailure::Serve => "serve",
        }
    }
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
            audit_failure: AuditFailure::Refuse,
        }
    }
}

/// A user as written in the file: spawn mode resolves names when it runs, so a policy
/// can be checked on a machine where the user does not exist.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum UserSpec {
    /// `"dynamic"`: a transient uid (and the gid of the same number) from
    /// [`SandboxSettings::uid_range`] that no other process holds, taken for one run and
    /// given back when it ends, as systemd's `DynamicUser=` does. Only then can no
    /// process outside the sandbox have the worker's uid, which is what lets one take
    /// its descriptors (`pidfd_getfd`), read its memory or trace it.
    Dynamic,
    Name(String),
    Id(u32),
}

impl UserSpec {
    /// The word that asks for a transient uid (a user of that name cannot be named).
    pub const DYNAMIC: &'static str = "dynamic";
}

impl std::fmt::Display for UserSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UserSpec::Dynamic => f.write_str(UserSpec::DYNAMIC),
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
    /// Where `user = "dynamic"` takes its transient uids (and gids) from.
    pub uid_range: UidRange,
    /// `fdbroker run` exits non-zero when the policy refused any of the worker's
    /// requests (as `--fail-on-denial` does): a scanner's clean exit must not hide
    /// what it was not allowed to read.
    pub fail_on_denial: bool,
    /// `time_limit`, `cpu_limit`, ...: what every sandbox may use (the command line's
    /// flags win over these).
    pub limits: crate::Limits,
}

/// `[sandbox] uid_range`: an inclusive range of uids (each also used as a gid) that no
/// user, group or other program on the machine may use; `"FIRST-LAST"` in the file.
///
/// The default, `0x70000000-0x7000ffff`, lies outside every range systemd documents for
/// its own use (its `DynamicUser=` range 61184-65519, whose allocator would not see
/// ours, its container and foreign ranges), above the 16-bit ids older tools truncate
/// to, above what `useradd` hands out as subordinate ids, and below 2^31, which some
/// programs read as negative.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UidRange {
    pub first: u32,
    pub last: u32,
}

impl UidRange {
    pub const DEFAULT: UidRange = UidRange {
        first: 0x7000_0000,
        last: 0x7000_ffff,
    };

    /// How many uids the range holds (0 if `last < first`, which load refuses).
    pub fn len(&self) -> u64 {
        (u64::from(self.last) + 1).saturating_sub(u64::from(self.first))
    }

    /// Never true for a range load accepted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, id: u32) -> bool {
        (self.first..=self.last).contains(&id)
    }
}

impl std::fmt::Display for UidRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
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
    /// A transient uid per run ([`UserSpec::Dynamic`]).
    pub const DEFAULT_USER: &'static str = UserSpec::DYNAMIC;
}

impl Default for SandboxSettings {
    fn default() -> Self {
        SandboxSettings {
            read_only: SandboxSettings::DEFAULT_READ_ONLY
                .iter()
                .map(PathBuf::from)
                .collect(),
            user: UserSpec::Dynamic,
            uid_range: UidRange::DEFAULT,
            fail_on_denial: false,
            limits: crate::Limits::default(),
        }
    }
}
