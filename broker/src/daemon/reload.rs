//! `fdbroker reload PID`: the requester, run by the operator or by systemd's
//! `ExecReload=` (as root or as the monitor's user, unconfined, short-lived), asks a
//! running monitor to reload and waits for the outcome.
//!
//! It asks with `sigqueue(SIGHUP)` carrying [`RELOAD_REQUEST`]; the monitor answers with
//! [`ANSWER`] carrying [`RELOAD_APPLIED`] or [`RELOAD_REFUSED`], so `systemctl reload`
//! fails when the policy was refused.

use crate::sys;
use fdbroker_policy::Policy;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The `si_value` of a SIGHUP that asks for an answer (`fdbroker reload`).
pub const RELOAD_REQUEST: i32 = 0x6664_6272;
/// The answer's `si_value`: the new policy is in force.
pub const RELOAD_APPLIED: i32 = 1;
/// The answer's `si_value`: it was refused; the previous policy stays (the journal says
/// why).
pub const RELOAD_REFUSED: i32 = 2;

/// The signal that answers a reload request: ignored by default (unlike SIGUSR1, whose
/// default kills).
pub const ANSWER: Signal = Signal::SIGURG;

/// The requester process: check `policy` if given, ask the monitor `pid` to reload,
/// wait up to `timeout` for its answer, and say how it went (exit 0 applied, 1 not).
pub fn reload_main(policy: Option<&Path>, pid: i32, timeout: Duration) -> ExitCode {
    fn fail(msg: impl std::fmt::Display) -> ExitCode {
        eprintln!("fdbroker: {msg}");
        ExitCode::FAILURE
    }

    if let Some(policy) = policy
        && let Err(e) = Policy::load(policy)
    {
        return fail(format!("not reloading: {e}"));
    }
    if pid <= 0 {
        return fail(format!("{} is not a process id", pid));
    }
    let raw = pid;
    let pid = Pid::from_raw(raw);
    match request_reload(pid, timeout) {
        Ok(true) => {
            println!("fdbroker: reloaded; the new policy is in force");
            ExitCode::SUCCESS
        }
        Ok(false) => fail(
            "the broker refused the new policy; the previous policy stays in force \
             (the broker's log says why: journalctl -u fdbroker)",
        ),
        Err(e) => fail(format!("cannot reload process {raw}: {e}")),
    }
}

/// `fdbroker reload PID`: ask the monitor `pid` to reload and wait up to `limit` for
/// the outcome. `Ok(true)` when the new policy is in force.
pub fn request_reload(pid: Pid, limit: Duration) -> io::Result<bool> {
    let mut set = SigSet::empty();
    set.add(ANSWER);
    set.thread_block()?;
    // The monitor may run as a user of its own and holds no CAP_KILL: it can answer
    // only a process whose real uid is its own. A root caller takes it as its real uid
    // (effective stays root) for the wait.
    if nix::unistd::geteuid().is_root()
        && let Some(uid) = real_uid_of(pid)
        && uid != 0
    {
        let ids = nix::unistd::getresuid()?;
        nix::unistd::setresuid(nix::unistd::Uid::from_raw(uid), ids.effective, ids.saved)?;
    }
    sys::sigqueue(pid, Signal::SIGHUP, RELOAD_REQUEST)?;
    let sfd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC)?;
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer from the broker within {}s", limit.as_secs()),
            ));
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX).max(1);
        let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        if let Ok(Some(info)) = sfd.read_signal()
            && info.ssi_pid as i32 == pid.as_raw()
            && info.ssi_code == libc::SI_QUEUE
        {
            return Ok(info.ssi_int == RELOAD_APPLIED);
        }
    }
}

fn real_uid_of(pid: Pid) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}
