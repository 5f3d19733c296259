//! One worker connection: greeting, then request after request, each answered once.
//!
//! The event loop guarantees a connection is serviced by one thread at a time
//! (`EPOLLONESHOT`), so the state lock here is never contended; it exists so the type is
//! `Sync`. A reply the socket cannot take now (the worker is not reading) is parked with
//! its descriptors, and the connection waits for writability instead of reading more:
//! a worker that floods requests without reading replies holds at most one reply's
//! worth of broker memory.

mod export;

pub use export::Exported;

use crate::audit::{Batch, Unwritten, Written};
use crate::request::answer;
use crate::request::loaded::Loaded;
use crate::server::inflight::InFlight;
use crate::server::state::Shared;
use fdbroker_policy::ClientId;
use fdbroker_shared::frame::{self, Kind, MAX_MESSAGE};
use fdbroker_shared::peer::PeerCredentials;
use fdbroker_shared::wire::{Accepted, Hello, Op, Reply, ReplyBody, Request, Welcome, WireError};
use fdbroker_shared::{Channel, ProtocolError, RecvError};
use nix::errno::Errno;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `SO_SNDBUF` of each connection (the kernel doubles it): room for a handful of
/// replies, so one worker that never reads pins at most a few batches of descriptors
/// in flight, not enough to exhaust the broker's `RLIMIT_NOFILE` for everyone (see
/// `rlimit`).
pub const REPLY_QUEUE_BYTES: usize = 16 * 1024;

// A page of a listing the broker answers itself is one message, which must fit.
const _: () = assert!(crate::request::list::PAGE_BYTES <= REPLY_QUEUE_BYTES);

/// A connection's descriptor charge is checked against its socket (one `ioctl`) only
/// once it reaches this many, when a charge is refused, or on the event loop's timer:
/// a worker doing one open at a time costs one check per 32 requests, not one each.
const RECHECK_AT: usize = 32;

/// Messages handled per wake-up before yielding to other connections.
const BUDGET: usize = 16;

/// How the connection's policy client is chosen.
#[derive(Debug, Clone)]
pub enum Binding {
    /// By the peer's `SO_PEERCRED` uid/gid, re-matched after each reload.
    Credentials,
    /// A named client (spawn mode serves one worker as the client given on the
    /// command line).
    Named(String),
    /// A named client served on behalf of a program that does not know the broker
    /// (`fdbroker run --transparent`'s supervisor): decided as `Named`, and its audit
    /// lines say `via="transparent"`.
    Transparent(String),
}

/// What the event loop should do next with the connection.
#[derive(Debug)]
pub enum Next {
    Read,
    Write,
    Close,
    /// Not read from until the event loop's timer says its uid has room again for
    /// the descriptors of a full reply (see `inflight`).
    Stall,
    /// The worker asked for a connection of its own ([`Op::Connect`]): the event loop
    /// takes the new one or refuses it, then answers through [`Conn::answer_connect`].
    /// Nothing is read from this connection until then.
    Connect(Box<Born>),
    /// The broker's operator asked for its state ([`Op::Status`], request `id`): the
    /// event loop, which alone sees every connection, builds the report and answers
    /// through [`Conn::answer_status`]. Nothing is read from this connection until then.
    Status(u64),
}

/// A connection made for [`Op::Connect`], on its way up to the event loop, and the
/// worker's end of it, waiting in the reply the answer will carry.
#[derive(Debug)]
pub struct Born {
    /// The broker's end, with the asking connection's identity.
    pub conn: Conn,
    /// What the asking connection's answer needs.
    pub reply: ConnectReply,
}

/// The request an [`Op::Connect`] answer goes to, and the worker's end it would pass.
#[derive(Debug)]
pub struct ConnectReply {
    id: u64,
    theirs: OwnedFd,
}

/// What a message came to: a reply built into the thread's buffers (with the request
/// id, `None` for the greeting), or a new connection for the event loop.
enum Answered {
    Reply(Option<u64>),
    Connect(Box<Born>),
    Status(u64),
}

/// Per-thread buffers, reused for every message.
pub struct Scratch {
    /// The audit lines of the request being answered, written before its reply.
    audit: Batch,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            audit: Batch::default(),
            inbuf: vec![0; MAX_MESSAGE],
            outbuf: Vec::with_capacity(4096),
            fds: Vec::with_capacity(fdbroker_shared::frame::MAX_FDS_PER_REPLY),
        }
    }
}

#[derive(Debug)]
pub struct Conn {
    channel: Channel,
    pub peer: PeerCredentials,
    /// The peer's supplementary groups at connect time (`SO_PEERGROUPS`).
    groups: Box<[u32]>,
    /// Made by the broker for a worker that asked (`Op::Connect`): its identity is the
    /// one of the connection it was asked on, which a successor server cannot check
    /// (`SO_PEERCRED` of a socketpair names this server), so it is not handed over.
    derived: bool,
    binding: Binding,
    state: Mutex<State>,
    /// When the connection was accepted; `active_ms` counts from here.
    opened: Instant,
    /// Milliseconds from `opened` to the last message received or reply delivered:
    /// what the idle sweep reads without taking `state`, which a thread serving the
    /// connection may hold.
    active_ms: AtomicU64,
    /// The broker's count of descriptors in flight, which this connection adds to.
    inflight: Arc<InFlight>,
    /// Descriptors charged to this connection: reserved for the reply being built,
    /// held in a parked reply, or passed and perhaps not yet received.
    charged: AtomicUsize,
    /// Whether a refusal for unread descriptors was logged for this connection.
    told_over: AtomicBool,
    /// Its hello was accepted (`Phase::Serving`), for `status`.
    greeted: AtomicBool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Whatever is still queued is closed with the socket.
        let n = *self.charged.get_mut();
        self.inflight.release(self.peer.uid, n);
    }
}

#[derive(Debug)]
struct State {
    phase: Phase,
    pending: Option<Outgoing>,
    /// Descriptors charged for the request being answered.
    reserved: usize,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    AwaitHello,
    Serving {
        generation: u64,
        client: ClientId,
    },
    /// A final message (a refusal) is queued; close once it is out.
    Closing,
}

#[derive(Debug)]
struct Outgoing {
    id: Option<u64>,
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
    /// Its audit lines were written when it was built.
    written: Written,
}

enum Sent {
    /// Sent, passing this many descriptors (none if they had to be replaced by an
    /// error).
    Done(usize),
    /// The socket is full: keep the reply and wait for writability.
    Later,
    Failed,
}

/// What the service loop does after a send: carry on (`None`), or stop and wait for
/// writability (parking the reply `park` builds) or close.
fn settle(st: &mut State, sent: Sent, park: impl FnOnce() -> Outgoing) -> Option<Next> {
    match sent {
        Sent::Done(_) => None,
        Sent::Later => {
            st.pending = Some(park());
            Some(Next::Write)
        }
        Sent::Failed => Some(Next::Close),
    }
}

impl Conn {
    pub fn new(
        channel: Channel,
        peer: PeerCredentials,
        groups: Box<[u32]>,
        binding: Binding,
        inflight: Arc<InFlight>,
    ) -> Conn {
        // Bound the replies (and so the descriptors) a worker can leave unread: once
        // they fill this, sends fail with EAGAIN, the reply is parked, the connection
        // is not read further, and EPOLLOUT wakes it when the worker catches up.
        if let Err(e) = nix::sys::socket::setsockopt(
            &channel,
            nix::sys::socket::sockopt::SndBuf,
            &REPLY_QUEUE_BYTES,
        ) {
            tracing::warn!(error = %e, "cannot bound a connection's reply queue");
        }
        Conn {
            channel,
            peer,
            groups,
            derived: false,
            binding,
            state: Mutex::new(State {
                phase: Phase::AwaitHello,
                pending: None,
                reserved: 0,
            }),
            inflight,
            charged: AtomicUsize::new(0),
            told_over: AtomicBool::new(false),
            greeted: AtomicBool::new(false),
            opened: Instant::now(),
            active_ms: AtomicU64::new(0),
        }
    }

    /// The policy client this connection maps to under `loaded`, if any.
    pub fn client_in(&self, loaded: &Loaded) -> Option<ClientId> {
        match &self.binding {
            Binding::Credentials => loaded.policy.client_for(self.peer.uid, self.peer.gid),
            Binding::Named(name) | Binding::Transparent(name) => loaded.policy.client_by_name(name),
        }
    }

    /// Read and answer what the worker sent, up to a budget.
    pub fn service(&self, shared: &Shared, s: &mut Scratch) -> Next {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut out) = st.pending.take() {
            let held = out.fds.len();
            let sent = self.transmit(&out.written, out.id, &mut out.bytes, &mut out.fds);
            self.account(held, &sent);
            if matches!(sent, Sent::Done(_)) {
                self.touch();
            }
            if let Some(next) = settle(&mut st, sent, || out) {
                return next;
            }
        }
        for _ in 0..BUDGET {
            if matches!(st.phase, Phase::Closing) {
                return Next::Close;
            }
            // Nothing of ours is held now: what is charged has been sent.
            self.refresh_charge(false);
            // Held back only once serving: the greeting passes no descriptors.
            let serving = matches!(st.phase, Phase::Serving { .. });
            if let Err(over) = self.inflight.room_for_a_reply(self.peer.uid)
                && serving
            {
                self.refresh_charge(true);
                if self.inflight.room_for_a_reply(self.peer.uid).is_err() {
                    self.note_stall(&over);
                    return Next::Stall;
                }
            }
            let n = match self.channel.recv(&mut s.inbuf) {
                Ok(n) => {
                    self.touch();
                    n
                }
                Err(RecvError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Next::Read;
                }
                Err(RecvError::Protocol(ProtocolError::Closed)) => return Next::Close,
                // A worker that closes with replies unread resets the connection: a
                // goodbye, not a violation.
                Err(RecvError::Io(e)) if is_disconnect(&e) => return Next::Close,
                Err(e) => {
                    self.violation(&e);
                    return Next::Close;
                }
            };
            s.fds.clear();
            let answered = self.on_message(
                &mut st,
                shared,
                &s.inbuf[..n],
                &mut s.outbuf,
                &mut s.fds,
                &mut s.audit,
            );
            // The request's audit lines go out in one write now, before the reply: no
            // descriptor is delivered ahead of the line recording it (the send takes
            // what the flush returns, or what `audit_failure` makes of a failed one).
            let flushed = s.audit.flush();
            let id = match answered {
                Ok(Answered::Reply(id)) => id,
                // The descriptor reserved for the worker's end stays reserved until
                // the answer.
                Ok(Answered::Connect(born)) => return Next::Connect(born),
                Ok(Answered::Status(id)) => return Next::Status(id),
                Err(e) => {
                    self.uncharge(std::mem::take(&mut st.reserved));
                    self.violation(&e);
                    return Next::Close;
                }
            };
            let Some(written) = audited(shared, flushed, id, s) else {
                self.uncharge(std::mem::take(&mut st.reserved));
                return Next::Close;
            };
            if let Some(next) = self.send_reply(&mut st, id, s, written) {
                return next;
            }
            // A relay sends its next request only after this answer reached the
            // program: the server looks for it (spinning), so no read that would only
            // find nothing.
            if self.is_relay() {
                break;
            }
        }
        if matches!(st.phase, Phase::Closing) {
            Next::Close
        } else {
            Next::Read
        }
    }

    /// Send the reply built in the thread's buffers, returning the descriptors reserved
    /// for files that were not granted; `Some` when the loop must stop (the reply is
    /// parked, or the connection is done).
    fn send_reply(
        &self,
        st: &mut State,
        id: Option<u64>,
        s: &mut Scratch,
        written: Written,
    ) -> Option<Next> {
        // Descriptors reserved for files that were not granted go back now.
        let held = s.fds.len();
        self.uncharge(std::mem::take(&mut st.reserved).saturating_sub(held));
        // Sent from the thread's buffers; copied out only if it has to wait.
        let sent = self.transmit(&written, id, &mut s.outbuf, &mut s.fds);
        self.account(held, &sent);
        let park = || Outgoing {
            id,
            bytes: s.outbuf.clone(),
            fds: std::mem::take(&mut s.fds),
            written,
        };
        settle(st, sent, park)
    }

    /// Answer the [`Op::Connect`] that made `born`'s connection: `verdict` is the event
    /// loop's (`Ok` once it serves the new connection, else why not: `EAGAIN` over a
    /// connection limit, `ESHUTDOWN` while stopping). The worker's end goes out only
    /// with `Ok`; otherwise it closes here.
    pub fn answer_connect(
        &self,
        reply: ConnectReply,
        verdict: Result<(), WireError>,
        s: &mut Scratch,
    ) -> Next {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.fds.clear();
        let body = match verdict {
            Ok(()) => {
                tracing::info!(
                    target: crate::audit::TARGET,
                    uid = self.peer.uid,
                    gid = self.peer.gid,
                    pid = self.peer.pid,
                    "a worker took a new connection of its own"
                );
                s.fds.push(reply.theirs);
                ReplyBody::Connected
            }
            Err(why) => ReplyBody::Refused(why),
        };
        if let Err(e) = encode_reply(&mut s.outbuf, reply.id, body, &mut s.fds) {
            self.uncharge(std::mem::take(&mut st.reserved));
            self.violation(&e);
            return Next::Close;
        }
        // The one descriptor is a new connection to this broker, which grants nothing by
        // itself (and whose line goes through `tracing`): sent whatever `audit_failure`.
        let written = s.audit.flush().unwrap_or_else(Unwritten::serve_anyway);
        match self.send_reply(&mut st, Some(reply.id), s, written) {
            Some(next) => next,
            None if matches!(st.phase, Phase::Closing) => Next::Close,
            None => Next::Read,
        }
    }

    /// Answer the [`Op::Status`] request `id` with `report` (the event loop's JSON).
    pub fn answer_status(&self, id: u64, report: String, s: &mut Scratch) -> Next {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.fds.clear();
        // The report may be larger than a reply queue of REPLY_QUEUE_BYTES takes in one
        // message (EMSGSIZE); it carries no descriptor, and only the operator asks.
        if let Err(e) = nix::sys::socket::setsockopt(
            &self.channel,
            nix::sys::socket::sockopt::SndBuf,
            &fdbroker_shared::frame::MAX_MESSAGE,
        ) {
            tracing::warn!(error = %e, "cannot make room for the status report");
        }
        if let Err(e) = encode_reply(&mut s.outbuf, id, ReplyBody::Status(Ok(report)), &mut s.fds) {
            self.violation(&e);
            return Next::Close;
        }
        // No descriptor, no decision: nothing for the audit trail to hold back.
        let written = s.audit.flush().unwrap_or_else(Unwritten::serve_anyway);
        match self.send_reply(&mut st, Some(id), s, written) {
            Some(next) => next,
            None if matches!(st.phase, Phase::Closing) => Next::Close,
            None => Next::Read,
        }
    }

    /// Whether the hello was accepted: a client's connection in service (not one made
    /// only to ask for the status, nor one still waiting for its hello). Read without
    /// `state`, which a thread serving the connection may hold for long.
    pub fn greeted(&self) -> bool {
        self.greeted.load(Ordering::Relaxed)
    }

    /// Whether the peer is the broker's operator, who may ask for its state: root, or
    /// the user the broker runs as (the service's user), by `SO_PEERCRED`.
    pub fn is_operator(&self) -> bool {
        self.peer.uid == 0 || self.peer.uid == nix::unistd::geteuid().as_raw()
    }

    /// Decode one message and build the answer into `out`, or make the connection an
    /// [`Op::Connect`] asks for.
    fn on_message(
        &self,
        st: &mut State,
        shared: &Shared,
        msg: &[u8],
        out: &mut Vec<u8>,
        fds: &mut Vec<OwnedFd>,
        audit: &mut Batch,
    ) -> Result<Answered, ProtocolError> {
        match st.phase {
            Phase::AwaitHello => {
                if frame::header(msg).is_ok_and(|h| h.kind == Kind::Request) {
                    return self.connect_before_hello(st, shared, msg, out, fds);
                }
                let hello: Hello = match frame::decode(Kind::Hello, msg) {
                    Err(ProtocolError::Version { peer }) => {
                        static MISMATCHES: crate::server::throttle::Throttle =
                            crate::server::throttle::Throttle::new();
                        if let Some(suppressed) = MISMATCHES.admit() {
                            tracing::warn!(
                                uid = self.peer.uid,
                                pid = self.peer.pid,
                                peer_version = peer,
                                suppressed,
                                "refusing a client that speaks another protocol version"
                            );
                        }
                        st.phase = Phase::Closing;
                        let why = format!(
                            "protocol version mismatch: the broker speaks version {}, the client speaks version {peer}",
                            frame::PROTOCOL_VERSION
                        );
                        encode_welcome(
                            out,
                            Welcome::Refused(WireError::new(Errno::EPROTONOSUPPORT as i32, why)),
                        )?;
                        return Ok(Answered::Reply(None));
                    }
                    r => r?,
                };
                let loaded = shared.current();
                match self.client_in(&loaded) {
                    Some(client) => {
                        let name = loaded.policy.client(client).name.clone();
                        tracing::debug!(
                            uid = self.peer.uid, gid = self.peer.gid, pid = self.peer.pid,
                            client = %name, agent = %crate::audit::Escaped(hello.agent.as_bytes()),
                            "connection accepted"
                        );
                        encode_welcome(
                            out,
                            Welcome::Accepted(Accepted {
                                client: name,
                                max_batch: loaded.policy.broker().max_batch as u32,
                            }),
                        )?;
                        self.greeted.store(true, Ordering::Relaxed);
                        st.phase = Phase::Serving {
                            generation: loaded.generation,
                            client,
                        };
                    }
                    None => {
                        // The operator's connection, admitted for `Op::Status`, or a
                        // client the policy no longer names after a reload.
                        note_no_client(&self.peer);
                        st.phase = Phase::Closing;
                        encode_welcome(out, Welcome::Refused(self.no_client()))?;
                    }
                }
                Ok(Answered::Reply(None))
            }
            Phase::Serving { generation, client } => {
                let req: Request = frame::decode(Kind::Request, msg)?;
                shared.count_request();
                let loaded = shared.current();
                let client = if loaded.generation == generation {
                    client
                } else {
                    match self.client_in(&loaded) {
                        Some(c) => {
                            st.phase = Phase::Serving {
                                generation: loaded.generation,
                                client: c,
                            };
                            c
                        }
                        None => {
                            st.phase = Phase::Closing;
                            encode_reply(out, req.id, ReplyBody::Refused(self.no_client()), fds)?;
                            return Ok(Answered::Reply(Some(req.id)));
                        }
                    }
                };
                let max_batch = loaded.policy.broker().max_batch;
                // A batch over max_batch is refused whole (E2BIG) and passes nothing.
                let want = match req.op.max_descriptors() {
                    n if n > max_batch => 0,
                    n => n,
                };
                // There was room for a full reply before this was read; only another
                // connection of the same uid, charged meanwhile, can have taken it.
                if let Err(over) = self.inflight.charge(self.peer.uid, want) {
                    self.note_stall(&over);
                    let why = WireError::new(Errno::ETOOMANYREFS as i32, over.to_string());
                    encode_reply(out, req.id, ReplyBody::Refused(why), fds)?;
                    return Ok(Answered::Reply(Some(req.id)));
                }
                self.charged.fetch_add(want, Ordering::Relaxed);
                st.reserved = want;
                let body = match req.op {
                    Op::Connect => match self.fresh_connection(req.id) {
                        Ok(born) => return Ok(Answered::Connect(born)),
                        Err(refused) => refused,
                    },
                    op => {
                        audit.set_via(match self.binding {
                            Binding::Transparent(_) => Some("transparent"),
                            _ => None,
                        });
                        audit.set_mode(loaded.policy.client(client).learning.then_some("learn"));
                        answer::answer(
                            audit,
                            &loaded,
                            client,
                            &self.peer,
                            &self.groups,
                            op,
                            max_batch,
                            fds,
                        )
                    }
                };
                encode_reply(out, req.id, body, fds)?;
                Ok(Answered::Reply(Some(req.id)))
            }
            Phase::Closing => Err(ProtocolError::Closed),
        }
    }

    /// A request before the hello: only [`Op::Connect`], which the processes sharing one
    /// inherited connection send without greeting it (each takes a connection of its
    /// own; see `fresh_connection`). The connection stays waiting for its hello.
    /// Anything else is the violation it always was.
    fn connect_before_hello(
        &self,
        st: &mut State,
        shared: &Shared,
        msg: &[u8],
        out: &mut Vec<u8>,
        fds: &mut Vec<OwnedFd>,
    ) -> Result<Answered, ProtocolError> {
        let req: Request = frame::decode(Kind::Request, msg)?;
        if matches!(req.op, Op::Status) {
            if self.is_operator() {
                return Ok(Answered::Status(req.id));
            }
            let why = WireError::new(
                Errno::EACCES as i32,
                "only root or the broker's own user may ask for its status",
            );
            encode_reply(out, req.id, ReplyBody::Status(Err(why)), fds)?;
            return Ok(Answered::Reply(Some(req.id)));
        }
        if !matches!(req.op, Op::Connect) {
            return Err(ProtocolError::UnexpectedKind {
                expected: Kind::Hello,
                got: Kind::Request,
            });
        }
        let body = if self.client_in(&shared.current()).is_none() {
            ReplyBody::Refused(self.no_client())
        } else if let Err(over) = self.inflight.charge(self.peer.uid, 1) {
            self.note_stall(&over);
            ReplyBody::Refused(WireError::new(Errno::ETOOMANYREFS as i32, over.to_string()))
        } else {
            self.charged.fetch_add(1, Ordering::Relaxed);
            st.reserved = 1;
            match self.fresh_connection(req.id) {
                Ok(born) => return Ok(Answered::Connect(born)),
                Err(refused) => refused,
            }
        };
        encode_reply(out, req.id, body, fds)?;
        Ok(Answered::Reply(Some(req.id)))
    }

    /// [`Op::Connect`]: a connected socketpair whose one end the server registers as a
    /// new connection with this one's identity (peer credentials, groups, binding), and
    /// whose other end goes to the worker in the reply. The new connection starts waiting
    /// for its hello, and counts against the broker's connection limits like an accepted
    /// one (the server refuses it with `EAGAIN` when over).
    ///
    /// The broker's end is non-blocking for the event loop; the worker's is handed over
    /// blocking, as `connect(2)` would have made it. Both are made here with flags and
    /// `fcntl`, the calls the confined broker may make. The pair goes up to the event
    /// loop ([`Next::Connect`]); a pair that cannot be made is refused at once.
    fn fresh_connection(&self, id: u64) -> Result<Box<Born>, ReplyBody> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let made = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )
        .and_then(|(ours, theirs)| {
            let fl = nix::fcntl::fcntl(&theirs, nix::fcntl::FcntlArg::F_GETFL)?;
            let fl = nix::fcntl::OFlag::from_bits_truncate(fl) - nix::fcntl::OFlag::O_NONBLOCK;
            nix::fcntl::fcntl(&theirs, nix::fcntl::FcntlArg::F_SETFL(fl))?;
            Ok((ours, theirs))
        });
        let (ours, theirs) = match made {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(uid = self.peer.uid, pid = self.peer.pid, error = %e, "cannot make a connection a worker asked for");
                return Err(ReplyBody::Refused(WireError::new(
                    e as i32,
                    format!("the broker cannot make a new connection: {}", e.desc()),
                )));
            }
        };
        let mut conn = Conn::new(
            Channel::wrap(ours),
            self.peer,
            self.groups.clone(),
            self.binding.clone(),
            Arc::clone(&self.inflight),
        );
        conn.derived = true;
        Ok(Box::new(Born {
            conn,
            reply: ConnectReply { id, theirs },
        }))
    }

    fn no_client(&self) -> WireError {
        refusal_for(&self.peer, &self.binding)
    }

    /// Send a reply (closing the broker's copies of its descriptors once sent), or say
    /// it must wait for the socket. A reply whose descriptors cannot be passed
    /// (`ETOOMANYREFS`, ...) is replaced by an error reply without them, closing what
    /// was opened, so the worker is never left waiting.
    /// `_written`: the reply's audit lines are out (see `crate::audit::batch`).
    fn transmit(
        &self,
        _written: &Written,
        id: Option<u64>,
        bytes: &mut Vec<u8>,
        fds: &mut Vec<OwnedFd>,
    ) -> Sent {
        match self.channel.send_with_fds(bytes, fds) {
            Ok(()) => {
                let passed = fds.len();
                fds.clear();
                Sent::Done(passed)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Sent::Later,
            Err(e) if !fds.is_empty() && !is_disconnect(&e) => {
                let errno = e.raw_os_error().unwrap_or(Errno::EIO as i32);
                let why = if errno == Errno::ETOOMANYREFS as i32 {
                    // Logged once per burst: every reply fails alike until workers read.
                    static BUDGET: crate::server::throttle::Throttle =
                        crate::server::throttle::Throttle::once_per_window();
                    if let Some(suppressed) = BUDGET.admit() {
                        tracing::error!(
                            uid = self.peer.uid,
                            pid = self.peer.pid,
                            suppressed,
                            "out of descriptor budget: the kernel refuses to pass more \
                             descriptors (ETOOMANYREFS) because too many passed by this \
                             broker's user have not been received yet; run the broker as \
                             a user of its own and raise its RLIMIT_NOFILE"
                        );
                    }
                    "the broker is out of descriptor budget: the kernel refuses to pass more \
                     descriptors until workers receive those already passed (ETOOMANYREFS); \
                     try again later"
                        .to_owned()
                } else {
                    static FAILED: crate::server::throttle::Throttle =
                        crate::server::throttle::Throttle::new();
                    if let Some(suppressed) = FAILED.admit() {
                        tracing::warn!(uid = self.peer.uid, pid = self.peer.pid, error = %e, suppressed, "cannot pass descriptors; answering with an error instead");
                    }
                    format!("the broker could not pass the descriptors: {e}")
                };
                fds.clear();
                let Some(id) = id else { return Sent::Failed };
                let body = ReplyBody::Refused(WireError::new(errno, why));
                if encode_reply(bytes, id, body, fds).is_err() {
                    return Sent::Failed;
                }
                self.transmit(_written, Some(id), bytes, fds)
            }
            Err(e) => {
                if !is_disconnect(&e) {
                    tracing::warn!(uid = self.peer.uid, pid = self.peer.pid, error = %e, "send failed; closing the connection");
                }
                // The reply is abandoned: close its descriptors now, not whenever this
                // thread's scratch buffer is next reused.
                fds.clear();
                Sent::Failed
            }
        }
    }

    /// Log, once per connection and throttled, that it is held back.
    fn note_stall(&self, over: &crate::server::inflight::Over) {
        static STALLS: crate::server::throttle::Throttle = crate::server::throttle::Throttle::new();
        if !self.told_over.swap(true, Ordering::Relaxed) {
            if let Some(suppressed) = STALLS.admit() {
                tracing::warn!(
                    uid = self.peer.uid, pid = self.peer.pid, reason = %over, suppressed,
                    "not reading from a worker until its descriptors are received \
                     (logged once per connection)"
                );
            }
        }
    }

    /// Settle the charge for a reply that held `held` descriptors, after `sent`:
    /// those passed stay charged until the worker receives them; the rest go back.
    fn account(&self, held: usize, sent: &Sent) {
        match sent {
            Sent::Done(passed) => self.uncharge(held.saturating_sub(*passed)),
            Sent::Later => {}
            Sent::Failed => self.uncharge(held),
        }
    }

    fn uncharge(&self, n: usize) {
        if n > 0 {
            self.charged.fetch_sub(n, Ordering::Relaxed);
            self.inflight.release(self.peer.uid, n);
        }
    }

    /// Release this connection's charge if the worker has received everything sent
    /// (checked once the charge reaches [`RECHECK_AT`], or always if `force`). Only
    /// while no reply is held (parked, or being built).
    fn refresh_charge(&self, force: bool) {
        let charged = self.charged.load(Ordering::Relaxed);
        if charged > 0
            && (force || charged >= RECHECK_AT)
            && matches!(self.channel.unreceived_bytes(), Ok(0))
        {
            let n = self.charged.swap(0, Ordering::Relaxed);
            self.inflight.release(self.peer.uid, n);
        }
    }

    /// Is anything this connection passed still queued, unreceived, in the worker's
    /// socket? Called once the connection is over (no thread serves it any more): a
    /// parked reply is abandoned first (its descriptors were never passed), then the
    /// socket's send queue says whether the kernel still charges passed descriptors to
    /// the broker's user. It does until the worker receives them or its socket is
    /// destroyed, whatever the broker does with its own end, so such a connection must
    /// stay open and charged (see `server`'s draining list) rather than be dropped.
    /// A queue that cannot be read counts as not empty.
    pub fn still_charged_at_close(&self) -> bool {
        let parked = self
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pending
            .take();
        if let Some(out) = parked {
            self.uncharge(out.fds.len());
        }
        self.charged.load(Ordering::Relaxed) > 0 && !self.drained()
    }

    /// For a connection kept after its close: has the worker received (or discarded,
    /// by closing its socket) everything passed? If so the charge is released now.
    pub fn drained(&self) -> bool {
        match self.channel.unreceived_bytes() {
            Ok(0) => {
                let n = self.charged.swap(0, Ordering::Relaxed);
                self.inflight.release(self.peer.uid, n);
                true
            }
            _ => false,
        }
    }

    /// [`Conn::refresh_charge`] for the event loop's timer, unless a thread is serving
    /// the connection or a reply is parked.
    pub fn refresh_charge_if_idle(&self) {
        if let Ok(st) = self.state.try_lock()
            && st.pending.is_none()
        {
            self.refresh_charge(true);
        }
    }

    fn violation(&self, e: &dyn std::fmt::Display) {
        static VIOLATIONS: crate::server::throttle::Throttle =
            crate::server::throttle::Throttle::new();
        if let Some(suppressed) = VIOLATIONS.admit() {
            tracing::warn!(
                uid = self.peer.uid, gid = self.peer.gid, pid = self.peer.pid, error = %e,
                suppressed, "protocol violation; dropping this connection"
            );
        }
    }

    /// Note activity now (a message in, or a parked reply out).
    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.active_ms.store(ms, Ordering::Relaxed);
    }

    /// How long since the worker last sent a message or took a parked reply.
    pub fn idle_for(&self, now: Instant) -> Duration {
        let since_open = now.saturating_duration_since(self.opened);
        since_open.saturating_sub(Duration::from_millis(
            self.active_ms.load(Ordering::Relaxed),
        ))
    }

    /// Serves transparent mode's supervisor: a synchronous relay whose program waits
    /// for every answer, so the thread that served it looks for the next request
    /// before going back to sleep (see [`Channel::spin_until_readable`]).
    pub fn is_relay(&self) -> bool {
        matches!(self.binding, Binding::Transparent(_))
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }
}

/// Build the refusal a peer with no matching client gets.
pub fn refusal_for(peer: &PeerCredentials, binding: &Binding) -> WireError {
    let why = match binding {
        Binding::Credentials => format!(
            "no client in the broker's policy matches uid {} gid {}",
            peer.uid, peer.gid
        ),
        Binding::Named(n) | Binding::Transparent(n) => {
            format!("the policy has no client named {n:?}")
        }
    };
    WireError::new(Errno::EACCES as i32, why)
}

/// Send a refusal on a connection that will not be served, and forget it.
/// Log (a few times per window: a peer can cause it at will) that a peer no client of
/// the policy matches was refused.
pub fn note_no_client(peer: &PeerCredentials) {
    static REFUSALS: crate::server::throttle::Throttle = crate::server::throttle::Throttle::new();
    if let Some(suppressed) = REFUSALS.admit() {
        tracing::warn!(
            uid = peer.uid,
            gid = peer.gid,
            pid = peer.pid,
            suppressed,
            "refused a connection: no client in the policy matches it"
        );
    }
}

///
/// Then the connection's receive queue is emptied before it is closed: a Unix socket
/// closed with messages unread makes the peer's next receive fail with ECONNRESET
/// *before* it is handed the refusal already queued for it, so a client that had sent
/// its hello would learn nothing of why. Shutting the reading side first makes the
/// peer's later sends fail (EPIPE) instead of arriving after the drain; the drain is
/// bounded by the messages the peer could queue before that.
pub fn refuse(channel: &Channel, why: WireError) {
    let mut out = Vec::new();
    if encode_welcome(&mut out, Welcome::Refused(why)).is_ok() {
        let _ = channel.send(&out);
    }
    let _ = nix::sys::socket::shutdown(
        std::os::fd::AsRawFd::as_raw_fd(channel),
        nix::sys::socket::Shutdown::Read,
    );
    let mut unread = [0u8; 64];
    for _ in 0..1024 {
        match channel.recv(&mut unread) {
            // Read and dropped, cut to the buffer: for a message the receive takes whole.
            Ok(_)
            | Err(fdbroker_shared::RecvError::Protocol(
                fdbroker_shared::ProtocolError::Truncated
                | fdbroker_shared::ProtocolError::UnexpectedDescriptors,
            )) => {}
            _ => break,
        }
    }
}

fn encode_welcome(out: &mut Vec<u8>, w: Welcome) -> Result<(), ProtocolError> {
    frame::encode(Kind::Welcome, &w, out)
}

/// The proof a reply's send needs, given how its audit lines' flush went. When they
/// were lost and `audit_failure = "refuse"`, the answer to a request is replaced (in
/// `s`) by a refusal, closing any descriptor opened for it: nothing is granted, and no
/// metadata or listing told, that the audit trail does not record. (A reply to the
/// greeting, which passes nothing, goes out.) `None`: no reply can be made (the
/// connection closes).
fn audited(
    shared: &Shared,
    flushed: Result<Written, Unwritten>,
    id: Option<u64>,
    s: &mut Scratch,
) -> Option<Written> {
    let lost = match flushed {
        Ok(written) => return Some(written),
        Err(lost) => lost,
    };
    if (id.is_none() && s.fds.is_empty())
        || shared.current().policy.broker().audit_failure == fdbroker_policy::AuditFailure::Serve
    {
        return Some(lost.serve_anyway());
    }
    s.fds.clear();
    let (written, why) = lost.refused();
    encode_reply(&mut s.outbuf, id?, ReplyBody::Refused(why), &mut s.fds).ok()?;
    Some(written)
}

fn encode_reply(
    out: &mut Vec<u8>,
    id: u64,
    body: ReplyBody,
    fds: &mut Vec<OwnedFd>,
) -> Result<(), ProtocolError> {
    match frame::encode(Kind::Reply, &Reply { id, body }, out) {
        // A batch whose error texts overflow the cap still gets an answer, without
        // the descriptors it can no longer account for.
        Err(ProtocolError::TooLarge { .. }) => {
            fds.clear();
            frame::encode(
                Kind::Reply,
                &Reply {
                    id,
                    body: ReplyBody::Refused(WireError::new(
                        Errno::E2BIG as i32,
                        "the reply would exceed the message cap; send a smaller batch",
                    )),
                },
                out,
            )
        }
        r => r,
    }
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN)
    )
}

/// Connections are shared between the slab and the thread servicing them.
pub type ConnRef = Arc<Conn>;
