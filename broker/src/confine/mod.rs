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

pub mod rlimit;

use crate::server::state::Loaded;
use caps::{CapSet, Capability, CapsHashSet};
use fdbroker_policy::{Access, Policy};
use landlock::{
    ABI, Access as _, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
};
use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// `F_SETOWN_EX` from the kernel's `include/uapi/asm-generic/fcntl.h` (the same on
/// x86_64 and aarch64); the `libc` crate lacks it for glibc.
const F_SETOWN_EX: i32 = 15;

/// Filesystem rights are those of ABI 6 (all of v1..v5); later ABIs add rights over
/// Unix socket paths that would also block the broker's own `sd_notify`.
const FS_ABI: ABI = ABI::V6;

/// Files the broker may still read to reload: its policy's directory (editors replace
/// the file by rename, so the directory, not the inode) and the user database that
/// resolves names in it.
const NAME_DATABASES: [&str; 3] = ["/etc/passwd", "/etc/group", "/etc/nsswitch.conf"];

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
    #[error(
        "the policy needs {cap} ({why}), which this process does not have; run the broker \
         as root, or grant it (systemd: AmbientCapabilities={cap} and \
         CapabilityBoundingSet=... {cap}; by hand: setpriv --inh-caps=+{lower} \
         --ambient-caps=+{lower})"
    )]
    MissingCapability {
        cap: Capability,
        lower: String,
        why: &'static str,
    },
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(#[source] nix::Error),
    #[error("cannot turn off core dumps (PR_SET_DUMPABLE): {0}")]
    Dumpable(#[source] nix::Error),
    #[error("landlock: {0}")]
    Landlock(#[from] landlock::RulesetError),
    #[error("landlock: cannot open {path}: {source}")]
    LandlockPath {
        path: PathBuf,
        #[source]
        source: landlock::PathFdError,
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

/// Confine the calling, single-threaded broker for serving `loaded` (a policy and its
/// open roots) read from `policy_file`; `own_socket` is the socket file it created and
/// must remove on exit.
///
/// Signals may go only to the broker itself and to `worker` (spawn mode), whatever
/// uid they run as: root without `CAP_KILL` could still signal every root process, and
/// with a `worker` the broker keeps `CAP_KILL` to reach it.
pub fn confine(
    loaded: &Loaded,
    policy_file: Option<&Path>,
    own_socket: Option<&Path>,
    worker: Option<i32>,
) -> Result<Confinement, ConfineError> {
    confine_parts(loaded, policy_file, own_socket, worker, Parts::ALL)
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
/// not the broker the README describes.
pub fn confine_parts(
    loaded: &Loaded,
    policy_file: Option<&Path>,
    own_socket: Option<&Path>,
    worker: Option<i32>,
    parts: Parts,
) -> Result<Confinement, ConfineError> {
    let policy = &loaded.policy;
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
        restrict_filesystem(loaded, policy_file, own_socket)?
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
fn root_needs_writes(policy: &Policy, root: &Path) -> bool {
    policy.rules().iter().any(|r| {
        r.root.is_some_and(|id| policy.roots()[id.0] == root)
            && [Access::Write, Access::ReadWrite, Access::Create]
                .into_iter()
                .any(|a| r.access.grants(a))
    })
}

/// Keep exactly what serving the policy needs (and, in spawn mode, signalling the
/// worker); also whether the bounding set had to be left as given.
fn narrow_capabilities(
    writes: bool,
    chown: bool,
    signals_worker: bool,
) -> Result<(Vec<Capability>, bool), ConfineError> {
    let mut keep = vec![(
        Capability::CAP_DAC_READ_SEARCH,
        "to open files beneath directories the worker cannot search",
    )];
    if writes {
        keep.push((
            Capability::CAP_DAC_OVERRIDE,
            "for the write or create access it grants",
        ));
    }
    if chown {
        keep.push((
            Capability::CAP_CHOWN,
            "for the owner or group it gives created files",
        ));
    }
    if signals_worker {
        keep.push((
            Capability::CAP_KILL,
            "to signal the worker it started, and for the worker's parent-death signal",
        ));
    }
    let err = |op| move |source| ConfineError::Capabilities { op, source };
    let permitted = caps::read(None, CapSet::Permitted).map_err(err("read the permitted set"))?;
    if let Some((cap, why)) = keep.iter().find(|(c, _)| !permitted.contains(c)) {
        return Err(ConfineError::MissingCapability {
            cap: *cap,
            lower: cap.to_string().trim_start_matches("CAP_").to_lowercase(),
            why,
        });
    }
    let keep: Vec<Capability> = keep.into_iter().map(|(c, _)| c).collect();
    let keep_set: CapsHashSet = keep.iter().copied().collect();
    // Bounding first: dropping from it needs CAP_SETPCAP, which goes with the rest. A
    // broker started unprivileged does not have it and keeps the set it was given.
    let can_narrow = permitted.contains(&Capability::CAP_SETPCAP);
    let mut bounding_kept = false;
    for cap in caps::all() {
        if !keep_set.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            if !can_narrow {
                bounding_kept = true;
                continue;
            }
            caps::drop(None, CapSet::Bounding, cap).map_err(err("drop from the bounding set"))?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(err("clear the ambient set"))?;
    caps::clear(None, CapSet::Inheritable).map_err(err("clear the inheritable set"))?;
    caps::set(None, CapSet::Effective, &keep_set).map_err(err("set the effective set"))?;
    caps::set(None, CapSet::Permitted, &keep_set).map_err(err("set the permitted set"))?;
    Ok((keep, bounding_kept))
}

fn restrict_filesystem(
    loaded: &Loaded,
    policy_file: Option<&Path>,
    own_socket: Option<&Path>,
) -> Result<Option<LandlockKept>, ConfineError> {
    let policy = &loaded.policy;
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let write = AccessFs::WriteFile | AccessFs::Truncate | AccessFs::MakeReg;
    let mut created = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(FS_ABI))?
        .handle_access(AccessNet::from_all(FS_ABI))?
        .create()?;
    let mut kept = Vec::new();
    // The roots by the descriptors the broker serves from (opened by the checked walk
    // in roots.rs), so the rules cannot name other directories than the ones served.
    // A root that is not open now stays unreachable until a restart.
    for (root, fd) in loaded.roots.iter() {
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

/// The system calls the broker makes once serving (from `strace -f` over the test
/// suite, plus what reload, shutdown, sd_notify, thread start and abort need).
fn allowed_syscalls() -> Vec<i64> {
    let mut v = vec![
        // the request path
        libc::SYS_recvmsg,
        libc::SYS_sendmsg,
        libc::SYS_sendto,
        libc::SYS_openat2,
        libc::SYS_newfstatat,
        libc::SYS_fstat,
        libc::SYS_statx,
        libc::SYS_fchmod,
        // created files' owner and group (rule options), and the reopen check's look
        // for a POSIX ACL (resolve.rs)
        libc::SYS_fchown,
        libc::SYS_fgetxattr,
        // truncate-on-open, done only after the opened file is authorized (resolve.rs)
        libc::SYS_ftruncate,
        libc::SYS_close,
        libc::SYS_write,
        libc::SYS_writev,
        libc::SYS_read,
        // the event loop
        libc::SYS_epoll_pwait,
        libc::SYS_epoll_pwait2,
        libc::SYS_epoll_ctl,
        libc::SYS_accept4,
        libc::SYS_getsockopt,
        // checking that a handed-over connection is a Unix socket (handover.rs)
        libc::SYS_getsockname,
        libc::SYS_shutdown,
        libc::SYS_ppoll,
        libc::SYS_timerfd_settime,
        libc::SYS_futex,
        libc::SYS_sched_yield,
        libc::SYS_clock_gettime,
        libc::SYS_clock_nanosleep,
        libc::SYS_nanosleep,
        // memory
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_mprotect,
        libc::SYS_madvise,
        libc::SYS_brk,
        // threads and signals
        libc::SYS_clone,
        libc::SYS_clone3,
        libc::SYS_set_robust_list,
        libc::SYS_rseq,
        libc::SYS_gettid,
        libc::SYS_getpid,
        libc::SYS_sigaltstack,
        libc::SYS_rt_sigaction,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigreturn,
        libc::SYS_sched_getaffinity,
        libc::SYS_getrandom,
        libc::SYS_exit,
        libc::SYS_exit_group,
        // reload: read the policy, resolve names, open roots
        libc::SYS_openat,
        libc::SYS_lseek,
        libc::SYS_pread64,
        libc::SYS_getdents64,
        // the checked walk to each root (roots.rs)
        libc::SYS_readlinkat,
        libc::SYS_fstatfs,
        libc::SYS_getuid,
        libc::SYS_geteuid,
        libc::SYS_getgid,
        libc::SYS_getegid,
        libc::SYS_prlimit64,
        // shutdown: remove the socket file it created
        libc::SYS_unlinkat,
        // spawn mode (run.rs), the broker of one worker it started:
        // its forwarding thread waits for HUP/INT/QUIT/TERM/USR1/USR2 (sigwait)
        libc::SYS_rt_sigtimedwait,
        // its waiting thread sees the worker exit (waitid, WNOWAIT), then reaps it
        // for its exit status (waitpid), then the init of the worker's PID namespace
        libc::SYS_waitid,
        libc::SYS_wait4,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        libc::SYS_epoll_wait,
        libc::SYS_poll,
        libc::SYS_open,
        libc::SYS_stat,
        libc::SYS_lstat,
        libc::SYS_access,
        libc::SYS_arch_prctl,
        libc::SYS_unlink,
    ]);
    v
}

/// The architecture the filters are compiled for: this build's.
fn native_arch() -> TargetArch {
    if cfg!(target_arch = "aarch64") {
        TargetArch::aarch64
    } else {
        TargetArch::x86_64
    }
}

/// Each call allowed whatever its arguments.
fn unconditional(calls: Vec<i64>) -> BTreeMap<i64, Vec<SeccompRule>> {
    calls.into_iter().map(|nr| (nr, Vec::new())).collect()
}

fn install_seccomp(worker: Option<i32>) -> Result<usize, ConfineError> {
    let arch = native_arch();
    let sc = |e: &dyn fmt::Display| ConfineError::Seccomp(e.to_string());
    let mut rules = unconditional(allowed_syscalls());
    // No socket(2) and no connect(2): a confined broker makes no new connection
    // (its notification socket is made before it confines itself). A compromised one
    // could otherwise connect to its own listener and pass the connecting end to its
    // successor as a worker's.
    // A connection a worker asks for (Op::Connect, conn.rs) is one end of a Unix pair.
    rules.insert(
        libc::SYS_socketpair,
        vec![
            SeccompRule::new(vec![
                SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Eq,
                    libc::AF_UNIX as u64,
                )
                .map_err(|e| sc(&e))?,
            ])
            .map_err(|e| sc(&e))?,
        ],
    );
    // Bounding each accepted connection's reply queue (conn.rs) is the one option the
    // broker sets once serving.
    let arg = |n, v: i32| {
        SeccompCondition::new(n, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, v as u64)
            .map_err(|e| sc(&e))
    };
    let arg_ne = |n, v: i32| {
        SeccompCondition::new(n, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, v as u64)
            .map_err(|e| sc(&e))
    };
    rules.insert(
        libc::SYS_setsockopt,
        vec![
            SeccompRule::new(vec![arg(1, libc::SOL_SOCKET)?, arg(2, libc::SO_SNDBUF)?])
                .map_err(|e| sc(&e))?,
        ],
    );
    // How much a worker has not received yet (SIOCOUTQ), for the descriptor count in
    // inflight.rs; no other ioctl.
    rules.insert(
        libc::SYS_ioctl,
        vec![SeccompRule::new(vec![arg(1, libc::TIOCOUTQ as i32)?]).map_err(|e| sc(&e))?],
    );
    // Any fcntl but making a process the owner of a descriptor (F_SETOWN,
    // F_SETOWN_EX): the kernel then signals the owner (SIGIO, or any signal F_SETSIG
    // names) whenever the descriptor becomes ready, checking only that whoever set the
    // owner had uid 0 or the owner's uid, never CAP_KILL. The broker never sets one.
    rules.insert(
        libc::SYS_fcntl,
        vec![
            SeccompRule::new(vec![arg_ne(1, libc::F_SETOWN)?, arg_ne(1, F_SETOWN_EX)?])
                .map_err(|e| sc(&e))?,
        ],
    );
    // Signals: to this process (a thread's abort), and in spawn mode to the worker
    // (forwarded signals, or killing it when it cannot be served). No other call that
    // sends one is allowed (tkill, rt_sigqueueinfo, rt_tgsigqueueinfo,
    // pidfd_send_signal), and tgkill only within this process.
    let me = nix::unistd::getpid().as_raw();
    let to = |pid: i32| -> Result<SeccompRule, ConfineError> {
        SeccompRule::new(vec![arg(0, pid)?]).map_err(|e| sc(&e))
    };
    let mut kill_rules = vec![to(me)?];
    if let Some(w) = worker {
        kill_rules.push(to(w)?);
    }
    rules.insert(libc::SYS_kill, kill_rules);
    // Threads only: a confined broker starts no process (a compromised one could
    // otherwise make a process of its own look like a worker). clone3's flags are in
    // memory the filter cannot read, so it fails with ENOSYS below and the C library
    // falls back to clone, checked here.
    rules.insert(
        libc::SYS_clone,
        vec![
            SeccompRule::new(vec![
                SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Qword,
                    SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64),
                    libc::CLONE_THREAD as u64,
                )
                .map_err(|e| sc(&e))?,
            ])
            .map_err(|e| sc(&e))?,
        ],
    );
    rules.insert(libc::SYS_tgkill, vec![to(me)?]);
    // prctl only to name a thread (strace: the only call once confined) or to read
    // whether it is dumpable. Nothing may make the broker dumpable again or touch its
    // other process settings.
    rules.insert(
        libc::SYS_prctl,
        vec![
            SeccompRule::new(vec![arg(0, libc::PR_SET_NAME)?]).map_err(|e| sc(&e))?,
            SeccompRule::new(vec![arg(0, libc::PR_GET_DUMPABLE)?]).map_err(|e| sc(&e))?,
        ],
    );
    let count = rules.len();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )
    .map_err(|e| sc(&e))?;
    let program: seccompiler::BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| sc(&e))?;
    let no_clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(|e| sc(&e))?;
    let no_clone3: seccompiler::BpfProgram = no_clone3
        .try_into()
        .map_err(|e: seccompiler::BackendError| sc(&e))?;
    // This one first: the allowlist leaves no way to install another filter.
    seccompiler::apply_filter(&no_clone3).map_err(|e| sc(&e))?;
    seccompiler::apply_filter(&program).map_err(|e| sc(&e))?;
    Ok(count)
}

/// The most any server may need, which is all the monitor keeps for them
/// (`CAP_SETPCAP` so that a server can narrow its bounding set to its own policy).
const SERVER_CAPABILITIES: [Capability; 4] = [
    Capability::CAP_DAC_READ_SEARCH,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_CHOWN,
    Capability::CAP_SETPCAP,
];

/// Confine the monitor (`monitor`): it keeps, in its permitted set and (when it can
/// narrow it) the bounding set, only the capabilities a server may need, none of them
/// effective, so that a server it starts by `execve` gets them (as root, from the
/// bounding set; as a user of its own, from the ambient set) and the monitor itself
/// uses none. Then `no_new_privs` and a seccomp allowlist of the calls the monitor and
/// a starting server make. No Landlock: starting a server needs an unconfined view of
/// the filesystem, which is the point of the monitor.
pub fn confine_monitor() -> Result<(), ConfineError> {
    let err = |op| move |source| ConfineError::Capabilities { op, source };
    let permitted = caps::read(None, CapSet::Permitted).map_err(err("read the permitted set"))?;
    let keep: CapsHashSet = SERVER_CAPABILITIES
        .into_iter()
        .filter(|c| permitted.contains(c))
        .collect();
    if permitted.contains(&Capability::CAP_SETPCAP) {
        caps::raise(None, CapSet::Effective, Capability::CAP_SETPCAP)
            .map_err(err("raise CAP_SETPCAP"))?;
        for cap in caps::all() {
            if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
                caps::drop(None, CapSet::Bounding, cap)
                    .map_err(err("drop from the bounding set"))?;
            }
        }
    }
    // An unprivileged monitor passes its capabilities on through the ambient set,
    // which needs them inheritable; root's servers get theirs from the bounding set.
    let root = nix::unistd::getuid().is_root();
    caps::clear(None, CapSet::Effective).map_err(err("clear the effective set"))?;
    if root {
        caps::clear(None, CapSet::Ambient).map_err(err("clear the ambient set"))?;
        caps::clear(None, CapSet::Inheritable).map_err(err("clear the inheritable set"))?;
    } else {
        let ambient = caps::read(None, CapSet::Ambient).map_err(err("read the ambient set"))?;
        let kept: CapsHashSet = ambient.intersection(&keep).copied().collect();
        caps::set(None, CapSet::Inheritable, &kept).map_err(err("set the inheritable set"))?;
        caps::set(None, CapSet::Ambient, &kept).map_err(err("set the ambient set"))?;
    }
    caps::set(None, CapSet::Permitted, &keep).map_err(err("set the permitted set"))?;
    nix::sys::prctl::set_no_new_privs().map_err(ConfineError::NoNewPrivs)?;
    nix::sys::prctl::set_dumpable(false).map_err(ConfineError::Dumpable)?;
    install_monitor_seccomp()?;
    Ok(())
}

/// What the monitor calls, and what a server calls from its `execve` until it installs
/// its own, narrower filter (filters are inherited and add up, so the monitor's must
/// let a server start). From `strace -f` over the test suite's monitor runs.
fn monitor_syscalls() -> Vec<i64> {
    let mut v = allowed_syscalls();
    v.extend([
        // the monitor: children, their control channels, signals; a starting server
        // checks whether an old socket file is stale (connect)
        libc::SYS_execve,
        libc::SYS_connect,
        libc::SYS_fcntl,
        libc::SYS_pipe2,
        libc::SYS_dup,
        libc::SYS_dup3,
        libc::SYS_close_range,
        libc::SYS_signalfd4,
        libc::SYS_rt_sigqueueinfo,
        // answering `fdbroker reload` through a pidfd (monitor.rs)
        libc::SYS_pidfd_open,
        libc::SYS_pidfd_send_signal,
        libc::SYS_socketpair,
        // std's spawn reads the child's exec error from a socket
        libc::SYS_recvfrom,
        libc::SYS_getppid,
        // a starting server: its own set-up before it confines itself
        libc::SYS_set_tid_address,
        libc::SYS_uname,
        libc::SYS_getcwd,
        libc::SYS_faccessat,
        libc::SYS_faccessat2,
        libc::SYS_statfs,
        libc::SYS_getrlimit,
        libc::SYS_setrlimit,
        libc::SYS_umask,
        libc::SYS_mkdirat,
        libc::SYS_bind,
        libc::SYS_listen,
        libc::SYS_fchownat,
        libc::SYS_capget,
        libc::SYS_capset,
        libc::SYS_landlock_create_ruleset,
        libc::SYS_landlock_add_rule,
        libc::SYS_landlock_restrict_self,
        libc::SYS_seccomp,
        libc::SYS_epoll_create1,
        libc::SYS_eventfd2,
        libc::SYS_timerfd_create,
        libc::SYS_getresuid,
        libc::SYS_getresgid,
        libc::SYS_getgroups,
        libc::SYS_mincore,
        libc::SYS_membarrier,
        libc::SYS_futex_waitv,
        libc::SYS_getsockname,
        // signals to its own children (it holds no CAP_KILL), prctl for the
        // parent-death signal and a server's own set-up, socket options
        libc::SYS_kill,
        libc::SYS_tgkill,
        libc::SYS_prctl,
        libc::SYS_setsockopt,
    ]);
    // glibc's mkdir(3) and friends use the old calls where the architecture has them
    #[cfg(target_arch = "x86_64")]
    v.extend([
        libc::SYS_mkdir,
        libc::SYS_rename,
        libc::SYS_readlink,
        libc::SYS_vfork,
    ]);
    v
}

fn install_monitor_seccomp() -> Result<(), ConfineError> {
    let arch = native_arch();
    let sc = |e: &dyn fmt::Display| ConfineError::Seccomp(e.to_string());
    let mut rules = unconditional(monitor_syscalls());
    let arg = |n, v: u64| {
        SeccompCondition::new(n, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, v).map_err(|e| sc(&e))
    };
    // Unix sockets only (control channels, sd_notify, a server's listener).
    rules.insert(
        libc::SYS_socket,
        vec![SeccompRule::new(vec![arg(0, libc::AF_UNIX as u64)?]).map_err(|e| sc(&e))?],
    );
    // Non-blocking mode, close-on-exec, "is it a terminal", and the send-queue check.
    let mut ioctls = Vec::new();
    for request in [libc::FIONBIO, libc::FIOCLEX, libc::TCGETS, libc::TIOCOUTQ] {
        ioctls.push(SeccompRule::new(vec![arg(1, request)?]).map_err(|e| sc(&e))?);
    }
    rules.insert(libc::SYS_ioctl, ioctls);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )
    .map_err(|e| sc(&e))?;
    let program: seccompiler::BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| sc(&e))?;
    seccompiler::apply_filter(&program).map_err(|e| sc(&e))
}
