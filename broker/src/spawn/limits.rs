//! Not a process: what one sandbox may use, and how it ended. The spawn broker and
//! `fdbroker each` (root, before they fork) prepare an [`Enforcement`] from the
//! [`Limits`]; the worker's pre-exec applies its [`InChild`] part; after the sandbox's
//! namespace has ended, [`verdict`] names what ended the run.
//!
//! # What enforces each limit
//!
//! | limit | on every kernel | with a delegated cgroup |
//! | --- | --- | --- |
//! | `time` | the sandbox's whole PID namespace is killed at the deadline (by its parent) | the same |
//! | `cpu` | `RLIMIT_CPU` of each process: `SIGXCPU`, one second later `SIGKILL` | the same |
//! | `memory` | `RLIMIT_DATA` of each process: allocations past it fail (`ENOMEM`), which the program reports as it likes, so the verdict is its own (`exit`, `signal`) | the whole sandbox's memory (v1 `memory.limit_in_bytes`, v2 `memory.max`): the kernel's OOM killer ends it, verdict `memory` |
//! | `pids` | `RLIMIT_NPROC` of the sandbox's uid (a uid of its own, so it counts this sandbox only): `fork` fails with `EAGAIN`; the program reports it as it likes | instead, the whole sandbox's processes and threads (`pids.max`), verdict `pids` when it was reached and the run failed |
//! | `file_size` | `RLIMIT_FSIZE`: `SIGXFSZ` at the first write past it, verdict `file-size` (also for a status of 128 + `SIGXFSZ`: a shell whose child was killed so) | the same |
//! | `nofile` | `RLIMIT_NOFILE` | the same |
//! | `output` | the broker reads the worker's stdout through a pipe and kills the sandbox at the first byte past it, verdict `output` | the same |
//!
//! Every rlimit is set with soft = hard (the worker cannot raise it), except the CPU
//! limit's hard value, one second above, so that the program first gets `SIGXCPU`.
//!
//! Cgroups: under cgroup v2 (`/sys/fs/cgroup` is `cgroup2`) the sandbox's cgroup is made
//! beneath the broker's own, which needs the `memory` and `pids` controllers enabled in
//! that cgroup's `cgroup.subtree_control` — what systemd's `Delegate=yes` gives a service
//! — and fails otherwise. Under cgroup v1 it is made beneath the broker's own cgroup of
//! each of the `memory` and `pids` hierarchies that is mounted and writable. Where a
//! controller is missing the rlimit alone applies, and `fdbroker run` logs that once.

use fdbroker_policy::Limits;
use nix::sys::resource::Resource;
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Seek as _, Write as _};
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a sandbox ended: the words of `fdbroker each`'s `verdict` field and of `fdbroker
/// run`'s verdict line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Exited with status 0.
    Ok,
    /// Exited with another status.
    Exit,
    /// Killed at the wall-clock limit.
    Timeout,
    /// Killed at the CPU limit.
    Cpu,
    /// Killed at the memory limit (needs a memory cgroup; see the module documentation).
    Memory,
    /// Failed after reaching the process limit.
    Pids,
    /// Killed for writing past the file-size limit.
    FileSize,
    /// Killed for writing more than the output limit to its stdout.
    Output,
    /// Killed by a signal that no limit sent.
    Signal,
    /// The policy refused the path (`fdbroker each`).
    Denied,
    /// The file could not be opened or the sandbox not started.
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Exit => "exit",
            Verdict::Timeout => "timeout",
            Verdict::Cpu => "cpu",
            Verdict::Memory => "memory",
            Verdict::Pids => "pids",
            Verdict::FileSize => "file-size",
            Verdict::Output => "output",
            Verdict::Signal => "signal",
            Verdict::Denied => "denied",
            Verdict::Error => "error",
        }
    }

    /// `fdbroker run`'s exit status when a limit ended the run (the table in
    /// `docs/spawn.md`); `None` for the verdicts that keep the worker's own status.
    pub fn exit_code(self) -> Option<u8> {
        match self {
            Verdict::Timeout => Some(124),
            Verdict::Cpu => Some(123),
            Verdict::Memory => Some(122),
            Verdict::Pids => Some(121),
            Verdict::FileSize => Some(120),
            Verdict::Output => Some(119),
            _ => None,
        }
    }

    /// The flag that sets the limit behind this verdict.
    pub fn flag(self) -> Option<&'static str> {
        match self {
            Verdict::Timeout => Some("--time-limit"),
            Verdict::Cpu => Some("--cpu-limit"),
            Verdict::Memory => Some("--memory-limit"),
            Verdict::Pids => Some("--pids-limit"),
            Verdict::FileSize => Some("--file-size-limit"),
            Verdict::Output => Some("--output-limit"),
            _ => None,
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the parent saw of a sandbox's end.
#[derive(Clone, Copy, Debug)]
pub struct Ending {
    pub status: ExitStatus,
    /// The parent killed it at the wall-clock limit.
    pub timed_out: bool,
    /// The parent killed it for output past the limit.
    pub output_cut: bool,
    /// The worker's CPU time (its own and its waited-for children's).
    pub cpu: Duration,
    pub evidence: Evidence,
}

/// What the sandbox's cgroups counted during the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Evidence {
    /// The memory cgroup's OOM killer killed something, or an allocation hit the limit.
    pub memory: bool,
    /// A fork failed at `pids.max`.
    pub pids: bool,
}

/// Names what ended the run. Limits the parent enforced itself come first (it knows);
/// then those the kernel reports by signal; then the cgroups' counters, which only
/// explain a run that failed.
pub fn verdict(limits: &Limits, end: &Ending) -> Verdict {
    let signal = end.status.signal();
    let failed = !end.status.success();
    if end.timed_out {
        return Verdict::Timeout;
    }
    if end.output_cut {
        return Verdict::Output;
    }
    // A shell reports a child the kernel killed as 128 + the signal's number.
    let code = end.status.code();
    let by_shell = |sig: i32| code == Some(128 + sig);
    if signal == Some(libc::SIGXCPU)
        || (limits.cpu.is_some() && by_shell(libc::SIGXCPU))
        || (signal == Some(libc::SIGKILL) && limits.cpu.is_some_and(|c| end.cpu >= c))
    {
        return Verdict::Cpu;
    }
    if signal == Some(libc::SIGXFSZ) || (limits.file_size.is_some() && by_shell(libc::SIGXFSZ)) {
        return Verdict::FileSize;
    }
    if failed && end.evidence.memory {
        return Verdict::Memory;
    }
    if failed && end.evidence.pids {
        return Verdict::Pids;
    }
    match (end.status.code(), signal) {
        (Some(0), _) => Verdict::Ok,
        (Some(_), _) => Verdict::Exit,
        _ => Verdict::Signal,
    }
}

/// The limits made ready to apply: rlimit values and the sandbox's cgroups.
#[derive(Debug)]
pub struct Enforcement {
    pub limits: Limits,
    rlimits: Vec<(Resource, u64, u64)>,
    cgroups: Vec<Cgroup>,
    /// What a limit asked for that this kernel setup cannot give (logged by the caller).
    pub missing: Vec<&'static str>,
}

/// One cgroup directory of the sandbox, with the files read after the run opened now
/// (the confined spawn broker can no longer open them).
#[derive(Debug)]
struct Cgroup {
    dir: PathBuf,
    /// `cgroup.procs`, opened for writing: the worker's pre-exec writes `0` to it.
    procs: File,
    kind: Controller,
    /// The counter file and its value before the run.
    counter: File,
    baseline: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Controller {
    Memory,
    Pids,
}

/// What the worker's pre-exec applies: only system calls on numbers prepared before.
#[derive(Clone, Debug, Default)]
pub struct InChild {
    procs: Vec<std::os::fd::RawFd>,
    rlimits: Vec<(Resource, u64, u64)>,
}

impl InChild {
    /// Joins the sandbox's cgroups (before the id change: `cgroup.procs` was opened by
    /// root) and sets the rlimits. In the forked child, before the sandbox is applied.
    pub fn apply(&self) -> io::Result<()> {
        self.join_cgroups()?;
        self.set_rlimits()
    }

    /// Joins the sandbox's cgroups: before the id change (`cgroup.procs` was opened by
    /// root, and is writable by root only).
    pub fn join_cgroups(&self) -> io::Result<()> {
        for fd in &self.procs {
            // `0`: the writing process itself. Its children, made after, are born inside.
            join_cgroup(*fd)?;
        }
        Ok(())
    }

    /// Sets the rlimits (soft = hard). Lowering needs no privilege, so the worker's
    /// pre-exec does it last, after its sandbox: the sandbox opens `/proc` files on its
    /// way, above the descriptors the child still holds, which a low `RLIMIT_NOFILE`
    /// would refuse (`EMFILE`). The limits are for the program, which starts only after.
    pub fn set_rlimits(&self) -> io::Result<()> {
        for (resource, soft, hard) in &self.rlimits {
            nix::sys::resource::setrlimit(*resource, *soft, *hard)?;
        }
        Ok(())
    }
}

/// A limit that cannot be set on this system.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LimitRefused {
    #[error(
        "{flag} asks for {asked}, above the hard limit of {hard} that fdbroker runs \
         under: a limit can only lower it"
    )]
    AboveHard {
        flag: &'static str,
        asked: u64,
        hard: u64,
    },
    #[error("cannot read this process's resource limits: {0}")]
    Unreadable(#[source] io::Error),
}

impl From<LimitRefused> for io::Error {
    fn from(e: LimitRefused) -> io::Error {
        let kind = match &e {
            LimitRefused::AboveHard { .. } => io::ErrorKind::InvalidInput,
            LimitRefused::Unreadable(e) => e.kind(),
        };
        io::Error::new(kind, e)
    }
}

/// The flag (and `[sandbox]` key) behind an rlimit, for the error that refuses it.
fn flag_of(resource: Resource) -> &'static str {
    match resource {
        Resource::RLIMIT_CPU => "--cpu-limit (cpu_limit)",
        Resource::RLIMIT_FSIZE => "--file-size-limit (file_size_limit)",
        Resource::RLIMIT_NOFILE => "--nofile-limit (nofile_limit)",
        Resource::RLIMIT_DATA => "--memory-limit (memory_limit)",
        Resource::RLIMIT_NPROC => "--pids-limit (pids_limit)",
        _ => "a limit",
    }
}

/// Writes `0` to the `cgroup.procs` descriptor numbered `fd`.
#[allow(unsafe_code)] // borrowing a descriptor by number in the forked child
fn join_cgroup(fd: std::os::fd::RawFd) -> io::Result<()> {
    // SAFETY: the number of a descriptor the parent holds open for the whole spawn (its
    // `Enforcement` outlives the child's pre-exec), borrowed for this one call.
    let procs = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    nix::unistd::write(procs, b"0")?;
    Ok(())
}

impl Enforcement {
    /// Prepares `limits` for one sandbox named `name` (its cgroups' directory name).
    /// `beside` counts the processes of the sandbox's uid that run outside its process
    /// tree while it runs (its namespace's init; in `fdbroker each` also the slot's next
    /// sandbox, its init and its armed worker): without a pids cgroup the pids limit is
    /// the uid's RLIMIT_NPROC, which counts them too, so it is raised by that many.
    /// Never fails: what cannot be had is listed in [`Enforcement::missing`], and the
    /// rlimits apply regardless.
    pub fn prepare(limits: &Limits, name: &str, beside: u64) -> Enforcement {
        let mut rlimits = Vec::new();
        let mut missing = Vec::new();
        if let Some(cpu) = limits.cpu {
            // Whole seconds, rounded up: the kernel counts RLIMIT_CPU in seconds.
            let secs = cpu.as_secs() + u64::from(cpu.subsec_nanos() > 0);
            rlimits.push((Resource::RLIMIT_CPU, secs, secs + 1));
        }
        if let Some(n) = limits.file_size {
            rlimits.push((Resource::RLIMIT_FSIZE, n, n));
        }
        if let Some(n) = limits.nofile {
            rlimits.push((Resource::RLIMIT_NOFILE, n, n));
        }
        let mut cgroups = Vec::new();
        if let Some(bytes) = limits.memory {
            match Cgroup::make(Controller::Memory, name, bytes) {
                Ok(c) => cgroups.push(c),
                Err(e) => {
                    tracing::debug!("no memory cgroup: {e}");
                    missing.push("a memory cgroup (the memory limit is RLIMIT_DATA only)");
                    rlimits.push((Resource::RLIMIT_DATA, bytes, bytes));
                }
            }
        }
        if let Some(n) = limits.pids {
            match Cgroup::make(Controller::Pids, name, n) {
                Ok(c) => cgroups.push(c),
                Err(e) => {
                    tracing::debug!("no pids cgroup: {e}");
                    missing.push("a pids cgroup (the pids limit is RLIMIT_NPROC only)");
                    // The uid's count includes the processes `beside` the sandbox.
                    // (With the cgroup, which counts the sandbox exactly, the rlimit is
                    // left out: it would fail the same fork first, unreported.)
                    // Saturating: `--pids-limit 18446744073709551615` is a valid count,
                    // and wrapping would make it an RLIMIT_NPROC of 1 (or a panic).
                    let n = n.saturating_add(beside);
                    rlimits.push((Resource::RLIMIT_NPROC, n, n));
                }
            }
        }
        Enforcement {
            limits: *limits,
            rlimits,
            cgroups,
            missing,
        }
    }

    /// Refuses a limit that could not be set: one above the hard limit this process
    /// runs under. A limit can only lower it (raising a hard limit takes
    /// `CAP_SYS_RESOURCE`, which the sandbox's user lacks, and `RLIMIT_NOFILE` never goes
    /// past `fs.nr_open`); caught here, before anything runs, it is a usage error rather
    /// than an `error` verdict for every item.
    pub fn check(&self) -> Result<(), LimitRefused> {
        for (resource, _, hard) in &self.rlimits {
            let (_, current) = nix::sys::resource::getrlimit(*resource)
                .map_err(|e| LimitRefused::Unreadable(io::Error::from(e)))?;
            if *hard > current {
                return Err(LimitRefused::AboveHard {
                    flag: flag_of(*resource),
                    asked: *hard,
                    hard: current,
                });
            }
        }
        Ok(())
    }

    /// The part the worker's pre-exec applies.
    pub fn in_child(&self) -> InChild {
        InChild {
            procs: self.cgroups.iter().map(|c| c.procs.as_raw_fd()).collect(),
            rlimits: self.rlimits.clone(),
        }
    }

    /// [`Enforcement::in_child`] without the cgroups, for a worker confined before its
    /// item ([`crate::spawn::pidns::Armed`]): the parent joins it to them with
    /// [`Enforcement::join`] when the item comes, so that it counts for nothing before.
    pub fn in_child_but_cgroups(&self) -> InChild {
        InChild {
            procs: Vec::new(),
            rlimits: self.rlimits.clone(),
        }
    }

    /// Moves the process `pid` (not yet running anything of its own: its children are
    /// born inside) into the sandbox's cgroups. Root writes it: `cgroup.procs` was
    /// opened by root.
    pub fn join(&self, pid: nix::unistd::Pid) -> io::Result<()> {
        let pid = pid.as_raw().to_string();
        for c in &self.cgroups {
            nix::unistd::write(&c.procs, pid.as_bytes())?;
        }
        Ok(())
    }

    /// Before the next sandbox of a reused [`Enforcement`] (`fdbroker each` keeps one per
    /// slot): reads the counters' values as the new baseline.
    pub fn rebase(&mut self) {
        for c in &mut self.cgroups {
            c.baseline = c.count().unwrap_or(c.baseline);
        }
    }

    /// What the cgroups counted since they were made or last rebased. Read once the
    /// sandbox has ended.
    pub fn evidence(&mut self) -> Evidence {
        let mut e = Evidence::default();
        for c in &mut self.cgroups {
            let grew = c.count().is_ok_and(|n| n > c.baseline);
            match c.kind {
                Controller::Memory => e.memory |= grew,
                Controller::Pids => e.pids |= grew,
            }
        }
        e
    }

    /// The cgroup directories, for a process that removes them after the broker exits.
    pub fn directories(&self) -> Vec<PathBuf> {
        self.cgroups.iter().map(|c| c.dir.clone()).collect()
    }

    /// Removes the (empty) cgroup directories now; what cannot be removed yet stays.
    pub fn remove(&mut self) {
        for c in self.cgroups.drain(..) {
            remove_cgroup(&c.dir);
        }
    }
}

/// `rmdir` of an emptied cgroup, retried briefly: the kernel may still be releasing
/// the last exited process's membership.
pub fn remove_cgroup(dir: &Path) {
    for _ in 0..50 {
        match std::fs::remove_dir(dir) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(Duration::from_millis(2));
            }
            _ => return,
        }
    }
}

impl Cgroup {
    /// Makes `name` beneath the broker's own cgroup of `kind` and sets its limit.
    fn make(kind: Controller, name: &str, limit: u64) -> io::Result<Cgroup> {
        let (base, v2) = own_cgroup(kind)?;
        let dir = base.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let made = (|| {
            let (limit_file, counter_file) = match (kind, v2) {
                (Controller::Memory, false) => ("memory.limit_in_bytes", "memory.oom_control"),
                (Controller::Memory, true) => ("memory.max", "memory.events"),
                (Controller::Pids, _) => ("pids.max", "pids.events"),
            };
            if kind == Controller::Memory && !v2 {
                // No swap to escape into where the kernel offers the knob.
                let _ = std::fs::write(dir.join("memory.swappiness"), "0");
            }
            std::fs::write(dir.join(limit_file), limit.to_string())?;
            if kind == Controller::Memory && v2 {
                let _ = std::fs::write(dir.join("memory.swap.max"), "0");
            }
            let procs = OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))?;
            let counter = File::open(dir.join(counter_file))?;
            let mut c = Cgroup {
                dir: dir.clone(),
                procs,
                kind,
                counter,
                baseline: 0,
            };
            c.baseline = c.count()?;
            Ok(c)
        })();
        if made.is_err() {
            let _ = std::fs::remove_dir(&dir);
        }
        made
    }

    /// The counter that grows when the limit is hit: the `oom_kill` line of
    /// `memory.oom_control` (v1) or `memory.events` (v2), the `max` line of
    /// `pids.events`.
    fn count(&mut self) -> io::Result<u64> {
        let mut text = String::new();
        self.counter.rewind()?;
        (&self.counter).take(4096).read_to_string(&mut text)?;
        let number = |s: &str| s.trim().parse::<u64>().ok();
        let key = match self.kind {
            Controller::Memory => "oom_kill",
            Controller::Pids => "max",
        };
        Ok(text
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(k, _)| *k == key)
            .filter_map(|(_, v)| number(v))
            .sum())
    }
}

/// The broker's own cgroup directory for `kind`, and whether it is cgroup v2.
fn own_cgroup(kind: Controller) -> io::Result<(PathBuf, bool)> {
    let name = match kind {
        Controller::Memory => "memory",
        Controller::Pids => "pids",
    };
    let table = std::fs::read_to_string("/proc/self/cgroup")?;
    let root = Path::new("/sys/fs/cgroup");
    // v1: `ID:memory:/path` (the controller may share a hierarchy: `ID:cpu,memory:/p`).
    for line in table.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.split(',').any(|c| c == name) {
            let mount = root.join(controllers);
            let dir = mount.join(path.trim_start_matches('/'));
            if dir.join("cgroup.procs").exists() {
                return Ok((dir, false));
            }
        }
    }
    // v2: `0::/path`, with the controller enabled for children there.
    if root.join("cgroup.controllers").exists()
        && let Some(path) = table.lines().find_map(|l| l.strip_prefix("0::"))
    {
        let dir = root.join(path.trim_start_matches('/'));
        let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control"))?;
        if enabled.split_whitespace().any(|c| c == name) {
            return Ok((dir, true));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!("no delegated {name} cgroup controller"),
    ))
}

/// The wall-clock limit of `fdbroker run`: kills the worker at the deadline unless it
/// has exited (the gate, set under its lock before the worker is reaped, keeps the
/// signal from a reused pid). The thread is left to the process's exit.
pub fn watch(
    limit: Duration,
    worker: nix::unistd::Pid,
    exited: Arc<Mutex<bool>>,
) -> io::Result<Watchdog> {
    let fired = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&fired);
    std::thread::Builder::new()
        .name("fdbroker-time-limit".into())
        .spawn(move || {
            std::thread::sleep(limit);
            let gone = exited.lock().unwrap_or_else(|p| p.into_inner());
            if !*gone {
                flag.store(true, Ordering::SeqCst);
                let _ = nix::sys::signal::kill(worker, nix::sys::signal::Signal::SIGKILL);
            }
        })?;
    Ok(Watchdog { fired })
}

/// See [`watch`].
#[derive(Debug)]
pub struct Watchdog {
    fired: Arc<AtomicBool>,
}

impl Watchdog {
    /// Whether the limit was reached and the worker killed.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

/// `fdbroker run --output-limit`: copies the worker's stdout (the read end of its pipe)
/// to ours, at most `limit` bytes; at the first byte past it, kills the worker (its
/// namespace ends with it). The thread returns whether it cut the output.
pub fn relay_output(
    read: std::os::fd::OwnedFd,
    limit: Option<u64>,
    worker: nix::unistd::Pid,
    exited: Arc<Mutex<bool>>,
) -> io::Result<std::thread::JoinHandle<bool>> {
    std::thread::Builder::new()
        .name("fdbroker-output".into())
        .spawn(move || {
            let mut from = File::from(read);
            let mut left = limit.unwrap_or(u64::MAX);
            let mut buf = vec![0u8; 64 * 1024];
            let out = io::stdout();
            loop {
                let n = match from.read(&mut buf) {
                    Ok(0) => return false,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return false,
                };
                let keep = usize::try_from(left).map_or(n, |l| l.min(n));
                let mut out = out.lock();
                // A reader of ours that went away: stop copying; the worker then gets
                // EPIPE (or SIGPIPE) as it would have without the relay.
                if out
                    .write_all(&buf[..keep])
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    return false;
                }
                left -= keep as u64;
                if keep < n {
                    let gone = exited.lock().unwrap_or_else(|p| p.into_inner());
                    if !*gone {
                        let _ = nix::sys::signal::kill(worker, nix::sys::signal::Signal::SIGKILL);
                    }
                    return true;
                }
            }
        })
}

/// One verdict line for stderr: `fdbroker: verdict: timeout (--time-limit 2s)`.
pub fn verdict_line(verdict: Verdict, limits: &Limits) -> String {
    let value = match verdict {
        Verdict::Timeout => limits.time.map(humantime_ms),
        Verdict::Cpu => limits.cpu.map(humantime_ms),
        Verdict::Memory => limits.memory.map(|n| format!("{n} bytes")),
        Verdict::Pids => limits.pids.map(|n| n.to_string()),
        Verdict::FileSize => limits.file_size.map(|n| format!("{n} bytes")),
        Verdict::Output => limits.output.map(|n| format!("{n} bytes")),
        _ => None,
    };
    match (verdict.flag(), value) {
        (Some(flag), Some(v)) => {
            format!("fdbroker: verdict: {verdict} ({flag} {v}): the limit ended the run")
        }
        _ => format!("fdbroker: verdict: {verdict}"),
    }
}

fn humantime_ms(d: Duration) -> String {
    match d.as_millis() {
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(status: i32) -> Ending {
        Ending {
            status: ExitStatus::from_raw(status),
            timed_out: false,
            output_cut: false,
            cpu: Duration::ZERO,
            evidence: Evidence::default(),
        }
    }

    #[test]
    fn verdicts_name_what_ended_the_run() {
        let none = Limits::default();
        assert_eq!(verdict(&none, &end(0)), Verdict::Ok);
        assert_eq!(verdict(&none, &end(1 << 8)), Verdict::Exit);
        assert_eq!(verdict(&none, &end(libc::SIGSEGV)), Verdict::Signal);
        assert_eq!(verdict(&none, &end(libc::SIGXCPU)), Verdict::Cpu);
        assert_eq!(verdict(&none, &end(libc::SIGXFSZ)), Verdict::FileSize);
        let timed = Ending {
            timed_out: true,
            ..end(libc::SIGKILL)
        };
        assert_eq!(verdict(&none, &timed), Verdict::Timeout);
        let oom = Ending {
            evidence: Evidence {
                memory: true,
                pids: false,
            },
            ..end(libc::SIGKILL)
        };
        assert_eq!(verdict(&none, &oom), Verdict::Memory);
        // Counters explain only a failure: a run that succeeded is ok.
        let fine = Ending {
            evidence: oom.evidence,
            ..end(0)
        };
        assert_eq!(verdict(&none, &fine), Verdict::Ok);
        assert_eq!(Verdict::Timeout.exit_code(), Some(124));
        assert_eq!(Verdict::Exit.exit_code(), None);
    }

    #[test]
    fn the_verdict_line_names_the_flag_and_the_value() {
        let limits = Limits {
            time: Some(Duration::from_secs(2)),
            ..Limits::default()
        };
        assert_eq!(
            verdict_line(Verdict::Timeout, &limits),
            "fdbroker: verdict: timeout (--time-limit 2s): the limit ended the run"
        );
    }
}
