//! Which process `fdbroker reload PID` may signal: only a running `fdbroker serve`
//! monitor. Run inside the reload requester (whoever runs `fdbroker reload`, unconfined).
//!
//! A reload is a SIGHUP, which kills most programs and hangs up a shell, so a mistyped or
//! stale PID (`fdbroker reload $$`, a pid reused since the broker stopped) must be
//! refused without being signalled. The check and the signal go through one pidfd taken
//! first: the pidfd names one process for ever, so the `/proc` entries read afterwards
//! are that process's as long as it is still alive when they have been read (a pid can be
//! reused only once its process is gone), and the signal sent through the pidfd reaches
//! that process or nobody. The order is: open the pidfd, find the process's number in
//! `/proc`'s pid namespace from the pidfd's `fdinfo`, read `/proc/N`, check the pidfd is
//! still alive, signal through it.
//!
//! What counts as a monitor: its command line is `fdbroker serve ...` without `--check`
//! (the file name of `argv[0]` is `fdbroker` or this binary's own name, `argv[1]` is
//! `serve`), its kernel task name is one of those names, and, where this caller may look
//! at its executable (root, or anyone when the monitor is dumpable), that executable is
//! this very binary, or this binary's own path since replaced (`(deleted)`: a broker still
//! running the binary a package upgrade replaced), or a file of one of those names that
//! only root or the caller could have put there: owned by root or the caller's effective
//! uid, not writable by group or others, in a directory of the same kind. A name alone
//! is no proof: anyone can copy a shell to `/tmp/x/fdbroker` and run `fdbroker serve`
//! with it, and would then be signalled, and (below) given the caller's real uid to
//! signal back with. A non-root caller of
//! the monitor's own user cannot see the executable of the monitor, which makes itself
//! non-dumpable; the command line and task name are what it has. A process whose parent
//! is itself such a monitor is one of its servers, which a reload replaces rather than
//! signals: it is refused with the monitor's pid.
//!
//! Where `/proc` hides the process from the caller (`hidepid`; the shipped unit's
//! `ProtectProc=invisible` hides the non-dumpable monitor from its own `ExecReload=`),
//! the process is accepted only if it is in the caller's own cgroup: the service's, for
//! `ExecReload=`. Anything hidden elsewhere is refused.

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::unistd::Pid;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Why `fdbroker reload` would not signal a process.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// `pidfd_open` failed: no such process, or not ours to look at.
    #[error("no process {pid} to reload: {source}")]
    NoProcess {
        /// The pid given.
        pid: i32,
        /// What `pidfd_open` said.
        source: io::Error,
    },
    /// `/proc/PID` could not be read (the process exited, or `/proc` hides it).
    #[error("cannot inspect process {pid} (/proc/…/{what}): {source}")]
    Unreadable {
        /// The pid given.
        pid: i32,
        /// The `/proc` entry.
        what: &'static str,
        /// The error reading it.
        source: io::Error,
    },
    /// The process is something else; it was not signalled.
    #[error(
        "process {pid} is not an fdbroker monitor ({found}); not signalling it \
         (give the pid of `fdbroker serve`, e.g. systemd's $MAINPID)"
    )]
    NotMonitor {
        /// The pid given.
        pid: i32,
        /// What it is instead.
        found: String,
    },
    /// The process is a server of the monitor `monitor`.
    #[error(
        "process {pid} is a server of the fdbroker monitor {monitor}, which reloads by \
         replacing it; not signalling it (run: fdbroker reload {monitor})"
    )]
    Server {
        /// The pid given.
        pid: i32,
        /// Its monitor's pid.
        monitor: i32,
    },
    /// The process exited while it was being checked.
    #[error("process {pid} exited while it was being checked; nothing was signalled")]
    Exited {
        /// The pid given.
        pid: i32,
    },
}

/// A process checked to be an fdbroker monitor, held by its pidfd.
#[derive(Debug)]
pub struct Monitor {
    /// The pidfd every signal goes through.
    pub pidfd: OwnedFd,
    /// Its real uid (read from `/proc/PID/status` before the liveness check); `None`
    /// when `/proc` hides it, and when its executable could not be seen: a root caller
    /// takes this uid as its own real uid to receive the answer, which lets the target
    /// signal the caller, so only a target whose executable passed the check gets it.
    pub real_uid: Option<u32>,
}

/// Take a pidfd of `pid`, check it is an fdbroker monitor, and check it is still alive
/// after the check (so what was read in `/proc` was this process's).
pub fn monitor(pid: Pid) -> Result<Monitor, TargetError> {
    let raw = pid.as_raw();
    let pidfd = crate::sys::pidfd_open(pid)
        .map_err(|source| TargetError::NoProcess { pid: raw, source })?;
    let proc = Proc {
        pid: proc_pid(raw, &pidfd)?,
    };
    let names = Names::ours();
    let mut seen_executable = false;
    let mut is_monitor = |p: &Proc| -> Result<Option<String>, TargetError> {
        // `Some(why not)` when `p` is not a monitor.
        let argv = p.cmdline()?;
        let comm = p.comm()?;
        let named = argv
            .first()
            .and_then(|a| Path::new(OsStr::from_bytes(a)).file_name())
            .is_some_and(|n| names.is_ours(n.as_bytes()));
        let serving = argv.get(1).is_some_and(|a| a == b"serve")
            && !argv.iter().skip(2).any(|a| a == b"--check");
        if !(named && serving && names.is_our_task(&comm)) {
            return Ok(Some(describe(&comm, &argv)));
        }
        match p.executable(&names) {
            Executable::Foreign(why) => Ok(Some(why)),
            Executable::Ours => {
                // The target's own, not its parent's (checked below as well).
                if p.pid == proc.pid {
                    seen_executable = true;
                }
                Ok(None)
            }
            Executable::Hidden => Ok(None),
        }
    };
    let real_uid = match is_monitor(&proc) {
        Ok(Some(found)) => return Err(TargetError::NotMonitor { pid: raw, found }),
        Ok(None) => {
            let parent = proc.parent()?;
            if parent > 1 && is_monitor(&Proc { pid: parent }).is_ok_and(|why| why.is_none()) {
                return Err(TargetError::Server {
                    pid: raw,
                    monitor: parent,
                });
            }
            if seen_executable {
                proc.real_uid()?
            } else {
                None
            }
        }
        // Hidden by /proc (hidepid, systemd's ProtectProc=invisible): see `same_service`.
        Err(TargetError::Unreadable { source, .. })
            if matches!(
                source.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
            ) && !exited(&pidfd) =>
        {
            if !same_service(raw) {
                return Err(TargetError::NotMonitor {
                    pid: raw,
                    found: "hidden from this caller by /proc, and not in this \
                            process's own cgroup"
                        .to_owned(),
                });
            }
            None
        }
        Err(e) => return Err(e),
    };
    if exited(&pidfd) {
        return Err(TargetError::Exited { pid: raw });
    }
    Ok(Monitor { pidfd, real_uid })
}

/// The process's number in the pid namespace of `/proc`, read from the pidfd's own
/// `fdinfo` (`Pid:`): the same as `pid` unless `/proc` was mounted for another pid
/// namespace than ours (a service manager in a pid namespace of its own whose `/proc`
/// is its parent's), where `/proc/PID` would be some other process or none.
fn proc_pid(pid: i32, pidfd: &OwnedFd) -> Result<i32, TargetError> {
    use std::os::fd::AsRawFd;
    let info = fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd())).map_err(
        |source| TargetError::Unreadable {
            pid,
            what: "self/fdinfo",
            source,
        },
    )?;
    let seen = info
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse::<i32>().ok());
    match seen {
        // Kernels before 5.3 have no pidfds; every kernel with them writes the line.
        None => Ok(pid),
        Some(-1) => Err(TargetError::Exited { pid }),
        Some(0) => Err(TargetError::Unreadable {
            pid,
            what: "self/fdinfo",
            source: io::Error::new(
                io::ErrorKind::NotFound,
                "the process is outside the pid namespace of /proc",
            ),
        }),
        Some(n) => Ok(n),
    }
}

/// Whether `pid` (in our pid namespace) is in this process's own cgroup: for a process
/// `/proc` hides from us, the one thing that says it belongs to our service.
///
/// The shipped unit's `ProtectProc=invisible` hides from `ExecReload=` (which has no
/// `CAP_SYS_PTRACE`) every process it may not ptrace, the monitor included (it is not
/// dumpable); `ExecReload=` runs in the service's cgroup, where `$MAINPID` is. A hidden
/// process elsewhere (another service's, a non-dumpable agent in a login session) is
/// refused. The cgroup's `cgroup.procs` lists pids in the reader's pid namespace.
fn same_service(pid: i32) -> bool {
    if pid == std::process::id() as i32 {
        return false;
    }
    let Ok(ours) = fs::read_to_string("/proc/self/cgroup") else {
        return false;
    };
    // The unified hierarchy (`0::PATH`), where it is mounted, else systemd's own v1
    // hierarchy (`N:name=systemd:PATH`).
    let mut candidates = Vec::new();
    for line in ours.lines() {
        if let Some(path) = line.strip_prefix("0::") {
            candidates.push(format!("/sys/fs/cgroup{path}"));
            candidates.push(format!("/sys/fs/cgroup/unified{path}"));
        } else if let Some((_, path)) = line.split_once(":name=systemd:") {
            candidates.push(format!("/sys/fs/cgroup/systemd{path}"));
        }
    }
    let wanted = pid.to_string();
    candidates
        .iter()
        .find_map(|dir| fs::read_to_string(format!("{dir}/cgroup.procs")).ok())
        .is_some_and(|procs| procs.lines().any(|l| l.trim() == wanted))
}

/// Whether the process behind `pidfd` has exited (a pidfd polls readable then).
pub fn exited(pidfd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(0))
}

/// `ps`-like words for what a process is: its task name and command line.
fn describe(comm: &str, argv: &[Vec<u8>]) -> String {
    let line: Vec<String> = argv
        .iter()
        .take(4)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let mut line = line.join(" ");
    if argv.len() > 4 {
        line.push_str(" ...");
    }
    if line.is_empty() {
        format!("`{comm}`, no command line")
    } else {
        format!("`{comm}`: {line}")
    }
}

/// `/proc/PID` of one process.
struct Proc {
    pid: i32,
}

impl Proc {
    fn read(&self, what: &'static str) -> Result<Vec<u8>, TargetError> {
        fs::read(format!("/proc/{}/{what}", self.pid)).map_err(|source| TargetError::Unreadable {
            pid: self.pid,
            what,
            source,
        })
    }

    /// `argv`, as NUL-separated in `/proc/PID/cmdline` (empty for a kernel thread).
    fn cmdline(&self) -> Result<Vec<Vec<u8>>, TargetError> {
        let raw = self.read("cmdline")?;
        Ok(raw
            .strip_suffix(b"\0")
            .unwrap_or(&raw)
            .split(|b| *b == 0)
            .filter(|_| !raw.is_empty())
            .map(<[u8]>::to_vec)
            .collect())
    }

    /// The kernel's task name (`/proc/PID/comm`, at most 15 bytes).
    fn comm(&self) -> Result<String, TargetError> {
        let raw = self.read("comm")?;
        Ok(String::from_utf8_lossy(raw.strip_suffix(b"\n").unwrap_or(&raw)).into_owned())
    }

    fn status_field(&self, key: &str) -> Result<Option<u32>, TargetError> {
        let raw = self.read("status")?;
        Ok(String::from_utf8_lossy(&raw)
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok()))
    }

    fn parent(&self) -> Result<i32, TargetError> {
        Ok(self
            .status_field("PPid:")?
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or(0))
    }

    fn real_uid(&self) -> Result<Option<u32>, TargetError> {
        self.status_field("Uid:")
    }

    /// What its executable says: see the module documentation for what passes.
    fn executable(&self, names: &Names) -> Executable {
        let link = format!("/proc/{}/exe", self.pid);
        // EACCES for a non-dumpable monitor and a caller without `CAP_SYS_PTRACE`.
        let Ok(theirs) = fs::metadata(&link) else {
            return Executable::Hidden;
        };
        let ours = fs::read_link("/proc/self/exe").ok();
        if let Ok(own) = fs::metadata("/proc/self/exe")
            && (own.dev(), own.ino()) == (theirs.dev(), theirs.ino())
        {
            return Executable::Ours;
        }
        let Ok(target) = fs::read_link(&link) else {
            return Executable::Hidden;
        };
        let shown = target.as_os_str().as_bytes();
        if let Some(replaced) = shown.strip_suffix(b" (deleted)") {
            // Our own path, since replaced (a package upgrade): only whoever may write
            // where this binary lies could have put the old one there.
            let own = ours.as_ref().map(|p| p.as_os_str().as_bytes());
            let own = own.map(|o| o.strip_suffix(b" (deleted)").unwrap_or(o));
            return if own == Some(replaced) {
                Executable::Ours
            } else {
                Executable::Foreign(format!(
                    "it runs {}, since deleted",
                    String::from_utf8_lossy(replaced)
                ))
            };
        }
        let path = Path::new(OsStr::from_bytes(shown));
        let named = path
            .file_name()
            .is_some_and(|n| names.is_ours(n.as_bytes()));
        if !named {
            return Executable::Foreign(format!("it runs {}", path.display()));
        }
        let euid = nix::unistd::geteuid().as_raw();
        let trusted = |uid: u32, mode: u32| (uid == 0 || uid == euid) && mode & 0o022 == 0;
        if !trusted(theirs.uid(), theirs.mode()) {
            let why = if theirs.uid() == 0 || theirs.uid() == euid {
                "writable by group or others".to_owned()
            } else {
                format!("owned by uid {}", theirs.uid())
            };
            return Executable::Foreign(format!("it runs {}, {why}", path.display()));
        }
        match path.parent().map(fs::metadata) {
            Some(Ok(dir)) if trusted(dir.uid(), dir.mode()) => Executable::Ours,
            _ => Executable::Foreign(format!(
                "it runs {}, from a directory neither root's nor this caller's alone",
                path.display()
            )),
        }
    }
}

/// What a process's executable says about it.
enum Executable {
    /// This binary, or an fdbroker binary only root or the caller could have put there.
    Ours,
    /// Not visible to this caller; the command line and task name decide.
    Hidden,
    /// Anything else, in words.
    Foreign(String),
}

/// The file names an fdbroker binary goes by: `fdbroker`, and this binary's own (the
/// same code built under another name, as the end-to-end tests' `fdbroker-e2e`).
struct Names {
    own: Option<Vec<u8>>,
}

/// The kernel keeps the first 15 bytes of an executable's name as its task name.
const TASK_COMM_LEN: usize = 15;

impl Names {
    fn ours() -> Names {
        let own = fs::read_link("/proc/self/exe").ok().and_then(|p| {
            let shown = p.as_os_str().as_bytes();
            let shown = shown.strip_suffix(b" (deleted)").unwrap_or(shown);
            Path::new(OsStr::from_bytes(shown))
                .file_name()
                .map(|n| n.as_bytes().to_vec())
        });
        Names { own }
    }

    fn all(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(&b"fdbroker"[..]).chain(self.own.as_deref())
    }

    fn is_ours(&self, name: &[u8]) -> bool {
        self.all().any(|n| n == name)
    }

    /// Whether `comm` is the task name of one of the names (servers rename themselves
    /// `fdbroker`).
    fn is_our_task(&self, comm: &str) -> bool {
        self.all()
            .any(|n| &n[..n.len().min(TASK_COMM_LEN)] == comm.as_bytes())
    }
}
