//! Applies `fdbroker_worker::sandbox` to itself, then tries things a compromised worker
//! would try and prints what happened, one line per check. `tests/tests/sandbox.rs` runs it.
//!
//! The sandbox must be applied from a single-threaded process, which a test harness is not;
//! hence a separate program.
//!
//! ```text
//! sandbox-probe [OPTIONS] [--] CHECK...
//!
//! OPTIONS
//!   --no-apply          do not apply the sandbox (control run: shows each check can succeed)
//!   --best-effort       Sandbox::best_effort()
//!   --user U, --group G Sandbox::user / Sandbox::group (a number is an id)
//!   --read P            Sandbox::allow_read(P)
//!   --read-exec P       Sandbox::allow_read_exec(P)
//!   --threads N         have N threads in total when applying
//!   --fork              prepare here, apply and run the checks in a forked child (spawn mode)
//!   --hide-landlock     first install a seccomp filter making Landlock's system calls fail
//!                       with ENOSYS, as on a kernel without Landlock
//!   --connect PATH      connect a SOCK_SEQPACKET socket to PATH before applying (the broker)
//!
//! CHECKS (each prints `CHECK <check> => ok [detail]` or `CHECK <check> => err <ERRNO>`)
//!   open:P read:P write:P create:P readdir:P chmod:P exec:P
//!   setuid0 setgid0 kill:PID unshare:user clone3 thread
//!   tcp-connect:PORT tcp-bind       (on TCP sockets created before applying)
//!   abstract:NAME                   (connect to an abstract Unix socket)
//!   socket:inet|inet6|netlink|unix  socketpair:unix|inet
//!   socketpair:unix-seqpacket|unix-dgram|unix-nonblock (SOCK_STREAM|SOCK_NONBLOCK)
//!   unix-connect:TYPE:PATH          a new AF_UNIX socket of TYPE (stream, seqpacket, dgram)
//!                                   connected to the pathname socket PATH
//!   unix-sendto:PATH                a new AF_UNIX datagram socket, sendto(PATH)
//!   held-connect:PATH               connect an AF_UNIX stream socket made before applying
//!   held-bind:NAME held-listen      bind that other held stream socket to the abstract
//!                                   NAME, then listen on it
//!   held-sendto:PATH                sendto(PATH) on an unbound AF_UNIX datagram socket made
//!                                   before applying
//!   pair-sendmsg:TYPE:PATH          a new socketpair of TYPE; sendmsg on one end with
//!                                   msg_name PATH; reports where the message went
//!   memfd-exec:ROUTE:PROG           copy PROG into a memfd_create(MFD_CLOEXEC) file and
//!                                   execute it in a forked child, ROUTE `empty-path`
//!                                   (execveat(fd, "", AT_EMPTY_PATH)) or `proc`
//!                                   (execve("/proc/self/fd/N")); reports `exit=N`
//!   memfd-sealed-exec:ROUTE:PROG    the same with MFD_NOEXEC_SEAL
//!   tmpfile-exec:DIR:PROG           the same with an O_TMPFILE file in DIR, by /proc route
//!   execveat-empty:PROG             open PROG and execveat(fd, "", AT_EMPTY_PATH)
//!   fchmod-stdin fchown-stdin read-stdin
//!   tiocsti:FD                      type `injected-by-probe\n` into the terminal on FD
//!   tiocsti-high:FD                 the same, with high bits set in the 64-bit request
//!                                   (the kernel ignores them: a filter must too)
//!   tioclinux:FD                    TIOCLINUX (TIOCL_GETSHIFTSTATE) on FD
//!   pause                           print `PAUSE <pid>`, wait for a line on stdin
//!   broker:MSG                      send MSG on the --connect socket; print the reply and the
//!                                   contents of a descriptor that came with it
//! ```
//!
//! Other output: `APPLIED <report>` / `NOT-APPLIED`, or `APPLY-ERROR <debug> | kind=<kind> |
//! <display>` followed by `AFTER-ERROR uid=<uid> nnp=<0|1>` (exit status 2); `DONE` at the end.

use std::collections::BTreeMap;
use std::io::{BufRead, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::process::ExitCode;

use fdbroker_worker::sandbox::{Identity, Sandbox, SandboxError};
use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, SockaddrIn, UnixAddr,
};
use nix::sys::stat::Mode;
use nix::unistd::{self, Gid, Pid, Uid};

#[derive(Default)]
struct Options {
    apply: bool,
    best_effort: bool,
    user: Option<Identity>,
    group: Option<Identity>,
    read: Vec<String>,
    read_exec: Vec<String>,
    threads: usize,
    fork: bool,
    hide_landlock: bool,
    connect: Option<String>,
    checks: Vec<String>,
}

/// Descriptors opened before the sandbox, as a worker would hold its broker connection.
struct Held {
    /// TCP sockets made before applying; under `fdbroker run` (already confined) their
    /// creation itself is refused, and the checks report that errno.
    tcp_connect: Result<OwnedFd, Errno>,
    tcp_bind: Result<OwnedFd, Errno>,
    /// Unconnected AF_UNIX sockets made before applying: what a program that locks itself
    /// down late may still hold.
    unix_connect: Result<OwnedFd, Errno>,
    unix_bind: Result<OwnedFd, Errno>,
    unix_dgram: Result<OwnedFd, Errno>,
    broker: Option<OwnedFd>,
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("sandbox-probe: {e}");
            return ExitCode::from(64);
        }
    };
    match run(options) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sandbox-probe: {e}");
            ExitCode::from(70)
        }
    }
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut o = Options {
        apply: true,
        threads: 1,
        ..Options::default()
    };
    let identity = |s: String| match s.parse::<u32>() {
        Ok(id) => Identity::Id(id),
        Err(_) => Identity::Name(s),
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--no-apply" => o.apply = false,
            "--best-effort" => o.best_effort = true,
            "--user" => o.user = Some(identity(value()?)),
            "--group" => o.group = Some(identity(value()?)),
            "--read" => o.read.push(value()?),
            "--read-exec" => o.read_exec.push(value()?),
            "--threads" => {
                o.threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?;
            }
            "--fork" => o.fork = true,
            "--hide-landlock" => o.hide_landlock = true,
            "--connect" => o.connect = Some(value()?),
            "--" => {
                o.checks.extend(args.by_ref());
            }
            other if other.starts_with("--") => return Err(format!("unknown option {other}")),
            _ => o.checks.push(arg),
        }
    }
    Ok(o)
}

fn run(o: Options) -> Result<ExitCode, String> {
    let held = hold_descriptors(&o)?;
    if o.hide_landlock {
        hide_landlock()?;
    }
    // Extra threads that only block, so the process has `o.threads` in total.
    let (_keep_blocked, blocked) = std::sync::mpsc::channel::<()>();
    let blocked = std::sync::Arc::new(std::sync::Mutex::new(blocked));
    for _ in 1..o.threads {
        let blocked = blocked.clone();
        std::thread::spawn(move || {
            if let Ok(rx) = blocked.lock() {
                rx.recv().ok();
            }
        });
    }
    if o.threads > 1 {
        wait_for_threads(o.threads)?;
    }

    let mut sandbox = Sandbox::new();
    if let Some(u) = o.user.clone() {
        sandbox = sandbox.user(u);
    }
    if let Some(g) = o.group.clone() {
        sandbox = sandbox.group(g);
    }
    for p in &o.read {
        sandbox = sandbox.allow_read(p);
    }
    for p in &o.read_exec {
        sandbox = sandbox.allow_read_exec(p);
    }
    if o.best_effort {
        sandbox = sandbox.best_effort();
    }

    if !o.apply {
        println!("NOT-APPLIED");
        return Ok(checks(&o, &held));
    }
    if !o.fork {
        return Ok(match sandbox.apply() {
            Ok(report) => {
                println!("APPLIED {report}");
                println!("REPORT-DEBUG {report:?}");
                checks(&o, &held)
            }
            Err(e) => apply_error(e),
        });
    }

    // Spawn mode: prepare in this (possibly multi-threaded) process, apply in the child.
    let prepared = match sandbox.prepare() {
        Ok(p) => p,
        Err(e) => return Ok(apply_error(e)),
    };
    std::io::stdout()
        .flush()
        .map_err(|e| format!("flush: {e}"))?;
    // SAFETY: the child only runs this function's remaining code: it applies the sandbox,
    // runs checks and exits. The other threads only block on a channel and hold no lock the
    // child needs (glibc re-initialises malloc's locks in the child of fork).
    match unsafe { unistd::fork() } {
        Err(e) => Err(format!("fork: {e}")),
        Ok(unistd::ForkResult::Child) => {
            let code = match prepared.apply() {
                Ok(report) => {
                    println!("APPLIED {report}");
                    checks(&o, &held)
                }
                Err(e) => apply_error(e),
            };
            std::process::exit(if code == ExitCode::SUCCESS { 0 } else { 2 });
        }
        Ok(unistd::ForkResult::Parent { child }) => {
            drop(prepared);
            match nix::sys::wait::waitpid(child, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(ExitCode::SUCCESS),
                Ok(other) => {
                    println!("CHILD {other:?}");
                    Ok(ExitCode::from(2))
                }
                Err(e) => Err(format!("waitpid: {e}")),
            }
        }
    }
}

fn apply_error(e: SandboxError) -> ExitCode {
    let debug = format!("{e:?}");
    let display = e.to_string();
    let io: std::io::Error = e.into();
    println!("APPLY-ERROR {debug} | kind={:?} | {display}", io.kind());
    let nnp = nix::sys::prctl::get_no_new_privs().unwrap_or(true);
    println!("AFTER-ERROR uid={} nnp={}", unistd::getuid(), u8::from(nnp));
    ExitCode::from(2)
}

fn hold_descriptors(o: &Options) -> Result<Held, String> {
    let tcp = || {
        socket::socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
    };
    let broker = match &o.connect {
        None => None,
        Some(path) => {
            let fd = socket::socket(
                AddressFamily::Unix,
                SockType::SeqPacket,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .map_err(|e| format!("socket(AF_UNIX): {e}"))?;
            let addr = UnixAddr::new(path.as_str()).map_err(|e| format!("{path}: {e}"))?;
            socket::connect(fd.as_raw_fd(), &addr).map_err(|e| format!("connect {path}: {e}"))?;
            Some(fd)
        }
    };
    let unix = |ty| socket::socket(AddressFamily::Unix, ty, SockFlag::SOCK_CLOEXEC, None);
    Ok(Held {
        tcp_connect: tcp(),
        tcp_bind: tcp(),
        unix_connect: unix(SockType::Stream),
        unix_bind: unix(SockType::Stream),
        unix_dgram: unix(SockType::Datagram),
        broker,
    })
}

/// Makes the Landlock system calls fail with ENOSYS, as on a kernel built without Landlock.
fn hide_landlock() -> Result<(), String> {
    use seccompiler::{SeccompAction, SeccompFilter, TargetArch};
    let arch = if cfg!(target_arch = "aarch64") {
        TargetArch::aarch64
    } else {
        TargetArch::x86_64
    };
    let rules = [
        libc::SYS_landlock_create_ruleset,
        libc::SYS_landlock_add_rule,
        libc::SYS_landlock_restrict_self,
    ]
    .into_iter()
    .map(|nr| (nr, Vec::new()))
    .collect::<BTreeMap<_, _>>();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(|e| format!("hide-landlock filter: {e}"))?;
    let program: seccompiler::BpfProgram = filter
        .try_into()
        .map_err(|e| format!("hide-landlock filter: {e}"))?;
    seccompiler::apply_filter(&program).map_err(|e| format!("hide-landlock: {e}"))
}

fn wait_for_threads(n: usize) -> Result<(), String> {
    for _ in 0..1000 {
        let count = std::fs::read_dir("/proc/self/task")
            .map_err(|e| format!("/proc/self/task: {e}"))?
            .count();
        if count >= n {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    Err(format!("{n} threads never started"))
}

fn checks(o: &Options, held: &Held) -> ExitCode {
    for check in &o.checks {
        let line = match check_one(check, held) {
            Ok(detail) if detail.is_empty() => "ok".to_owned(),
            Ok(detail) => format!("ok {detail}"),
            Err(errno) => format!("err {errno}"),
        };
        println!("CHECK {check} => {line}");
    }
    println!("DONE");
    ExitCode::SUCCESS
}

/// The errno name of an `io::Error` (`EACCES`), or its text if it is not from the kernel.
fn errno_name(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => format!("{:?}", Errno::from_raw(n)),
        None => format!("other:{e}"),
    }
}

fn nix_err(e: Errno) -> String {
    format!("{e:?}")
}

fn check_one(check: &str, held: &Held) -> Result<String, String> {
    let (name, arg) = check.split_once(':').unwrap_or((check, ""));
    let io = |e: std::io::Error| errno_name(&e);
    match name {
        "open" => std::fs::File::open(arg).map(|_| String::new()).map_err(io),
        "read" => std::fs::read_to_string(arg)
            .map(|s| format!("{:?}", s.trim_end()))
            .map_err(io),
        "write" => std::fs::OpenOptions::new()
            .write(true)
            .open(arg)
            .map(|_| String::new())
            .map_err(io),
        "create" => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(arg)
            .map(|_| String::new())
            .map_err(io),
        "readdir" => std::fs::read_dir(arg)
            .map(|d| format!("{} entries", d.count()))
            .map_err(io),
        "chmod" => {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(arg, std::fs::Permissions::from_mode(0o640))
                .map(|_| String::new())
                .map_err(io)
        }
        "exec" => std::process::Command::new(arg)
            .status()
            .map(|s| format!("exit={}", s.code().unwrap_or(-1)))
            .map_err(io),
        "setuid0" => unistd::setuid(Uid::from_raw(0))
            .map(|_| String::new())
            .map_err(nix_err),
        "setgid0" => unistd::setgid(Gid::from_raw(0))
            .map(|_| String::new())
            .map_err(nix_err),
        "kill" => {
            let pid: i32 = arg.parse().map_err(|e| format!("bad pid: {e}"))?;
            nix::sys::signal::kill(Pid::from_raw(pid), None)
                .map(|_| String::new())
                .map_err(nix_err)
        }
        "unshare" => {
            // SAFETY: unshare takes no pointers; CLONE_NEWUSER only affects this process.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWUSER) };
            if rc == 0 {
                Ok(String::new())
            } else {
                Err(nix_err(Errno::last()))
            }
        }
        "clone3" => {
            // SAFETY: a null argument structure with size 0: the kernel rejects the size
            // (EINVAL) before reading anything, unless seccomp answers first.
            let rc = unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize) };
            if rc == 0 {
                // Cannot happen with size 0; never continue as a child.
                std::process::exit(0);
            }
            if rc > 0 {
                Ok(format!("child {rc}"))
            } else {
                Err(nix_err(Errno::last()))
            }
        }
        "thread" => std::thread::Builder::new()
            .spawn(|| 7)
            .map_err(io)?
            .join()
            .map(|v| format!("joined {v}"))
            .map_err(|_| "panicked".to_owned()),
        "tcp-connect" => {
            let port: u16 = arg.parse().map_err(|e| format!("bad port: {e}"))?;
            let addr = SockaddrIn::new(127, 0, 0, 1, port);
            let fd = held.tcp_connect.as_ref().map_err(|e| nix_err(*e))?;
            socket::connect(fd.as_raw_fd(), &addr)
                .map(|_| String::new())
                .map_err(nix_err)
        }
        "tcp-bind" => {
            let addr = SockaddrIn::new(127, 0, 0, 1, 0);
            let fd = held.tcp_bind.as_ref().map_err(|e| nix_err(*e))?;
            socket::bind(fd.as_raw_fd(), &addr)
                .map(|_| String::new())
                .map_err(nix_err)
        }
        "abstract" => {
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(arg).map_err(io)?;
            std::os::unix::net::UnixStream::connect_addr(&addr)
                .map(|_| String::new())
                .map_err(io)
        }
        "socket" => {
            let (family, ty) = match arg {
                "inet" => (AddressFamily::Inet, SockType::Stream),
                "inet6" => (AddressFamily::Inet6, SockType::Stream),
                "netlink" => (AddressFamily::Netlink, SockType::Raw),
                "unix" => (AddressFamily::Unix, SockType::Stream),
                other => return Err(format!("unknown family {other}")),
            };
            socket::socket(family, ty, SockFlag::SOCK_CLOEXEC, None)
                .map(|_| String::new())
                .map_err(nix_err)
        }
        "socketpair" => {
            let (family, ty, flags) = match arg {
                "unix" => (
                    AddressFamily::Unix,
                    SockType::Stream,
                    SockFlag::SOCK_CLOEXEC,
                ),
                "unix-seqpacket" => (
                    AddressFamily::Unix,
                    SockType::SeqPacket,
                    SockFlag::SOCK_CLOEXEC,
                ),
                "unix-dgram" => (
                    AddressFamily::Unix,
                    SockType::Datagram,
                    SockFlag::SOCK_CLOEXEC,
                ),
                "unix-nonblock" => (
                    AddressFamily::Unix,
                    SockType::Stream,
                    SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                ),
                "inet" => (
                    AddressFamily::Inet,
                    SockType::Stream,
                    SockFlag::SOCK_CLOEXEC,
                ),
                other => return Err(format!("unknown family {other}")),
            };
            socket::socketpair(family, ty, None, flags)
                .map(|_| String::new())
                .map_err(nix_err)
        }
        "unix-connect" => {
            let (ty, path) = arg.split_once(':').ok_or("unix-connect:TYPE:PATH")?;
            let fd = socket::socket(
                AddressFamily::Unix,
                sock_type(ty)?,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .map_err(nix_err)?;
            socket::connect(fd.as_raw_fd(), &unix_addr(path)?)
                .map(|_| String::new())
                .map_err(nix_err)
        }
        "unix-sendto" => {
            let fd = socket::socket(
                AddressFamily::Unix,
                SockType::Datagram,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .map_err(nix_err)?;
            socket::sendto(
                fd.as_raw_fd(),
                b"unix-sendto",
                &unix_addr(arg)?,
                MsgFlags::empty(),
            )
            .map(|_| String::new())
            .map_err(nix_err)
        }
        "held-connect" => {
            let fd = held.unix_connect.as_ref().map_err(|e| nix_err(*e))?;
            socket::connect(fd.as_raw_fd(), &unix_addr(arg)?)
                .map(|_| String::new())
                .map_err(nix_err)
        }
        "held-bind" => {
            let fd = held.unix_bind.as_ref().map_err(|e| nix_err(*e))?;
            let addr = UnixAddr::new_abstract(arg.as_bytes()).map_err(nix_err)?;
            socket::bind(fd.as_raw_fd(), &addr)
                .map(|_| String::new())
                .map_err(nix_err)
        }
        "held-listen" => {
            let fd = held.unix_bind.as_ref().map_err(|e| nix_err(*e))?;
            let backlog = socket::Backlog::new(1).map_err(nix_err)?;
            socket::listen(fd, backlog)
                .map(|_| String::new())
                .map_err(nix_err)
        }
        "held-sendto" => {
            let fd = held.unix_dgram.as_ref().map_err(|e| nix_err(*e))?;
            socket::sendto(
                fd.as_raw_fd(),
                b"held-sendto",
                &unix_addr(arg)?,
                MsgFlags::empty(),
            )
            .map(|_| String::new())
            .map_err(nix_err)
        }
        "pair-sendmsg" => {
            let (ty, path) = arg.split_once(':').ok_or("pair-sendmsg:TYPE:PATH")?;
            pair_sendmsg(sock_type(ty)?, &unix_addr(path)?)
        }
        "memfd-exec" | "memfd-sealed-exec" => {
            let (route, program) = arg.split_once(':').ok_or("memfd-exec:ROUTE:PROG")?;
            let mut flags = libc::MFD_CLOEXEC;
            if name == "memfd-sealed-exec" {
                flags |= libc::MFD_NOEXEC_SEAL;
            }
            let fd = memfd(flags)?;
            copy_program(&fd, program)?;
            exec_in_child(&fd, route)
        }
        "tmpfile-exec" => {
            let (dir, program) = arg.split_once(':').ok_or("tmpfile-exec:DIR:PROG")?;
            let fd = nix::fcntl::open(
                dir,
                nix::fcntl::OFlag::O_TMPFILE
                    | nix::fcntl::OFlag::O_RDWR
                    | nix::fcntl::OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o755),
            )
            .map_err(nix_err)?;
            copy_program(&fd, program)?;
            // A file open for writing cannot be executed (ETXTBSY): reopen it read-only.
            let reopened =
                std::fs::File::open(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(io)?;
            drop(fd);
            exec_in_child(&reopened.into(), "proc")
        }
        "syscall" => {
            // `syscall:NR`: the raw call with every argument -1 (no valid pointer, fd
            // or flag set), for numbers next to a boundary of the filter's search.
            let nr: libc::c_long = arg.parse().map_err(|_| format!("bad number {arg}"))?;
            let m1: libc::c_long = -1;
            // SAFETY: every argument is -1: no pointer the kernel could write through,
            // no descriptor; the tests only name calls for which that is harmless.
            let rc = unsafe { libc::syscall(nr, m1, m1, m1, m1, m1, m1) };
            if rc >= 0 {
                Ok(format!("{rc}"))
            } else {
                Err(nix_err(Errno::last()))
            }
        }
        #[cfg(target_arch = "x86_64")]
        "int80-getpid" => {
            // The i386 `getpid` (20) through `int 0x80` from this x86_64 process: the
            // kernel runs the filter with AUDIT_ARCH_I386.
            let mut rax: u64 = 20;
            // SAFETY: `int 0x80` with eax 20 takes no arguments and touches no memory;
            // the kernel may clobber r8 to r11 on the way back, declared here.
            unsafe {
                std::arch::asm!(
                    "int 0x80",
                    inout("rax") rax,
                    lateout("r8") _, lateout("r9") _, lateout("r10") _, lateout("r11") _,
                    options(nostack),
                );
            }
            Ok(format!("{}", rax as u32 as i32))
        }
        "execveat-empty" => {
            let fd = std::fs::File::open(arg).map_err(io)?;
            exec_in_child(&fd.into(), "empty-path")
        }
        "fchmod-stdin" => {
            nix::sys::stat::fchmod(std::io::stdin().as_fd(), Mode::from_bits_truncate(0o640))
                .map(|_| String::new())
                .map_err(nix_err)
        }
        "fchown-stdin" => unistd::fchown(
            std::io::stdin().as_fd(),
            Some(unistd::getuid()),
            Some(unistd::getgid()),
        )
        .map(|_| String::new())
        .map_err(nix_err),
        "read-stdin" => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map(|_| format!("{:?}", s.trim_end()))
                .map_err(io)
        }
        "tiocsti" | "tiocsti-high" => {
            let fd: RawFd = arg.parse().map_err(|e| format!("bad fd: {e}"))?;
            // The kernel reads the request as a 32-bit unsigned int.
            let high = if name == "tiocsti-high" {
                0xdead_0000_0000_u64
            } else {
                0
            };
            let request: u64 = libc::TIOCSTI | high;
            for byte in INJECTED {
                // SAFETY: TIOCSTI reads one byte through the pointer, which points at a
                // byte of INJECTED (static); a bad `fd` or request only makes it fail.
                // The raw system call passes all 64 bits of `request` through.
                let rc = unsafe {
                    libc::syscall(libc::SYS_ioctl, fd, request, std::ptr::from_ref::<u8>(byte))
                };
                if rc != 0 {
                    return Err(nix_err(Errno::last()));
                }
            }
            Ok(String::new())
        }
        "tioclinux" => {
            let fd: RawFd = arg.parse().map_err(|e| format!("bad fd: {e}"))?;
            // TIOCL_GETSHIFTSTATE from <linux/tiocl.h>: only reads, and only on a console.
            let mut subcode: u8 = 6;
            // SAFETY: TIOCLINUX reads the subcode byte through the pointer (and may write
            // a result byte back); it points at a local byte alive for the call.
            let rc = unsafe { libc::ioctl(fd, libc::TIOCLINUX, &raw mut subcode) };
            if rc == 0 {
                Ok(format!("subcode={subcode}"))
            } else {
                Err(nix_err(Errno::last()))
            }
        }
        "pause" => {
            println!("PAUSE {}", std::process::id());
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map(|_| String::new())
                .map_err(io)
        }
        "broker" => {
            let fd = held.broker.as_ref().ok_or("no --connect socket")?;
            broker_round_trip(fd.as_raw_fd(), arg)
        }
        other => Err(format!("unknown check {other}")),
    }
}

/// What the `tiocsti` checks type: harmless if it got through, and easy to spot.
const INJECTED: &[u8] = b"injected-by-probe\n";

/// Sends `msg`, receives one reply and up to one descriptor, and reads that descriptor: the
/// fdbroker data path, after the sandbox.
fn broker_round_trip(fd: RawFd, msg: &str) -> Result<String, String> {
    socket::send(fd, msg.as_bytes(), MsgFlags::empty()).map_err(nix_err)?;
    let mut buf = [0u8; 256];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let (len, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let reply =
            socket::recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
                .map_err(nix_err)?;
        let mut fds = Vec::new();
        for c in reply.cmsgs().map_err(nix_err)? {
            if let ControlMessageOwned::ScmRights(received) = c {
                fds.extend(received);
            }
        }
        (reply.bytes, fds)
    };
    let text = String::from_utf8_lossy(&buf[..len]).into_owned();
    let mut contents = Vec::new();
    for raw in fds {
        // SAFETY: the kernel just installed this descriptor for us (SCM_RIGHTS); nothing
        // else owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut file = std::fs::File::from(owned);
        let mut s = String::new();
        file.read_to_string(&mut s).map_err(|e| errno_name(&e))?;
        contents.push(format!("{:?}", s.trim_end()));
    }
    Ok(format!("reply={text:?} fd={}", contents.join(",")))
}

fn sock_type(name: &str) -> Result<SockType, String> {
    match name {
        "stream" => Ok(SockType::Stream),
        "seqpacket" => Ok(SockType::SeqPacket),
        "dgram" => Ok(SockType::Datagram),
        other => Err(format!("unknown socket type {other}")),
    }
}

fn unix_addr(path: &str) -> Result<UnixAddr, String> {
    UnixAddr::new(path).map_err(|e| format!("{path}: {e}"))
}

/// A socketpair of `ty`, and one message sent on it with `addr` as its destination: what
/// a worker would try to reach a pathname datagram socket through sockets it may make.
/// `ok to-peer` if the message arrived at the other end instead.
fn pair_sendmsg(ty: SockType, addr: &UnixAddr) -> Result<String, String> {
    use std::io::IoSlice;
    let (a, b) = socket::socketpair(
        AddressFamily::Unix,
        ty,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .map_err(nix_err)?;
    socket::sendmsg(
        a.as_raw_fd(),
        &[IoSlice::new(b"pair-sendmsg")],
        &[],
        MsgFlags::empty(),
        Some(addr),
    )
    .map_err(nix_err)?;
    let mut buf = [0u8; 64];
    match socket::recv(b.as_raw_fd(), &mut buf, MsgFlags::empty()) {
        Ok(_) => Ok("to-peer".to_owned()),
        Err(Errno::EAGAIN) => Ok("not-to-peer".to_owned()),
        Err(e) => Err(nix_err(e)),
    }
}

/// `memfd_create("probe", flags)`.
fn memfd(flags: libc::c_uint) -> Result<OwnedFd, String> {
    // SAFETY: the name is a NUL-terminated static string; the call takes no other pointer.
    let fd = unsafe { libc::memfd_create(c"probe".as_ptr(), flags) };
    if fd < 0 {
        return Err(nix_err(Errno::last()));
    }
    // SAFETY: memfd_create just returned this descriptor, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Writes the whole of `program` into `fd` (a fresh, empty file).
fn copy_program(fd: &OwnedFd, program: &str) -> Result<(), String> {
    let bytes =
        std::fs::read(program).map_err(|e| format!("read {program}: {}", errno_name(&e)))?;
    let mut file = std::fs::File::from(fd.try_clone().map_err(|e| errno_name(&e))?);
    file.write_all(&bytes).map_err(|e| errno_name(&e))
}

/// Executes the file open on `fd` in a forked child, by `route`: `empty-path` is
/// `execveat(fd, "", AT_EMPTY_PATH)` (what `fexecve` does), `proc` is
/// `execve("/proc/self/fd/N")`. `ok exit=N` once it ran, or the errno the exec failed with
/// (the child sends it back through a close-on-exec pipe, which a successful exec closes
/// empty).
fn exec_in_child(fd: &OwnedFd, route: &str) -> Result<String, String> {
    let proc_path = std::ffi::CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| e.to_string())?;
    let empty_path = route == "empty-path";
    if !empty_path && route != "proc" {
        return Err(format!("unknown exec route {route}"));
    }
    let (read_end, write_end) = unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(nix_err)?;
    std::io::stdout().flush().map_err(|e| errno_name(&e))?;
    // SAFETY: the child only makes system calls (exec, write, _exit) on values prepared
    // before the fork; the probe is single-threaded when it runs its checks.
    match unsafe { unistd::fork() }.map_err(nix_err)? {
        unistd::ForkResult::Child => {
            let errno = exec_raw(fd.as_raw_fd(), &proc_path, empty_path);
            let _ = unistd::write(&write_end, &errno.to_ne_bytes());
            // SAFETY: leaves the forked child at once, without running the parent's
            // exit handlers or flushing its buffers twice.
            unsafe { libc::_exit(127) }
        }
        unistd::ForkResult::Parent { child } => {
            drop(write_end);
            let mut reported = [0u8; 4];
            let mut got = 0;
            let mut pipe = std::fs::File::from(read_end);
            while got < reported.len() {
                match pipe.read(&mut reported[got..]) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(errno_name(&e)),
                }
            }
            let status = nix::sys::wait::waitpid(child, None).map_err(nix_err)?;
            if got == reported.len() {
                return Err(nix_err(Errno::from_raw(i32::from_ne_bytes(reported))));
            }
            match status {
                nix::sys::wait::WaitStatus::Exited(_, code) => Ok(format!("exit={code}")),
                other => Err(format!("child {other:?}")),
            }
        }
    }
}

/// The exec itself, in the forked child; returns the errno if it failed.
fn exec_raw(fd: RawFd, proc_path: &std::ffi::CStr, empty_path: bool) -> i32 {
    let argv: [*const libc::c_char; 2] = [c"probe-exec".as_ptr(), std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: every pointer is to a NUL-terminated string or a NULL-terminated array that
    // lives until the call returns (which it does only on failure).
    unsafe {
        if empty_path {
            libc::syscall(
                libc::SYS_execveat,
                fd,
                c"".as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
        } else {
            libc::execve(proc_path.as_ptr(), argv.as_ptr(), envp.as_ptr());
        }
    }
    Errno::last_raw()
}
