//! The seccomp filter: refuses what Landlock leaves open.
//!
//! Landlock controls opening paths, not changing the metadata of files the process can
//! already reach (`fchmod`, `fchown`, xattrs, timestamps, often on descriptors the broker
//! handed over), nor creating sockets or connecting them to pathname Unix sockets (before
//! its ABI 9), nor executing files that have no path it governs (memfds), nor typing into a
//! terminal the process inherited as stdin, stdout or stderr (`TIOCSTI`, `TIOCLINUX`), nor
//! the kernel's large attack surfaces that a parser never needs (`ptrace`, `bpf`,
//! `io_uring`, mounts, namespaces, keyrings, modules). Those are refused here.
//!
//! The default is to allow, and a refusal is `EPERM`, never a kill: a parser that probes an
//! unusual system call gets a clean error it can report, not a `SIGSYS` that looks like a
//! crash. The one exception is `clone3`, which fails with `ENOSYS` (see [`compile`]).
//!
//! The filter is compiled for the architecture the crate is built for (x86_64 or aarch64).
//! `seccompiler` puts an architecture check first that kills the process on a system call
//! made through another ABI (for example `int 0x80` from x86_64 code): such calls do not come
//! from a Rust program, and letting them through would bypass every rule.
//!
//! # No new socket reaches anything
//!
//! A confined process can make no socket that reaches beyond itself, whatever the kernel's
//! Landlock ABI. Its broker connection and stdio keep working: they were open before.
//!
//! - `socket(2)` is refused for every family, `AF_UNIX` included: a new Unix socket could
//!   `connect` to any pathname socket the user may write (another broker's, which would
//!   serve it what that broker grants its uid), and Landlock only controls pathname Unix
//!   sockets from ABI 9 on (`LANDLOCK_ACCESS_FS_RESOLVE_UNIX`, handled and never granted
//!   whenever the kernel has it; abstract ones are scoped from ABI 6).
//! - `socketpair(2)` is allowed for `AF_UNIX` `SOCK_STREAM` and `SOCK_SEQPACKET` only
//!   (with or without `SOCK_NONBLOCK` and `SOCK_CLOEXEC`): a pair connected to itself, for
//!   talking to its own children. A `SOCK_DGRAM` pair is refused, because a datagram socket
//!   sends to any address a message names, connected or not.
//! - `connect`, `bind` and `listen` are refused outright, on any socket, held ones
//!   included: nothing the process may still make needs them. `accept` stays, on a
//!   listening socket handed over before confinement.
//! - `sendto` with a destination address (a non-NULL pointer) is refused. `sendmsg` and
//!   `sendmmsg` carry the address in memory (`msg_name`), which seccomp cannot read; they
//!   stay allowed because no socket the process can make uses one: a stream socket
//!   refuses it (`EISCONN`) and a seqpacket socket ignores it and sends to its peer.
//! - `pidfd_getfd` is refused: it copies a descriptor, a connected socket say, out of
//!   another process. (Landlock already restricts it to processes in the same domain.)
//!
//! What remains: a *datagram* socket the process held before confinement (`AF_UNIX`
//! `SOCK_DGRAM`, or UDP) can still `sendmsg` to any address it names. Landlock refuses
//! pathname Unix destinations from ABI 9, abstract ones from ABI 6 (scope) and UDP from
//! ABI 10; on older kernels nothing does. Do not hand a worker a datagram socket. A worker
//! that needs another connection gets it before it is confined: connect first, or inherit
//! the descriptor.
//!
//! # Nothing executes from memory
//!
//! A confined process can `execve` only files Landlock lets it execute, i.e. files beneath
//! a path allowed with `allow_read_exec` (spawn mode: `[sandbox] read_only`). Landlock
//! checks an exec against the path of the file, but files on the kernel's internal mounts
//! (a `memfd`) have no path it governs: a worker could copy any binary into a memfd and
//! run it with `execveat(fd, "", AT_EMPTY_PATH)` or `execve("/proc/self/fd/N")`. So:
//!
//! - `memfd_create` is refused unless its flags include `MFD_NOEXEC_SEAL` (Linux 6.3):
//!   such a memfd has no execute bits and can never get them (`F_SEAL_EXEC`, and `fchmod`
//!   is refused anyway), so the kernel refuses to exec it by any route. On older kernels
//!   the flag is unknown and every `memfd_create` fails.
//! - `execveat` with `AT_EMPTY_PATH` (`fexecve`, executing a descriptor by itself) is
//!   refused. Programs are run by path.
//! - `memfd_secret` is refused: another file on an internal mount.
//!
//! The other ways to a new executable file are paths Landlock governs: `O_TMPFILE` opens
//! for writing, and `/dev/shm` is an ordinary tmpfs; Landlock grants no write right
//! anywhere, so nothing new appears beneath an executable path. A file the broker opened
//! with write access is executed (through `/proc/self/fd/N`) only if its own path is
//! beneath `allow_read_exec`: never allow executing in a tree the broker grants writes to.
//!
//! What remains: an executable memfd the process held before confinement, or received
//! over a socket it held, can still be run through `/proc/self/fd/N`. And loading code is
//! not executing a file: the dynamic loader or an interpreter beneath an executable path
//! (`ld.so /proc/self/fd/N`, `sh FILE`) maps or reads any file the process may read, just
//! as the process itself may map memory executable. The property bounds which files can
//! become a new program, not what code a compromised worker can run in its own process.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::dispatch;
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
    libc::SYS_utimensat,
    // Other processes' memory and descriptors.
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_pidfd_getfd,
    // New sockets, and giving any socket an address or a peer (see "No new socket reaches
    // anything" in the module documentation).
    libc::SYS_socket,
    libc::SYS_connect,
    libc::SYS_bind,
    libc::SYS_listen,
    // Secret memory: a file on an internal mount, outside Landlock's view.
    libc::SYS_memfd_secret,
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

/// The calls that set or remove an extended attribute, refused with the rest of
/// [`REFUSED`] (transparent mode's filter answers them `EOPNOTSUPP` instead).
pub const XATTR_CHANGES: &[i64] = &[
    libc::SYS_setxattr,
    libc::SYS_lsetxattr,
    libc::SYS_fsetxattr,
    libc::SYS_removexattr,
    libc::SYS_lremovexattr,
    libc::SYS_fremovexattr,
    nr::SETXATTRAT,
    nr::REMOVEXATTRAT,
];

/// The mode and time calls transparent mode's supervisor answers for its program (on
/// its own scratch files alone): left out of [`REFUSED`] by
/// [`Sandbox::allow_metadata_calls`](super::Sandbox::allow_metadata_calls). On x86_64
/// also `chmod`, which glibc's `chmod(3)` makes there; the other old forms (`utime`,
/// `utimes`, `futimesat`) stay refused: the C library makes none of them.
pub const METADATA: &[i64] = &[
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    nr::FCHMODAT2,
    libc::SYS_utimensat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_chmod,
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
const CLONE_NEW_FLAGS: [libc::c_int; 8] = [
    // Not a namespace: a child of the sandboxed process's *parent*, which would be out
    // of the worker's own tree (spawn mode's broker would have to reap it).
    libc::CLONE_PARENT,
    libc::CLONE_NEWNS,
    libc::CLONE_NEWCGROUP,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
];

/// The socket types `socketpair` may make: connected pairs that refuse (`SOCK_STREAM`) or
/// ignore (`SOCK_SEQPACKET`) a destination address in `sendmsg`. The kernel takes the type
/// as an `int`, its low bits the type and `SOCK_NONBLOCK` and `SOCK_CLOEXEC` the only flags
/// it accepts beside it; every combination is listed, since a rule compares equal values.
const PAIR_TYPES: [libc::c_int; 2] = [libc::SOCK_STREAM, libc::SOCK_SEQPACKET];
const PAIR_FLAGS: [libc::c_int; 4] = [
    0,
    libc::SOCK_NONBLOCK,
    libc::SOCK_CLOEXEC,
    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
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
/// 1. the `EPERM` rules: the lists above (`socket`, `connect`, `bind` and `listen`
///    included), `socketpair` but for an `AF_UNIX` pair of [`PAIR_TYPES`], `sendto` with a
///    destination address, `memfd_create` without `MFD_NOEXEC_SEAL`, `execveat` with
///    `AT_EMPTY_PATH`, `clone` with any `CLONE_NEW*` flag, and `ioctl` with a request that
///    injects terminal input ([`TTY_INPUT_IOCTLS`]);
/// 2. `clone3` fails with `ENOSYS`. Its flags live in a structure in memory, which a seccomp
///    filter cannot read, so it cannot be checked for `CLONE_NEW*` like `clone`. `EPERM` would
///    make thread creation fail, but `ENOSYS` ("this kernel has no clone3") makes glibc and
///    musl fall back to `clone`, whose flags the first program does check;
/// 3. on x86_64, any system call number with the x32 bit (`0x4000_0000`) fails with
///    `ENOSYS`. x32 calls pass the x86_64 architecture check with different numbers, so on a
///    kernel built with `CONFIG_X86_X32_ABI` they would walk around every rule above.
///
/// `process_memory` leaves `process_vm_readv` and `process_vm_writev` out of the refusals
/// (see [`Sandbox::allow_process_memory`](super::Sandbox::allow_process_memory)).
/// `metadata` leaves [`METADATA`] out of them (see
/// [`Sandbox::allow_metadata_calls`](super::Sandbox::allow_metadata_calls)).
pub(crate) fn compile(process_memory: bool, metadata: bool) -> Result<Filters, SandboxError> {
    let arch = target_arch()?;
    let rules = refusals(process_memory, metadata)?;
    let eperm = libc::EPERM as u32;
    let by_number: Vec<(u32, dispatch::Rule)> = rules
        .iter()
        .map(|(&nr, conditions)| {
            let rule = if conditions.is_empty() {
                dispatch::Rule::Refuse(eperm)
            } else {
                dispatch::Rule::Full
            };
            (nr as u32, rule)
        })
        .collect();
    if arch == TargetArch::x86_64 {
        // One program instead of two, searched by number (see `dispatch`): an install's
        // kernel time grows with the tests a number passes before its answer and with
        // the program's length, and a sandbox is applied per worker (`fdbroker each`:
        // per file). Behind the search, `seccompiler`'s program holds only the rules
        // that read arguments (and its architecture check).
        let conditional = rules.into_iter().filter(|(_, c)| !c.is_empty()).collect();
        let full = refusing_program(conditional, arch)?;
        return Ok(Filters {
            programs: vec![dispatch::program(&by_number, full)],
        });
    }
    let refuse = refusing_program(rules, arch)?;
    let no_clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(SandboxError::SeccompBuild)?;
    Ok(Filters {
        programs: vec![
            refuse,
            no_clone3.try_into().map_err(SandboxError::SeccompBuild)?,
        ],
    })
}

/// Every refused call with the conditions under which it is refused (none: always).
fn refusals(
    process_memory: bool,
    metadata: bool,
) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SandboxError> {
    let memory = [libc::SYS_process_vm_readv, libc::SYS_process_vm_writev];
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = REFUSED
        .iter()
        .chain(XATTR_CHANGES)
        .chain(REFUSED_ARCH)
        .filter(|nr| !(process_memory && memory.contains(nr)))
        .filter(|nr| !(metadata && METADATA.contains(nr)))
        .map(|&nr| (nr, Vec::new()))
        .collect();
    rules.insert(libc::SYS_socketpair, socketpair_rules()?);
    rules.insert(libc::SYS_sendto, vec![sendto_with_address()?]);
    rules.insert(libc::SYS_memfd_create, vec![memfd_without_noexec_seal()?]);
    rules.insert(libc::SYS_execveat, vec![execveat_empty_path()?]);
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
    Ok(rules)
}

/// `seccompiler`'s program for `rules`: `EPERM` when one matches, allowed otherwise, and
/// its architecture check first.
fn refusing_program(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    arch: TargetArch,
) -> Result<BpfProgram, SandboxError> {
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(SandboxError::SeccompBuild)?
    .try_into()
    .map_err(SandboxError::SeccompBuild)
}

/// `socketpair(domain, type, ...)` is refused for a domain other than `AF_UNIX`, or a type
/// other than those in [`PAIR_TYPES`] (with any of [`PAIR_FLAGS`]). Both are `int`s: only
/// the lower 32 bits are compared, as the kernel reads them.
fn socketpair_rules() -> Result<Vec<SeccompRule>, SandboxError> {
    let not_unix = rule(vec![condition(
        0,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Ne,
        libc::AF_UNIX as u64,
    )?])?;
    let not_a_pair_type = PAIR_TYPES
        .iter()
        .flat_map(|&ty| PAIR_FLAGS.iter().map(move |&flags| ty | flags))
        .map(|ty| condition(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, ty as u64))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(vec![not_unix, rule(not_a_pair_type)?])
}

/// `sendto(fd, buf, len, flags, dest_addr, addrlen)` with a non-NULL `dest_addr`: all 64
/// bits, since the kernel tests the whole pointer.
fn sendto_with_address() -> Result<SeccompRule, SandboxError> {
    rule(vec![condition(
        4,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::Ne,
        0,
    )?])
}

/// `memfd_create(name, flags)` whose (`unsigned int`) flags lack `MFD_NOEXEC_SEAL`.
fn memfd_without_noexec_seal() -> Result<SeccompRule, SandboxError> {
    rule(vec![condition(
        1,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(u64::from(libc::MFD_NOEXEC_SEAL)),
        0,
    )?])
}

/// `execveat(dirfd, path, argv, envp, flags)` whose (`int`) flags include `AT_EMPTY_PATH`.
fn execveat_empty_path() -> Result<SeccompRule, SandboxError> {
    let empty_path = libc::AT_EMPTY_PATH as u64;
    rule(vec![condition(
        4,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(empty_path),
        empty_path,
    )?])
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
        let filters = compile(false, false).expect("compile");
        let expected = if cfg!(target_arch = "x86_64") { 1 } else { 2 };
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
            libc::SYS_socketpair,
            libc::SYS_sendto,
            libc::SYS_memfd_create,
            libc::SYS_execveat,
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_ioctl,
        ] {
            assert!(!all.contains(&special));
        }
    }

    /// The one x86_64 program decides every call as the refusing program `seccompiler`
    /// builds does, but the x32 range and `clone3`, which get `ENOSYS`.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_x86_64_program_decides_as_the_seccompiler_program_with_its_head() {
        use super::super::dispatch::tests::{Data, run};
        for (memory, metadata) in [(false, false), (true, false), (false, true), (true, true)] {
            let filters = compile(memory, metadata).expect("compile");
            assert_eq!(filters.programs.len(), 1, "one filter to install");
            let ours = &filters.programs[0];
            let rules = refusals(memory, metadata).expect("rules");
            let full = &refusing_program(rules, TargetArch::x86_64).expect("program");
            let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
            let patterns = [
                [0u64; 6],
                [u64::MAX; 6],
                [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0],
                [libc::AF_INET as u64, libc::TIOCSTI, 1, 0, 0, 0],
                [libc::AF_UNIX as u64, libc::SOCK_STREAM as u64, 0, 0, 0, 0],
            ];
            let numbers = (0..1200u32).chain([
                super::super::dispatch::X32_SYSCALL_BIT,
                super::super::dispatch::X32_SYSCALL_BIT + 1,
                u32::MAX,
            ]);
            for nr in numbers {
                for arch in [0xC000_003E, 0x4000_0003, 0xC000_00B7, 0] {
                    for args in patterns {
                        let d = Data { nr, arch, args };
                        let want = if arch == 0xC000_003E
                            && (nr >= super::super::dispatch::X32_SYSCALL_BIT
                                || nr == libc::SYS_clone3 as u32)
                        {
                            enosys
                        } else {
                            run(full, &d)
                        };
                        assert_eq!(run(ours, &d), want, "nr {nr} arch {arch:#x} {args:?}");
                    }
                }
            }
        }
    }
}
