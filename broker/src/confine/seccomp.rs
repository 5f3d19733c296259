//! The broker's seccomp allowlist: the system calls it makes, every other failing with
//! `EPERM`, and the arguments that would let it reach beyond itself refused.

use super::ConfineError;
use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};
use std::collections::BTreeMap;
use std::fmt;

/// `F_SETOWN_EX` from the kernel's `include/uapi/asm-generic/fcntl.h` (the same on
/// x86_64 and aarch64); the `libc` crate lacks it for glibc.
const F_SETOWN_EX: i32 = 15;

/// The system calls the broker makes once serving (from `strace -f` over the test
/// suite, plus what reload, shutdown, sd_notify, thread start and abort need).
pub(super) fn allowed_syscalls() -> Vec<i64> {
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
pub(super) fn native_arch() -> TargetArch {
    if cfg!(target_arch = "aarch64") {
        TargetArch::aarch64
    } else {
        TargetArch::x86_64
    }
}

/// Each call allowed whatever its arguments.
pub(super) fn unconditional(calls: Vec<i64>) -> BTreeMap<i64, Vec<SeccompRule>> {
    calls.into_iter().map(|nr| (nr, Vec::new())).collect()
}

pub(super) fn install_seccomp(worker: Option<i32>) -> Result<usize, ConfineError> {
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
