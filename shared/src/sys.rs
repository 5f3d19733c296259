//! The system calls the socket layer makes that neither std nor nix wraps safely, each
//! behind a safe function: the one module of this crate allowed `unsafe`.
//!
//! Each wrapper names the call it makes and its manual page, and takes or returns
//! owned and borrowed descriptors rather than bare numbers, so the invariant its
//! `SAFETY:` line relies on is checked here and never left to a caller. Where nix has
//! a safe wrapper that keeps the behaviour (`recvmsg`, `accept4`, `SO_PEERCRED`), it is
//! used, and only the step nix leaves raw (adopting the descriptors it returns) is here.

use nix::errno::Errno;
use nix::sys::socket::{self, MsgFlags, SockFlag};
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `dup3(2)` with `O_CLOEXEC`: make the number `onto` refer to `from`'s open file,
/// closing what it referred to before, in one step.
///
/// nix's `dup3` wants the target as `&mut OwnedFd`; a [`Channel`](crate::Channel) lends
/// its number only shared (a reconnecting client is used from many threads), hence the
/// raw call.
pub(crate) fn dup3_cloexec(from: BorrowedFd<'_>, onto: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: both numbers are open descriptors borrowed for the call. dup3 closes and
    // replaces `onto`'s file in one step; the number stays owned by its one owner (the
    // Channel that lent it), which now owns the new file, and `from` is untouched.
    let r = unsafe { libc::dup3(from.as_raw_fd(), onto.as_raw_fd(), libc::O_CLOEXEC) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `accept4(2)` with `flags`, the new connection owned from the moment it exists.
pub(crate) fn accept4(listener: BorrowedFd<'_>, flags: SockFlag) -> nix::Result<OwnedFd> {
    let raw = socket::accept4(listener.as_raw_fd(), flags)?;
    // SAFETY: accept4 just returned `raw` as a new descriptor owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `ioctl(2)` `SIOCOUTQ` (alias `TIOCOUTQ`, see `unix(7)`): bytes sent on `sock` that
/// the peer has not received yet.
pub(crate) fn unreceived_bytes(sock: BorrowedFd<'_>) -> io::Result<usize> {
    let mut queued: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ) on a socket writes one int through the pointer,
    // which points at a live, writable c_int for the duration of the call.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(queued).unwrap_or(0))
}

/// One message received with [`recv_rights`]: its length and flags, and every
/// descriptor that came with it, already owned.
pub(crate) struct Received {
    pub(crate) bytes: usize,
    pub(crate) flags: MsgFlags,
    pub(crate) fds: Vec<OwnedFd>,
    /// A control message other than `SCM_RIGHTS` arrived.
    pub(crate) foreign_control: bool,
}

/// `recvmsg(2)` into `buf` with `control` as the control buffer and
/// `MSG_CMSG_CLOEXEC` (see `unix(7)`, `cmsg(3)`), retried on `EINTR`, every descriptor
/// that arrived adopted before anything else looks at the message.
///
/// `control` is zeroed here first: the walk that adopts descriptors must never see a
/// header left over from an earlier message.
pub(crate) fn recv_rights(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    control: &mut [u8],
) -> io::Result<Received> {
    control.fill(0);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = loop {
        match socket::recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut *control),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(Errno::EINTR) => continue,
            r => break r.map_err(io::Error::from)?,
        }
    };
    let (bytes, flags) = (msg.bytes, msg.flags);
    // Take ownership first: from here on every early return closes them. nix will
    // not iterate a truncated control buffer, yet the kernel has installed the
    // descriptors that fit, so the buffer is walked here in every case.
    let (fds, foreign_control) = take_scm_rights(control);
    Ok(Received {
        bytes,
        flags,
        fds,
        foreign_control,
    })
}

/// Walk a control buffer the kernel filled (and that started zeroed) and adopt every
/// `SCM_RIGHTS` descriptor in it. Returns whether any other control message was seen.
///
/// The kernel writes only whole `cmsghdr`s, shrinking the descriptor array to what fits
/// on truncation, so a header whose length is zero or runs past the buffer ends the walk.
fn take_scm_rights(control: &[u8]) -> (Vec<OwnedFd>, bool) {
    const HDR: usize = std::mem::size_of::<libc::cmsghdr>();
    const ALIGN: usize = std::mem::size_of::<usize>();
    let align = |n: usize| n.div_ceil(ALIGN) * ALIGN;
    let word = |at: usize| -> Option<usize> {
        let b = control.get(at..at + ALIGN)?;
        Some(usize::from_ne_bytes(b.try_into().ok()?))
    };
    let int = |at: usize| -> Option<i32> {
        let b = control.get(at..at + 4)?;
        Some(i32::from_ne_bytes(b.try_into().ok()?))
    };
    let mut fds = Vec::new();
    let mut foreign = false;
    let mut at = 0;
    while let (Some(len), Some(level), Some(ty)) = (word(at), int(at + ALIGN), int(at + ALIGN + 4))
    {
        if len < HDR || at + len > control.len() {
            break;
        }
        let data = &control[at + align(HDR)..at + len];
        if level == libc::SOL_SOCKET && ty == libc::SCM_RIGHTS {
            fds.extend(
                data.chunks_exact(4)
                    .filter_map(|c| c.try_into().ok())
                    .map(|c| adopt_received_fd(RawFd::from_ne_bytes(c))),
            );
        } else {
            foreign = true;
        }
        at += align(len);
    }
    (fds, foreign)
}

fn adopt_received_fd(raw: RawFd) -> OwnedFd {
    // SAFETY: the kernel installed `raw` in our table for this recvmsg and nothing
    // else refers to it; this OwnedFd becomes its only owner.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

/// A control buffer for one `SCM_RIGHTS` message of up to
/// [`MAX_FDS_PER_REPLY`](crate::frame::MAX_FDS_PER_REPLY) descriptors, aligned for
/// `cmsghdr` (the header, at most 24 bytes with its padding, then the numbers).
#[repr(C, align(8))]
struct RightsBuffer([u8; RIGHTS_LEN]);

const RIGHTS_LEN: usize = 32 + crate::frame::MAX_FDS_PER_REPLY * size_of::<RawFd>();

/// `sendmsg(2)` of `bytes` with `fds` as one `SCM_RIGHTS` message and `MSG_NOSIGNAL`,
/// from a stack buffer. `fds` must be non-empty and fit [`RightsBuffer`]
/// (`EINVAL` otherwise).
///
/// nix's `sendmsg` builds its control buffer in a fresh `Vec`; this one allocates
/// nothing, which is why it is here.
pub(crate) fn send_rights(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[RawFd]) -> nix::Result<usize> {
    let mut control = RightsBuffer([0; RIGHTS_LEN]);
    let data_len = std::mem::size_of_val(fds);
    let (Ok(data_len_c), false) = (u32::try_from(data_len), fds.is_empty()) else {
        return Err(Errno::EINVAL);
    };
    // SAFETY: CMSG_SPACE and CMSG_LEN are pure size computations.
    let (space, len) = unsafe { (libc::CMSG_SPACE(data_len_c), libc::CMSG_LEN(data_len_c)) };
    if space as usize > control.0.len() {
        return Err(Errno::EINVAL);
    }
    let mut iov = libc::iovec {
        // The kernel only reads through this pointer for sendmsg.
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` points at `control`, aligned for cmsghdr and at least `space` bytes
    // long (checked above), so CMSG_FIRSTHDR is non-null and the header and `len`
    // bytes of data after it (len <= space) lie inside `control`; `fds` is
    // `data_len` bytes. sendmsg only reads `msg`, `iov`, `bytes` and `control`, all
    // live for the call.
    let sent = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = len as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(cmsg), data_len);
        libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
    };
    Errno::result(sent).map(|n| n as usize)
}

/// `CMSG_SPACE` (see `cmsg(3)`) for `n` descriptors: the control buffer is sized for
/// exactly the protocol's cap, so one more descriptor shows up as `MSG_CTRUNC`.
pub(crate) fn cmsg_space_for_fds(n: usize) -> usize {
    let bytes = (n * std::mem::size_of::<RawFd>()) as u32;
    // SAFETY: CMSG_SPACE is a pure size computation on its argument.
    unsafe { libc::CMSG_SPACE(bytes) as usize }
}

/// One `getsockopt(2)` of `SO_PEERGROUPS` (see `unix(7)`) into `buf`: how many groups
/// it holds, or on `ERANGE` how many it would need (`Err(None)`: another error, in
/// `errno`). nix has no wrapper for this option.
pub(crate) fn peer_groups(sock: BorrowedFd<'_>, buf: &mut [u32]) -> Result<usize, Option<usize>> {
    let mut bytes = libc::socklen_t::try_from(std::mem::size_of_val(buf)).unwrap_or(0);
    // SAFETY: the kernel writes at most `bytes` bytes through the pointer, which points
    // at `buf`, live and writable for the call, and updates `bytes` through its pointer.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERGROUPS,
            buf.as_mut_ptr().cast(),
            &mut bytes,
        )
    };
    let count = bytes as usize / std::mem::size_of::<u32>();
    if rc == 0 {
        Ok(count.min(buf.len()))
    } else if io::Error::last_os_error().raw_os_error() == Some(libc::ERANGE) {
        Err(Some(count))
    } else {
        Err(None)
    }
}

/// [`pidfd_open(2)`](https://man7.org/linux/man-pages/man2/pidfd_open.2.html): a
/// descriptor that names process (or, with `PIDFD_THREAD`, thread) `pid` for as long as
/// it is held, so a later signal or check cannot reach another that reused the number.
pub fn pidfd_open(pid: i32, flags: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes integers by value and returns a new descriptor, owned
    // here from now on, or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just returned, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// [`close_range(2)`](https://man7.org/linux/man-pages/man2/close_range.2.html) with no
/// flags.
///
/// # Safety
///
/// Closes descriptors other values own. Only for a forked child that will `exec` or
/// `_exit` without using, or dropping, any value that owns a descriptor in the range:
/// those values are copies of the parent's, and must never close a number again (it
/// may name a new descriptor by then).
pub unsafe fn close_range(first: u32, last: u32) -> io::Result<()> {
    // SAFETY: close_range takes integers and only closes descriptors of this process;
    // the caller promises that nothing owning them is used or dropped afterwards.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Close every descriptor from 3 up except those in `keep`. A negative number in `keep`
/// is an error, not ignored: the caller meant to keep something it does not hold.
///
/// # Safety
///
/// As for [`close_range`]: a forked child that never uses or drops the values owning
/// the descriptors it closes.
pub unsafe fn close_all_but(keep: &[RawFd]) -> io::Result<()> {
    let mut keep: Vec<u32> = keep
        .iter()
        .map(|&fd| u32::try_from(fd).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput)))
        .collect::<io::Result<_>>()?;
    keep.sort_unstable();
    keep.dedup();
    let mut first = 3u32;
    for fd in keep {
        if fd < first {
            continue;
        }
        if fd > first {
            // SAFETY: the caller's promise, passed on.
            unsafe { close_range(first, fd - 1) }?;
        }
        first = fd + 1;
    }
    // SAFETY: the caller's promise, passed on.
    unsafe { close_range(first, u32::MAX) }
}

/// Mark every descriptor from 3 up close-on-exec except those in `keep`
/// ([`close_range(2)`](https://man7.org/linux/man-pages/man2/close_range.2.html) with
/// `CLOSE_RANGE_CLOEXEC`, Linux 5.11): whatever this process inherited goes at its next
/// `exec`, while every value that owns one stays valid until then (a forked child's
/// prepared sandbox, the pipe through which `std::process::Command` reports a failed
/// `exec`). A negative number in `keep` is an error, as for [`close_all_but`]. The
/// descriptors in `keep` are left as they are: clearing their close-on-exec flag is
/// the caller's choice.
///
/// Allocates nothing (it runs in a forked child, between `fork` and `exec`).
pub fn cloexec_all_but(keep: &[RawFd]) -> io::Result<()> {
    if keep.iter().any(|&fd| fd < 0) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let mark = |first: u32, last: u32| {
        // SAFETY: close_range takes integers; with CLOSE_RANGE_CLOEXEC it only sets a
        // flag on descriptors of this process and closes none.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first,
                last,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    let mut first = 3u32;
    // The kept numbers in increasing order, each the smallest not below `first`.
    while let Some(fd) = keep
        .iter()
        .filter_map(|&fd| u32::try_from(fd).ok())
        .filter(|&fd| fd >= first)
        .min()
    {
        if fd > first {
            mark(first, fd - 1)?;
        }
        match fd.checked_add(1) {
            Some(next) => first = next,
            None => return Ok(()),
        }
    }
    mark(first, u32::MAX)
}

/// [`_exit(2)`](https://man7.org/linux/man-pages/man2/_exit.2.html): no exit handlers,
/// no flushing of buffers copied from a parent.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` ends the process at once; nothing runs after it.
    unsafe { libc::_exit(code) }
}

/// `sched_attr` of `sched_setattr(2)`, its first version (48 bytes).
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// `sched_setattr(2)` on the calling thread: its policy kept (`SCHED_FLAG_KEEP_POLICY`),
/// `nice`, and a requested slice of `slice_ns` (Linux 6.12: `sched_runtime` of a fair
/// task).
pub(crate) fn set_fair_slice(nice: i32, slice_ns: u64) -> io::Result<()> {
    /// `SCHED_FLAG_KEEP_POLICY`: a thread the operator made `SCHED_BATCH` stays so.
    const KEEP_POLICY: u64 = 0x08;
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: 0,
        flags: KEEP_POLICY,
        nice,
        priority: 0,
        runtime: slice_ns,
        deadline: 0,
        period: 0,
    };
    // SAFETY: the kernel reads `size` bytes of a live, initialised struct laid out as
    // `struct sched_attr` version 0, through a pointer valid for the call, and writes
    // nothing; pid 0 is the calling thread.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread's nice value (`getpriority(2)` of its own thread id, which Linux
/// keeps per thread).
pub(crate) fn own_nice() -> io::Result<i32> {
    // getpriority returns -1 both as a nice value and as an error: errno tells them apart.
    Errno::clear();
    // SAFETY: a plain system call on the calling thread that touches no memory.
    let r = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    if r == -1 && Errno::last_raw() != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}
