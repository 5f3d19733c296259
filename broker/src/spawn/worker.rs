//! The worker's pre-exec: runs in the child the spawn broker forks for the command
//! (root, single-threaded, not yet confined), between `fork` and `exec`, and confines it
//! into the worker (the sandbox user, the prepared sandbox) or, in transparent mode,
//! turns it into the supervisor ([`fdbroker_transparent::supervisor_main`]).
//!
//! Only system calls on values the broker prepared before it forked: the child of a
//! single-threaded parent may not allocate or take locks a missing thread could hold.

use crate::spawn::limits::InChild;
use fdbroker_worker::sandbox::PreparedSandbox;
use nix::sys::signal::{SigSet, Signal};
use std::io::{self, Write as _};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// What the forked child becomes.
pub(crate) enum Becomes {
    /// The command itself, confined by this sandbox.
    Worker(PreparedSandbox),
    /// Transparent mode's supervisor, which confines itself and forks the command as
    /// its program.
    Supervisor(Box<fdbroker_transparent::Prepared>),
}

/// Makes [`worker_pre_exec`] the hook `cmd` runs in its child before `exec`. The hook
/// owns `worker_end` (the broker connection; `fdbroker each`'s workers have none) until
/// then; the parent's copy goes when `cmd` is dropped. `limits` are applied around the
/// sandbox: the cgroups joined before it (writing `cgroup.procs` takes root), the rlimits
/// after it (lowering them needs no privilege).
#[allow(unsafe_code)] // the worker's pre-exec hook
pub(crate) fn set_pre_exec(
    cmd: &mut Command,
    worker_end: Option<OwnedFd>,
    becomes: Becomes,
    limits: InChild,
) {
    let mut becomes = Some(becomes);
    let in_child =
        move || -> io::Result<()> { worker_pre_exec(worker_end.as_ref(), becomes.take(), &limits) };
    // SAFETY: `pre_exec` runs in the forked child before exec. The parent is
    // single-threaded here (`pidns::spawn` checks it and no thread has been started),
    // so no lock can be held by a thread that does not exist in the child; the closure
    // makes system calls on values prepared in the parent.
    unsafe {
        cmd.pre_exec(in_child);
    }
}

/// Runs in the forked child: only system calls on prepared values.
fn worker_pre_exec(
    worker_end: Option<&OwnedFd>,
    becomes: Option<Becomes>,
    limits: &InChild,
) -> io::Result<()> {
    // The worker inherits stdin, stdout, stderr (checked in the parent to be no
    // directory or `O_PATH` handle) and this descriptor (its number is in
    // FDBROKER_FD), nothing else: whatever `fdbroker run` was started with above
    // stderr (a directory beneath a deny carve-out, a shell's stray pipe) would be a
    // handle past the policy. Marked close-on-exec rather than closed, so the values
    // that own them (the prepared sandbox, `Command`'s exec-error pipe) stay valid
    // until the exec; in transparent mode the program, forked from here, execs too.
    match worker_end {
        Some(end) => {
            crate::sys::cloexec_all_but(&[end.as_raw_fd()])?;
            nix::fcntl::fcntl(
                end.as_fd(),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )?;
        }
        None => crate::sys::cloexec_all_but(&[])?,
    }
    SigSet::empty().thread_set_mask()?;
    // A session of its own, so no controlling terminal: stdin, stdout and stderr may
    // still be the terminal `fdbroker run` was started from, but pushing input into a
    // terminal that is not the caller's controlling terminal (TIOCSTI) needs
    // CAP_SYS_ADMIN, so the worker cannot type commands for the shell that reads there
    // after it (the sandbox's seccomp filter refuses TIOCSTI too). Keyboard signals
    // (Ctrl-C, Ctrl-\) now reach only `fdbroker run`, which forwards them. The child of
    // `fork` is never a process-group leader, so this cannot fail with EPERM.
    nix::unistd::setsid()?;
    // Still root: the cgroups' `cgroup.procs` were opened by root.
    limits.join_cgroups()?;
    let prepared = match becomes {
        Some(Becomes::Worker(prepared)) => prepared,
        // Returns only in the program, confined; the supervisor never returns.
        Some(Becomes::Supervisor(transparent)) => {
            limits.set_rlimits()?;
            return fdbroker_transparent::supervisor_main(*transparent);
        }
        None => return Err(io::Error::other("sandbox already used")),
    };
    if let Err(e) = prepared.apply() {
        // Only the errno crosses back to the parent; say why here.
        // Never `eprintln!`: it panics when stderr fails.
        let _ = writeln!(
            std::io::stderr(),
            "fdbroker: cannot confine the worker: {e}"
        );
        return Err(e.into());
    }
    // Last: the rlimits are the program's (see `InChild::set_rlimits`); lowering them
    // needs no privilege, and the sandbox's seccomp filter allows it.
    limits.set_rlimits()?;
    // Never outlive the broker. Set only now: the kernel clears the parent-death
    // signal whenever the effective uid or gid changes, which the sandbox just did. A
    // broker that died before this point is not missed: its end of the namespace
    // init's lifeline closes once this process execs (close-on-exec), and the init
    // then takes the namespace down, this process with it (see `crate::spawn::pidns`).
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    Ok(())
}
