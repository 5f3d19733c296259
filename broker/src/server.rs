//! The event loop: a few threads sharing one epoll instance.
//!
//! Every connection is registered `EPOLLONESHOT`, so exactly one thread services it at a
//! time and a slow or idle connection never holds a thread: threads only run when a
//! socket is ready, and the per-connection cost is one small struct (buffers are per
//! thread). Each thread takes one event per `epoll_wait`, so ready work spreads over all
//! threads instead of queueing behind one.
//!
//! Control arrives by signals (SIGHUP reload, SIGTERM/SIGINT stop) through a
//! `signalfd`, read by whichever thread is free: no work happens in a signal handler.

use crate::conn::{self, Binding, Conn, ConnRef, Next, Scratch};
use crate::listener::Listener;
use crate::state::Shared;
use fdbroker_shared::{Channel, channel, peer};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::collections::HashMap;
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LISTENER: u64 = 0;
const WAKE: u64 = 1;
const SIGNALS: u64 = 2;
const FIRST_CONN: u64 = 16;

/// How long a graceful stop may spend answering requests already sent.
pub const DRAIN_BOUND: Duration = Duration::from_secs(5);
/// How long accepting pauses when the broker is out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How `serve` runs.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Event-loop threads; 0 means one per CPU (at least 2).
    pub threads: usize,
    /// Take SIGHUP/SIGTERM/SIGINT through a signalfd (the daemon). An embedding
    /// program that owns its signals leaves this off and uses a [`Stopper`].
    pub handle_signals: bool,
}

/// Asks a running server to stop gracefully, from any thread.
#[derive(Clone, Debug)]
pub struct Stopper {
    inner: Arc<Inner>,
}

impl Stopper {
    pub fn stop(&self) {
        self.inner.begin_stop("stop requested");
    }
}

/// A server bound to a listener (or to a single connection in spawn mode).
pub struct Server {
    inner: Arc<Inner>,
    threads: usize,
}

#[derive(Debug)]
struct Inner {
    epoll: Epoll,
    listener: Mutex<Option<Listener>>,
    wake: EventFd,
    signals: Option<SignalFd>,
    conns: Mutex<Slab>,
    shared: Arc<Shared>,
    stopping: AtomicBool,
    /// Spawn mode: stop when the last connection closes.
    stop_when_idle: bool,
    accept_paused_until: Mutex<Option<Instant>>,
    limit_notices: AtomicU64,
}

impl Server {
    /// Serve connections accepted from `listener`.
    pub fn new(shared: Arc<Shared>, listener: Listener, opts: &ServeOptions) -> io::Result<Server> {
        let server = Server::build(shared, Some(listener), opts, false)?;
        let inner = &server.inner;
        if let Some(l) = lock(&inner.listener).as_ref() {
            inner.epoll.add(l, EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT, LISTENER))?;
        }
        Ok(server)
    }

    /// Serve exactly one already connected worker as the client named by `binding`,
    /// and stop when it disconnects (spawn mode).
    pub fn single(
        shared: Arc<Shared>,
        channel: Channel,
        binding: Binding,
        opts: &ServeOptions,
    ) -> io::Result<Server> {
        let server = Server::build(shared, None, opts, true)?;
        channel.set_nonblocking(true)?;
        let peer = peer::credentials(&channel)?;
        server.inner.register(Conn::new(channel, peer, binding))?;
        Ok(server)
    }

    fn build(
        shared: Arc<Shared>,
        listener: Option<Listener>,
        opts: &ServeOptions,
        stop_when_idle: bool,
    ) -> io::Result<Server> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let wake = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        epoll.add(wake.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, WAKE))?;
        let signals = if opts.handle_signals {
            let mut set = SigSet::empty();
            for s in [Signal::SIGHUP, Signal::SIGTERM, Signal::SIGINT] {
                set.add(s);
            }
            // Blocked here, before any event-loop thread exists, so every thread
            // inherits the mask and the signals queue on the signalfd.
            set.thread_block()?;
            let sfd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
            epoll.add(sfd.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT, SIGNALS))?;
            Some(sfd)
        } else {
            None
        };
        let threads = match opts.threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 16),
            n => n,
        };
        Ok(Server {
            inner: Arc::new(Inner {
                epoll,
                listener: Mutex::new(listener),
                wake,
                signals,
                conns: Mutex::new(Slab::default()),
                shared,
                stopping: AtomicBool::new(false),
                stop_when_idle,
                accept_paused_until: Mutex::new(None),
                limit_notices: AtomicU64::new(0),
            }),
            threads,
        })
    }

    pub fn stopper(&self) -> Stopper {
        Stopper {
            inner: Arc::clone(&self.inner),
        }
    }

    /// Run until stopped; then stop accepting, answer what was already sent (bounded by
    /// [`DRAIN_BOUND`]), close every connection and remove the socket file.
    pub fn run(self) -> io::Result<()> {
        let inner = &self.inner;
        std::thread::scope(|scope| {
            for i in 1..self.threads {
                std::thread::Builder::new()
                    .name(format!("fdbroker-{i}"))
                    .spawn_scoped(scope, || inner.event_loop())
                    .map(|_| ())?;
            }
            inner.event_loop();
            Ok::<(), io::Error>(())
        })?;
        // Stop accepting first (and remove the socket file), then drain.
        drop(lock(&inner.listener).take());
        let deadline = Instant::now() + DRAIN_BOUND;
        let conns: Vec<ConnRef> = lock(&inner.conns).drain();
        let mut scratch = Scratch::default();
        for c in &conns {
            c.drain(&inner.shared, &mut scratch, deadline);
            let _ = c.channel().shutdown();
        }
        Ok(())
    }
}

impl Inner {
    fn event_loop(&self) {
        let mut scratch = Scratch::default();
        let mut events = [EpollEvent::empty(); 1];
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
            match events[0].data() {
                WAKE => break,
                LISTENER => self.accept_ready(),
                SIGNALS => self.signal_ready(),
                token => self.conn_ready(token, &mut scratch),
            }
        }
    }

    fn conn_ready(&self, token: u64, scratch: &mut Scratch) {
        let Some(conn) = lock(&self.conns).get(token) else {
            return;
        };
        match conn.service(&self.shared, scratch) {
            Next::Read => self.rearm(&conn, token, EpollFlags::EPOLLIN),
            Next::Write => self.rearm(&conn, token, EpollFlags::EPOLLOUT),
            Next::Close => self.close(&conn, token),
        }
    }

    fn rearm(&self, conn: &Conn, token: u64, interest: EpollFlags) {
        let mut ev = EpollEvent::new(interest | EpollFlags::EPOLLONESHOT | EpollFlags::EPOLLRDHUP, token);
        if let Err(e) = self.epoll.modify(conn.channel().as_fd(), &mut ev) {
            tracing::warn!(error = %e, "cannot re-arm a connection; closing it");
            self.close(conn, token);
        }
    }

    fn close(&self, conn: &Conn, token: u64) {
        let _ = self.epoll.delete(conn.channel().as_fd());
        let remaining = {
            let mut slab = lock(&self.conns);
            slab.remove(token);
            slab.len()
        };
        if self.stop_when_idle && remaining == 0 {
            self.begin_stop("the worker disconnected");
        }
    }

    fn register(&self, conn: Conn) -> io::Result<()> {
        let conn = Arc::new(conn);
        let token = lock(&self.conns).insert(Arc::clone(&conn));
        let ev = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT | EpollFlags::EPOLLRDHUP, token);
        if let Err(e) = self.epoll.add(conn.channel().as_fd(), ev) {
            lock(&self.conns).remove(token);
            return Err(e.into());
        }
        self.shared.stats.connections.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn accept_ready(&self) {
        let guard = lock(&self.listener);
        let Some(listener) = guard.as_ref() else { return };
        for _ in 0..64 {
            match channel::accept(listener) {
                Ok(ch) => self.admit(ch),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if matches!(e.raw_os_error().map(Errno::from_raw), Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)) => {
                    // Out of descriptors: leave the listener disarmed for a moment
                    // rather than spin on a connection we cannot take.
                    self.notice_limit(&format!("cannot accept: {e}; pausing accepts"));
                    *lock(&self.accept_paused_until) = Some(Instant::now() + ACCEPT_BACKOFF);
                    return;
                }
                Err(e) if matches!(e.raw_os_error().map(Errno::from_raw), Some(Errno::ECONNABORTED | Errno::EPROTO | Errno::EINTR)) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "accept failed");
                    break;
                }
            }
        }
        let ev = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT, LISTENER);
        if let Err(e) = self.epoll.modify(listener, &mut { ev }) {
            tracing::error!(error = %e, "cannot re-arm the listener");
        }
    }

    fn resume_accepting_if_due(&self) {
        let mut paused = lock(&self.accept_paused_until);
        if paused.is_some_and(|t| Instant::now() >= t) {
            *paused = None;
            drop(paused);
            if let Some(l) = lock(&self.listener).as_ref() {
                let mut ev = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT, LISTENER);
                let _ = self.epoll.modify(l, &mut ev);
            }
        }
    }

    /// Decide at accept time whether this peer is served at all: an unknown uid, or one
    /// over a connection limit, is refused before any of its bytes are parsed.
    fn admit(&self, ch: Channel) {
        let peer = match peer::credentials(&ch) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read peer credentials; dropping connection");
                return;
            }
        };
        let loaded = self.shared.current();
        let binding = Binding::Credentials;
        let conn = Conn::new(ch, peer, binding.clone());
        if conn.client_in(&loaded).is_none() {
            tracing::warn!(uid = peer.uid, gid = peer.gid, pid = peer.pid, "refused a connection: no client in the policy matches it");
            conn::refuse(conn.channel(), conn::refusal_for(&peer, &binding));
            return;
        }
        let settings = loaded.policy.broker();
        let (total, same_uid) = lock(&self.conns).counts(peer.uid);
        let over = if total >= settings.max_connections {
            Some(format!("the broker is at its limit of {} connections", settings.max_connections))
        } else if same_uid >= settings.max_connections_per_uid {
            Some(format!(
                "uid {} is at its limit of {} connections",
                peer.uid, settings.max_connections_per_uid
            ))
        } else {
            None
        };
        if let Some(why) = over {
            self.notice_limit(&why);
            conn::refuse(conn.channel(), fdbroker_shared::wire::WireError::new(Errno::EAGAIN as i32, why));
            return;
        }
        if let Err(e) = self.register(conn) {
            tracing::warn!(error = %e, "cannot register a connection");
        }
    }

    /// Log a limit being hit once per burst, not once per connection.
    fn notice_limit(&self, what: &str) {
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

    fn signal_ready(&self) {
        let Some(sfd) = &self.signals else { return };
        loop {
            match sfd.read_signal() {
                Ok(Some(info)) => match Signal::try_from(info.ssi_signo as i32) {
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

    fn reload(&self) {
        match self.shared.reload() {
            Ok(loaded) => tracing::info!(
                generation = loaded.generation,
                clients = loaded.policy.clients().len(),
                roots = loaded.roots.len(),
                "policy reloaded"
            ),
            Err(e) => tracing::error!("policy reload failed; the previous policy stays in force: {e}"),
        }
    }

    fn begin_stop(&self, why: &str) {
        if !self.stopping.swap(true, Ordering::AcqRel) {
            tracing::info!("stopping: {why}");
        }
        // Level-triggered and never drained: every thread sees it.
        let _ = self.wake.write(1);
    }
}

/// Connections by token. A token carries a generation so an event for a closed
/// connection can never reach the one that reused its slot.
#[derive(Debug, Default)]
struct Slab {
    slots: Vec<Slot>,
    free: Vec<usize>,
    len: usize,
    per_uid: HashMap<u32, usize>,
}

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    conn: Option<ConnRef>,
}

impl Slab {
    fn insert(&mut self, conn: ConnRef) -> u64 {
        *self.per_uid.entry(conn.peer.uid).or_default() += 1;
        let idx = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot::default());
            self.slots.len() - 1
        });
        let slot = &mut self.slots[idx];
        slot.generation = slot.generation.wrapping_add(1);
        slot.conn = Some(conn);
        self.len += 1;
        (u64::from(slot.generation) << 32) | (idx as u64 + FIRST_CONN)
    }

    fn locate(&self, token: u64) -> Option<usize> {
        let idx = (token & 0xffff_ffff).checked_sub(FIRST_CONN)? as usize;
        let slot = self.slots.get(idx)?;
        (u64::from(slot.generation) == token >> 32 && slot.conn.is_some()).then_some(idx)
    }

    fn get(&self, token: u64) -> Option<ConnRef> {
        self.locate(token).and_then(|i| self.slots[i].conn.clone())
    }

    fn remove(&mut self, token: u64) {
        let Some(idx) = self.locate(token) else { return };
        if let Some(conn) = self.slots[idx].conn.take() {
            if let Some(n) = self.per_uid.get_mut(&conn.peer.uid) {
                *n -= 1;
                if *n == 0 {
                    self.per_uid.remove(&conn.peer.uid);
                }
            }
            self.free.push(idx);
            self.len -= 1;
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn counts(&self, uid: u32) -> (usize, usize) {
        (self.len, self.per_uid.get(&uid).copied().unwrap_or(0))
    }

    fn drain(&mut self) -> Vec<ConnRef> {
        self.free.clear();
        self.len = 0;
        self.per_uid.clear();
        self.slots.iter_mut().filter_map(|s| s.conn.take()).collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section leaves the data consistent; a panic elsewhere must not
    // take the broker down with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
