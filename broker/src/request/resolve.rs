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
    Access, FileKind, FileMeta, LinkMeta, OPEN_APPEND, OPEN_FLAGS_ALLOWED, OPEN_TRUNC, StatMeta,
    WireError,
};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, fchmod, fstat, fstatat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, ftruncate, unlinkat};
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
    /// `audit_failure = "refuse"` and the request's audit line could not be written:
    /// nothing it would change (a truncate, a new file) is left changed.
    #[error(
        "refused: the broker cannot write its audit trail ({}), and grants nothing it \
         cannot record (audit_failure = \"refuse\"); try again later",
        .0.desc()
    )]
    AuditUnwritable(Errno),
    #[error(
        "the file's mode ({mode:04o}, owner {owner}, group {group}) would let uid {uid} \
         reopen the descriptor through /proc/self/fd for {wider}, which the grant does not \
         give; the rule's allow_reopen = true passes it anyway"
    )]
    WiderReopen {
        mode: u32,
        owner: u32,
        group: u32,
        uid: u32,
        wider: &'static str,
    },
}

impl OpenError {
    /// Whether this is the rule refusing what the path led to (a link it does not
    /// follow, a hard-linked file, a device, another filesystem, a wider reopen), which
    /// the worker sees as `EACCES` like a deny rule: counted for `fdbroker run`'s
    /// summary at exit as a refusal ([`crate::audit::refused`]).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            OpenError::Symlink
                | OpenError::Escape
                | OpenError::CrossDevice
                | OpenError::Device(_)
                | OpenError::Hardlinked(_)
                | OpenError::WiderReopen { .. }
        )
    }

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
            | OpenError::UnknownType(_)
            | OpenError::WiderReopen { .. } => Errno::EACCES,
            OpenError::Raced => Errno::EAGAIN,
            OpenError::AuditUnwritable(_) => Errno::EIO,
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

/// Who will hold a passed descriptor, as far as file permissions go: its uid, primary
/// gid and supplementary groups when it connected.
#[derive(Debug, Clone, Copy)]
pub struct Holder<'a> {
    pub uid: u32,
    pub gid: u32,
    pub groups: &'a [u32],
}

impl Holder<'_> {
    pub(crate) fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// Open `relative` beneath `root` for `access`, then authorize the result for
/// `holder`. `relative` is empty for the root itself.
pub fn open_beneath(
    root: BorrowedFd<'_>,
    relative: &[u8],
    access: Access,
    extra: OFlag,
    rule: &RuleOptions,
    holder: &Holder<'_>,
) -> Result<(OwnedFd, FileMeta), OpenError> {
    // `O_TRUNC` acts inside open(2), before the descriptor can be checked: a planted
    // hard link, or any file the checks below refuse, would already be emptied; and
    // before the request's audit line is written. Never passed: the caller truncates
    // what was authorized and recorded, with [`truncate`].
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
    let resolve = resolve_flags(rule);
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
    let meta = meta_of(&st)?;
    authorize(&meta, access, rule)?;
    if !rule.allow_reopen {
        no_wider_reopen(&fd, &st, access, holder)?;
    }
    if access == Access::Create {
        // The umask may have narrowed the mode; created files get exactly the rule's.
        // Before the owner changes: the broker keeps no CAP_FOWNER, so once the file is
        // someone else's it may no longer set the mode (create modes have no set-id
        // bits for the ownership change to clear).
        fchmod(&fd, Mode::from_bits_truncate(mode)).map_err(OpenError::Kernel)?;
        if rule.owner.is_some() || rule.group.is_some() {
            fchown(
                &fd,
                rule.owner.map(Uid::from_raw),
                rule.group.map(Gid::from_raw),
            )
            .map_err(OpenError::Kernel)?;
        }
    }
    Ok((fd, meta))
}

/// Truncate what [`open_beneath`] opened for a request with `OPEN_TRUNC`, once it is
/// authorized and (under `audit_failure = "refuse"`) its audit line is written; returns
/// the metadata after. The kernel ignores `O_TRUNC` on FIFOs, terminals and devices; so
/// does this.
pub fn truncate(fd: &OwnedFd, meta: FileMeta) -> Result<FileMeta, OpenError> {
    if meta.kind != FileKind::Regular {
        return Ok(meta);
    }
    ftruncate(fd, 0).map_err(OpenError::Kernel)?;
    meta_of(&fstat(fd).map_err(OpenError::Kernel)?)
}

/// Remove the file a create made at `relative` beneath `root`, for a request refused
/// after the fact (its audit line could not be written): the name is looked up beneath
/// its parent exactly as the open resolved it, and removed only while it is still the
/// file created (same device and inode), never whatever replaced it meanwhile.
/// `Ok(false)`: the name is gone or names another file, and nothing was removed.
pub fn undo_create(
    root: BorrowedFd<'_>,
    relative: &[u8],
    rule: &RuleOptions,
    created: &FileMeta,
) -> Result<bool, OpenError> {
    let (parent, name) = match relative.iter().rposition(|&b| b == b'/') {
        Some(i) => (&relative[..i], &relative[i + 1..]),
        None => (&b""[..], relative),
    };
    if name.is_empty() || name == b"." || name == b".." {
        return Ok(false);
    }
    let parent: &[u8] = if parent.is_empty() { b"." } else { parent };
    let how = || {
        OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(resolve_flags(rule))
    };
    let dir = open_retrying(|| openat2(root, parent, how()), rule)?;
    let st = match fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(false),
        Err(e) => return Err(OpenError::Kernel(e)),
    };
    if (st.st_dev, st.st_ino) != (created.dev, created.ino) {
        return Ok(false);
    }
    unlinkat(&dir, name, UnlinkatFlags::NoRemoveDir).map_err(OpenError::Kernel)?;
    Ok(true)
}

/// The `openat2` resolution every lookup beneath a root uses, opens and stats alike:
/// strictly beneath, never through a magic link, and through symlinks or across mounts
/// only where the rule says so.
fn resolve_flags(rule: &RuleOptions) -> ResolveFlag {
    let mut resolve = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS;
    if rule.symlinks == Symlinks::None {
        resolve |= ResolveFlag::RESOLVE_NO_SYMLINKS;
    }
    if rule.same_filesystem {
        resolve |= ResolveFlag::RESOLVE_NO_XDEV;
    }
    resolve
}

/// Describe `relative` beneath `root` for a stat the policy allowed by a grant of
/// `granted` (`Read` or `Directory`).
///
/// The path is resolved exactly as an open resolves it (`resolve_flags`), into an
/// `O_PATH` descriptor, which opens nothing (a FIFO cannot block, a device driver is not
/// called), and the answer is what `fstat` says about that descriptor: never a lookup by
/// the path string. A hard-linked file is refused as an open refuses it, with the same
/// error: a hard link planted in the tree would otherwise describe a file outside it
/// (its size, owner and times). A FIFO, socket or device node is described whatever the
/// rule's `devices` says, which is about opening one: describing it calls no driver and
/// blocks on nothing, and `ls -l`, `find` and `du` over a tree holding one then print
/// what they print for root. Where the rule does not allow opening one, one with a
/// second name is refused as a hard-linked file is (unless the rule allows hard links).
/// A directory is described under either grant; anything else needs `read`.
pub fn stat_beneath(
    root: BorrowedFd<'_>,
    relative: &[u8],
    granted: Access,
    rule: &RuleOptions,
) -> Result<StatMeta, OpenError> {
    let how = || {
        OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(resolve_flags(rule))
    };
    let path: &[u8] = if relative.is_empty() { b"." } else { relative };
    let fd = open_retrying(|| openat2(root, path, how()), rule)?;
    let st = fstat(&fd).map_err(OpenError::Kernel)?;
    let file = meta_of(&st)?;
    match (file.kind, granted) {
        (FileKind::Directory, _) => {}
        (FileKind::Regular, Access::Read) => authorize(&file, Access::Read, rule)?,
        // Where the rule allows opening one, what an open would pass; elsewhere one
        // with a second name is refused as a hard-linked file is.
        (_, Access::Read) if file.nlink > 1 && !rule.devices && !rule.hardlinks => {
            return Err(OpenError::Hardlinked(file.nlink));
        }
        (_, Access::Read) => {}
        _ => return Err(OpenError::NotDirectory),
    }
    Ok(StatMeta::of(&st, file))
}

/// [`stat_beneath`] without following the last component (`Op::Link`): where the rule
/// does not follow links and the path beneath the root is a symbolic link, the link
/// itself and its target (`O_PATH | O_NOFOLLOW`, which `RESOLVE_NO_SYMLINKS` allows for
/// the last component alone, then `fstat` and `readlinkat(fd, "")` on that descriptor:
/// nothing is looked up by name again). Everything else, and every path where the rule
/// follows links, is [`stat_beneath`]'s answer, with no target. A link is refused where
/// `stat_beneath` would refuse a file: under a `directory` grant alone, and with more
/// than one name unless the rule allows hard links.
pub fn link_beneath(
    root: BorrowedFd<'_>,
    relative: &[u8],
    granted: Access,
    rule: &RuleOptions,
) -> Result<LinkMeta, OpenError> {
    let plain = || {
        stat_beneath(root, relative, granted, rule).map(|meta| LinkMeta {
            meta,
            target: Vec::new(),
        })
    };
    if relative.is_empty() || rule.symlinks != Symlinks::None {
        return plain();
    }
    let how = || {
        OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .resolve(resolve_flags(rule))
    };
    let fd = open_retrying(|| openat2(root, relative, how()), rule)?;
    let st = fstat(&fd).map_err(OpenError::Kernel)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
        return plain();
    }
    // Refused as `stat_beneath` refuses what it found: a link is no directory, so its
    // description (and its target, which is its content) needs `read`; and a link with
    // several names may be one planted here from outside the tree or from a carve-out
    // (`link(2)` does not follow), as a hard-linked file may.
    if granted != Access::Read {
        return Err(OpenError::NotDirectory);
    }
    if st.st_nlink > 1 && !rule.hardlinks {
        return Err(OpenError::Hardlinked(st.st_nlink));
    }
    let target = std::os::unix::ffi::OsStringExt::into_vec(
        nix::fcntl::readlinkat(&fd, "").map_err(OpenError::Kernel)?,
    );
    Ok(LinkMeta {
        meta: StatMeta::of(&st, meta_of(&st)?),
        target,
    })
}

/// A descriptor confines its holder to its access mode only as long as the holder
/// cannot open the file again: through `/proc/self/fd/N` (a magic link) the kernel
/// checks the file's own permissions but none of the directories above it, which are
/// often all that kept the holder out. So a file whose mode would give the holder
/// more than the grant (write bits for it on a read grant, read bits on a write grant)
/// is not passed. The owner counts as having every access: it may `fchmod` the
/// descriptor it was handed. With a POSIX ACL, the group bits are the mask of every
/// named entry, so they count whatever the holder's groups. Directories are exempt
/// (they cannot be reopened for writing, and listing is what the grant is for), and
/// so are files the rule creates (their mode and owner are the rule's own), and a
/// holder with uid 0 (root can open the file itself).
fn no_wider_reopen(
    fd: &OwnedFd,
    st: &nix::sys::stat::FileStat,
    access: Access,
    holder: &Holder<'_>,
) -> Result<(), OpenError> {
    let (read, write) = match access {
        Access::Read => (true, false),
        Access::Write => (false, true),
        Access::ReadWrite => return Ok(()),
        Access::Create | Access::Directory => return Ok(()),
    };
    if holder.uid == 0 || FileKind::from_mode(st.st_mode) == Some(FileKind::Directory) {
        return Ok(());
    }
    let mode = st.st_mode & 0o7777;
    let group_bits = (mode >> 3) & 0o7;
    let bits = if st.st_uid == holder.uid {
        0o7
    } else if holder.in_group(st.st_gid) {
        group_bits
    } else {
        let other = mode & 0o7;
        // Named ACL entries reach only as far as the mask (the group bits): look for
        // an ACL only when the mask would add something.
        if group_bits & !other & 0o6 != 0 && has_access_acl(fd) {
            other | group_bits
        } else {
            other
        }
    };
    let wider = match (bits & 0o4 != 0 && !read, bits & 0o2 != 0 && !write) {
        (_, true) => "writing",
        (true, false) => "reading",
        (false, false) => return Ok(()),
    };
    Err(OpenError::WiderReopen {
        mode,
        owner: st.st_uid,
        group: st.st_gid,
        uid: holder.uid,
        wider,
    })
}

/// Does the file carry a POSIX access ACL? An error other than "no such attribute"
/// counts as yes: the check must fail closed.
pub(crate) fn has_access_acl(fd: &OwnedFd) -> bool {
    use std::os::fd::AsFd;
    !matches!(
        crate::sys::xattr_len(fd.as_fd(), c"system.posix_acl_access"),
        Ok(None | Some(0))
    )
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
    FileMeta::of(st).ok_or(OpenError::UnknownType(st.st_mode))
}

#[cfg(test)]
mod tests;
