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
