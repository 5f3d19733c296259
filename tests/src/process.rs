//! Running children to completion under a time limit (a hang is a failure, not a hung
//! suite), and pseudo-terminals for the ones that need one.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// Run `cmd` to completion, killing it after `limit` (a hang is a test failure, not a
/// hung suite).
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> Output {
    run_with_input(cmd, None, limit)
}

/// Like [`run_with_timeout`], feeding `input` on stdin (written from another thread, so
/// a child that answers while reading cannot deadlock against us).
pub fn run_with_input(cmd: &mut Command, input: Option<Vec<u8>>, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&input);
        });
    }
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            v
        })
    };
    let t_out = drain(
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn Read + Send>),
    );
    let t_err = drain(
        child
            .stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// A new pseudo-terminal pair `(master, slave)`, both close-on-exec from the start (glibc's
/// `openpty` is not, and tests running in parallel would hand them to their children).
pub fn open_pty() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use nix::fcntl::OFlag;
    use std::os::fd::AsFd;
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = nix::pty::posix_openpt(flags).expect("posix_openpt");
    nix::pty::grantpt(&master).expect("grantpt");
    nix::pty::unlockpt(&master).expect("unlockpt");
    let name = nix::pty::ptsname_r(&master).expect("ptsname");
    let slave = nix::fcntl::open(name.as_str(), flags, nix::sys::stat::Mode::empty())
        .expect("open the pty slave");
    let master = master
        .as_fd()
        .try_clone_to_owned()
        .expect("dup the pty master");
    (master, slave)
}

/// Wait up to `limit` for `child` to exit; its exit status, or `None` if it is still
/// running (the caller decides whether that is a failure and what to say).
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `fdbroker ARGS` run to its end (a minute at most: a hang is a failure, not a slow
/// machine), for the commands an operator types (`policy`, `reload`, `version`).
pub fn fdbroker(args: &[&str]) -> std::process::Output {
    run_with_timeout(
        std::process::Command::new(crate::fdbroker_bin()).args(args),
        std::time::Duration::from_secs(60),
    )
}

/// The pids of the running children of `parent`, from `/proc/PID/stat` (its fourth
/// field, after the last `)`: a command name may hold spaces and parentheses).
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u32>().ok())
                    == Some(parent)
            })
        })
        .collect()
}
