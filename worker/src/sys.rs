//! The calls of the client library that need `unsafe`, each behind a safe function:
//! the one module of this crate allowed it (the sandbox needs none).
//!
//! Each wrapper names the call it makes and takes or returns owned and borrowed
//! descriptors rather than bare numbers, so the invariant its `SAFETY:` line relies on
//! is checked here, not left to a caller.

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Adopt descriptor `n`, which the process environment hands to this library
/// (`FDBROKER_FD`), after `fcntl(2)` `F_GETFD` confirms it names an open descriptor.
///
/// Once per process: a second call fails with `EBUSY`, so this never makes a second
/// owner of the same number. A negative number fails with `EBADF`, a closed one with
/// the `EBADF` the probe reports.
pub(crate) fn adopt_inherited_fd(n: RawFd) -> nix::Result<OwnedFd> {
    static ADOPTED: AtomicBool = AtomicBool::new(false);
    if n < 0 {
        return Err(Errno::EBADF);
    }
    // SAFETY: `n` is not -1 (checked above), and the borrow serves only one
    // fcntl(F_GETFD) probe, which tolerates a closed number (it returns EBADF) and does
    // not outlive this call.
    let probe = unsafe { BorrowedFd::borrow_raw(n) };
    fcntl(probe, FcntlArg::F_GETFD)?;
    if ADOPTED.swap(true, Ordering::AcqRel) {
        return Err(Errno::EBUSY);
    }
    // SAFETY: `n` is open (checked above), the process environment hands it to this
    // library, and the flag above guarantees this is the only owner we create.
    let fd = unsafe { OwnedFd::from_raw_fd(n) };
    debug_assert_eq!(fd.as_raw_fd(), n);
    Ok(fd)
}

/// `fstatat(2)` with `AT_SYMLINK_NOFOLLOW` of `name` in the directory `dir` is reading.
///
/// nix's directory stream lends its descriptor only as a number.
pub(crate) fn lstat_in(
    dir: &nix::dir::OwningIter,
    name: &OsStr,
) -> nix::Result<nix::sys::stat::FileStat> {
    // SAFETY: the descriptor belongs to `dir`, which outlives this borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(dir.as_raw_fd()) };
    nix::sys::stat::fstatat(fd, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
}

/// Register a channel with tokio's reactor (`epoll_ctl(2)` `EPOLL_CTL_ADD`), which
/// tokio makes `unsafe` because the descriptor must stay the same open socket for as
/// long as it is registered.
#[cfg(feature = "tokio")]
pub(crate) fn register(
    channel: fdbroker_shared::Channel,
) -> std::io::Result<tokio::io::unix::AsyncFd<fdbroker_shared::Channel>> {
    // SAFETY: the Channel owns its descriptor, and nothing in the async client replaces
    // it (`Channel::replace_with` is never called on it), so it stays open and names the
    // same socket for as long as the AsyncFd holds the Channel.
    unsafe { tokio::io::unix::AsyncFd::register(channel) }.map_err(|e| e.into_parts().1)
}
