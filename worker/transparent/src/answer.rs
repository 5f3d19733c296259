//! Answering one notification: through the broker over the supervisor's own connection,
//! or by letting the kernel run the call as the program made it (see "What it answers,
//! and how" in the crate documentation).

use crate::call::{Call, Change, decode};
use crate::cwd::{Process, WorkingDirectories, process_of};
use crate::listing::StandIns;
use crate::memory::{absolute, host_tid, read_memory, read_path, write_memory};
use crate::scratch::{Scratch, Target};
use crate::stat::{stat_bytes, statx_bytes};
use crate::{sys, uapi};
use fdbroker_policy::{ClientId, Decision, Denial, Policy};
use fdbroker_shared::Channel;
use fdbroker_shared::wire::{Access, StatMeta};
use fdbroker_worker::Client;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// The answer to one notification.
enum Answer {
    /// Let the kernel run the call under the program's sandbox.
    Continue,
    Error(i32),
    Value(i64),
    /// Install this descriptor in the program as the call's result.
    Fd {
        fd: OwnedFd,
        cloexec: bool,
    },
    /// Write these bytes at this address in the program, then return `value`.
    Write {
        addr: u64,
        bytes: Vec<u8>,
        value: i64,
    },
}

/// How long the supervisor looks for the broker's answer before sleeping: the broker
/// takes ~10 µs for an open, while waking this process on an idle CPU costs ~20 µs on
/// a small VM (see `Client::set_spin`).
const REPLY_SPIN: std::time::Duration = std::time::Duration::from_micros(50);

/// The supervisor's answering side: the listener, its broker connection, and the copy
/// of the policy that tells paths no rule covers from the rest.
///
/// Shared by the answering threads (`Arc`): each receives a notification and answers it
/// on its own, so calls of several program threads are answered at once, their broker
/// requests in flight together on the one pipelined connection ([`Client`] matches
/// replies to requests by id). Nothing here is per call but the answer: the stand-ins
/// lock themselves, the connection is made once.
pub struct Supervisor {
    listener: OwnedFd,
    /// The connection, until the first call that needs it greets the broker over it.
    connection: Mutex<Option<OwnedFd>>,
    broker: OnceLock<Client>,
    policy: Policy,
    client: ClientId,
    /// Stand-ins for directories the broker lists itself (`listing.rs`).
    stand_ins: StandIns,
    /// The working directories kept for the program's processes (`cwd.rs`).
    cwds: WorkingDirectories,
    /// The scratch directory, where the program's own files may change mode and times.
    scratch: Scratch,
}

impl Supervisor {
    /// Answers on `listener`; greets the broker over `connection` on the first call that
    /// needs it.
    pub fn new(
        listener: OwnedFd,
        connection: OwnedFd,
        policy: Policy,
        client: ClientId,
        scratch: std::path::PathBuf,
    ) -> Self {
        Supervisor {
            listener,
            connection: Mutex::new(Some(connection)),
            broker: OnceLock::new(),
            policy,
            client,
            scratch: Scratch::open(&scratch),
            stand_ins: StandIns::new(scratch),
            cwds: WorkingDirectories::default(),
        }
    }

    /// Receives and answers notifications until the listener fails: on a thread of its
    /// own, as many as [`crate::supervisor`] starts. A notification gone stale (its
    /// thread was killed, `ENOENT`) or a receive interrupted by a signal is skipped; any
    /// other error (the listener is unusable) ends the loop, never spins on it.
    pub fn answer_forever(&self) {
        loop {
            match sys::notif_recv(self.listener.as_fd()) {
                Ok(n) => {
                    let answer = self.decide(&n);
                    self.respond(n.id, n.pid, answer);
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINTR)) => {}
                Err(_) => return,
            }
        }
    }

    /// The broker connection, greeted on first use (by whichever thread needs it first;
    /// the others wait for that greeting, then share the connection).
    fn broker(&self) -> io::Result<&Client> {
        if let Some(client) = self.broker.get() {
            return Ok(client);
        }
        let mut connection = self.connection.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = self.broker.get() {
            return Ok(client);
        }
        let fd = connection
            .take()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?;
        let client = Client::over(Channel::wrap(fd))?;
        // The program waits for every answer: see `Client::set_spin`.
        if Channel::spinning_pays() {
            client.set_spin(REPLY_SPIN);
        }
        Ok(self.broker.get_or_init(|| client))
    }

    fn decide(&self, n: &uapi::Notif) -> Answer {
        let tid = n.pid as i32;
        let Some(call) = decode(tid, &n.data) else {
            return Answer::Continue;
        };
        match call {
            Call::Getcwd { buf, size } => return self.getcwd(n, tid, buf, size),
            Call::Fchdir { fd } => return self.fchdir(n, tid, fd),
            // Never left to the kernel: its ordinary filter no longer refuses these.
            Call::Metadata {
                dirfd,
                path,
                flags,
                change,
            } => return self.metadata(n, tid, dirfd, path, flags, change),
            _ => {}
        }
        let (dirfd, path_addr) = call.path();
        let raw = match read_path(tid, path_addr) {
            Ok(p) => p,
            Err(e) => return Answer::Error(e),
        };
        if raw.is_empty() {
            return Answer::Continue;
        }
        // The thread is still blocked in this call, so its tid still names it.
        if !self.valid(n.id) {
            return Answer::Continue;
        }
        // The kept working directory, where a relative path starts from it. Looking
        // the process up costs a few reads of /proc: done only where one may be kept.
        let from_cwd = dirfd == libc::AT_FDCWD && raw.first() != Some(&b'/');
        let process = if matches!(call, Call::Chdir { .. }) || (from_cwd && !self.cwds.is_empty()) {
            self.process(tid)
        } else {
            None
        };
        let kept = match process {
            Some((p, ppid)) if from_cwd => self.cwds.get(p, ppid),
            _ => None,
        };
        let stand_ins = &self.stand_ins;
        let Some(path) = absolute(tid, dirfd, &raw, kept.as_deref(), &|base| {
            stand_ins.real_base(base)
        }) else {
            return Answer::Continue;
        };
        // A stand-in named by its absolute path is its real directory too.
        let path = self.stand_ins.real_base(&path).unwrap_or(path);
        // Only paths a rule covers go to the broker; elsewhere the sandbox decides.
        if let Decision::Deny(Denial::NoRule | Denial::InvalidPath(_)) =
            self.policy.decide(self.client, &path, Access::Read)
        {
            if let Some(answer) =
                self.above_a_served_directory(&call, tid, dirfd, &raw, kept.as_deref(), &path)
            {
                return answer;
            }
            if kept.is_some() {
                // The kernel would resolve this relative path against the real working
                // directory, another one than the program's.
                return Answer::Error(libc::EACCES);
            }
            if let (Call::Chdir { .. }, Some((p, _))) = (&call, process) {
                // A real change of directory, by the kernel: the kept one ends.
                self.cwds.clear(p);
            }
            return Answer::Continue;
        }
        let path = Path::new(OsStr::from_bytes(&path));
        let (policy, client, stand_ins) = (&self.policy, self.client, &self.stand_ins);
        let broker = match self.broker() {
            Ok(broker) => broker,
            Err(e) => return Answer::Error(errno_of(&e)),
        };
        match call {
            Call::Open { flags, .. } => open(broker, stand_ins, path, flags),
            Call::Stat {
                flags, buf, statx, ..
            } => {
                // Describing a link is not following it: `lstat` is answered about the
                // link itself wherever the rule does not follow links.
                match describe(broker, path, flags & libc::AT_SYMLINK_NOFOLLOW == 0) {
                    Ok(meta) => stat_answer(buf, statx, meta.raw()),
                    Err(e) => Answer::Error(errno_of(&e)),
                }
            }
            // A link's own target; anything else is not a link (`EINVAL`), and so is a
            // link the rule follows (`symlinks = "beneath"`: the broker describes its
            // target, so `readlink -f` ends at the link's own path).
            Call::Readlink { buf, size, .. } => match broker.symlink_metadata(path) {
                Ok((_, Some(mut target))) => {
                    if size == 0 {
                        return Answer::Error(libc::EINVAL);
                    }
                    target.truncate(usize::try_from(size).unwrap_or(usize::MAX));
                    let value = target.len() as i64;
                    Answer::Write {
                        addr: buf,
                        bytes: target,
                        value,
                    }
                }
                Ok((_, None)) => Answer::Error(libc::EINVAL),
                Err(e) => Answer::Error(errno_of(&e)),
            },
            Call::Xattr { list, follow, .. } => match describe(broker, path, follow) {
                Ok(_) => no_xattrs(list),
                Err(e) => Answer::Error(errno_of(&e)),
            },
            Call::Statfs { buf, .. } => match filesystem_of(broker, path) {
                Ok(bytes) => Answer::Write {
                    addr: buf,
                    bytes,
                    value: 0,
                },
                Err(e) => Answer::Error(errno_of(&e)),
            },
            // The kernel's "no more watches" (`tail -f` then polls): the supervisor
            // cannot add a watch to the program's inotify instance.
            Call::Watch { .. } => match broker.metadata(path) {
                Ok(_) => Answer::Error(libc::ENOSPC),
                Err(e) => Answer::Error(errno_of(&e)),
            },
            Call::Chdir { .. } => match broker.metadata(path) {
                // A listed carve-out is described, never entered (as the kernel refuses
                // an unreadable directory).
                Ok(meta)
                    if meta.is_dir()
                        && matches!(
                            policy.decide(client, path.as_os_str().as_bytes(), Access::Read),
                            Decision::Deny(Denial::DeniedBy(_))
                        ) =>
                {
                    Answer::Error(libc::EACCES)
                }
                Ok(meta) if meta.is_dir() => match process {
                    Some((p, _)) => {
                        let kept = path.as_os_str().as_bytes().to_vec();
                        self.cwds
                            .set(p, kept)
                            .map_or_else(Answer::Error, |()| Answer::Value(0))
                    }
                    None => Answer::Error(libc::ESRCH),
                },
                Ok(_) => Answer::Error(libc::ENOTDIR),
                Err(e) => Answer::Error(errno_of(&e)),
            },
            // Answered before a path is read.
            Call::Fchdir { .. } | Call::Getcwd { .. } | Call::Metadata { .. } => {
                Answer::Error(libc::EPERM)
            }
            Call::Access { mode, .. } => match broker.metadata(path) {
                Err(e) => Answer::Error(errno_of(&e)),
                Ok(meta) => {
                    let dir = meta.is_dir();
                    if mode & libc::W_OK != 0 {
                        match policy.decide(client, path.as_os_str().as_bytes(), Access::Write) {
                            Decision::Allow(_) if !dir => {}
                            _ => return Answer::Error(libc::EACCES),
                        }
                    }
                    if mode & libc::X_OK != 0 && !dir {
                        return Answer::Error(libc::EACCES);
                    }
                    Answer::Value(0)
                }
            },
        }
    }
}

impl Supervisor {
    /// A stat (or an extended-attribute read, answered as for a served path: none) of a
    /// path no rule covers that climbs out of a served directory with `..`
    /// (`ls -la DIR` asks for `DIR/..`; `..` from a kept working directory): the kernel
    /// would have to search the served directory, which the sandbox user may not, and
    /// answers `EACCES` where root gets the parent. Answered here by a stat of the
    /// lexically cleaned path, as this process (the sandbox user, like the program; a
    /// stat is not Landlock's to refuse): the program could stat that path itself, so
    /// nothing is described that the sandbox would not describe. Only where some
    /// directory the path passes before a `..` is one a rule covers (elsewhere the
    /// sandbox decides, as before), and never for what would show this process rather
    /// than the program: `/proc` by name, or through a link on the way (an ancestor
    /// that links to `/proc/self` or `/dev/fd`: no magic link is followed, and nothing
    /// on procfs is described). `None` leaves the call to the usual answer.
    ///
    /// The start directory is read from `/proc` once, and each directory before a `..`
    /// is decided once, only if the cleaned path is above it: a path of 2,000 `..`
    /// costs a walk, not 2,000 reads of `/proc`.
    fn above_a_served_directory(
        &self,
        call: &Call,
        tid: i32,
        dirfd: i32,
        raw: &[u8],
        kept: Option<&[u8]>,
        clean: &[u8],
    ) -> Option<Answer> {
        let nofollow = match *call {
            Call::Stat { flags, .. } => flags & libc::AT_SYMLINK_NOFOLLOW != 0,
            Call::Xattr { follow, .. } => !follow,
            _ => return None,
        };
        if clean == b"/proc" || clean.starts_with(b"/proc/") {
            return None;
        }
        let parts: Vec<&[u8]> = raw.split(|&b| b == b'/').collect();
        if !parts.iter().any(|p| *p == b"..") {
            return None;
        }
        // The last component decides whether a link is followed: the kernel follows
        // one before a trailing `/`, and `..` or `.` last is the directory it reached,
        // never a link (`lstat("DIR/..")` where the cleaned parent is a link describes
        // the directory it leads to).
        let nofollow = nofollow && !matches!(parts.last(), Some(&(b"" | b"." | b"..")));
        // The start directory, as `/proc` shows it (stand-ins mapped): nothing before
        // a first `..` is the working directory, or `dirfd`'s.
        let base = if raw.first() == Some(&b'/') {
            b"/".to_vec()
        } else {
            absolute(tid, dirfd, b".", kept, &|base| {
                self.stand_ins.real_base(base)
            })?
        };
        let joined = |at: &[&[u8]]| {
            let mut p = Vec::new();
            for c in at {
                p.push(b'/');
                p.extend_from_slice(c);
            }
            if p.is_empty() {
                p.push(b'/');
            }
            p
        };
        // The cleaned path is above the directory: a path that climbs out and then goes
        // down elsewhere (`DIR/../../dev/fd/3`) is not described here.
        let above = |dir: &[u8]| {
            clean == b"/" || (dir.starts_with(clean) && dir.get(clean.len()) == Some(&b'/'))
        };
        let mut at: Vec<&[u8]> = base
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        let mut decided = std::collections::HashSet::new();
        let mut climbs_out = false;
        for part in parts.iter().copied() {
            match part {
                b"" | b"." => {}
                b".." => {
                    if !climbs_out {
                        let dir = joined(&at);
                        if above(&dir) && decided.insert(dir.clone()) {
                            climbs_out = !matches!(
                                self.policy.decide(self.client, &dir, Access::Directory),
                                Decision::Deny(Denial::NoRule | Denial::InvalidPath(_))
                            );
                        }
                    }
                    at.pop();
                }
                p => at.push(p),
            }
        }
        // The walk ends where the caller's cleaning did (else the directory changed
        // under a racing thread, or the path names a stand-in): only then is it this.
        if !climbs_out || joined(&at) != clean {
            return None;
        }
        let st = match describe_unsupervised(clean, nofollow) {
            Ok(Some(st)) => st,
            Ok(None) => return None,
            Err(e) => return Some(Answer::Error(e as i32)),
        };
        Some(match *call {
            Call::Stat { buf, statx, .. } => {
                let file = fdbroker_shared::wire::FileMeta::of(&st)?;
                stat_answer(buf, statx, &fdbroker_shared::wire::StatMeta::of(&st, file))
            }
            // As for a served path (`ls -la`'s `..`).
            Call::Xattr { list, .. } => no_xattrs(list),
            _ => return None,
        })
    }

    /// The process of thread `tid` (of this pid namespace) and its parent, as `/proc`
    /// numbers them. Called only while the thread's notification is pending.
    fn process(&self, tid: i32) -> Option<(Process, i32)> {
        process_of(host_tid(tid)?)
    }

    /// `getcwd`: the kept working directory, or the kernel's where none is kept.
    fn getcwd(&self, n: &uapi::Notif, tid: i32, buf: u64, size: u64) -> Answer {
        if self.cwds.is_empty() || !self.valid(n.id) {
            return Answer::Continue;
        }
        let Some(kept) = self
            .process(tid)
            .and_then(|(p, ppid)| self.cwds.get(p, ppid))
        else {
            return Answer::Continue;
        };
        let mut bytes = kept;
        bytes.push(0);
        if (bytes.len() as u64) > size {
            return Answer::Error(libc::ERANGE);
        }
        let value = bytes.len() as i64;
        Answer::Write {
            addr: buf,
            bytes,
            value,
        }
    }

    /// A mode or time change (`scratch.rs`): the program's own scratch files alone,
    /// `EPERM` for everything else; never left to the kernel.
    fn metadata(
        &self,
        n: &uapi::Notif,
        tid: i32,
        dirfd: i32,
        path: u64,
        flags: i32,
        change: Change,
    ) -> Answer {
        let raw = if path == 0 {
            Vec::new()
        } else {
            match read_path(tid, path) {
                Ok(p) => p,
                Err(e) => return Answer::Error(e),
            }
        };
        // Times are read once, before the thread is looked at.
        let times = match change {
            Change::Times(0) | Change::Mode(_) => None,
            Change::Times(addr) => {
                let mut buf = [0u8; 32];
                match read_memory(tid, addr, &mut buf) {
                    Ok(32) => Some(timespecs(&buf)),
                    _ => return Answer::Error(libc::EFAULT),
                }
            }
        };
        if !self.valid(n.id) {
            return Answer::Error(libc::EPERM);
        }
        let Some(host) = host_tid(tid) else {
            return Answer::Error(libc::EPERM);
        };
        let target = if raw.is_empty() {
            if path != 0 && flags & libc::AT_EMPTY_PATH == 0 {
                return Answer::Error(libc::ENOENT);
            }
            Target::Fd {
                host_tid: host,
                fd: dirfd,
            }
        } else if let Some(fd) = own_descriptor(&raw) {
            // `/proc/self/fd/N`: the C library's way to change an `O_PATH` descriptor's
            // file (`fchmodat(AT_SYMLINK_NOFOLLOW)` before `fchmodat2`).
            Target::Fd { host_tid: host, fd }
        } else {
            let kept = if dirfd == libc::AT_FDCWD && raw.first() != Some(&b'/') {
                self.process(tid)
                    .and_then(|(p, ppid)| self.cwds.get(p, ppid))
            } else {
                None
            };
            match absolute(tid, dirfd, &raw, kept.as_deref(), &|_| None) {
                Some(p) => Target::Path(p),
                None => return Answer::Error(libc::EPERM),
            }
        };
        let done = match change {
            Change::Mode(mode) => self.scratch.chmod(&target, mode),
            Change::Times(_) => self.scratch.set_times(&target, times),
        };
        done.map_or_else(Answer::Error, |()| Answer::Value(0))
    }

    /// `fchdir`: into a served directory the descriptor names (one the broker passed,
    /// or a stand-in for one), kept; any other is the kernel's.
    fn fchdir(&self, n: &uapi::Notif, tid: i32, fd: i32) -> Answer {
        if fd < 0 || !self.valid(n.id) {
            return Answer::Continue;
        }
        let stand_ins = &self.stand_ins;
        // "." against the descriptor: its path, as /proc shows it, stand-ins mapped.
        let Some(path) = absolute(tid, fd, b".", None, &|base| stand_ins.real_base(base)) else {
            return Answer::Continue;
        };
        if let Decision::Deny(Denial::NoRule | Denial::InvalidPath(_)) =
            self.policy.decide(self.client, &path, Access::Read)
        {
            // A real change of directory, by the kernel: the kept one ends (even if the
            // new real directory is the one the record was made over).
            if !self.cwds.is_empty() {
                if let Some((p, _)) = self.process(tid) {
                    self.cwds.clear(p);
                }
            }
            return Answer::Continue;
        }
        let (Some((p, _)), Ok(broker)) = (self.process(tid), self.broker()) else {
            return Answer::Error(libc::EIO);
        };
        match broker.metadata(Path::new(OsStr::from_bytes(&path))) {
            Ok(meta) if meta.is_dir() => self
                .cwds
                .set(p, path)
                .map_or_else(Answer::Error, |()| Answer::Value(0)),
            Ok(_) => Answer::Error(libc::ENOTDIR),
            Err(e) => Answer::Error(errno_of(&e)),
        }
    }
}

/// `struct statfs` of the filesystem `path` is on, from a descriptor the broker passes
/// for it (a file for `read`, a directory for `directory`; never a stand-in, which is
/// on the scratch directory's filesystem), closed at once.
fn filesystem_of(broker: &Client, path: &Path) -> io::Result<Vec<u8>> {
    let file = match broker.open_with(path, Access::Read) {
        Err(e) if errno_of(&e) == libc::EISDIR => broker.open_with(path, Access::Directory)?,
        r => r?,
    };
    sys::fstatfs_bytes(file.as_fd())
}

/// An open of a directory: the broker's descriptor where it passes one, else (it would
/// show what the policy hides) a stand-in holding the broker's listing.
fn open_directory(broker: &Client, stand_ins: &StandIns, path: &Path) -> io::Result<File> {
    match broker.open_with(path, Access::Directory) {
        Err(e) if errno_of(&e) == libc::EACCES => {
            // Listed where `directory` is granted; refused (EACCES again) elsewhere.
            let entries = broker.read_dir(path).map_err(|_| e)?;
            stand_ins
                .make(path.as_os_str().as_bytes(), entries)
                .map(File::from)
        }
        r => r,
    }
}

/// The broker's description of `path`: of its target where `follow`, else of a link
/// itself where the rule does not follow links (describing a link is not following it).
fn describe(broker: &Client, path: &Path, follow: bool) -> io::Result<fdbroker_worker::Metadata> {
    if follow {
        broker.metadata(path)
    } else {
        broker.symlink_metadata(path).map(|(meta, _)| meta)
    }
}

/// A stat's answer: `meta` written at `buf` as the `struct statx` or `struct stat` the
/// call asked for.
fn stat_answer(buf: u64, statx: bool, meta: &StatMeta) -> Answer {
    Answer::Write {
        addr: buf,
        bytes: if statx {
            statx_bytes(meta)
        } else {
            stat_bytes(meta)
        },
        value: 0,
    }
}

/// Served paths show no extended attributes: none to read, an empty list.
fn no_xattrs(list: bool) -> Answer {
    if list {
        Answer::Value(0)
    } else {
        Answer::Error(libc::ENODATA)
    }
}

/// `struct stat` of the absolute path `path` as this process finds it (following its
/// last component unless `nofollow`), or `None` where that would describe this process
/// rather than the one asking: a magic link on the way (`/proc/self/fd/N`, `/dev/fd/N`,
/// `/dev/stdin`), which is not followed, or anything on procfs (`/proc/self` through a
/// link). An `O_PATH` descriptor: nothing is opened, a FIFO cannot block.
fn describe_unsupervised(path: &[u8], nofollow: bool) -> nix::Result<Option<libc::stat>> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
    let mut flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
    if nofollow {
        flags |= OFlag::O_NOFOLLOW;
    }
    let how = OpenHow::new()
        .flags(flags)
        .resolve(ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = match openat2(nix::fcntl::AT_FDCWD, OsStr::from_bytes(path), how) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ELOOP) => return Ok(None),
        Err(e) => return Err(e),
    };
    if nix::sys::statfs::fstatfs(&fd)?.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC {
        return Ok(None);
    }
    nix::sys::stat::fstat(&fd).map(Some)
}

/// An open, as the broker's access its flags mean.
fn open(broker: &Client, stand_ins: &StandIns, path: &Path, flags: i32) -> Answer {
    {
        let cloexec = flags & libc::O_CLOEXEC != 0;
        let mode = flags & libc::O_ACCMODE;
        let mut extra = 0;
        if flags & libc::O_TRUNC != 0 {
            extra |= fdbroker_shared::wire::OPEN_TRUNC;
        }
        if flags & libc::O_APPEND != 0 {
            extra |= fdbroker_shared::wire::OPEN_APPEND;
        }
        // `O_DIRECTORY` outside `O_PATH` (which drops the other flags) and `O_TMPFILE`
        // (which includes it): with `O_CREAT` the kernel's `EINVAL` (Linux 6.4), with a
        // write mode its `EISDIR` on a directory and `ENOTDIR` on anything else, never
        // a file opened (or truncated, or created) for writing.
        let tmpfile = flags & libc::O_TMPFILE == libc::O_TMPFILE;
        if flags & libc::O_DIRECTORY != 0 && flags & libc::O_PATH == 0 && !tmpfile {
            if flags & libc::O_CREAT != 0 {
                return Answer::Error(libc::EINVAL);
            }
            if mode != libc::O_RDONLY {
                return Answer::Error(
                    match describe(broker, path, flags & libc::O_NOFOLLOW == 0) {
                        Ok(meta) if meta.is_dir() => libc::EISDIR,
                        Ok(_) => libc::ENOTDIR,
                        Err(e) => errno_of(&e),
                    },
                );
            }
        }
        let result = if flags & libc::O_PATH != 0 || mode == libc::O_RDONLY {
            // `O_RDONLY|O_TRUNC` is a write; `O_RDONLY|O_CREAT` (`flock(1)`) of a file
            // that exists is a read, and creating one through it a write the read-only
            // open cannot carry (as the kernel refuses it in a directory the caller
            // cannot write); `O_EXCL` would always create.
            let creates = flags & libc::O_CREAT != 0 && flags & libc::O_PATH == 0;
            if flags & libc::O_TRUNC != 0 && flags & libc::O_PATH == 0 {
                return Answer::Error(libc::EACCES);
            }
            if creates && flags & libc::O_EXCL != 0 {
                return Answer::Error(match broker.metadata(path) {
                    Ok(_) => libc::EEXIST,
                    Err(_) => libc::EACCES,
                });
            }
            if flags & libc::O_DIRECTORY != 0 {
                open_directory(broker, stand_ins, path)
            } else {
                match broker.open_with(path, Access::Read) {
                    // A directory opened without O_DIRECTORY (fdopendir after open).
                    Err(e) if errno_of(&e) == libc::EISDIR && !creates => {
                        open_directory(broker, stand_ins, path)
                    }
                    Err(e) if creates && errno_of(&e) == libc::ENOENT => {
                        Err(io::Error::from_raw_os_error(libc::EACCES))
                    }
                    r => r,
                }
            }
        } else {
            let access = if mode == libc::O_RDWR {
                Access::ReadWrite
            } else {
                Access::Write
            };
            if flags & libc::O_CREAT != 0 && flags & libc::O_EXCL != 0 {
                broker
                    .open_detailed(path, Access::Create, 0)
                    .map(|o| o.file)
            } else {
                match broker.open_detailed(path, access, extra) {
                    Err(e) if flags & libc::O_CREAT != 0 && errno_of(&e) == libc::ENOENT => broker
                        .open_detailed(path, Access::Create, 0)
                        .map(|o| o.file),
                    r => r.map(|o| o.file),
                }
            }
        };
        match result {
            Ok(file) => {
                let fd = OwnedFd::from(file);
                if flags & libc::O_NONBLOCK != 0 {
                    // A status flag of the open file description the program shares.
                    let _ = nix::fcntl::fcntl(
                        fd.as_fd(),
                        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                    );
                }
                Answer::Fd { fd, cloexec }
            }
            // `O_NOFOLLOW` on a link is the kernel's `ELOOP` (`ENOTDIR` with
            // `O_DIRECTORY`; `grep -r` opens every entry so and skips links on it), where
            // the broker refuses to follow the link. Asked only then: a link the program
            // may `lstat` anyway.
            Err(e)
                if errno_of(&e) == libc::EACCES
                    && flags & libc::O_NOFOLLOW != 0
                    && flags & libc::O_PATH == 0
                    && matches!(broker.symlink_metadata(path), Ok((_, Some(_)))) =>
            {
                Answer::Error(if flags & libc::O_DIRECTORY != 0 {
                    libc::ENOTDIR
                } else {
                    libc::ELOOP
                })
            }
            Err(e) => Answer::Error(errno_of(&e)),
        }
    }
}

impl Supervisor {
    fn valid(&self, id: u64) -> bool {
        sys::notif_id_valid(self.listener.as_fd(), id)
    }

    fn respond(&self, id: u64, tid: u32, answer: Answer) {
        let mut resp = uapi::Resp {
            id,
            ..Default::default()
        };
        match answer {
            Answer::Continue => resp.flags = uapi::USER_NOTIF_FLAG_CONTINUE,
            Answer::Error(e) => resp.error = -e,
            Answer::Value(v) => resp.val = v,
            Answer::Fd { fd, cloexec } => {
                // No ID_VALID first: ADDFD finds the notification by its id and fails
                // (ENOENT) if the thread is gone; nothing is installed elsewhere.
                let add = uapi::AddFd {
                    id,
                    flags: uapi::ADDFD_FLAG_SEND,
                    srcfd: fd.as_raw_fd() as u32,
                    newfd: 0,
                    newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
                };
                // Installs the descriptor and answers with its number, atomically.
                match sys::notif_addfd(self.listener.as_fd(), add) {
                    Ok(()) => return,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return,
                    Err(_) => resp.error = -libc::EMFILE,
                }
            }
            Answer::Write { addr, bytes, value } => {
                if !self.valid(id) {
                    return;
                }
                if write_memory(tid as i32, addr, &bytes).is_err() {
                    resp.error = -libc::EFAULT;
                } else {
                    resp.val = value;
                }
            }
        }
        // SEND, like ADDFD, fails harmlessly for a notification that is gone.
        let _ = sys::notif_send(self.listener.as_fd(), resp);
    }
}

/// The errno for the program: the broker's own (a denial is `EACCES`, a missing file
/// `ENOENT`, ...), or `EIO` when the broker could not be asked at all.
fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error()
        .or_else(|| {
            e.get_ref()
                .and_then(|inner| inner.downcast_ref::<fdbroker_worker::BrokerError>())
                .map(|b| b.errno)
        })
        .filter(|&errno| errno > 0)
        .unwrap_or(libc::EIO)
}

/// Two `struct timespec`s (access, modification) as the program's memory holds them.
fn timespecs(buf: &[u8; 32]) -> [nix::sys::time::TimeSpec; 2] {
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&buf[i * 8..i * 8 + 8]);
        i64::from_ne_bytes(w)
    };
    let ts = |sec: i64, nsec: i64| {
        nix::sys::time::TimeSpec::from(libc::timespec {
            tv_sec: sec as _,
            tv_nsec: nsec as _,
        })
    };
    [ts(word(0), word(1)), ts(word(2), word(3))]
}

/// `N` of `/proc/self/fd/N` or `/proc/thread-self/fd/N`: the caller's own descriptor.
fn own_descriptor(path: &[u8]) -> Option<i32> {
    let n = path
        .strip_prefix(b"/proc/self/fd/")
        .or_else(|| path.strip_prefix(b"/proc/thread-self/fd/"))?;
    if n.is_empty() || !n.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(n).ok()?.parse().ok()
}
