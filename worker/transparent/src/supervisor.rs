//! The transparent supervisor: runs as the sandbox user under its own sandbox, started
//! by the spawn broker in place of the worker (the worker's pre-exec hook calls
//! [`supervisor_main`] in the forked child).
//!
//! Its sandbox: no capabilities, `no_new_privs`, Landlock of `[sandbox] read_only` and
//! `/proc`, the ordinary seccomp denylist but `process_vm_readv`/`process_vm_writev`.
//! It forks the program and answers the program's notifications until it exits.
//!
//! It passes on to the program the signals `fdbroker run` forwards to its worker (the
//! list comes in [`Prepared::forwarded`]), and ends as the program ended: with its exit
//! code, or killed by its signal, so `fdbroker run` reports either as its worker's.

use crate::answer::Supervisor;
use crate::{Prepared, filter, sys, uapi};
use fdbroker_policy::{ClientId, Policy};
use fdbroker_shared::Channel;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};
use std::io::{self, Write as _};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;

/// Runs in the forked child `fdbroker run` starts (single-threaded, root), after the
/// descriptor and signal set-up: confines it as the supervisor, forks the program and
/// returns in the program only (which then execs). The supervisor never returns.
pub fn supervisor_main(prepared: Prepared) -> io::Result<()> {
    let Prepared {
        supervisor,
        program,
        connection,
        policy,
        client,
        forwarded,
        scratch,
    } = prepared;
    if let Err(e) = supervisor.apply() {
        // Never `eprintln!`: it panics when stderr fails (a full disk, a reader gone).
        let _ = writeln!(
            std::io::stderr(),
            "fdbroker: cannot confine the transparent supervisor: {e}"
        );
        return Err(e.into());
    }
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    // Not dumpable: the program (same uid) cannot read or write its supervisor.
    nix::sys::prctl::set_dumpable(false)?;
    let (ours, theirs) = Channel::pair()?;
    let supervisor_pid = nix::unistd::getpid();
    // Blocked before the fork, so that a program that ends at once (an exec that
    // fails) leaves its SIGCHLD pending for the supervisor's signalfd, not lost.
    let signals = supervisor_signals(forwarded);
    signals.thread_block()?;
    match fork_program()? {
        ForkResult::Child => {
            drop(ours);
            drop(connection);
            SigSet::empty().thread_set_mask()?;
            // Dies with its supervisor; checked after setting, in case it already died.
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            if nix::unistd::getppid() != supervisor_pid {
                return Err(io::Error::other("the transparent supervisor is gone"));
            }
            if let Err(e) = program.apply_nested() {
                let _ = writeln!(
                    std::io::stderr(),
                    "fdbroker: cannot confine the worker: {e}"
                );
                return Err(e.into());
            }
            let listener = filter::install_filter().inspect_err(|e| {
                let _ = writeln!(
                    std::io::stderr(),
                    "fdbroker: cannot install the transparent-mode filter: {e}"
                );
            })?;
            theirs.send_with_fds(&[0u8], &[listener.as_fd()])?;
            Ok(())
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            drop(program);
            let code = match supervise(child, &ours, connection, policy, client, scratch, signals) {
                Ok(code) => code,
                Err(e) => {
                    let _ = writeln!(std::io::stderr(), "fdbroker: transparent supervisor: {e}");
                    let _ = kill(child, Signal::SIGKILL);
                    125
                }
            };
            sys::exit_now(code)
        }
    }
}

/// Close every descriptor the supervisor inherited from the broker but `keep`.
#[allow(unsafe_code)] // closing what it inherited
fn close_inherited(keep: &[std::os::fd::RawFd]) -> io::Result<()> {
    // SAFETY: the supervisor is a forked copy of the broker that never returns to the
    // broker's code: the values owning the closed descriptors live in frames below
    // `supervisor_main`, which ends in `_exit` and never drops them.
    unsafe { sys::close_all_but(keep) }
}

/// Forks the program off the supervisor.
#[allow(unsafe_code)] // the fork of the program
fn fork_program() -> nix::Result<ForkResult> {
    // SAFETY: this process is the single-threaded child of a single-threaded broker
    // (spawn mode checks it), so the new child is a complete copy with no lock held by a
    // thread that does not exist in it.
    unsafe { nix::unistd::fork() }
}

/// The supervisor's life: take the listener, connect, answer until the program exits;
/// returns the exit code that reports how the program ended (after re-raising its
/// signal, if it was killed by one).
fn supervise(
    child: Pid,
    handoff: &Channel,
    connection: OwnedFd,
    policy: Policy,
    client: ClientId,
    scratch: std::path::PathBuf,
    signals: SigSet,
) -> io::Result<i32> {
    // Everything inherited from the broker goes, above all the write end of the
    // pipe through which `fdbroker run` waits for the program's exec.
    close_inherited(&[handoff.as_raw_fd(), connection.as_raw_fd()])?;
    let sfd = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
    let mut buf = [0u8; 8];
    let listener = match handoff.recv_with_fds(&mut buf, 1) {
        Ok((_, mut fds)) if fds.len() == 1 => fds.remove(0),
        // The program failed before exec (it said why); report its end.
        _ => return wait_for(child),
    };
    sync_wake_up(&listener);
    // Connected on the first call that needs the broker: `fdbroker run` serves only
    // once the program has exec'd, and waits for this process if the exec failed.
    let sup = Arc::new(Supervisor::new(
        listener, connection, policy, client, scratch,
    ));
    for i in 0..answering_threads() {
        let sup = Arc::clone(&sup);
        // Not joined: the supervisor ends with `_exit`, which ends them too, wherever
        // they are (blocked in a receive, or answering a call of a program now gone).
        std::thread::Builder::new()
            .name(format!("answer-{i}"))
            .spawn(move || {
                // Only these threads: the program, forked earlier, keeps its own slice.
                let _ = fdbroker_shared::process::prefer_short_slices();
                sup.answer_forever()
            })?;
    }
    loop {
        let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        while let Ok(Some(info)) = sfd.read_signal() {
            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            if sig == Signal::SIGCHLD {
                if let Some(code) = reap(child)? {
                    return Ok(code);
                }
            } else {
                let _ = kill(child, sig);
            }
        }
    }
}

/// How many threads answer the program's calls: one per CPU this process may run on,
/// at least 2 (so that one call waiting for the broker never holds up another) and at
/// most 8 (beyond which they would only wait on the one broker connection).
fn answering_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8))
}

/// What the supervisor reads from its signalfd: the signals `fdbroker run` forwards
/// (passed on to the program) and `SIGCHLD`.
fn supervisor_signals(forwarded: SigSet) -> SigSet {
    let mut signals = forwarded;
    signals.add(Signal::SIGCHLD);
    signals
}

/// Waits for the program and reports its end.
fn wait_for(child: Pid) -> io::Result<i32> {
    loop {
        match waitpid(child, None) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(status) => {
                if let Some(code) = ended(status) {
                    return Ok(code);
                }
            }
        }
    }
}

fn reap(child: Pid) -> io::Result<Option<i32>> {
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Ok(status) => {
                if let Some(code) = ended(status) {
                    return Ok(Some(code));
                }
            }
        }
    }
}

/// The program's exit code, or its signal re-raised on the supervisor so that
/// `fdbroker run` reports it as its own worker's.
fn ended(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => {
            let _ = sys::default_disposition(sig);
            let mut one = SigSet::empty();
            one.add(sig);
            let _ = one.thread_unblock();
            let _ = nix::sys::signal::raise(sig);
            Some(128 + sig as i32)
        }
        _ => None,
    }
}

/// Asks the kernel to hand the CPU straight from a notifying thread to the supervisor
/// and back (`SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`, Linux 6.6): the program is blocked
/// for the whole exchange, so running both on the program's CPU saves a wake-up of
/// another, often idle, CPU each way. Only speed depends on it.
fn sync_wake_up(listener: &OwnedFd) {
    // Its result is not needed: without the flag the wake-ups are only slower.
    let _ = sys::notif_set_flags(listener.as_fd(), uapi::FD_SYNC_WAKE_UP);
}
