//! A minimal real worker for the spawn-mode tests: connects with `Client::from_env`,
//! optionally locks itself down, then answers one command per stdin line, so a test
//! can act (kill the broker, send a signal) between two requests.
//!
//! ```text
//! worker-probe [--lockdown [--keep-groups]]
//!   open PATH     -> `OK <bytes> <first line>` or `ERR <ErrorKind> <errno>`
//!   direct PATH   -> the same, opening by path without the broker
//!   reopen PATH   -> asks the broker for PATH to read, then reopens that descriptor
//!                    through /proc/self/fd for writing: `REOPEN ok`, `REOPEN err
//!                    <ERRNO>`, or the broker's refusal as for `open`
//!   via SOCK PATH -> the same, through a new connection to the broker listening at SOCK
//!                    (another broker, say): `ERR <ErrorKind> <errno>` if it cannot connect
//!   uid           -> `UID <real> <effective>`
//!   groups        -> `GROUPS <gid>...` (the supplementary groups)
//!   tiocsti FD    -> pushes `injected-by-worker\n` into the input of the terminal on FD
//!                    with TIOCSTI, as typed: `TIOCSTI <fd> ok` or `TIOCSTI <fd> err <ERRNO>`
//!   exit N        -> exits with N
//! ```
//! It prints `READY <pid>` once connected (and confined, with --lockdown).

use std::io::{BufRead, Read, Write};

fn main() -> std::process::ExitCode {
    let lockdown = std::env::args().any(|a| a == "--lockdown");
    let keep_groups = std::env::args().any(|a| a == "--keep-groups");
    let client = match fdbroker_worker::Client::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("worker-probe: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if lockdown {
        let mut sandbox = fdbroker_worker::sandbox::Sandbox::new();
        if keep_groups {
            sandbox = sandbox.keep_groups();
        }
        if let Err(e) = sandbox.apply() {
            eprintln!("worker-probe: lockdown: {e}");
            return std::process::ExitCode::from(3);
        }
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "READY {}", std::process::id());
    let _ = out.flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let (cmd, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let reply = match cmd {
            "open" => describe(client.open(arg)),
            "direct" => describe(std::fs::File::open(arg)),
            "reopen" => match client.open(arg) {
                Ok(f) => {
                    use std::os::fd::AsRawFd;
                    let magic = format!("/proc/self/fd/{}", f.as_raw_fd());
                    match std::fs::OpenOptions::new().append(true).open(magic) {
                        Ok(_) => "REOPEN ok".to_owned(),
                        Err(e) => format!("REOPEN err {}", e.raw_os_error().unwrap_or(0)),
                    }
                }
                Err(e) => describe(Err(e)),
            },
            "via" => match arg.split_once(' ') {
                Some((socket, path)) => {
                    describe(fdbroker_worker::Client::connect(socket).and_then(|c| c.open(path)))
                }
                None => format!("?? via {arg}"),
            },
            "groups" => match nix::unistd::getgroups() {
                Ok(g) => g
                    .iter()
                    .fold("GROUPS".to_owned(), |s, g| format!("{s} {g}")),
                Err(e) => format!("GROUPS err {e}"),
            },
            "uid" => format!("UID {} {}", nix::unistd::getuid(), nix::unistd::geteuid()),
            "tiocsti" => match arg.parse::<i32>() {
                Ok(fd) => format!("TIOCSTI {fd} {}", tiocsti(fd, INJECTED)),
                Err(e) => format!("?? tiocsti {arg}: {e}"),
            },
            "exit" => return std::process::ExitCode::from(arg.parse::<u8>().unwrap_or(0)),
            other => format!("?? {other}"),
        };
        let _ = writeln!(out, "{reply}");
        let _ = out.flush();
    }
    std::process::ExitCode::SUCCESS
}

/// What `tiocsti` tries to type: harmless if it ever got through, and easy to spot.
const INJECTED: &[u8] = b"injected-by-worker\n";

/// Pushes `bytes` into the input queue of the terminal on `fd`, one byte per TIOCSTI;
/// `ok`, or `err <ERRNO>` for the first refusal.
fn tiocsti(fd: i32, bytes: &[u8]) -> String {
    for byte in bytes {
        // SAFETY: TIOCSTI reads one byte through the pointer, which points at a byte of
        // `bytes`, alive for the call; an invalid `fd` only makes the call fail.
        let rc = unsafe { libc::ioctl(fd, libc::TIOCSTI, std::ptr::from_ref(byte)) };
        if rc != 0 {
            return format!("err {:?}", nix::errno::Errno::last());
        }
    }
    "ok".to_owned()
}

fn describe(r: std::io::Result<std::fs::File>) -> String {
    let mut text = String::new();
    match r.and_then(|mut f| f.read_to_string(&mut text)) {
        Ok(n) => format!("OK {n} {}", text.lines().next().unwrap_or("")),
        Err(e) => format!(
            "ERR {:?} {}",
            e.kind(),
            e.get_ref()
                .and_then(|i| i.downcast_ref::<fdbroker_worker::BrokerError>())
                .map_or_else(|| e.raw_os_error().unwrap_or(0), |b| b.errno)
        ),
    }
}
