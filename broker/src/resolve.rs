//! Open one file beneath a root, and authorize the file that was opened.
//!
//! The policy has already matched the *string*; this module makes sure the *file*
//! is what the rule grants. `openat2(2)` with `RESOLVE_BENEATH` resolves the relative
//! path strictly inside the root descriptor (no `..` escape, no absolute symlink
//! jump), `RESOLVE_NO_SYMLINKS` (unless the rule allows symlinks beneath its root)
//! and `RESOLVE_NO_MAGICLINKS` close the `/proc/self/fd` family, and the flags
//! `O_NONBLOCK | O_NOCTTY | O_CLOEXEC` make a FIFO or terminal harmless to open.
//! Then `fstat(2)` on the descriptor decides by type and link count.

use fdbroker_policy::{RuleOptions, Symlinks};
use fdbroker_shared::wire::{
    Access, FileKind, FileMeta, OPEN_APPEND, OPEN_FLAGS_ALLOWED, OPEN_TRUNC, WireError,
};
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, fchmod, fstat};
use nix::unistd::ftruncate;
use std::os::fd::{BorrowedFd, OwnedFd};

/// `RESOLVE_BENEATH` fails with `EAGAIN` when a rename or mount raced the lookup;
/// a few retries make that invisible without letting a racing worker spin us.
const EAGAIN_RETRIES: usize = 8;

/// Why an allowed open did not produce a descriptor. Inside the policy the worker may
/// learn the real reason: the rule already lets it see this part of the filesystem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("{}", .0.desc())]
    Kernel(Errno),
    #[error("the path crosses a symbolic link, which the rule does not allow")]
    Symlink,
    #[error("the path resolves outside the rule's root")]
    Escape,
    #[error("the path crosses into another filesystem, which the rule does not allow")]
    CrossDevice,
    #[error("the lookup kept racing with renames; try again")]
    Raced,
    #[error("openat2 is unavailable; refusing to open without it")]
    Unsupported,
    #[error("is a directory")]
    IsDirectory,
    #[error("not a directory")]
    NotDirectory,
    #[error("is a {}, and the rule does not allow devices", .0.as_str())]
    Device(FileKind),
    #[error("has {0} hard links, and the rule does not allow hard-linked files")]
    Hardlinked(u64),
    #[error("open flags {0:#x} are not allowed")]
    BadFlags(u32),
    #[error("truncate and append need write or read-write access")]
    FlagsNeedWrite,
    #[error("the rule's root directory is unavailable: {}", .0.desc())]
    RootUnavailable(Errno),
    #[error("unknown file type {0:#o}")]
    UnknownType(u32),
}

impl OpenError {
    /// The errno the worker sees.
    pub fn errno(&self) -> Errno {
        match self {
            OpenError::Kernel(e) | OpenError::RootUnavailable(e) => *e,
            OpenError::Symlink
            | OpenError::Escape
            | OpenError::CrossDevice
            | OpenError::Unsupported
            | OpenError::Device(_)
            | OpenError::Hardlinked(_)
            | OpenError::UnknownType(_) => Errno::EACCES,
            OpenError::Raced => Errno::EAGAIN,
            OpenError::IsDirectory => Errno::EISDIR,
            OpenError::NotDirectory => Errno::ENOTDIR,
            OpenError::BadFlags(_) | OpenError::FlagsNeedWrite => Errno::EINVAL,
        }
    }

    pub fn to_wire(&self) -> WireError {
        WireError::new(self.errno() as i32, self.to_string())
    }
}

/// Check the extra flags a request carries before any policy work: only truncate and
/// append exist, and only for writes (`O_RDONLY | O_TRUNC` truncates on Linux).
pub fn check_flags(access: Access, flags: u32) -> Result<OFlag, OpenError> {
    if flags & !OPEN_FLAGS_ALLOWED != 0 {
        return Err(OpenError::BadFlags(flags & !OPEN_FLAGS_ALLOWED));
    }
    if flags != 0 && !matches!(access, Access::Write | Access::ReadWrite) {
        return Err(OpenError::FlagsNeedWrite);
    }
    let mut extra = OFlag::empty();
    if flags & OPEN_TRUNC != 0 {
        extra |= OFlag::O_TRUNC;
    }
    if flags & OPEN_APPEND != 0 {
        extra |= OFlag::O_APPEND;
    }
    Ok(extra)
}

/// Open `relative` beneath `root` for `access`, then authorize the result.
/// `relative` is empty for the root itself.
pub fn open_beneath(
    root: BorrowedFd<'_>,
    relative: &[u8],
    access: Access,
    extra: OFlag,
    rule: &RuleOptions,
) -> Result<(OwnedFd, FileMeta), OpenError> {
    // `O_TRUNC` acts inside open(2), before the descriptor can be checked: a planted
    // hard link, or any file the checks below refuse, would already be emptied. Open
    // without it and truncate only what was authorized.
    let truncate = extra.contains(OFlag::O_TRUNC);
    let mut flags = OFlag::from_bits_truncate(access.access_mode())
        | OFlag::O_CLOEXEC
        | OFlag::O_NOCTTY
        | OFlag::O_NONBLOCK
        | extra.difference(OFlag::O_TRUNC);
    match access {
        Access::Directory => flags |= OFlag::O_DIRECTORY,
        Access::Create => flags |= OFlag::O_CREAT | OFlag::O_EXCL,
        _ => {}
    }
    let mut resolve = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS;
    if rule.symlinks == Symlinks::None {
        resolve |= ResolveFlag::RESOLVE_NO_SYMLINKS;
    }
    if rule.same_filesystem {
        resolve |= ResolveFlag::RESOLVE_NO_XDEV;
    }
    let mode = if access == Access::Create {
        rule.create_mode & 0o777
    } else {
        0
    };
    let how = || {
        OpenHow::new()
            .flags(flags)
            .mode(Mode::from_bits_truncate(mode))
            .resolve(resolve)
    };
    let path: &[u8] = if relative.is_empty() { b"." } else { relative };

    let fd = open_retrying(|| openat2(root, path, how()), rule)?;
    let st = fstat(&fd).map_err(OpenError::Kernel)?;
    let mut meta = meta_of(&st)?;
    authorize(&meta, access, rule)?;
    // The kernel ignores O_TRUNC on FIFOs, terminals and devices; so does this.
    if truncate && meta.kind == FileKind::Regular {
        ftruncate(&fd, 0).map_err(OpenError::Kernel)?;
        meta = meta_of(&fstat(&fd).map_err(OpenError::Kernel)?)?;
    }
    if access == Access::Create {
        // The umask may have narrowed the mode; created files get exactly the rule's.
        fchmod(&fd, Mode::from_bits_truncate(mode)).map_err(OpenError::Kernel)?;
    }
    Ok((fd, meta))
}

fn open_retrying(
    mut attempt: impl FnMut() -> nix::Result<OwnedFd>,
    rule: &RuleOptions,
) -> Result<OwnedFd, OpenError> {
    for _ in 0..EAGAIN_RETRIES {
        match attempt() {
            Ok(fd) => return Ok(fd),
            Err(Errno::EAGAIN) => continue,
            Err(Errno::ELOOP) if rule.symlinks == Symlinks::None => {
                return Err(OpenError::Symlink);
            }
            Err(Errno::EXDEV) if rule.same_filesystem => return Err(OpenError::CrossDevice),
            Err(Errno::EXDEV) => return Err(OpenError::Escape),
            // Fail closed where openat2 itself is missing or filtered.
            Err(Errno::ENOSYS) => return Err(OpenError::Unsupported),
            Err(e) => return Err(OpenError::Kernel(e)),
        }
    }
    Err(OpenError::Raced)
}

/// Refuse what the rule does not grant by *type*: the access said what the caller
/// wanted, the descriptor says what it got.
fn authorize(meta: &FileMeta, access: Access, rule: &RuleOptions) -> Result<(), OpenError> {
    match (meta.kind, access) {
        (FileKind::Directory, Access::Directory) => Ok(()),
        (_, Access::Directory) => Err(OpenError::NotDirectory),
        (FileKind::Directory, _) => Err(OpenError::IsDirectory),
        (FileKind::Regular, _) if meta.nlink > 1 && !rule.hardlinks && access != Access::Create => {
            Err(OpenError::Hardlinked(meta.nlink))
        }
        (FileKind::Regular, _) => Ok(()),
        (kind, _) if !rule.devices => Err(OpenError::Device(kind)),
        _ => Ok(()),
    }
}

fn meta_of(st: &nix::sys::stat::FileStat) -> Result<FileMeta, OpenError> {
    let mode = st.st_mode;
    let kind = FileKind::from_mode(mode).ok_or(OpenError::UnknownType(mode))?;
    Ok(FileMeta {
        kind,
        size: st.st_size.max(0) as u64,
        dev: st.st_dev,
        ino: st.st_ino,
        mode,
        nlink: st.st_nlink,
        mtime_sec: st.st_mtime,
        mtime_nsec: st.st_mtime_nsec.clamp(0, 999_999_999) as u32,
    })
}
