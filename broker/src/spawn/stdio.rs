//! The standard descriptors `fdbroker run` hands its worker, checked before it starts.
//!
//! The worker keeps stdin, stdout and stderr whatever they are (everything else it
//! inherited is closed at its exec, see `worker.rs`). A directory there (`0</some/dir`)
//! or an `O_PATH` handle would be a starting point for the worker's own `fstatat`,
//! `readlinkat` or `/proc/self/fd/N/...` lookups, past root-only directories above it and
//! into what the policy denies. Refused, naming the descriptor, rather than replaced
//! behind the operator's back; a descriptor that is not open is no handle at all.

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::stat::{SFlag, fstat};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

/// What makes a standard descriptor a handle the worker must not get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handle {
    /// A directory, opened for reading or as `O_PATH`.
    Directory,
    /// An `O_PATH` handle on anything else (a file, a symbolic link).
    PathHandle,
}

impl std::fmt::Display for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Handle::Directory => "a directory",
            Handle::PathHandle => "an O_PATH handle",
        })
    }
}

/// The first of stdin, stdout and stderr that is a [`Handle`], with its number and name;
/// an error when one cannot be looked at.
pub fn first_handle() -> io::Result<Option<(i32, &'static str, Handle)>> {
    let stdin = io::stdin();
    let stdout = io::stdout();
    let stderr = io::stderr();
    let fds: [(i32, &'static str, BorrowedFd<'_>); 3] = [
        (0, "standard input", stdin.as_fd()),
        (1, "standard output", stdout.as_fd()),
        (2, "standard error", stderr.as_fd()),
    ];
    for (n, name, fd) in fds {
        if let Some(h) = handle(fd)? {
            return Ok(Some((n, name, h)));
        }
    }
    Ok(None)
}

/// Whether `fd` is a [`Handle`]; `None` for one that is not open.
pub(crate) fn handle(fd: BorrowedFd<'_>) -> io::Result<Option<Handle>> {
    let flags = match fcntl(fd, FcntlArg::F_GETFL) {
        Ok(flags) => OFlag::from_bits_retain(flags),
        Err(Errno::EBADF) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let st = fstat(fd)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
        return Ok(Some(Handle::Directory));
    }
    if flags.contains(OFlag::O_PATH) {
        return Ok(Some(Handle::PathHandle));
    }
    Ok(None)
}
