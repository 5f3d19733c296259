//! Values from the kernel's `include/uapi/linux/seccomp.h` (the `libc` crate does not
//! have all of them for every target), and the few others the supervisor needs from its
//! `uapi` headers.

pub const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;
pub const FLAG_NEW_LISTENER: libc::c_ulong = 1 << 3;
pub const FLAG_WAIT_KILLABLE_RECV: libc::c_ulong = 1 << 5;
pub const RET_USER_NOTIF: u32 = 0x7fc0_0000;
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub const RET_ALLOW: u32 = 0x7fff_0000;
pub const RET_ERRNO: u32 = 0x0005_0000;
pub const USER_NOTIF_FLAG_CONTINUE: u32 = 1;
pub const ADDFD_FLAG_SEND: u32 = 1 << 1;

/// `struct seccomp_data`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct Data {
    pub nr: i32,
    pub arch: u32,
    pub instruction_pointer: u64,
    pub args: [u64; 6],
}
/// `struct seccomp_notif`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct Notif {
    pub id: u64,
    pub pid: u32,
    pub flags: u32,
    pub data: Data,
}
/// `struct seccomp_notif_resp`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct Resp {
    pub id: u64,
    pub val: i64,
    pub error: i32,
    pub flags: u32,
}
/// `struct seccomp_notif_addfd`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct AddFd {
    pub id: u64,
    pub flags: u32,
    pub srcfd: u32,
    pub newfd: u32,
    pub newfd_flags: u32,
}

/// `_IOC(dir, '!', nr, size)` as `include/uapi/asm-generic/ioctl.h` builds it (the
/// layout of x86_64 and aarch64).
const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | ((b'!' as u32) << 8) | nr
}
const WRITE: u32 = 1;
const READ: u32 = 2;
/// `SECCOMP_IOCTL_NOTIF_RECV = _IOWR('!', 0, struct seccomp_notif)`.
pub const IOCTL_RECV: u32 = ioc(READ | WRITE, 0, std::mem::size_of::<Notif>());
/// `SECCOMP_IOCTL_NOTIF_SEND = _IOWR('!', 1, struct seccomp_notif_resp)`.
pub const IOCTL_SEND: u32 = ioc(READ | WRITE, 1, std::mem::size_of::<Resp>());
/// `SECCOMP_IOCTL_NOTIF_ID_VALID = _IOW('!', 2, __u64)`.
pub const IOCTL_ID_VALID: u32 = ioc(WRITE, 2, 8);
/// `SECCOMP_IOCTL_NOTIF_ADDFD = _IOW('!', 3, struct seccomp_notif_addfd)`.
pub const IOCTL_ADDFD: u32 = ioc(WRITE, 3, std::mem::size_of::<AddFd>());
/// `SECCOMP_IOCTL_NOTIF_SET_FLAGS = _IOW('!', 4, __u64)` (Linux 6.6).
pub const IOCTL_SET_FLAGS: u32 = ioc(WRITE, 4, 8);
/// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`.
pub const FD_SYNC_WAKE_UP: u64 = 1;

/// `PIDFD_THREAD` (`O_EXCL`), Linux 6.9: a pidfd for a thread, not only a leader.
pub const PIDFD_THREAD: libc::c_uint = libc::O_EXCL as libc::c_uint;

/// System call numbers missing from `libc` for some targets, from
/// `include/uapi/asm-generic/unistd.h` (the same on every architecture from 424 on).
pub const SYS_OPENAT2: i64 = 437;
pub const SYS_FACCESSAT2: i64 = 439;
/// `fchmodat2(2)`, Linux 6.6 (the same on every architecture).
pub const SYS_FCHMODAT2: i64 = 452;
/// `getxattrat(2)` and `listxattrat(2)`, Linux 6.13 (the same on every architecture).
pub const SYS_GETXATTRAT: i64 = 464;
pub const SYS_LISTXATTRAT: i64 = 465;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel() {
        assert_eq!(IOCTL_RECV, 0xc050_2100);
        assert_eq!(IOCTL_SEND, 0xc018_2101);
        assert_eq!(IOCTL_ID_VALID, 0x4008_2102);
        assert_eq!(IOCTL_ADDFD, 0x4018_2103);
    }
}
