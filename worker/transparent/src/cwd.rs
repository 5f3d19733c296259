//! The working directories the supervisor keeps for its program's processes: a
//! directory the policy serves but the sandbox user cannot enter (root-only, 0700).
//!
//! The kernel refuses `chdir`/`fchdir` into such a directory (no search permission), so
//! the supervisor answers those calls itself: where the broker describes the target as
//! a directory, it records it as that process's working directory and answers 0; the
//! process's real working directory stays where it was. From then on a relative path
//! in an intercepted call (`AT_FDCWD`) is resolved against the recorded directory
//! (`memory::absolute`), `getcwd` answers it, and the broker decides the absolute path
//! that results, as for any other path: the recorded directory grants nothing by
//! itself, and a program that forges one (by racing its memory or its descriptors
//! during a `chdir`) forges only a starting point whose every lookup the broker still
//! decides.
//!
//! Per process, as the kernel keeps it (threads share it), keyed by the process's id
//! *and* its start time, so that a new process that reuses the id of an ended one
//! inherits nothing. Each entry also holds the identity (device and inode) of the
//! process's real working directory when it was recorded: a later real `chdir` (one the
//! kernel ran, into a directory the sandbox user may enter) changes that identity, and
//! the entry is then void, so the kernel's own working directory wins again.
//!
//! A new process (a `fork`) has no entry of its own: on its first intercepted call it
//! takes its parent's, if its real working directory is the one the parent's entry was
//! recorded over (a child that changed directory for real before its first call does
//! not). `exec` keeps the process and its entry.
//!
//! What is not emulated: a call the supervisor does not intercept resolves a relative
//! path against the real working directory (`mkdir`, `unlink`, `rename`, `execve` of
//! `./x`), and a relative path that leaves what the policy covers is refused (`EACCES`)
//! rather than left to the kernel, which would resolve it against another directory.
//! A child that its parent outlives by changing directory between the `fork` and the
//! child's first intercepted call takes the parent's new directory.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

/// At most this many processes with a recorded directory; past it, entries of ended
/// processes are dropped, and if none has ended a `chdir` fails with `ENOMEM`.
const MAX_ENTRIES: usize = 4096;

/// A process of the program, as `/proc` (the broker's pid namespace) numbers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Process {
    pub pid: i32,
    /// `/proc/PID/stat`'s start time: with the pid, names one process for good.
    pub start: u64,
}

/// The process of thread `host_tid` (a `/proc` number), and its parent's pid.
pub fn process_of(host_tid: i32) -> Option<(Process, i32)> {
    let status = std::fs::read_to_string(format!("/proc/{host_tid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<i32>().ok())
    };
    let (pid, ppid) = (field("Tgid:")?, field("PPid:")?);
    Some((
        Process {
            pid,
            start: start_time(pid)?,
        },
        ppid,
    ))
}

/// Field 22 of `/proc/PID/stat`, read after the command's closing parenthesis (the
/// command may hold spaces and parentheses).
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // rest: " state ppid ..." — field 3 is its first word, so 22 is the 20th.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The device and inode of `pid`'s real working directory.
fn real_cwd(pid: i32) -> Option<(u64, u64)> {
    let m = std::fs::metadata(format!("/proc/{pid}/cwd")).ok()?;
    Some((m.dev(), m.ino()))
}

struct Entry {
    path: Vec<u8>,
    real: (u64, u64),
}

/// The recorded working directories.
#[derive(Default)]
pub struct WorkingDirectories {
    entries: Mutex<HashMap<Process, Entry>>,
}

impl WorkingDirectories {
    /// `process`'s recorded working directory, if it has one that still holds (or,
    /// for a process without one, its parent `ppid` has one it inherited).
    pub fn get(&self, process: Process, ppid: i32) -> Option<Vec<u8>> {
        let real = real_cwd(process.pid)?;
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = entries.get(&process) {
            if e.real == real {
                return Some(e.path.clone());
            }
            // The kernel changed its directory since: the real one wins.
            entries.remove(&process);
            return None;
        }
        let parent = Process {
            pid: ppid,
            start: start_time(ppid)?,
        };
        let inherited = entries
            .get(&parent)
            .filter(|e| e.real == real)
            .map(|e| e.path.clone())?;
        if entries.len() < MAX_ENTRIES {
            entries.insert(
                process,
                Entry {
                    path: inherited.clone(),
                    real,
                },
            );
        }
        Some(inherited)
    }

    /// Records `path` (absolute, a directory the broker described) as `process`'s
    /// working directory; `ENOMEM` when no entry is left.
    pub fn set(&self, process: Process, path: Vec<u8>) -> Result<(), i32> {
        let real = real_cwd(process.pid).ok_or(libc::ESRCH)?;
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&process) {
            entries.retain(|p, _| start_time(p.pid) == Some(p.start));
            if entries.len() >= MAX_ENTRIES {
                return Err(libc::ENOMEM);
            }
        }
        entries.insert(process, Entry { path, real });
        Ok(())
    }

    /// Whether no directory is recorded at all (the common case, checked first so that
    /// a program that never changes into a served directory pays nothing for this).
    pub fn is_empty(&self) -> bool {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Forgets `process`'s recorded directory (it changes directory for real).
    pub fn clear(&self, process: Process) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.remove(&process);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> (Process, i32) {
        process_of(std::process::id() as i32).expect("this process")
    }

    #[test]
    fn a_recorded_directory_holds_until_the_real_one_changes() {
        let (p, ppid) = me();
        let cwds = WorkingDirectories::default();
        assert_eq!(cwds.get(p, ppid), None);
        cwds.set(p, b"/srv/in".to_vec()).expect("room");
        assert_eq!(cwds.get(p, ppid).as_deref(), Some(&b"/srv/in"[..]));
        // Another process with the same pid (a later start) is someone else.
        let other = Process {
            pid: p.pid,
            start: p.start + 1,
        };
        assert_eq!(cwds.get(other, 1), None);
        // The real directory changed: the entry is void.
        cwds.entries
            .lock()
            .expect("lock")
            .get_mut(&p)
            .expect("set")
            .real = (0, 0);
        assert_eq!(cwds.get(p, ppid), None);
        cwds.set(p, b"/srv/in".to_vec()).expect("room");
        cwds.clear(p);
        assert_eq!(cwds.get(p, ppid), None);
    }

    #[test]
    fn a_child_takes_its_parents_directory() {
        let (parent, _) = me();
        let cwds = WorkingDirectories::default();
        cwds.set(parent, b"/srv/in/sub".to_vec()).expect("room");
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("a child");
        let (c, ppid) = process_of(child.id() as i32).expect("the child");
        assert_eq!(ppid, parent.pid);
        let got = cwds.get(c, ppid);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(got.as_deref(), Some(&b"/srv/in/sub"[..]));
    }

    #[test]
    fn the_start_time_is_read_past_a_command_with_spaces() {
        let (p, _) = me();
        assert!(p.start > 0);
    }
}
