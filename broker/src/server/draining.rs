//! Closed connections whose workers have not yet received every descriptor passed.

use super::conn::ConnRef;
use std::collections::HashMap;

/// At most this many closed connections per uid may wait, charged, for their workers
/// to receive what was passed; past it that uid's new connections are refused.
pub const MAX_DRAINING_PER_UID: usize = 64;

/// Closed connections still charged for descriptors their workers have not received.
///
/// The kernel charges a passed descriptor to the broker's user until the receiver
/// reads it or its socket is destroyed; closing the broker's end changes nothing. A
/// worker that asks for batches, shuts its socket down without reading and keeps it
/// open would otherwise get its uid's share back at every close while the kernel's
/// count only grows, until no reply of any worker could pass a descriptor. So the
/// connection stays here, out of epoll, still charged to its uid, and the timer drops
/// it once its send queue is empty.
#[derive(Debug, Default)]
pub(super) struct Draining {
    pub(super) conns: Vec<ConnRef>,
    pub(super) per_uid: HashMap<u32, usize>,
}

impl Draining {
    pub(super) fn of(&self, uid: u32) -> usize {
        self.per_uid.get(&uid).copied().unwrap_or(0)
    }

    pub(super) fn push(&mut self, conn: ConnRef) {
        *self.per_uid.entry(conn.peer.uid).or_default() += 1;
        self.conns.push(conn);
    }

    /// Drop every connection whose worker has now received everything.
    pub(super) fn settle(&mut self) {
        let per_uid = &mut self.per_uid;
        self.conns.retain(|c| {
            if !c.drained() {
                return true;
            }
            if let Some(n) = per_uid.get_mut(&c.peer.uid) {
                *n -= 1;
                if *n == 0 {
                    per_uid.remove(&c.peer.uid);
                }
            }
            false
        });
    }
}
