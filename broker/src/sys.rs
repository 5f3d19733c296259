//! The broker's raw system calls: the one place outside fork and pre-exec sites where
//! the broker uses `unsafe`.
//!
//! Each wrapper names the call it makes and links its manual page; callers see only
//! safe functions and `io::Result`. Where nix has a safe wrapper that keeps the
//! behaviour, the broker uses nix instead and nothing is added here.
#![allow(unsafe_code)]

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

pub use fdbroker_shared::process::{cloexec_all_but, close_all_but, close_range, exit_now};

/// [`pidfd_open(2)`](https://man7.org/linux/man-pages/man2/pidfd_open.2.html) of a
/// process ([`fdbroker_shared::process::pidfd_open`]).
pub fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    fdbroker_shared::process::pidfd_open(pid.as_raw(), 0)
}

/// [`pidfd_getfd(2)`](https://man7.org/linux/man-pages/man2/pidfd_getfd.2.html): a
/// duplicate, in this process, of descriptor `fd` of the process `pidfd` names (needs
/// ptrace access to it: root, in practice). Close-on-exec.
pub fn pidfd_getfd(pidfd: &OwnedFd, fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: plain integer arguments; on success the kernel returns a new descriptor
    // that nothing else owns.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let raw = RawFd::try_from(rc).map_err(|_| io::Error::other("pidfd_getfd: bad descriptor"))?;
    // SAFETY: `raw` is the new descriptor just returned to this process, owned by no one.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

// `pidfd_sigqueue` writes siginfo_t's `_rt` member at the offsets of 64-bit Linux.
#[cfg(not(target_pointer_width = "64"))]
compile_error!("fdbroker supports 64-bit Linux only (siginfo_t layout in sys.rs)");

/// [`pidfd_send_signal(2)`](https://man7.org/linux/man-pages/man2/pidfd_send_signal.2.html)
/// of `sig` carrying `value` (`si_code` `SI_QUEUE`, as `sigqueue(3)` sends it, so the
/// receiver reads `value` as `si_int`).
pub fn pidfd_sigqueue(pidfd: &OwnedFd, sig: Signal, value: i32) -> io::Result<()> {
    // SAFETY: an all-zero siginfo_t is a valid value of this plain C struct.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    info.si_signo = sig as libc::c_int;
    info.si_code = libc::SI_QUEUE;
    // The `_rt` member of the union: pid, uid, then the value, after the three ints of
    // the header and its padding (the same on every 64-bit Linux architecture).
    let base = std::ptr::from_mut(&mut info).cast::<u8>();
    // SAFETY: the offsets are inside siginfo_t (128 bytes), suitably aligned for the
    // types written (4 for pid_t and uid_t, 8 for the sigval), and the struct is ours.
    unsafe {
        base.add(16)
            .cast::<libc::pid_t>()
            .write(nix::unistd::getpid().as_raw());
        base.add(20)
            .cast::<libc::uid_t>()
            .write(nix::unistd::getuid().as_raw());
        base.add(24).cast::<libc::c_int>().write(value);
    }
    // SAFETY: the kernel reads the siginfo through the pointer, which is live for the
    // call; the descriptor is a pidfd we own.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig as libc::c_int,
            std::ptr::from_ref(&info),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// [`fcntl(2)`](https://man7.org/linux/man-pages/man2/fcntl.2.html) `F_SETFD 0`: the
/// descriptor numbered `fd` stays open across `exec`.
///
/// Takes a number, not a borrowed descriptor, because it runs in a forked child before
/// `exec`, on numbers copied from the parent's owned descriptors.
pub fn clear_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_SETFD on a descriptor number; the worst a wrong number does is fail
    // with EBADF. No memory is passed.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Descriptor numbers already adopted by [`adopt_inherited`]: taking one twice would
/// make two owners that both close it.
static ADOPTED: Mutex<BTreeSet<RawFd>> = Mutex::new(BTreeSet::new());

/// Own a descriptor this process inherited at `exec` by number (from the service
/// manager's `LISTEN_FDS`, or the monitor's environment).
///
/// The number must be above 2, open (probed with `fcntl(F_GETFD)`: a number naming
/// nothing must not be adopted, or closing it later would close whatever it names by
/// then) and not adopted before in this process (checked: each number is taken once).
/// The caller's part is to pass only numbers handed over at exec, which nothing else in
/// the process owns.
pub fn adopt_inherited(fd: RawFd) -> io::Result<OwnedFd> {
    if fd <= 2 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is a standard stream, not an inherited socket"),
        ));
    }
    let mut adopted = ADOPTED.lock().unwrap_or_else(|p| p.into_inner());
    if adopted.contains(&fd) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("descriptor {fd} is already owned"),
        ));
    }
    // SAFETY: borrowed only for the F_GETFD probe below, which fails cleanly (EBADF) on
    // a closed number and does not outlive this call.
    let probe = unsafe { BorrowedFd::borrow_raw(fd) };
    nix::fcntl::fcntl(probe, nix::fcntl::FcntlArg::F_GETFD)?;
    adopted.insert(fd);
    // SAFETY: open (just checked), handed to this process at exec, and adopted once
    // (the set above); from here the returned value is its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The size of the extended attribute `name` of `fd`
/// ([`fgetxattr(2)`](https://man7.org/linux/man-pages/man2/fgetxattr.2.html) with an
/// empty buffer): `Ok(None)` when the file has no such attribute or its filesystem has
/// none at all (`ENODATA`, `EOPNOTSUPP`).
pub fn xattr_len(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<usize>> {
    // SAFETY: a size query: a null buffer of length 0, so the kernel writes nothing;
    // `name` is a live NUL-terminated string for the call.
    let rc = unsafe { libc::fgetxattr(fd.as_raw_fd(), name.as_ptr(), std::ptr::null_mut(), 0) };
    if rc >= 0 {
        return Ok(Some(rc as usize));
    }
    match Errno::last() {
        Errno::ENODATA | Errno::EOPNOTSUPP => Ok(None),
        e => Err(e.into()),
    }
}

/// [`getdents64(2)`](https://man7.org/linux/man-pages/man2/getdents64.2.html): the
/// next records of the open directory `dir` from its current position into `buf`, and
/// how many bytes they took (0 at the end). The kernel's `d_off` of each record is the
/// position after it, which `lseek(2)` takes back; `readdir(3)` hides it, and `List`
/// pages by it (`request::list`), so the broker reads the records itself.
pub fn getdents64(dir: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which is live and
    // exclusively borrowed for the call; `dir` is an open descriptor.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            dir.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    if rc < 0 {
        return Err(Errno::last().into());
    }
    usize::try_from(rc).map_err(|_| io::Error::from(Errno::EIO))
}

/// The Landlock ABI version of the running kernel:
/// [`landlock_create_ruleset(2)`](https://man7.org/linux/man-pages/man2/landlock_create_ruleset.2.html)
/// with `LANDLOCK_CREATE_RULESET_VERSION` (`EOPNOTSUPP`: built in but disabled at boot;
/// `ENOSYS`: not built in). Only `fdbroker version --check` asks: confinement itself
/// goes through the `landlock` crate, which reports the same thing after the fact.
pub fn landlock_abi() -> io::Result<i32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute pointer and size 0 the call reads and writes no
    // memory; it only returns the ABI version or an error.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if v < 0 {
        return Err(io::Error::last_os_error());
    }
    i32::try_from(v).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// Whether the kernel has seccomp user notification:
/// [`seccomp(2)`](https://man7.org/linux/man-pages/man2/seccomp.2.html)
/// `SECCOMP_GET_NOTIF_SIZES` (Linux 5.0), which asks nothing of the caller's filter.
pub fn seccomp_user_notification() -> io::Result<()> {
    let mut sizes = libc::seccomp_notif_sizes {
        seccomp_notif: 0,
        seccomp_notif_resp: 0,
        seccomp_data: 0,
    };
    // SAFETY: the kernel writes one `struct seccomp_notif_sizes` into `sizes`, which
    // lives for the whole call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_NOTIF_SIZES,
            0u32,
            std::ptr::from_mut(&mut sizes),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the kernel's seccomp filters can return an errno:
/// [`seccomp(2)`](https://man7.org/linux/man-pages/man2/seccomp.2.html)
/// `SECCOMP_GET_ACTION_AVAIL` of `SECCOMP_RET_ERRNO` (filters exist at all, Linux 4.14).
pub fn seccomp_filters() -> io::Result<()> {
    let action: u32 = libc::SECCOMP_RET_ERRNO;
    // SAFETY: the kernel reads one u32 from `action`, which lives for the whole call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_ACTION_AVAIL,
            0u32,
            std::ptr::from_ref(&action),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_descriptor_is_adopted_once_and_only_when_open() {
        let (a, b) = nix::unistd::pipe().expect("pipe");
        let n = a.as_raw_fd();
        // Hand the number over as exec would: nothing else owns it afterwards.
        std::mem::forget(a);
        let owned = adopt_inherited(n).expect("an open descriptor is adopted");
        let again = adopt_inherited(n).expect_err("a second owner is refused");
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        drop(owned);
        drop(b);
        assert_eq!(
            adopt_inherited(1).expect_err("stdout").kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn an_unopened_number_is_not_adopted() {
        // Far above anything the test harness opens.
        let err = adopt_inherited(900_000).expect_err("nothing is open there");
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    }

    #[test]
    fn a_missing_attribute_has_no_length() {
        let f = std::fs::File::open("/proc/self/exe").expect("open");
        use std::os::fd::AsFd;
        let got = xattr_len(f.as_fd(), c"user.fdbroker-test-absent").expect("size query");
        assert_eq!(got, None);
    }
}

/// A child reaped by [`wait4`], with what the kernel counted of it.
#[derive(Clone, Copy, Debug)]
pub struct Reaped {
    pub status: std::process::ExitStatus,
    /// User and system time of the child and of its children it waited for.
    pub cpu: std::time::Duration,
    /// Its largest resident set, in KiB.
    pub max_rss_kib: u64,
}

/// [`wait4(2)`](https://man7.org/linux/man-pages/man2/wait4.2.html) with `__WALL`: reaps
/// `pid` (any child for `None`), retrying `EINTR`. With `nohang`, `Ok(None)` when no
/// child has exited yet.
pub fn wait4(pid: Option<Pid>, nohang: bool) -> io::Result<Option<Reaped>> {
    use std::os::unix::process::ExitStatusExt;
    let target = pid.map_or(-1, Pid::as_raw);
    let flags = libc::__WALL | if nohang { libc::WNOHANG } else { 0 };
    loop {
        let mut status = 0;
        // SAFETY: all-zero is a valid `rusage` (plain integers and timevals).
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers are to live locals of the right types for the call.
        let rc = unsafe { libc::wait4(target, &mut status, flags, &mut usage) };
        match rc {
            0 => return Ok(None),
            n if n > 0 => {
                let tv = |t: libc::timeval| {
                    std::time::Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
                        + std::time::Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
                };
                return Ok(Some(Reaped {
                    status: std::process::ExitStatus::from_raw(status),
                    cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
                    max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
                }));
            }
            _ => {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINTR) {
                    return Err(e);
                }
            }
        }
    }
}
