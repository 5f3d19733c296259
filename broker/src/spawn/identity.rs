//! Transient sandbox identities: the spawn broker (root, still single-threaded, before
//! it forks anything) takes a uid from `[sandbox] uid_range` that no other process holds,
//! for one run, as systemd's `DynamicUser=` does ([`allocate`] gives a [`Lease`]).
//!
//! Why: the kernel lets any process of the same uid take a dumpable process's
//! descriptors (`pidfd_getfd`), read and write its memory (`/proc/PID/mem`) and trace it
//! (`ptrace`), and `execve` of an ordinary program makes the worker dumpable again
//! whatever it was before (only a set-id or unreadable program stays non-dumpable). A
//! worker running as a shared user such as `nobody` is thus open to every other process
//! of that user — another daemon, another run — which could copy its `FDBROKER_FD` and
//! ask the broker for everything the run grants, under the worker's name. With a uid no
//! other process has, that access needs `CAP_SYS_PTRACE`, which only root has; and the
//! uid's `RLIMIT_NPROC` count and its budget of descriptors in flight are the sandbox's
//! alone.
//!
//! A uid is free when all of these hold, checked in this order:
//! 1. no process visible in `/proc` has it as a real, effective, saved or filesystem uid,
//!    nor as any gid or supplementary group (the same number is the run's gid);
//! 2. the user and group databases know neither the uid nor the gid of that number, and
//!    no `/etc/subuid` or `/etc/subgid` range holds it (a user may map those into a user
//!    namespace of theirs, whose processes then run as them);
//! 3. its lock file, `LOCK_DIR/UID`, can be locked (an open file description lock,
//!    `fcntl(F_OFD_SETLK)`, exclusive, without waiting): another `fdbroker run` that
//!    holds it is using the uid;
//! 4. after locking, `/proc` is read again for it, which closes the window between 1
//!    and 3 against a run that took the uid meanwhile.
//!
//! The lock lives as long as its open file description (it is not a process's lock,
//! which any `close` of the file by that process would drop, and unlocking needs no
//! system call the confined broker may no longer make): the lease holds it, and so does
//! the PID namespace's init, which keeps a copy ([`crate::spawn::pidns::spawn`]), so
//! the uid stays taken until the sandbox's last process is gone, even if the broker is
//! killed. The lock files are never removed:
//! removing a file another run may have just opened would let two runs lock two
//! different files for the same uid. Their number is bounded by the range's size.
//!
//! The search starts at a point that differs from run to run, so concurrent runs seldom
//! contend for the same candidate.
//!
//! Only what this process can see is checked: run `fdbroker run` in the machine's own
//! PID namespace (a process in a container's namespace cannot see the host's processes),
//! and give each allocator its own range (systemd's `DynamicUser=` does not see these
//! locks, nor these the ones of systemd).

use fdbroker_policy::UidRange;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Group, Uid, User};
use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Where the lock files are: one per uid, named by its number. Its parent must exist.
pub const LOCK_DIR: &str = "/run/fdbroker-uids";

/// A transient uid (and the gid of the same number), taken until this is dropped.
#[derive(Debug)]
pub struct Lease {
    id: u32,
    /// Unlocked when the last copy of its file description closes.
    lock: File,
}

impl AsFd for Lease {
    /// The lock's file: a process that keeps a copy open keeps the uid taken.
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.lock.as_fd()
    }
}

impl Lease {
    pub fn uid(&self) -> u32 {
        self.id
    }

    /// The same number as the uid: a group of its own, which no file outside the
    /// sandbox's scratch directory belongs to.
    pub fn gid(&self) -> u32 {
        self.id
    }
}

/// Why no transient uid could be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    #[error("cannot use the uid lock directory {path}: {source}")]
    LockDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Someone other than root could plant or remove lock files there.
    #[error(
        "the uid lock directory {path} and its parent must be directories owned by root \
         that only root may write"
    )]
    UnsafeLockDir { path: PathBuf },
    #[error("cannot read /proc to find the uids in use: {0}")]
    Proc(#[source] io::Error),
    #[error("cannot read {path} to find the subordinate ids in use: {source}")]
    Subordinate {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Every uid of the range is in use, known to the user database or locked.
    #[error(
        "no free uid in [sandbox] uid_range = \"{range}\": all {count} are in use \
         (by a process, the user or group database, /etc/subuid or /etc/subgid, or \
         another fdbroker run)"
    )]
    Exhausted { range: UidRange, count: u64 },
}

/// Takes a free uid from `range`, with its lock in [`LOCK_DIR`] (made if missing).
/// Needs root (the lock directory is root's alone); the lease is the caller's until it
/// drops it, and that of every process it passes a copy of the lock to ([`AsFd`]).
pub fn allocate(range: UidRange) -> Result<Lease, IdentityError> {
    allocate_in(Path::new(LOCK_DIR), range)
}

/// [`allocate`] with the lock files in `dir` (its parent must exist).
pub fn allocate_in(dir: &Path, range: UidRange) -> Result<Lease, IdentityError> {
    let mut leases = allocate_many_in(dir, range, 1)?;
    leases.pop().ok_or(IdentityError::Exhausted {
        range,
        count: range.len(),
    })
}

/// `n` leases at once, as `n` calls of [`allocate`] would take them but reading `/proc`
/// twice in all instead of twice each (`fdbroker each` takes one per slot; a scan of
/// every thread's credentials is most of its start-up).
pub fn allocate_many(range: UidRange, n: usize) -> Result<Vec<Lease>, IdentityError> {
    allocate_many_in(Path::new(LOCK_DIR), range, n)
}

/// [`allocate_many`] with the lock files in `dir`. Each uid is checked as [`allocate`]
/// checks it: not in use by any process before its lock is taken, nor after (the
/// second scan, after all the locks, closes the window between the first and the lock
/// for every one of them; one found in use then is given up and another taken).
pub fn allocate_many_in(
    dir: &Path,
    range: UidRange,
    n: usize,
) -> Result<Vec<Lease>, IdentityError> {
    let locks = lock_dir(dir)?;
    let subordinate = subordinate_ranges()?;
    let count = range.len();
    if count == 0 {
        return Err(IdentityError::Exhausted { range, count });
    }
    let start = start_offset() % count;
    let mut leases: Vec<Lease> = Vec::with_capacity(n);
    let mut next: u64 = 0;
    let mut in_use = ids_in_use()?;
    while leases.len() < n {
        let before = leases.len();
        while leases.len() < n && next < count {
            let offset = (start + next) % count;
            next += 1;
            // In range: offset < count = last - first + 1.
            let id = range.first + offset as u32;
            if in_use.contains(&id)
                || subordinate.iter().any(|r| r.contains(&u64::from(id)))
                || known_to_databases(id)
            {
                continue;
            }
            if let Some(lock) = try_lock(&locks, dir, id)? {
                leases.push(Lease { id, lock });
            }
        }
        if leases.len() == before {
            return Err(IdentityError::Exhausted { range, count });
        }
        // After the locks: a process that took one of these ids meanwhile loses it its
        // lease (dropped, unlocked), and the loop takes another.
        in_use = ids_in_use()?;
        leases.retain(|lease| !in_use.contains(&lease.id));
    }
    Ok(leases)
}

/// Opens (making it, mode 0700, if missing) the lock directory, refusing one that is
/// not a root-owned directory closed to group and others' writes, in a parent that is
/// the same: whoever could write in either could remove a held lock file (or the whole
/// directory) and let a second run take its uid. The directory is made and opened
/// through its parent's descriptor, so nothing can be swapped in between the checks.
/// (Not beneath `/run/fdbroker/`, which the broker's own user may be given to write.)
fn lock_dir(dir: &Path) -> Result<OwnedFd, IdentityError> {
    let io_err = |source: io::Error| IdentityError::LockDir {
        path: dir.to_owned(),
        source,
    };
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err(io_err(io::Error::from(io::ErrorKind::InvalidInput)));
    };
    let parent = nix::fcntl::open(
        parent,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
        Mode::empty(),
    )
    .map_err(|e| io_err(e.into()))?;
    only_root_writes(&parent, dir)?;
    match nix::sys::stat::mkdirat(parent.as_fd(), name, Mode::from_bits_truncate(0o700)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(io_err(e.into())),
    }
    let fd = nix::fcntl::openat(
        parent.as_fd(),
        name,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
        Mode::empty(),
    )
    .map_err(|e| io_err(e.into()))?;
    only_root_writes(&fd, dir)?;
    Ok(fd)
}

/// Refuses a directory that is not root's or that group or others may write (a sticky
/// directory such as `/tmp` included: a lock file's name is known in advance).
fn only_root_writes(fd: &OwnedFd, dir: &Path) -> Result<(), IdentityError> {
    let st = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| IdentityError::LockDir {
        path: dir.to_owned(),
        source: e.into(),
    })?;
    if st.st_uid != 0 || st.st_mode & 0o022 != 0 {
        return Err(IdentityError::UnsafeLockDir {
            path: dir.to_owned(),
        });
    }
    Ok(())
}

/// Locks `DIR/ID` without waiting; `None` if another open file description holds it.
fn try_lock(locks: &OwnedFd, dir: &Path, id: u32) -> Result<Option<File>, IdentityError> {
    let name = id.to_string();
    let path = || dir.join(&name);
    let fd = nix::fcntl::openat(
        locks.as_fd(),
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| IdentityError::Lock {
        path: path(),
        source: e.into(),
    })?;
    // The whole file (from 0, length 0 = to the end), for writing: exclusive.
    let whole = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        // Must be 0 for an open file description lock.
        l_pid: 0,
    };
    match nix::fcntl::fcntl(fd.as_fd(), FcntlArg::F_OFD_SETLK(&whole)) {
        Ok(_) => Ok(Some(File::from(fd))),
        Err(Errno::EAGAIN | Errno::EACCES) => Ok(None),
        Err(e) => Err(IdentityError::Lock {
            path: path(),
            source: e.into(),
        }),
    }
}

/// The ranges of `/etc/subuid` and `/etc/subgid` (`NAME:FIRST:COUNT` lines, as
/// `newuidmap` reads them; other lines are skipped, as it skips them). A missing file
/// holds none.
fn subordinate_ranges() -> Result<Vec<std::ops::Range<u64>>, IdentityError> {
    let mut ranges = Vec::new();
    for path in ["/etc/subuid", "/etc/subgid"] {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(IdentityError::Subordinate { path, source }),
        };
        ranges.extend(text.lines().filter_map(subordinate_range));
    }
    Ok(ranges)
}

/// One `NAME:FIRST:COUNT` line's ids.
fn subordinate_range(line: &str) -> Option<std::ops::Range<u64>> {
    let mut fields = line.trim().split(':');
    let (_name, first, count) = (fields.next()?, fields.next()?, fields.next()?);
    let first: u64 = first.parse().ok()?;
    let count: u64 = count.parse().ok()?;
    Some(first..first.saturating_add(count))
}

/// Whether the user or group database names this number (as a uid or a gid): such an
/// id belongs to someone, even if nothing of theirs runs now. A failed lookup counts as
/// known.
fn known_to_databases(id: u32) -> bool {
    !matches!(User::from_uid(Uid::from_raw(id)), Ok(None))
        || !matches!(Group::from_gid(Gid::from_raw(id)), Ok(None))
}

/// Every uid, gid and supplementary group of every thread in `/proc` (credentials are
/// per thread: one thread may `setresuid` alone). A process or thread that exits while
/// it is read is skipped; one that cannot be read for another reason is an error (its
/// ids are unknown, so no candidate could be proved free).
fn ids_in_use() -> Result<HashSet<u32>, IdentityError> {
    let mut ids = HashSet::new();
    for process in numbered(Path::new("/proc"))? {
        let Some(threads) = gone_is_none(numbered(&process.join("task")))? else {
            continue;
        };
        for thread in threads {
            if let Some(status) = gone_is_none(
                std::fs::read_to_string(thread.join("status")).map_err(IdentityError::Proc),
            )? {
                ids.extend(status_ids(&status));
            }
        }
    }
    Ok(ids)
}

/// The entries of `dir` whose names are numbers (processes, threads).
fn numbered(dir: &Path) -> Result<Vec<PathBuf>, IdentityError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(IdentityError::Proc)? {
        let entry = entry.map_err(IdentityError::Proc)?;
        let name = entry.file_name();
        let name = name.as_encoded_bytes();
        if !name.is_empty() && name.iter().all(u8::is_ascii_digit) {
            found.push(entry.path());
        }
    }
    Ok(found)
}

/// `None` for a process or thread that exited meanwhile (`ENOENT`, `ESRCH`).
fn gone_is_none<T>(r: Result<T, IdentityError>) -> Result<Option<T>, IdentityError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(IdentityError::Proc(e))
            if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The ids on the `Uid:`, `Gid:` and `Groups:` lines of a `/proc/PID/status`.
fn status_ids(status: &str) -> impl Iterator<Item = u32> + '_ {
    status
        .lines()
        .filter_map(|l| {
            l.strip_prefix("Uid:")
                .or_else(|| l.strip_prefix("Gid:"))
                .or_else(|| l.strip_prefix("Groups:"))
        })
        .flat_map(str::split_whitespace)
        .filter_map(|v| v.parse().ok())
}

/// A starting point that differs between runs started at once: the pid and the clock.
fn start_offset() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mixed = nanos ^ (u64::from(std::process::id()) << 32);
    // A multiplicative hash spreads neighbouring pids and times over the range.
    mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A fresh parent for a lock directory: root's, mode 0755.
    fn temp_locks(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("fdbroker-uid-locks-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    #[test]
    fn two_leases_differ_and_a_dropped_one_is_free_again() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("needs root (the lock directory must be root's); skipping");
            return;
        }
        let dir = temp_locks("two").join("uids");
        let range = UidRange {
            first: 0x7100_0000,
            last: 0x7100_0001,
        };
        let a = allocate_in(&dir, range).expect("a first uid");
        let b = allocate_in(&dir, range).expect("a second uid");
        assert_ne!(a.uid(), b.uid());
        assert!(range.contains(a.uid()) && range.contains(b.uid()));
        assert_eq!(a.gid(), a.uid());
        let e = allocate_in(&dir, range).expect_err("the range is full");
        assert!(
            matches!(e, IdentityError::Exhausted { count: 2, .. }),
            "{e}"
        );
        let freed = a.uid();
        drop(a);
        let c = allocate_in(&dir, range).expect("the freed uid");
        assert_eq!(c.uid(), freed);
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    }

    #[test]
    fn many_leases_at_once_are_distinct_and_never_more_than_the_range() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("needs root (the lock directory must be root's); skipping");
            return;
        }
        let dir = temp_locks("many").join("uids");
        let range = UidRange {
            first: 0x7100_0010,
            last: 0x7100_0013,
        };
        let held = allocate_in(&dir, range).expect("one held already");
        let three = allocate_many_in(&dir, range, 3).expect("the other three");
        let mut ids: Vec<u32> = three.iter().map(Lease::uid).collect();
        ids.push(held.uid());
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 4, "{ids:?}");
        assert!(ids.iter().all(|&id| range.contains(id)));
        let e = allocate_many_in(&dir, range, 1).expect_err("the range is full");
        assert!(matches!(e, IdentityError::Exhausted { .. }), "{e}");
        drop(three);
        let e = allocate_many_in(&dir, range, 4).expect_err("only three are free");
        assert!(matches!(e, IdentityError::Exhausted { .. }), "{e}");
        let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    }

    #[test]
    fn ids_of_running_processes_and_known_users_are_never_taken() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("needs root; skipping");
            return;
        }
        let dir = temp_locks("used").join("uids");
        // This process's own uid (0) and root's group are in use and known.
        let e = allocate_in(&dir, UidRange { first: 0, last: 0 }).expect_err("root");
        assert!(matches!(e, IdentityError::Exhausted { .. }), "{e}");
        assert!(known_to_databases(0));
        // An empty range (load refuses it; the API does not panic on it).
        let empty = UidRange { first: 5, last: 4 };
        let e = allocate_in(&dir, empty).expect_err("empty");
        assert!(
            matches!(e, IdentityError::Exhausted { count: 0, .. }),
            "{e}"
        );
        let status = "Name:\tx\nUid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\nGroups:\t9 10\n";
        let ids: Vec<u32> = status_ids(status).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(
            subordinate_range("alice:100000:65536"),
            Some(100000..165536)
        );
        assert_eq!(subordinate_range("# comment"), None);
        assert_eq!(subordinate_range("bob:x:1"), None);
        let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    }

    #[test]
    fn a_lock_directory_others_may_write_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("needs root; skipping");
            return;
        }
        let parent = temp_locks("unsafe");
        let dir = parent.join("uids");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = allocate_in(&dir, UidRange::DEFAULT).expect_err("world-writable");
        assert!(matches!(e, IdentityError::UnsafeLockDir { .. }), "{e}");
        // A safe directory in a parent others may write (sticky or not) is refused too.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let e = allocate_in(&dir, UidRange::DEFAULT).expect_err("parent world-writable");
        assert!(matches!(e, IdentityError::UnsafeLockDir { .. }), "{e}");
        // Not root's.
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
        let e = allocate_in(&dir, UidRange::DEFAULT).expect_err("not root's");
        assert!(matches!(e, IdentityError::UnsafeLockDir { .. }), "{e}");
        let _ = std::fs::remove_dir_all(parent);
    }
}
