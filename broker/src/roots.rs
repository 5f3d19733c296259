//! The policy's root directories, held open.
//!
//! Every allowed open happens *beneath* one of these descriptors, so what a worker can
//! reach is fixed when the policy loads, not re-derived from strings per request. A
//! root is opened by its path once, following symlinks (the operator wrote it and the
//! path's ancestors are the operator's), with `O_PATH | O_DIRECTORY`.

use fdbroker_policy::{Policy, RootId};
use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// One descriptor per [`Policy::roots`] entry, or the errno opening it failed with.
#[derive(Debug)]
pub struct Roots {
    dirs: Vec<(PathBuf, Result<OwnedFd, Errno>)>,
}

impl Roots {
    /// Open every root of `policy`. A root that cannot be opened is not fatal (the
    /// operator may create it later and reload); requests under it fail with the
    /// errno recorded here, and [`Roots::problems`] lists them for the log.
    pub fn open(policy: &Policy) -> Roots {
        Roots {
            dirs: policy
                .roots()
                .iter()
                .map(|p| (p.clone(), open_root(p)))
                .collect(),
        }
    }

    /// The descriptor for `id`, or why there is none.
    pub fn get(&self, id: RootId) -> Result<BorrowedFd<'_>, Errno> {
        match self.dirs.get(id.0) {
            Some((_, Ok(fd))) => Ok(fd.as_fd()),
            Some((_, Err(e))) => Err(*e),
            None => Err(Errno::ENOENT),
        }
    }

    /// Roots that could not be opened.
    pub fn problems(&self) -> impl Iterator<Item = (&Path, Errno)> {
        self.dirs
            .iter()
            .filter_map(|(p, r)| r.as_ref().err().map(|e| (p.as_path(), *e)))
    }

    pub fn len(&self) -> usize {
        self.dirs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }
}

fn open_root(path: &Path) -> Result<OwnedFd, Errno> {
    open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}
