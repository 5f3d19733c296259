//! The monitor's confinement: the capabilities a server may need kept for its servers
//! (none effective), `no_new_privs`, and a seccomp allowlist of what it and a starting
//! server call. No Landlock: starting a server needs an unconfined view of the
//! filesystem.

use super::ConfineError;
use super::seccomp::{allowed_syscalls, native_arch, unconditional};
use caps::{CapSet, Capability, CapsHashSet};
use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};
use std::fmt;

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
