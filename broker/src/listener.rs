//! The listening socket: created with the policy's mode and group, or inherited.
//!
//! A socket file the broker creates is removed when the [`Listener`] drops, but only if
//! the path still names *that* socket (same device and inode), so a successor broker's
//! socket is never deleted by a predecessor shutting down late.

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, open};
use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
use nix::sys::stat::{Mode, SFlag, fstat, umask};
use nix::unistd::{Gid, fchownat, geteuid};
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

const BACKLOG: i32 = 1024;

/// A listening `SOCK_SEQPACKET` Unix socket.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    /// Set when this process created the socket file and should remove it.
    created: Option<Created>,
}

/// A socket file this process answers for: dropping it removes the file if the path
/// still names that very file (a successor may have replaced it).
#[derive(Debug)]
struct Created {
    path: PathBuf,
    dev: u64,
    ino: u64,
    /// Cleared by [`Created::keep`]: the file outlives this value.
    remove: bool,
}

impl Created {
    fn new(path: PathBuf, dev: u64, ino: u64) -> Created {
        Created {
            path,
            dev,
            ino,
            remove: true,
        }
    }

    /// Let go of the file without removing it.
    fn keep(mut self) {
        self.remove = false;
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        if !self.remove {
            return;
        }
        let ours = fs::symlink_metadata(&self.path)
            .map(|m| m.dev() == self.dev && m.ino() == self.ino)
            .unwrap_or(false);
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl Listener {
    /// Create the socket at `path` with exactly `mode` and, if given, group `gid`.
    ///
    /// A stale socket (nobody accepting) is replaced; a live one, or anything that is
    /// not a socket, is an error: replacing it would hijack another broker or destroy
    /// an operator's file. The missing parent directory is created (0755).
    pub fn bind(path: &Path, mode: u32, gid: Option<u32>) -> io::Result<Listener> {
        let ctx = |e: io::Error, what: &str| {
            io::Error::new(e.kind(), format!("{}: {what}: {e}", path.display()))
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !parent.exists() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)
                    .map_err(|e| ctx(e, "cannot create its directory"))?;
            }
        }
        remove_if_stale(path)?;
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        let addr = UnixAddr::new(path)?;
        // bind creates the file with 0777 & ~umask: with this umask, exactly `mode`,
        // so no chmod by path follows (which a symlink swapped in after bind could
        // redirect to another file). Start-up is single-threaded: the swap is safe.
        let old = umask(Mode::from_bits_truncate(0o777 & !mode));
        let bound = socket::bind(fd.as_raw_fd(), &addr);
        umask(old);
        bound.map_err(|e| ctx(e.into(), "cannot bind"))?;
        // What bind created, held by descriptor: the checks and the chown below apply
        // to this one file, whatever is renamed in the directory meanwhile.
        let file = open(
            path,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ctx(e.into(), "cannot open what was bound"))?;
        let meta = fstat(&file).map_err(|e| ctx(e.into(), "cannot stat"))?;
        let is_socket = SFlag::from_bits_truncate(meta.st_mode) & SFlag::S_IFMT == SFlag::S_IFSOCK;
        // One name only: a root-owned socket hard-linked here in the moment after bind
        // (where protected_hardlinks is off) is not ours.
        if !is_socket || meta.st_uid != geteuid().as_raw() || meta.st_nlink != 1 {
            return Err(ctx(
                io::Error::new(io::ErrorKind::AlreadyExists, "replaced while binding"),
                "not the socket bound",
            ));
        }
        let listener = Listener {
            fd,
            created: Some(Created::new(path.to_owned(), meta.st_dev, meta.st_ino)),
        };
        if let Some(gid) = gid {
            fchownat(
                &file,
                "",
                None,
                Some(Gid::from_raw(gid)),
                AtFlags::AT_EMPTY_PATH,
            )
            .map_err(|e| ctx(e.into(), "cannot set its group"))?;
        }
        socket::listen(
            &listener.fd,
            Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN),
        )
        .map_err(|e| ctx(e.into(), "cannot listen"))?;
        Ok(listener)
    }

    /// Adopt an already listening socket (systemd socket activation, tests). It must be
    /// an `AF_UNIX` `SOCK_SEQPACKET` socket in the listening state.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Listener> {
        let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
        let ty = socket::getsockopt(&fd, socket::sockopt::SockType)
            .map_err(|e| invalid(format!("inherited descriptor is not a socket: {e}")))?;
        if ty != SockType::SeqPacket {
            return Err(invalid(format!(
                "inherited socket is {ty:?}; fdbroker needs SOCK_SEQPACKET \
                 (ListenSequentialPacket= in the .socket unit)"
            )));
        }
        let listening = socket::getsockopt(&fd, socket::sockopt::AcceptConn)
            .map_err(|e| invalid(format!("cannot query the inherited socket: {e}")))?;
        if !listening {
            return Err(invalid("inherited socket is not listening".into()));
        }
        let _: UnixAddr = socket::getsockname(fd.as_raw_fd())
            .map_err(|_| invalid("inherited socket is not an AF_UNIX socket".into()))?;
        nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        Ok(Listener { fd, created: None })
    }

    /// The socket file this listener created, if any.
    pub fn path(&self) -> Option<&Path> {
        self.created.as_ref().map(|c| c.path.as_path())
    }

    /// The socket file as `PATH\tDEV\tINO`, for a successor that adopts this listener
    /// and removes the file when it stops for good ([`Listener::adopt_file`]).
    pub fn file_identity(&self) -> Option<String> {
        self.created
            .as_ref()
            .map(|c| format!("{}\t{}\t{}", c.path.display(), c.dev, c.ino))
    }

    /// Make this (adopted) listener the owner of the socket file `identity` names
    /// ([`Listener::file_identity`]): dropping it removes the file if it is still
    /// that one. A malformed identity is ignored.
    pub fn adopt_file(&mut self, identity: &str) {
        let mut parts = identity.split('\t');
        if let (Some(path), Some(dev), Some(ino), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
            && let (Ok(dev), Ok(ino)) = (dev.parse(), ino.parse())
        {
            if let Some(old) = self
                .created
                .replace(Created::new(PathBuf::from(path), dev, ino))
            {
                old.keep();
            }
        }
    }

    /// Keep the socket file when this listener drops: a successor serves it now.
    pub fn keep_file(&mut self) {
        if let Some(c) = self.created.take() {
            c.keep();
        }
    }

    /// The listening descriptor, without removing any file.
    pub fn into_fd(self) -> OwnedFd {
        let Listener { fd, created } = self;
        if let Some(c) = created {
            c.keep();
        }
        fd
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn remove_if_stale(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ),
        ));
    }
    let probe = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    match socket::connect(probe.as_raw_fd(), &UnixAddr::new(path)?) {
        Ok(()) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{}: another broker is listening there", path.display()),
        )),
        Err(Errno::ECONNREFUSED) | Err(Errno::EPROTOTYPE) => {
            fs::remove_file(path)?;
            Ok(())
        }
        Err(e) => Err(io::Error::new(
            io::Error::from(e).kind(),
            format!(
                "{}: cannot tell whether the socket is stale: {e}",
                path.display()
            ),
        )),
    }
}

/// Is `meta` a socket? (for tests and diagnostics)
pub fn is_socket(path: &Path) -> bool {
    nix::sys::stat::lstat(path)
        .map(|st| SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFSOCK)
        .unwrap_or(false)
}
