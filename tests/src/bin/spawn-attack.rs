//! Attacks from the second review of issue 9 (see each mode).
//!
//! ```text
//! spawn-attack grant-flood SOCKET PATH SECS
//!     open PATH (granted) in full batches for SECS seconds, reading every reply;
//!     print `granted=N`
//! spawn-attack clone-parent
//!     (as a worker under `fdbroker run`) start a child with `clone(CLONE_PARENT)`, so
//!     that it is the broker's child rather than the worker's; the child sleeps; the
//!     worker prints `sibling PID` and exits 7
//! spawn-attack steal PID FD PATH
//!     (an unsandboxed process, run as some user) try to borrow the rights of the worker
//!     PID whose broker connection is its descriptor FD: copy FD with `pidfd_getfd` and,
//!     if that works, ask the broker through the copy for PATH; open `/proc/PID/mem`
//!     and `/proc/PID/fd/FD`; attach with `ptrace(PTRACE_SEIZE)`. One line each:
//!     `getfd ok`/`getfd err ERRNO`, `stolen OK <first line>`/`stolen ERR <error>`,
//!     `mem ok`/`mem err ERRNO`, `fdlink ok`/`fdlink err ERRNO`,
//!     `ptrace ok`/`ptrace err ERRNO`
//! ```
#![allow(clippy::unwrap_used)]

use fdbroker_worker::Client;
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("grant-flood") if args.len() == 5 => {
            let c = Client::connect(&args[2]).unwrap();
            let batch = vec![args[3].as_str(); c.max_batch()];
            let until = Instant::now() + Duration::from_secs(args[4].parse().unwrap());
            let mut granted = 0u64;
            while Instant::now() < until {
                for r in c.open_many(&batch).unwrap() {
                    granted += u64::from(r.is_ok());
                }
            }
            println!("granted={granted}");
            ExitCode::SUCCESS
        }
        Some("clone-parent") => clone_parent(),
        Some("steal") if args.len() == 5 => {
            steal(args[2].parse().unwrap(), args[3].parse().unwrap(), &args[4])
        }
        _ => {
            eprintln!(
                "usage: spawn-attack grant-flood SOCKET PATH SECS | clone-parent | steal PID FD PATH"
            );
            ExitCode::from(2)
        }
    }
}

fn clone_parent() -> ExitCode {
    let flags = (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: without CLONE_VM this is a fork: the child gets a copy of this
    // single-threaded process and only sleeps.
    let rc = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    match rc {
        0 => loop {
            std::thread::sleep(Duration::from_secs(1));
        },
        pid if pid > 0 => {
            println!("sibling {pid}");
            ExitCode::from(7)
        }
        _ => {
            println!("clone refused: {}", std::io::Error::last_os_error());
            ExitCode::from(7)
        }
    }
}

fn errno_name(e: &std::io::Error) -> String {
    format!(
        "{:?}",
        nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0))
    )
}

fn steal(pid: i32, fd: i32, path: &str) -> ExitCode {
    use std::io::{BufRead, BufReader};
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        println!(
            "pidfd_open err {}",
            errno_name(&std::io::Error::last_os_error())
        );
        return ExitCode::from(1);
    }
    // SAFETY: pidfd_getfd takes a pidfd, a descriptor number in that process and flags,
    // and returns a new descriptor (close-on-exec) or -1.
    let stolen = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd as i32, fd, 0) };
    if stolen < 0 {
        println!("getfd err {}", errno_name(&std::io::Error::last_os_error()));
    } else {
        println!("getfd ok");
        // The copy is the worker's broker connection: use it as a worker would.
        // SAFETY: single-threaded here; nothing else reads the environment meanwhile.
        unsafe { std::env::set_var(fdbroker_worker::client::ENV_FD, stolen.to_string()) };
        match fdbroker_worker::Client::from_env_timeout(Duration::from_secs(10))
            .and_then(|c| c.open(path))
        {
            Ok(f) => {
                let mut line = String::new();
                let _ = BufReader::new(f).read_line(&mut line);
                println!("stolen OK {}", line.trim_end());
            }
            Err(e) => println!("stolen ERR {e}"),
        }
    }
    for (what, file) in [
        ("mem", format!("/proc/{pid}/mem")),
        ("fdlink", format!("/proc/{pid}/fd/{fd}")),
    ] {
        match std::fs::File::open(&file) {
            Ok(_) => println!("{what} ok"),
            Err(e) => println!("{what} err {}", errno_name(&e)),
        }
    }
    // SAFETY: PTRACE_SEIZE with no data changes nothing in this process; it attaches
    // to `pid` or fails.
    let rc = unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0usize, 0usize) };
    if rc == 0 {
        println!("ptrace ok");
        // SAFETY: as above; detaching lets the tracee go on.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0usize, 0usize) };
    } else {
        println!(
            "ptrace err {}",
            errno_name(&std::io::Error::last_os_error())
        );
    }
    ExitCode::SUCCESS
}
