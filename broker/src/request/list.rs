//! A directory's entries, listed by the broker with what the policy hides left out
//! (`Op::List`).
//!
//! A directory descriptor shows its whole subtree (see `fdbroker_policy::HiddenBeneath`),
//! so the broker does not pass one for a directory with a deny carve-out beneath it, or
//! whose subtree no allow rule covers. Listing such a directory is this instead: the
//! broker opens it beneath the rule's root exactly as it would for a `directory` open,
//! reads it itself, and answers with the names the worker may see (`Policy::visible`)
//! and their types; every other name is left out, so it looks like a name that does
//! not exist. One audit line, access `list`. Runs on any server thread, like `answer`.

use crate::audit::{self, Action, Batch, Verdict};
use crate::request::answer::denial_to_wire;
use crate::request::loaded::Loaded;
use crate::request::resolve::{self, Holder, OpenError};
use fdbroker_policy::{ClientId, Decision};
use fdbroker_shared::peer::PeerCredentials;
use fdbroker_shared::wire::{Access, FileKind, ListEntry, Listing, MAX_LIST_ENTRIES, WireError};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::fstatat;
use nix::unistd::{Whence, lseek};
use std::os::fd::{AsFd, OwnedFd};

/// Most directory entries the broker reads for one `List` request, shown or hidden:
/// a page ends here even if short (its `next` says where to go on), so what one small
/// request costs the broker is bounded by this, however large the directory is and
/// however much of it the policy hides.
pub const MAX_SCANNED: usize = 2048;

/// The buffer the broker reads directory records into (`getdents64`): what the
/// kernel copies per read, whatever of it the page then uses.
const DIRENT_BUFFER: usize = 16 * 1024;

/// Most bytes one page's reply frame takes. A reply must fit the connection's send
/// queue in one message (a `SOCK_SEQPACKET` message larger than the socket's send
/// buffer fails with `EMSGSIZE`), which the server keeps small on purpose
/// (`server::conn::REPLY_QUEUE_BYTES`, checked there against this), far below
/// `MAX_MESSAGE`.
pub const PAGE_BYTES: usize = 12 * 1024;

/// The bytes of a `List` reply before its entries: the frame header, the reply id, the
/// body and result tags, the list's length and `next`; and each entry's own overhead
/// (its name's length and its kind). A page stops before the frame would pass
/// [`PAGE_BYTES`].
const REPLY_OVERHEAD: usize = 12 + 8 + 4 + 4 + 8 + 8;
const ENTRY_OVERHEAD: usize = 8 + 4;

/// Why a listing failed after the policy allowed it.
#[derive(Debug, thiserror::Error)]
enum ListError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("cannot read the directory: {}", .0.desc())]
    Read(Errno),
    #[error("not a position in this directory: {0}")]
    Position(u64),
    #[error("the filesystem gave a malformed directory record")]
    Record,
    #[error("the filesystem's directory positions do not move forward")]
    Backwards,
}

impl ListError {
    fn to_wire(&self) -> WireError {
        let errno = match self {
            ListError::Open(e) => return e.to_wire(),
            ListError::Read(e) => *e,
            ListError::Position(_) => Errno::EINVAL,
            ListError::Record | ListError::Backwards => Errno::EIO,
        };
        WireError::new(errno as i32, self.to_string())
    }
}

/// One page of the listing of `path` for `client`, from the directory position `start`
/// on (0, or the `next` of the page before).
pub fn list_one(
    audit: &mut Batch,
    loaded: &Loaded,
    client: ClientId,
    peer: &PeerCredentials,
    path: &[u8],
    start: u64,
) -> Result<Listing, WireError> {
    let policy = &loaded.policy;
    let client_name = policy.client(client).name.as_str();
    let grant = match policy.decide(client, path, Access::Directory) {
        Decision::Allow(grant) => grant,
        Decision::Deny(denial) => {
            let rule = denial.rule().map(|r| loaded.rule_label(r));
            audit::decision(
                audit,
                peer,
                client_name,
                path,
                Action::List,
                rule.as_ref().map(|r| r as &dyn std::fmt::Display),
                Verdict::Denied(&denial),
            );
            return Err(denial_to_wire(&denial));
        }
    };
    let rule = loaded.rule_label(grant.rule);
    // The descriptor stays in the broker, and the reopen check exempts directories, so
    // the peer's groups do not matter here.
    let holder = Holder {
        uid: peer.uid,
        gid: peer.gid,
        groups: &[],
    };
    let listed = loaded
        .roots
        .get(grant.root)
        .map_err(OpenError::RootUnavailable)
        .and_then(|root| {
            resolve::open_beneath(
                root,
                grant.relative,
                Access::Directory,
                OFlag::empty(),
                &grant.options,
                &holder,
            )
        })
        .map_err(ListError::from)
        .and_then(|(dir, meta)| {
            let mut child = Vec::with_capacity(path.len() + 256);
            let visible = |name: &[u8]| {
                child.clear();
                child.extend_from_slice(path);
                if path != b"/" {
                    child.push(b'/');
                }
                child.extend_from_slice(name);
                let shown = loaded.policy.visible(client, &child);
                if !shown && denied_by_rule(&loaded.policy, client, &child) {
                    audit::refused::hidden(&child);
                }
                shown
            };
            let (listing, _) = page(&dir, start, visible)?;
            Ok((listing, meta.ino))
        });
    match listed {
        Ok((listing, ino)) => {
            audit::decision(
                audit,
                peer,
                client_name,
                path,
                Action::List,
                Some(&rule),
                Verdict::Granted { ino },
            );
            Ok(listing)
        }
        Err(e) => {
            if matches!(&e, ListError::Open(o) if o.is_refusal()) {
                audit::refused::request(path);
            }
            audit::decision(
                audit,
                peer,
                client_name,
                path,
                Action::List,
                Some(&rule),
                Verdict::Failed(&e),
            );
            Err(e.to_wire())
        }
    }
}

/// Whether a deny rule (not merely the absence of a rule) keeps `path` out of a
/// listing: what `fdbroker run`'s summary counts as refused.
fn denied_by_rule(policy: &fdbroker_policy::Policy, client: ClientId, path: &[u8]) -> bool {
    matches!(
        policy.decide(client, path, Access::Read),
        Decision::Deny(fdbroker_policy::Denial::DeniedBy(_))
    )
}

/// The page of the open directory `dir` from the kernel's position `start` on, in the
/// kernel's order, with only the names `visible` accepts: as many as fit
/// [`PAGE_BYTES`], at most `MAX_LIST_ENTRIES`, after reading at most [`MAX_SCANNED`]
/// entries; and how many entries it read.
///
/// `next` is the kernel's position (`d_off`) after the last entry this page used,
/// shown or hidden, which `lseek(2)` takes back on the next request's fresh descriptor;
/// 0 after the last entry. Nothing is kept between requests, so each costs the broker
/// O(page), and paging a directory through costs it linear work in all. A position
/// that goes backwards is refused, so a client checking `next > start` always ends.
fn page(
    dir: &OwnedFd,
    start: u64,
    mut visible: impl FnMut(&[u8]) -> bool,
) -> Result<(Listing, usize), ListError> {
    let offset = i64::try_from(start).map_err(|_| ListError::Position(start))?;
    lseek(dir, offset, Whence::SeekSet).map_err(|_| ListError::Position(start))?;
    let mut buf = vec![0u8; DIRENT_BUFFER];
    let mut size = REPLY_OVERHEAD;
    let mut out = Vec::new();
    let mut scanned = 0;
    // The position after the last entry used; 0 once the directory ends.
    let mut resume = start;
    'read: loop {
        let len = crate::sys::getdents64(dir.as_fd(), &mut buf)
            .map_err(|e| ListError::Read(Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
        if len == 0 {
            resume = 0;
            break;
        }
        let mut records = &buf[..len];
        while !records.is_empty() {
            if scanned == MAX_SCANNED {
                break 'read;
            }
            let record = Record::parse(&mut records)?;
            scanned += 1;
            let after = u64::try_from(record.off).map_err(|_| ListError::Record)?;
            if record.name == b"." || record.name == b".." || !visible(record.name) {
                resume = after;
                continue;
            }
            let kind = match kind_of(record.kind) {
                Some(kind) => kind,
                // The filesystem does not record types in its directories: look at the
                // name beneath this directory, without following it. A name gone since
                // it was read is left out, as if read a moment later.
                None => match fstatat(dir, record.name, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .ok()
                    .and_then(|st| FileKind::from_mode(st.st_mode))
                {
                    Some(kind) => kind,
                    None => {
                        resume = after;
                        continue;
                    }
                },
            };
            let cost = ENTRY_OVERHEAD + record.name.len();
            if out.len() == MAX_LIST_ENTRIES || size + cost > PAGE_BYTES {
                break 'read;
            }
            size += cost;
            out.push(ListEntry {
                name: record.name.to_vec(),
                kind,
            });
            resume = after;
        }
    }
    if resume != 0 && resume <= start {
        return Err(ListError::Backwards);
    }
    Ok((
        Listing {
            entries: out,
            next: resume,
        },
        scanned,
    ))
}

/// One `linux_dirent64` record: `d_ino` [8], `d_off` [8], `d_reclen` [2], `d_type` [1],
/// then the name, NUL-terminated and padded to `d_reclen`.
struct Record<'a> {
    off: i64,
    kind: u8,
    name: &'a [u8],
}

impl<'a> Record<'a> {
    const HEADER: usize = 8 + 8 + 2 + 1;

    /// The first record of `records`, which then starts at the one after it.
    fn parse(records: &mut &'a [u8]) -> Result<Record<'a>, ListError> {
        let all: &'a [u8] = records;
        let field = |at: usize, n: usize| all.get(at..at + n).ok_or(ListError::Record);
        let off = i64::from_ne_bytes(field(8, 8)?.try_into().map_err(|_| ListError::Record)?);
        let reclen = u16::from_ne_bytes(field(16, 2)?.try_into().map_err(|_| ListError::Record)?);
        let kind = field(18, 1)?[0];
        let reclen = usize::from(reclen);
        if reclen <= Self::HEADER {
            return Err(ListError::Record);
        }
        let raw = field(Self::HEADER, reclen - Self::HEADER)?;
        let name = raw
            .iter()
            .position(|&b| b == 0)
            .map(|end| &raw[..end])
            .ok_or(ListError::Record)?;
        *records = &all[reclen..];
        Ok(Record { off, kind, name })
    }
}

/// The entry's type from its record's `d_type`; `None` where the filesystem did not say
/// (`DT_UNKNOWN`) or for a type no `FileKind` names.
fn kind_of(d_type: u8) -> Option<FileKind> {
    Some(match d_type {
        libc::DT_REG => FileKind::Regular,
        libc::DT_DIR => FileKind::Directory,
        libc::DT_LNK => FileKind::Symlink,
        libc::DT_FIFO => FileKind::Fifo,
        libc::DT_SOCK => FileKind::Socket,
        libc::DT_CHR => FileKind::CharDevice,
        libc::DT_BLK => FileKind::BlockDevice,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::path::PathBuf;

    /// A fresh directory holding `n` empty files named by number, `len` bytes each.
    fn directory(tag: &str, n: usize, len: usize) -> (PathBuf, Vec<Vec<u8>>) {
        let dir = std::env::temp_dir().join(format!(
            "fdbroker-list-{tag}-{}-{n}-{len}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let mut names = Vec::new();
        for i in 0..n {
            let name = format!("{i:0len$}");
            std::fs::write(dir.join(&name), b"").unwrap();
            names.push(name.into_bytes());
        }
        names.sort();
        (dir, names)
    }

    fn open(dir: &PathBuf) -> OwnedFd {
        OwnedFd::from(std::fs::File::open(dir).unwrap())
    }

    /// Pages `dir` through from 0, each request on a fresh descriptor as the broker
    /// does: every name shown, sorted; the requests made; the entries read in all.
    fn page_through(dir: &PathBuf, show: bool) -> (Vec<Vec<u8>>, usize, usize) {
        let (mut seen, mut requests, mut scanned) = (Vec::new(), 0, 0);
        let mut start = 0;
        loop {
            let (page, read) = page(&open(dir), start, |_| show).unwrap();
            requests += 1;
            scanned += read;
            assert!(read <= MAX_SCANNED, "one request read {read} entries");
            let bytes = REPLY_OVERHEAD
                + page
                    .entries
                    .iter()
                    .map(|e| ENTRY_OVERHEAD + e.name.len())
                    .sum::<usize>();
            assert!(bytes <= PAGE_BYTES && page.entries.len() <= MAX_LIST_ENTRIES);
            seen.extend(page.entries.into_iter().map(|e| e.name));
            if page.next == 0 {
                break;
            }
            assert!(page.next > start);
            start = page.next;
        }
        seen.sort();
        (seen, requests, scanned)
    }

    #[test]
    fn pages_cover_every_entry_once_and_each_fits_a_frame() {
        for (n, len) in [(0, 1), (1, 1), (511, 3), (512, 3), (513, 3), (2000, 255)] {
            let (dir, want) = directory("all", n, len);
            let (seen, requests, scanned) = page_through(&dir, true);
            assert_eq!(seen, want, "{n} entries of {len} bytes");
            // Linear in all: each entry (and `.`, `..`) read once, but for the one
            // that did not fit a page, read again at the start of the next.
            assert!(
                scanned <= n + 2 + requests,
                "{scanned} reads for {n} entries"
            );
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn hidden_entries_cost_each_request_at_most_max_scanned() {
        // However many names the policy hides, one request reads a bounded number and
        // answers a short (here empty) page that goes on; the whole costs one read each.
        let n = 3 * MAX_SCANNED + 5;
        let (dir, _) = directory("hidden", n, 5);
        let (seen, requests, scanned) = page_through(&dir, false);
        assert!(seen.is_empty());
        assert_eq!(scanned, n + 2);
        assert!(requests >= (n + 2).div_ceil(MAX_SCANNED) && requests <= n / MAX_SCANNED + 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_start_past_the_end_is_an_empty_last_page_and_a_bad_one_an_error() {
        let (dir, _) = directory("past", 3, 1);
        let (past, read) = page(&open(&dir), i64::MAX as u64, |_| true).unwrap();
        assert!(past.entries.is_empty() && past.next == 0 && read == 0);
        let bad = page(&open(&dir), u64::MAX, |_| true).unwrap_err();
        assert!(matches!(bad, ListError::Position(_)));
        assert_eq!(bad.to_wire().errno, libc::EINVAL);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
