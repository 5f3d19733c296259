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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::server::conn::{Binding, Conn};
    use crate::server::inflight::InFlight;
    use fdbroker_shared::Channel;
    use fdbroker_shared::peer::PeerCredentials;
    use std::sync::Arc;

    /// A connection and its worker's end of the socketpair.
    fn conn(uid: u32) -> (ConnRef, Channel) {
        let (ours, theirs) = Channel::pair().unwrap();
        let peer = PeerCredentials {
            pid: 1,
            uid,
            gid: uid,
        };
        let conn = Arc::new(Conn::new(
            ours,
            peer,
            Box::new([]),
            Binding::Credentials,
            Arc::new(InFlight::for_limit(1024)),
        ));
        (conn, theirs)
    }

    #[test]
    fn a_connection_waits_until_its_worker_has_received_everything() {
        let mut d = Draining::default();
        let (c, worker) = conn(5);
        c.channel()
            .send(b"a reply the worker has not read")
            .unwrap();
        d.push(c);
        assert_eq!(d.of(5), 1);
        d.settle();
        assert_eq!(d.conns.len(), 1, "still queued: stays charged");
        assert_eq!(d.of(5), 1);

        let mut buf = [0u8; 64];
        worker.recv(&mut buf).unwrap();
        d.settle();
        assert!(d.conns.is_empty());
        assert_eq!(d.of(5), 0);
        assert!(d.per_uid.is_empty(), "a uid at zero is forgotten");
    }

    #[test]
    fn settle_drops_only_the_drained_and_counts_per_uid() {
        let mut d = Draining::default();
        let (quiet, _w1) = conn(1);
        let (busy, _w2) = conn(1);
        let (other, _w3) = conn(2);
        busy.channel().send(b"unread").unwrap();
        d.push(quiet);
        d.push(busy);
        d.push(other);
        assert_eq!((d.of(1), d.of(2), d.of(3)), (2, 1, 0));
        d.settle();
        assert_eq!((d.of(1), d.of(2)), (1, 0));
        assert_eq!(d.conns.len(), 1);
        assert_eq!(d.conns[0].peer.uid, 1);
    }

    #[test]
    fn a_closed_worker_end_counts_as_received() {
        // Destroying the receiving socket releases what was queued in it.
        let mut d = Draining::default();
        let (c, worker) = conn(9);
        c.channel().send(b"never read").unwrap();
        d.push(c);
        drop(worker);
        d.settle();
        assert_eq!(d.of(9), 0);
    }
}
