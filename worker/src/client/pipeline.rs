//! The request pipeline behind [`Client`]: ids, waiters, the receive lock, and
//! reconnecting when the broker restarts.
//!
//! One [`Client`] may be shared by many threads. Each request carries a fresh id; a
//! thread sends its request (one atomic `SOCK_SEQPACKET` message) and then takes the
//! receive lock. Whoever holds it reads replies off the socket, keeping its own and
//! parking the others' by id, so replies can never be handed to the wrong caller. A
//! request can also be sent now and its reply collected later ([`Client::open_iter`]
//! keeps the next batch in flight that way).
//!
//! The pipeline knows requests only as [`Op`]s and replies only as [`Delivery`]s: what
//! a reply means to the caller is the API's business, so nothing here reaches back up
//! into it.
//!
//! [`Client`]: super::Client
//! [`Client::open_iter`]: super::Client::open_iter

use super::connect::{ENV_FD, Origin, dial_and_greet};
use super::locks::{lock, read, write};
use crate::error::{broken, broker_gone, context, is_disconnect, recv_error, timed_out_error};
use fdbroker_shared::Channel;
use fdbroker_shared::frame::{self, Kind, MAX_FDS_PER_REPLY, MAX_MESSAGE};
use fdbroker_shared::wire::{Accepted, Access, Op, Reply, ReplyBody};
use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::Duration;

/// One connection's requests in flight and the socket they travel on; the state a
/// [`Client`](super::Client) is made of.
#[derive(Debug)]
pub(super) struct Pipeline {
    channel: Channel,
    origin: Origin,
    accepted: RwLock<Accepted>,
    next_id: AtomicU64,
    /// Held shared around every send and exclusively while a reconnect swaps the socket,
    /// so no request goes out on a connection it was not registered for.
    swap: RwLock<()>,
    /// Mirrors `Receiver::generation`, read without the receive lock.
    generation: AtomicU64,
    timeout: Mutex<Option<Duration>>,
    /// [`Client::set_spin`](super::Client::set_spin), in nanoseconds; 0 sleeps at once.
    spin_nanos: AtomicU64,
    receiver: Mutex<Receiver>,
}

struct Receiver {
    buf: Vec<u8>,
    /// Control buffer for the descriptors, reused for every reply.
    control: Vec<u8>,
    /// Replies that arrived for other threads' requests.
    parked: HashMap<u64, Delivery>,
    /// Ids sent and not yet answered; a reply for any other id is a violation.
    waiting: HashMap<u64, Waiter>,
    /// Set once the connection failed; every later call reports it (or reconnects).
    broken: Option<Broken>,
    /// Which connection this is: bumped by every reconnect.
    generation: u64,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the buffers: 64 KiB of bytes say nothing.
        f.debug_struct("Receiver")
            .field("parked", &self.parked.len())
            .field("waiting", &self.waiting.len())
            .field("broken", &self.broken)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiter {
    /// Sent on the connection of this generation; its sender will collect the reply.
    Waiting(u64),
    /// Its sender gave up (a timeout, a dropped iterator): the reply is dropped on arrival.
    Abandoned,
}

#[derive(Debug, Clone)]
struct Broken {
    why: String,
    /// The broker closed the connection (rather than breaking the protocol).
    gone: bool,
}

#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) body: ReplyBody,
    pub(crate) fds: Vec<OwnedFd>,
}

/// A [`Request`] encoded from a borrowed operation, byte for byte the same (bincode
/// writes struct fields in order, names unwritten), so a request kept for a retry is not
/// copied to be sent.
///
/// [`Request`]: fdbroker_shared::wire::Request
#[derive(serde::Serialize)]
pub(crate) struct RequestRef<'a> {
    pub(crate) id: u64,
    pub(crate) op: &'a Op,
}

/// A request sent and not yet collected.
#[derive(Debug)]
pub(crate) struct Ticket {
    id: u64,
    generation: u64,
}

/// Why a call failed, with what a reconnect needs to know.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The broker closed the connection of `generation`; `answered` says whether the
    /// request may have been acted on (it was sent, and no reply came).
    Gone {
        generation: u64,
        maybe_done: bool,
    },
    Other(io::Error),
}

thread_local! {
    /// Each thread's request buffer (requests are small; batches grow it once).
    static SEND_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(256));
}

impl Pipeline {
    /// The pipeline of a connection just greeted, as `origin` made it.
    pub(super) fn new(
        channel: Channel,
        accepted: Accepted,
        origin: Origin,
        timeout: Option<Duration>,
    ) -> Pipeline {
        Pipeline {
            channel,
            origin,
            accepted: RwLock::new(accepted),
            next_id: AtomicU64::new(1),
            swap: RwLock::new(()),
            generation: AtomicU64::new(0),
            timeout: Mutex::new(timeout),
            spin_nanos: AtomicU64::new(0),
            receiver: Mutex::new(Receiver {
                buf: vec![0; MAX_MESSAGE],
                control: Vec::new(),
                parked: HashMap::new(),
                waiting: HashMap::new(),
                broken: None,
                generation: 0,
            }),
        }
    }

    /// The socket requests go out on; its number survives a reconnect.
    pub(super) fn channel(&self) -> &Channel {
        &self.channel
    }

    /// How the connection was made (a new connection the broker makes for us is made
    /// the same way, as far as reconnecting goes).
    pub(super) fn origin(&self) -> &Origin {
        &self.origin
    }

    /// What the broker's welcome said, replaced by a reconnect.
    pub(super) fn accepted(&self) -> RwLockReadGuard<'_, Accepted> {
        read(&self.accepted)
    }

    /// The bound on one reply (and one send).
    pub(super) fn timeout(&self) -> Option<Duration> {
        *lock(&self.timeout)
    }

    /// Bound one reply and one send from now on; `None` waits for ever.
    pub(super) fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        let mut t = lock(&self.timeout);
        self.channel.set_read_timeout(timeout)?;
        self.channel.set_write_timeout(timeout)?;
        *t = timeout;
        Ok(())
    }

    /// Look for a reply for up to `limit` before sleeping on the socket.
    pub(super) fn set_spin(&self, limit: Duration) {
        let nanos = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
        self.spin_nanos.store(nanos, Ordering::Relaxed);
    }

    /// Send one request and wait for its reply, reconnecting once if the broker went
    /// away and the client knows where to find it again.
    pub(crate) fn call(&self, op: &Op) -> io::Result<Delivery> {
        match self.submit(op).and_then(|t| self.collect(t)) {
            Ok(d) => Ok(d),
            Err(e) => {
                self.recover(e, op)?;
                self.submit(op)
                    .and_then(|t| self.collect(t))
                    .map_err(CallError::into_io)
            }
        }
    }

    /// After `failure`, reconnect if that can help: returns `Ok` when the request should
    /// be sent again, the error to report otherwise.
    pub(crate) fn recover(&self, failure: CallError, op: &Op) -> io::Result<()> {
        let (generation, maybe_done) = match failure {
            CallError::Gone {
                generation,
                maybe_done,
            } => (generation, maybe_done),
            CallError::Other(e) => return Err(e),
        };
        self.reconnect(generation)?;
        if maybe_done && !idempotent(op) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the broker went away before answering a create, which may or may not have \
                 happened; reconnected, but not retried",
            ));
        }
        Ok(())
    }

    /// Send a request; its reply is collected with [`Pipeline::collect`] (or dropped on
    /// arrival after [`Pipeline::abandon`]).
    pub(crate) fn submit(&self, op: &Op) -> Result<Ticket, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Encoded into this thread's buffer, reused from call to call: requests are
        // sent from the caller's thread, so threads never share one.
        SEND_BUF.with(|cell| {
            let mut fresh = Vec::new();
            let mut reused = cell.try_borrow_mut();
            let buf = match reused.as_deref_mut() {
                Ok(buf) => buf,
                Err(_) => &mut fresh,
            };
            frame::encode(Kind::Request, &RequestRef { id, op }, buf)
                .map_err(|e| CallError::Other(e.into()))?;
            let _no_swap = read(&self.swap);
            let generation = {
                let mut rx = self.lock();
                if let Some(b) = &rx.broken {
                    return Err(self.broken_error(b, rx.generation, false));
                }
                let generation = rx.generation;
                rx.waiting.insert(id, Waiter::Waiting(generation));
                generation
            };
            match self.channel.send(buf) {
                Ok(()) => Ok(Ticket { id, generation }),
                Err(e) => {
                    let mut rx = self.lock();
                    rx.waiting.remove(&id);
                    let gone = is_disconnect(&e);
                    let timed_out = e.kind() == io::ErrorKind::WouldBlock;
                    let e = if gone {
                        broker_gone()
                    } else if timed_out {
                        timed_out_error()
                    } else {
                        context(e, "sending a request")
                    };
                    if timed_out {
                        return Err(CallError::Other(e));
                    }
                    rx.broken.get_or_insert_with(|| Broken {
                        why: e.to_string(),
                        gone,
                    });
                    if gone {
                        Err(CallError::Gone {
                            generation,
                            maybe_done: false,
                        })
                    } else {
                        Err(CallError::Other(e))
                    }
                }
            }
        })
    }

    /// Wait for the reply to a request [`Pipeline::submit`] sent.
    pub(crate) fn collect(&self, ticket: Ticket) -> Result<Delivery, CallError> {
        let id = ticket.id;
        let mut rx = self.lock();
        loop {
            if let Some(d) = rx.parked.remove(&id) {
                return Ok(d);
            }
            if rx.generation != ticket.generation {
                // The connection it went out on was replaced; its reply died with it.
                rx.waiting.remove(&id);
                return Err(CallError::Gone {
                    generation: ticket.generation,
                    maybe_done: true,
                });
            }
            if let Some(b) = rx.broken.clone() {
                rx.waiting.remove(&id);
                return Err(self.broken_error(&b, rx.generation, true));
            }
            match self.receive_one(&mut rx) {
                Ok((reply_id, d)) if reply_id == id => return Ok(d),
                Ok((reply_id, d)) => {
                    rx.parked.insert(reply_id, d);
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    // Nothing was consumed: the connection is intact, and the reply is
                    // dropped whenever it arrives.
                    rx.waiting.insert(id, Waiter::Abandoned);
                    return Err(CallError::Other(e));
                }
                Err(e) => {
                    rx.waiting.remove(&id);
                    let gone = e.kind() == io::ErrorKind::ConnectionAborted;
                    rx.broken = Some(Broken {
                        why: e.to_string(),
                        gone,
                    });
                    let _ = self.channel.shutdown();
                    return Err(if gone {
                        CallError::Gone {
                            generation: rx.generation,
                            maybe_done: true,
                        }
                    } else {
                        CallError::Other(e)
                    });
                }
            }
        }
    }

    /// Give up on a request: its reply, now or later, is dropped with its descriptors.
    pub(crate) fn abandon(&self, ticket: Ticket) {
        let mut rx = self.lock();
        if rx.parked.remove(&ticket.id).is_none()
            && rx.waiting.contains_key(&ticket.id)
            && rx.generation == ticket.generation
        {
            rx.waiting.insert(ticket.id, Waiter::Abandoned);
        } else {
            rx.waiting.remove(&ticket.id);
        }
    }

    fn broken_error(&self, b: &Broken, generation: u64, maybe_done: bool) -> CallError {
        if b.gone {
            CallError::Gone {
                generation,
                maybe_done,
            }
        } else {
            CallError::Other(broken(&b.why))
        }
    }

    /// Replace the connection of `failed` (if it is still the current one) by a new one
    /// to the same socket, once; an inherited or given connection cannot be replaced.
    fn reconnect(&self, failed: u64) -> io::Result<()> {
        let path = match &self.origin {
            Origin::Socket(path) => path,
            Origin::Inherited => {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    format!(
                        "the broker closed the connection; it was inherited ({ENV_FD}), and the \
                         broker that started this worker cannot be reached any other way"
                    ),
                ));
            }
            Origin::Given => return Err(broker_gone()),
        };
        if self.generation.load(Ordering::Acquire) != failed {
            return Ok(());
        }
        let _swapping = write(&self.swap);
        if self.generation.load(Ordering::Acquire) != failed {
            return Ok(());
        }
        let timeout = *lock(&self.timeout);
        let (fresh, accepted) = dial_and_greet(path, timeout).map_err(|e| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!(
                    "the broker closed the connection, and reconnecting to {} failed: {e}",
                    path.display()
                ),
            )
        })?;
        let mut rx = self.lock();
        self.channel.replace_with(fresh)?;
        self.channel.set_read_timeout(timeout)?;
        self.channel.set_write_timeout(timeout)?;
        *write(&self.accepted) = accepted;
        rx.generation += 1;
        rx.broken = None;
        rx.waiting.retain(|_, w| *w != Waiter::Abandoned);
        self.generation.store(rx.generation, Ordering::Release);
        tracing::warn!(
            socket = %path.display(),
            generation = rx.generation,
            "the broker closed the connection (restarted?); reconnected"
        );
        Ok(())
    }

    /// Read one reply and check it against what we are waiting for. Descriptors are
    /// owned from the moment they arrive, so every error path closes them. Replies to
    /// abandoned requests are dropped here.
    fn receive_one(&self, rx: &mut Receiver) -> io::Result<(u64, Delivery)> {
        loop {
            let Receiver {
                buf,
                control,
                waiting,
                ..
            } = &mut *rx;
            let spin = self.spin_nanos.load(Ordering::Relaxed);
            if spin != 0 {
                // Never longer than the timeout: the receive after it waits that long
                // again, and a spin must not stretch the bound the caller set.
                let mut limit = Duration::from_nanos(spin);
                if let Some(t) = *lock(&self.timeout) {
                    limit = limit.min(t);
                }
                self.channel.spin_until_readable(limit);
            }
            let (n, fds) = self
                .channel
                .recv_with_fds_reusing(buf, control, MAX_FDS_PER_REPLY)
                .map_err(recv_error)?;
            let reply: Reply = frame::decode(Kind::Reply, &buf[..n])?;
            let waiter = waiting.remove(&reply.id);
            let expected = reply.body.descriptor_count();
            if waiter.is_some() && expected != fds.len() {
                return Err(fdbroker_shared::ProtocolError::DescriptorCount {
                    expected,
                    got: fds.len(),
                }
                .into());
            }
            match waiter {
                None => return Err(fdbroker_shared::ProtocolError::UnknownId(reply.id).into()),
                Some(Waiter::Abandoned) => continue,
                Some(Waiter::Waiting(_)) => {
                    return Ok((
                        reply.id,
                        Delivery {
                            body: reply.body,
                            fds,
                        },
                    ));
                }
            }
        }
    }

    /// Mark the connection unusable (a reply that breaks the protocol) and say why.
    pub(crate) fn fail(&self, why: &str) -> io::Error {
        let mut rx = self.lock();
        rx.broken.get_or_insert_with(|| Broken {
            why: why.to_owned(),
            gone: false,
        });
        let _ = self.channel.shutdown();
        broken(why)
    }

    fn lock(&self) -> MutexGuard<'_, Receiver> {
        lock(&self.receiver)
    }
}

impl CallError {
    pub(crate) fn into_io(self) -> io::Error {
        match self {
            CallError::Gone { .. } => broker_gone(),
            CallError::Other(e) => e,
        }
    }
}

/// Requests that may be sent again after the broker went away without answering: all
/// but creating a file, which may have happened before the broker died.
fn idempotent(op: &Op) -> bool {
    match op {
        Op::Open(spec) => spec.access != Access::Create,
        Op::OpenMany { access, .. } => *access != Access::Create,
        Op::Stat(_) | Op::Connect | Op::List(_) | Op::Link(_) | Op::Status => true,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use fdbroker_shared::wire::{OpenSpec, Request};

    #[test]
    fn a_borrowed_request_encodes_as_an_owned_one() {
        let op = Op::OpenMany {
            paths: vec![b"/a".to_vec(), b"/bc".to_vec()],
            access: Access::Read,
            flags: 0,
        };
        let (mut owned, mut borrowed) = (Vec::new(), Vec::new());
        frame::encode(
            Kind::Request,
            &Request {
                id: 7,
                op: op.clone(),
            },
            &mut owned,
        )
        .unwrap();
        frame::encode(Kind::Request, &RequestRef { id: 7, op: &op }, &mut borrowed).unwrap();
        assert_eq!(owned, borrowed);
    }

    #[test]
    fn only_creates_are_not_retried() {
        let open = |access| {
            Op::Open(OpenSpec {
                path: b"/x".to_vec(),
                access,
                flags: 0,
            })
        };
        assert!(idempotent(&open(Access::Read)));
        assert!(idempotent(&open(Access::Write)));
        assert!(!idempotent(&open(Access::Create)));
        let create_many = Op::OpenMany {
            paths: vec![b"/a".to_vec()],
            access: Access::Create,
            flags: 0,
        };
        assert!(!idempotent(&create_many));
        assert!(idempotent(&Op::Connect));
    }
}
