//! Looking at a tree through the broker: [`Metadata`] of a path, the entries of a
//! directory ([`ReadDir`]), and a whole tree ([`Walk`]).
//!
//! Listing is answered by the broker (`Op::List`): it reads the directory beneath the
//! policy's root and leaves out every name the policy hides (a deny carve-out, a name no
//! rule covers), so the worker needs no filesystem access of its own and learns nothing
//! of what is hidden. (A descriptor would show all of it: `getdents64(2)` lists every
//! name and `fstatat(2)` through it describes every file below, which is why the broker
//! passes one only for a directory whose whole subtree the worker may see.)
//! [`ReadDir::new`] still reads a descriptor the program holds itself.
//!
//! ```no_run
//! let broker = fdbroker_worker::Client::from_env()?;
//! let total: u64 = broker
//!     .walk("/var/spool/quarantine")
//!     .flatten()
//!     .filter_map(|e| broker.metadata(e.path()).ok())
//!     .filter(|m| m.is_file())
//!     .map(|m| m.len())
//!     .sum();
//! # Ok::<(), std::io::Error>(())
//! ```

use crate::client::Client;
use fdbroker_shared::wire::{FileKind, ListEntry, StatMeta};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the broker's `fstat` said about a path ([`Client::metadata`]).
///
/// ```no_run
/// let broker = fdbroker_worker::Client::from_env()?;
/// let meta = broker.metadata("/var/spool/quarantine")?;
/// assert!(meta.is_dir());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    raw: StatMeta,
}

impl From<StatMeta> for Metadata {
    fn from(raw: StatMeta) -> Metadata {
        Metadata { raw }
    }
}

impl Metadata {
    /// Size in bytes (`st_size`).
    ///
    /// ```no_run
    /// # let broker = fdbroker_worker::Client::from_env()?;
    /// let too_big = broker.metadata("/var/spool/quarantine/a.iso")?.len() > 1 << 30;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn len(&self) -> u64 {
        self.raw.file.size
    }

    /// Whether [`len`](Metadata::len) is 0.
    ///
    /// ```no_run
    /// # let broker = fdbroker_worker::Client::from_env()?;
    /// let skip = broker.metadata("/var/spool/quarantine/a.bin")?.is_empty();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file's type.
    ///
    /// ```no_run
    /// # let broker = fdbroker_worker::Client::from_env()?;
    /// use fdbroker_worker::FileKind;
    /// let fifo = broker.metadata("/var/spool/in/pipe")?.file_type() == FileKind::Fifo;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn file_type(&self) -> FileKind {
        self.raw.file.kind
    }

    /// Whether it is a directory.
    ///
    /// ```no_run
    /// # let broker = fdbroker_worker::Client::from_env()?;
    /// assert!(broker.metadata("/var/spool/quarantine")?.is_dir());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_dir(&self) -> bool {
        self.raw.file.kind == FileKind::Directory
    }

    /// Whether it is a regular file.
    ///
    /// ```no_run
    /// # let broker = fdbroker_worker::Client::from_env()?;
    /// assert!(broker.metadata("/var/spool/quarantine/a.bin")?.is_file());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_file(&self) -> bool {
        self.raw.file.kind == FileKind::Regular
    }

    /// `st_mode`: the type bits and the permission bits (`mode() & 0o7777`).
    ///
    /// ```no_run
    /// # let broker = fdbroker_worker::Client::from_env()?;
    /// let world_readable = broker.metadata("/var/spool/quarantine/a.bin")?.mode() & 0o004 != 0;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn mode(&self) -> u32 {
        self.raw.file.mode
    }

    /// The owner's uid.
    ///
    /// ```no_run
    /// # let broker = fdbroker_worker::Client::from_env()?;
    /// let owned_by_root = broker.metadata("/var/spool/quarantine/a.bin")?.uid() == 0;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn uid(&self) -> u32 {
        self.raw.uid
    }

    /// The group's gid.
    ///
    /// ```no_run
    /// # let broker = fdbroker_worker::Client::from_env()?;
    /// let gid = broker.metadata("/var/spool/quarantine/a.bin")?.gid();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn gid(&self) -> u32 {
        self.raw.gid
    }

    /// Last modification (`st_mtime`).
    ///
    /// ```no_run
    /// # let broker = fdbroker_worker::Client::from_env()?;
    /// let age = broker.metadata("/var/spool/quarantine/a.bin")?.modified().elapsed();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn modified(&self) -> SystemTime {
        time(self.raw.file.mtime_sec, self.raw.file.mtime_nsec)
    }

    /// Last access (`st_atime`).
    ///
    /// ```no_run
    /// # let broker = fdbroker_worker::Client::from_env()?;
    /// let read_at = broker.metadata("/var/spool/quarantine/a.bin")?.accessed();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn accessed(&self) -> SystemTime {
        time(self.raw.atime_sec, self.raw.atime_nsec)
    }

    /// Last status change (`st_ctime`).
    ///
    /// ```no_run
    /// # let broker = fdbroker_worker::Client::from_env()?;
    /// let changed = broker.metadata("/var/spool/quarantine/a.bin")?.changed();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn changed(&self) -> SystemTime {
        time(self.raw.ctime_sec, self.raw.ctime_nsec)
    }

    /// Device and inode: together they name the file (`st_dev`, `st_ino`).
    ///
    /// ```no_run
    /// # let broker = fdbroker_worker::Client::from_env()?;
    /// let a = broker.metadata("/srv/in/a")?;
    /// let b = broker.metadata("/srv/in/b")?;
    /// let same_file = (a.dev(), a.ino()) == (b.dev(), b.ino());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn dev(&self) -> u64 {
        self.raw.file.dev
    }

    /// See [`dev`](Metadata::dev).
    ///
    /// ```no_run
    /// # let broker = fdbroker_worker::Client::from_env()?;
    /// let inode = broker.metadata("/srv/in/a")?.ino();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn ino(&self) -> u64 {
        self.raw.file.ino
    }

    /// Hard links (`st_nlink`).
    ///
    /// ```no_run
    /// # let broker = fdbroker_worker::Client::from_env()?;
    /// let links = broker.metadata("/srv/in/a")?.nlink();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn nlink(&self) -> u64 {
        self.raw.file.nlink
    }

    /// Everything the broker sent, as it travels on the wire.
    ///
    /// ```no_run
    /// # let broker = fdbroker_worker::Client::from_env()?;
    /// let blocks = broker.metadata("/srv/in/a")?.raw().blocks;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn raw(&self) -> &StatMeta {
        &self.raw
    }
}

fn time(sec: i64, nsec: u32) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(nsec));
    match u64::try_from(sec) {
        Ok(s) => UNIX_EPOCH + Duration::from_secs(s) + nanos,
        Err(_) => UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + nanos,
    }
}

/// The entries of one directory ([`Client::read_dir`]): an iterator of
/// `io::Result<DirEntry>`, without `.` and `..`, in the order the filesystem keeps them.
///
/// ```no_run
/// let broker = fdbroker_worker::Client::from_env()?;
/// let names: Vec<_> = broker
///     .read_dir("/var/spool/quarantine")?
///     .map(|e| e.map(|e| e.file_name().to_owned()))
///     .collect::<Result<_, _>>()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct ReadDir {
    entries: Source,
    base: PathBuf,
}

/// Where a [`ReadDir`]'s entries come from.
#[derive(Debug)]
enum Source {
    /// A directory descriptor read in this process.
    Descriptor(nix::dir::OwningIter),
    /// The broker's listing, every page already received.
    Listed(std::vec::IntoIter<ListEntry>),
}

impl ReadDir {
    /// Read the directory open on `dir` (a descriptor with `directory` access), naming
    /// its entries beneath `base`.
    ///
    /// ```no_run
    /// use fdbroker_worker::{Access, Client, ReadDir};
    /// let broker = Client::from_env()?;
    /// let dir = broker.open_with("/srv/in", Access::Directory)?;
    /// let count = ReadDir::new(dir, "/srv/in".into())?.count();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new(dir: File, base: PathBuf) -> io::Result<ReadDir> {
        let dir = nix::dir::Dir::from_fd(OwnedFd::from(dir))?;
        Ok(ReadDir {
            entries: Source::Descriptor(dir.into_iter()),
            base,
        })
    }

    /// The entries of the broker's listing of `base` (`Op::List`, every page).
    pub(crate) fn listed(entries: Vec<ListEntry>, base: PathBuf) -> ReadDir {
        ReadDir {
            entries: Source::Listed(entries.into_iter()),
            base,
        }
    }

    /// The directory being read.
    ///
    /// ```no_run
    /// let broker = fdbroker_worker::Client::from_env()?;
    /// let dir = broker.read_dir("/srv/in")?;
    /// assert_eq!(dir.path(), std::path::Path::new("/srv/in"));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn path(&self) -> &Path {
        &self.base
    }
}

impl Iterator for ReadDir {
    type Item = io::Result<DirEntry>;

    fn next(&mut self) -> Option<io::Result<DirEntry>> {
        let entries = match &mut self.entries {
            Source::Listed(listed) => {
                let entry = listed.next()?;
                let name = OsStr::from_bytes(&entry.name);
                return Some(Ok(DirEntry {
                    path: self.base.join(name),
                    name: name.to_owned(),
                    kind: Ok(entry.kind),
                }));
            }
            Source::Descriptor(entries) => entries,
        };
        loop {
            let entry = match entries.next()? {
                Ok(e) => e,
                Err(e) => return Some(Err(with_path(e.into(), &self.base))),
            };
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            let kind = match entry.file_type() {
                Some(t) => Ok(kind_of(t)),
                // The filesystem does not record types in its directories: ask the
                // kernel about the name beneath this descriptor, without following it.
                None => lstat_beneath(entries, name),
            };
            return Some(Ok(DirEntry {
                path: self.base.join(name),
                name: name.to_owned(),
                kind,
            }));
        }
    }
}

fn kind_of(t: nix::dir::Type) -> FileKind {
    use nix::dir::Type;
    match t {
        Type::File => FileKind::Regular,
        Type::Directory => FileKind::Directory,
        Type::Symlink => FileKind::Symlink,
        Type::Fifo => FileKind::Fifo,
        Type::Socket => FileKind::Socket,
        Type::CharacterDevice => FileKind::CharDevice,
        Type::BlockDevice => FileKind::BlockDevice,
    }
}

fn lstat_beneath(dir: &nix::dir::OwningIter, name: &OsStr) -> Result<FileKind, i32> {
    let st = crate::sys::lstat_in(dir, name).map_err(|e| e as i32)?;
    FileKind::from_mode(st.st_mode).ok_or(libc::EINVAL)
}

/// One entry of a [`ReadDir`] or a [`Walk`].
///
/// ```no_run
/// let broker = fdbroker_worker::Client::from_env()?;
/// for entry in broker.read_dir("/srv/in")? {
///     let entry = entry?;
///     println!("{} is a {}", entry.path().display(), entry.file_type()?.as_str());
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    path: PathBuf,
    name: OsString,
    kind: Result<FileKind, i32>,
}

impl DirEntry {
    /// The entry's name within its directory.
    ///
    /// ```no_run
    /// # let broker = fdbroker_worker::Client::from_env()?;
    /// let hidden = broker.read_dir("/srv/in")?.flatten()
    ///     .filter(|e| e.file_name().as_encoded_bytes().starts_with(b"."))
    ///     .count();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn file_name(&self) -> &OsStr {
        &self.name
    }

    /// The full path: the directory's path joined with [`file_name`](DirEntry::file_name),
    /// ready to give back to the broker.
    ///
    /// ```no_run
    /// # let broker = fdbroker_worker::Client::from_env()?;
    /// for entry in broker.read_dir("/srv/in")?.flatten() {
    ///     let _file = broker.open(entry.path());
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// The entry's type as the directory records it (not following a symbolic link):
    /// free on most filesystems, an `fstatat(2)` beneath the directory's descriptor on
    /// the others, whose error this returns.
    ///
    /// ```no_run
    /// # let broker = fdbroker_worker::Client::from_env()?;
    /// use fdbroker_worker::FileKind;
    /// let subdirs = broker.read_dir("/srv/in")?.flatten()
    ///     .filter(|e| matches!(e.file_type(), Ok(FileKind::Directory)))
    ///     .count();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn file_type(&self) -> io::Result<FileKind> {
        self.kind
            .map_err(|errno| with_path(io::Error::from_raw_os_error(errno), &self.path))
    }
}

/// Every entry beneath a directory, depth first ([`Client::walk`]). Directories are
/// listed through the broker as they are reached; symbolic links are reported and never
/// followed. A directory the broker refuses, or that cannot be read, is one `Err` whose
/// message names it; the walk then goes on.
///
/// ```no_run
/// let broker = fdbroker_worker::Client::from_env()?;
/// for entry in broker.walk("/var/spool/quarantine") {
///     match entry {
///         Ok(e) => println!("{}", e.path().display()),
///         Err(e) => eprintln!("skipped: {e}"),
///     }
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Walk<'c> {
    client: &'c Client,
    /// The root, until it is opened by the first `next`.
    start: Option<PathBuf>,
    stack: Vec<ReadDir>,
    /// Why the directory just reported could not be entered, reported next.
    pending: Option<io::Error>,
}

impl<'c> Walk<'c> {
    pub(crate) fn new(client: &'c Client, root: PathBuf) -> Walk<'c> {
        Walk {
            client,
            start: Some(root),
            stack: Vec::new(),
            pending: None,
        }
    }

    /// How deep the walk is now: 1 while it reads the root's own entries.
    ///
    /// ```no_run
    /// let broker = fdbroker_worker::Client::from_env()?;
    /// let mut walk = broker.walk("/srv/in");
    /// while let Some(entry) = walk.next() {
    ///     println!("{:indent$}{:?}", "", entry?.file_name(), indent = 2 * walk.depth());
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn depth(&self) -> usize {
        self.stack.len()
    }

    fn enter(&mut self, dir: PathBuf) -> Option<io::Result<DirEntry>> {
        match self.client.read_dir(&dir) {
            Ok(rd) => {
                self.stack.push(rd);
                None
            }
            Err(e) => Some(Err(with_path(e, &dir))),
        }
    }
}

impl Iterator for Walk<'_> {
    type Item = io::Result<DirEntry>;

    fn next(&mut self) -> Option<io::Result<DirEntry>> {
        if let Some(root) = self.start.take()
            && let Some(err) = self.enter(root)
        {
            return Some(err);
        }
        if let Some(e) = self.pending.take() {
            return Some(Err(e));
        }
        loop {
            let top = self.stack.last_mut()?;
            match top.next() {
                None => {
                    self.stack.pop();
                }
                Some(Ok(entry)) => {
                    if entry.kind == Ok(FileKind::Directory)
                        && let Some(Err(e)) = self.enter(entry.path())
                    {
                        // The directory is reported, then why it could not be entered.
                        self.pending = Some(e);
                    }
                    return Some(Ok(entry));
                }
                Some(Err(e)) => return Some(Err(e)),
            }
        }
    }
}

/// An error that says which path it is about, keeping its kind and, as its source, the
/// original error (a [`BrokerError`](crate::BrokerError) with the errno, say).
///
/// ```no_run
/// let broker = fdbroker_worker::Client::from_env()?;
/// for entry in broker.walk("/srv/in") {
///     if let Err(e) = entry {
///         eprintln!("{e}"); // "/srv/in/private: permission denied by the broker's policy"
///     }
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct PathError {
    path: PathBuf,
    source: io::Error,
}

impl PathError {
    /// The path the error is about.
    ///
    /// ```no_run
    /// let broker = fdbroker_worker::Client::from_env()?;
    /// for entry in broker.walk("/srv/in") {
    ///     if let Err(e) = entry {
    ///         if let Some(p) = e.get_ref().and_then(|e| e.downcast_ref::<fdbroker_worker::PathError>()) {
    ///             eprintln!("cannot list {}", p.path().display());
    ///         }
    ///     }
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.source)
    }
}

impl std::error::Error for PathError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

pub(crate) fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(
        e.kind(),
        PathError {
            path: path.to_owned(),
            source: e,
        },
    )
}
