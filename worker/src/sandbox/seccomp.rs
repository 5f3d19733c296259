//! The seccomp filter: refuses what Landlock leaves open.
//!
//! Landlock controls opening paths, not changing the metadata of files the process can
//! already reach (`fchmod`, `fchown`, xattrs, timestamps, often on descriptors the broker
//! handed over), nor creating sockets, nor typing into a terminal the process inherited as
//! stdin, stdout or stderr (`TIOCSTI`, `TIOCLINUX`), nor the kernel's large attack surfaces
//! that a parser never needs (`ptrace`, `bpf`, `io_uring`, mounts, namespaces, keyrings,
//! modules). Those are refused here.
//!
//! The default is to allow, and a refusal is `EPERM`, never a kill: a parser that probes an
//! unusual system call gets a clean error it can report, not a `SIGSYS` that looks like a
//! crash. The one exception is `clone3`, which fails with `ENOSYS` (see [`compile`]).
//!
//! The filter is compiled for the architecture the crate is built for (x86_64 or aarch64).
//! `seccompiler` puts an architecture check first that kills the process on a system call
//! made through another ABI (for example `int 0x80` from x86_64 code): such calls do not come
//! from a Rust program, and letting them through would bypass every rule.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

use super::error::SandboxError;

/// The compiled filters, ready to install.
#[derive(Clone, Debug)]
pub(crate) struct Filters {
    programs: Vec<BpfProgram>,
}

/// System calls numbered from 424 on have the same number on every architecture. These are
/// newer than what the `libc` crate (0.2.191) lists for x86_64 and aarch64; their numbers
/// come from the kernel's `include/uapi/asm-generic/unistd.h`.
mod nr {
    /// `fchmodat2(2)`, Linux 6.6 (missing from libc for aarch64).
    pub(super) const FCHMODAT2: i64 = 452;
    /// `setxattrat(2)`, Linux 6.13.
    pub(super) const SETXATTRAT: i64 = 463;
    /// `removexattrat(2)`, Linux 6.13.
    pub(super) const REMOVEXATTRAT: i64 = 466;
    /// `open_tree_attr(2)`, Linux 6.15: `open_tree` that also changes mount attributes.
    pub(super) const OPEN_TREE_ATTR: i64 = 467;
}

/// Refused outright with `EPERM`, on every architecture.
const REFUSED: &[i64] = &[
    // Permission, ownership, extended attributes, timestamps.
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    nr::FCHMODAT2,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_setxattr,
    libc::SYS_lsetxattr,
    libc::SYS_fsetxattr,
    libc::SYS_removexattr,
    libc::SYS_lremovexattr,
    libc::SYS_fremovexattr,
    nr::SETXATTRAT,
    nr::REMOVEXATTRAT,
    libc::SYS_utimensat,
    // Other processes' memory.
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    // Kernel keyrings.
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    // Large kernel attack surfaces a parser never needs.
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    // Mounts and the root directory.
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    nr::OPEN_TREE_ATTR,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    // Namespaces.
    libc::SYS_unshare,
    libc::SYS_setns,
    // File handles bypass path-based checks (open_by_handle_at needs CAP_DAC_READ_SEARCH
    // today; refusing it does not depend on that staying so).
    libc::SYS_name_to_handle_at,
    libc::SYS_open_by_handle_at,
    // Kernel replacement and modules.
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
];

/// x86_64 keeps the old path-based calls that aarch64 never had.
#[cfg(target_arch = "x86_64")]
const REFUSED_ARCH: &[i64] = &[
    libc::SYS_chmod,
    libc::SYS_chown,
    libc::SYS_lchown,
    libc::SYS_utime,
    libc::SYS_utimes,
    libc::SYS_futimesat,
];
#[cfg(not(target_arch = "x86_64"))]
const REFUSED_ARCH: &[i64] = &[];

/// Every `CLONE_NEW*` flag `clone(2)` accepts. `CLONE_NEWTIME` (0x80) is missing on purpose:
/// in `clone(2)` that bit belongs to the exit signal, and time namespaces can only be made
/// with `unshare` or `clone3`, both refused.
const CLONE_NEW_FLAGS: [libc::c_int; 7] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWCGROUP,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
];

/// `ioctl` requests that put bytes into a terminal's input queue, as if typed: `TIOCSTI`
/// (simulate terminal input) and `TIOCLINUX` (whose `TIOCL_PASTESEL` pastes the console
/// selection). A worker that inherited a terminal as stdin, stdout or stderr could otherwise
/// type commands into the shell that reads from it once the worker is gone, outside every
/// other restriction here. The kernel takes the request as a 32-bit `unsigned int` and
/// ignores the upper half of the register, so the rules compare only the lower 32 bits
/// ([`SeccompCmpArgLen::Dword`]): setting high bits cannot walk around them.
// `libc::Ioctl` is `c_ulong` with glibc (a no-op cast here) but `c_int` with musl.
#[allow(clippy::unnecessary_cast)]
const TTY_INPUT_IOCTLS: [u64; 2] = [libc::TIOCSTI as u64, libc::TIOCLINUX as u64];

fn target_arch() -> Result<TargetArch, SandboxError> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else if cfg!(target_arch = "aarch64") {
        Ok(TargetArch::aarch64)
    } else {
        Err(SandboxError::UnsupportedArch(std::env::consts::ARCH))
    }
}

/// Compiles the filters; done while preparing, so that nothing but installing is left for
/// the moment the sandbox is applied.
///
/// Three programs, because one `seccompiler` filter has a single action for all its matches:
///
/// 1. the `EPERM` rules: the lists above, `socket`/`socketpair` for any domain but
///    `AF_UNIX` (TCP, UDP, netlink, packet and every other family: the worker talks to its
///    broker and nothing else), `clone` with any `CLONE_NEW*` flag, and `ioctl` with a
///    request that injects terminal input ([`TTY_INPUT_IOCTLS`]);
/// 2. `clone3` fails with `ENOSYS`. Its flags live in a structure in memory, which a seccomp
///    filter cannot read, so it cannot be checked for `CLONE_NEW*` like `clone`. `EPERM` would
///    make thread creation fail, but `ENOSYS` ("this kernel has no clone3") makes glibc and
///    musl fall back to `clone`, whose flags the first program does check;
/// 3. on x86_64, any system call number with the x32 bit (`0x4000_0000`) fails with
///    `ENOSYS`. x32 calls pass the x86_64 architecture check with different numbers, so on a
///    kernel built with `CONFIG_X86_X32_ABI` they would walk around every rule above.
pub(crate) fn compile() -> Result<Filters, SandboxError> {
    let arch = target_arch()?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = REFUSED
        .iter()
        .chain(REFUSED_ARCH)
        .map(|&nr| (nr, Vec::new()))
        .collect();
    let not_unix = || {
        rule(vec![condition(
            0,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Ne,
            libc::AF_UNIX as u64,
        )?])
    };
    rules.insert(libc::SYS_socket, vec![not_unix()?]);
    rules.insert(libc::SYS_socketpair, vec![not_unix()?]);
    let clone_new = CLONE_NEW_FLAGS
        .iter()
        .map(|&flag| {
            let flag = flag as u64;
            rule(vec![condition(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )?])
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_clone, clone_new);
    let tty_input = TTY_INPUT_IOCTLS
        .iter()
        .map(|&request| {
            rule(vec![condition(
                1,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                request,
            )?])
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_ioctl, tty_input);

    let refuse = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(SandboxError::SeccompBuild)?;
    let no_clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(SandboxError::SeccompBuild)?;

    let mut programs: Vec<BpfProgram> = vec![
        refuse.try_into().map_err(SandboxError::SeccompBuild)?,
        no_clone3.try_into().map_err(SandboxError::SeccompBuild)?,
    ];
    if arch == TargetArch::x86_64 {
        programs.push(x32_guard());
    }
    Ok(Filters { programs })
}

fn condition(
    arg: u8,
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, SandboxError> {
    SeccompCondition::new(arg, len, op, value).map_err(SandboxError::SeccompBuild)
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, SandboxError> {
    SeccompRule::new(conditions).map_err(SandboxError::SeccompBuild)
}

/// `AUDIT_ARCH_X86_64` from `<linux/audit.h>`: `EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
/// `__X32_SYSCALL_BIT` from `arch/x86/include/uapi/asm/unistd.h`.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;

/// A hand-written program, because `seccompiler` matches exact system call numbers and this
/// needs a range: "x86_64 calling convention and number >= 0x4000_0000: ENOSYS, else allow".
/// Other architectures are left to the other programs' architecture check.
fn x32_guard() -> BpfProgram {
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let op = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        /* 0 */ op(LD_W_ABS, 0, 0, DATA_ARCH),
        /* 1 */ op(JEQ_K, 0, 3, AUDIT_ARCH_X86_64), // not x86_64: to 5
        /* 2 */ op(LD_W_ABS, 0, 0, DATA_NR),
        /* 3 */ op(JGE_K, 0, 1, X32_SYSCALL_BIT), // below the x32 range: to 5
        /* 4 */ op(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        /* 5 */ op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

/// Installs the filters on the calling thread. They are inherited by every child and kept
/// across `execve`; `no_new_privs` must already be set (it is, by the caller).
pub(crate) fn install(filters: &Filters) -> Result<(), SandboxError> {
    for program in &filters.programs {
        seccompiler::apply_filter(program).map_err(SandboxError::SeccompInstall)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_for_this_architecture() {
        let filters = compile().expect("compile");
        let expected = if cfg!(target_arch = "x86_64") { 3 } else { 2 };
        assert_eq!(filters.programs.len(), expected);
        assert!(filters.programs.iter().all(|p| !p.is_empty()));
    }

    #[test]
    fn refused_lists_have_no_duplicates() {
        let mut all: Vec<i64> = REFUSED.iter().chain(REFUSED_ARCH).copied().collect();
        let before = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), before);
        for special in [
            libc::SYS_socket,
            libc::SYS_socketpair,
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_ioctl,
        ] {
            assert!(!all.contains(&special));
        }
    }

    #[test]
    fn x32_guard_jumps_land_on_returns() {
        let p = x32_guard();
        for (i, ins) in p.iter().enumerate() {
            if ins.code & 0x07 == libc::BPF_JMP as u16 {
                for off in [ins.jt, ins.jf] {
                    let target = i + 1 + usize::from(off);
                    assert!(target < p.len(), "jump from {i} out of program");
                }
            }
        }
        assert_eq!(p[1].jf, 3);
        assert_eq!(p[5].k, libc::SECCOMP_RET_ALLOW);
    }
}
