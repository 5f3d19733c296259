//! The event loop: a few threads sharing one epoll instance.
//!
//! Every connection is registered `EPOLLONESHOT`, so exactly one thread services it at a
//! time and a slow or idle connection never holds a thread: threads only run when a
//! socket is ready, and the per-connection cost is one small struct (buffers are per
//! thread). Each thread takes one event per `epoll_wait`, so ready work spreads over all
//! threads instead of queueing behind one.
//!
//! Control arrives by signals (SIGHUP reload, SIGTERM/SIGINT stop) through a
//! `signalfd`, read by whichever thread is free: no work happens in a signal handler,
//! and a request being answered when a signal arrives is answered whole.
//!
//! Under a service manager the loop also reports: `READY=1` once its threads run,
//! `RELOADING=1` and `READY=1` around a reload, `STOPPING=1`, a `STATUS=` line, and
//! `WATCHDOG=1` from a `timerfd` in the same epoll, so the watchdog is fed only while
//! the event loop really turns.

pub(crate) mod conn;
pub mod control;
mod handover;
pub mod inflight;
pub mod listener;
pub mod state;
pub mod throttle;

use crate::systemd::activation::MAX_LISTENERS;
use crate::systemd::notify::{self, Notifier, NotifyState};
use conn::{Binding, Conn, ConnRef, Next, Scratch};
use control::{Down, Up};
use fdbroker_shared::{Channel, channel, peer};
use listener::Listener;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use state::Shared;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};
use throttle::Throttle;

const WAKE: u64 = 1;
const SIGNALS: u64 = 2;
const TICK: u64 = 3;
/// The monitor's control channel, and a predecessor's handover socket.
const CONTROL: u64 = 4;
const HANDOVER: u64 = 5;
/// Listener `i` has token `FIRST_LISTENER + i`.
const FIRST_LISTENER: u64 = 8;
const FIRST_CONN: u64 = 16;
const _: () = assert!(FIRST_LISTENER + MAX_LISTENERS as u64 <= FIRST_CONN);

/// How long a graceful stop may spend answering requests already sent.
pub const DRAIN_BOUND: Duration = Duration::from_secs(5);
/// How long accepting pauses when the broker is out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long a thread that served a relay (transparent mode's supervisor) looks for its
/// next request before sleeping, and how many requests it takes that way before it
/// goes back to the event loop (other connections are served by other threads
/// meanwhile). Between two opens a scanner reads and hashes a file: tens of µs.
const RELAY_SPIN: Duration = Duration::from_micros(100);
const RELAY_ROUNDS: usize = 64;
/// How often the timer fires: idle connections are closed within this of their
/// timeout, and connections held back for their uid's unread descriptors try again.
const TICK_EVERY: Duration = Duration::from_millis(100);
/// How often `STATUS=` is refreshed for the service manager (when it changed).
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// The signals the daemon takes through its signalfd.
const CONTROL_SIGNALS: [Signal; 3] = [Signal::SIGHUP, Signal::SIGTERM, Signal::SIGINT];

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
    /// Emptied when stopping: dropping a listener that created its socket file
    /// removes the file.
    listeners: RwLock<Vec<Listener>>,
    wake: EventFd,
    signals: Option<SignalFd>,
    /// Fires every [`TICK_EVERY`] (more often when the watchdog needs it).
    tick: TimerFd,
    manager: OnceLock<Manager>,
    conns: Mutex<Slab>,
    shared: Arc<Shared>,
    stopping: AtomicBool,
    /// Spawn mode: stop when the last connection closes.
    stop_when_idle: bool,
    accept_paused_until: Mutex<Option<Instant>>,
    limit_notices: AtomicU64,
    /// Connections held back until their uid has room for a reply's descriptors.
    stalled: Mutex<Vec<u64>>,
    /// Closed connections whose workers have not received everything passed: kept
    /// open and charged until they have (see [`Inner::close`]).
    draining: Mutex<Draining>,
    /// The monitor's control channel, when a monitor started this server.
    control: OnceLock<Channel>,
    /// Where the predecessor hands its connections over, until it is done.
    handover_in: Mutex<Option<Channel>>,
    /// Set when the monitor says hand over: the successor's socket.
    hand_over_to: Mutex<Option<Channel>>,
    /// The predecessor's pid: it is never a peer.
    predecessor: Mutex<Option<i32>>,
    /// The addresses the listeners are bound to: a handed-over connection must be the
    /// accepted end of one of them.
    listener_addrs: Vec<nix::sys::socket::UnixAddr>,
}

/// At most this many closed connections per uid may wait, charged, for their workers
/// to receive what was passed; past it that uid's new connections are refused.
pub const MAX_DRAINING_PER_UID: usize = 64;

/// Closed connections still charged for descriptors their workers have not received.
///
/// The kernel charges a passed descriptor to the broker's user until the receiver
/// reads it or its socket is destroyed; closing the broker's end changes nothing. A
/// worker that asks for batches, shuts its socket down without reading and keeps it
/// open would otherwise get its uid's share back at every close while the kernel's
/// count only grows, until no reply of any worker could pass a descriptor. So the
/// connection stays here, out of epoll, still charged to its uid, and the timer drops
/// it once its send queue is empty.
#[derive(Debug, Default)]
struct Draining {
    conns: Vec<ConnRef>,
    per_uid: HashMap<u32, usize>,
}

impl Draining {
    fn of(&self, uid: u32) -> usize {
        self.per_uid.get(&uid).copied().unwrap_or(0)
    }

    fn push(&mut self, conn: ConnRef) {
        *self.per_uid.entry(conn.peer.uid).or_default() += 1;
        self.conns.push(conn);
    }

    /// Drop every connection whose worker has now received everything.
    fn settle(&mut self) {
        let per_uid = &mut self.per_uid;
        self.conns.retain(|c| {
            if !c.drained() {
                return true;
            }
            if let Some(n) = per_uid.get_mut(&c.peer.uid) {
                *n -= 1;
                if *n == 0 {
                    per_uid.remove(&c.peer.uid);
                }
            }
            false
        });
    }
}

/// Where readiness, status and the watchdog go: the service manager itself, or the
/// monitor that started this server (which tells the service manager).
#[derive(Debug)]
enum Sink {
    Manager(Notifier),
    Monitor(Channel),
}

/// The service manager this broker reports to.
#[derive(Debug)]
struct Manager {
    sink: Sink,
    /// `WATCHDOG=1` is due this long after the last one (half the timeout, less a
    /// tick), and when it was last sent.
    watchdog: Option<(Duration, Mutex<Instant>)>,
    /// The last `STATUS=` text sent, and when.
    last_status: Mutex<(String, Instant)>,
}

impl Manager {
    fn send(&self, states: &[NotifyState<'_>]) {
        match &self.sink {
            Sink::Manager(n) => {
                if let Err(e) = n.send(states) {
                    tracing::warn!(socket = %n.socket_name(), error = %e, "cannot notify the service manager");
                }
            }
            Sink::Monitor(ch) => {
                // The monitor says RELOADING and STOPPING itself; it needs to hear
                // only that this server is ready, its status, and that it is alive.
                let status = states.iter().find_map(|s| match s {
                    NotifyState::Status(t) => Some(*t),
                    _ => None,
                });
                let msg = if states.iter().any(|s| matches!(s, NotifyState::Ready)) {
                    Up::Ready {
                        status: status.unwrap_or_default().to_owned(),
                    }
                } else if states.iter().any(|s| matches!(s, NotifyState::Watchdog)) {
                    Up::Alive
                } else if let Some(text) = status {
                    Up::Status {
                        text: text.to_owned(),
                    }
                } else {
                    return;
                };
                if let Err(e) = control::send_up(ch, &msg, None) {
                    tracing::debug!(error = %e, "cannot report to the monitor");
                }
            }
        }
    }
}

/// Block the daemon's control signals in the calling thread (and so in every thread
/// it starts later), so one arriving before the event loop runs waits for it instead
/// of killing the process. [`Server::new`] does this too; calling it first thing in
/// `main` covers start-up.
pub fn block_control_signals() -> io::Result<()> {
    let mut set = SigSet::empty();
    for s in CONTROL_SIGNALS {
        set.add(s);
    }
    set.thread_block()?;
    Ok(())
}

impl Server {
    /// Serve connections accepted from `listener`.
    pub fn new(shared: Arc<Shared>, listener: Listener, opts: &ServeOptions) -> io::Result<Server> {
        Server::with_listeners(shared, vec![listener], opts)
    }

    /// Serve connections accepted from every one of `listeners` (socket activation can
    /// pass several), at most [`MAX_LISTENERS`].
    pub fn with_listeners(
        shared: Arc<Shared>,
        listeners: Vec<Listener>,
        opts: &ServeOptions,
    ) -> io::Result<Server> {
        if listeners.is_empty() || listeners.len() > MAX_LISTENERS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a server needs 1 to {MAX_LISTENERS} listeners, not {}",
                    listeners.len()
                ),
            ));
        }
        let server = Server::build(shared, listeners, opts, false)?;
        let inner = &server.inner;
        for (i, l) in read(&inner.listeners).iter().enumerate() {
            let ev = EpollEvent::new(
                EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT,
                FIRST_LISTENER + i as u64,
            );
            inner.epoll.add(l, ev)?;
        }
        Ok(server)
    }

    /// Report to the service manager behind `notifier`: `READY=1` when [`Server::run`]
    /// has its threads running, reloads, stopping, a status line, and the watchdog.
    /// Call before the broker confines itself (this creates a timer).
    pub fn notify_with(&self, notifier: Notifier) -> io::Result<()> {
        let watchdog = notifier.watchdog();
        self.report(Sink::Manager(notifier), watchdog)
    }

    /// Report to the monitor that started this server, on its control channel, and
    /// take its orders there (hand over, stop); `watchdog` is the service manager's
    /// timeout, which the monitor's watchdog needs fed from this event loop.
    pub fn report_to_monitor(
        &self,
        control: Channel,
        watchdog: Option<Duration>,
    ) -> io::Result<()> {
        control.set_nonblocking(true)?;
        let sending = Channel::wrap(control.as_fd().try_clone_to_owned()?);
        self.inner.epoll.add(
            control.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT, CONTROL),
        )?;
        self.inner
            .control
            .set(control)
            .map_err(|_| io::Error::new(io::ErrorKind::AlreadyExists, "already reporting"))?;
        self.report(Sink::Monitor(sending), watchdog)
    }

    /// Take over the connections a predecessor (process `predecessor`) hands over on
    /// `from` (reload).
    pub fn receive_handover(&self, from: Channel, predecessor: Option<i32>) -> io::Result<()> {
        *lock(&self.inner.predecessor) = predecessor;
        from.set_nonblocking(true)?;
        self.inner.epoll.add(
            from.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT, HANDOVER),
        )?;
        *lock(&self.inner.handover_in) = Some(from);
        Ok(())
    }

    fn report(&self, sink: Sink, watchdog: Option<Duration>) -> io::Result<()> {
        let period = watchdog.map_or(TICK_EVERY, |w| (w / 2).min(TICK_EVERY));
        let period = period.max(Duration::from_millis(1));
        if period < TICK_EVERY {
            self.inner.tick.set(
                Expiration::Interval(TimeSpec::from_duration(period)),
                TimerSetTimeFlags::empty(),
            )?;
        }
        if let Some(w) = watchdog {
            tracing::info!(
                timeout_ms = w.as_millis() as u64,
                every_ms = period.as_millis() as u64,
                "feeding the service manager's watchdog"
            );
        }
        let manager = Manager {
            sink,
            watchdog: watchdog.map(|w| {
                (
                    (w / 2).saturating_sub(TICK_EVERY),
                    Mutex::new(Instant::now()),
                )
            }),
            last_status: Mutex::new((String::new(), Instant::now())),
        };
        self.inner.manager.set(manager).map_err(|_| {
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                "this server already notifies a service manager",
            )
        })
    }

    /// Serve exactly one already connected worker as the client named by `binding`,
    /// and stop when it disconnects (spawn mode).
    ///
    /// `peer` is who the worker is (its pid and the ids it runs as), for the audit
    /// log: `SO_PEERCRED` on a socketpair names the process that made the pair.
    pub fn single(
        shared: Arc<Shared>,
        channel: Channel,
        peer: peer::PeerCredentials,
        binding: Binding,
        opts: &ServeOptions,
    ) -> io::Result<Server> {
        let server = Server::build(shared, Vec::new(), opts, true)?;
        channel.set_nonblocking(true)?;
        // The spawned worker has no supplementary groups (the sandbox clears them).
        server.inner.register(Conn::new(
            channel,
            peer,
            Box::default(),
            binding,
            Arc::clone(&server.inner.shared.inflight),
        ))?;
        Ok(server)
    }

    /// Serve one more already connected peer of a [`single`](Server::single) server
    /// (spawn mode's transparent supervisor, which acts for the worker with its
    /// identity).
    pub fn also_serve(
        &self,
        channel: Channel,
        peer: peer::PeerCredentials,
        binding: Binding,
    ) -> io::Result<()> {
        channel.set_nonblocking(true)?;
        self.inner.register(Conn::new(
            channel,
            peer,
            Box::default(),
            binding,
            Arc::clone(&self.inner.shared.inflight),
        ))
    }

    fn build(
        shared: Arc<Shared>,
        listeners: Vec<Listener>,
        opts: &ServeOptions,
        stop_when_idle: bool,
    ) -> io::Result<Server> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let wake =
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        epoll.add(wake.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, WAKE))?;
        let signals = if opts.handle_signals {
            let mut set = SigSet::empty();
            for s in CONTROL_SIGNALS {
                set.add(s);
            }
            // Blocked here, before any event-loop thread exists, so every thread
            // inherits the mask and the signals queue on the signalfd.
            set.thread_block()?;
            let sfd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
            epoll.add(
                sfd.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT, SIGNALS),
            )?;
            Some(sfd)
        } else {
            None
        };
        // The sweep for idle connections, and the service manager's watchdog.
        let tick = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_CLOEXEC | TimerFlags::TFD_NONBLOCK,
        )?;
        tick.set(
            Expiration::Interval(TimeSpec::from_duration(TICK_EVERY)),
            TimerSetTimeFlags::empty(),
        )?;
        epoll.add(
            tick.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT, TICK),
        )?;
        let threads = match opts.threads {
            0 => std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .clamp(2, 16),
            n => n,
        };
        let server = Server {
            inner: Arc::new(Inner {
                epoll,
                listener_addrs: listeners
                    .iter()
                    .filter_map(|l| {
                        nix::sys::socket::getsockname::<nix::sys::socket::UnixAddr>(
                            l.as_fd().as_raw_fd(),
                        )
                        .ok()
                    })
                    .collect(),
                listeners: RwLock::new(listeners),
                wake,
                signals,
                tick,
                manager: OnceLock::new(),
                conns: Mutex::new(Slab::default()),
                shared,
                stopping: AtomicBool::new(false),
                stop_when_idle,
                accept_paused_until: Mutex::new(None),
                limit_notices: AtomicU64::new(0),
                stalled: Mutex::new(Vec::new()),
                draining: Mutex::new(Draining::default()),
                control: OnceLock::new(),
                handover_in: Mutex::new(None),
                hand_over_to: Mutex::new(None),
                predecessor: Mutex::new(None),
            }),
            threads,
        };
        let attacher: std::sync::Weak<Inner> = Arc::downgrade(&server.inner);
        server.inner.shared.serve_attached(attacher);
        Ok(server)
    }

    pub fn stopper(&self) -> Stopper {
        Stopper {
            inner: Arc::clone(&self.inner),
        }
    }

    /// Run until stopped; then stop accepting, answer what was already sent (bounded by
    /// [`DRAIN_BOUND`]), close every connection, remove the socket file (only one
    /// this broker created), and write the audit summaries of refusals still counted.
    pub fn run(self) -> io::Result<()> {
        let inner = &self.inner;
        let started = std::thread::scope(|scope| {
            for i in 1..self.threads {
                let spawned = std::thread::Builder::new()
                    .name(format!("fdbroker-{i}"))
                    .spawn_scoped(scope, || inner.event_loop());
                if let Err(e) = spawned {
                    // Threads already running must not keep the scope open forever.
                    inner.begin_stop("cannot start the event-loop threads");
                    return Err(e);
                }
            }
            inner.notify_ready();
            inner.event_loop();
            Ok(())
        });
        let successor = lock(&inner.hand_over_to).take();
        // Stop accepting first (removing the socket file, unless a successor serves
        // it now).
        {
            let mut listeners = write(&inner.listeners);
            if successor.is_some() {
                listeners.iter_mut().for_each(Listener::keep_file);
            }
            listeners.clear();
        }
        if successor.is_none() {
            // Stopping during a takeover: what the predecessor still hands over is
            // answered and closed with the rest, not dropped unread.
            inner.drain_handover();
        }
        let conns: Vec<ConnRef> = lock(&inner.conns).drain();
        let draining = std::mem::take(&mut lock(&inner.draining).conns);
        if let Some(to) = successor {
            hand_over(&to, &conns, &draining);
            if let Some(ch) = inner.control.get() {
                let _ = control::send_up(ch, &Up::HandedOver, None);
            }
        } else {
            let deadline = Instant::now() + DRAIN_BOUND;
            finish(&conns, &inner.shared, &mut Scratch::default(), deadline);
        }
        drop(conns);
        crate::audit::flush_suppressed();
        started
    }
}

/// Pass every connection, with its state, to the successor. Nothing is read or answered
/// any more here: what a worker sent and this server did not read waits in its socket
/// for the successor, and a reply it could not take yet goes along. A connection that
/// cannot be passed is closed (its worker sees the connection end, as at a restart).
fn hand_over(to: &Channel, conns: &[ConnRef], draining: &[ConnRef]) {
    // `to` is a fresh socketpair end from the monitor: blocking, so each send waits
    // for room rather than failing.
    let mut passed = 0usize;
    let all = conns
        .iter()
        .map(|c| (c, false))
        .chain(draining.iter().map(|c| (c, true)));
    for (conn, is_draining) in all {
        match conn.export() {
            Ok(Some(e)) => match crate::server::handover::send(to, e, is_draining) {
                Ok(()) => passed += 1,
                Err(e) => tracing::warn!(error = %e, "cannot hand a connection over; closing it"),
            },
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot hand a connection over; closing it"),
        }
    }
    if let Err(e) = crate::server::handover::done(to) {
        tracing::warn!(error = %e, "cannot finish the handover");
    }
    tracing::info!(
        connections = passed,
        "handed every connection over to the new server"
    );
}

/// Answer every request the connections already sent, until `deadline` (graceful
/// shutdown), then shut each down. All are served together: a worker that does not
/// read its replies holds up only itself, and only until the deadline.
fn finish(conns: &[ConnRef], shared: &Shared, scratch: &mut Scratch, deadline: Instant) {
    let mut waiting: Vec<&ConnRef> = conns.iter().collect();
    while !waiting.is_empty() {
        let mut more = false;
        waiting.retain(|c| match settle(c, shared, scratch, deadline) {
            Drained::Done => {
                let _ = c.channel().shutdown();
                false
            }
            Drained::Full => true,
            Drained::More => {
                more = true;
                true
            }
        });
        let left = deadline.saturating_duration_since(Instant::now());
        if waiting.is_empty() || left.is_zero() {
            break;
        }
        if !more && !any_writable(&waiting, left) {
            break;
        }
    }
    for c in waiting {
        let _ = c.channel().shutdown();
    }
}

enum Drained {
    /// Everything sent was answered, or the connection is closing.
    Done,
    /// A reply waits for the worker to read.
    Full,
    /// More requests wait; others get a turn first.
    More,
}

/// Budgets of messages one connection may have answered per turn while stopping.
const TURNS: usize = 8;

fn settle(conn: &Conn, shared: &Shared, scratch: &mut Scratch, deadline: Instant) -> Drained {
    for _ in 0..TURNS {
        if Instant::now() >= deadline {
            return Drained::Done;
        }
        match conn.service(shared, scratch) {
            Next::Close => return Drained::Done,
            // `service` also yields after a budget of messages: go on while any wait.
            Next::Read if !message_waiting(conn.channel()) => return Drained::Done,
            Next::Read => {}
            Next::Write => return Drained::Full,
            Next::Stall => return Drained::Done,
        }
    }
    Drained::More
}

/// Has the peer queued a message (not just end-of-file)? `recvmsg(2)` with `MSG_PEEK`,
/// so nothing is consumed.
fn message_waiting(ch: &Channel) -> bool {
    use nix::sys::socket::{MsgFlags, recvmsg};
    use std::os::fd::AsRawFd;
    let mut byte = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC;
    matches!(recvmsg::<()>(ch.as_fd().as_raw_fd(), &mut iov, None, flags), Ok(m) if m.bytes > 0)
}

/// Wait up to `limit` for any of `conns` to take more data (or to fail, which the next
/// `service` reports).
fn any_writable(conns: &[&ConnRef], limit: Duration) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let ms = u16::try_from(limit.as_millis()).unwrap_or(u16::MAX).max(1);
    let mut fds: Vec<PollFd<'_>> = conns
        .iter()
        .map(|c| PollFd::new(c.channel().as_fd(), PollFlags::POLLOUT))
        .collect();
    loop {
        match poll(&mut fds, PollTimeout::from(ms)) {
            Err(Errno::EINTR) => continue,
            Ok(n) => return n > 0,
            Err(_) => return false,
        }
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
                SIGNALS => self.signal_ready(),
                TICK => self.tick(),
                CONTROL => self.control_ready(),
                HANDOVER => self.handover_ready(),
                token if (FIRST_LISTENER..FIRST_CONN).contains(&token) => {
                    self.accept_ready((token - FIRST_LISTENER) as usize);
                }
                token => self.conn_ready(token, &mut scratch),
            }
        }
    }

    fn conn_ready(&self, token: u64, scratch: &mut Scratch) {
        let Some(conn) = lock(&self.conns).get(token) else {
            return;
        };
        let mut next = conn.service(&self.shared, scratch);
        // A relay's next request usually comes within microseconds: take it on this
        // thread while it is still awake, a bounded number of times.
        for _ in 0..RELAY_ROUNDS {
            if next != Next::Read
                || !conn.is_relay()
                || !Channel::spinning_pays()
                || self.stopping.load(Ordering::Acquire)
                || !conn.channel().spin_until_readable(RELAY_SPIN)
            {
                break;
            }
            next = conn.service(&self.shared, scratch);
        }
        match next {
            Next::Read => self.rearm(&conn, token, EpollFlags::EPOLLIN),
            Next::Write => self.rearm(&conn, token, EpollFlags::EPOLLOUT),
            Next::Close => self.close(&conn, token),
            // Left disarmed; the timer re-arms it.
            Next::Stall => lock(&self.stalled).push(token),
        }
    }

    fn rearm(&self, conn: &Conn, token: u64, interest: EpollFlags) {
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

    fn close(&self, conn: &Conn, token: u64) {
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

    fn register(&self, conn: Conn) -> io::Result<()> {
        self.register_with(conn, EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP)
    }

    fn register_with(&self, conn: Conn, interest: EpollFlags) -> io::Result<()> {
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

    fn accept_ready(&self, index: usize) {
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

    fn resume_accepting_if_due(&self) {
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
    fn admit(&self, ch: Channel) {
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
        if conn.client_in(&loaded).is_none() {
            static REFUSALS: Throttle = Throttle::new();
            if let Some(suppressed) = REFUSALS.admit() {
                tracing::warn!(
                    uid = peer.uid,
                    gid = peer.gid,
                    pid = peer.pid,
                    suppressed,
                    "refused a connection: no client in the policy matches it"
                );
            }
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
    fn over_limit(&self, loaded: &crate::server::state::Loaded, uid: u32) -> Option<String> {
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

    /// An order from the monitor: hand over, or stop.
    fn control_ready(&self) {
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
    fn handover_ready(&self) {
        let mut slot = lock(&self.handover_in);
        let Some(from) = slot.as_ref() else { return };
        loop {
            match crate::server::handover::recv(from) {
                Ok(crate::server::handover::Received::Conn { conn, draining }) => {
                    self.adopt(conn, draining);
                }
                Ok(
                    crate::server::handover::Received::Done
                    | crate::server::handover::Received::Closed,
                ) => {
                    let _ = self.epoll.delete(from.as_fd());
                    *slot = None;
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
    fn drain_handover(&self) {
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
                Ok(
                    crate::server::handover::Received::Done
                    | crate::server::handover::Received::Closed,
                ) => return,
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

    fn adopt(&self, e: conn::Exported, draining: bool) {
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

    fn signal_ready(&self) {
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

    fn reload(&self) {
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

    fn begin_stop(&self, why: &str) {
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
    fn notify_ready(&self) {
        if let Some(m) = self.manager.get() {
            let status = self.status_line();
            m.send(&[NotifyState::Ready, NotifyState::Status(&status)]);
            *lock(&m.last_status) = (status, Instant::now());
        }
    }

    /// The timer: close idle connections, write the audit summaries that are due, feed
    /// the watchdog, refresh the status line if it changed.
    fn tick(&self) {
        // The expiration count; reading resets the timer's readiness.
        let _ = nix::unistd::read(&self.tick, &mut [0u8; 8]);
        self.close_idle();
        lock(&self.draining).settle();
        self.refresh_charges();
        self.resume_stalled();
        // Summaries of refusal bursts whose window ended.
        crate::audit::tick();
        if let Some(m) = self.manager.get() {
            if let Some((due, last)) = &m.watchdog {
                let mut last = lock(last);
                if last.elapsed() >= *due && !self.stopping.load(Ordering::Acquire) {
                    m.send(&[NotifyState::Watchdog]);
                    *last = Instant::now();
                }
            }
            let status = self.status_line();
            let mut last = lock(&m.last_status);
            if last.0 != status && last.1.elapsed() >= STATUS_EVERY {
                m.send(&[NotifyState::Status(&status)]);
                *last = (status, Instant::now());
            }
        }
        let mut ev = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT, TICK);
        if let Err(e) = self.epoll.modify(self.tick.as_fd(), &mut ev) {
            tracing::error!(error = %e, "cannot re-arm the timer; idle connections stay open");
        }
    }

    /// Let held-back connections try again (each checks its uid's room first).
    fn resume_stalled(&self) {
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
    fn refresh_charges(&self) {
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
    fn close_idle(&self) {
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

    /// One short line for `systemctl status`: the policy, connections, requests served
    /// and the last reload error.
    fn status_line(&self) -> String {
        let policy = self
            .shared
            .policy_path
            .as_deref()
            .map_or_else(|| "the policy".to_owned(), |p| p.display().to_string());
        let conns = lock(&self.conns).len();
        let requests = self.shared.stats.requests.load(Ordering::Relaxed);
        let mut line = format!(
            "serving {policy}: {conns} connection{}, {requests} request{} served",
            if conns == 1 { "" } else { "s" },
            if requests == 1 { "" } else { "s" },
        );
        if let Some(e) = self.shared.last_reload_error() {
            line.push_str("; last reload failed: ");
            line.push_str(&e);
        }
        notify::one_line(&line, notify::STATUS_MAX)
    }
}

/// Connections workers ask for (`Op::Connect`, see `conn::Conn::fresh_connection`):
/// registered like an accepted connection that was admitted, under the same limits.
/// `Server::build` makes the server the one its `Shared` hands them to.
impl conn::Attach for Inner {
    fn attach(&self, conn: Conn) -> Result<(), fdbroker_shared::wire::WireError> {
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
        let Some(idx) = self.locate(token) else {
            return;
        };
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

    fn iter(&self) -> impl Iterator<Item = &ConnRef> {
        self.slots.iter().filter_map(|s| s.conn.as_ref())
    }

    fn counts(&self, uid: u32) -> (usize, usize) {
        (self.len, self.per_uid.get(&uid).copied().unwrap_or(0))
    }

    fn drain(&mut self) -> Vec<ConnRef> {
        self.free.clear();
        self.len = 0;
        self.per_uid.clear();
        self.slots
            .iter_mut()
            .filter_map(|s| s.conn.take())
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section leaves the data consistent; a panic elsewhere must not
    // take the broker down with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}
