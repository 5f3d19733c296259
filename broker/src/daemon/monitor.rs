//! The monitor: `fdbroker serve`'s main process ([`monitor_main`]), run as root or as the
//! service's user by systemd or the operator, confined to the capabilities a server may
//! need (none effective), `no_new_privs` and seccomp, without Landlock; it starts
//! confined servers and replaces them on reload and when one dies.
//!
//! A server confines itself to the roots its policy names (Landlock) and to the
//! capabilities it needs, so it can never widen itself: a reload that adds a root, or a
//! root that appears after start, needs a process that is not confined yet. The monitor
//! is that process, and it stays small: it holds the listening sockets (its own, once
//! the first server bound them, or the service manager's) and the notify socket, starts
//! servers by `execve` of its own binary, and relays their readiness. It never parses
//! the policy, a request or any byte from a worker; from a server it takes only the
//! short messages of `control`.
//!
//! ```text
//!              SIGHUP / fdbroker reload                 systemd (NOTIFY_SOCKET, LISTEN_FDS)
//!                         │                                        ▲
//!                         ▼                                        │ READY / RELOADING / STATUS / WATCHDOG
//!   ┌──────────────────────────────────────────────────────────────┴──┐
//!   │ monitor (MAINPID): listeners, notify socket, no_new_privs,      │
//!   │ seccomp, only the capabilities a server may need                │
//!   └───────┬──────────────────────────────────────────┬──────────────┘
//!     control│(socketpair)                      control │ (started on reload)
//!           ▼                                          ▼
//!   ┌──────────────────┐   connections + their state   ┌──────────────────┐
//!   │ server (old)     │ ────── (SCM_RIGHTS) ─────────▶ │ server (new)     │
//!   │ confined, serves │                               │ loads, confines, │
//!   └──────────────────┘                               │ reports ready    │
//!                                                      └──────────────────┘
//! ```
//!
//! A reload starts a new server with the policy file as it is now. Only once it reports
//! ready does the monitor tell the old one to hand over: the old server stops accepting
//! and reading, finishes what it has read, passes every connection (with a parked reply
//! and the count of descriptors in flight) to the new one, and exits. Every request is
//! answered exactly once, by one of them. If the new server fails, it exits, the old one
//! keeps serving, and the reason (`FILE:LINE:COL` for a broken policy) is logged.
//!
//! A server that dies (killed, crashed, or exited on its own) is replaced: the monitor
//! holds the listeners, so they never close and the socket file stays; connections
//! that arrive meanwhile wait in the listen queue for the new server. The monitor logs
//! how the old one ended (the signal, or the exit status) and starts the next after a
//! backoff that grows with consecutive fast failures ([`backoff`]); after
//! [`MAX_FAST_FAILURES`] servers in a row that died within [`FAST_FAILURE`] of their
//! start it gives up and exits non-zero, so the service manager takes over. A server
//! never removes the socket file: the monitor does, once, when it stops for good.
//!
//! `fdbroker reload PID` asks with a queued SIGHUP carrying [`RELOAD_REQUEST`]; the
//! monitor answers that process with [`ANSWER`] carrying [`RELOAD_APPLIED`] or
//! [`RELOAD_REFUSED`], so `systemctl reload` fails when the policy was refused. A plain
//! SIGHUP reloads the same way and gets no answer.

use crate::daemon::reload::{ANSWER, RELOAD_APPLIED, RELOAD_REFUSED, RELOAD_REQUEST};
use crate::listener::Listener;
use crate::server::control::{self, Down, Up};
use crate::sys;
use crate::systemd::notify::{self, Notifier, NotifyState};
use fdbroker_shared::Channel;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

/// How long a new server may take to report ready before it is given up on.
const START_BOUND: Duration = Duration::from_secs(60);
/// How long a stop may take: the server's own drain bound, and some.
const STOP_BOUND: Duration = Duration::from_secs(10);
/// How long a server whose control channel closed may take to exit before the
/// monitor kills it (it is exiting, or wedged).
const EXIT_GRACE_MS: u16 = 2000;
/// A server that dies sooner than this after its start is a fast failure.
pub const FAST_FAILURE: Duration = Duration::from_secs(10);
/// This many fast failures in a row, and the monitor gives up (exits non-zero): a
/// server that cannot stay up is the service manager's to handle (`Restart=`), not a
/// loop to spin in.
pub const MAX_FAST_FAILURES: u32 = 5;
/// The longest wait before a new server is started after a failure.
const MAX_BACKOFF: Duration = Duration::from_secs(4);

/// The signals the monitor takes through its signalfd.
const SIGNALS: [Signal; 4] = [
    Signal::SIGHUP,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGCHLD,
];

/// One server process and its end of the control channel.
#[derive(Debug)]
struct ServerProc {
    pid: Pid,
    control: Channel,
    started: Instant,
    /// When it was told to hand over or to go (then it has a bound to exit in).
    retired: Option<Instant>,
    /// Reload requests answered once this (retiring) server has handed over: only
    /// then does every connection get the new policy.
    answer_when_gone: Vec<Waiter>,
    /// Whether it retires because of a reload (which is complete once it handed over).
    replaced: bool,
    /// It said it handed every connection over ([`Up::HandedOver`]).
    handed_over: bool,
    /// Why its handover failed, if it said ([`Up::Failed`] while retiring).
    handover_failed: Option<String>,
}

/// A server started by a reload, not ready yet, with the end of the handover socket
/// the current server will get once it is.
#[derive(Debug)]
struct Candidate {
    server: ServerProc,
    handover: OwnedFd,
    waiters: Vec<Waiter>,
}

#[derive(Debug)]
struct Monitor {
    argv: Vec<OsString>,
    /// Listening sockets, with names for the servers' logs. Empty until the first
    /// server binds one (unless the service manager passed them).
    listeners: Vec<(OwnedFd, String)>,
    /// The socket file the first server created, owned by the monitor from then on: a
    /// server that dies, or one that stops during a handover, never removes it; the
    /// monitor does when it stops for good (only if the path still names that file).
    socket_file: Option<Listener>,
    notifier: Option<Notifier>,
    current: Option<ServerProc>,
    /// Whether `current` has reported ready (the service is up).
    up: bool,
    candidate: Option<Candidate>,
    /// Servers that are handing over or exiting.
    retiring: Vec<ServerProc>,
    /// A reload asked for while another was in progress, and who waits for it.
    again: Option<Vec<Waiter>>,
    /// The current server's last status line, and the last reload failure.
    status: String,
    reload_error: Option<String>,
    stopping: Option<Instant>,
    /// Whether a server has ever reported ready: before that, a failure is a failed
    /// start (the monitor exits); after, a dead server is replaced.
    ever_up: bool,
    /// How the current server ended, if `SIGCHLD` reaped it before its control channel
    /// said it was gone.
    current_exit: Option<WaitStatus>,
    /// Servers in a row that died within [`FAST_FAILURE`] of their start.
    fast_failures: u32,
    /// When to start the server that replaces a dead one.
    restart_at: Option<Instant>,
}

/// Run `fdbroker serve` as the monitor of servers started with `argv` (this process's
/// own arguments). Returns once the last server has stopped.
pub fn monitor_main(argv: Vec<OsString>) -> ExitCode {
    match Monitor::new(argv).and_then(Monitor::serve) {
        Ok(code) => code,
        Err(e) => {
            crate::log::fatal(&e);
            ExitCode::FAILURE
        }
    }
}

impl Monitor {
    fn new(argv: Vec<OsString>) -> io::Result<Monitor> {
        let activated = crate::systemd::activation::listeners().map_err(io::Error::other)?;
        let listeners = activated
            .into_iter()
            .map(|a| {
                let name = format!("fd {} ({})", a.fd, a.name);
                (a.listener.into_fd(), name)
            })
            .collect();
        let notifier = match Notifier::from_env() {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("not notifying the service manager: {e}");
                None
            }
        };
        Ok(Monitor {
            argv,
            listeners,
            socket_file: None,
            notifier,
            current: None,
            up: false,
            candidate: None,
            retiring: Vec::new(),
            again: None,
            status: String::new(),
            reload_error: None,
            stopping: None,
            ever_up: false,
            current_exit: None,
            fast_failures: 0,
            restart_at: None,
        })
    }

    fn serve(mut self) -> io::Result<ExitCode> {
        let mut set = SigSet::empty();
        for s in SIGNALS {
            set.add(s);
        }
        set.thread_block()?;
        let signals = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
        crate::confine::confine_monitor().map_err(io::Error::other)?;
        self.current = Some(self.start(None)?);
        loop {
            if let Some(code) = self.finished() {
                return Ok(code);
            }
            let deadline = self.next_deadline();
            let timeout = match deadline {
                Some(t) => {
                    let ms = t.saturating_duration_since(Instant::now()).as_millis();
                    PollTimeout::from(u16::try_from(ms).unwrap_or(u16::MAX).max(1))
                }
                None => PollTimeout::NONE,
            };
            let ready = self.wait(&signals, timeout)?;
            if ready.signals {
                self.on_signals(&signals);
            }
            if ready.current {
                self.on_current()?;
            }
            if ready.candidate {
                self.on_candidate();
            }
            for i in ready.retiring.into_iter().rev() {
                self.on_retiring(i);
            }
            self.check_deadlines();
            self.restart_if_due()?;
        }
    }

    /// The current server is gone while the service runs: log how it ended and start
    /// another after a backoff, or give up after too many fast failures.
    fn replace_dead(&mut self, dead: ServerProc) -> io::Result<()> {
        let how = self.how_it_ended(&dead);
        self.up = false;
        if let Some(c) = self.candidate.take() {
            // It was to take over from the dead one; the replacement reads the file
            // as it is now anyway.
            let _ = kill(c.server.pid, Signal::SIGKILL);
            self.again.get_or_insert_with(Vec::new).extend(c.waiters);
            self.retiring.push(c.server);
        }
        self.failed_again(dead.pid, dead.started, &how)
    }

    /// Count one failure of a server started at `started`, and schedule its
    /// replacement, or give up.
    fn failed_again(&mut self, pid: Pid, started: Instant, how: &str) -> io::Result<()> {
        if started.elapsed() >= FAST_FAILURE {
            self.fast_failures = 0;
        }
        self.fast_failures += 1;
        if self.fast_failures >= MAX_FAST_FAILURES {
            return Err(io::Error::other(format!(
                "the server (pid {}) {how}; {} servers in a row failed within {} s of their \
                 start: giving up, so the service manager can restart the broker",
                pid.as_raw(),
                self.fast_failures,
                FAST_FAILURE.as_secs()
            )));
        }
        let delay = backoff(self.fast_failures);
        tracing::error!(
            pid = pid.as_raw(),
            failures = self.fast_failures,
            restart_in_ms = delay.as_millis() as u64,
            "the server {how}; starting a new one (the listeners stay open)"
        );
        let status = format!("restarting: the server {how}");
        self.notify(&[NotifyState::Status(&notify::one_line(
            &status,
            notify::STATUS_MAX,
        ))]);
        self.restart_at = Some(Instant::now() + delay);
        Ok(())
    }

    /// Start the replacement of a dead server once its backoff is over.
    fn restart_if_due(&mut self) -> io::Result<()> {
        let Some(at) = self.restart_at else {
            return Ok(());
        };
        if Instant::now() < at || self.current.is_some() || self.stopping.is_some() {
            if self.stopping.is_some() {
                self.restart_at = None;
            }
            return Ok(());
        }
        self.restart_at = None;
        let tried = Instant::now();
        match self.start(None) {
            Ok(server) => {
                tracing::info!(pid = server.pid.as_raw(), "started a new server");
                self.current = Some(server);
                Ok(())
            }
            Err(e) => self.failed_again(
                Pid::from_raw(0),
                tried,
                &format!("could not be started: {e}"),
            ),
        }
    }

    /// How `dead` ended, from `waitpid`: it closed its control channel, so it has
    /// exited or is about to (or is wedged: then it is killed, and that is what it says).
    fn how_it_ended(&mut self, dead: &ServerProc) -> String {
        let status = match self.current_exit.take() {
            Some(s) if s.pid() == Some(dead.pid) => Ok(s),
            _ => {
                // Its channel closes a moment before it exits: give it that moment
                // (bounded), then make sure it is gone.
                if let Ok(pidfd) = sys::pidfd_open(dead.pid) {
                    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
                    let _ = poll(&mut fds, PollTimeout::from(EXIT_GRACE_MS));
                }
                match waitpid(dead.pid, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) => {
                        let _ = kill(dead.pid, Signal::SIGKILL);
                        loop {
                            match waitpid(dead.pid, None) {
                                Err(Errno::EINTR) => continue,
                                other => break other,
                            }
                        }
                    }
                    other => other,
                }
            }
        };
        match status {
            Ok(WaitStatus::Exited(_, code)) => format!("exited with status {code}"),
            Ok(WaitStatus::Signaled(_, sig, core)) => format!(
                "was killed by signal {}{}",
                sig.as_str(),
                if core { " (core dumped)" } else { "" }
            ),
            Ok(other) => format!("ended ({other:?})"),
            Err(e) => format!("ended (its status is unknown: {e})"),
        }
    }

    /// Block until something happens: which of the watched descriptors are ready.
    fn wait(&self, signals: &SignalFd, timeout: PollTimeout) -> io::Result<Ready> {
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        let mut slots = Slots::default();
        if let Some(c) = &self.current {
            slots.current = Some(fds.len());
            fds.push(PollFd::new(c.control.as_fd(), PollFlags::POLLIN));
        }
        if let Some(c) = &self.candidate {
            slots.candidate = Some(fds.len());
            fds.push(PollFd::new(c.server.control.as_fd(), PollFlags::POLLIN));
        }
        for r in &self.retiring {
            slots.retiring.push(fds.len());
            fds.push(PollFd::new(r.control.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let is_ready = |i: usize| fds[i].revents().is_some_and(|r| !r.is_empty());
        Ok(Ready {
            signals: is_ready(0),
            current: slots.current.is_some_and(is_ready),
            candidate: slots.candidate.is_some_and(is_ready),
            retiring: slots
                .retiring
                .iter()
                .enumerate()
                .filter(|(_, slot)| is_ready(**slot))
                .map(|(i, _)| i)
                .collect(),
        })
    }

    /// Start a server: this binary again, with this process's arguments, given the
    /// listeners, its end of a new control channel and, for a successor, its end of the
    /// handover socket.
    fn start(&self, handover: Option<OwnedFd>) -> io::Result<ServerProc> {
        let (ours, theirs) = Channel::pair()?;
        let theirs = OwnedFd::from(theirs);
        let mut inherit: Vec<RawFd> = vec![theirs.as_raw_fd()];
        let mut cmd = Command::new("/proc/self/exe");
        if let Some((arg0, rest)) = self.argv.split_first() {
            cmd.arg0(arg0).args(rest);
        }
        for var in [
            control::ENV_CONTROL_FD,
            control::ENV_LISTEN_FDS,
            control::ENV_HANDOVER_FD,
            control::ENV_PREDECESSOR_PID,
            control::ENV_WATCHDOG_USEC,
            "NOTIFY_SOCKET",
            "LISTEN_PID",
            "LISTEN_PIDFDID",
            "LISTEN_FDS",
            "LISTEN_FDNAMES",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
        ] {
            cmd.env_remove(var);
        }
        cmd.env(control::ENV_CONTROL_FD, theirs.as_raw_fd().to_string());
        if !self.listeners.is_empty() {
            let list: Vec<String> = self
                .listeners
                .iter()
                .map(|(fd, name)| format!("{}:{name}", fd.as_raw_fd()))
                .collect();
            inherit.extend(self.listeners.iter().map(|(fd, _)| fd.as_raw_fd()));
            cmd.env(control::ENV_LISTEN_FDS, list.join(","));
        }
        if let Some(w) = self.notifier.as_ref().and_then(Notifier::watchdog) {
            cmd.env(control::ENV_WATCHDOG_USEC, w.as_micros().to_string());
        }
        if let Some(h) = &handover {
            inherit.push(h.as_raw_fd());
            cmd.env(control::ENV_HANDOVER_FD, h.as_raw_fd().to_string());
            if let Some(cur) = &self.current {
                cmd.env(control::ENV_PREDECESSOR_PID, cur.pid.as_raw().to_string());
            }
        }
        set_pre_exec(&mut cmd, nix::unistd::getpid(), inherit);
        let child = cmd.spawn()?;
        // The child has its copies; ours close here.
        drop(theirs);
        drop(handover);
        Ok(ServerProc {
            pid: Pid::from_raw(child.id() as i32),
            control: ours,
            started: Instant::now(),
            answer_when_gone: Vec::new(),
            replaced: false,
            handed_over: false,
            handover_failed: None,
            retired: None,
        })
    }

    fn on_signals(&mut self, signals: &SignalFd) {
        loop {
            let info = match signals.read_signal() {
                Ok(Some(info)) => info,
                Ok(None) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read signals");
                    break;
                }
            };
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGHUP) => {
                    // Only a sender that asked (sigqueue with the request value) is
                    // answered: a signal to a shell that did not expect one kills it.
                    let asked = info.ssi_code == libc::SI_QUEUE
                        && info.ssi_int == RELOAD_REQUEST
                        && info.ssi_pid > 0;
                    let waiter = if asked {
                        Waiter::new(Pid::from_raw(info.ssi_pid as i32))
                    } else {
                        None
                    };
                    self.reload(waiter);
                }
                Ok(sig @ (Signal::SIGTERM | Signal::SIGINT)) => {
                    self.stop(&format!("received {}", sig.as_str()));
                }
                Ok(Signal::SIGCHLD) => self.reap(),
                _ => {}
            }
        }
    }

    /// Reap every child that exited; their control channels say the rest. The current
    /// server's status is kept, to say how it ended.
    fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) if self.current.as_ref().map(|c| c.pid) == status.pid() => {
                    self.current_exit = Some(status);
                }
                Ok(WaitStatus::Exited(pid, code)) if code != 0 => {
                    tracing::debug!(pid = pid.as_raw(), code, "server exited");
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    tracing::warn!(
                        pid = pid.as_raw(),
                        signal = sig.as_str(),
                        "server was killed"
                    );
                }
                Ok(_) => {}
            }
        }
    }

    /// A reload: start a new server, unless one is starting (then once more after it).
    fn reload(&mut self, waiter: Option<Waiter>) {
        if self.stopping.is_some() {
            if let Some(w) = waiter {
                answer(w, RELOAD_REFUSED);
            }
            return;
        }
        if let Some(c) = &mut self.candidate {
            // The file may have changed again since that server read it.
            let again = self.again.get_or_insert_with(Vec::new);
            again.extend(waiter);
            let _ = c;
            return;
        }
        if !self.up {
            // Still starting: the first server reads the file as it is now anyway.
            if let Some(w) = waiter {
                self.again.get_or_insert_with(Vec::new).push(w);
            } else {
                self.again.get_or_insert_with(Vec::new);
            }
            return;
        }
        self.notify(&[
            NotifyState::Reloading,
            monotonic_now(),
            NotifyState::Status("reloading the policy"),
        ]);
        tracing::info!("reloading: starting a server with the policy file as it is now");
        let waiters: Vec<Waiter> = waiter.into_iter().collect();
        let started = Channel::pair().and_then(|(keep, give)| {
            let server = self.start(Some(OwnedFd::from(give)))?;
            Ok((server, OwnedFd::from(keep)))
        });
        match started {
            Ok((server, handover)) => {
                self.candidate = Some(Candidate {
                    server,
                    handover,
                    waiters,
                });
            }
            Err(e) => self.refused(waiters, &format!("cannot start a new server: {e}")),
        }
    }

    fn on_current(&mut self) -> io::Result<()> {
        let Some(current) = &self.current else {
            return Ok(());
        };
        let msg = control::recv_up(&current.control);
        match msg {
            Ok(Some((Up::Bound { socket_file }, Some(fd)))) if self.listeners.is_empty() => {
                match Listener::from_fd(fd) {
                    Ok(l) => {
                        // Shown in the servers' logs: the path, before the identity.
                        let name = socket_file
                            .split('\t')
                            .next()
                            .unwrap_or_default()
                            .to_owned();
                        match l.as_fd().try_clone_to_owned() {
                            Ok(fd) => {
                                let mut owner = l;
                                owner.adopt_file(&socket_file);
                                self.listeners.push((fd, name));
                                self.socket_file = Some(owner);
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot keep the server's listener")
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "the server's listener is unusable"),
                }
            }
            Ok(Some((Up::Ready { status }, _))) if !self.up => {
                if self.ever_up {
                    tracing::info!("the new server serves");
                }
                self.up = true;
                self.ever_up = true;
                self.status = status;
                let status = self.status_line();
                self.notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
                if let Some(waiters) = self.again.take() {
                    // Reloads asked for during start-up: the file was read just now.
                    for w in waiters {
                        answer(w, RELOAD_APPLIED);
                    }
                }
            }
            Ok(Some((Up::Status { text }, _))) => {
                self.status = text;
                let status = self.status_line();
                self.notify(&[NotifyState::Status(&status)]);
            }
            Ok(Some((Up::Alive, _))) => self.notify(&[NotifyState::Watchdog]),
            Ok(Some((Up::Failed { reason }, _))) if !self.up && !self.ever_up => {
                // Start-up failed: say why, as a failed start does.
                return Err(io::Error::other(reason));
            }
            Ok(Some((Up::Failed { reason }, _))) if !self.up => {
                // A replacement that cannot start: it exits next, which counts.
                tracing::error!("the new server cannot start: {reason}");
            }
            Ok(Some((other, _))) => {
                tracing::debug!(message = ?other, "unexpected message from the server; ignored");
            }
            Ok(None) | Err(_) => {
                // The server is gone.
                let Some(dead) = self.current.take() else {
                    return Ok(());
                };
                if self.stopping.is_some() {
                    return Ok(());
                }
                if !self.ever_up {
                    if let Some(c) = self.candidate.take() {
                        let _ = kill(c.server.pid, Signal::SIGKILL);
                    }
                    let how = self.how_it_ended(&dead);
                    return Err(io::Error::other(format!(
                        "the server {how} before it was ready; stopping so the service \
                         manager can restart the broker"
                    )));
                }
                return self.replace_dead(dead);
            }
        }
        Ok(())
    }

    fn on_candidate(&mut self) {
        let Some(c) = &self.candidate else { return };
        match control::recv_up(&c.server.control) {
            Ok(Some((Up::Ready { status }, _))) => self.promote(status),
            Ok(Some((Up::Failed { reason }, _))) => {
                let Some(mut c) = self.candidate.take() else {
                    return;
                };
                c.server.retired = Some(Instant::now());
                self.retiring.push(c.server);
                self.refused(c.waiters, &reason);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                let Some(c) = self.candidate.take() else {
                    return;
                };
                self.refused(
                    c.waiters,
                    "the new server exited before it was ready (its log lines say why)",
                );
            }
        }
    }

    /// The candidate is ready: the current server hands over to it.
    fn promote(&mut self, status: String) {
        let Some(c) = self.candidate.take() else {
            return;
        };
        let mut waiters = c.waiters;
        if let Some(mut old) = self.current.take() {
            if let Err(e) = control::send_down(&old.control, Down::HandOver, Some(&c.handover)) {
                // It cannot hand over; it must not keep serving beside the new one. It
                // is killed (it removes no socket file either way: the monitor owns it),
                // and the reload is reported failed: its connections are lost.
                tracing::error!(error = %e, "cannot tell the old server to hand over; killing it");
                let _ = kill(old.pid, Signal::SIGKILL);
                old.handover_failed = Some(format!(
                    "the old server could not be told to hand over ({e}); its connections \
                     were closed"
                ));
            }
            old.answer_when_gone = std::mem::take(&mut waiters);
            old.replaced = true;
            old.retired = Some(Instant::now());
            self.retiring.push(old);
        } else {
            tracing::info!("policy reloaded");
        }
        self.current = Some(c.server);
        // Until the new server has the old one's counts (they come with the handover,
        // and it says its line again then), the old line is the true one: a reload
        // does not show the counts starting over.
        if self.status.is_empty() {
            self.status = status;
        }
        self.reload_error = None;
        let line = self.status_line();
        self.notify(&[NotifyState::Ready, NotifyState::Status(&line)]);
        for w in waiters {
            answer(w, RELOAD_APPLIED);
        }
        if let Some(waiters) = self.again.take() {
            let mut waiters = waiters.into_iter();
            let first = waiters.next();
            self.reload(first);
            if let Some(c) = &mut self.candidate {
                c.waiters.extend(waiters);
            }
        }
    }

    fn refused(&mut self, waiters: Vec<Waiter>, reason: &str) {
        tracing::error!("policy reload failed; the previous policy stays in force: {reason}");
        self.reload_error = Some(reason.to_owned());
        self.tell_refused(reason);
        let line = self.status_line();
        self.notify(&[NotifyState::Ready, NotifyState::Status(&line)]);
        for w in waiters {
            answer(w, RELOAD_REFUSED);
        }
        if let Some(waiters) = self.again.take() {
            let mut waiters = waiters.into_iter();
            self.reload(waiters.next());
            if let Some(c) = &mut self.candidate {
                c.waiters.extend(waiters);
            }
        }
    }

    fn on_retiring(&mut self, i: usize) {
        let Some(r) = self.retiring.get(i) else {
            return;
        };
        match control::recv_up(&r.control) {
            Ok(Some((Up::HandedOver, _))) => {
                if let Some(r) = self.retiring.get_mut(i) {
                    r.handed_over = true;
                    reloaded(r);
                }
            }
            Ok(Some((Up::Failed { reason }, _))) => {
                if let Some(r) = self.retiring.get_mut(i) {
                    r.handover_failed = Some(reason);
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                // Gone. The new server serves everything from now on; but if it went
                // without handing every connection over (killed, wedged, failed), the
                // reload is reported failed: connections were lost.
                let mut r = self.retiring.remove(i);
                if r.replaced && !r.handed_over {
                    let reason = r.handover_failed.take().unwrap_or_else(|| {
                        "the old server exited before it handed every connection over; \
                         those connections were closed"
                            .to_owned()
                    });
                    self.handover_failed(&mut r, &reason);
                } else {
                    reloaded(&mut r);
                }
            }
        }
    }

    /// A replaced server did not hand every connection over: the new policy is in
    /// force, but the reload is reported failed.
    fn handover_failed(&mut self, old: &mut ServerProc, reason: &str) {
        old.replaced = false;
        tracing::error!("reload: the handover failed: {reason}");
        self.reload_error = Some(format!("the handover failed: {reason}"));
        self.tell_refused(&format!("the handover failed: {reason}"));
        let line = self.status_line();
        self.notify(&[NotifyState::Status(&line)]);
        for w in std::mem::take(&mut old.answer_when_gone) {
            answer(w, RELOAD_REFUSED);
        }
    }

    fn stop(&mut self, why: &str) {
        if self.stopping.is_some() {
            return;
        }
        tracing::info!("stopping: {why}");
        self.stopping = Some(Instant::now());
        self.restart_at = None;
        // No server accepts from now on: the socket file goes (if it is still ours).
        self.socket_file = None;
        let status = format!("stopping: {why}");
        self.notify(&[NotifyState::Stopping, NotifyState::Status(&status)]);
        if let Some(c) = self.candidate.take() {
            let _ = kill(c.server.pid, Signal::SIGKILL);
            for w in c.waiters {
                answer(w, RELOAD_REFUSED);
            }
            self.retiring.push(c.server);
        }
        if let Some(cur) = &self.current
            && control::send_down(&cur.control, Down::Stop, None).is_err()
        {
            let _ = kill(cur.pid, Signal::SIGTERM);
        }
    }

    /// When everything is over: the exit status.
    fn finished(&self) -> Option<ExitCode> {
        let all_gone =
            self.current.is_none() && self.candidate.is_none() && self.retiring.is_empty();
        (self.stopping.is_some() && all_gone).then_some(ExitCode::SUCCESS)
    }

    fn next_deadline(&self) -> Option<Instant> {
        let start = self
            .candidate
            .as_ref()
            .map(|c| c.server.started + START_BOUND);
        let first = (!self.up)
            .then(|| self.current.as_ref().map(|c| c.started + START_BOUND))
            .flatten();
        let stop = self.stopping.map(|t| t + STOP_BOUND);
        let restart = self.restart_at;
        let retired = self
            .retiring
            .iter()
            .filter_map(|r| r.retired.map(|t| t + STOP_BOUND))
            .min();
        [start, first, stop, retired, restart]
            .into_iter()
            .flatten()
            .min()
    }

    /// Servers that take too long to start, or to stop, are killed.
    fn check_deadlines(&mut self) {
        let now = Instant::now();
        if let Some(c) = &self.candidate
            && now >= c.server.started + START_BOUND
        {
            let _ = kill(c.server.pid, Signal::SIGKILL);
        }
        if !self.up
            && let Some(c) = &self.current
            && now >= c.started + START_BOUND
        {
            let _ = kill(c.pid, Signal::SIGKILL);
        }
        // A server told to go that does not (a wedged or compromised one) is killed:
        // it must not keep serving, or keep connections, beside its successor.
        for r in &self.retiring {
            if r.retired.is_some_and(|t| now >= t + STOP_BOUND) {
                let _ = kill(r.pid, Signal::SIGKILL);
            }
        }
        if let Some(t) = self.stopping
            && now >= t + STOP_BOUND
        {
            for p in self.current.iter().chain(&self.retiring) {
                let _ = kill(p.pid, Signal::SIGKILL);
            }
        }
    }

    /// Tell the serving server that a reload was refused, for `fdbroker status`.
    fn tell_refused(&self, reason: &str) {
        if let Some(cur) = &self.current {
            let msg = Down::ReloadRefused {
                reason: reason.to_owned(),
            };
            if let Err(e) = control::send_down(&cur.control, msg, None) {
                tracing::debug!(error = %e, "cannot tell the server the reload was refused");
            }
        }
    }

    /// The server's line and, if the last reload failed, why: whole, or in a few words
    /// when it does not fit (`notify::status_text`).
    fn status_line(&self) -> String {
        let parts: Vec<(String, &str)> = self
            .reload_error
            .iter()
            .map(|e| {
                (
                    format!("; last reload failed: {e}"),
                    "; last reload failed (see the journal)",
                )
            })
            .collect();
        notify::status_text(&self.status, &parts)
    }

    fn notify(&self, states: &[NotifyState<'_>]) {
        if let Some(n) = &self.notifier
            && let Err(e) = n.send(states)
        {
            tracing::warn!(socket = %n.socket_name(), error = %e, "cannot notify the service manager");
        }
    }
}

/// How long to wait before starting the server after the `failures`th fast failure in
/// a row: none after the first (one crash is an outage only for as long as a start
/// takes), then doubling from 250 ms up to [`MAX_BACKOFF`].
pub fn backoff(failures: u32) -> Duration {
    match failures {
        0 | 1 => Duration::ZERO,
        n => (Duration::from_millis(250) * 2u32.saturating_pow(n - 2)).min(MAX_BACKOFF),
    }
}

/// A replaced server has handed over: the reload is complete.
fn reloaded(old: &mut ServerProc) {
    if std::mem::take(&mut old.replaced) {
        tracing::info!("policy reloaded: the new server serves every connection");
    }
    for w in std::mem::take(&mut old.answer_when_gone) {
        answer(w, RELOAD_APPLIED);
    }
}

#[derive(Default)]
struct Slots {
    current: Option<usize>,
    candidate: Option<usize>,
    retiring: Vec<usize>,
}

struct Ready {
    signals: bool,
    current: bool,
    candidate: bool,
    retiring: Vec<usize>,
}

fn monotonic_now() -> NotifyState<'static> {
    NotifyState::monotonic_usec_now().unwrap_or(NotifyState::Custom("MONOTONIC_USEC=0"))
}

/// A process waiting for the outcome of the reload it asked for, answered through a
/// pidfd taken when the request came, so never a process that reused the pid since.
///
/// The request's sender pid can be forged (`rt_sigqueueinfo` lets the sender fill it
/// in), so the answer is [`ANSWER`], whose default action is to be ignored: a forged
/// request cannot make the monitor kill anything. (Only a process that may signal the
/// monitor can ask, and it may signal the processes the monitor may signal anyway.)
#[derive(Debug)]
pub struct Waiter {
    pid: Pid,
    pidfd: OwnedFd,
}

impl Waiter {
    fn new(pid: Pid) -> Option<Waiter> {
        match sys::pidfd_open(pid) {
            Ok(pidfd) => Some(Waiter { pid, pidfd }),
            Err(e) => {
                tracing::debug!(pid = pid.as_raw(), error = %e, "cannot answer a reload request");
                None
            }
        }
    }
}

/// Tell a process that asked for a reload how it went.
fn answer(w: Waiter, outcome: i32) {
    if let Err(e) = sys::pidfd_sigqueue(&w.pidfd, ANSWER, outcome) {
        tracing::debug!(pid = w.pid.as_raw(), error = %e, "cannot answer a reload request");
    }
}

/// Have the server's child run [`in_child`] between `fork` and `exec`.
#[allow(unsafe_code)] // the server's pre-exec hook
fn set_pre_exec(cmd: &mut Command, parent: Pid, inherit: Vec<RawFd>) {
    // SAFETY: runs in the forked child before exec. The monitor is single-threaded,
    // so no lock can be held by a thread that does not exist in the child; the
    // closure only makes system calls on descriptor numbers copied in.
    unsafe {
        cmd.pre_exec(move || in_child(parent, &inherit));
    }
}

/// In the forked child, before exec: keep exactly the passed descriptors across exec,
/// take the default signal mask, and die with the monitor.
fn in_child(parent: Pid, inherit: &[RawFd]) -> io::Result<()> {
    for &fd in inherit {
        sys::clear_cloexec(fd)?;
    }
    SigSet::empty().thread_set_mask()?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    if nix::unistd::getppid() != parent {
        return Err(io::Error::other("the monitor exited"));
    }
    Ok(())
}
