//! May a directory descriptor be passed: what it would let its holder look at.
//!
//! A directory descriptor is a starting point for the holder's own path lookups:
//! `fstatat(2)`, `readlinkat(2)` and `statx(2)` through it describe files by the
//! holder's permissions on the directories walked, not on the directories above the
//! descriptor, and Landlock governs none of these calls. `..` walks up, too, as far as
//! the holder can search. So the part of the filesystem a descriptor opens up is the
//! subtree of the highest directory the holder can reach and search from it, and the
//! broker passes one only where the policy lets the worker see all of that subtree
//! (`Policy::hidden_beneath`): no deny rule beneath it, and an allow rule covering
//! every path in it. A listing of any other directory is answered by the broker itself
//! (`list.rs`).
//!
//! Two cases open up nothing beyond the directory's own entries: a holder that cannot
//! search the directory itself can only read its names (`getdents64(2)`), and a holder
//! that can search every directory from it up to `/` reaches nothing through the
//! descriptor that it cannot reach by absolute path anyway (outside the broker: see
//! the security model). Both still need the directory's own names to be visible.

use crate::request::loaded::Loaded;
use crate::request::resolve::{Holder, has_access_acl};
use fdbroker_policy::{ClientId, Grant, HiddenBeneath, Policy, RuleId, Symlinks};
use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{FileStat, Mode, fstat};
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// More `..` steps than any path can have components: a chain this long is treated as
/// reaching too far rather than walked for ever.
const MAX_STEPS: usize = 4096;

/// How far a directory descriptor reaches for its holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// The holder cannot search the directory: through the descriptor it can read the
    /// directory's names and nothing else.
    NamesOnly,
    /// The directory `n` levels up (0: the directory itself) is the highest the holder
    /// can reach and search: everything beneath it is open to the holder's lookups.
    Up(usize),
    /// Every directory from this one up to `/` is searchable by the holder: the
    /// descriptor reaches nothing absolute paths do not.
    Everywhere,
}

/// Walks up from `dir` by `..` (real parents, as the kernel's lookups take them), each
/// directory opened `O_PATH` (nothing is read, no Landlock right is needed) and
/// `fstat`ed, until one the holder cannot search, or `/`.
pub fn reach(dir: BorrowedFd<'_>, holder: &Holder<'_>) -> Result<Reach, Errno> {
    let step = |from: BorrowedFd<'_>, name: &str| {
        openat(
            from,
            name,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
    };
    let mut current: OwnedFd = step(dir, ".")?;
    let mut st = fstat(&current)?;
    if !searchable(&current, &st, holder) {
        return Ok(Reach::NamesOnly);
    }
    for n in 0..MAX_STEPS {
        let parent = step(current.as_fd(), "..")?;
        let pst = fstat(&parent)?;
        if (pst.st_dev, pst.st_ino) == (st.st_dev, st.st_ino) {
            return Ok(Reach::Everywhere);
        }
        if !searchable(&parent, &pst, holder) {
            return Ok(Reach::Up(n));
        }
        current = parent;
        st = pst;
    }
    Ok(Reach::Up(MAX_STEPS))
}

/// Could `holder` search (`x`) the directory `st` describes? Decided the way the
/// kernel decides, failing towards "yes" (which refuses more descriptors) where it
/// cannot be sure: root searches everything, the owner by the owner bit, a member of
/// the group by the group bit, anyone else by the other bit or, when the group-class
/// bits (an ACL's mask) allow it and the directory may carry an ACL, by a named entry.
fn searchable(fd: &OwnedFd, st: &FileStat, holder: &Holder<'_>) -> bool {
    let mode = st.st_mode;
    if holder.uid == 0 {
        return true;
    }
    if st.st_uid == holder.uid {
        return mode & 0o100 != 0;
    }
    let group_x = mode & 0o010 != 0;
    if holder.in_group(st.st_gid) {
        return group_x;
    }
    mode & 0o001 != 0 || (group_x && has_access_acl(fd))
}

/// Why a directory descriptor is not passed, for the audit line.
#[derive(Debug)]
pub struct Refusal<'a> {
    hidden: HiddenBeneath,
    /// How many levels above the requested directory the descriptor would reach.
    up: usize,
    loaded: &'a Loaded,
    allowed_by: RuleId,
}

impl fmt::Display for Refusal<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a directory descriptor would reveal ")?;
        match self.hidden {
            HiddenBeneath::DenyBeneath(deny) => write!(
                f,
                "what the deny rule at {} hides",
                self.loaded.rule_label(deny)
            )?,
            HiddenBeneath::NotCovered => write!(
                f,
                "paths no allow rule covers (the rule at {} does not cover the whole subtree)",
                self.loaded.rule_label(self.allowed_by)
            )?,
        }
        match self.up {
            0 => f.write_str(" beneath it"),
            n => write!(
                f,
                ", {n} level(s) up through `..`, which the peer can search"
            ),
        }
    }
}

/// May the directory `path`, opened on `dir` under `grant`, be passed to `holder`?
/// `Err` names what it would reveal. A failure to walk up refuses too (fails closed).
pub fn check<'a>(
    loaded: &'a Loaded,
    client: ClientId,
    path: &[u8],
    grant: &Grant<'_>,
    dir: BorrowedFd<'_>,
    holder: &Holder<'_>,
) -> Result<(), Refusal<'a>> {
    let policy = &loaded.policy;
    let refuse = |hidden, up| Refusal {
        hidden,
        up,
        loaded,
        allowed_by: grant.rule,
    };
    if let Some(hidden) = policy.hidden_beneath(client, path) {
        return Err(refuse(hidden, 0));
    }
    let up = match reach(dir, holder) {
        Ok(Reach::NamesOnly | Reach::Everywhere | Reach::Up(0)) => return Ok(()),
        Ok(Reach::Up(n)) => n,
        Err(_) => return Err(refuse(HiddenBeneath::NotCovered, 0)),
    };
    // The directory's real parents are its lexical ones only up to the rule's root: it
    // was opened beneath the root without following symlinks, while the root itself may
    // have been reached through a symlink root owns (`roots.rs`). Past the root, or
    // through a symlink the rule follows, the reach cannot be named: refused.
    let depth = grant
        .relative
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .count();
    if grant.options.symlinks == Symlinks::Beneath || up > depth {
        return Err(refuse(HiddenBeneath::NotCovered, up));
    }
    match ancestor(path, up) {
        Some(top) => match policy.hidden_beneath(client, top) {
            Some(hidden) => Err(refuse(hidden, up)),
            None => Ok(()),
        },
        None => Err(refuse(HiddenBeneath::NotCovered, up)),
    }
}

/// What a working directory `path`, open on `dir`, would let `holder` look at that the
/// policy hides from `client`: the reason, and how many levels up it reaches. A
/// working directory is a directory handle like a passed descriptor, except that its
/// own names are not listed through it (opening `.` is an open like any other), so
/// only what lookups from it reach counts. `path` must be the real path (`getcwd`), so
/// that its lexical parents are the ones `..` takes.
pub fn hidden_from_working_directory(
    policy: &Policy,
    client: ClientId,
    path: &[u8],
    dir: BorrowedFd<'_>,
    holder: &Holder<'_>,
) -> Result<Option<(HiddenBeneath, usize)>, Errno> {
    let up = match reach(dir, holder)? {
        Reach::NamesOnly | Reach::Everywhere => return Ok(None),
        Reach::Up(n) => n,
    };
    Ok(match ancestor(path, up) {
        Some(top) => policy.hidden_beneath(client, top).map(|h| (h, up)),
        None => Some((HiddenBeneath::NotCovered, up)),
    })
}

/// `path` with its last `n` components removed (`/` at most), or `None` if it has
/// fewer than `n`.
fn ancestor(path: &[u8], n: usize) -> Option<&[u8]> {
    let mut end = path.len();
    for _ in 0..n {
        if end <= 1 {
            return None;
        }
        let slash = path.get(..end)?.iter().rposition(|&b| b == b'/')?;
        end = slash.max(1);
    }
    path.get(..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_are_lexical_and_stop_at_the_root() {
        assert_eq!(ancestor(b"/a/b/c", 0), Some(&b"/a/b/c"[..]));
        assert_eq!(ancestor(b"/a/b/c", 1), Some(&b"/a/b"[..]));
        assert_eq!(ancestor(b"/a/b/c", 2), Some(&b"/a"[..]));
        assert_eq!(ancestor(b"/a/b/c", 3), Some(&b"/"[..]));
        assert_eq!(ancestor(b"/a/b/c", 4), None);
        assert_eq!(ancestor(b"/", 1), None);
    }
}
