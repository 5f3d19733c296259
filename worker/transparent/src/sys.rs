//! The supervisor's raw system calls: the one module of this crate that may use
//! `unsafe` (besides the fork of the program, allowed where it is made).
//!
//! Each wrapper names the call it makes and links its manual page; callers see only
//! safe functions with typed arguments, never a raw pointer. Where nix has a safe
//! wrapper that keeps the behaviour (`process_vm_readv`, `prctl`, `signalfd`, ...), the
//! crate uses nix and nothing is added here.

use crate::uapi;
use nix::sys::signal::Signal;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// [`seccomp(2)`](https://man7.org/linux/man-pages/man2/seccomp.2.html)
/// `SECCOMP_SET_MODE_FILTER` with `SECCOMP_FILTER_FLAG_NEW_LISTENER |
/// SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`: installs `filter` on the calling thread and
/// returns the notification listener. Needs `no_new_privs` (or `CAP_SYS_ADMIN`).
pub fn seccomp_new_listener(filter: &[libc::sock_filter]) -> io::Result<OwnedFd> {
    let len = u16::try_from(filter.len()).map_err(|_| io::Error::other("filter too long"))?;
    let prog = libc::sock_fprog {
        len,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points to `filter`, alive for the call; the kernel copies it.
    // no_new_privs is set (the sandbox did). The return value is a new descriptor
    // owned by nobody else.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            uapi::SECCOMP_SET_MODE_FILTER,
            uapi::FLAG_NEW_LISTENER | uapi::FLAG_WAIT_KILLABLE_RECV,
            &prog as *const libc::sock_fprog,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just returned, owned here alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `ioctl(2)` on the listener with a pointer to a structure of the request's size.
///
/// Private: each request has its own typed wrapper below, so no caller can pair a
/// request with a value of another size.
fn ioctl<T>(fd: BorrowedFd<'_>, request: u32, arg: &mut T) -> io::Result<()> {
    // SAFETY: every caller in this module passes a live, properly sized `repr(C)` value
    // matching `request` (the request encodes that size), for the duration of the call.
    #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            request as libc::Ioctl,
            (arg as *mut T).cast::<libc::c_void>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// [`SECCOMP_IOCTL_NOTIF_RECV`](https://man7.org/linux/man-pages/man2/seccomp_unotify.2.html):
/// the next notification, blocking until one is pending.
pub fn notif_recv(listener: BorrowedFd<'_>) -> io::Result<uapi::Notif> {
    // The kernel wants the structure zeroed on entry.
    let mut n = uapi::Notif::default();
    ioctl(listener, uapi::IOCTL_RECV, &mut n)?;
    Ok(n)
}

/// [`SECCOMP_IOCTL_NOTIF_SEND`](https://man7.org/linux/man-pages/man2/seccomp_unotify.2.html):
/// answers the notification `resp.id`; fails for one that is gone.
pub fn notif_send(listener: BorrowedFd<'_>, resp: uapi::Resp) -> io::Result<()> {
    let mut resp = resp;
    ioctl(listener, uapi::IOCTL_SEND, &mut resp)
}

/// [`SECCOMP_IOCTL_NOTIF_ID_VALID`](https://man7.org/linux/man-pages/man2/seccomp_unotify.2.html):
/// whether the notification `id` is still pending (its thread still blocked in the call).
pub fn notif_id_valid(listener: BorrowedFd<'_>, id: u64) -> bool {
    let mut id = id;
    ioctl(listener, uapi::IOCTL_ID_VALID, &mut id).is_ok()
}

/// [`SECCOMP_IOCTL_NOTIF_ADDFD`](https://man7.org/linux/man-pages/man2/seccomp_unotify.2.html):
/// installs `add.srcfd` in the notifying process (with `SECCOMP_ADDFD_FLAG_SEND`, also
/// answering the call with its number, in one step).
pub fn notif_addfd(listener: BorrowedFd<'_>, add: uapi::AddFd) -> io::Result<()> {
    let mut add = add;
    ioctl(listener, uapi::IOCTL_ADDFD, &mut add)
}

/// [`SECCOMP_IOCTL_NOTIF_SET_FLAGS`](https://man7.org/linux/man-pages/man2/seccomp_unotify.2.html)
/// (Linux 6.6): `flags` for the listener, such as `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`.
pub fn notif_set_flags(listener: BorrowedFd<'_>, flags: u64) -> io::Result<()> {
    // SAFETY: this request takes its argument by value (a flag word), not a pointer.
    #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            uapi::IOCTL_SET_FLAGS as libc::Ioctl,
            flags,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub use fdbroker_shared::process::{close_all_but, exit_now};

/// [`pidfd_open(2)`](https://man7.org/linux/man-pages/man2/pidfd_open.2.html) with
/// `PIDFD_THREAD` (Linux 6.9): a descriptor for thread `tid` of this pid namespace, not
/// only for a thread-group leader.
pub fn pidfd_open_thread(tid: i32) -> io::Result<OwnedFd> {
    fdbroker_shared::process::pidfd_open(tid, uapi::PIDFD_THREAD)
}

/// [`signal(2)`](https://man7.org/linux/man-pages/man2/signal.2.html) `SIG_DFL`: the
/// default disposition for `sig`, so that raising it ends this process as it ended the
/// program.
pub fn default_disposition(sig: Signal) -> io::Result<()> {
    // SAFETY: resetting a disposition to the default has no memory effects.
    unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl) }?;
    Ok(())
}

/// The plain C structures the kernel's stat calls fill in: integers only, their padding
/// spelled out as (possibly uninitialised) fields, so all-zero is a valid value.
///
/// # Safety
///
/// Implement only for such a `repr(C)` structure whose padding is named fields.
pub unsafe trait Plain: Copy {}

// SAFETY: `libc::stat` is integers only; its padding is named fields (`__pad0`, ...).
unsafe impl Plain for libc::stat {}
// SAFETY: `libc::statx` is integers and `statx_timestamp`s (integers), padding named.
unsafe impl Plain for libc::statx {}
// SAFETY: `libc::statfs` is integers and an `fsid_t` (two integers), spare words named.
unsafe impl Plain for libc::statfs {}

/// [`fstatfs(2)`](https://man7.org/linux/man-pages/man2/fstatfs.2.html): `struct statfs`
/// of the filesystem `fd` is on, as the bytes the kernel wrote (what `statfs(2)` would
/// write into the program's memory for a path on it).
pub fn fstatfs_bytes(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let mut rc = 0;
    let bytes = zeroed_bytes(|st: &mut libc::statfs| {
        // SAFETY: `st` is a live, writable `struct statfs` for the duration of the call.
        rc = unsafe { libc::fstatfs(fd.as_raw_fd(), st) };
    });
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(bytes)
}

/// The bytes of a `T` that starts all-zero and is then filled in by `fill`, as the
/// kernel would write it into the program's memory: padding the caller never touches
/// stays zero, so no byte of the broker's memory leaks into the program.
pub fn zeroed_bytes<T: Plain>(fill: impl FnOnce(&mut T)) -> Vec<u8> {
    // SAFETY: `Plain` promises all-zero is a valid `T`.
    let mut v: T = unsafe { std::mem::zeroed() };
    fill(&mut v);
    // SAFETY: every byte of `v` was zeroed, and `fill` can only assign its public
    // integer fields (the padding fields are private to `libc`), so every byte is
    // initialised; the slice lives only for the copy.
    unsafe { std::slice::from_raw_parts((&v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
        .to_vec()
}
