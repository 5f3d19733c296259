//! Descriptors the broker has passed that workers have not read yet.
//!
//! The kernel charges every descriptor in flight in a Unix socket to the *sending*
//! user (root, for the broker, across all of root's processes) and refuses to pass
//! more (`ETOOMANYREFS`) once the count exceeds the sender's `RLIMIT_NOFILE`, unless it
//! holds `CAP_SYS_RESOURCE`, which the confined broker gives up. Left alone, a few
//! workers that ask for batches and never read their replies could use up that limit,
//! and every other worker's opens would then fail. So the broker keeps its own count,
//! charged per peer uid: a request whose descriptors would take its uid over a share of
//! the budget, or the broker over the budget, is refused with a reason before anything
//! is opened, and only that uid's workers are affected.
//!
//! A connection whose uid has no room for a full reply is not read from (its requests
//! wait in its socket) until there is room again: backpressure, not errors, and no
//! work for the broker while it waits. A connection's charge is released once its
//! socket's send queue is empty (`SIOCOUTQ` is 0: the worker has received everything,
//! and the kernel has released its charge too), checked before a request once the
//! charge has grown, before a connection is held back, on every connection by the
//! event loop's timer (which then lets held-back connections try again), and when the
//! connection closes.

use fdbroker_shared::frame::MAX_FDS_PER_REPLY;
use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

/// Descriptors every uid may have in flight whatever the others hold (a full reply),
/// up to [`InFlight`]'s hard cap: hogs filling the shared budget cannot starve a uid.
pub const FLOOR: usize = MAX_FDS_PER_REPLY;

/// The broker's count, and its limits.
#[derive(Debug)]
pub struct InFlight {
    /// Beyond its [`FLOOR`], a uid may charge only while the broker's total stays
    /// within this (half the descriptor limit).
    total_budget: usize,
    /// Nothing is charged past this, floors included (seven eighths of the limit; the
    /// kernel's count includes root's other processes).
    hard_cap: usize,
    /// At most this many for the workers of one uid.
    uid_budget: usize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_uid: HashMap<u32, usize>,
}

/// Why a request's descriptors cannot be charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// The uid already has `unread` descriptors in flight, of `budget`.
    Uid { unread: usize, budget: usize },
    /// The broker as a whole is at its budget.
    Total { budget: usize },
}

impl fmt::Display for Over {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Over::Uid { unread, budget } => write!(
                f,
                "this uid's workers have {unread} descriptors passed but not yet received (at most \
                 {budget}); read replies before asking for more"
            ),
            Over::Total { budget } => write!(
                f,
                "the broker has {budget} descriptors passed but not yet received by its workers; \
                 try again later"
            ),
        }
    }
}

impl InFlight {
    /// Budgets for a broker whose soft `RLIMIT_NOFILE` is `nofile`: half of it shared,
    /// a quarter of that per uid (at least [`FLOOR`]), and floors up to seven eighths.
    pub fn for_limit(nofile: u64) -> InFlight {
        let nofile = usize::try_from(nofile).unwrap_or(usize::MAX);
        let total_budget = (nofile / 2).max(FLOOR);
        InFlight {
            total_budget,
            hard_cap: (nofile - nofile / 8).max(total_budget),
            uid_budget: (total_budget / 4).max(FLOOR),
            counts: Mutex::default(),
        }
    }

    /// For the current soft `RLIMIT_NOFILE`.
    pub fn for_this_process() -> InFlight {
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(1024, |(soft, _)| soft);
        InFlight::for_limit(soft)
    }

    pub fn uid_budget(&self) -> usize {
        self.uid_budget
    }

    /// Charge `n` descriptors to `uid`, or say why not.
    pub fn charge(&self, uid: u32, n: usize) -> Result<(), Over> {
        if n == 0 {
            return Ok(());
        }
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        self.check(&c, uid, n)?;
        c.total += n;
        *c.by_uid.entry(uid).or_default() += n;
        Ok(())
    }

    /// Charge `n` descriptors to `uid` whatever the budgets: they are in flight already
    /// (a connection handed over by the previous server).
    pub fn charge_anyway(&self, uid: u32, n: usize) {
        if n == 0 {
            return;
        }
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total += n;
        *c.by_uid.entry(uid).or_default() += n;
    }

    /// Is there room for a full reply to `uid` now? A connection is read from only
    /// then, so a request it sends can be answered whole.
    pub fn room_for_a_reply(&self, uid: u32) -> Result<(), Over> {
        let c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        self.check(&c, uid, MAX_FDS_PER_REPLY)
    }

    fn check(&self, c: &Counts, uid: u32, n: usize) -> Result<(), Over> {
        let unread = c.by_uid.get(&uid).copied().unwrap_or(0);
        if unread + n > self.uid_budget {
            return Err(Over::Uid {
                unread,
                budget: self.uid_budget,
            });
        }
        let cap = if unread + n <= FLOOR {
            self.hard_cap
        } else {
            self.total_budget
        };
        if c.total + n > cap {
            return Err(Over::Total { budget: cap });
        }
        Ok(())
    }

    /// Give back `n` descriptors charged to `uid`.
    pub fn release(&self, uid: u32, n: usize) {
        if n == 0 {
            return;
        }
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(n);
        if let Some(u) = c.by_uid.get_mut(&uid) {
            *u = u.saturating_sub(n);
            if *u == 0 {
                c.by_uid.remove(&uid);
            }
        }
    }

    /// Descriptors charged now per uid, in order of uid (for `fdbroker status`).
    pub fn by_uid(&self) -> Vec<(u32, usize)> {
        let c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<(u32, usize)> = c.by_uid.iter().map(|(u, n)| (*u, *n)).collect();
        v.sort_unstable();
        v
    }

    /// Descriptors charged now, in all.
    pub fn total(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_uid_cannot_take_the_others_share() {
        let f = InFlight::for_limit(65536);
        assert_eq!(f.uid_budget(), 8192);
        assert!(f.charge(1, 8192).is_ok());
        assert_eq!(
            f.charge(1, 1),
            Err(Over::Uid {
                unread: 8192,
                budget: 8192
            })
        );
        assert!(f.charge(2, 128).is_ok());
        f.release(1, 8192);
        assert!(f.charge(1, 1).is_ok());
        assert_eq!(f.total(), 129);
    }

    #[test]
    fn hogs_filling_the_shared_budget_leave_every_other_uid_its_floor() {
        let f = InFlight::for_limit(1024);
        assert_eq!(f.uid_budget(), FLOOR);
        // Four hogs take the shared half...
        for uid in 0..4 {
            assert!(f.charge(uid, FLOOR).is_ok());
        }
        assert_eq!(f.total(), 512);
        // ...and other uids still get a full reply each, up to seven eighths.
        for uid in 10..13 {
            assert!(f.charge(uid, FLOOR).is_ok(), "uid {uid}");
        }
        assert_eq!(f.charge(13, 1), Err(Over::Total { budget: 896 }));
        f.release(0, FLOOR);
        assert!(f.charge(13, FLOOR).is_ok());
    }

    #[test]
    fn beyond_its_floor_a_uid_shares_the_half() {
        let f = InFlight::for_limit(65536);
        for uid in 0..4 {
            assert!(f.charge(uid, 8192).is_ok());
        }
        // The shared half is used up: beyond its floor, no uid gets more.
        assert_eq!(f.charge(9, FLOOR + 1), Err(Over::Total { budget: 32768 }));
        assert!(f.charge(9, FLOOR).is_ok());
    }
}
