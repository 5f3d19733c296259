//! Per-uid bursts of refused requests: the first [`LINES`] of each [`WINDOW`] are
//! written, the rest are counted, and the count becomes one summary line when the
//! window ends.
//!
//! A worker chooses how many refusals it causes: up to 128 paths per request, as fast
//! as the broker answers, each a line. Without a cap one unprivileged process could
//! grow the log by hundreds of MB per second, filling the disk and burying every other
//! line. Grants are never counted here: each is a file the policy gave out, and every
//! one is written.
//!
//! The key is the peer's uid, not its connection or pid, both of which a worker can
//! multiply at will. Counts are never dropped: the window's summary is written by the
//! next refusal for that uid, by the event loop's timer ([`Limiter::ended`]) if none
//! comes, and when the broker stops ([`Limiter::drain`]).

use fdbroker_shared::peer::PeerCredentials;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// How long one burst window lasts.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Refusals written per uid per window; later ones are counted.
pub const LINES: u32 = 32;

/// Refusals of one uid beyond what was written in one window, for the summary line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub uid: u32,
    /// The process and policy client of the first refusal counted (a uid may have
    /// several processes, and a reload may move it to another client).
    pub pid: i32,
    pub client: String,
    /// The window: when its first refusal came, and when it ended (or the broker
    /// stopped, if that was earlier).
    pub from: SystemTime,
    pub to: SystemTime,
    /// Refused by the policy (outside it, invalid path, flags), and refused by the
    /// kernel or the checks on the opened file (`result="failed"`).
    pub denied: u64,
    pub failed: u64,
}

impl Summary {
    pub fn total(&self) -> u64 {
        self.denied + self.failed
    }
}

/// What to do with one refusal.
#[derive(Debug, PartialEq, Eq)]
pub struct Admit {
    /// Write its line (else it was counted).
    pub write: bool,
    /// The uid's previous window ended with refusals counted: write this first.
    pub ended: Option<Summary>,
}

#[derive(Debug)]
struct Burst {
    started: Instant,
    since: SystemTime,
    written: u32,
    denied: u64,
    failed: u64,
    pid: i32,
    client: String,
}

impl Burst {
    fn summary(&self, uid: u32, to: SystemTime) -> Option<Summary> {
        (self.denied + self.failed > 0).then(|| Summary {
            uid,
            pid: self.pid,
            client: self.client.clone(),
            from: self.since,
            to,
            denied: self.denied,
            failed: self.failed,
        })
    }

    fn ended(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.started) >= WINDOW
    }
}

/// The bursts of every uid refused in the last window. Entries are removed when their
/// window ends, so it holds at most one per uid that is being refused right now.
#[derive(Debug, Default)]
pub struct Limiter {
    bursts: Mutex<HashMap<u32, Burst>>,
}

impl Limiter {
    pub fn new() -> Limiter {
        Limiter::default()
    }

    /// Account one refusal of `peer` (as `client`) at `now`; `failed` for a
    /// `result="failed"` line, else a denial.
    pub fn refusal(
        &self,
        peer: &PeerCredentials,
        client: &str,
        failed: bool,
        now: Instant,
    ) -> Admit {
        let mut bursts = self.lock();
        let mut ended = None;
        let burst = match bursts.get_mut(&peer.uid) {
            Some(b) if b.ended(now) => {
                ended = b.summary(peer.uid, b.since + WINDOW);
                // The next window starts with this refusal; its client text is kept
                // for reuse.
                b.started = now;
                b.since = SystemTime::now();
                b.written = 0;
                b.denied = 0;
                b.failed = 0;
                b
            }
            Some(b) => b,
            None => bursts.entry(peer.uid).or_insert(Burst {
                started: now,
                since: SystemTime::now(),
                written: 0,
                denied: 0,
                failed: 0,
                pid: 0,
                client: String::new(),
            }),
        };
        if burst.written < LINES {
            burst.written += 1;
            return Admit { write: true, ended };
        }
        if burst.denied + burst.failed == 0 {
            burst.pid = peer.pid;
            burst.client.clear();
            burst.client.push_str(client);
        }
        if failed {
            burst.failed += 1;
        } else {
            burst.denied += 1;
        }
        Admit {
            write: false,
            ended,
        }
    }

    /// Forget the windows that ended by `now`, and return the summaries of those that
    /// counted anything (the event loop's timer writes them).
    pub fn ended(&self, now: Instant) -> Vec<Summary> {
        let mut summaries = Vec::new();
        self.lock().retain(|&uid, b| {
            if !b.ended(now) {
                return true;
            }
            summaries.extend(b.summary(uid, b.since + WINDOW));
            false
        });
        summaries
    }

    /// Forget every window, and return what each counted so far (the broker is
    /// stopping: the counts must not be lost).
    pub fn drain(&self) -> Vec<Summary> {
        let now = SystemTime::now();
        self.lock()
            .drain()
            .filter_map(|(uid, b)| b.summary(uid, now.min(b.since + WINDOW)))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Burst>> {
        // Every critical section leaves the map consistent.
        self.bursts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn peer(uid: u32, pid: i32) -> PeerCredentials {
        PeerCredentials { pid, uid, gid: uid }
    }

    #[test]
    fn a_burst_is_written_then_counted_then_summarised_once() {
        let l = Limiter::new();
        let t0 = Instant::now();
        let p = peer(65534, 10);
        for _ in 0..LINES {
            assert!(l.refusal(&p, "n", false, t0).write);
        }
        // Counted, with the pid and client of the first one counted.
        let later = peer(65534, 11);
        for i in 0..100 {
            let a = l.refusal(&later, "n", i % 4 == 0, t0 + WINDOW / 2);
            assert_eq!(
                a,
                Admit {
                    write: false,
                    ended: None
                }
            );
        }
        // Another uid has a budget of its own.
        assert!(l.refusal(&peer(1000, 12), "m", false, t0).write);
        // Nothing ends before the window does.
        assert!(l.ended(t0 + WINDOW / 2).is_empty());
        // The next refusal after the window reports it, and is written.
        let a = l.refusal(&p, "n", false, t0 + WINDOW);
        assert!(a.write);
        let s = a.ended.unwrap();
        assert_eq!(
            (s.uid, s.pid, s.client.as_str(), s.denied, s.failed),
            (65534, 11, "n", 75, 25)
        );
        assert_eq!(s.to.duration_since(s.from).unwrap(), WINDOW);
        // Reported once: the new window has counted nothing yet, uid 1000 nothing.
        assert!(l.ended(t0 + WINDOW * 3).is_empty());
        assert!(l.lock().is_empty());
    }

    #[test]
    fn the_timer_and_the_stop_report_what_no_later_refusal_did() {
        let l = Limiter::new();
        let t0 = Instant::now();
        let p = peer(7, 70);
        for _ in 0..LINES + 5 {
            l.refusal(&p, "c", true, t0);
        }
        let ended = l.ended(t0 + WINDOW);
        assert_eq!(ended.len(), 1);
        assert_eq!((ended[0].denied, ended[0].failed), (0, 5));
        assert!(l.ended(t0 + WINDOW * 2).is_empty());

        for _ in 0..LINES + 3 {
            l.refusal(&p, "c", false, t0 + WINDOW * 2);
        }
        let drained = l.drain();
        assert_eq!(drained.len(), 1);
        assert_eq!((drained[0].denied, drained[0].failed), (3, 0));
        assert!(drained[0].to <= drained[0].from + WINDOW);
        assert!(l.drain().is_empty());
    }
}
