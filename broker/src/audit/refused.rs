//! What the policy refused in this process, kept for `fdbroker run`'s summary at exit
//! (`fdbroker run` prints how many requests were refused, with the first few paths, and
//! `--fail-on-denial` turns any into a non-zero exit status).
//!
//! Why it exists: a program sees a refusal as an errno, and many (a scanner that skips
//! what it cannot read, a listing that simply lacks a carved-out name) end as if the tree
//! were complete. The operator must learn that it was not. Kept apart from the audit
//! line, whose volume is capped per uid: this counts every refusal, capped or not.
//!
//! Counted: each request the policy denied (a deny rule, an access the rule does not
//! grant, a path no rule covers that reached the broker, and what a rule's options
//! refuse once the path is resolved: a link it does not follow, a hard-linked file, a
//! device, `OpenError::is_refusal`), and each name a broker listing
//! left out because a deny rule covers it. The paths are the operator's to read only;
//! the worker never sees this.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many distinct paths the summary names.
pub const FIRST: usize = 5;

struct Tally {
    requests: AtomicU64,
    hidden: AtomicU64,
    /// The first [`FIRST`] distinct paths, in the order they were refused.
    first: Mutex<Vec<Vec<u8>>>,
}

static TALLY: Tally = Tally {
    requests: AtomicU64::new(0),
    hidden: AtomicU64::new(0),
    first: Mutex::new(Vec::new()),
};

/// What was refused so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refused {
    /// Requests the policy denied.
    pub requests: u64,
    /// Names a listing left out because a deny rule covers them.
    pub hidden: u64,
    /// The first few distinct paths of either kind.
    pub first: Vec<Vec<u8>>,
}

impl Refused {
    pub fn is_empty(&self) -> bool {
        self.requests == 0 && self.hidden == 0
    }
}

/// A request the policy denied, about `path`.
pub fn request(path: &[u8]) {
    TALLY.requests.fetch_add(1, Ordering::Relaxed);
    remember(path);
}

/// A name a listing left out because a deny rule covers `path`.
pub fn hidden(path: &[u8]) {
    TALLY.hidden.fetch_add(1, Ordering::Relaxed);
    remember(path);
}

fn remember(path: &[u8]) {
    let mut first = TALLY.first.lock().unwrap_or_else(|p| p.into_inner());
    if first.len() < FIRST && !first.iter().any(|p| p == path) {
        first.push(path.to_vec());
    }
}

/// Everything counted so far in this process.
pub fn so_far() -> Refused {
    Refused {
        requests: TALLY.requests.load(Ordering::Relaxed),
        hidden: TALLY.hidden.load(Ordering::Relaxed),
        first: TALLY
            .first
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_is_counted_and_the_first_distinct_paths_kept() {
        let before = so_far();
        for i in 0..(FIRST + 3) {
            request(format!("/refused-test/{i}").as_bytes());
            request(format!("/refused-test/{i}").as_bytes());
        }
        hidden(b"/refused-test/hidden");
        let after = so_far();
        assert_eq!(after.requests - before.requests, 2 * (FIRST as u64 + 3));
        assert_eq!(after.hidden - before.hidden, 1);
        assert!(after.first.len() <= FIRST);
        let mut seen = after.first.clone();
        seen.dedup();
        assert_eq!(seen, after.first, "each path is named once");
        assert!(!after.is_empty());
    }
}
