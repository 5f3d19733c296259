//! The loop each server thread runs: wait for one ready event, service it, re-arm it.
//!
//! Runs inside the server process (a confined `fdbroker serve` server, or the spawn
//! broker), on every event-loop thread [`Server::run`](super::Server::run) starts.

use super::conn::{self, Binding, Conn, ConnRef, Next, Scratch};
use super::control::{self, Down};
use super::draining::{Draining, MAX_DRAINING_PER_UID};
use super::report::Manager;
use super::slab::Slab;
use super::state::Shared;
use super::throttle::Throttle;
use super::{
    ACCEPT_BACKOFF, CONTROL, FIRST_CONN, FIRST_LISTENER, HANDOVER, RELAY_ROUNDS, RELAY_SPIN,
    SIGNALS, STATUS_EVERY, TICK, WAKE, lock, read,
};
use crate::listener::Listener;
use crate::systemd::notify::{self, NotifyState};
use fdbroker_shared::{Channel, channel, peer};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::EventFd;
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::sys::timerfd::TimerFd;
use std::fmt::Write as _;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};
#[derive(Debug)]
pub(super) struct Inner {
    pub(super) epoll: Epoll,
    /// Emptied when stopping: dropping a listener that created its socket file
    /// removes the file.
    pub(super) listeners: RwLock<Vec<Listener>>,
    pub(super) wake: EventFd,
    pub(super) signals: Option<SignalFd>,
    /// Fires every [`TICK_EVERY`] (more often when the watchdog needs it).
    pub(super) tick: TimerFd,
    pub(super) manager: OnceLock<Manager>,
    pub(super) conns: Mutex<Slab>,
    pub(super) shared: Arc<Shared>,
    pub(super) stopping: AtomicBool,
    /// Spawn mode: stop when the last connection closes.
    pub(super) stop_when_idle: bool,
    pub(super) accept_paused_until: Mutex<Option<Instant>>,
    pub(super) limit_notices: AtomicU64,
    /// Connections held back until their uid has room for a reply's descriptors.
    pub(super) stalled: Mutex<Vec<u64>>,
    /// Closed connections whose workers have not received everything passed: kept
    /// open and charged until they have (see [`Inner::close`]).
    pub(super) draining: Mutex<Draining>,
    /// The monitor's control channel, when a monitor started this server.
    pub(super) control: OnceLock<Channel>,
    /// Where the predecessor hands its connections over, until it is done.
    pub(super) handover_in: Mutex<Option<Channel>>,
    /// Set when the monitor says hand over: the successor's socket.
    pub(super) hand_over_to: Mutex<Option<Channel>>,
    /// The predecessor's pid: it is never a peer.
    pub(super) predecessor: Mutex<Option<i32>>,
    /// The addresses the listeners are bound to: a handed-over connection must be the
    /// accepted end of one of them.
    pub(super) listener_addrs: Vec<nix::sys::socket::UnixAddr>,
    /// Whether every thread gets back to `epoll_wait`: the watchdog is fed only then.
    pub(super) progress: super::progress::Progress,
}

impl Inner {
    pub(super) fn event_loop(&self) {
        let mut scratch = Scratch::default();
        let mut events = [EpollEvent::empty(); 1];
        let mark = self.progress.mark();
        while !self.stopping.load(Ordering::Acquire) {
            let timeout = if lock(&self.accept_paused_until).is_some() {
                EpollTimeout::from(ACCEPT_BACKOFF.as_millis() as u16)
            } else {
                EpollTimeout::NONE
            };
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "epoll_wait failed; stopping");
                    self.begin_stop("event loop failure");
                    break;
                }
            };
            self.resume_accepting_if_due();
            if n == 0 {
                continue;
            }
            if events[0].data() == WAKE {
                break;
            }
            mark.busy();
            match events[0].data() {
                SIGNALS => self.signal_ready(),
                TICK => self.tick(),
                CONTROL => self.control_ready(),
                HANDOVER => self.handover_ready(),
                token if (FIRST_LISTENER..FIRST_CONN).contains(&token) => {
                    self.accept_ready((token - FIRST_LISTENER) as usize);
                }
                token => self.conn_ready(token, &mut scratch),
            }
            mark.idle();
        }
        mark.idle();
    }

    pub(super) fn conn_ready(&self, token: u64, scratch: &mut Scratch) {
        let Some(conn) = lock(&self.conns).get(token) else {
            return;
        };
        let mut next = self.serviced(&conn, scratch);
        // A relay's next request usually comes within microseconds: take it on this
        // thread while it is still awake, a bounded number of times.
        for _ in 0..RELAY_ROUNDS {
            if !matches!(next, Next::Read)
                || !conn.is_relay()
                || !Channel::spinning_pays()
                || self.stopping.load(Ordering::Acquire)
                || !conn.channel().spin_until_readable(RELAY_SPIN)
            {
                break;
            }
            next = self.serviced(&conn, scratch);
        }
        match next {
            Next::Read => self.rearm(&conn, token, EpollFlags::EPOLLIN),
            Next::Write => self.rearm(&conn, token, EpollFlags::EPOLLOUT),
            Next::Close => self.close(&conn, token),
            // Left disarmed; the timer re-arms it.
            Next::Stall => lock(&self.stalled).push(token),
            // Never: `serviced` answers every one. Were it to come, closing is the
            // answer that leaves nothing half-made.
            Next::Connect(_) | Next::Status(_) => self.close(&conn, token),
        }
    }

    /// [`Conn::service`], with the connections it makes for `Op::Connect` admitted (or
    /// refused) here and the answer sent before anything else is read.
    fn serviced(&self, conn: &Conn, scratch: &mut Scratch) -> Next {
        let mut next = conn.service(&self.shared, scratch);
        loop {
            next = match next {
                Next::Connect(born) => {
                    let verdict = self.take_connection(born.conn);
                    conn.answer_connect(born.reply, verdict, scratch)
                }
                Next::Status(id) => conn.answer_status(id, self.status_report(), scratch),
                other => return other,
            };
        }
    }

    pub(super) fn rearm(&self, conn: &Conn, token: u64, interest: EpollFlags) {
        // Waiting to read, a peer that half-closes should wake us (there is nothing
        // more to read). Waiting to write, it must not: RDHUP is level-triggered, so a
        // worker that shuts down its sending side and never reads would wake the loop
        // at once, forever. HUP and ERR are reported whatever the interest.
        let interest = if interest.contains(EpollFlags::EPOLLIN) {
            interest | EpollFlags::EPOLLRDHUP
        } else {
            interest
        };
        let mut ev = EpollEvent::new(interest | EpollFlags::EPOLLONESHOT, token);
        if let Err(e) = self.epoll.modify(conn.channel().as_fd(), &mut ev) {
            tracing::warn!(error = %e, "cannot re-arm a connection; closing it");
            self.close(conn, token);
        }
    }

    pub(super) fn close(&self, conn: &Conn, token: u64) {
        let _ = self.epoll.delete(conn.channel().as_fd());
        let remaining = {
            let mut slab = lock(&self.conns);
            let closed = slab.get(token);
            slab.remove(token);
            if let Some(closed) = closed
                && closed.still_charged_at_close()
            {
                // Nothing more is read or sent; the worker sees end-of-file after what
                // is queued. Kept, charged, until the timer finds the queue empty.
                let _ = closed.channel().shutdown();
                lock(&self.draining).push(closed);
            }
            slab.len()
        };
        if self.stop_when_idle && remaining == 0 {
            self.begin_stop("the worker disconnected");
        }
    }

    pub(super) fn register(&self, conn: Conn) -> io::Result<()> {
        self.register_with(conn, EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP)
    }

    pub(super) fn register_with(&self, conn: Conn, interest: EpollFlags) -> io::Result<()> {
        let conn = Arc::new(conn);
        let token = lock(&self.conns).insert(Arc::clone(&conn));
        let ev = EpollEvent::new(interest | EpollFlags::EPOLLONESHOT, token);
        if let Err(e) = self.epoll.add(conn.channel().as_fd(), ev) {
            lock(&self.conns).remove(token);
            return Err(e.into());
        }
        self.shared
            .stats
            .connections
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    pub(super) fn accept_ready(&self, index: usize) {
        let guard = read(&self.listeners);
        let Some(listener) = guard.get(index) else {
            return;
        };
        for _ in 0..64 {
            match channel::accept(listener) {
                Ok(ch) => self.admit(ch),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e)
                    if matches!(
                        e.raw_os_error().map(Errno::from_raw),
                        Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)
                    ) =>
                {
                    // Out of descriptors: leave the listener disarmed for a moment
                    // rather than spin on a connection we cannot take.
                    self.notice_limit(&format!("cannot accept: {e}; pausing accepts"));
                    *lock(&self.accept_paused_until) = Some(Instant::now() + ACCEPT_BACKOFF);
                    return;
                }
                Err(e)
                    if matches!(
                        e.raw_os_error().map(Errno::from_raw),
                        Some(Errno::ECONNABORTED | Errno::EPROTO | Errno::EINTR)
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "accept failed");
                    break;
                }
            }
        }
        let ev = EpollEvent::new(
            EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT,
            FIRST_LISTENER + index as u64,
        );
        if let Err(e) = self.epoll.modify(listener, &mut { ev }) {
            tracing::error!(error = %e, "cannot re-arm the listener");
        }
    }

    pub(super) fn resume_accepting_if_due(&self) {
        let mut paused = lock(&self.accept_paused_until);
        if paused.is_some_and(|t| Instant::now() >= t) {
            *paused = None;
            drop(paused);
            for (i, l) in read(&self.listeners).iter().enumerate() {
                let mut ev = EpollEvent::new(
                    EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT,
                    FIRST_LISTENER + i as u64,
                );
                let _ = self.epoll.modify(l, &mut ev);
            }
        }
    }

    /// Decide at accept time whether this peer is served at all: an unknown uid, or one
    /// over a connection limit, is refused before any of its bytes are parsed.
    pub(super) fn admit(&self, ch: Channel) {
        let peer = match peer::credentials(&ch) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read peer credentials; dropping connection");
                return;
            }
        };
        // Unreadable groups would make the reopen check too lenient: refuse the peer.
        let groups = match peer::groups(&ch) {
            Ok(g) => g.into_boxed_slice(),
            Err(e) => {
                tracing::warn!(uid = peer.uid, pid = peer.pid, error = %e, "cannot read the peer's groups; dropping connection");
                return;
            }
        };
        let loaded = self.shared.current();
        let binding = Binding::Credentials;
        let conn = Conn::new(
            ch,
            peer,
            groups,
            binding.clone(),
            Arc::clone(&self.shared.inflight),
        );
        // The operator may connect to ask for the broker's status (`Op::Status`), client
        // or not; a hello from it is refused as from anyone the policy does not name.
        if conn.client_in(&loaded).is_none() && !conn.is_operator() {
            conn::note_no_client(&peer);
            conn::refuse(conn.channel(), conn::refusal_for(&peer, &binding));
            return;
        }
        if let Some(why) = self.over_limit(&loaded, peer.uid) {
            self.notice_limit(&why);
            conn::refuse(
                conn.channel(),
                fdbroker_shared::wire::WireError::new(Errno::EAGAIN as i32, why),
            );
            return;
        }
        if let Err(e) = self.register(conn) {
            tracing::warn!(error = %e, "cannot register a connection");
        }
    }

    /// Why one more connection of `uid` would exceed a limit, if it would.
    pub(super) fn over_limit(
        &self,
        loaded: &crate::request::loaded::Loaded,
        uid: u32,
    ) -> Option<String> {
        let settings = loaded.policy.broker();
        let (total, same_uid) = lock(&self.conns).counts(uid);
        // Closed connections still charged count against both limits: each holds a
        // descriptor of the broker's.
        let (draining, draining_uid) = {
            let d = lock(&self.draining);
            (d.conns.len(), d.of(uid))
        };
        let (total, same_uid) = (total + draining, same_uid + draining_uid);
        if draining_uid >= MAX_DRAINING_PER_UID {
            Some(format!(
                "uid {uid} has {draining_uid} closed connections whose replies were never \
                 received; receive or close them first"
            ))
        } else if total >= settings.max_connections {
            Some(format!(
                "the broker is at its limit of {} connections",
                settings.max_connections
            ))
        } else if same_uid >= settings.max_connections_per_uid {
            Some(format!(
                "uid {uid} is at its limit of {} connections",
                settings.max_connections_per_uid
            ))
        } else {
            None
        }
    }

    /// Log a limit being hit once per burst, not once per connection.
    pub(super) fn notice_limit(&self, what: &str) {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.limit_notices.load(Ordering::Relaxed);
        if secs >= last + 10
            && self
                .limit_notices
                .compare_exchange(last, secs, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!("{what} (further limit notices are suppressed for 10 s)");
        }
    }

    /// An order from the monitor: hand over, or stop.
    pub(super) fn control_ready(&self) {
        let Some(ch) = self.control.get() else { return };
        match control::recv_down(ch) {
            Ok(Some((Down::HandOver, Some(fd)))) => match Channel::from_fd(fd) {
                Ok(to) => {
                    *lock(&self.hand_over_to) = Some(to);
                    self.begin_stop("handing over to the new server");
                }
                Err(e) => tracing::error!(error = %e, "the monitor's handover socket is unusable"),
            },
            Ok(Some((Down::Stop, _))) => self.begin_stop("the monitor asked to stop"),
            Ok(Some((Down::ReloadRefused { reason }, _))) => {
                self.shared.note_reload(Some(reason));
            }
            Ok(Some((Down::HandOver, None))) => {}
            Ok(None) => self.begin_stop("the monitor is gone"),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => tracing::warn!(error = %e, "bad message from the monitor; ignored"),
        }
        let mut ev = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT, CONTROL);
        let _ = self.epoll.modify(ch.as_fd(), &mut ev);
    }

    /// Connections the predecessor hands over: each joins this server as if accepted
    /// here (its client chosen again under this policy on its next request).
    pub(super) fn handover_ready(&self) {
        let mut slot = lock(&self.handover_in);
        let Some(from) = slot.as_ref() else { return };
        loop {
            match crate::server::handover::recv(from) {
                Ok(crate::server::handover::Received::Conn { conn, draining }) => {
                    self.adopt(conn, draining);
                }
                Ok(crate::server::handover::Received::Tally(t)) => crate::audit::counts::merge(&t),
                Ok(
                    crate::server::handover::Received::Done
                    | crate::server::handover::Received::Closed,
                ) => {
                    let _ = self.epoll.delete(from.as_fd());
                    *slot = None;
                    // This server was started by a reload, which is now complete.
                    self.shared.note_reload(None);
                    self.status_due();
                    tracing::info!("took over the previous server's connections");
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => tracing::warn!(error = %e, "a handed-over connection was unusable"),
            }
        }
        let mut ev = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT, HANDOVER);
        let _ = self.epoll.modify(from.as_fd(), &mut ev);
    }

    /// Take whatever the predecessor still hands over, waiting at most a moment for it
    /// to finish (it has stopped reading, so it only sends what it holds).
    pub(super) fn drain_handover(&self) {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let Some(from) = lock(&self.handover_in).take() else {
            return;
        };
        let _ = self.epoll.delete(from.as_fd());
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match crate::server::handover::recv(&from) {
                Ok(crate::server::handover::Received::Conn { conn, draining }) => {
                    self.adopt(conn, draining)
                }
                Ok(crate::server::handover::Received::Tally(t)) => crate::audit::counts::merge(&t),
                Ok(
                    crate::server::handover::Received::Done
                    | crate::server::handover::Received::Closed,
                ) => {
                    self.shared.note_reload(None);
                    self.status_due();
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
                    let mut fds = [PollFd::new(from.as_fd(), PollFlags::POLLIN)];
                    if ms == 0 || !matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0) {
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "a handed-over connection was unusable"),
            }
        }
    }

    pub(super) fn adopt(&self, e: conn::Exported, draining: bool) {
        let creds = peer::credentials(&e.socket);
        let groups = peer::groups(&e.socket);
        let (Ok(creds), Ok(groups)) = (creds, groups) else {
            tracing::warn!("cannot read a handed-over connection's peer; closing it");
            return;
        };
        // A server is not a worker: a connection it made itself and passed as a worker's
        // would make it a client of the new policy, with whatever identity the kernel
        // reports for its peer (the listener's creator, for the connecting end of the
        // listener). Only the accepted end of one of these listeners is a worker's
        // connection: its local address is the listener's, where a connecting end or a
        // socketpair is unnamed. (A confined server can neither connect nor start a
        // process, see confine.rs; this holds even if one could.)
        let local = nix::sys::socket::getsockname::<nix::sys::socket::UnixAddr>(
            e.socket.as_fd().as_raw_fd(),
        );
        if let Some(uid) = e.derived_uid {
            self.adopt_charge(
                e,
                creds,
                uid,
                local.is_ok_and(|a| self.listener_addrs.contains(&a)),
            );
            return;
        }
        if !local.is_ok_and(|a| self.listener_addrs.contains(&a))
            || *lock(&self.predecessor) == Some(creds.pid)
        {
            tracing::warn!(
                pid = creds.pid,
                "the previous server handed over a socket that is no accepted connection of \
                 this broker's listeners; closing it"
            );
            return;
        }
        // No connection has more in flight than its uid's budget.
        let mut e = e;
        e.charged = e.charged.min(self.shared.inflight.uid_budget());
        let (conn, parked) = Conn::import(
            e,
            creds,
            groups.into_boxed_slice(),
            Arc::clone(&self.shared.inflight),
        );
        // Already non-blocking (the predecessor's open file is this one), but say so:
        // with fcntl, which the confined server may call (not the ioctl std uses).
        let nonblocking = nix::fcntl::fcntl(
            conn.channel(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
        if let Err(e) = nonblocking {
            tracing::warn!(error = %e, "cannot adopt a handed-over connection");
            return;
        }
        if draining {
            lock(&self.draining).push(Arc::new(conn));
            return;
        }
        let interest = if parked {
            EpollFlags::EPOLLOUT
        } else {
            EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP
        };
        if let Err(e) = self.register_with(conn, interest) {
            tracing::warn!(error = %e, "cannot register a handed-over connection");
        }
    }

    /// A connection a predecessor made for a worker (`Connect`), passed shut down only
    /// for the descriptors still in flight on it: kept, never served, charged to `uid`
    /// (the predecessor's word, which only moves a count, capped at a uid's budget)
    /// until its worker has received everything. It must be a socketpair a server of
    /// this broker made: its peer credentials name the broker's user (the server that
    /// made it, perhaps several reloads ago), and it is no accepted connection of the
    /// listeners.
    fn adopt_charge(
        &self,
        mut e: conn::Exported,
        creds: peer::PeerCredentials,
        uid: u32,
        accepted: bool,
    ) {
        if accepted || creds.uid != nix::unistd::geteuid().as_raw() {
            tracing::warn!(
                pid = creds.pid,
                "the previous server handed over, for its charge, a socket no server of \
                 this broker made; closing it"
            );
            return;
        }
        e.charged = e.charged.min(self.shared.inflight.uid_budget());
        let owner = peer::PeerCredentials { uid, ..creds };
        let (conn, _) = Conn::import(e, owner, Box::default(), Arc::clone(&self.shared.inflight));
        let _ = conn.channel().shutdown();
        lock(&self.draining).push(Arc::new(conn));
    }

    pub(super) fn signal_ready(&self) {
        let Some(sfd) = &self.signals else { return };
        loop {
            match sfd.read_signal() {
                Ok(Some(info)) => match Signal::try_from(info.ssi_signo as i32) {
                    // Under a monitor, reloads start a new server instead.
                    Ok(Signal::SIGHUP) if self.control.get().is_some() => {
                        tracing::debug!(
                            "SIGHUP ignored: the monitor reloads by replacing this server"
                        );
                    }
                    Ok(Signal::SIGHUP) => self.reload(),
                    Ok(sig @ (Signal::SIGTERM | Signal::SIGINT)) => {
                        self.begin_stop(&format!("received {}", sig.as_str()));
                    }
                    _ => {}
                },
                Ok(None) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read signals");
                    break;
                }
            }
        }
        let mut ev = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT, SIGNALS);
        let _ = self.epoll.modify(sfd.as_fd(), &mut ev);
    }

    pub(super) fn reload(&self) {
        if let Some(m) = self.manager.get() {
            match NotifyState::monotonic_usec_now() {
                Ok(now) => m.send(&[
                    NotifyState::Reloading,
                    now,
                    NotifyState::Status("reloading the policy"),
                ]),
                Err(e) => tracing::warn!(error = %e, "cannot read the monotonic clock"),
            }
        }
        match self.shared.reload() {
            Ok(loaded) => tracing::info!(
                generation = loaded.generation,
                clients = loaded.policy.clients().len(),
                roots = loaded.roots.len(),
                "policy reloaded"
            ),
            Err(e) => {
                tracing::error!("policy reload failed; the previous policy stays in force: {e}")
            }
        }
        // Serving again either way: with the new policy, or the previous one.
        if let Some(m) = self.manager.get() {
            let status = self.status_line();
            m.send(&[NotifyState::Ready, NotifyState::Status(&status)]);
            *lock(&m.last_status) = (status, Instant::now());
        }
    }

    pub(super) fn begin_stop(&self, why: &str) {
        if !self.stopping.swap(true, Ordering::AcqRel) {
            tracing::info!("stopping: {why}");
            if let Some(m) = self.manager.get() {
                let status = format!("stopping: {why}");
                m.send(&[NotifyState::Stopping, NotifyState::Status(&status)]);
            }
        }
        // Level-triggered and never drained: every thread sees it.
        let _ = self.wake.write(1);
    }

    /// `READY=1`: the event loop is about to run on every thread.
    pub(super) fn notify_ready(&self) {
        if let Some(m) = self.manager.get() {
            let status = self.status_line();
            m.send(&[NotifyState::Ready, NotifyState::Status(&status)]);
            *lock(&m.last_status) = (status, Instant::now());
        }
    }

    /// The timer: close idle connections, write the audit summaries that are due, feed
    /// the watchdog, refresh the status line if it changed.
    pub(super) fn tick(&self) {
        // The expiration count; reading resets the timer's readiness.
        let _ = nix::unistd::read(&self.tick, &mut [0u8; 8]);
        self.close_idle();
        lock(&self.draining).settle();
        self.refresh_charges();
        self.resume_stalled();
        // Summaries of refusal bursts whose window ended.
        crate::audit::tick();
        let log_changed = self.log_destination_changed();
        if let Some(m) = self.manager.get() {
            if let Some((due, last)) = &m.watchdog {
                let mut last = lock(last);
                if last.elapsed() >= *due && !self.stopping.load(Ordering::Acquire) {
                    // A thread on one event for longer than the watchdog's period makes
                    // no progress: stop saying the server is healthy.
                    match self.progress.longest_busy().filter(|busy| busy >= due) {
                        None => {
                            m.send(&[NotifyState::Watchdog]);
                            *last = Instant::now();
                        }
                        Some(busy) => {
                            static WEDGED: Throttle = Throttle::once_per_window();
                            if let Some(suppressed) = WEDGED.admit() {
                                tracing::error!(
                                    busy_ms = busy.as_millis() as u64,
                                    suppressed,
                                    "an event-loop thread makes no progress; the watchdog \
                                     is not fed"
                                );
                            }
                        }
                    }
                }
            }
            let status = self.status_line();
            let mut last = lock(&m.last_status);
            // A change of the log destination is said at once, the rest at most every
            // STATUS_EVERY.
            if last.0 != status && (log_changed || last.1.elapsed() >= STATUS_EVERY) {
                m.send(&[NotifyState::Status(&status)]);
                *last = (status, Instant::now());
            }
        }
        let mut ev = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT, TICK);
        if let Err(e) = self.epoll.modify(self.tick.as_fd(), &mut ev) {
            tracing::error!(error = %e, "cannot re-arm the timer; idle connections stay open");
        }
    }

    /// Have the next tick send `STATUS=` whatever the time since the last one: the
    /// counts a predecessor handed over changed it.
    fn status_due(&self) {
        if let Some(m) = self.manager.get() {
            let mut last = lock(&m.last_status);
            if let Some(long_ago) = Instant::now().checked_sub(STATUS_EVERY) {
                last.1 = long_ago;
            }
        }
    }

    /// Log a change of the log destination's state (failing, resumed) that
    /// `log::sink` saw since the last tick; whether there was one. The line that says
    /// writes fail is likely lost too; the one that says they resumed has what was lost.
    fn log_destination_changed(&self) -> bool {
        use crate::log::sink::Change;
        let Some(change) = crate::log::sink::take_change() else {
            return false;
        };
        let setting = self.shared.current().policy.broker().audit_failure;
        match change {
            Change::Failing { error } => tracing::error!(
                error = %error,
                audit_failure = setting.as_str(),
                "log writes fail: lines are lost and counted until they can be written; {}",
                match setting {
                    fdbroker_policy::AuditFailure::Refuse => "descriptors are refused meanwhile",
                    fdbroker_policy::AuditFailure::Serve => "descriptors are passed unrecorded",
                }
            ),
            Change::Resumed {
                lasted,
                error,
                lost,
                lost_audit,
            } => tracing::warn!(
                lasted_ms = lasted.as_millis() as u64,
                error = %error,
                lost,
                lost_audit,
                "log writes resumed"
            ),
        }
        true
    }

    /// Let held-back connections try again (each checks its uid's room first).
    pub(super) fn resume_stalled(&self) {
        let tokens = std::mem::take(&mut *lock(&self.stalled));
        for token in tokens {
            let conn = lock(&self.conns).get(token);
            if let Some(conn) = conn {
                self.rearm(&conn, token, EpollFlags::EPOLLIN);
            }
        }
    }

    /// Give back the descriptor charge of connections whose workers have received
    /// everything, so a uid's other connections are not refused for replies long read
    /// (each connection also checks its own before every request).
    pub(super) fn refresh_charges(&self) {
        if self.shared.inflight.total() == 0 {
            return;
        }
        let conns: Vec<ConnRef> = lock(&self.conns).iter().cloned().collect();
        for conn in conns {
            conn.refresh_charge_if_idle();
        }
    }

    /// Shut down every connection idle longer than the policy's `idle_timeout`, so
    /// silent sockets cannot hold `max_connections` for ever. Shutting down (not
    /// closing) wakes the connection in epoll; whichever thread takes that event finds
    /// the end of file and closes it the usual way.
    pub(super) fn close_idle(&self) {
        // A spawned worker's one connection lives as long as the worker does.
        if self.stop_when_idle {
            return;
        }
        let Some(limit) = self.shared.current().policy.broker().idle_timeout else {
            return;
        };
        let now = Instant::now();
        let idle: Vec<ConnRef> = lock(&self.conns)
            .iter()
            .filter(|c| c.idle_for(now) >= limit)
            .cloned()
            .collect();
        for conn in idle {
            tracing::info!(
                target: "fdbroker::audit",
                uid = conn.peer.uid,
                pid = conn.peer.pid,
                idle_s = limit.as_secs(),
                "closing an idle connection"
            );
            let _ = conn.channel().shutdown();
        }
    }

    /// One short line for `systemctl status`: the policy file, open connections
    /// of policy clients, and the decisions since the service started (they survive
    /// reloads: `audit::counts`), then what is wrong, each part whole or in a few words
    /// (`notify::status_text`), never cut.
    pub(super) fn status_line(&self) -> String {
        let loaded = self.shared.current();
        // The whole path, or its file name where that would take much of the line.
        let policy = self.shared.policy_path.as_deref().map_or_else(
            || "the policy".to_owned(),
            |p| {
                let whole = p.display().to_string();
                match p.file_name() {
                    Some(n) if whole.len() > notify::STATUS_MAX / 2 => {
                        n.to_string_lossy().into_owned()
                    }
                    _ => whole,
                }
            },
        );
        let conns = lock(&self.conns)
            .iter()
            .filter(|c| c.greeted() && c.client_in(&loaded).is_some())
            .count();
        let total = crate::audit::counts::snapshot().total();
        let plural = |n: u64| if n == 1 { "" } else { "s" };
        let mut base = format!(
            "serving {policy}: {conns} connection{}, {} request{} ({} granted, {} denied",
            plural(conns as u64),
            total.requests(),
            plural(total.requests()),
            total.granted,
            total.denied,
        );
        if total.failed > 0 {
            let _ = write!(base, ", {} failed", total.failed);
        }
        base.push(')');
        let mut parts: Vec<(String, &str)> = Vec::new();
        let log = crate::log::sink::health();
        if let Some((since, error)) = log.failing {
            parts.push((
                format!(
                    "; log writes failing for {}s ({error}): {} lines lost, {} audit; {}",
                    since.elapsed().as_secs(),
                    log.lost,
                    log.lost_audit,
                    match loaded.policy.broker().audit_failure {
                        fdbroker_policy::AuditFailure::Refuse => "refusing descriptors",
                        fdbroker_policy::AuditFailure::Serve => "serving unrecorded",
                    }
                ),
                match loaded.policy.broker().audit_failure {
                    fdbroker_policy::AuditFailure::Refuse => {
                        "; log writes failing; refusing descriptors"
                    }
                    fdbroker_policy::AuditFailure::Serve => {
                        "; log writes failing; serving unrecorded"
                    }
                },
            ));
        } else if log.lost > 0 {
            parts.push((
                format!("; {} log lines lost, {} audit", log.lost, log.lost_audit),
                "; log lines lost",
            ));
        }
        if let Some(e) = self.shared.last_reload_error() {
            parts.push((
                format!("; last reload failed: {e}"),
                "; last reload failed (see the journal)",
            ));
        }
        notify::status_text(&base, &parts)
    }
}

impl Inner {
    /// A connection a worker asked for (`Op::Connect`, see `conn::Conn::fresh_connection`):
    /// registered like an accepted connection that was admitted, under the same limits,
    /// by the server that serves the connection it was asked on.
    pub(super) fn take_connection(
        &self,
        conn: Conn,
    ) -> Result<(), fdbroker_shared::wire::WireError> {
        use fdbroker_shared::wire::WireError;
        if self.stopping.load(Ordering::Acquire) {
            return Err(WireError::new(
                Errno::ESHUTDOWN as i32,
                "the broker is stopping",
            ));
        }
        if let Some(why) = self.over_limit(&self.shared.current(), conn.peer.uid) {
            self.notice_limit(&why);
            return Err(WireError::new(Errno::EAGAIN as i32, why));
        }
        self.register(conn).map_err(|e| {
            tracing::warn!(error = %e, "cannot register a connection a worker asked for");
            WireError::new(
                e.raw_os_error().unwrap_or(Errno::EIO as i32),
                format!("the broker cannot serve a new connection: {e}"),
            )
        })
    }
}
