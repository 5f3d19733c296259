//! The program's side: which calls are sent to the supervisor, the BPF program that
//! sends them, and installing it.
//!
//! Installed last, by the program itself after its ordinary worker sandbox, right
//! before it execs: the listener it returns is passed to the supervisor.

use crate::uapi::{self, SYS_FACCESSAT2, SYS_GETXATTRAT, SYS_LISTXATTRAT, SYS_OPENAT2};
use fdbroker_worker::sandbox::{METADATA, XATTR_CHANGES};
use std::io;
use std::os::fd::OwnedFd;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 62 | 0x8000_0000 | 0x4000_0000;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 183 | 0x8000_0000 | 0x4000_0000;

/// The calls sent to the supervisor.
fn intercepted() -> Vec<i64> {
    let mut v = vec![
        libc::SYS_openat,
        SYS_OPENAT2,
        libc::SYS_faccessat,
        SYS_FACCESSAT2,
        libc::SYS_readlinkat,
        libc::SYS_getxattr,
        libc::SYS_lgetxattr,
        libc::SYS_listxattr,
        libc::SYS_llistxattr,
        SYS_GETXATTRAT,
        SYS_LISTXATTRAT,
        libc::SYS_statfs,
        libc::SYS_inotify_add_watch,
        libc::SYS_chdir,
        libc::SYS_fchdir,
        libc::SYS_getcwd,
    ];
    // The mode and time calls the ordinary sandbox leaves to this filter in transparent
    // mode (`Sandbox::allow_metadata_calls`): every one must come here, or the kernel
    // would run it on any file the program owns or may write.
    v.extend(METADATA);
    #[cfg(target_arch = "x86_64")]
    v.extend([
        libc::SYS_open,
        libc::SYS_creat,
        libc::SYS_stat,
        libc::SYS_lstat,
        libc::SYS_access,
        libc::SYS_readlink,
    ]);
    v
}

/// The stat calls, with the index of their flags argument, that go to the supervisor
/// except with `AT_EMPTY_PATH` on a descriptor (a `dirfd` other than `AT_FDCWD`), which
/// the kernel answers without a round trip.
///
/// A filter cannot see whether the path is empty, so such a call may also name a path
/// relative to that descriptor, resolved by the kernel under the program's sandbox.
/// That is safe because of what descriptors the program can hold: those the broker
/// passed (files, and directories only where nothing beneath them is hidden by the
/// policy), stand-ins in its own scratch directory (`listing.rs`), what it opened
/// itself through the kernel (paths no rule covers, which it may look at anyway), and
/// stdio, which `fdbroker run` refuses to pass as a directory or `O_PATH` handle. From
/// none of them does a lookup reach what the policy hides; the same holds for every
/// call the supervisor leaves to the kernel. `AT_FDCWD` stays supervised, for the
/// working directory the supervisor keeps (`cwd.rs`).
///
/// The path may also be absolute, which ignores the descriptor: then the kernel answers
/// a stat of any path under the sandbox user's own rights, as it answers every stat in
/// plain `fdbroker run`. That describes a file beneath a deny rule's carve-out only
/// where the sandbox's transient uid may search to it by its permissions (never in a
/// root-only tree), and opens nothing; `docs/transparent.md` says so, and
/// `review_f4_at_empty_path_reveals_no_more_than_the_sandbox_user_may_see` holds it.
const ON_A_DESCRIPTOR: [(i64, u32); 2] = [(libc::SYS_newfstatat, 3), (libc::SYS_statx, 2)];

/// The program's notification filter: another architecture or an x32 call kills the
/// process; the intercepted calls go to the listener; everything else is left to the
/// other filters.
fn program() -> Vec<libc::sock_filter> {
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
    const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let mut p = vec![
        op(LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        op(JEQ_K, 1, 0, AUDIT_ARCH),
        op(RET_K, 0, 0, uapi::RET_KILL_PROCESS),
        op(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
    ];
    if cfg!(target_arch = "x86_64") {
        // x32 numbers carry __X32_SYSCALL_BIT and pass the architecture check.
        p.push(op(JGE_K, 0, 1, 0x4000_0000));
        p.push(op(RET_K, 0, 0, uapi::RET_KILL_PROCESS));
    }
    // `fstat` and `statx` of a descriptor the program holds (glibc's `fstat` is
    // `newfstatat(fd, "", AT_EMPTY_PATH)`) stay in the kernel: see `on_a_descriptor`.
    for (nr, flags_arg) in ON_A_DESCRIPTOR {
        let args = |i: u32| 16 + 8 * i; // seccomp_data.args[i], its low 32 bits
        p.extend([
            op(JEQ_K, 0, 6, nr as u32),
            op(LD_W_ABS, 0, 0, args(flags_arg)),
            op(JSET_K, 0, 3, libc::AT_EMPTY_PATH as u32),
            op(LD_W_ABS, 0, 0, args(0)),
            op(JEQ_K, 1, 0, libc::AT_FDCWD as u32),
            op(RET_K, 0, 0, uapi::RET_ALLOW),
            op(RET_K, 0, 0, uapi::RET_USER_NOTIF),
        ]);
    }
    for nr in intercepted() {
        p.push(op(JEQ_K, 0, 1, nr as u32));
        p.push(op(RET_K, 0, 0, uapi::RET_USER_NOTIF));
    }
    // File handles stay refused (they bypass path checks), but as the kernel refuses
    // them for a filesystem that cannot export handles, which every caller falls back
    // from, rather than the ordinary sandbox's EPERM. This filter is the newest, so its
    // errno is the one the program sees.
    p.push(op(JEQ_K, 0, 1, libc::SYS_name_to_handle_at as u32));
    p.push(op(RET_K, 0, 0, uapi::RET_ERRNO | libc::EOPNOTSUPP as u32));
    // Extended attributes cannot be set or removed here (the ordinary sandbox refuses
    // it): said as a filesystem without them says it, which `cp -a`, `tar` and
    // `rsync -X` skip, rather than EPERM, which they report as a failure.
    for &nr in XATTR_CHANGES {
        p.push(op(JEQ_K, 0, 1, nr as u32));
        p.push(op(RET_K, 0, 0, uapi::RET_ERRNO | libc::EOPNOTSUPP as u32));
    }
    // The supervisor's own sandbox leaves these to it; the program's ordinary sandbox
    // refuses them too, this only keeps the rule next to the reason.
    for nr in [libc::SYS_process_vm_readv, libc::SYS_process_vm_writev] {
        p.push(op(JEQ_K, 0, 1, nr as u32));
        p.push(op(RET_K, 0, 0, uapi::RET_ERRNO | libc::EPERM as u32));
    }
    p.push(op(RET_K, 0, 0, uapi::RET_ALLOW));
    p
}

/// Installs the notification filter on the calling thread; returns the listener.
pub fn install_filter() -> io::Result<OwnedFd> {
    crate::sys::seccomp_new_listener(&program())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_and_time_call_the_sandbox_leaves_open_is_intercepted() {
        // `Sandbox::allow_metadata_calls` leaves these to this filter; one missed would
        // run in the kernel on any file the program owns or may write.
        let mut left: Vec<i64> = vec![
            libc::SYS_fchmod,
            libc::SYS_fchmodat,
            crate::uapi::SYS_FCHMODAT2,
            libc::SYS_utimensat,
        ];
        #[cfg(target_arch = "x86_64")]
        left.push(libc::SYS_chmod);
        let all = intercepted();
        for nr in left {
            assert!(all.contains(&nr), "{nr} is not intercepted");
        }
    }

    #[test]
    fn filter_jumps_stay_inside() {
        let p = program();
        for (i, ins) in p.iter().enumerate() {
            if ins.code & 0x07 == libc::BPF_JMP as u16 {
                for off in [ins.jt, ins.jf] {
                    assert!(i + 1 + usize::from(off) < p.len());
                }
            }
        }
    }
}
