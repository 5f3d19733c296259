//! Not a process: one running item of `fdbroker each`, seen from the engine — its
//! worker and namespace init (by pidfd), the read ends of its stdout and stderr, what
//! it wrote so far — until its namespace is gone and its pipes are closed.
//!
//! A hostile worker cannot stall the engine: both pipes are read without blocking as
//! they become readable; stdout is kept up to the output limit and the sandbox killed
//! at the first byte past it; stderr is passed on line by line with the item's index
//! in front, a line longer than [`MAX_LINE`] cut into pieces, and at most
//! [`MAX_STDERR`] bytes of it per item; once the worker exits, its namespace is ended,
//! killing whatever it left running, so its pipes reach end of file.

use crate::each::engine::Outcome;
use crate::spawn::limits::{self, Ending, Evidence};
use crate::spawn::pidns::Init;
use fdbroker_policy::Limits;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::Instant;

/// The longest stderr line passed on whole; longer ones are cut at this length.
pub const MAX_LINE: usize = 4096;
/// Stderr passed on per item; the rest is read and dropped, with one notice.
pub const MAX_STDERR: usize = 64 * 1024;

/// Where the worker's stdout goes.
#[derive(Debug)]
pub enum Stdout {
    Kept(Vec<u8>),
    File(File, PathBuf),
}

/// Which of an item's descriptors is ready.
#[derive(Clone, Copy, Debug)]
pub enum Ready {
    Out,
    Err,
    Worker,
    Init,
}

#[derive(Debug)]
pub struct Running {
    id: u64,
    path: Vec<u8>,
    started: Instant,
    deadline: Option<Instant>,
    worker: Pid,
    worker_fd: Option<OwnedFd>,
    reaped: Option<crate::sys::Reaped>,
    init: Option<Init>,
    init_pid: Pid,
    init_fd: Option<OwnedFd>,
    out: Option<File>,
    err: Option<File>,
    stdout: Stdout,
    written: u64,
    line: Vec<u8>,
    passed: usize,
    timed_out: bool,
    output_cut: bool,
    ended: Option<Instant>,
    /// Its outcome was taken; only the namespace's end is awaited.
    reported: bool,
    /// The armed worker's trigger: why it could not exec its program, if it could not.
    exec_report: Option<fdbroker_shared::Channel>,
}

impl Running {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u64,
        path: Vec<u8>,
        started: Instant,
        deadline: Option<Instant>,
        worker: Pid,
        init: Init,
        exec_report: fdbroker_shared::Channel,
        out: OwnedFd,
        err: OwnedFd,
        stdout: Stdout,
    ) -> io::Result<Running> {
        let init_pid = init.pid();
        let worker_fd = crate::sys::pidfd_open(worker)?;
        let init_fd = crate::sys::pidfd_open(init_pid)?;
        for fd in [&out, &err] {
            nix::fcntl::fcntl(
                fd.as_fd(),
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            )?;
        }
        Ok(Running {
            id,
            path,
            started,
            deadline,
            worker,
            worker_fd: Some(worker_fd),
            reaped: None,
            init: Some(init),
            init_pid,
            init_fd: Some(init_fd),
            out: Some(File::from(out)),
            err: Some(File::from(err)),
            stdout,
            written: 0,
            line: Vec::new(),
            passed: 0,
            timed_out: false,
            output_cut: false,
            ended: None,
            reported: false,
            exec_report: Some(exec_report),
        })
    }

    /// The wall-clock deadline, while it still matters.
    pub fn deadline(&self) -> Option<Instant> {
        self.init_fd.as_ref()?;
        if self.reported {
            return None;
        }
        self.deadline
    }

    /// What to poll.
    pub fn poll_fds(&self) -> Vec<(Ready, BorrowedFd<'_>)> {
        let mut v = Vec::with_capacity(4);
        if let Some(f) = &self.out {
            v.push((Ready::Out, f.as_fd()));
        }
        if let Some(f) = &self.err {
            v.push((Ready::Err, f.as_fd()));
        }
        if let Some(f) = &self.worker_fd {
            v.push((Ready::Worker, f.as_fd()));
        }
        if let Some(f) = &self.init_fd {
            v.push((Ready::Init, f.as_fd()));
        }
        v
    }

    /// Handles one ready descriptor.
    pub fn ready(&mut self, what: Ready, limits: &Limits) {
        match what {
            Ready::Out => self.read_stdout(limits.output.unwrap_or(u64::MAX)),
            Ready::Err => self.read_stderr(),
            Ready::Worker => {
                if let Ok(Some(r)) = crate::sys::wait4(Some(self.worker), true) {
                    self.reaped = Some(r);
                    self.worker_fd = None;
                    self.ended = Some(Instant::now());
                    // The worker is gone: end its namespace, with whatever it left.
                    if let Some(init) = self.init.take() {
                        let _ = init.release();
                    }
                }
            }
            Ready::Init => {
                if let Ok(Some(_)) = crate::sys::wait4(Some(self.init_pid), true) {
                    self.init_fd = None;
                    self.init = None;
                }
            }
        }
    }

    /// Kills the namespace (all of it: init's death takes every process with it) at
    /// the wall-clock limit.
    pub fn check_deadline(&mut self, now: Instant) {
        if let Some(d) = self.deadline()
            && now >= d
            && !self.timed_out
        {
            if self.reaped.is_none() {
                self.timed_out = true;
            }
            self.kill();
        }
    }

    fn kill(&mut self) {
        // Init is our child and not yet reaped (its pidfd is open): the pid is its own.
        if self.init_fd.is_some() {
            let _ = kill(self.init_pid, Signal::SIGKILL);
        }
    }

    fn read_stdout(&mut self, limit: u64) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let Some(out) = self.out.as_mut() else { return };
            match out.read(&mut buf) {
                Ok(0) => {
                    self.out = None;
                    return;
                }
                Ok(n) => {
                    let room = usize::try_from(limit.saturating_sub(self.written)).unwrap_or(n);
                    let keep = room.min(n);
                    let kept = match &mut self.stdout {
                        Stdout::Kept(v) => {
                            v.extend_from_slice(&buf[..keep]);
                            true
                        }
                        Stdout::File(f, _) => f.write_all(&buf[..keep]).is_ok(),
                    };
                    self.written += keep as u64;
                    if keep < n || !kept {
                        self.output_cut = keep < n;
                        self.out = None;
                        self.kill();
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    fn read_stderr(&mut self) {
        let mut buf = [0u8; 8 * 1024];
        loop {
            let Some(err) = self.err.as_mut() else { return };
            match err.read(&mut buf) {
                Ok(0) => {
                    if !self.line.is_empty() {
                        self.flush_line();
                    }
                    self.err = None;
                    return;
                }
                Ok(n) => {
                    // Past the cut, `flush_line` has said so once; the rest is dropped.
                    for &b in &buf[..n] {
                        if self.passed >= MAX_STDERR {
                            break;
                        }
                        if b == b'\n' {
                            self.flush_line();
                        } else {
                            self.line.push(b);
                            if self.line.len() >= MAX_LINE {
                                self.flush_line();
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    fn flush_line(&mut self) {
        if self.passed >= MAX_STDERR {
            return;
        }
        self.passed += self.line.len() + 1;
        say_line(self.id, &self.line);
        if self.passed >= MAX_STDERR {
            say_line(
                self.id,
                format!("fdbroker: stderr cut after {MAX_STDERR} bytes").as_bytes(),
            );
            // Marks the notice as given: nothing more is passed on.
            self.line = vec![0];
        } else {
            self.line.clear();
        }
    }

    /// The worker was reaped and both pipes are closed (no process holds them any
    /// more): the outcome is known, though the namespace may still be ending.
    pub fn done(&self) -> bool {
        !self.reported && self.reaped.is_some() && self.out.is_none() && self.err.is_none()
    }

    /// Its outcome was taken and its namespace is gone: the slot is free.
    pub fn gone(&self) -> bool {
        self.reported && self.init_fd.is_none()
    }

    /// Still counts against `-j`: its outcome is not known yet.
    pub fn active(&self) -> bool {
        !self.reported
    }

    /// Takes the outcome, once [`Running::done`].
    pub fn outcome(&mut self, limits: &Limits, evidence: Evidence) -> Outcome {
        self.reported = true;
        let reaped = self.reaped;
        let status = reaped.map_or(std::process::ExitStatus::from_raw(libc::SIGKILL), |r| {
            r.status
        });
        let ending = Ending {
            status,
            timed_out: self.timed_out,
            output_cut: self.output_cut,
            cpu: reaped.map(|r| r.cpu).unwrap_or_default(),
            evidence,
        };
        let (stdout, stdout_file) =
            match std::mem::replace(&mut self.stdout, Stdout::Kept(Vec::new())) {
                Stdout::Kept(v) => (v, None),
                Stdout::File(_, p) => (Vec::new(), Some(p)),
            };
        let wall = self.ended.unwrap_or_else(Instant::now) - self.started;
        // Read only once the worker is reaped: then its end is closed or its message in.
        let not_started = match (&self.exec_report, reaped) {
            (Some(trigger), Some(_)) => crate::spawn::pidns::exec_failure(trigger),
            _ => None,
        };
        Outcome {
            id: self.id,
            path: std::mem::take(&mut self.path),
            verdict: if not_started.is_some() {
                limits::Verdict::Error
            } else {
                limits::verdict(limits, &ending)
            },
            exit_status: status.code(),
            signal: status.signal(),
            wall_ms: u64::try_from(wall.as_millis()).unwrap_or(u64::MAX),
            cpu_ms: u64::try_from(ending.cpu.as_millis()).unwrap_or(u64::MAX),
            max_rss_kib: reaped.map_or(0, |r| r.max_rss_kib),
            stdout,
            stdout_file,
            message: not_started.map(|why| format!("cannot start the worker: {why}")),
        }
    }

    /// For an engine dropped while this runs: kill the namespace and reap both.
    pub fn abandon(mut self) {
        self.kill();
        if self.reaped.is_none() {
            let _ = kill(self.worker, Signal::SIGKILL);
            let _ = crate::sys::wait4(Some(self.worker), false);
        }
        drop(self.init.take());
        if self.init_fd.is_some() {
            let _ = crate::sys::wait4(Some(self.init_pid), false);
        }
    }
}

/// `[INDEX] line` on our stderr, never panicking, never blocking on a full line. The
/// worker's bytes are its own, but not the terminal's controls: a carriage return or an
/// escape sequence would let it overwrite its prefix and print what reads as another
/// item's line (or `fdbroker`'s), so every ASCII control but tab comes as `\xNN`.
fn say_line(id: u64, line: &[u8]) {
    let mut text = format!("[{id}] ").into_bytes();
    for &b in line {
        if (b < 0x20 && b != b'\t') || b == 0x7f {
            text.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        } else {
            text.push(b);
        }
    }
    text.push(b'\n');
    let _ = io::stderr().lock().write_all(&text);
}
