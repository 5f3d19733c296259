//! Connections by token: the event loop's table of live connections.

use super::FIRST_CONN;
use super::conn::ConnRef;
use std::collections::HashMap;

/// Connections by token. A token carries a generation so an event for a closed
/// connection can never reach the one that reused its slot.
#[derive(Debug, Default)]
pub(super) struct Slab {
    pub(super) slots: Vec<Slot>,
    pub(super) free: Vec<usize>,
    pub(super) len: usize,
    pub(super) per_uid: HashMap<u32, usize>,
}

#[derive(Debug, Default)]
pub(super) struct Slot {
    pub(super) generation: u32,
    pub(super) conn: Option<ConnRef>,
}

impl Slab {
    pub(super) fn insert(&mut self, conn: ConnRef) -> u64 {
        *self.per_uid.entry(conn.peer.uid).or_default() += 1;
        let idx = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot::default());
            self.slots.len() - 1
        });
        let slot = &mut self.slots[idx];
        slot.generation = slot.generation.wrapping_add(1);
        slot.conn = Some(conn);
        self.len += 1;
        (u64::from(slot.generation) << 32) | (idx as u64 + FIRST_CONN)
    }

    pub(super) fn locate(&self, token: u64) -> Option<usize> {
        let idx = (token & 0xffff_ffff).checked_sub(FIRST_CONN)? as usize;
        let slot = self.slots.get(idx)?;
        (u64::from(slot.generation) == token >> 32 && slot.conn.is_some()).then_some(idx)
    }

    pub(super) fn get(&self, token: u64) -> Option<ConnRef> {
        self.locate(token).and_then(|i| self.slots[i].conn.clone())
    }

    pub(super) fn remove(&mut self, token: u64) {
        let Some(idx) = self.locate(token) else {
            return;
        };
        if let Some(conn) = self.slots[idx].conn.take() {
            if let Some(n) = self.per_uid.get_mut(&conn.peer.uid) {
                *n -= 1;
                if *n == 0 {
                    self.per_uid.remove(&conn.peer.uid);
                }
            }
            self.free.push(idx);
            self.len -= 1;
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &ConnRef> {
        self.slots.iter().filter_map(|s| s.conn.as_ref())
    }

    pub(super) fn counts(&self, uid: u32) -> (usize, usize) {
        (self.len, self.per_uid.get(&uid).copied().unwrap_or(0))
    }

    pub(super) fn drain(&mut self) -> Vec<ConnRef> {
        self.free.clear();
        self.len = 0;
        self.per_uid.clear();
        self.slots
            .iter_mut()
            .filter_map(|s| s.conn.take())
            .collect()
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

    /// A connection over a socketpair (the peer end is dropped: the slab never reads).
    fn conn(uid: u32) -> ConnRef {
        let (ours, _theirs) = Channel::pair().unwrap();
        let peer = PeerCredentials {
            pid: 1,
            uid,
            gid: uid,
        };
        Arc::new(Conn::new(
            ours,
            peer,
            Box::new([]),
            Binding::Credentials,
            Arc::new(InFlight::for_limit(1024)),
        ))
    }

    #[test]
    fn tokens_start_past_the_listeners_and_find_their_connection() {
        let mut slab = Slab::default();
        let a = conn(1);
        let b = conn(2);
        let ta = slab.insert(a.clone());
        let tb = slab.insert(b.clone());
        assert_ne!(ta, tb);
        for t in [ta, tb] {
            assert!(
                t & 0xffff_ffff >= FIRST_CONN,
                "{t:#x} collides with a listener"
            );
        }
        assert!(Arc::ptr_eq(&slab.get(ta).unwrap(), &a));
        assert!(Arc::ptr_eq(&slab.get(tb).unwrap(), &b));
        assert_eq!(slab.len(), 2);
        assert_eq!(slab.iter().count(), 2);
    }

    #[test]
    fn a_stale_token_never_reaches_the_connection_that_reused_its_slot() {
        let mut slab = Slab::default();
        let old = slab.insert(conn(1));
        slab.remove(old);
        assert!(slab.get(old).is_none());
        assert_eq!(slab.len(), 0);

        let new_conn = conn(1);
        let new = slab.insert(new_conn.clone());
        // Same slot, next generation.
        assert_eq!(new & 0xffff_ffff, old & 0xffff_ffff);
        assert_eq!(new >> 32, (old >> 32) + 1);
        assert_eq!(slab.slots.len(), 1, "the freed slot is reused");
        assert!(slab.get(old).is_none());
        assert!(slab.locate(old).is_none());
        assert!(Arc::ptr_eq(&slab.get(new).unwrap(), &new_conn));

        // Removing through the stale token leaves the new connection alone.
        slab.remove(old);
        assert_eq!(slab.len(), 1);
        assert!(slab.get(new).is_some());
    }

    #[test]
    fn tokens_outside_the_table_are_unknown() {
        let mut slab = Slab::default();
        let t = slab.insert(conn(1));
        for bogus in [
            0,
            FIRST_CONN - 1,
            t + 1,
            t ^ (1 << 32),
            u64::MAX,
            (t & !0xffff_ffff) | 0xffff_ffff,
        ] {
            assert!(slab.get(bogus).is_none(), "{bogus:#x}");
            slab.remove(bogus);
        }
        assert_eq!(slab.len(), 1);
        assert!(slab.get(t).is_some());
    }

    #[test]
    fn removing_twice_counts_once() {
        let mut slab = Slab::default();
        let t = slab.insert(conn(7));
        let _other = slab.insert(conn(7));
        slab.remove(t);
        slab.remove(t);
        assert_eq!(slab.len(), 1);
        assert_eq!(slab.counts(7), (1, 1));
        assert_eq!(slab.free, vec![0], "a slot is freed once");
    }

    #[test]
    fn counts_are_per_uid_and_forget_a_uid_at_zero() {
        let mut slab = Slab::default();
        let a1 = slab.insert(conn(10));
        let a2 = slab.insert(conn(10));
        let b = slab.insert(conn(20));
        assert_eq!(slab.counts(10), (3, 2));
        assert_eq!(slab.counts(20), (3, 1));
        assert_eq!(slab.counts(30), (3, 0));
        slab.remove(a1);
        assert_eq!(slab.counts(10), (2, 1));
        slab.remove(a2);
        assert_eq!(slab.counts(10), (1, 0));
        assert!(!slab.per_uid.contains_key(&10));
        slab.remove(b);
        assert_eq!(slab.counts(20), (0, 0));
        assert!(slab.per_uid.is_empty());
    }

    #[test]
    fn slots_grow_only_when_none_is_free() {
        let mut slab = Slab::default();
        let tokens: Vec<u64> = (0..8).map(|_| slab.insert(conn(1))).collect();
        assert_eq!(slab.slots.len(), 8);
        for t in &tokens[..4] {
            slab.remove(*t);
        }
        for _ in 0..4 {
            slab.insert(conn(1));
        }
        assert_eq!(slab.slots.len(), 8);
        slab.insert(conn(1));
        assert_eq!(slab.slots.len(), 9);
        assert_eq!(slab.len(), 9);
    }

    #[test]
    fn drain_empties_everything_and_old_tokens_stay_dead() {
        let mut slab = Slab::default();
        let a = slab.insert(conn(1));
        let b = slab.insert(conn(2));
        slab.remove(a);
        let drained = slab.drain();
        assert_eq!(drained.len(), 1);
        assert_eq!(slab.len(), 0);
        assert_eq!(slab.counts(2), (0, 0));
        assert!(slab.free.is_empty());
        assert!(slab.get(b).is_none());
        assert_eq!(slab.iter().count(), 0);
    }
}
