//! The worker's side of the socket: connect, greet, ask for files, receive descriptors.
//!
//! One [`Client`] may be shared by many threads. Each request carries a fresh id; a
//! thread sends its request (one atomic `SOCK_SEQPACKET` message) and then takes the
//! receive lock. Whoever holds it reads replies off the socket, keeping its own and
//! parking the others' by id, so replies can never be handed to the wrong caller. A
//! request can also be sent now and its reply collected later ([`Client::open_iter`]
//! keeps the next batch in flight that way).
//!
//! A client made from a socket path ([`Client::connect`]) reconnects once when it finds
//! the broker gone (restarted) and retries the request, then carries on; the socket's
//! descriptor number stays the same throughout ([`AsFd`]). A client over an inherited
//! connection cannot reconnect: its broker is the process that started the worker.
//!
//! ```no_run
//! use fdbroker_worker::client::Client;
//! let broker = Client::from_env()?; // FDBROKER_FD, else $FDBROKER_SOCKET, else the default
//! let shared = std::sync::Arc::new(broker);
//! let worker = std::sync::Arc::clone(&shared);
//! std::thread::spawn(move || worker.open("/var/spool/quarantine/a.bin"));
//! # Ok::<(), std::io::Error>(())
//! ```

use crate::error::{BrokerError, broken};
use crate::fs::{Metadata, ReadDir, Walk};
use crate::iter::OpenIter;
use fdbroker_shared::Channel;
use fdbroker_shared::frame::{self, Kind, MAX_FDS_PER_REPLY, MAX_MESSAGE};
use fdbroker_shared::wire::{
    Accepted, Access, FileMeta, Hello, Op, OpenSpec, Outcome, Reply, ReplyBody, Request, StatSpec,
    Welcome,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant};

/// Where `fdbroker serve` listens when neither the policy nor the caller says otherwise.
///
/// ```
/// assert_eq!(fdbroker_worker::DEFAULT_SOCKET, "/run/fdbroker/fdbroker.sock");
/// ```
pub const DEFAULT_SOCKET: &str = "/run/fdbroker/fdbroker.sock";
/// The environment variable holding an inherited connection's descriptor number, as
/// `fdbroker run` sets it for the worker it starts.
///
/// ```
/// assert_eq!(fdbroker_worker::ENV_FD, "FDBROKER_FD");
/// ```
pub const ENV_FD: &str = "FDBROKER_FD";
/// The environment variable naming the broker's socket when no descriptor is inherited.
///
/// ```
/// assert_eq!(fdbroker_worker::ENV_SOCKET, "FDBROKER_SOCKET");
/// ```
pub const ENV_SOCKET: &str = "FDBROKER_SOCKET";
/// The environment variable bounding, in seconds (`5`, `0.5`), how long
/// [`Client::from_env`] waits for the broker: to connect, and then for each reply.
///
/// ```
/// assert_eq!(fdbroker_worker::ENV_TIMEOUT, "FDBROKER_TIMEOUT");
/// ```
pub const ENV_TIMEOUT: &str = "FDBROKER_TIMEOUT";

/// A file the broker opened for us, and what the broker saw when it `fstat`ed it.
///
/// ```no_run
/// use fdbroker_worker::{Access, Client, OPEN_APPEND};
/// let broker = Client::from_env()?;
/// let log = broker.open_detailed("/var/log/scanner/report.log", Access::Write, OPEN_APPEND)?;
/// println!("{} bytes so far", log.meta.size);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Opened {
    /// The descriptor, with exactly the access the request asked for.
    pub file: File,
    /// The broker's `fstat` of it, taken before it was passed.
    pub meta: FileMeta,
}

/// A connection to the broker. `Send + Sync`: share it behind an `Arc`.
///
/// ```no_run
/// use std::io::Read;
/// let broker = fdbroker_worker::Client::from_env()?;
/// let mut text = String::new();
/// broker.open("/var/spool/quarantine/note.txt")?.read_to_string(&mut text)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Client {
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
    /// [`Client::set_spin`], in nanoseconds; 0 sleeps at once.
    spin_nanos: AtomicU64,
    receiver: Mutex<Receiver>,
}

/// How the connection was made, which decides what happens when it is lost.
#[derive(Debug, Clone)]
enum Origin {
    /// Reconnects to this socket.
    Socket(PathBuf),
    /// Inherited (`FDBROKER_FD`): the broker that started the worker; no reconnecting.
    Inherited,
    /// A channel the caller made ([`Client::over`]).
    Given,
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

impl Client {
    /// Connect to the broker listening at `path`.
    ///
    /// Waits as long as it takes; [`Client::connect_timeout`] bounds that. The client
    /// reconnects to `path` once if it later finds the broker restarted.
    ///
    /// ```no_run
    /// let broker = fdbroker_worker::Client::connect("/run/fdbroker/fdbroker.sock")?;
    /// println!("served as {}", broker.client_name());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn connect(path: impl AsRef<Path>) -> io::Result<Client> {
        Client::dial(path.as_ref(), None)
    }

    /// Connect to the broker listening at `path`, giving up with
    /// `ErrorKind::TimedOut` if connecting and the broker's greeting take longer than
    /// `timeout` (a wedged or stopped broker). The same bound then applies to every
    /// reply ([`Client::set_timeout`] changes it).
    ///
    /// ```
    /// # include!("../doctest_broker.rs");
    /// # fn main() -> std::io::Result<()> {
    /// # let doc = DocBroker::start();
    /// # let (socket, spool) = (doc.socket(), doc.spool());
    /// use std::time::Duration;
    /// let broker = fdbroker_worker::Client::connect_timeout(&socket, Duration::from_secs(5))?;
    /// assert_eq!(broker.client_name(), "doc");
    /// # Ok(()) }
    /// ```
    pub fn connect_timeout(path: impl AsRef<Path>, timeout: Duration) -> io::Result<Client> {
        Client::dial(path.as_ref(), Some(timeout))
    }

    fn dial(path: &Path, timeout: Option<Duration>) -> io::Result<Client> {
        let (channel, accepted) = dial_and_greet(path, timeout)?;
        Ok(Client::serving(
            channel,
            accepted,
            Origin::Socket(path.to_owned()),
            timeout,
        ))
    }

    /// Connect the way a worker is usually set up: through the connection in
    /// [`ENV_FD`] (inherited from `fdbroker run`), else to the socket in
    /// [`ENV_SOCKET`], else to [`DEFAULT_SOCKET`]; within [`ENV_TIMEOUT`] seconds if
    /// that is set.
    ///
    /// An inherited connection is shared by every process that inherits it (a shell
    /// worker's commands, a worker's children), so it is never used for requests
    /// directly: each call asks the broker over it for a connection of its own, with the
    /// same identity, and greets that. So any number of processes of one `fdbroker run`
    /// tree, and any number of clients in one process, can each call `from_env`. The
    /// inherited descriptor stays open and inheritable for the process's own children;
    /// close it (or mark it close-on-exec) before starting a child that must not reach
    /// the broker.
    ///
    /// ```no_run
    /// let broker = fdbroker_worker::Client::from_env()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_env() -> io::Result<Client> {
        let timeout = match std::env::var_os(ENV_TIMEOUT) {
            Some(v) if !v.is_empty() => Some(parse_timeout(&v)?),
            _ => None,
        };
        Client::from_env_with(timeout)
    }

    /// [`Client::from_env`] with an explicit bound on connecting and on each reply,
    /// whatever [`ENV_TIMEOUT`] says.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let broker = fdbroker_worker::Client::from_env_timeout(Duration::from_secs(10))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_env_timeout(timeout: Duration) -> io::Result<Client> {
        Client::from_env_with(Some(timeout))
    }

    fn from_env_with(timeout: Option<Duration>) -> io::Result<Client> {
        if let Some(raw) = std::env::var_os(ENV_FD) {
            let deadline = timeout.map(|t| Instant::now() + t);
            let channel = connection_through(inherited(&raw)?, deadline)?;
            return Client::greet_over(channel, Origin::Inherited, timeout, deadline);
        }
        let path = match std::env::var_os(ENV_SOCKET) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => PathBuf::from(DEFAULT_SOCKET),
        };
        Client::dial(&path, timeout)
    }

    /// Greet the broker over an already connected channel (a socketpair end a spawner
    /// made, say). Such a client cannot reconnect: a lost connection is reported as
    /// `ErrorKind::ConnectionAborted`.
    ///
    /// ```no_run
    /// use fdbroker_worker::{Channel, Client};
    /// let channel = Channel::connect("/run/fdbroker/fdbroker.sock".as_ref())?;
    /// let broker = Client::over(channel)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn over(channel: Channel) -> io::Result<Client> {
        Client::greet_over(channel, Origin::Given, None, None)
    }

    fn greet_over(
        channel: Channel,
        origin: Origin,
        timeout: Option<Duration>,
        deadline: Option<Instant>,
    ) -> io::Result<Client> {
        let accepted = greet(&channel, deadline)?;
        channel.set_read_timeout(timeout)?;
        channel.set_write_timeout(timeout)?;
        Ok(Client::serving(channel, accepted, origin, timeout))
    }

    fn serving(
        channel: Channel,
        accepted: Accepted,
        origin: Origin,
        timeout: Option<Duration>,
    ) -> Client {
        Client {
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

    /// The policy client the broker matched this connection to.
    ///
    /// ```no_run
    /// let broker = fdbroker_worker::Client::from_env()?;
    /// eprintln!("the broker serves us as {}", broker.client_name());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn client_name(&self) -> String {
        read(&self.accepted).client.clone()
    }

    /// Most paths the broker takes in one `OpenMany`; [`Client::open_many`] splits
    /// larger batches itself.
    ///
    /// ```no_run
    /// let broker = fdbroker_worker::Client::from_env()?;
    /// assert!((1..=fdbroker_worker::MAX_BATCH).contains(&broker.max_batch()));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn max_batch(&self) -> usize {
        (read(&self.accepted).max_batch as usize).clamp(1, MAX_FDS_PER_REPLY)
    }

    /// Bound how long one reply (and one send) may take; `None` waits for ever. A call
    /// that runs out of time fails with `ErrorKind::TimedOut`; the connection stays
    /// usable, and the late reply is dropped (closing its descriptors) when it arrives.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let broker = fdbroker_worker::Client::from_env()?;
    /// broker.set_timeout(Some(Duration::from_secs(30)))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        let mut t = lock(&self.timeout);
        self.channel.set_read_timeout(timeout)?;
        self.channel.set_write_timeout(timeout)?;
        *t = timeout;
        Ok(())
    }

    /// Before sleeping until a reply arrives, look for it for up to `limit` without
    /// sleeping (polling, and yielding the CPU between looks); zero, the default, sleeps
    /// at once.
    ///
    /// Worth it only for a caller that sends one request at a time and can do nothing
    /// until the answer, on a machine where waking a sleeping thread costs more than the
    /// broker's work (a small VM: ~20 µs to wake an idle virtual CPU, against ~10 µs for
    /// an open). Transparent mode's supervisor uses 50 µs, and only where
    /// [`Channel::spinning_pays`] (more than one CPU). It costs CPU time: up to `limit`
    /// per request on this thread's CPU; it stops early when yielding showed the CPU
    /// is shared. It never lasts longer than the [`Client::set_timeout`] bound, so a
    /// reply that does not come fails within twice that bound at most.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let broker = fdbroker_worker::Client::from_env()?;
    /// broker.set_spin(Duration::from_micros(50));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_spin(&self, limit: Duration) {
        let nanos = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
        self.spin_nanos.store(nanos, Ordering::Relaxed);
    }

    /// A new connection to the same broker with this one's identity, for another part
    /// of the program (or, through [`AsFd`] and [`ENV_FD`], a child process), made by
    /// the broker itself: it works from inside the sandbox, where connecting to a
    /// socket does not.
    ///
    /// ```
    /// # include!("../doctest_broker.rs");
    /// # fn main() -> std::io::Result<()> {
    /// # let doc = DocBroker::start();
    /// # let (socket, spool) = (doc.socket(), doc.spool());
    /// let broker = fdbroker_worker::Client::connect(&socket)?;
    /// let for_the_hasher = broker.new_connection()?;
    /// let a = spool.join("a.bin");
    /// let hashed = std::thread::spawn(move || for_the_hasher.open(a).map(|f| f.metadata()));
    /// assert!(hashed.join().unwrap().is_ok());
    /// # Ok(()) }
    /// ```
    pub fn new_connection(&self) -> io::Result<Client> {
        let Delivery { body, fds } = self.call(&Op::Connect)?;
        let channel = connected(body, fds, || {
            self.fail("reply of the wrong type for a connect")
        })?;
        let timeout = *lock(&self.timeout);
        let deadline = timeout.map(|t| Instant::now() + t);
        Client::greet_over(channel, self.origin.clone(), timeout, deadline)
    }

    /// Open `path` for reading.
    ///
    /// ```
    /// # include!("../doctest_broker.rs");
    /// # fn main() -> std::io::Result<()> {
    /// # let doc = DocBroker::start();
    /// # let (socket, spool) = (doc.socket(), doc.spool());
    /// use std::io::Read;
    /// let broker = fdbroker_worker::Client::connect(&socket)?;
    /// let mut bytes = Vec::new();
    /// broker.open(spool.join("sample.bin"))?.read_to_end(&mut bytes)?;
    /// assert_eq!(bytes, b"MZ sample\n");
    /// # Ok(()) }
    /// ```
    pub fn open(&self, path: impl AsRef<Path>) -> io::Result<File> {
        self.open_with(path, Access::Read)
    }

    /// Open `path` with the given access.
    ///
    /// ```no_run
    /// use fdbroker_worker::{Access, Client};
    /// use std::io::Write;
    /// let broker = Client::from_env()?;
    /// broker.open_with("/srv/out/report.txt", Access::Create)?.write_all(b"clean\n")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn open_with(&self, path: impl AsRef<Path>, access: Access) -> io::Result<File> {
        self.open_detailed(path, access, 0).map(|o| o.file)
    }

    /// Open `path` with access and extra flags ([`OPEN_TRUNC`](crate::OPEN_TRUNC),
    /// [`OPEN_APPEND`](crate::OPEN_APPEND), only with `Write` or `ReadWrite`),
    /// returning the broker's metadata too.
    ///
    /// ```no_run
    /// use fdbroker_worker::{Access, Client, OPEN_TRUNC};
    /// let broker = Client::from_env()?;
    /// let opened = broker.open_detailed("/srv/out/state.json", Access::Write, OPEN_TRUNC)?;
    /// assert_eq!(opened.meta.size, 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
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
        let Delivery { body, fds } = self.call(&op)?;
        let mut fds = fds.into_iter();
        match body {
            ReplyBody::Open(outcome) => opened(outcome, &mut fds),
            ReplyBody::Refused(w) => Err(BrokerError::from_wire(w).into()),
            _ => Err(self.fail("reply of the wrong type for an open")),
        }
    }

    /// The metadata of `path`, as the broker sees it: answered where the policy grants
    /// `read` or `directory` on the path (and, for anything but a directory, where an
    /// open for reading would pass the rule's type checks), denied elsewhere exactly as
    /// an open is. Symbolic links are followed as an open follows them (only where the
    /// rule allows symlinks); no descriptor is passed.
    ///
    /// ```
    /// # include!("../doctest_broker.rs");
    /// # fn main() -> std::io::Result<()> {
    /// # let doc = DocBroker::start();
    /// # let (socket, spool) = (doc.socket(), doc.spool());
    /// let broker = fdbroker_worker::Client::connect(&socket)?;
    /// let meta = broker.metadata(spool.join("sample.bin"))?;
    /// assert!(meta.is_file() && meta.len() == 10);
    /// println!("owner {} mode {:o}", meta.uid(), meta.mode() & 0o7777);
    /// assert!(broker.metadata(&spool)?.is_dir());
    /// // Outside the policy: denied, whether or not the file exists.
    /// let e = broker.metadata("/etc/shadow").unwrap_err();
    /// assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
    /// # Ok(()) }
    /// ```
    pub fn metadata(&self, path: impl AsRef<Path>) -> io::Result<Metadata> {
        let op = Op::Stat(StatSpec {
            path: path.as_ref().as_os_str().as_bytes().to_vec(),
        });
        let Delivery { body, .. } = self.call(&op)?;
        stat_reply(body).unwrap_or_else(|| Err(self.fail("reply of the wrong type for a stat")))
    }

    /// The entries of the directory `path`, read from a descriptor the broker grants
    /// (the policy must grant `directory` access there). `.` and `..` are left out.
    ///
    /// ```
    /// # include!("../doctest_broker.rs");
    /// # fn main() -> std::io::Result<()> {
    /// # let doc = DocBroker::start();
    /// # let (socket, spool) = (doc.socket(), doc.spool());
    /// use fdbroker_worker::FileKind;
    /// let broker = fdbroker_worker::Client::connect(&socket)?;
    /// let mut names = Vec::new();
    /// for entry in broker.read_dir(&spool)? {
    ///     let entry = entry?;
    ///     println!("{:?} {:?}", entry.file_name(), entry.file_type()?);
    ///     names.push((entry.file_name().to_owned(), entry.file_type()?));
    /// }
    /// assert!(names.contains(&("sub".into(), FileKind::Directory)));
    /// # Ok(()) }
    /// ```
    pub fn read_dir(&self, path: impl AsRef<Path>) -> io::Result<ReadDir> {
        let path = path.as_ref();
        let dir = self.open_with(path, Access::Directory)?;
        ReadDir::new(dir, path.to_owned())
    }

    /// Every entry beneath `path`, depth first, descending into each directory the
    /// broker grants (symbolic links are reported, never followed). A directory that
    /// cannot be listed is one `Err` naming it; the walk goes on with the rest.
    ///
    /// ```
    /// # include!("../doctest_broker.rs");
    /// # fn main() -> std::io::Result<()> {
    /// # let doc = DocBroker::start();
    /// # let (socket, spool) = (doc.socket(), doc.spool());
    /// let broker = fdbroker_worker::Client::connect(&socket)?;
    /// let files: Vec<_> = broker
    ///     .walk(&spool)
    ///     .filter_map(Result::ok)
    ///     .filter(|e| e.file_type().is_ok_and(|t| t == fdbroker_worker::FileKind::Regular))
    ///     .map(|e| e.path())
    ///     .collect();
    /// assert_eq!(files.len(), 3);
    /// assert!(files.contains(&spool.join("sub/b.bin")));
    /// # Ok(()) }
    /// ```
    pub fn walk(&self, path: impl AsRef<Path>) -> Walk<'_> {
        Walk::new(self, path.as_ref().to_owned())
    }

    /// Open every path for reading; one result per path, in order. The outer error
    /// means the connection failed; the inner ones are per-path refusals.
    ///
    /// ```
    /// # include!("../doctest_broker.rs");
    /// # fn main() -> std::io::Result<()> {
    /// # let doc = DocBroker::start();
    /// # let (socket, spool) = (doc.socket(), doc.spool());
    /// let broker = fdbroker_worker::Client::connect(&socket)?;
    /// let paths = [spool.join("a.bin"), spool.join("missing")];
    /// let files = broker.open_many(&paths)?;
    /// for (path, file) in paths.iter().zip(&files) {
    ///     match file {
    ///         Ok(_file) => println!("{}: opened", path.display()),
    ///         Err(e) => println!("{}: {e}", path.display()),
    ///     }
    /// }
    /// assert!(files[0].is_ok());
    /// assert_eq!(files[1].as_ref().unwrap_err().kind(), std::io::ErrorKind::NotFound);
    /// # Ok(()) }
    /// ```
    pub fn open_many<P: AsRef<Path>>(&self, paths: &[P]) -> io::Result<Vec<io::Result<File>>> {
        Ok(self
            .open_many_with(paths, Access::Read)?
            .into_iter()
            .map(|r| r.map(|o| o.file))
            .collect())
    }

    /// Open every path with one access, in as few round trips as the broker's batch
    /// size and the message cap allow.
    ///
    /// ```no_run
    /// use fdbroker_worker::{Access, Client};
    /// let broker = Client::from_env()?;
    /// let opened = broker.open_many_with(&["/srv/in/a", "/srv/in/b"], Access::Read)?;
    /// let total: u64 = opened.iter().flatten().map(|o| o.meta.size).sum();
    /// # Ok::<(), std::io::Error>(())
    /// ```
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
            let delivery = self.call(&open_many_op(chunk, access, flags))?;
            out.extend(self.batch_outcomes(delivery, chunk.len())?);
        }
        Ok(out)
    }

    /// Open `paths` for reading as an iterator of `(path, result)` pairs, in order,
    /// fetched in batches of [`Client::max_batch`] with the next batch already requested
    /// while the caller works on the current one: a scanner's reading and hashing
    /// overlap the broker's opening. `paths` is consumed lazily.
    ///
    /// ```
    /// # include!("../doctest_broker.rs");
    /// # fn main() -> std::io::Result<()> {
    /// # let doc = DocBroker::start();
    /// # let (socket, spool) = (doc.socket(), doc.spool());
    /// use std::io::Read;
    /// let broker = fdbroker_worker::Client::connect(&socket)?;
    /// let list = format!("{0}/a.bin\n{0}/nope\n{0}/sub/b.bin\n", spool.display());
    /// let mut seen = 0;
    /// for (path, file) in broker.open_iter(list.lines()) {
    ///     match file {
    ///         Ok(mut f) => {
    ///             let mut bytes = Vec::new();
    ///             f.read_to_end(&mut bytes)?;
    ///             println!("{path}: {} bytes", bytes.len());
    ///             seen += bytes.len();
    ///         }
    ///         Err(e) => println!("{path}: ERROR {e}"),
    ///     }
    /// }
    /// assert_eq!(seen, 5);
    /// # Ok(()) }
    /// ```
    pub fn open_iter<P, I>(&self, paths: I) -> OpenIter<'_, P, I::IntoIter>
    where
        P: AsRef<Path>,
        I: IntoIterator<Item = P>,
    {
        OpenIter::new(self, paths.into_iter(), Access::Read)
    }

    /// Turn one `OpenMany` reply for `n` paths into one result per path.
    pub(crate) fn batch_outcomes(
        &self,
        Delivery { body, fds }: Delivery,
        n: usize,
    ) -> io::Result<Vec<io::Result<Opened>>> {
        let mut fds = fds.into_iter();
        match body {
            ReplyBody::OpenMany(outcomes) if outcomes.len() == n => {
                Ok(outcomes.into_iter().map(|o| opened(o, &mut fds)).collect())
            }
            ReplyBody::Refused(w) => {
                let e = BrokerError::from_wire(w);
                Ok((0..n).map(|_| Err(e.clone().into())).collect())
            }
            _ => Err(self.fail("batch reply does not match the request")),
        }
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

    /// Send a request; its reply is collected with [`Client::collect`] (or dropped on
    /// arrival after [`Client::abandon`]).
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

    /// Wait for the reply to a request [`Client::submit`] sent.
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

    fn fail(&self, why: &str) -> io::Error {
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

/// The connection's socket, for `poll(2)` (readable with nothing asked means the broker
/// closed it) or to hand to a child process as [`ENV_FD`], whose
/// [`Client::from_env`] then asks for a connection of its own through it. The number
/// stays the same across a reconnect.
///
/// ```
/// # include!("../doctest_broker.rs");
/// # fn main() -> std::io::Result<()> {
/// # let doc = DocBroker::start();
/// # let (socket, spool) = (doc.socket(), doc.spool());
/// use std::os::fd::{AsFd, AsRawFd};
/// let broker = fdbroker_worker::Client::connect(&socket)?;
/// println!("connected on descriptor {}", broker.as_fd().as_raw_fd());
/// assert!(broker.as_fd().as_raw_fd() > 2);
/// # Ok(()) }
/// ```
impl AsFd for Client {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.channel.as_fd()
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
        Op::Stat(_) | Op::Connect => true,
    }
}

pub(crate) fn open_many_op<P: AsRef<Path>>(chunk: &[P], access: Access, flags: u32) -> Op {
    Op::OpenMany {
        paths: chunk
            .iter()
            .map(|p| p.as_ref().as_os_str().as_bytes().to_vec())
            .collect(),
        access,
        flags,
    }
}

/// The answer to a stat, or `None` for a reply of another type.
pub(crate) fn stat_reply(body: ReplyBody) -> Option<io::Result<Metadata>> {
    match body {
        ReplyBody::Stat(Ok(meta)) => Some(Ok(Metadata::from(meta))),
        ReplyBody::Stat(Err(w)) | ReplyBody::Refused(w) => {
            Some(Err(BrokerError::from_wire(w).into()))
        }
        _ => None,
    }
}

/// The new connection a connect reply carries.
pub(crate) fn connected(
    body: ReplyBody,
    fds: Vec<OwnedFd>,
    wrong: impl FnOnce() -> io::Error,
) -> io::Result<Channel> {
    match body {
        ReplyBody::Connected => match fds.into_iter().next() {
            Some(fd) => Channel::from_fd(fd),
            None => Err(broken("reply lacks a descriptor it promised")),
        },
        ReplyBody::Refused(w) => Err(BrokerError::from_wire(w).into()),
        _ => Err(wrong()),
    }
}

pub(crate) fn opened(
    outcome: Outcome,
    fds: &mut impl Iterator<Item = OwnedFd>,
) -> io::Result<Opened> {
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
pub(crate) fn batch_len<P: AsRef<Path>>(paths: &[P], max_batch: usize) -> usize {
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

/// Connect to `path` and greet the broker there, all within `timeout` if given.
fn dial_and_greet(path: &Path, timeout: Option<Duration>) -> io::Result<(Channel, Accepted)> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let channel = match timeout {
        Some(t) => Channel::connect_timeout(path, t),
        None => Channel::connect(path),
    }
    .map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot connect to the broker at {}: {e}", path.display()),
        )
    })?;
    let accepted = greet(&channel, deadline)?;
    channel.set_read_timeout(timeout)?;
    channel.set_write_timeout(timeout)?;
    Ok((channel, accepted))
}

/// The time left until `deadline` as a socket timeout (never zero, which would mean
/// "for ever"), or `TimedOut` if it has passed.
fn remaining(deadline: Option<Instant>) -> io::Result<Option<Duration>> {
    match deadline {
        None => Ok(None),
        Some(d) => match d.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Ok(Some(left)),
            _ => Err(timed_out_error()),
        },
    }
}

/// Send the hello and read the welcome, within `deadline`.
fn greet(channel: &Channel, deadline: Option<Instant>) -> io::Result<Accepted> {
    let mut buf = Vec::with_capacity(256);
    frame::encode(
        Kind::Hello,
        &Hello {
            version: frame::PROTOCOL_VERSION,
            agent: concat!("fdbroker-worker ", env!("CARGO_PKG_VERSION")).to_owned(),
        },
        &mut buf,
    )?;
    channel.set_write_timeout(remaining(deadline)?)?;
    // A broker that refuses this peer answers at accept time and closes, possibly
    // before the hello goes out: then the send fails with EPIPE but the refusal,
    // which says why, is still queued for us to read.
    let sent = channel.send(&buf).map_err(|e| context(e, "sending hello"));
    buf.resize(MAX_MESSAGE, 0);
    channel.set_read_timeout(remaining(deadline)?)?;
    let mut received = channel.recv(&mut buf);
    if matches!(&received, Err(fdbroker_shared::RecvError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset)
    {
        // The broker closed with our hello unread, so the kernel reports
        // ECONNRESET once (and clears it) before handing over queued messages.
        received = channel.recv(&mut buf);
    }
    let n = match received {
        Ok(n) => n,
        Err(fdbroker_shared::RecvError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the broker did not answer the greeting in time (is it wedged or stopped?)",
            ));
        }
        Err(e) => {
            sent?;
            return Err(context(e.into(), "waiting for the broker's welcome"));
        }
    };
    let welcome: Welcome = frame::decode(Kind::Welcome, &buf[..n]).map_err(|e| {
        let e: io::Error = e.into();
        context(e, "reading the broker's welcome")
    })?;
    match welcome {
        Welcome::Accepted(a) => Ok(a),
        Welcome::Refused(w) => {
            // Keep the BrokerError inside (callers read its errno, e.g. EAGAIN for
            // a connection limit); only the reason gets the context.
            let mut e = BrokerError::from_wire(w);
            e.reason = format!("the broker refused this connection: {}", e.reason);
            Err(e.into())
        }
    }
}

/// The inherited connection, adopted once per process and kept for the process's
/// lifetime: every [`Client::from_env`] asks for its own connection through it.
struct Inherited {
    channel: Channel,
    /// One request at a time from this process; other processes may be asking too.
    asking: Mutex<()>,
}

fn inherited(raw: &OsStr) -> io::Result<&'static Inherited> {
    static INHERITED: OnceLock<Result<Inherited, (io::ErrorKind, String)>> = OnceLock::new();
    INHERITED
        .get_or_init(|| {
            adopt_env_fd(raw)
                .and_then(Channel::from_fd)
                .map(|channel| Inherited {
                    channel,
                    asking: Mutex::new(()),
                })
                .map_err(|e| (e.kind(), e.to_string()))
        })
        .as_ref()
        .map_err(|(kind, why)| io::Error::new(*kind, why.clone()))
}

/// Ask over the shared, inherited connection for a connection of our own.
///
/// The exchange is one message each way, and every reply to it is alike (a new
/// connection with the worker's identity), so processes sharing the socket may each take
/// any of them: no process greets it, and none depends on which reply it reads.
fn connection_through(shared: &Inherited, deadline: Option<Instant>) -> io::Result<Channel> {
    let _one_at_a_time = lock(&shared.asking);
    let mut buf = Vec::with_capacity(64);
    frame::encode(
        Kind::Request,
        &Request {
            id: 0,
            op: Op::Connect,
        },
        &mut buf,
    )?;
    shared.channel.send(&buf).map_err(|e| {
        if is_disconnect(&e) {
            inherited_gone()
        } else {
            context(e, "asking the broker for a connection")
        }
    })?;
    // Wait with poll, not a receive timeout: the socket's options are shared with
    // every other process holding it.
    wait_readable(&shared.channel, deadline)?;
    buf.resize(MAX_MESSAGE, 0);
    let (n, fds) = shared
        .channel
        .recv_with_fds(&mut buf, 1)
        .map_err(|e| match recv_error(e) {
            e if e.kind() == io::ErrorKind::ConnectionAborted => inherited_gone(),
            e => e,
        })?;
    let reply: Reply = frame::decode(Kind::Reply, &buf[..n])?;
    if reply.body.descriptor_count() != fds.len() {
        return Err(fdbroker_shared::ProtocolError::DescriptorCount {
            expected: reply.body.descriptor_count(),
            got: fds.len(),
        }
        .into());
    }
    connected(reply.body, fds, || {
        broken("the inherited connection answered a connect with another reply")
    })
}

fn wait_readable(channel: &Channel, deadline: Option<Instant>) -> io::Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    loop {
        let timeout = match remaining(deadline)? {
            None => PollTimeout::NONE,
            Some(left) => PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX),
        };
        let mut fds = [PollFd::new(channel.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) => {}
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cold]
fn inherited_gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        format!(
            "the inherited broker connection ({ENV_FD}) is closed: the broker that started \
             this worker has gone"
        ),
    )
}

fn recv_error(e: fdbroker_shared::RecvError) -> io::Error {
    match e {
        fdbroker_shared::RecvError::Protocol(fdbroker_shared::ProtocolError::Closed) => {
            broker_gone()
        }
        fdbroker_shared::RecvError::Io(e) if is_disconnect(&e) => broker_gone(),
        fdbroker_shared::RecvError::Io(e) if e.kind() == io::ErrorKind::WouldBlock => {
            timed_out_error()
        }
        e => e.into(),
    }
}

fn parse_timeout(v: &OsStr) -> io::Result<Duration> {
    v.to_str()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{ENV_TIMEOUT}={v:?} is not a positive number of seconds"),
            )
        })
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
    // Confirm the number names an open descriptor before anything owns it.
    nix::fcntl::fcntl(borrow_env_fd(n), nix::fcntl::FcntlArg::F_GETFD)
        .map_err(|e| invalid(format!("{ENV_FD}={n} is not an open descriptor: {e}")))?;
    // SAFETY: `n` is open (checked above), the process environment hands it to this
    // library, and the caller's OnceLock guarantees this is the only owner we create.
    let fd = unsafe { OwnedFd::from_raw_fd(n) };
    debug_assert_eq!(fd.as_raw_fd(), n);
    Ok(fd)
}

fn borrow_env_fd(n: RawFd) -> BorrowedFd<'static> {
    // SAFETY: used only for one fcntl(F_GETFD) probe, which tolerates a closed number
    // (it returns EBADF) and does not outlive this call.
    unsafe { BorrowedFd::borrow_raw(n) }
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

#[cold]
fn timed_out_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "timed out waiting for the broker")
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A thread that panicked while holding the lock left the state consistent (every
    // mutation is a single insert/remove), so carry on.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
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

    #[test]
    fn a_borrowed_request_encodes_as_an_owned_one() {
        let op = open_many_op(&["/a", "/bc"], Access::Read, 0);
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
    fn timeouts_parse_as_seconds() {
        assert_eq!(
            parse_timeout(OsStr::new("2.5")).unwrap(),
            Duration::from_millis(2500)
        );
        for bad in ["", "0", "-1", "soon", "NaN"] {
            assert!(parse_timeout(OsStr::new(bad)).is_err(), "{bad}");
        }
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
        assert!(!idempotent(&open_many_op(&["/a"], Access::Create, 0)));
        assert!(idempotent(&Op::Connect));
    }
}
