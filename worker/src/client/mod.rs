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

mod connect;
pub mod iter;
mod list;
mod locks;
mod pipeline;
mod refused;

pub(crate) use connect::connected;
pub use connect::{DEFAULT_SOCKET, ENV_FD, ENV_SOCKET, ENV_TIMEOUT};
pub(crate) use list::Listed;
pub(crate) use pipeline::Delivery;
// The async client encodes its requests the same way.
#[cfg(feature = "tokio")]
pub(crate) use pipeline::RequestRef;

use crate::error::{BrokerError, broken};
use crate::fs::{Metadata, ReadDir, Walk};
use connect::Origin;
use fdbroker_shared::Channel;
use fdbroker_shared::frame::{self, MAX_FDS_PER_REPLY, MAX_MESSAGE};
use fdbroker_shared::wire::{
    Accepted, Access, FileMeta, Op, OpenSpec, Outcome, ReplyBody, StatSpec,
};
use iter::OpenIter;
use pipeline::Pipeline;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

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
    pipeline: Pipeline,
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
    /// # include!("../../doctest_broker.rs");
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

    /// Connect to the broker listening at `path`, bounded as [`Client::connect_timeout`]
    /// by [`ENV_TIMEOUT`] seconds if that is set, else as [`Client::connect`]: how a
    /// command given a socket (`fdbroker cat --socket`) keeps the bound the environment
    /// sets for every client.
    ///
    /// ```no_run
    /// // FDBROKER_TIMEOUT=5: connecting, the greeting and each reply within 5 s.
    /// let broker = fdbroker_worker::Client::connect_timeout_from_env("/run/fdbroker/fdbroker.sock")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn connect_timeout_from_env(path: impl AsRef<Path>) -> io::Result<Client> {
        Client::dial(path.as_ref(), connect::env_timeout()?)
    }

    fn dial(path: &Path, timeout: Option<Duration>) -> io::Result<Client> {
        let (channel, accepted) = connect::dial_and_greet(path, timeout)?;
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
        Client::from_env_with(connect::env_timeout()?)
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
        let (channel, accepted, origin) = connect::from_env(timeout)?;
        Ok(Client::serving(channel, accepted, origin, timeout))
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
        let accepted = connect::greet_over(&channel, timeout, deadline)?;
        Ok(Client::serving(channel, accepted, origin, timeout))
    }

    fn serving(
        channel: Channel,
        accepted: Accepted,
        origin: Origin,
        timeout: Option<Duration>,
    ) -> Client {
        Client {
            pipeline: Pipeline::new(channel, accepted, origin, timeout),
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
        self.pipeline.accepted().client.clone()
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
        (self.pipeline.accepted().max_batch as usize).clamp(1, MAX_FDS_PER_REPLY)
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
        self.pipeline.set_timeout(timeout)
    }

    /// Before sleeping until a reply arrives, look for it for up to `limit` without
    /// sleeping (polling, never yielding the CPU: a yield on a busy machine hands it to
    /// a busy neighbour for its whole slice); zero, the default, sleeps at once.
    ///
    /// Worth it only for a caller that sends one request at a time and can do nothing
    /// until the answer, on a machine where waking a sleeping thread costs more than the
    /// broker's work (a small VM: ~20 µs to wake an idle virtual CPU, against ~10 µs for
    /// an open). Transparent mode's supervisor uses 50 µs, and only where
    /// [`Channel::spinning_pays`] (more than one CPU). It costs CPU time: up to `limit`
    /// per request on this thread's CPU, and after a spin that saw nothing the next
    /// calls sleep at once for a while (see [`Channel::spin_until_readable`]). It never lasts longer than the [`Client::set_timeout`] bound, so a
    /// reply that does not come fails within twice that bound at most.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let broker = fdbroker_worker::Client::from_env()?;
    /// broker.set_spin(Duration::from_micros(50));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_spin(&self, limit: Duration) {
        self.pipeline.set_spin(limit);
    }

    /// A new connection to the same broker with this one's identity, for another part
    /// of the program (or, through [`AsFd`] and [`ENV_FD`], a child process), made by
    /// the broker itself: it works from inside the sandbox, where connecting to a
    /// socket does not.
    ///
    /// ```
    /// # include!("../../doctest_broker.rs");
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
        let Delivery { body, fds } = self.pipeline.call(&Op::Connect)?;
        let channel = connected(body, fds, || {
            self.pipeline.fail("reply of the wrong type for a connect")
        })?;
        let timeout = self.pipeline.timeout();
        let deadline = timeout.map(|t| Instant::now() + t);
        Client::greet_over(channel, self.pipeline.origin().clone(), timeout, deadline)
    }

    /// Open `path` for reading.
    ///
    /// ```
    /// # include!("../../doctest_broker.rs");
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
        let Delivery { body, fds } = self.pipeline.call(&op)?;
        let mut fds = fds.into_iter();
        match body {
            ReplyBody::Open(outcome) => opened(outcome, &mut fds),
            ReplyBody::Refused(w) => Err(BrokerError::from_wire(w).into()),
            _ => Err(self.pipeline.fail("reply of the wrong type for an open")),
        }
    }

    /// The metadata of `path`, as the broker sees it: answered where the policy grants
    /// `read` or `directory` on the path (and, for anything but a directory, where an
    /// open for reading would pass the rule's type checks), denied elsewhere exactly as
    /// an open is. Symbolic links are followed as an open follows them (only where the
    /// rule allows symlinks); no descriptor is passed.
    ///
    /// ```
    /// # include!("../../doctest_broker.rs");
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
        let Delivery { body, .. } = self.pipeline.call(&op)?;
        stat_reply(body)
            .unwrap_or_else(|| Err(self.pipeline.fail("reply of the wrong type for a stat")))
    }

    /// The metadata of `path` without following its last component, and its target if
    /// that is a symbolic link (`None` otherwise): what `lstat(2)` and `readlink(2)` ask,
    /// decided like [`Client::metadata`] (`Op::Link`). Where the policy's rule follows
    /// links (`symlinks = "beneath"`), this is the target's metadata and `None`.
    pub fn symlink_metadata(
        &self,
        path: impl AsRef<Path>,
    ) -> io::Result<(Metadata, Option<Vec<u8>>)> {
        let op = Op::Link(StatSpec {
            path: path.as_ref().as_os_str().as_bytes().to_vec(),
        });
        let Delivery { body, .. } = self.pipeline.call(&op)?;
        match body {
            ReplyBody::Link(Ok(link)) => {
                let target = (!link.target.is_empty()).then_some(link.target);
                Ok((Metadata::from(link.meta), target))
            }
            ReplyBody::Link(Err(w)) | ReplyBody::Refused(w) => {
                Err(BrokerError::from_wire(w).into())
            }
            _ => Err(self.pipeline.fail("reply of the wrong type for a link")),
        }
    }

    /// The entries of the directory `path`, listed by the broker (the policy must grant
    /// `directory` access there), in byte order of their names (sorted here once every
    /// page, in the directory's order, has arrived). `.` and `..` are left
    /// out, and so is every name the policy hides (a deny carve-out, a name no rule
    /// covers): the broker answers the listing itself (`Op::List`, a page at a time)
    /// rather than pass a descriptor, which would show those too.
    ///
    /// ```
    /// # include!("../../doctest_broker.rs");
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
        let mut listing = Listed::new(path);
        while let Some(op) = listing.next_op() {
            let Delivery { body, .. } = self.pipeline.call(&op)?;
            listing.take(body).map_err(|e| {
                e.unwrap_or_else(|| self.pipeline.fail("reply of the wrong type for a listing"))
            })?;
        }
        Ok(listing.finish())
    }

    /// Every entry beneath `path`, depth first, descending into each directory the
    /// broker grants (symbolic links are reported, never followed). A directory that
    /// cannot be listed is one `Err` naming it; the walk goes on with the rest.
    ///
    /// ```
    /// # include!("../../doctest_broker.rs");
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
    /// # include!("../../doctest_broker.rs");
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
            let delivery = self.pipeline.call(&open_many_op(chunk, access, flags))?;
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
    /// # include!("../../doctest_broker.rs");
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
            _ => Err(self.pipeline.fail("batch reply does not match the request")),
        }
    }
}

/// The connection's socket, for `poll(2)` (readable with nothing asked means the broker
/// closed it) or to hand to a child process as [`ENV_FD`], whose
/// [`Client::from_env`] then asks for a connection of its own through it. The number
/// stays the same across a reconnect.
///
/// ```
/// # include!("../../doctest_broker.rs");
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
        self.pipeline.channel().as_fd()
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
