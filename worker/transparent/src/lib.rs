//! Transparent mode (`fdbroker run --transparent`): an unmodified program's file calls on
//! paths the policy covers are answered by the broker.
//!
//! # The shape
//!
//! ```text
//! fdbroker run (broker, root)
//!  ├─ init        pid 1 of the namespace (crate::spawn::pidns)
//!  └─ supervisor  the broker's child: the sandbox user, no capabilities, a broker client
//!      └─ program the command, confined as a plain `fdbroker run` worker, plus a
//!                 seccomp filter that sends its file calls to the supervisor
//! ```
//!
//! The supervisor is the process `fdbroker run` starts; between `fork` and `exec` it
//! confines itself (the sandbox user, no capabilities, `no_new_privs`, Landlock allowing
//! `[sandbox] read_only` and reading `/proc`, the ordinary seccomp denylist except
//! `process_vm_readv`/`process_vm_writev`), then forks the program. The program applies
//! the ordinary worker sandbox on top (a nested Landlock domain without `/proc`, the full
//! denylist) and, last, the notification filter below with
//! `SECCOMP_FILTER_FLAG_NEW_LISTENER`; it passes the listener to the supervisor and execs.
//! The supervisor is the program's ancestor, has its uid, and its Landlock domain is the
//! parent of the program's: what the kernel requires for it to read and write the
//! program's memory (also under Yama's `ptrace_scope = 1`). It is not dumpable, so the
//! program cannot do the same to it.
//!
//! # What it answers, and how
//!
//! The filter sends `open`, `openat`, `openat2`, `creat`, `stat`, `lstat`, `newfstatat`,
//! `statx`, `access`, `faccessat`, `faccessat2`, `readlink` and `readlinkat` to the
//! supervisor; i386 and x32 calls
//! kill the program. For each notification the supervisor reads the path from the
//! program's memory once, makes it absolute (against the working directory or the
//! directory descriptor, as the kernel shows them in `/proc`), and removes `.` and `..`
//! lexically. Then:
//!
//! - a path no policy rule covers (`NoRule`), an empty path, `openat2` with `resolve`
//!   flags: `SECCOMP_USER_NOTIF_FLAG_CONTINUE`, so the kernel runs the call as the
//!   program made it, under its sandbox: exactly what plain `fdbroker run` gives. This
//!   is never a grant.
//! - anything else goes to the broker over the supervisor's own connection, which has
//!   the worker's identity: an open becomes an `Open` with the access its flags mean,
//!   a stat becomes a `Stat`, whose answer is written into the program's `struct stat`
//!   or `struct statx`. A denial is `EACCES`, a failure its errno.
//!
//! The supervisor can ask nothing the program could not ask itself through
//! `FDBROKER_FD`: its connection has the same identity, so a wrong classification here
//! changes which of two sandboxes answers, never what is granted.
//!
//! Wherever the thread id is used to reach the thread (its working directory or
//! descriptors in `/proc` after the path is read, its memory before a stat result is
//! written), `SECCOMP_IOCTL_NOTIF_ID_VALID` first checks the notification is still
//! pending (the thread still blocked in that call, so its id still names it). Answers
//! need no such check: `SECCOMP_IOCTL_NOTIF_SEND` and `SECCOMP_IOCTL_NOTIF_ADDFD` name
//! the notification by its id and fail for one that is gone. Granted descriptors are
//! installed with `ADDFD` and `SECCOMP_ADDFD_FLAG_SEND`, which installs and answers in
//! one step.
//!
//! Speed: the program waits for every answer, and on a small VM waking a sleeping
//! process on an idle CPU costs more than the broker's open. The listener asks for
//! synchronous wake-ups (program and supervisor hand the CPU to each other), and both
//! ends of the supervisor's broker connection look for the next message for a bounded
//! time before sleeping (`Client::set_spin`, the server's relay connections).
//!
//! The filter uses `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` (Linux 5.19): once the
//! supervisor has received a call, only a fatal signal interrupts it, so a signal
//! handler cannot re-run a call already answered. If the supervisor dies, the
//! program's intercepted calls fail with `ENOSYS` and its parent-death signal kills it.
#![allow(unsafe_code)] // moving to the fdbroker-transparent crate

use fdbroker_policy::{ClientId, Decision, Denial, Policy};
use fdbroker_shared::Channel;
use fdbroker_shared::wire::{Access, StatMeta};
use fdbroker_worker::Client;
use fdbroker_worker::sandbox::PreparedSandbox;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Values from the kernel's `include/uapi/linux/seccomp.h` (the `libc` crate does not
/// have all of them for every target).
mod uapi {
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
}

/// System call numbers missing from `libc` for some targets, from
/// `include/uapi/asm-generic/unistd.h` (the same on every architecture from 424 on).
const SYS_OPENAT2: i64 = 437;
const SYS_FACCESSAT2: i64 = 439;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 62 | 0x8000_0000 | 0x4000_0000;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 183 | 0x8000_0000 | 0x4000_0000;

/// The calls sent to the supervisor.
fn intercepted() -> Vec<i64> {
    let mut v = vec![
        libc::SYS_openat,
        SYS_OPENAT2,
        libc::SYS_newfstatat,
        libc::SYS_statx,
        libc::SYS_faccessat,
        SYS_FACCESSAT2,
        libc::SYS_readlinkat,
    ];
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

/// The program's notification filter: another architecture or an x32 call kills the
/// process; the intercepted calls go to the listener; everything else is left to the
/// other filters.
fn program() -> Vec<libc::sock_filter> {
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
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
    for nr in intercepted() {
        p.push(op(JEQ_K, 0, 1, nr as u32));
        p.push(op(RET_K, 0, 0, uapi::RET_USER_NOTIF));
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

/// Refuses to start on a kernel older than 5.19 (`SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`)
/// or, for threads, 6.9 (`PIDFD_THREAD`).
pub fn check_kernel() -> Result<(), String> {
    let uts = nix::sys::utsname::uname().map_err(|e| format!("uname: {e}"))?;
    let release = uts.release().to_string_lossy().into_owned();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if version < (6, 9) {
        return Err(format!(
            "--transparent needs Linux 6.9 or later (seccomp's WAIT_KILLABLE_RECV, 5.19, and \
             thread pidfds, 6.9); this kernel is {release}"
        ));
    }
    Ok(())
}

/// What the supervisor needs, prepared in the broker before it forks.
pub struct Prepared {
    /// The supervisor's own sandbox.
    pub supervisor: PreparedSandbox,
    /// The program's: the ordinary worker sandbox, applied on top.
    pub program: PreparedSandbox,
    /// The supervisor's end of its broker connection.
    pub connection: OwnedFd,
    pub policy: Policy,
    pub client: ClientId,
}

/// Runs in the forked child `fdbroker run` starts (single-threaded, root), after the
/// descriptor and signal set-up: confines it as the supervisor, forks the program and
/// returns in the program only (which then execs). The supervisor never returns.
pub fn split(prepared: Prepared) -> io::Result<()> {
    let Prepared {
        supervisor,
        program,
        connection,
        policy,
        client,
    } = prepared;
    if let Err(e) = supervisor.apply() {
        eprintln!("fdbroker: cannot confine the transparent supervisor: {e}");
        return Err(e.into());
    }
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    // Not dumpable: the program (same uid) cannot read or write its supervisor.
    nix::sys::prctl::set_dumpable(false)?;
    let (ours, theirs) = Channel::pair()?;
    let supervisor_pid = nix::unistd::getpid();
    // Blocked before the fork, so that a program that ends at once (an exec that
    // fails) leaves its SIGCHLD pending for the supervisor's signalfd, not lost.
    supervisor_signals().thread_block()?;
    // SAFETY: this process is the single-threaded child of a single-threaded broker
    // (spawn mode checks it), so the new child is a complete copy with no lock held by a
    // thread that does not exist in it.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Child => {
            drop(ours);
            drop(connection);
            SigSet::empty().thread_set_mask()?;
            // Dies with its supervisor; checked after setting, in case it already died.
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            if nix::unistd::getppid() != supervisor_pid {
                return Err(io::Error::other("the transparent supervisor is gone"));
            }
            if let Err(e) = program.apply_nested() {
                eprintln!("fdbroker: cannot confine the worker: {e}");
                return Err(e.into());
            }
            let listener = install_filter().inspect_err(|e| {
                eprintln!("fdbroker: cannot install the transparent-mode filter: {e}");
            })?;
            theirs.send_with_fds(&[0u8], &[listener.as_fd()])?;
            Ok(())
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            drop(program);
            let code = match supervise(child, &ours, connection, &policy, client) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("fdbroker: transparent supervisor: {e}");
                    let _ = kill(child, Signal::SIGKILL);
                    125
                }
            };
            exit_now(code)
        }
    }
}

/// Installs the notification filter on the calling thread; returns the listener.
fn install_filter() -> io::Result<OwnedFd> {
    let filter = program();
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

/// The supervisor's life: take the listener, connect, answer until the program exits;
/// returns the exit code that reports how the program ended (after re-raising its
/// signal, if it was killed by one).
fn supervise(
    child: Pid,
    handoff: &Channel,
    connection: OwnedFd,
    policy: &Policy,
    client: ClientId,
) -> io::Result<i32> {
    // Everything inherited from the broker goes, above all the write end of the
    // pipe through which `fdbroker run` waits for the program's exec.
    let keep = [handoff.as_raw_fd(), connection.as_raw_fd()];
    close_all_but(&keep)?;
    let sfd = SignalFd::with_flags(
        &supervisor_signals(),
        SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
    )?;
    let mut buf = [0u8; 8];
    let listener = match handoff.recv_with_fds(&mut buf, 1) {
        Ok((_, mut fds)) if fds.len() == 1 => fds.remove(0),
        // The program failed before exec (it said why); report its end.
        _ => return wait_for(child),
    };
    sync_wake_up(&listener);
    // Connected on the first call that needs the broker: `fdbroker run` serves only
    // once the program has exec'd, and waits for this process if the exec failed.
    let mut sup = Supervisor {
        listener,
        connection: Some(connection),
        broker: None,
        policy,
        client,
    };
    let mut listening = true;
    loop {
        let lfd = sup.listener.as_fd();
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if listening {
            fds.push(PollFd::new(lfd, PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let sig_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
        let notif_ready = fds
            .get(1)
            .and_then(|f| f.revents())
            .map_or(PollFlags::empty(), |r| r);
        drop(fds);
        if notif_ready.contains(PollFlags::POLLIN) {
            sup.one();
        } else if notif_ready.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
            // No process uses the filter any more; wait for the program's exit.
            listening = false;
        }
        if sig_ready {
            while let Ok(Some(info)) = sfd.read_signal() {
                let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                    continue;
                };
                if sig == Signal::SIGCHLD {
                    if let Some(code) = reap(child)? {
                        return Ok(code);
                    }
                } else {
                    let _ = kill(child, sig);
                }
            }
        }
    }
}

/// What the supervisor reads from its signalfd: the signals `fdbroker run` forwards
/// (passed on to the program) and `SIGCHLD`.
fn supervisor_signals() -> SigSet {
    let mut signals = SigSet::empty();
    for s in crate::spawn::broker::FORWARDED {
        signals.add(s);
    }
    signals.add(Signal::SIGCHLD);
    signals
}

/// Waits for the program and reports its end.
fn wait_for(child: Pid) -> io::Result<i32> {
    loop {
        match waitpid(child, None) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(status) => {
                if let Some(code) = ended(status) {
                    return Ok(code);
                }
            }
        }
    }
}

fn reap(child: Pid) -> io::Result<Option<i32>> {
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Ok(status) => {
                if let Some(code) = ended(status) {
                    return Ok(Some(code));
                }
            }
        }
    }
}

/// The program's exit code, or its signal re-raised on the supervisor so that
/// `fdbroker run` reports it as its own worker's.
fn ended(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => {
            // SAFETY: resetting a disposition to the default has no memory effects.
            let _ = unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl) };
            let mut one = SigSet::empty();
            one.add(sig);
            let _ = one.thread_unblock();
            let _ = nix::sys::signal::raise(sig);
            Some(128 + sig as i32)
        }
        _ => None,
    }
}

/// The answer to one notification.
enum Answer {
    /// Let the kernel run the call under the program's sandbox.
    Continue,
    Error(i32),
    Value(i64),
    /// Install this descriptor in the program as the call's result.
    Fd {
        fd: OwnedFd,
        cloexec: bool,
    },
    /// Write these bytes at this address in the program, then return 0.
    Write {
        addr: u64,
        bytes: Vec<u8>,
    },
}

/// How long the supervisor looks for the broker's answer before sleeping: the broker
/// takes ~10 µs for an open, while waking this process on an idle CPU costs ~20 µs on
/// a small VM (see `Client::set_spin`).
const REPLY_SPIN: std::time::Duration = std::time::Duration::from_micros(50);

struct Supervisor<'a> {
    listener: OwnedFd,
    /// The connection, until the first call that needs it greets the broker over it.
    connection: Option<OwnedFd>,
    broker: Option<Client>,
    policy: &'a Policy,
    client: ClientId,
}

/// What an intercepted call asks, decoded from its registers.
enum Call {
    Open {
        dirfd: i32,
        path: u64,
        flags: i32,
    },
    Stat {
        dirfd: i32,
        path: u64,
        flags: i32,
        buf: u64,
        statx: bool,
    },
    Access {
        dirfd: i32,
        path: u64,
        mode: i32,
    },
    /// `readlink`: a path the broker serves is never a symbolic link it would show.
    Readlink {
        dirfd: i32,
        path: u64,
    },
}

impl Supervisor<'_> {
    /// Receives and answers one notification. Errors are the program's: a notification
    /// gone stale (the thread was killed) is simply dropped.
    fn one(&mut self) {
        let mut n = uapi::Notif::default();
        if ioctl(
            &self.listener,
            uapi::IOCTL_RECV,
            (&mut n as *mut uapi::Notif).cast(),
        )
        .is_err()
        {
            return;
        }
        let answer = self.decide(&n);
        self.respond(n.id, n.pid, answer);
    }

    /// The broker connection, greeted on first use.
    fn broker(&mut self) -> io::Result<&Client> {
        if self.broker.is_none() {
            let fd = self
                .connection
                .take()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?;
            let client = Client::over(Channel::wrap(fd))?;
            // The program waits for every answer: see `Client::set_spin`.
            if Channel::spinning_pays() {
                client.set_spin(REPLY_SPIN);
            }
            self.broker = Some(client);
        }
        self.broker
            .as_ref()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }

    fn decide(&mut self, n: &uapi::Notif) -> Answer {
        let tid = n.pid as i32;
        let Some(call) = self.decode(tid, &n.data) else {
            return Answer::Continue;
        };
        let (dirfd, path_addr) = match &call {
            Call::Open { dirfd, path, .. }
            | Call::Stat { dirfd, path, .. }
            | Call::Access { dirfd, path, .. }
            | Call::Readlink { dirfd, path } => (*dirfd, *path),
        };
        let raw = match read_path(tid, path_addr) {
            Ok(p) => p,
            Err(e) => return Answer::Error(e),
        };
        if raw.is_empty() {
            return Answer::Continue;
        }
        // The thread is still blocked in this call, so its tid still names it.
        if !self.valid(n.id) {
            return Answer::Continue;
        }
        let Some(path) = absolute(tid, dirfd, &raw) else {
            return Answer::Continue;
        };
        // Only paths a rule covers go to the broker; elsewhere the sandbox decides.
        if let Decision::Deny(Denial::NoRule | Denial::InvalidPath(_)) =
            self.policy.decide(self.client, &path, Access::Read)
        {
            return Answer::Continue;
        }
        let path = Path::new(OsStr::from_bytes(&path));
        let (policy, client) = (self.policy, self.client);
        let broker = match self.broker() {
            Ok(b) => b,
            Err(e) => return Answer::Error(errno_of(&e)),
        };
        match call {
            Call::Open { flags, .. } => open(broker, path, flags),
            Call::Stat {
                flags, buf, statx, ..
            } => {
                let _ = flags;
                match broker.metadata(path) {
                    Ok(meta) => Answer::Write {
                        addr: buf,
                        bytes: if statx {
                            statx_bytes(meta.raw())
                        } else {
                            stat_bytes(meta.raw())
                        },
                    },
                    Err(e) => Answer::Error(errno_of(&e)),
                }
            }
            // The broker resolves without following symbolic links (unless a rule says
            // `symlinks = "beneath"`, and then it describes the target): what it can
            // describe is, as far as the program can tell, not a link.
            Call::Readlink { .. } => match broker.metadata(path) {
                Ok(_) => Answer::Error(libc::EINVAL),
                Err(e) => Answer::Error(errno_of(&e)),
            },
            Call::Access { mode, .. } => match broker.metadata(path) {
                Err(e) => Answer::Error(errno_of(&e)),
                Ok(meta) => {
                    let dir = meta.is_dir();
                    if mode & libc::W_OK != 0 {
                        match policy.decide(client, path.as_os_str().as_bytes(), Access::Write) {
                            Decision::Allow(_) if !dir => {}
                            _ => return Answer::Error(libc::EACCES),
                        }
                    }
                    if mode & libc::X_OK != 0 && !dir {
                        return Answer::Error(libc::EACCES);
                    }
                    Answer::Value(0)
                }
            },
        }
    }

    fn decode(&self, tid: i32, d: &uapi::Data) -> Option<Call> {
        let a = d.args;
        // The kernel reads these arguments as `int`: the low 32 bits.
        let int = |v: u64| v as u32 as i32;
        let nr = i64::from(d.nr);
        #[cfg(target_arch = "x86_64")]
        {
            let cwd = libc::AT_FDCWD;
            match nr {
                libc::SYS_open => {
                    return Some(Call::Open {
                        dirfd: cwd,
                        path: a[0],
                        flags: int(a[1]),
                    });
                }
                libc::SYS_creat => {
                    return Some(Call::Open {
                        dirfd: cwd,
                        path: a[0],
                        flags: libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC,
                    });
                }
                libc::SYS_stat | libc::SYS_lstat => {
                    let flags = if nr == libc::SYS_lstat {
                        libc::AT_SYMLINK_NOFOLLOW
                    } else {
                        0
                    };
                    return Some(Call::Stat {
                        dirfd: cwd,
                        path: a[0],
                        flags,
                        buf: a[1],
                        statx: false,
                    });
                }
                libc::SYS_readlink => {
                    return Some(Call::Readlink {
                        dirfd: cwd,
                        path: a[0],
                    });
                }
                libc::SYS_access => {
                    return Some(Call::Access {
                        dirfd: cwd,
                        path: a[0],
                        mode: int(a[1]),
                    });
                }
                _ => {}
            }
        }
        match nr {
            libc::SYS_openat => Some(Call::Open {
                dirfd: int(a[0]),
                path: a[1],
                flags: int(a[2]),
            }),
            SYS_OPENAT2 => {
                // struct open_how { u64 flags; u64 mode; u64 resolve; }
                if a[3] < 24 {
                    return None;
                }
                let mut how = [0u8; 24];
                read_memory(tid, a[2], &mut how).ok()?;
                let flags = u64::from_ne_bytes(how[0..8].try_into().ok()?);
                let resolve = u64::from_ne_bytes(how[16..24].try_into().ok()?);
                if resolve != 0 {
                    return None;
                }
                Some(Call::Open {
                    dirfd: int(a[0]),
                    path: a[1],
                    flags: i32::try_from(flags).ok()?,
                })
            }
            libc::SYS_newfstatat => {
                let flags = int(a[3]);
                if flags & libc::AT_EMPTY_PATH != 0 {
                    return None;
                }
                Some(Call::Stat {
                    dirfd: int(a[0]),
                    path: a[1],
                    flags,
                    buf: a[2],
                    statx: false,
                })
            }
            libc::SYS_statx => {
                let flags = int(a[2]);
                if flags & libc::AT_EMPTY_PATH != 0 {
                    return None;
                }
                Some(Call::Stat {
                    dirfd: int(a[0]),
                    path: a[1],
                    flags,
                    buf: a[4],
                    statx: true,
                })
            }
            libc::SYS_readlinkat => Some(Call::Readlink {
                dirfd: int(a[0]),
                path: a[1],
            }),
            libc::SYS_faccessat | SYS_FACCESSAT2 => {
                if nr == SYS_FACCESSAT2 && int(a[3]) & libc::AT_EMPTY_PATH != 0 {
                    return None;
                }
                Some(Call::Access {
                    dirfd: int(a[0]),
                    path: a[1],
                    mode: int(a[2]),
                })
            }
            _ => None,
        }
    }
}

/// An open, as the broker's access its flags mean.
fn open(broker: &Client, path: &Path, flags: i32) -> Answer {
    {
        let cloexec = flags & libc::O_CLOEXEC != 0;
        let mode = flags & libc::O_ACCMODE;
        let mut extra = 0;
        if flags & libc::O_TRUNC != 0 {
            extra |= fdbroker_shared::wire::OPEN_TRUNC;
        }
        if flags & libc::O_APPEND != 0 {
            extra |= fdbroker_shared::wire::OPEN_APPEND;
        }
        let result = if flags & libc::O_PATH != 0 || mode == libc::O_RDONLY {
            if flags & (libc::O_CREAT | libc::O_TRUNC) != 0 && flags & libc::O_PATH == 0 {
                return Answer::Error(libc::EACCES);
            }
            if flags & libc::O_DIRECTORY != 0 {
                broker.open_with(path, Access::Directory)
            } else {
                match broker.open_with(path, Access::Read) {
                    // A directory opened without O_DIRECTORY (fdopendir after open).
                    Err(e) if errno_of(&e) == libc::EISDIR => {
                        broker.open_with(path, Access::Directory)
                    }
                    r => r,
                }
            }
        } else {
            let access = if mode == libc::O_RDWR {
                Access::ReadWrite
            } else {
                Access::Write
            };
            if flags & libc::O_CREAT != 0 && flags & libc::O_EXCL != 0 {
                broker
                    .open_detailed(path, Access::Create, 0)
                    .map(|o| o.file)
            } else {
                match broker.open_detailed(path, access, extra) {
                    Err(e) if flags & libc::O_CREAT != 0 && errno_of(&e) == libc::ENOENT => broker
                        .open_detailed(path, Access::Create, 0)
                        .map(|o| o.file),
                    r => r.map(|o| o.file),
                }
            }
        };
        match result {
            Ok(file) => {
                let fd = OwnedFd::from(file);
                if flags & libc::O_NONBLOCK != 0 {
                    // A status flag of the open file description the program shares.
                    let _ = nix::fcntl::fcntl(
                        fd.as_fd(),
                        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                    );
                }
                Answer::Fd { fd, cloexec }
            }
            Err(e) => Answer::Error(errno_of(&e)),
        }
    }
}

impl Supervisor<'_> {
    fn valid(&self, id: u64) -> bool {
        let mut id = id;
        ioctl(
            &self.listener,
            uapi::IOCTL_ID_VALID,
            (&mut id as *mut u64).cast(),
        )
        .is_ok()
    }

    fn respond(&self, id: u64, tid: u32, answer: Answer) {
        let mut resp = uapi::Resp {
            id,
            ..Default::default()
        };
        match answer {
            Answer::Continue => resp.flags = uapi::USER_NOTIF_FLAG_CONTINUE,
            Answer::Error(e) => resp.error = -e,
            Answer::Value(v) => resp.val = v,
            Answer::Fd { fd, cloexec } => {
                // No ID_VALID first: ADDFD finds the notification by its id and fails
                // (ENOENT) if the thread is gone; nothing is installed elsewhere.
                let mut add = uapi::AddFd {
                    id,
                    flags: uapi::ADDFD_FLAG_SEND,
                    srcfd: fd.as_raw_fd() as u32,
                    newfd: 0,
                    newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
                };
                // Installs the descriptor and answers with its number, atomically.
                match ioctl(
                    &self.listener,
                    uapi::IOCTL_ADDFD,
                    (&mut add as *mut uapi::AddFd).cast(),
                ) {
                    Ok(()) => return,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return,
                    Err(_) => resp.error = -libc::EMFILE,
                }
            }
            Answer::Write { addr, bytes } => {
                if !self.valid(id) {
                    return;
                }
                if write_memory(tid as i32, addr, &bytes).is_err() {
                    resp.error = -libc::EFAULT;
                }
            }
        }
        // SEND, like ADDFD, fails harmlessly for a notification that is gone.
        let _ = ioctl(
            &self.listener,
            uapi::IOCTL_SEND,
            (&mut resp as *mut uapi::Resp).cast(),
        );
    }
}

/// The errno for the program: the broker's own (a denial is `EACCES`, a missing file
/// `ENOENT`, ...), or `EIO` when the broker could not be asked at all.
fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error()
        .or_else(|| {
            e.get_ref()
                .and_then(|inner| inner.downcast_ref::<fdbroker_worker::BrokerError>())
                .map(|b| b.errno)
        })
        .filter(|&errno| errno > 0)
        .unwrap_or(libc::EIO)
}

/// Asks the kernel to hand the CPU straight from a notifying thread to the supervisor
/// and back (`SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`, Linux 6.6): the program is blocked
/// for the whole exchange, so running both on the program's CPU saves a wake-up of
/// another, often idle, CPU each way. Only speed depends on it.
fn sync_wake_up(listener: &OwnedFd) {
    // SAFETY: this request takes its argument by value (a flag word), not a pointer.
    // Its result is not needed: without the flag the wake-ups are only slower.
    let _ = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            uapi::IOCTL_SET_FLAGS as libc::Ioctl,
            uapi::FD_SYNC_WAKE_UP,
        )
    };
}

/// `ioctl(2)` on the listener with a pointer to a structure of the request's size.
fn ioctl(fd: &OwnedFd, request: u32, arg: *mut libc::c_void) -> io::Result<()> {
    // SAFETY: every caller passes a pointer to a live, properly sized `repr(C)` value
    // matching `request` (the request encodes that size), for the duration of the call.
    #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request as libc::Ioctl, arg) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Reads `buf.len()` bytes at `addr` in thread `tid`'s memory.
fn read_memory(tid: i32, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes `buf`, writable for its length; the remote side is only
    // read by the kernel, which checks it against the other process's mappings.
    let n = unsafe { libc::process_vm_readv(tid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Writes `bytes` at `addr` in thread `tid`'s memory, all or an error.
fn write_memory(tid: i32, addr: u64, bytes: &[u8]) -> io::Result<()> {
    let local = libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: `local` describes `bytes`, which the kernel only reads; the remote side is
    // checked by the kernel against the other process's mappings.
    let n = unsafe { libc::process_vm_writev(tid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else if n as usize != bytes.len() {
        Err(io::Error::from_raw_os_error(libc::EFAULT))
    } else {
        Ok(())
    }
}

/// The NUL-terminated path at `addr`, read once, in pieces that never cross a page
/// boundary (a path may end just before an unmapped page). Errors are errnos for the
/// program, as the kernel's own reading gives them: the terminator must be within the
/// first `PATH_MAX` bytes (a path of at most 4095), else `ENAMETOOLONG`, and no byte
/// past those `PATH_MAX` is read.
fn read_path(tid: i32, addr: u64) -> Result<Vec<u8>, i32> {
    const PAGE: u64 = 4096;
    let max = libc::PATH_MAX as usize;
    let mut out = Vec::new();
    let mut at = addr;
    // Most paths end within the first read.
    let mut buf = [0u8; 512];
    while out.len() < max {
        let chunk = (PAGE - at % PAGE) as usize;
        let want = chunk.min(max - out.len()).min(buf.len());
        let n = read_memory(tid, at, &mut buf[..want]).map_err(|_| libc::EFAULT)?;
        if n == 0 {
            return Err(libc::EFAULT);
        }
        if let Some(end) = buf[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..end]);
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
        at = at.checked_add(n as u64).ok_or(libc::EFAULT)?;
    }
    Err(libc::ENAMETOOLONG)
}

/// `path` made absolute against `dirfd` (or the working directory) of thread `tid`, with
/// `.` and `..` removed lexically; `None` where that cannot be known (the sandbox then
/// decides).
///
/// `/proc` shows pids of the broker's namespace, while the notification names the
/// thread in the supervisor's: a thread pidfd's `fdinfo` translates.
fn absolute(tid: i32, dirfd: i32, path: &[u8]) -> Option<Vec<u8>> {
    let mut full = if path.first() == Some(&b'/') {
        path.to_vec()
    } else {
        let host = host_tid(tid)?;
        let link = if dirfd == libc::AT_FDCWD {
            format!("/proc/{host}/cwd")
        } else if dirfd >= 0 {
            format!("/proc/{host}/fd/{dirfd}")
        } else {
            return None;
        };
        let base = std::fs::read_link(link).ok()?;
        let mut base = base.into_os_string().into_vec();
        if base.first() != Some(&b'/') {
            return None;
        }
        base.push(b'/');
        base.extend_from_slice(path);
        base
    };
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in full.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let mut clean = Vec::with_capacity(full.len());
    for p in parts {
        clean.push(b'/');
        clean.extend_from_slice(p);
    }
    if clean.is_empty() {
        clean.push(b'/');
    }
    full.clear();
    Some(clean)
}

use std::os::unix::ffi::OsStringExt;

/// Thread `tid` of this pid namespace, as `/proc` (the broker's namespace) numbers it.
fn host_tid(tid: i32) -> Option<i32> {
    // SAFETY: pidfd_open takes integers; the result is a new descriptor owned here.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, tid, uapi::PIDFD_THREAD) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a descriptor the kernel just returned, owned here alone.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd())).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse::<i32>().ok())
        .filter(|&p| p > 0)
}

/// `struct stat` as `newfstatat` fills it, from what the broker saw.
fn stat_bytes(m: &StatMeta) -> Vec<u8> {
    // SAFETY: `libc::stat` is plain integers; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    st.st_dev = m.file.dev as _;
    st.st_ino = m.file.ino as _;
    st.st_mode = m.file.mode as _;
    st.st_nlink = m.file.nlink as _;
    st.st_uid = m.uid;
    st.st_gid = m.gid;
    st.st_rdev = m.rdev as _;
    st.st_size = m.file.size as _;
    st.st_blksize = m.blksize as _;
    st.st_blocks = m.blocks as _;
    st.st_atime = m.atime_sec as _;
    st.st_atime_nsec = i64::from(m.atime_nsec) as _;
    st.st_mtime = m.file.mtime_sec as _;
    st.st_mtime_nsec = i64::from(m.file.mtime_nsec) as _;
    st.st_ctime = m.ctime_sec as _;
    st.st_ctime_nsec = i64::from(m.ctime_nsec) as _;
    as_bytes(&st)
}

/// `struct statx` with the basic fields (no birth time: the broker does not see it).
fn statx_bytes(m: &StatMeta) -> Vec<u8> {
    // SAFETY: `libc::statx` is plain integers; all-zero is a valid value.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    st.stx_mask = libc::STATX_BASIC_STATS;
    st.stx_blksize = m.blksize as u32;
    st.stx_nlink = m.file.nlink as u32;
    st.stx_uid = m.uid;
    st.stx_gid = m.gid;
    st.stx_mode = m.file.mode as u16;
    st.stx_ino = m.file.ino;
    st.stx_size = m.file.size;
    st.stx_blocks = m.blocks;
    st.stx_atime.tv_sec = m.atime_sec;
    st.stx_atime.tv_nsec = m.atime_nsec;
    st.stx_mtime.tv_sec = m.file.mtime_sec;
    st.stx_mtime.tv_nsec = m.file.mtime_nsec;
    st.stx_ctime.tv_sec = m.ctime_sec;
    st.stx_ctime.tv_nsec = m.ctime_nsec;
    st.stx_rdev_major = libc::major(m.rdev as libc::dev_t);
    st.stx_rdev_minor = libc::minor(m.rdev as libc::dev_t);
    st.stx_dev_major = libc::major(m.file.dev as libc::dev_t);
    st.stx_dev_minor = libc::minor(m.file.dev as libc::dev_t);
    as_bytes(&st)
}

fn as_bytes<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: `T` is a plain `repr(C)` struct of integers (zero-initialised first, so
    // padding bytes are initialised too); reading its bytes is sound.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
        .to_vec()
}

/// Closes every descriptor from 3 up except `keep`.
fn close_all_but(keep: &[RawFd]) -> io::Result<()> {
    let mut keep: Vec<u32> = keep.iter().filter_map(|&k| u32::try_from(k).ok()).collect();
    keep.sort_unstable();
    let mut from = 3u32;
    for k in keep {
        if k >= from {
            if k > from {
                close_range(from, k - 1)?;
            }
            from = k + 1;
        }
    }
    close_range(from, u32::MAX)
}

fn close_range(first: u32, last: u32) -> io::Result<()> {
    // SAFETY: close_range takes integers and closes only this process's descriptors;
    // the supervisor never uses the objects that owned them (copies of the broker's).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` ends the process at once; nothing of the broker's runs after it.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel() {
        assert_eq!(uapi::IOCTL_RECV, 0xc050_2100);
        assert_eq!(uapi::IOCTL_SEND, 0xc018_2101);
        assert_eq!(uapi::IOCTL_ID_VALID, 0x4008_2102);
        assert_eq!(uapi::IOCTL_ADDFD, 0x4018_2103);
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

/// The program's private scratch directory (its `TMPDIR`): made by the broker, owned by
/// the sandbox user, mode 0700, the only place the sandbox may write; removed after the
/// run by a small process that waits for the broker to exit (the confined broker itself
/// may no longer remove anything there).
#[derive(Debug)]
pub struct Scratch {
    pub path: std::path::PathBuf,
}

impl Scratch {
    /// Makes the directory in the broker's temporary directory (`$TMPDIR` or `/tmp`)
    /// under a fresh name, and starts its remover. Call while single-threaded.
    pub fn create(uid: u32, gid: u32) -> io::Result<Scratch> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        let mut last = None;
        for attempt in 0..16u32 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let path = base.join(format!(
                "fdbroker-run.{}.{:08x}{attempt}",
                std::process::id(),
                nanos
            ));
            // mkdir never follows or reuses what exists: a name someone planted fails.
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    let dir = nix::fcntl::open(
                        &path,
                        nix::fcntl::OFlag::O_DIRECTORY
                            | nix::fcntl::OFlag::O_NOFOLLOW
                            | nix::fcntl::OFlag::O_CLOEXEC,
                        nix::sys::stat::Mode::empty(),
                    )?;
                    nix::unistd::fchown(
                        &dir,
                        Some(nix::unistd::Uid::from_raw(uid)),
                        Some(nix::unistd::Gid::from_raw(gid)),
                    )?;
                    let scratch = Scratch { path };
                    scratch.start_remover()?;
                    return Ok(scratch);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)))
    }

    /// Forks the remover: it holds only the read end of a pipe whose write end the
    /// broker keeps (close-on-exec) until it exits, however it exits; then it removes
    /// the directory (`remove_dir_all` does not follow symbolic links) and exits.
    fn start_remover(&self) -> io::Result<()> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        // SAFETY: the broker is single-threaded here (spawn mode has started no thread),
        // so the child is a complete copy with no lock held by a missing thread.
        match unsafe { nix::unistd::fork() }? {
            ForkResult::Child => {
                drop(write);
                // Out of the terminal's session and deaf to every signal but SIGKILL: a
                // Ctrl-C meant for `fdbroker run` must not leave the directory behind.
                let _ = nix::unistd::setsid();
                let _ = SigSet::all().thread_block();
                let keep = read.as_raw_fd();
                let _ = close_range(0, u32::try_from(keep).unwrap_or(0).saturating_sub(1));
                let _ = close_all_but(&[keep]);
                let mut buf = [0u8; 1];
                // Nothing is ever written: wait for end of file (or an error).
                while let Err(Errno::EINTR) | Ok(1..) = nix::unistd::read(&read, &mut buf) {}
                let _ = std::fs::remove_dir_all(&self.path);
                exit_now(0)
            }
            ForkResult::Parent { .. } => {
                drop(read);
                // Held until the broker exits: never closed on purpose.
                std::mem::forget(write);
                Ok(())
            }
        }
    }
}
