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
        _ => {
            eprintln!("usage: spawn-attack grant-flood SOCKET PATH SECS | clone-parent");
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
