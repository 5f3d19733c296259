//! The policy's root directories, held open.
//!
//! Every allowed open happens *beneath* one of these descriptors, so what a worker can
//! reach is fixed when the policy loads, not re-derived from strings per request.
//!
//! A root is only as safe as the path to it. If anyone but root could rename or
//! replace a directory above it, they could point the root at `/` before the next
//! start or reload, and every rule (and every deny carve-out, matched on the path text)
//! would apply to the wrong tree. So a root is opened by walking its path from `/`
//! one component at a time, never following anything the walk has not checked:
//! every directory passed through must be owned by root and writable by no one else
//! (unless sticky, like `/tmp`, where others cannot rename root's entries), and a
//! symbolic link is followed only if root owns it. The root itself may belong to
//! anyone: what lies beneath it is the workers' side anyway. This is OpenSSH's
//! `StrictModes` idea, applied to the broker's own view of the filesystem.

use fdbroker_policy::{Policy, RootId};
use nix::errno::Errno;
use nix::fcntl::{OFlag, open, openat, readlinkat};
use nix::sys::stat::{Mode, SFlag, fstat};
use nix::sys::statfs::{FUSE_SUPER_MAGIC, fstatfs};
use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Symbolic links followed while opening one root, as the kernel's own limit.
const MAX_LINKS: usize = 40;

/// Why a root is not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RootError {
    #[error("{}", .0.desc())]
    Open(Errno),
    #[error(
        "{}: {why}, so someone other than root could redirect this root; refusing it",
        path.display()
    )]
    Untrusted { path: PathBuf, why: &'static str },
    #[error(
        "{}: a symbolic link on the way to a learning scope; name the scope by its real path",
        path.display()
    )]
    LearnLink { path: PathBuf },
}

impl RootError {
    /// What a request under this root fails with.
    pub fn errno(&self) -> Errno {
        match self {
            RootError::Open(e) => *e,
            RootError::Untrusted { .. } | RootError::LearnLink { .. } => Errno::EACCES,
        }
    }
}

impl From<Errno> for RootError {
    fn from(e: Errno) -> RootError {
        RootError::Open(e)
    }
}

/// One descriptor per [`Policy::roots`] entry, or why opening it failed.
#[derive(Debug)]
pub struct Roots {
    dirs: Vec<(PathBuf, Result<OwnedFd, RootError>)>,
}

impl Roots {
    /// Open every root of `policy`. A root that cannot be opened is not fatal (the
    /// operator may create it later and reload); requests under it fail with the
    /// errno recorded here, and [`Roots::problems`] lists them for the log.
    pub fn open(policy: &Policy) -> Roots {
        // A learning scope grants any access beneath it while deny rules are matched on
        // its text: it must be the directory its text names, so no link is followed on
        // the way to it (`/proc/self/root` would be `/`, a link would put the base's
        // deny rules under another name).
        let learning: Vec<RootId> = policy
            .rules()
            .iter()
            .filter(|r| r.learning)
            .filter_map(|r| r.root)
            .collect();
        Roots {
            dirs: policy
                .roots()
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let strict = learning.contains(&RootId(i));
                    (p.clone(), open_root_with(p, !strict))
                })
                .collect(),
        }
    }

    /// The descriptor for `id`, or why there is none.
    pub fn get(&self, id: RootId) -> Result<BorrowedFd<'_>, Errno> {
        match self.dirs.get(id.0) {
            Some((_, Ok(fd))) => Ok(fd.as_fd()),
            Some((_, Err(e))) => Err(e.errno()),
            None => Err(Errno::ENOENT),
        }
    }

    /// Roots that could not be opened.
    pub fn problems(&self) -> impl Iterator<Item = (&Path, &RootError)> {
        self.dirs
            .iter()
            .filter_map(|(p, r)| r.as_ref().err().map(|e| (p.as_path(), e)))
    }

    /// Every root's path and, if it is open, its descriptor (for Landlock rules made
    /// from the very directories served, not from the path again).
    pub fn iter(&self) -> impl Iterator<Item = (&Path, Option<BorrowedFd<'_>>)> {
        self.dirs
            .iter()
            .map(|(p, r)| (p.as_path(), r.as_ref().ok().map(AsFd::as_fd)))
    }

    pub fn len(&self) -> usize {
        self.dirs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }
}

/// Open `path` (absolute) as `O_PATH | O_DIRECTORY`, walking it as the module
/// documentation says.
pub fn open_root(path: &Path) -> Result<OwnedFd, RootError> {
    open_root_with(path, true)
}

/// [`open_root`], refusing every symbolic link on the way unless `follow` (a learning
/// scope's root).
pub fn open_root_with(path: &Path, follow: bool) -> Result<OwnedFd, RootError> {
    let mut pending: VecDeque<OsString> = VecDeque::new();
    queue(&mut pending, path)?;
    let mut at = PathBuf::from("/");
    let mut dir = open_dir_at(None, OsStr::new("/"))?;
    trusted(&dir, &at)?;
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            dir = open_dir_at(Some(&dir), &name)?;
            at.pop();
            trusted(&dir, &at)?;
            continue;
        }
        let next = openat(
            &dir,
            name.as_os_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let st = fstat(&next)?;
        let here = at.join(&name);
        match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFLNK => {
                if !follow {
                    return Err(RootError::LearnLink { path: here });
                }
                if st.st_uid != 0 && st.st_uid != nix::unistd::geteuid().as_raw() {
                    return Err(RootError::Untrusted {
                        path: here,
                        why: "a symbolic link on the way is not owned by root",
                    });
                }
                // Where hard links to others' files are allowed (protected_hardlinks=0),
                // root's link could have been linked here by anyone.
                if st.st_nlink > 1 {
                    return Err(RootError::Untrusted {
                        path: here,
                        why: "a symbolic link on the way has other names (hard links)",
                    });
                }
                links += 1;
                if links > MAX_LINKS {
                    return Err(RootError::Open(Errno::ELOOP));
                }
                // Read from the link just checked, not by name again.
                let target = readlinkat(&next, OsStr::new(""))?;
                let target = Path::new(&target);
                let mut rest = VecDeque::new();
                queue(&mut rest, target)?;
                rest.extend(pending.drain(..));
                pending = rest;
                if target.is_absolute() {
                    dir = open_dir_at(None, OsStr::new("/"))?;
                    at = PathBuf::from("/");
                }
            }
            SFlag::S_IFDIR => {
                // The root itself may be anyone's; every directory above it is root's.
                if !pending.is_empty() {
                    trusted(&next, &here)?;
                }
                dir = next;
                at = here;
            }
            _ => return Err(RootError::Open(Errno::ENOTDIR)),
        }
    }
    // Reopened as a directory, so a root is always something `openat2` can start from.
    Ok(open_dir_at(Some(&dir), OsStr::new("."))?)
}

/// Append `path`'s components (`.` dropped, `..` kept) to `pending`.
fn queue(pending: &mut VecDeque<OsString>, path: &Path) -> Result<(), RootError> {
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => pending.push_back(OsString::from("..")),
            Component::Normal(n) => pending.push_back(n.to_owned()),
            Component::Prefix(_) => return Err(RootError::Open(Errno::EINVAL)),
        }
    }
    if path.as_os_str().as_bytes().first() != Some(&b'/') && pending.is_empty() {
        return Err(RootError::Open(Errno::ENOENT));
    }
    Ok(())
}

fn open_dir_at(dir: Option<&OwnedFd>, name: &OsStr) -> Result<OwnedFd, Errno> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match dir {
        Some(d) => openat(d, name, flags, Mode::empty()),
        None => open(name, flags, Mode::empty()),
    }
}

/// May only root change what `path` (the directory `dir`) contains?
fn trusted(dir: &OwnedFd, path: &Path) -> Result<(), RootError> {
    let untrusted = |why| {
        Err(RootError::Untrusted {
            path: path.to_owned(),
            why,
        })
    };
    // A FUSE filesystem reports whatever owner and mode its server says, and a user
    // may mount one (user_allow_other) on a directory of theirs.
    if fstatfs(dir)?.filesystem_type() == FUSE_SUPER_MAGIC {
        return untrusted("a directory on the way is on a FUSE filesystem");
    }
    let st = fstat(dir)?;
    // Root, or the user the broker runs as (an embedded, unprivileged broker).
    if st.st_uid != 0 && st.st_uid != nix::unistd::geteuid().as_raw() {
        return untrusted("a directory on the way is not owned by root");
    }
    let sticky = st.st_mode & libc::S_ISVTX != 0;
    if st.st_mode & 0o022 != 0 && !sticky {
        return untrusted("a directory on the way is writable by its group or others");
    }
    Ok(())
}
