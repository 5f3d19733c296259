//! The worker's side of the socket: connect, greet, ask for files, receive descriptors.
//!
//! One [`Client`] may be shared by many threads. Each request carries a fresh id; a
//! thread sends its request (one atomic `SOCK_SEQPACKET` message) and then takes the
//! receive lock. Whoever holds it reads replies off the socket, keeping its own and
//! parking the others' by id, so replies can never be handed to the wrong caller.

use crate::error::{BrokerError, broken};
use fdbroker_shared::Channel;
use fdbroker_shared::frame::{self, Kind, MAX_FDS_PER_REPLY, MAX_MESSAGE};
use fdbroker_shared::wire::{
    Accepted, Access, FileMeta, Hello, Op, OpenSpec, Outcome, Reply, ReplyBody, Request, Welcome,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Where `fdbroker serve` listens when neither the policy nor the caller says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/fdbroker/fdbroker.sock";
/// Inherited connection, as set by `fdbroker run`.
pub const ENV_FD: &str = "FDBROKER_FD";
/// Socket path override.
pub const ENV_SOCKET: &str = "FDBROKER_SOCKET";

/// A file the broker opened for us, and what the broker saw when it `fstat`ed it.
#[derive(Debug)]
pub struct Opened {
    pub file: File,
    pub meta: FileMeta,
}

/// A connection to the broker. `Send + Sync`: share it behind an `Arc`.
#[derive(Debug)]
pub struct Client {
    channel: Channel,
    accepted: Accepted,
    next_id: AtomicU64,
    receiver: Mutex<Receiver>,
}

#[derive(Debug)]
struct Receiver {
    buf: Vec<u8>,
    /// Control buffer for the descriptors, reused for every reply.
    control: Vec<u8>,
    /// Replies that arrived for other threads' requests.
    parked: HashMap<u64, Delivery>,
    /// Ids sent and not yet answered; a reply for any other id is a violation.
    waiting: HashMap<u64, ()>,
    /// Set once the connection failed; every later call reports it.
    broken: Option<String>,
}

#[derive(Debug)]
struct Delivery {
    body: ReplyBody,
    fds: Vec<OwnedFd>,
}

static ENV_FD_TAKEN: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Each thread's request buffer (requests are small; batches grow it once).
    static SEND_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(256));
}

impl Client {
    /// Connect to the broker listening at `path`.
    pub fn connect(path: impl AsRef<Path>) -> io::Result<Client> {
        let path = path.as_ref();
        let channel = Channel::connect(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot connect to the broker at {}: {e}", path.display()),
            )
        })?;
        Client::over(channel)
    }

    /// Connect the way a worker is usually set up: the descriptor in `FDBROKER_FD`
    /// (inherited from `fdbroker run`), else the socket in `FDBROKER_SOCKET`, else
    /// [`DEFAULT_SOCKET`].
    ///
    /// The inherited descriptor is adopted at most once per process (a second call
    /// would otherwise own the same descriptor twice) and is made close-on-exec so it
    /// does not leak into the worker's own children.
    pub fn from_env() -> io::Result<Client> {
        if let Some(raw) = std::env::var_os(ENV_FD) {
            let fd = adopt_env_fd(&raw)?;
            return Client::over(Channel::from_fd(fd)?);
        }
        match std::env::var_os(ENV_SOCKET) {
            Some(p) if !p.is_empty() => Client::connect(PathBuf::from(p)),
            _ => Client::connect(DEFAULT_SOCKET),
        }
    }

    /// Greet the broker over an already connected channel.
    pub fn over(channel: Channel) -> io::Result<Client> {
        let mut buf = Vec::with_capacity(256);
        frame::encode(
            Kind::Hello,
            &Hello {
                version: frame::PROTOCOL_VERSION,
                agent: concat!("fdbroker-worker ", env!("CARGO_PKG_VERSION")).to_owned(),
            },
            &mut buf,
        )?;
        // A broker that refuses this peer answers at accept time and closes, possibly
        // before the hello goes out: then the send fails with EPIPE but the refusal,
        // which says why, is still queued for us to read.
        let sent = channel.send(&buf).map_err(|e| context(e, "sending hello"));
        buf.resize(MAX_MESSAGE, 0);
        let mut received = channel.recv(&mut buf);
        if matches!(&received, Err(fdbroker_shared::RecvError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset)
        {
            // The broker closed with our hello unread, so the kernel reports
            // ECONNRESET once (and clears it) before handing over queued messages.
            received = channel.recv(&mut buf);
        }
        let n = match received {
            Ok(n) => n,
            Err(e) => {
                sent?;
                return Err(context(e.into(), "waiting for the broker's welcome"));
            }
        };
        let welcome: Welcome = frame::decode(Kind::Welcome, &buf[..n]).map_err(|e| {
            let e: io::Error = e.into();
            context(e, "reading the broker's welcome")
        })?;
        let accepted = match welcome {
            Welcome::Accepted(a) => a,
            Welcome::Refused(w) => {
                // Keep the BrokerError inside (callers read its errno, e.g. EAGAIN for
                // a connection limit); only the reason gets the context.
                let mut e = BrokerError::from_wire(w);
                e.reason = format!("the broker refused this connection: {}", e.reason);
                return Err(e.into());
            }
        };
        Ok(Client {
            channel,
            accepted,
            next_id: AtomicU64::new(1),
            receiver: Mutex::new(Receiver {
                buf,
                control: Vec::new(),
                parked: HashMap::new(),
                waiting: HashMap::new(),
                broken: None,
            }),
        })
    }

    /// The policy client the broker matched this connection to.
    pub fn client_name(&self) -> &str {
        &self.accepted.client
    }

    /// Most paths the broker takes in one `OpenMany`; [`Client::open_many`] splits
    /// larger batches itself.
    pub fn max_batch(&self) -> usize {
        (self.accepted.max_batch as usize).clamp(1, MAX_FDS_PER_REPLY)
    }

    /// Bound how long one reply may take; `None` (the default) waits for ever.
    /// A timed-out connection is unusable afterwards: its late reply would be ambiguous.
    pub fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.channel.set_read_timeout(timeout)
    }

    /// Open `path` for reading.
    pub fn open(&self, path: impl AsRef<Path>) -> io::Result<File> {
        self.open_with(path, Access::Read)
    }

    /// Open `path` with the given access.
    pub fn open_with(&self, path: impl AsRef<Path>, access: Access) -> io::Result<File> {
        self.open_detailed(path, access, 0).map(|o| o.file)
    }

    /// Open `path` with access and extra flags (`wire::OPEN_TRUNC`, `wire::OPEN_APPEND`),
    /// returning the broker's metadata too.
    pub fn open_detailed(
        &self,
        path: impl AsRef<Path>,
        access: Access,
        flags: u32,
    ) -> io::Result<Opened> {
        let path = path.as_ref();
        let op = Op::Open(OpenSpec {
            path: path.as_os_str().as_bytes().to_vec(),
            access,
            flags,
        });
        let Delivery { body, fds } = self.call(op)?;
        let mut fds = fds.into_iter();
        match body {
            ReplyBody::Open(outcome) => opened(outcome, &mut fds),
            ReplyBody::Refused(w) => Err(BrokerError::from_wire(w).into()),
            ReplyBody::OpenMany(_) => Err(self.fail("reply of the wrong type for an open")),
        }
    }

    /// Open every path for reading; one result per path, in order. The outer error
    /// means the connection failed; the inner ones are per-path refusals.
    pub fn open_many<P: AsRef<Path>>(&self, paths: &[P]) -> io::Result<Vec<io::Result<File>>> {
        Ok(self
            .open_many_with(paths, Access::Read)?
            .into_iter()
            .map(|r| r.map(|o| o.file))
            .collect())
    }

    /// Open every path with one access, in as few round trips as the broker's batch
    /// size and the message cap allow.
    pub fn open_many_with<P: AsRef<Path>>(
        &self,
        paths: &[P],
        access: Access,
    ) -> io::Result<Vec<io::Result<Opened>>> {
        self.open_many_detailed(paths, access, 0)
    }

    /// [`Client::open_many_with`] with extra open flags for every path
    /// (`wire::OPEN_TRUNC`, `wire::OPEN_APPEND`), as the C library's `fdb_open_many`
    /// takes them.
    pub fn open_many_detailed<P: AsRef<Path>>(
        &self,
        paths: &[P],
        access: Access,
        flags: u32,
    ) -> io::Result<Vec<io::Result<Opened>>> {
        let mut out = Vec::with_capacity(paths.len());
        let mut rest = paths;
        while !rest.is_empty() {
            let take = batch_len(rest, self.max_batch());
            let (chunk, tail) = rest.split_at(take);
            rest = tail;
            let op = Op::OpenMany {
                paths: chunk
                    .iter()
                    .map(|p| p.as_ref().as_os_str().as_bytes().to_vec())
                    .collect(),
                access,
                flags,
            };
            let Delivery { body, fds } = self.call(op)?;
            let mut fds = fds.into_iter();
            match body {
                ReplyBody::OpenMany(outcomes) if outcomes.len() == chunk.len() => {
                    out.extend(outcomes.into_iter().map(|o| opened(o, &mut fds)));
                }
                ReplyBody::Refused(w) => {
                    let e = BrokerError::from_wire(w);
                    out.extend(chunk.iter().map(|_| Err(e.clone().into())));
                }
                _ => return Err(self.fail("batch reply does not match the request")),
            }
        }
        Ok(out)
    }

    /// Send one request and wait for its reply.
    fn call(&self, op: Op) -> io::Result<Delivery> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Encoded into this thread's buffer, reused from call to call: requests are
        // sent from the caller's thread, so threads never share one.
        let sent = SEND_BUF.with(|cell| -> io::Result<io::Result<()>> {
            let mut fresh = Vec::new();
            let mut reused = cell.try_borrow_mut();
            let buf = match reused.as_deref_mut() {
                Ok(buf) => buf,
                Err(_) => &mut fresh,
            };
            frame::encode(Kind::Request, &Request { id, op }, buf)?;
            {
                let mut rx = self.lock();
                if let Some(why) = &rx.broken {
                    return Err(broken(why));
                }
                rx.waiting.insert(id, ());
            }
            Ok(self.channel.send(buf))
        })?;
        if let Err(e) = sent {
            let mut rx = self.lock();
            rx.waiting.remove(&id);
            let e = if is_disconnect(&e) {
                broker_gone()
            } else {
                context(e, "sending a request")
            };
            rx.broken.get_or_insert_with(|| e.to_string());
            return Err(e);
        }
        self.wait_for(id)
    }

    fn wait_for(&self, id: u64) -> io::Result<Delivery> {
        let mut rx = self.lock();
        loop {
            if let Some(d) = rx.parked.remove(&id) {
                return Ok(d);
            }
            if let Some(why) = &rx.broken {
                return Err(broken(why));
            }
            match self.receive_one(&mut rx) {
                Ok((reply_id, d)) if reply_id == id => return Ok(d),
                Ok((reply_id, d)) => {
                    rx.parked.insert(reply_id, d);
                }
                Err(e) => {
                    rx.broken = Some(e.to_string());
                    let _ = self.channel.shutdown();
                    return Err(e);
                }
            }
        }
    }

    /// Read one reply and check it against what we are waiting for. Descriptors are
    /// owned from the moment they arrive, so every error path closes them.
    fn receive_one(&self, rx: &mut Receiver) -> io::Result<(u64, Delivery)> {
        let Receiver {
            buf,
            control,
            waiting,
            ..
        } = rx;
        let (n, fds) = self
            .channel
            .recv_with_fds_reusing(buf, control, MAX_FDS_PER_REPLY)
            .map_err(|e| match e {
                fdbroker_shared::RecvError::Protocol(fdbroker_shared::ProtocolError::Closed) => {
                    broker_gone()
                }
                fdbroker_shared::RecvError::Io(e) if is_disconnect(&e) => broker_gone(),
                fdbroker_shared::RecvError::Io(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    io::Error::new(io::ErrorKind::TimedOut, "timed out waiting for the broker")
                }
                e => e.into(),
            })?;
        let reply: Reply = frame::decode(Kind::Reply, &buf[..n])?;
        if waiting.remove(&reply.id).is_none() {
            return Err(fdbroker_shared::ProtocolError::UnknownId(reply.id).into());
        }
        let expected = reply.body.descriptor_count();
        if expected != fds.len() {
            return Err(fdbroker_shared::ProtocolError::DescriptorCount {
                expected,
                got: fds.len(),
            }
            .into());
        }
        Ok((
            reply.id,
            Delivery {
                body: reply.body,
                fds,
            },
        ))
    }

    fn fail(&self, why: &str) -> io::Error {
        let mut rx = self.lock();
        rx.broken.get_or_insert_with(|| why.to_owned());
        let _ = self.channel.shutdown();
        broken(why)
    }

    fn lock(&self) -> MutexGuard<'_, Receiver> {
        // A thread that panicked while holding the lock left the state consistent (every
        // mutation is a single insert/remove), so carry on.
        self.receiver.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn opened(outcome: Outcome, fds: &mut impl Iterator<Item = OwnedFd>) -> io::Result<Opened> {
    match outcome {
        Ok(meta) => match fds.next() {
            Some(fd) => Ok(Opened {
                file: File::from(fd),
                meta,
            }),
            None => Err(broken("reply lacks a descriptor it promised")),
        },
        Err(w) => Err(BrokerError::from_wire(w).into()),
    }
}

/// How many of `paths` fit in one `OpenMany` under the broker's batch size and the
/// message cap. Always at least one, so an oversized path gets its own error reply.
fn batch_len<P: AsRef<Path>>(paths: &[P], max_batch: usize) -> usize {
    let mut size = frame::OPEN_MANY_OVERHEAD;
    let mut n = 0;
    for p in paths.iter().take(max_batch) {
        size += frame::path_cost(p.as_ref().as_os_str().as_bytes());
        if n > 0 && size > MAX_MESSAGE {
            break;
        }
        n += 1;
    }
    n.max(1)
}

fn adopt_env_fd(raw: &OsStr) -> io::Result<OwnedFd> {
    let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
    let text = raw
        .to_str()
        .ok_or_else(|| invalid(format!("{ENV_FD} is not a number")))?;
    let n: RawFd = text
        .trim()
        .parse()
        .map_err(|_| invalid(format!("{ENV_FD}={text:?} is not a descriptor number")))?;
    if n < 0 {
        return Err(invalid(format!("{ENV_FD}={n} is negative")));
    }
    if ENV_FD_TAKEN.swap(true, Ordering::SeqCst) {
        return Err(invalid(format!(
            "{ENV_FD}={n} was already adopted by another Client in this process"
        )));
    }
    // Confirm the number names an open descriptor before anything owns it.
    let flags = nix::fcntl::fcntl(borrow_env_fd(n), nix::fcntl::FcntlArg::F_GETFD)
        .map_err(|e| invalid(format!("{ENV_FD}={n} is not an open descriptor: {e}")))?;
    let _ = flags;
    // SAFETY: `n` is open (checked above), the process environment hands it to this
    // library, and ENV_FD_TAKEN guarantees this is the only owner we ever create.
    let fd = unsafe { OwnedFd::from_raw_fd(n) };
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )?;
    debug_assert_eq!(fd.as_raw_fd(), n);
    Ok(fd)
}

fn borrow_env_fd(n: RawFd) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: used only for one fcntl(F_GETFD) probe, which tolerates a closed number
    // (it returns EBADF) and does not outlive this call.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(n) }
}

/// However the loss shows (EOF, `EPIPE` on send, `ECONNRESET` when our request was
/// unread), a vanished broker is one error kind for callers: `ConnectionAborted`.
#[cold]
fn broker_gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the broker closed the connection",
    )
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::NotConnected
    )
}

fn context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn batches_respect_both_caps() {
        let short: Vec<String> = (0..300).map(|i| format!("/d/{i}")).collect();
        assert_eq!(batch_len(&short, 128), 128);
        assert_eq!(batch_len(&short[..5], 128), 5);
        let long: Vec<String> = (0..40).map(|_| format!("/{}", "x".repeat(4000))).collect();
        let n = batch_len(&long, 128);
        assert!((1..40).contains(&n));
        assert!(
            frame::OPEN_MANY_OVERHEAD + n * frame::path_cost(long[0].as_bytes()) <= MAX_MESSAGE
        );
    }

    #[test]
    fn client_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Client>();
    }
}
