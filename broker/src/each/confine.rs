//! `fdbroker each`'s own confinement, once its engine is ready (the policy's roots
//! opened, the slots' uids taken, their cgroups made): it keeps only the capabilities
//! making and ending sandboxes needs, and sets `no_new_privs`.
//!
//! Not Landlock and not a seccomp filter of its own: both are inherited by every child,
//! and the workers are forked from this process, so either would stack onto each
//! worker's sandbox whatever `each` itself needs (its roots, the cgroup tree,
//! `/run/fdbroker-uids`, the programs to exec), and constrain the workers in ways
//! `fdbroker run`'s do not have. What `each` keeps, and why:
//!
//! | capability | needed for |
//! | --- | --- |
//! | `CAP_SETUID`, `CAP_SETGID` | the worker and the namespace init take the slot's transient uid and gid (`setresuid`, `setgroups`) |
//! | `CAP_SETPCAP` | they drop their bounding set (as `fdbroker run`'s worker does) |
//! | `CAP_SYS_ADMIN` | the spare's PID and IPC namespaces (`unshare`, `setns` back) |
//! | `CAP_SYS_PTRACE` | opening the spare init's `/proc/PID/ns/ipc` to enter its IPC namespace: a ptrace-mode access check on a process of another uid (the init does not trace or get traced: the sandbox's seccomp filter refuses `ptrace`) |
//! | `CAP_KILL` | ending items, which run under other uids (the wall limit, a signal to `each`) |
//! | `CAP_DAC_READ_SEARCH`, `CAP_DAC_OVERRIDE` | opening items beneath the policy's roots whatever their mode, as the broker does, and `--stdout-dir` |
//!
//! Everything else goes, from the effective, permitted, inheritable, ambient and
//! bounding sets: `CAP_SYS_MODULE`, `CAP_NET_ADMIN`, `CAP_SYS_TIME`, `CAP_CHOWN`,
//! `CAP_FOWNER`, `CAP_MKNOD`, `CAP_SYS_RAWIO`, ... A bug in `each`'s reading of the
//! paths or of a worker's output can then no longer load a module, trace a process,
//! or change a file's owner or the clock. Removing cgroup directories needs none of them (root owns
//! the cgroup tree), and the uid leases were taken at start.

use caps::{CapSet, Capability, CapsHashSet};
use std::io;

/// What `each` keeps (see the module documentation).
pub const KEPT: [Capability; 8] = [
    Capability::CAP_SETUID,
    Capability::CAP_SETGID,
    Capability::CAP_SETPCAP,
    Capability::CAP_SYS_ADMIN,
    Capability::CAP_SYS_PTRACE,
    Capability::CAP_KILL,
    Capability::CAP_DAC_READ_SEARCH,
    Capability::CAP_DAC_OVERRIDE,
];

/// Narrows this process to [`KEPT`] and sets `no_new_privs`. Call it single-threaded
/// (capabilities are per thread); the workers forked after it inherit the narrowed sets
/// and drop the rest themselves.
pub fn confine_each() -> io::Result<()> {
    let err = |op: &str| {
        let op = op.to_owned();
        move |e: caps::errors::CapsError| io::Error::other(format!("cannot {op}: {e}"))
    };
    let keep: CapsHashSet = KEPT.iter().copied().collect();
    let permitted = caps::read(None, CapSet::Permitted).map_err(err("read the permitted set"))?;
    // Dropping from the bounding set takes CAP_SETPCAP; without it the set stays as
    // given (the permitted set, narrowed below, is what this process can use).
    let can_narrow = permitted.contains(&Capability::CAP_SETPCAP);
    for cap in caps::all().into_iter().filter(|_| can_narrow) {
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap).map_err(err("drop from the bounding set"))?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(err("clear the ambient set"))?;
    caps::clear(None, CapSet::Inheritable).map_err(err("clear the inheritable set"))?;
    let kept: CapsHashSet = permitted.intersection(&keep).copied().collect();
    caps::set(None, CapSet::Effective, &kept).map_err(err("set the effective set"))?;
    caps::set(None, CapSet::Permitted, &kept).map_err(err("set the permitted set"))?;
    nix::sys::prctl::set_no_new_privs()?;
    Ok(())
}
