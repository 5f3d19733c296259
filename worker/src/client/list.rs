//! A directory's listing as the broker answers it (`Op::List`): a page at a time, until
//! the last, for [`Client::read_dir`](crate::Client::read_dir) and the async client alike.

use crate::error::{BrokerError, broken};
use crate::fs::ReadDir;
use fdbroker_shared::wire::{ListEntry, ListSpec, Op, ReplyBody};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A listing being received a page at a time ([`Client::read_dir`]): which request
/// comes next, and every entry so far. A page that does not move forward ends it with
/// an error, so a broker cannot keep a client asking forever.
pub(crate) struct Listed {
    path: PathBuf,
    next: Option<u64>,
    entries: Vec<ListEntry>,
}

impl Listed {
    pub(crate) fn new(path: &Path) -> Listed {
        Listed {
            path: path.to_owned(),
            next: Some(0),
            entries: Vec::new(),
        }
    }

    /// The request for the next page, or `None` once the last arrived.
    pub(crate) fn next_op(&self) -> Option<Op> {
        self.next.map(|start| {
            Op::List(ListSpec {
                path: self.path.as_os_str().as_bytes().to_vec(),
                start,
            })
        })
    }

    /// Takes one reply; `Err(None)` for a reply of another type.
    pub(crate) fn take(&mut self, body: ReplyBody) -> Result<(), Option<io::Error>> {
        let start = self.next.unwrap_or(0);
        match body {
            ReplyBody::List(Ok(page)) => {
                // `next` is the directory's position after this page: 0 at the end,
                // else past `start` (a page may be short, even empty, when the
                // broker read its most entries for one request).
                let moved = page.next == 0 || page.next > start;
                if !moved {
                    return Err(Some(broken("a listing page that does not move forward")));
                }
                self.entries.extend(page.entries);
                self.next = (page.next != 0).then_some(page.next);
                Ok(())
            }
            ReplyBody::List(Err(w)) | ReplyBody::Refused(w) => {
                Err(Some(BrokerError::from_wire(w).into()))
            }
            _ => Err(None),
        }
    }

    /// The whole listing, in byte order of the names (the broker pages in the
    /// directory's own order), each name once: a filesystem whose positions are name
    /// hashes (ext4) may show a name whose hash another shares again on the next page.
    pub(crate) fn finish(mut self) -> ReadDir {
        self.entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        self.entries.dedup_by(|a, b| a.name == b.name);
        ReadDir::listed(self.entries, self.path)
    }
}
