//! The broker confines itself once its socket and roots are open.
//!
//! A compromised broker should be worth as little as possible. After start-up it keeps
//! only the capabilities opening files needs (`CAP_DAC_READ_SEARCH`, plus
//! `CAP_DAC_OVERRIDE` when the policy grants writes), clears the bounding and ambient
//! sets, sets `no_new_privs`, lets Landlock confine it to the policy's roots with the
//! rights the policy grants (a read-only root stays read-only even for the broker), and
//! installs a seccomp allowlist of the system calls it makes (taken from tracing it
//! through the test suite). Calls outside the list fail with `EPERM` rather than kill,
//! so an unforeseen path degrades to an error reply, not a dead service.
//!
//! `CAP_FOWNER` is not kept: the only mode the broker sets is on files it just created,
//! which it owns. `CAP_CHOWN` is kept only when a rule gives created files an `owner`
//! or `group`.
//!
//! The broker need not be root. Run as a user of its own that holds just these
//! capabilities (systemd `User=` with `AmbientCapabilities=`, or `setpriv` by hand), it
//! shares its budget of descriptors in flight with no other process. Such a broker
//! cannot drop from the bounding set (that needs `CAP_SETPCAP`), so it leaves the set
//! as it was given, which is harmless under `no_new_privs` and a seccomp filter without
//! `execve`, and says so; a capability the policy needs but the process was not given
//! is a start-up error that names it.
//!
//! The spawn-mode broker also keeps `CAP_KILL`, to signal the worker it started (which
//! runs as another user) and so that its parent-death signal reaches the worker; the
//! seccomp filter lets it name only that worker and itself (see `crate::spawn::broker`).
//!
//! Landlock and capability changes apply to the calling thread, so this runs while the
//! broker is still single-threaded (checked), before the event loop starts its threads.
//!
//! What was kept is remembered: a reload whose policy would need more (a root outside
//! the confined ones, or writes when none were kept) is refused with a clear log line;
//! it never silently grants less or more. Restart the broker to widen it.

mod capabilities;
mod landlock;
mod monitor;
pub mod rlimit;
mod seccomp;

pub use monitor::confine_monitor;

use crate::request::roots::Roots;
use capabilities::narrow_capabilities;
use caps::Capability;
use fdbroker_policy::{Access, Policy};
use landlock::restrict_filesystem;
use seccomp::install_seccomp;
use std::fmt;
use std::path::{Path, PathBuf};

/// The text of [`ConfineError::MissingCapability`].
fn missing_capabilities(missing: &[(Capability, &str)], needed: &[Capability]) -> String {
    let what: Vec<String> = missing
        .iter()
        .map(|(cap, why)| format!("{cap} ({why})"))
        .collect();
    let names: Vec<String> = needed.iter().map(Capability::to_string).collect();
    let lower: Vec<String> = needed
        .iter()
        .map(|c| c.to_string().trim_start_matches("CAP_").to_lowercase())
        .collect();
    let plus = |prefix: &str| format!("{prefix}+{}", lower.join(",+"));
    format!(
        "the policy needs {}, which this process does not have; run the broker as root, or \
         grant {} in all three capability lists: the bounding set, the inheritable set and \
         the ambient set (systemd: AmbientCapabilities={} and CapabilityBoundingSet={}, \
         added to what each lists; by hand: setpriv {} {} {}); `fdbroker policy check` \
         names the unit lines",
        what.join(" and "),
        if missing.len() == 1 { "it" } else { "them" },
        names.join(" "),
        names.join(" "),
        plus("--bounding-set=-all,"),
        plus("--inh-caps=-all,"),
        plus("--ambient-caps="),
    )
}

#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("the broker must confine itself before starting threads, but has {0}")]
    Threads(usize),
    #[error("cannot {op}: {source}")]
    Capabilities {
        op: &'static str,
        #[source]
        source: caps::errors::CapsError,
    },
    /// Every capability the policy needs that the process lacks, and a hint that grants
    /// all the broker needs at once: a hint naming only the first missing one would send
    /// the operator round, adding one and losing the other.
    #[error("{}", missing_capabilities(missing, needed))]
    MissingCapability {
        /// What is missing, and what for.
        missing: Vec<(Capability, &'static str)>,
        /// Everything the broker keeps, the missing ones included.
        needed: Vec<Capability>,
    },
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(#[source] nix::Error),
    #[error("cannot turn off core dumps (PR_SET_DUMPABLE): {0}")]
    Dumpable(#[source] nix::Error),
    #[error("landlock: {0}")]
    Landlock(#[from] ::landlock::RulesetError),
    #[error("landlock: cannot open {path}: {source}")]
    LandlockPath {
        path: PathBuf,
        #[source]
        source: ::landlock::PathFdError,
    },
    #[error("seccomp: {0}")]
    Seccomp(String),
}

/// What the broker kept, for the log and for judging reloads.
#[derive(Debug, Clone)]
pub struct Confinement {
    pub capabilities: Vec<Capability>,
    /// `None` when the kernel has no Landlock (the broker says so at start-up).
    pub landlock: Option<LandlockKept>,
    pub seccomp_syscalls: usize,
    writes: bool,
    chown: bool,
    /// The bounding set could not be narrowed (no `CAP_SETPCAP`): left as given.
    pub bounding_kept: bool,
}

#[derive(Debug, Clone)]
pub struct LandlockKept {
    pub fully_enforced: bool,
    /// Each root the broker may still open beneath, and whether writes are allowed there.
    pub roots: Vec<(PathBuf, bool)>,
}

impl fmt::Display for Confinement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let caps: Vec<String> = self.capabilities.iter().map(|c| c.to_string()).collect();
        write!(f, "capabilities kept [{}]", caps.join(", "))?;
        if self.bounding_kept {
            write!(
                f,
                " (bounding set left as given: no CAP_SETPCAP to narrow it)"
            )?;
        }
        write!(f, ", no_new_privs")?;
        match &self.landlock {
            Some(l) => write!(
                f,
                ", landlock {} over {} roots",
                if l.fully_enforced {
                    "fully enforced"
                } else {
                    "partially enforced"
                },
                l.roots.len()
            )?,
            None => write!(f, ", LANDLOCK UNAVAILABLE")?,
        }
        write!(f, ", seccomp allowlist of {} calls", self.seccomp_syscalls)
    }
}

impl Confinement {
    /// Would serving `policy` need anything this confinement took away?
    pub fn refuses(&self, policy: &Policy) -> Option<String> {
        let writes = needs_writes(policy);
        if needs_chown(policy) && !self.chown {
            return Some(
                "the new policy gives created files an owner or group, but this broker \
                 dropped CAP_CHOWN at start-up; restart it to widen"
                    .into(),
            );
        }
        if writes && !self.writes {
            return Some(
                "the new policy grants write or create, but this broker dropped the capability \
                 and Landlock rights for writing at start-up; restart it to widen"
                    .into(),
            );
        }
        let Some(l) = &self.landlock else { return None };
        for root in policy.roots() {
            let root_writes = root_needs_writes(policy, root);
            let covered = l
                .roots
                .iter()
                .any(|(kept, w)| root.starts_with(kept) && (*w || !root_writes));
            if !covered {
                return Some(format!(
                    "the new policy needs {} (with {} access), outside what this confined \
                     broker can reach; restart it to widen",
                    root.display(),
                    if root_writes { "write" } else { "read" }
                ));
            }
        }
        None
    }
}

/// Confine the calling, single-threaded broker for serving `policy` with its open
/// `roots`, read from `policy_file`; `own_socket` is the socket file it created and
/// must remove on exit.
///
/// Signals may go only to the broker itself and to `worker` (spawn mode), whatever
/// uid they run as: root without `CAP_KILL` could still signal every root process, and
/// with a `worker` the broker keeps `CAP_KILL` to reach it.
pub fn confine(
    policy: &Policy,
    roots: &Roots,
    policy_file: Option<&Path>,
    own_socket: Option<&Path>,
    worker: Option<i32>,
) -> Result<Confinement, ConfineError> {
    confine_parts(policy, roots, policy_file, own_socket, worker, Parts::ALL)
}

/// Which of the kernel-enforced parts of [`confine`] to apply. The broker always
/// applies both; the benchmark's secure floor applies each alone to measure what it
/// costs (capabilities, `no_new_privs` and `PR_SET_DUMPABLE` are always set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    pub landlock: bool,
    pub seccomp: bool,
}

impl Parts {
    pub const ALL: Parts = Parts {
        landlock: true,
        seccomp: true,
    };
}

/// [`confine`] with only the `parts` asked for; `Confinement::landlock` is `None` and
/// `seccomp_syscalls` 0 for a part left out. Not for serving: a broker without both is
/// not the broker `docs/confinement.md` describes.
pub fn confine_parts(
    policy: &Policy,
    roots: &Roots,
    policy_file: Option<&Path>,
    own_socket: Option<&Path>,
    worker: Option<i32>,
    parts: Parts,
) -> Result<Confinement, ConfineError> {
    let threads = std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count());
    if threads != 1 {
        return Err(ConfineError::Threads(threads));
    }
    let writes = needs_writes(policy);
    let chown = needs_chown(policy);
    let (capabilities, bounding_kept) = narrow_capabilities(writes, chown, worker.is_some())?;
    nix::sys::prctl::set_no_new_privs().map_err(ConfineError::NoNewPrivs)?;
    // No core dumps and no ptrace by uid: a dump of a broker's memory holds what it
    // read.
    nix::sys::prctl::set_dumpable(false).map_err(ConfineError::Dumpable)?;
    let landlock = if parts.landlock {
        restrict_filesystem(policy, roots, policy_file, own_socket)?
    } else {
        None
    };
    let seccomp_syscalls = if parts.seccomp {
        install_seccomp(worker)?
    } else {
        0
    };
    Ok(Confinement {
        capabilities,
        landlock,
        seccomp_syscalls,
        writes,
        chown,
        bounding_kept,
    })
}

/// Does any rule give created files an owner or group?
fn needs_chown(policy: &Policy) -> bool {
    policy
        .rules()
        .iter()
        .any(|r| r.options.owner.is_some() || r.options.group.is_some())
}

fn needs_writes(policy: &Policy) -> bool {
    [Access::Write, Access::ReadWrite, Access::Create]
        .into_iter()
        .any(|a| policy.grants_any(a))
}

/// Does any allow rule rooted at `root` grant a write?
pub(super) fn root_needs_writes(policy: &Policy, root: &Path) -> bool {
    policy.rules().iter().any(|r| {
        r.root.is_some_and(|id| policy.roots()[id.0] == root)
            && [Access::Write, Access::ReadWrite, Access::Create]
                .into_iter()
                .any(|a| r.access.grants(a))
    })
}
