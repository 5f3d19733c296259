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
//! the event loop really turns, and only while no thread is stuck on one event
//! (`progress.rs`).

pub(crate) mod conn;
pub mod control;
mod draining;
mod event_loop;
mod handover;
pub mod inflight;
mod lifecycle;
mod progress;
mod report;
mod slab;
pub mod state;
pub mod status;
pub mod throttle;

use crate::listener::Listener;
use crate::systemd::activation::MAX_LISTENERS;
use crate::systemd::notify::Notifier;
use conn::{Binding, Conn, ConnRef, Scratch};
use control::Up;
use draining::Draining;
use event_loop::Inner;
use fdbroker_shared::{Channel, peer};
use lifecycle::{finish, hand_over};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use report::{Manager, Sink};
use slab::Slab;
use state::Shared;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

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
/// How often at most `STATUS=` is sent to the service manager: a change is said at the
/// first timer tick this long after the last one (within a second of it), not more
/// often however busy the broker is.
const STATUS_EVERY: Duration = Duration::from_secs(1);
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
                progress: progress::Progress::default(),
            }),
            threads,
        };
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
            let outcome = hand_over(&to, &conns, &draining);
            if let Some(ch) = inner.control.get() {
                let msg = match outcome {
                    Ok(()) => Up::HandedOver,
                    Err(reason) => Up::Failed { reason },
                };
                let _ = control::send_up(ch, &msg, None);
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
