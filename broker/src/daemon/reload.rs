//! `fdbroker reload PID`: the requester, run by the operator or by systemd's
//! `ExecReload=` (as root or as the monitor's user, unconfined, short-lived), asks a
//! running monitor to reload and waits for the outcome.
//!
//! It first checks that the pid is an fdbroker monitor ([`super::target`]) and refuses
//! anything else without signalling it; then it asks, through the same pidfd, with a
//! queued SIGHUP carrying [`RELOAD_REQUEST`]; the monitor answers with [`ANSWER`]
//! carrying [`RELOAD_APPLIED`] or [`RELOAD_REFUSED`], so `systemctl reload` fails when
//! the policy was refused.

use super::target::{self, TargetError};
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
/// The answer's `si_value`: it was refused, and the previous policy stays; or the
/// handover to the new server failed (the journal says which, and why).
pub const RELOAD_REFUSED: i32 = 2;

/// The signal that answers a reload request: ignored by default (unlike SIGUSR1, whose
/// default kills).
pub const ANSWER: Signal = Signal::SIGURG;

/// The requester process: check `policy` if given, ask the monitor `pid` to reload,
/// wait up to `timeout` for its answer, and say how it went (exit 0 applied, 1 not).
///
/// With `replay` (an audit log, and `--force`), the file is first judged against what
/// the log recorded: a reload that would deny a request the log shows granted is
/// refused (exit 1, the flips listed) unless forced.
pub fn reload_main(
    policy: Option<&Path>,
    replay: Option<(&Path, bool)>,
    pid: i32,
    timeout: Duration,
) -> ExitCode {
    fn fail(msg: impl std::fmt::Display) -> ExitCode {
        crate::log::say(&format!("fdbroker: {msg}"));
        ExitCode::FAILURE
    }

    if pid <= 0 {
        return fail(format!("{} is not a process id", pid));
    }
    let loaded = match policy.map(Policy::load).transpose() {
        Ok(p) => p,
        Err(e) => return fail(format!("not reloading: {e}")),
    };
    if let Some((log, force)) = replay {
        // Without --policy: the file the monitor itself reloads, from its command line.
        let found;
        let new = match &loaded {
            Some(p) => p,
            // Only a monitor's command line is read, and the file it names loaded: a
            // mistyped pid must not make root parse whatever another process names.
            None => match target::monitor(Pid::from_raw(pid))
                .map_err(|e| e.to_string())
                .and_then(|_| monitor_policy(pid))
                .and_then(|f| Policy::load(&f).map_err(|e| e.to_string()))
            {
                Ok(p) => {
                    found = p;
                    &found
                }
                Err(e) => return fail(format!("not reloading: {e}")),
            },
        };
        let evidence = match crate::inspect::evidence::read_log(log) {
            Ok(ev) => ev,
            Err(e) => return fail(format!("not reloading: {e}")),
        };
        // Decisions past the reader's bounds were never judged: a log filled with
        // distinct requests first (a worker can make them) would hide every later
        // grant. Refuse what cannot be judged, unless forced.
        if evidence.dropped > 0 && !force {
            return fail(format!(
                "not reloading: {} held more distinct decisions than the {} that can be \
                 judged ({} not kept); give a shorter log (--since) or --force",
                log.display(),
                fdbroker_policy::audit_log::MAX_RECORDS,
                evidence.dropped
            ));
        }
        let taken: Vec<_> = fdbroker_policy::replay::replay(new, &evidence)
            .into_iter()
            .filter(|f| f.takes_away())
            .collect();
        for flip in &taken {
            crate::log::say(&format!(
                "fdbroker: {}",
                fdbroker_policy::replay::FlipLine { policy: new, flip }
            ));
        }
        if !taken.is_empty() {
            let n: u64 = taken.iter().map(|f| f.count).sum();
            if !force {
                return fail(format!(
                    "not reloading: {} would deny {n} request(s) that {} recorded as granted \
                     (listed above); --force reloads anyway",
                    new.origin().display(),
                    log.display()
                ));
            }
            crate::log::say(&format!(
                "fdbroker: --force: reloading although {n} recorded grant(s) would now be denied"
            ));
        }
    }
    let raw = pid;
    let pid = Pid::from_raw(raw);
    match request_reload(pid, timeout) {
        Ok(true) => {
            println!("fdbroker: reloaded; the new policy is in force");
            ExitCode::SUCCESS
        }
        Ok(false) => fail(
            "the reload failed: the broker refused the new policy (the previous policy \
             stays in force), or the new server serves but the old one could not hand \
             every connection over (those were closed); the broker's log says which and \
             why: journalctl -u fdbroker",
        ),
        Err(ReloadError::Target(e)) => fail(e),
        Err(ReloadError::Io(e)) => fail(format!("cannot reload process {raw}: {e}")),
    }
}

/// The policy file a `fdbroker serve` process was started with (`--policy FILE` or
/// `--policy=FILE` in `/proc/PID/cmdline`, a relative one taken from its working
/// directory). Read only once [`target::monitor`] said `pid` is a monitor (and again
/// before anything is signalled).
fn monitor_policy(pid: i32) -> Result<std::path::PathBuf, String> {
    use std::os::unix::ffi::OsStrExt;
    let unknown = |why: String| {
        format!("cannot tell which policy file process {pid} serves ({why}); give --policy FILE")
    };
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).map_err(|e| unknown(e.to_string()))?;
    let mut args = raw.split(|&b| b == 0);
    let mut file = None;
    while let Some(arg) = args.next() {
        if arg == b"--policy" {
            file = args.next();
        } else if let Some(v) = arg.strip_prefix(b"--policy=") {
            file = Some(v);
        }
    }
    let file = match file {
        Some(f) if !f.is_empty() => Path::new(std::ffi::OsStr::from_bytes(f)).to_owned(),
        _ => return Err(unknown("no --policy in its command line".to_owned())),
    };
    if file.is_absolute() {
        return Ok(file);
    }
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).map_err(|e| unknown(e.to_string()))?;
    Ok(cwd.join(file))
}

/// Why `fdbroker reload` got no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The pid is not a monitor; it was not signalled.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// Signalling or waiting failed (or timed out).
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// `fdbroker reload PID`: ask the monitor `pid` to reload and wait up to `limit` for
/// the outcome. `Ok(true)` when the new policy is in force. A process that is not an
/// fdbroker monitor is refused without being signalled ([`target::monitor`]).
pub fn request_reload(pid: Pid, limit: Duration) -> Result<bool, ReloadError> {
    let monitor = target::monitor(pid)?;
    let mut set = SigSet::empty();
    set.add(ANSWER);
    set.thread_block().map_err(io::Error::from)?;
    // The monitor may run as a user of its own and holds no CAP_KILL: it can answer
    // only a process whose real uid is its own. A root caller takes it as its real uid
    // (effective stays root) for the wait.
    if nix::unistd::geteuid().is_root()
        && let Some(uid) = monitor.real_uid
        && uid != 0
    {
        let ids = nix::unistd::getresuid().map_err(io::Error::from)?;
        nix::unistd::setresuid(nix::unistd::Uid::from_raw(uid), ids.effective, ids.saved)
            .map_err(io::Error::from)?;
    }
    // Through the pidfd checked above: this process or, if it has exited since, nobody.
    sys::pidfd_sigqueue(&monitor.pidfd, Signal::SIGHUP, RELOAD_REQUEST)?;
    let sfd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC).map_err(io::Error::from)?;
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer from the broker within {}s", limit.as_secs()),
            )
            .into());
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX).max(1);
        let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(io::Error::from(e).into()),
        }
        if let Ok(Some(info)) = sfd.read_signal()
            && info.ssi_pid as i32 == pid.as_raw()
            && info.ssi_code == libc::SI_QUEUE
        {
            return Ok(info.ssi_int == RELOAD_APPLIED);
        }
    }
}
