//! An async client for programs on tokio (the `tokio` feature).
//!
//! The same protocol, framing and reply handling as the blocking [`crate::Client`]
//! (both encode with `fdbroker_shared::frame` and turn replies into results with the
//! same functions); only the waiting differs: the socket is non-blocking and registered
//! with tokio's reactor, and many tasks may have requests in flight on one connection.
//! Whichever task holds the read turn takes replies off the socket, keeping its own and
//! parking the others' by id, as the blocking client's threads do. A task dropped while
//! waiting (a `timeout`, a `select!`) leaves its reply to be dropped on arrival, with its
//! descriptors.
//!
//! It does not reconnect: a lost connection is `ErrorKind::ConnectionAborted`.
//!
//! ```
//! # include!("../doctest_broker.rs");
//! # fn main() -> std::io::Result<()> {
//! # let doc = DocBroker::start();
//! # let (socket, spool) = (doc.socket(), doc.spool());
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! use fdbroker_worker::tokio::Client;
//! use tokio::io::AsyncReadExt;
//!
//! let broker = Client::connect(&socket).await?;
//! let file = broker.open(spool.join("sample.bin")).await?;
//! let mut text = String::new();
//! tokio::fs::File::from_std(file).read_to_string(&mut text).await?;
//! assert_eq!(text, "MZ sample\n");
//! let meta = broker.metadata(spool.join("sub")).await?;
//! assert!(meta.is_dir());
//! let names = broker.read_dir(&spool).await?.count();
//! assert_eq!(names, 3);
//! # Ok::<(), std::io::Error>(()) })
//! # }
//! ```

use crate::client::{Delivery, RequestRef, batch_len, connected, open_many_op, opened, stat_reply};
use crate::error::{BrokerError, broken};
use crate::fs::{Metadata, ReadDir};
use fdbroker_shared::frame::{self, Kind, MAX_FDS_PER_REPLY, MAX_MESSAGE};
use fdbroker_shared::wire::{
    Accepted, Access, Hello, Op, OpenSpec, Reply, ReplyBody, StatSpec, Welcome,
};
use fdbroker_shared::{Channel, ProtocolError, RecvError};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use tokio::io::unix::AsyncFd;

/// A connection to the broker for async code. `Send + Sync`: share it behind an `Arc`.
///
/// ```
/// # include!("../doctest_broker.rs");
/// # fn main() -> std::io::Result<()> {
/// # let doc = DocBroker::start();
/// # let (socket, spool) = (doc.socket(), doc.spool());
/// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
/// let broker = fdbroker_worker::tokio::Client::connect(&socket).await?;
/// let a = broker.open(spool.join("a.bin"));
/// let b = broker.open(spool.join("sub/b.bin"));
/// let (a, b) = tokio::join!(a, b); // both in flight at once
/// assert_eq!(a?.metadata()?.len() + b?.metadata()?.len(), 5);
/// let many = broker.open_many(&[spool.join("a.bin"), spool.join("none")]).await?;
/// assert!(many[0].is_ok() && many[1].is_err());
/// # Ok::<(), std::io::Error>(()) })
/// # }
/// ```
#[derive(Debug)]
pub struct Client {
    socket: AsyncFd<Channel>,
    accepted: Accepted,
    next_id: AtomicU64,
    /// The read turn: held by the task taking replies off the socket, with the buffers.
    reader: tokio::sync::Mutex<Buffers>,
    state: Mutex<State>,
}

struct Buffers {
    buf: Vec<u8>,
    control: Vec<u8>,
}

impl std::fmt::Debug for Buffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffers").finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct State {
    parked: HashMap<u64, Delivery>,
    /// Ids sent and not yet answered, and whether their task still waits.
    waiting: HashMap<u64, bool>,
    broken: Option<String>,
}

impl Client {
    /// Connect to the broker listening at `path` and greet it.
    ///
    /// ```no_run
    /// # fn main() -> std::io::Result<()> {
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
    /// let broker = fdbroker_worker::tokio::Client::connect("/run/fdbroker/fdbroker.sock").await?;
    /// println!("served as {}", broker.client_name());
    /// # Ok::<(), std::io::Error>(()) })
    /// # }
    /// ```
    pub async fn connect(path: impl AsRef<Path>) -> io::Result<Client> {
        let path: PathBuf = path.as_ref().to_owned();
        // connect(2) on a Unix socket can wait for room in the listener's backlog.
        let channel = tokio::task::spawn_blocking(move || {
            Channel::connect(&path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot connect to the broker at {}: {e}", path.display()),
                )
            })
        })
        .await
        .map_err(io::Error::other)??;
        Client::over(channel).await
    }

    /// Greet the broker over an already connected channel.
    ///
    /// ```no_run
    /// # fn main() -> std::io::Result<()> {
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
    /// let channel = fdbroker_worker::Channel::connect("/run/fdbroker/fdbroker.sock".as_ref())?;
    /// let broker = fdbroker_worker::tokio::Client::over(channel).await?;
    /// # Ok::<(), std::io::Error>(()) })
    /// # }
    /// ```
    pub async fn over(channel: Channel) -> io::Result<Client> {
        channel.set_nonblocking(true)?;
        let socket = register(channel)?;
        let mut buf = Vec::with_capacity(256);
        frame::encode(
            Kind::Hello,
            &Hello {
                version: frame::PROTOCOL_VERSION,
                agent: concat!("fdbroker-worker ", env!("CARGO_PKG_VERSION"), " tokio").to_owned(),
            },
            &mut buf,
        )?;
        send(&socket, &buf).await?;
        buf.resize(MAX_MESSAGE, 0);
        let n = loop {
            let mut ready = socket.readable().await?;
            match ready.try_io(|s| s.get_ref().recv(&mut buf).map_err(io::Error::from)) {
                Ok(r) => break r,
                Err(_would_block) => continue,
            }
        }
        .map_err(|e| match e.kind() {
            io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset => io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the broker closed the connection before welcoming it",
            ),
            _ => e,
        })?;
        let accepted = match frame::decode::<Welcome>(Kind::Welcome, &buf[..n])? {
            Welcome::Accepted(a) => a,
            Welcome::Refused(w) => {
                let mut e = BrokerError::from_wire(w);
                e.reason = format!("the broker refused this connection: {}", e.reason);
                return Err(e.into());
            }
        };
        Ok(Client {
            socket,
            accepted,
            next_id: AtomicU64::new(1),
            reader: tokio::sync::Mutex::new(Buffers {
                buf,
                control: Vec::new(),
            }),
            state: Mutex::new(State::default()),
        })
    }

    /// The policy client the broker matched this connection to.
    ///
    /// ```no_run
    /// # fn main() -> std::io::Result<()> {
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
    /// let broker = fdbroker_worker::tokio::Client::connect("/run/fdbroker/fdbroker.sock").await?;
    /// assert!(!broker.client_name().is_empty());
    /// # Ok::<(), std::io::Error>(()) })
    /// # }
    /// ```
    pub fn client_name(&self) -> &str {
        &self.accepted.client
    }

    /// Most paths the broker takes in one batch; [`Client::open_many`] splits larger
    /// ones itself.
    ///
    /// ```no_run
    /// # fn main() -> std::io::Result<()> {
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
    /// let broker = fdbroker_worker::tokio::Client::connect("/run/fdbroker/fdbroker.sock").await?;
    /// assert!(broker.max_batch() >= 1);
    /// # Ok::<(), std::io::Error>(()) })
    /// # }
    /// ```
    pub fn max_batch(&self) -> usize {
        (self.accepted.max_batch as usize).clamp(1, MAX_FDS_PER_REPLY)
    }

    /// Open `path` for reading.
    ///
    /// ```no_run
    /// # fn main() -> std::io::Result<()> {
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
    /// use tokio::io::AsyncReadExt;
    /// let broker = fdbroker_worker::tokio::Client::connect("/run/fdbroker/fdbroker.sock").await?;
    /// let mut file = tokio::fs::File::from_std(broker.open("/srv/in/a").await?);
    /// let mut bytes = Vec::new();
    /// file.read_to_end(&mut bytes).await?;
    /// # Ok::<(), std::io::Error>(()) })
    /// # }
    /// ```
    pub async fn open(&self, path: impl AsRef<Path>) -> io::Result<File> {
        self.open_with(path, Access::Read).await
    }

    /// Open `path` with the given access.
    ///
    /// ```no_run
    /// # fn main() -> std::io::Result<()> {
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
    /// use fdbroker_worker::Access;
    /// let broker = fdbroker_worker::tokio::Client::connect("/run/fdbroker/fdbroker.sock").await?;
    /// let report = broker.open_with("/srv/out/report.txt", Access::Create).await?;
    /// # Ok::<(), std::io::Error>(()) })
    /// # }
    /// ```
    pub async fn open_with(&self, path: impl AsRef<Path>, access: Access) -> io::Result<File> {
        let op = Op::Open(OpenSpec {
            path: path.as_ref().as_os_str().as_bytes().to_vec(),
            access,
            flags: 0,
        });
        let Delivery { body, fds } = self.call(&op).await?;
        let mut fds = fds.into_iter();
        match body {
            ReplyBody::Open(outcome) => opened(outcome, &mut fds).map(|o| o.file),
            ReplyBody::Refused(w) => Err(BrokerError::from_wire(w).into()),
            _ => Err(self.fail("reply of the wrong type for an open")),
        }
    }

    /// Open every path for reading; one result per path, in order. The outer error means
    /// the connection failed.
    ///
    /// ```no_run
    /// # fn main() -> std::io::Result<()> {
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
    /// let broker = fdbroker_worker::tokio::Client::connect("/run/fdbroker/fdbroker.sock").await?;
    /// let files = broker.open_many(&["/srv/in/a", "/srv/in/b"]).await?;
    /// # Ok::<(), std::io::Error>(()) })
    /// # }
    /// ```
    pub async fn open_many<P: AsRef<Path>>(
        &self,
        paths: &[P],
    ) -> io::Result<Vec<io::Result<File>>> {
        let mut out = Vec::with_capacity(paths.len());
        let mut rest = paths;
        while !rest.is_empty() {
            let take = batch_len(rest, self.max_batch());
            let (chunk, tail) = rest.split_at(take);
            rest = tail;
            let Delivery { body, fds } = self.call(&open_many_op(chunk, Access::Read, 0)).await?;
            let mut fds = fds.into_iter();
            match body {
                ReplyBody::OpenMany(outcomes) if outcomes.len() == chunk.len() => out.extend(
                    outcomes
                        .into_iter()
                        .map(|o| opened(o, &mut fds).map(|o| o.file)),
                ),
                ReplyBody::Refused(w) => {
                    let e = BrokerError::from_wire(w);
                    out.extend(chunk.iter().map(|_| Err(e.clone().into())));
                }
                _ => return Err(self.fail("batch reply does not match the request")),
            }
        }
        Ok(out)
    }

    /// The metadata of `path` under the policy, as [`crate::Client::metadata`].
    ///
    /// ```no_run
    /// # fn main() -> std::io::Result<()> {
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
    /// let broker = fdbroker_worker::tokio::Client::connect("/run/fdbroker/fdbroker.sock").await?;
    /// let size = broker.metadata("/srv/in/a").await?.len();
    /// # Ok::<(), std::io::Error>(()) })
    /// # }
    /// ```
    pub async fn metadata(&self, path: impl AsRef<Path>) -> io::Result<Metadata> {
        let op = Op::Stat(StatSpec {
            path: path.as_ref().as_os_str().as_bytes().to_vec(),
        });
        let Delivery { body, .. } = self.call(&op).await?;
        stat_reply(body).unwrap_or_else(|| Err(self.fail("reply of the wrong type for a stat")))
    }

    /// The entries of the directory `path`, as [`crate::Client::read_dir`]: listed by
    /// the broker, every page asked for asynchronously.
    ///
    /// ```no_run
    /// # fn main() -> std::io::Result<()> {
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
    /// let broker = fdbroker_worker::tokio::Client::connect("/run/fdbroker/fdbroker.sock").await?;
    /// for entry in broker.read_dir("/srv/in").await? {
    ///     println!("{:?}", entry?.file_name());
    /// }
    /// # Ok::<(), std::io::Error>(()) })
    /// # }
    /// ```
    pub async fn read_dir(&self, path: impl AsRef<Path>) -> io::Result<ReadDir> {
        let mut listing = crate::client::Listed::new(path.as_ref());
        while let Some(op) = listing.next_op() {
            let Delivery { body, .. } = self.call(&op).await?;
            listing.take(body).map_err(|e| {
                e.unwrap_or_else(|| self.fail("reply of the wrong type for a listing"))
            })?;
        }
        Ok(listing.finish())
    }

    async fn call(&self, op: &Op) -> io::Result<Delivery> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut buf = Vec::with_capacity(128);
        frame::encode(Kind::Request, &RequestRef { id, op }, &mut buf)?;
        {
            let mut st = self.lock();
            if let Some(why) = &st.broken {
                return Err(broken(why));
            }
            st.waiting.insert(id, true);
        }
        let mut pending = Pending {
            client: self,
            id: Some(id),
            sent: false,
        };
        if let Err(e) = send(&self.socket, &buf).await {
            self.lock().waiting.remove(&id);
            pending.id = None;
            return Err(self.break_with(e));
        }
        pending.sent = true;
        loop {
            if let Some(d) = self.take_parked(id)? {
                pending.id = None;
                return Ok(d);
            }
            let mut turn = self.reader.lock().await;
            // Another task may have parked ours while this one waited for the turn.
            if let Some(d) = self.take_parked(id)? {
                pending.id = None;
                return Ok(d);
            }
            match self.receive_one(&mut turn).await {
                Ok((reply_id, d)) if reply_id == id => {
                    pending.id = None;
                    return Ok(d);
                }
                Ok((reply_id, d)) => {
                    self.lock().parked.insert(reply_id, d);
                }
                Err(e) => {
                    self.lock().waiting.remove(&id);
                    pending.id = None;
                    return Err(self.break_with(e));
                }
            }
        }
    }

    fn take_parked(&self, id: u64) -> io::Result<Option<Delivery>> {
        let mut st = self.lock();
        if let Some(d) = st.parked.remove(&id) {
            return Ok(Some(d));
        }
        match &st.broken {
            Some(why) => {
                let e = broken(why);
                st.waiting.remove(&id);
                Err(e)
            }
            None => Ok(None),
        }
    }

    /// Read replies until one for a task still waiting arrives (dropping those whose
    /// task gave up), and check it as the blocking client does.
    async fn receive_one(&self, b: &mut Buffers) -> io::Result<(u64, Delivery)> {
        loop {
            let (n, fds) = loop {
                let mut ready = self.socket.readable().await?;
                let got = ready.try_io(|s| {
                    s.get_ref()
                        .recv_with_fds_reusing(&mut b.buf, &mut b.control, MAX_FDS_PER_REPLY)
                        .map_err(|e| match e {
                            RecvError::Io(e) => e,
                            RecvError::Protocol(ProtocolError::Closed) => gone(),
                            RecvError::Protocol(p) => p.into(),
                        })
                });
                match got {
                    Ok(r) => break r?,
                    Err(_would_block) => continue,
                }
            };
            let reply: Reply = frame::decode(Kind::Reply, &b.buf[..n])?;
            let waiting = self.lock().waiting.remove(&reply.id);
            let expected = reply.body.descriptor_count();
            if waiting.is_some() && expected != fds.len() {
                return Err(ProtocolError::DescriptorCount {
                    expected,
                    got: fds.len(),
                }
                .into());
            }
            match waiting {
                None => return Err(ProtocolError::UnknownId(reply.id).into()),
                Some(false) => continue,
                Some(true) => {
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

    fn break_with(&self, e: io::Error) -> io::Error {
        let e = if matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::NotConnected
        ) {
            gone()
        } else {
            e
        };
        self.lock().broken.get_or_insert_with(|| e.to_string());
        let _ = self.socket.get_ref().shutdown();
        e
    }

    fn fail(&self, why: &str) -> io::Error {
        self.lock().broken.get_or_insert_with(|| why.to_owned());
        let _ = self.socket.get_ref().shutdown();
        broken(why)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new connection with this one's identity, made by the broker ([`Op::Connect`]),
    /// as a blocking [`crate::Client`] for a thread or a child process.
    ///
    /// ```no_run
    /// # fn main() -> std::io::Result<()> {
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
    /// let broker = fdbroker_worker::tokio::Client::connect("/run/fdbroker/fdbroker.sock").await?;
    /// let blocking = broker.new_connection().await?;
    /// std::thread::spawn(move || blocking.open("/srv/in/a"));
    /// # Ok::<(), std::io::Error>(()) })
    /// # }
    /// ```
    pub async fn new_connection(&self) -> io::Result<crate::Client> {
        let Delivery { body, fds } = self.call(&Op::Connect).await?;
        let channel = connected(body, fds, || {
            self.fail("reply of the wrong type for a connect")
        })?;
        tokio::task::spawn_blocking(move || crate::Client::over(channel))
            .await
            .map_err(io::Error::other)?
    }
}

/// The connection's socket (for `poll`, or `fstat`).
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
/// use std::os::fd::AsFd;
/// let broker = fdbroker_worker::tokio::Client::connect("/run/fdbroker/fdbroker.sock").await?;
/// let _fd = broker.as_fd();
/// # Ok::<(), std::io::Error>(()) })
/// # }
/// ```
impl AsFd for Client {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.get_ref().as_fd()
    }
}

/// A request whose task may be dropped while it waits: then its reply is dropped on
/// arrival instead of being parked for ever.
struct Pending<'c> {
    client: &'c Client,
    id: Option<u64>,
    /// Whether the request went out: if not, no reply will ever come for it.
    sent: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            let mut st = self.client.lock();
            if st.parked.remove(&id).is_none() && st.waiting.contains_key(&id) && self.sent {
                st.waiting.insert(id, false);
            } else {
                st.waiting.remove(&id);
            }
        }
    }
}

fn register(channel: Channel) -> io::Result<AsyncFd<Channel>> {
    crate::sys::register(channel)
}

async fn send(socket: &AsyncFd<Channel>, bytes: &[u8]) -> io::Result<()> {
    loop {
        let mut ready = socket.writable().await?;
        match ready.try_io(|s| s.get_ref().send(bytes)) {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

#[cold]
fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the broker closed the connection",
    )
}
