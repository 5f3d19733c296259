//! The messages that cross the socket, as plain serde types.
//!
//! Everything here is data a hostile peer controls once decoded: sizes are bounded by
//! the frame cap (see [`crate::frame`]), and every consumer validates paths, ids and
//! descriptor counts itself rather than trusting what a message claims.

use serde::{Deserialize, Serialize};

/// What the worker wants to do with a file; the broker maps it to exact open flags,
/// and a policy rule must grant it.
///
/// `ReadWrite` needs both `read` and `write` in the rule. `Create` is
/// `O_CREAT | O_EXCL` and never follows or replaces anything that already exists.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// `O_RDONLY` on a regular file (or a device if the rule says `devices = true`).
    Read,
    /// `O_WRONLY` on an existing file; with [`OPEN_TRUNC`] or [`OPEN_APPEND`].
    Write,
    /// `O_RDWR` on an existing file; needs both `read` and `write`.
    ReadWrite,
    /// `O_WRONLY | O_CREAT | O_EXCL` with the rule's fixed mode.
    Create,
    /// `O_RDONLY | O_DIRECTORY`, for listing.
    Directory,
}

impl Access {
    /// Every access, in a stable order (for help texts and tests).
    pub const ALL: [Access; 5] = [
        Access::Read,
        Access::Write,
        Access::ReadWrite,
        Access::Create,
        Access::Directory,
    ];

    /// The word used in policies, logs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::ReadWrite => "read-write",
            Access::Create => "create",
            Access::Directory => "directory",
        }
    }

    /// The `O_ACCMODE` bits a descriptor handed out for this access carries.
    pub fn access_mode(self) -> i32 {
        match self {
            Access::Read | Access::Directory => libc::O_RDONLY,
            Access::Write | Access::Create => libc::O_WRONLY,
            Access::ReadWrite => libc::O_RDWR,
        }
    }
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Access {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Access::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown access {s:?}: expected read, write, read-write, create or directory"
                )
            })
    }
}

/// Extra open flag: truncate on open (a write; only with `Write`/`ReadWrite`).
pub const OPEN_TRUNC: u32 = libc::O_TRUNC as u32;
/// Extra open flag: append-only writes (only with `Write`/`ReadWrite`).
pub const OPEN_APPEND: u32 = libc::O_APPEND as u32;
/// The only extra flag bits a request may carry; any other bit is refused with `EINVAL`.
pub const OPEN_FLAGS_ALLOWED: u32 = OPEN_TRUNC | OPEN_APPEND;

/// Most paths one `OpenMany` may carry and most outcomes its reply may: the protocol's
/// own cap, equal to the descriptors one reply can pass (a policy's `max_batch` is at
/// most this). Decoding refuses a longer list before reading its elements.
pub const MAX_BATCH: usize = crate::frame::MAX_FDS_PER_REPLY;

/// First message on a connection, client to broker.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The client's protocol version (also in the frame header).
    pub version: u16,
    /// Free-form client identification for the audit log (e.g. "fdbroker-worker 0.1.0").
    pub agent: String,
}

/// The broker's answer to [`Hello`]: the connection is served, or refused and closed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Welcome {
    Accepted(Accepted),
    Refused(WireError),
}

/// What a served client learns at connect time.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The policy client this connection was matched to.
    pub client: String,
    /// Most paths one `OpenMany` may carry on this broker.
    pub max_batch: u32,
}

/// One request; `id` is chosen by the client and echoed in the reply.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub id: u64,
    pub op: Op,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Open one file.
    Open(OpenSpec),
    /// Open several files with the same access; one outcome per path, in order.
    /// At most [`MAX_BATCH`] paths: a longer list is undecodable.
    OpenMany {
        #[serde(with = "bounded::paths")]
        paths: Vec<Vec<u8>>,
        access: Access,
        flags: u32,
    },
    /// The metadata of one path, answered with [`ReplyBody::Stat`] and no descriptor.
    ///
    /// Decided like an open: where the policy grants `read` or `directory` on the path,
    /// the broker resolves it beneath the rule's root exactly as it would for an open
    /// (an `O_PATH` descriptor, never a lookup by the path string) and `fstat`s what it
    /// found; anywhere else the answer is the same uniform denial an open gets.
    Stat(StatSpec),
    /// A new connection for the same client, answered with [`ReplyBody::Connected`] and
    /// one descriptor: a connected `SOCK_SEQPACKET` socket that the broker serves as a
    /// connection of its own, with this connection's identity (its peer credentials and
    /// how its policy client was chosen), and that starts with a [`Hello`] like any other.
    ///
    /// Accepted before the hello too, so the processes sharing one inherited connection
    /// (the children of a spawned worker) can each take a connection of their own
    /// without greeting the shared one. Subject to the broker's connection limits.
    Connect,
    /// The entries of one directory, answered with [`ReplyBody::List`] and no
    /// descriptor: a page of at most [`MAX_LIST_ENTRIES`] entries from entry `start` of
    /// the listing, in byte order of their names, without `.` and `..`.
    ///
    /// Decided like an open for `directory`; then the broker reads the directory
    /// beneath the rule's root and leaves out every entry the policy grants nothing on
    /// (a deny carve-out, a name outside every rule), so the worker learns of those no
    /// more than of a name that does not exist. This is how a worker lists a directory
    /// the broker will not pass a descriptor for (one with a deny rule beneath it).
    List(ListSpec),
    /// The metadata of one path without following its last component, and if that is
    /// a symbolic link, its target: answered with [`ReplyBody::Link`] and no
    /// descriptor (what `lstat(2)` and `readlink(2)` ask).
    ///
    /// Decided like a [`Op::Stat`]. Describing a link is not following it: where the
    /// rule does not follow links (`symlinks = "none"`), a link beneath the root is
    /// described itself; where it follows them (`"beneath"`), the answer is the
    /// [`Op::Stat`] of the path (the target), without a link target.
    Link(StatSpec),
    /// The broker's state for its operator (`fdbroker status`), answered with
    /// [`ReplyBody::Status`] and no descriptor: a JSON document.
    ///
    /// Accepted only before the hello, and only from a peer whose `SO_PEERCRED` uid is
    /// 0 or the broker's own; anyone else is refused with `EACCES`. Such a peer need not
    /// be a policy client: its connection serves this request and nothing else.
    Status,
}

impl Op {
    /// The most descriptors a reply to this request can carry.
    pub fn max_descriptors(&self) -> usize {
        match self {
            Op::Open(_) => 1,
            Op::OpenMany { paths, .. } => paths.len(),
            Op::Stat(_) => 0,
            Op::Connect => 1,
            Op::List(_) | Op::Link(_) => 0,
            Op::Status => 0,
        }
    }
}

/// One path to describe ([`Op::Stat`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StatSpec {
    #[serde(with = "bounded::bytes")]
    pub path: Vec<u8>,
}

/// One directory to list ([`Op::List`]), from entry `start` of its listing (0 for the
/// first page; a page's [`Listing::next`] for the one after it).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ListSpec {
    #[serde(with = "bounded::bytes")]
    pub path: Vec<u8>,
    pub start: u64,
}

/// Most entries one [`ReplyBody::List`] page may carry; decoding refuses a longer list
/// before reading its elements. A broker may send fewer (this one stops a page at a
/// byte budget well below [`crate::frame::MAX_MESSAGE`]): a client asks again from
/// [`Listing::next`] until it is 0.
pub const MAX_LIST_ENTRIES: usize = 512;

/// One page of a directory's listing ([`Op::List`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    #[serde(with = "bounded::entries")]
    pub entries: Vec<ListEntry>,
    /// Where the next page starts (its `start`), or 0 when this page is the last: a
    /// next page always starts after at least one entry, so 0 cannot mean one.
    pub next: u64,
}

/// One entry of a [`Listing`]: its name within the directory and its type, not
/// following a symbolic link.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ListEntry {
    #[serde(with = "bounded::bytes")]
    pub name: Vec<u8>,
    pub kind: FileKind,
}

/// One path to open. Paths are raw bytes: Linux file names need not be UTF-8.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct OpenSpec {
    #[serde(with = "bounded::bytes")]
    pub path: Vec<u8>,
    pub access: Access,
    /// Extra open flags, a subset of [`OPEN_FLAGS_ALLOWED`].
    pub flags: u32,
}

/// The broker's answer to one [`Request`]. Descriptors for the `Ok` outcomes travel
/// in the same message as `SCM_RIGHTS`, in outcome order, exactly one per `Ok`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub id: u64,
    pub body: ReplyBody,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum ReplyBody {
    Open(Outcome),
    /// At most [`MAX_BATCH`] outcomes, like the request it answers.
    OpenMany(#[serde(with = "bounded::outcomes")] Vec<Outcome>),
    /// The request as a whole was refused (over a limit, malformed batch, ...).
    Refused(WireError),
    /// The answer to an [`Op::Stat`]; never carries a descriptor.
    Stat(Result<StatMeta, WireError>),
    /// The answer to an [`Op::Connect`]: exactly one descriptor, the new connection.
    Connected,
    /// The answer to an [`Op::List`]; never carries a descriptor.
    List(Result<Listing, WireError>),
    /// The answer to an [`Op::Link`]; never carries a descriptor. Boxed (the bytes are
    /// the same) to keep every reply small.
    Link(Result<Box<LinkMeta>, WireError>),
    /// The answer to an [`Op::Status`]: the broker's state as one JSON object (see
    /// `fdbroker status --json`); never carries a descriptor.
    Status(Result<String, WireError>),
}

/// What the broker saw of a path without following its last component ([`Op::Link`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LinkMeta {
    pub meta: StatMeta,
    /// The symbolic link's target, as `readlink(2)` gives it; empty when the path is not
    /// a link (a link's target is never empty).
    #[serde(with = "bounded::bytes")]
    pub target: Vec<u8>,
}

/// The result for one path.
pub type Outcome = Result<FileMeta, WireError>;

impl ReplyBody {
    /// How many descriptors must accompany this reply.
    pub fn descriptor_count(&self) -> usize {
        match self {
            ReplyBody::Open(o) => usize::from(o.is_ok()),
            ReplyBody::OpenMany(v) => v.iter().filter(|o| o.is_ok()).count(),
            ReplyBody::Refused(_)
            | ReplyBody::Stat(_)
            | ReplyBody::List(_)
            | ReplyBody::Link(_)
            | ReplyBody::Status(_) => 0,
            ReplyBody::Connected => 1,
        }
    }
}

/// What the broker saw when it `fstat`ed the descriptor it is handing out.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileMeta {
    pub kind: FileKind,
    pub size: u64,
    pub dev: u64,
    pub ino: u64,
    /// Permission bits and file type, as in `st_mode`.
    pub mode: u32,
    pub nlink: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
}

/// What the broker saw when it `fstat`ed a path for [`Op::Stat`]: everything of
/// [`FileMeta`] and the rest of `struct stat`, so a caller can answer a `stat(2)` with it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatMeta {
    pub file: FileMeta,
    pub uid: u32,
    pub gid: u32,
    /// The device a character or block device file stands for (`st_rdev`).
    pub rdev: u64,
    pub blksize: u64,
    /// 512-byte blocks allocated (`st_blocks`).
    pub blocks: u64,
    pub atime_sec: i64,
    pub atime_nsec: u32,
    pub ctime_sec: i64,
    pub ctime_nsec: u32,
}

impl FileMeta {
    /// What a `struct stat` says, in these terms; `None` for a file type Linux does not
    /// define. One conversion for the broker's `fstat` and the transparent supervisor's
    /// own `stat`, so the two never describe a file differently.
    pub fn of(st: &libc::stat) -> Option<FileMeta> {
        Some(FileMeta {
            kind: FileKind::from_mode(st.st_mode)?,
            size: st.st_size.max(0) as u64,
            dev: st.st_dev,
            ino: st.st_ino,
            mode: st.st_mode,
            nlink: st.st_nlink,
            mtime_sec: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec.clamp(0, 999_999_999) as u32,
        })
    }
}

impl StatMeta {
    /// A `struct stat` whole, with `file` (what [`FileMeta::of`] made of it).
    pub fn of(st: &libc::stat, file: FileMeta) -> StatMeta {
        StatMeta {
            file,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev,
            blksize: st.st_blksize.max(0) as u64,
            blocks: st.st_blocks.max(0) as u64,
            atime_sec: st.st_atime,
            atime_nsec: st.st_atime_nsec.clamp(0, 999_999_999) as u32,
            ctime_sec: st.st_ctime,
            ctime_nsec: st.st_ctime_nsec.clamp(0, 999_999_999) as u32,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
    Symlink,
}

impl FileKind {
    /// Classify an `st_mode`; `None` for a type Linux does not define.
    pub fn from_mode(mode: u32) -> Option<FileKind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => FileKind::Regular,
            libc::S_IFDIR => FileKind::Directory,
            libc::S_IFCHR => FileKind::CharDevice,
            libc::S_IFBLK => FileKind::BlockDevice,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFSOCK => FileKind::Socket,
            libc::S_IFLNK => FileKind::Symlink,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Regular => "regular file",
            FileKind::Directory => "directory",
            FileKind::CharDevice => "character device",
            FileKind::BlockDevice => "block device",
            FileKind::Fifo => "fifo",
            FileKind::Socket => "socket",
            FileKind::Symlink => "symlink",
        }
    }
}

/// An error as it crosses the wire: an errno for `ErrorKind`, and the broker's reason.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct WireError {
    pub errno: i32,
    pub message: String,
}

impl WireError {
    pub fn new(errno: i32, message: impl Into<String>) -> Self {
        WireError {
            errno,
            message: message.into(),
        }
    }
}

/// Deserializers that allocate only what the message can hold.
///
/// serde's derived `Vec<T>` trusts the length prefix for up to 1 MiB of
/// preallocation, so a 40-byte frame claiming a huge vector made the decoder allocate
/// 1 MiB before failing, and 8,000 empty paths in one 64 KiB frame cost 190 KiB of
/// vector headers. Here byte strings go through `deserialize_byte_buf` (bincode checks
/// their length against the frame cap before allocating) and lists are capped at
/// [`MAX_BATCH`]. The encoding is unchanged: bincode writes bytes and a sequence of
/// `u8` identically (a `u64` length, then the bytes).
mod bounded {
    use super::{MAX_BATCH, MAX_LIST_ENTRIES};
    use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
    use serde::ser::{Serialize, Serializer};
    use std::fmt;
    use std::marker::PhantomData;

    /// One byte string, decoded as a byte buffer rather than a sequence of `u8`.
    struct Bytes(Vec<u8>);

    struct BytesRef<'a>(&'a [u8]);

    impl Serialize for BytesRef<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    impl<'de> Deserialize<'de> for Bytes {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_byte_buf(BytesVisitor).map(Bytes)
        }
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        /// Formats without a native byte string: grow as bytes arrive, never by the hint.
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut v = Vec::new();
            while let Some(b) = seq.next_element::<u8>()? {
                v.push(b);
            }
            Ok(v)
        }
    }

    /// A list of at most `N` elements ([`MAX_BATCH`], [`MAX_LIST_ENTRIES`]), refused on
    /// its length prefix alone.
    struct Capped<T, const N: usize>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for Capped<T, N> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a list of at most {N} elements")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let too_long = |n: usize| {
                de::Error::custom(format_args!(
                    "list of {n} elements exceeds the protocol's limit of {N}"
                ))
            };
            let hint = seq.size_hint().unwrap_or(0);
            if hint > N {
                return Err(too_long(hint));
            }
            let mut v = Vec::with_capacity(hint);
            while let Some(item) = seq.next_element()? {
                if v.len() == N {
                    return Err(too_long(N + 1));
                }
                v.push(item);
            }
            Ok(v)
        }
    }

    pub mod bytes {
        use super::*;

        pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(v)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
            d.deserialize_byte_buf(BytesVisitor)
        }
    }

    pub mod paths {
        use super::*;

        pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(v.iter().map(|p| BytesRef(p)))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
            let v: Vec<Bytes> = d.deserialize_seq(Capped::<Bytes, MAX_BATCH>(PhantomData))?;
            Ok(v.into_iter().map(|b| b.0).collect())
        }
    }

    pub mod outcomes {
        use super::*;
        use crate::wire::Outcome;

        pub fn serialize<S: Serializer>(v: &[Outcome], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(v)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Outcome>, D::Error> {
            d.deserialize_seq(Capped::<Outcome, MAX_BATCH>(PhantomData))
        }
    }

    pub mod entries {
        use super::*;
        use crate::wire::ListEntry;

        pub fn serialize<S: Serializer>(v: &[ListEntry], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(v)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ListEntry>, D::Error> {
            d.deserialize_seq(Capped::<ListEntry, MAX_LIST_ENTRIES>(PhantomData))
        }
    }
}
