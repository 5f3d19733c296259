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
    OpenMany {
        paths: Vec<Vec<u8>>,
        access: Access,
        flags: u32,
    },
}

/// One path to open. Paths are raw bytes: Linux file names need not be UTF-8.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct OpenSpec {
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
    OpenMany(Vec<Outcome>),
    /// The request as a whole was refused (over a limit, malformed batch, ...).
    Refused(WireError),
}

/// The result for one path.
pub type Outcome = Result<FileMeta, WireError>;

impl ReplyBody {
    /// How many descriptors must accompany this reply.
    pub fn descriptor_count(&self) -> usize {
        match self {
            ReplyBody::Open(o) => usize::from(o.is_ok()),
            ReplyBody::OpenMany(v) => v.iter().filter(|o| o.is_ok()).count(),
            ReplyBody::Refused(_) => 0,
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
