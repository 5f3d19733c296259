//! Repeated identical decisions, counted instead of written, for `fdbroker run`.
//!
//! A scanner under transparent mode asks the same thing many times (`clamscan -r`
//! stats every parent directory again for each file): six audit lines per file, most
//! of them copies. In a run (spawn mode, where one worker is served and its log is
//! read as a whole) the first line of each distinct decision is written as always;
//! each later decision identical to it — the same uid, client, path, access, rule and
//! verdict (for a grant, the same inode) — is only counted, and the counts are written
//! as one `repeated` line per decision when the event loop's timer ticks and when the
//! broker stops. Nothing is lost: every decision is either a line or in a count.
//!
//! Off in `fdbroker serve`, where each decision keeps its own line (and its time).
//! Bounded: at most [`MAX_DECISIONS`] distinct decisions are remembered; past that,
//! every decision is written again.

use crate::audit::{Action, Escaped, TARGET, Verdict, fnv1a64};
use fdbroker_shared::peer::PeerCredentials;
use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Most distinct decisions remembered in one run.
pub const MAX_DECISIONS: usize = 8192;

static ENABLED: AtomicBool = AtomicBool::new(false);
static SEEN: Mutex<Option<HashMap<u64, Seen>>> = Mutex::new(None);

struct Seen {
    uid: u32,
    /// The whole decision, as hashed: compared in full, so that only an identical
    /// decision is ever counted (a worker chooses the path, and can find FNV-1a
    /// collisions); the path is `key[path]`.
    key: Vec<u8>,
    path: std::ops::Range<usize>,
    action: Action,
    result: &'static str,
    /// Repeats since the last summary.
    count: u64,
}

/// Count repeats from now on (spawn mode calls this once, before it serves).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether this decision repeats one already written: then it is counted and `true`
/// (write nothing); the first of its kind is remembered and `false` (write it).
pub fn repeated(
    peer: &PeerCredentials,
    client: &str,
    path: &[u8],
    action: Action,
    rule: Option<&dyn fmt::Display>,
    verdict: Verdict<'_>,
) -> bool {
    if !ENABLED.load(Ordering::Relaxed) {
        return false;
    }
    let (result, detail) = match verdict {
        Verdict::Granted { ino } => ("granted", ino.to_string()),
        Verdict::Denied(why) => ("denied", why.to_string()),
        Verdict::Failed(why) => ("failed", why.to_string()),
    };
    let rule = rule.map(|r| r.to_string()).unwrap_or_default();
    let mut key = Vec::with_capacity(path.len() + client.len() + rule.len() + detail.len() + 64);
    let mut path_at = 0..0;
    for (i, part) in [
        &peer.uid.to_ne_bytes()[..],
        client.as_bytes(),
        path,
        action.as_str().as_bytes(),
        rule.as_bytes(),
        result.as_bytes(),
        detail.as_bytes(),
    ]
    .into_iter()
    .enumerate()
    {
        key.extend_from_slice(&(part.len() as u64).to_ne_bytes());
        if i == 2 {
            path_at = key.len()..key.len() + part.len();
        }
        key.extend_from_slice(part);
    }
    let hash = fnv1a64(&key);
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let seen = seen.get_or_insert_with(HashMap::new);
    if let Some(s) = seen.get_mut(&hash) {
        // A 64-bit hash of the whole decision, which is compared too: a collision can
        // only ever cost a line, never hide another decision.
        if s.key == key {
            s.count += 1;
            return true;
        }
        return false;
    }
    if seen.len() < MAX_DECISIONS {
        seen.insert(
            hash,
            Seen {
                uid: peer.uid,
                key,
                path: path_at,
                action,
                result,
                count: 0,
            },
        );
    }
    false
}

impl Seen {
    fn path_bytes(&self) -> &[u8] {
        self.key.get(self.path.clone()).unwrap_or_default()
    }
}

/// Write one `repeated` line for each decision repeated since the last summary, and
/// start counting again.
pub fn summarise() {
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let Some(seen) = seen.as_mut() else {
        return;
    };
    for s in seen.values_mut().filter(|s| s.count > 0) {
        tracing::info!(
            target: TARGET,
            uid = s.uid,
            path = %Escaped(s.path_bytes()),
            access = s.action.as_str(),
            result = s.result,
            repeated = s.count,
            "the same decision again",
        );
        s.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_each_decision_is_written_and_repeats_counted() {
        enable();
        let peer = PeerCredentials {
            pid: 1,
            uid: 4242,
            gid: 4242,
        };
        let path = b"/repeats-test/a";
        let granted = Verdict::Granted { ino: 7 };
        assert!(!repeated(&peer, "c", path, Action::Stat, None, granted));
        assert!(repeated(&peer, "c", path, Action::Stat, None, granted));
        assert!(repeated(&peer, "c", path, Action::Stat, None, granted));
        // Another inode, access, path or uid is another decision.
        assert!(!repeated(
            &peer,
            "c",
            path,
            Action::Stat,
            None,
            Verdict::Granted { ino: 8 }
        ));
        assert!(!repeated(&peer, "c", path, Action::List, None, granted));
        assert!(!repeated(
            &peer,
            "c",
            b"/repeats-test/b",
            Action::Stat,
            None,
            granted
        ));
        let other = PeerCredentials { uid: 4243, ..peer };
        assert!(!repeated(&other, "c", path, Action::Stat, None, granted));
        let count = |p: &[u8]| {
            SEEN.lock().expect("lock").as_ref().map_or(0, |m| {
                m.values()
                    .filter(|s| s.path_bytes() == p && s.uid == 4242 && s.action == Action::Stat)
                    .map(|s| s.count)
                    .sum::<u64>()
            })
        };
        assert_eq!(count(path), 2);
        summarise();
        assert_eq!(count(path), 0);
        // Still remembered: the next repeat is counted, not written.
        assert!(repeated(&peer, "c", path, Action::Stat, None, granted));
    }

    /// F7 (review r20): a 64-bit FNV-1a hash is not collision resistant, and a worker
    /// chooses the path. Two different decisions about the *same* path whose keys
    /// collide (here: a grant remembered under the hash a later denial of that path
    /// has) must not make the denial a counted repeat of the grant: it would never get
    /// its own line, and the summary line would call it `granted`.
    #[test]
    fn review_f7_a_colliding_decision_about_the_same_path_is_written() {
        enable();
        let peer = PeerCredentials {
            pid: 1,
            uid: 4244,
            gid: 4244,
        };
        let path = b"/repeats-test/collide";
        let why = "denied by deny rule #1";
        // The key `repeated` hashes for the denial.
        let mut key = Vec::new();
        for part in [
            &peer.uid.to_ne_bytes()[..],
            b"c",
            path,
            Action::Stat.as_str().as_bytes(),
            b"",
            b"denied",
            why.as_bytes(),
        ] {
            key.extend_from_slice(&(part.len() as u64).to_ne_bytes());
            key.extend_from_slice(part);
        }
        // A grant of the same path that collided with it was remembered first.
        let grant = Seen {
            uid: peer.uid,
            key: b"a grant of the same path, colliding".to_vec(),
            path: 0..0,
            action: Action::Stat,
            result: "granted",
            count: 0,
        };
        SEEN.lock()
            .expect("lock")
            .get_or_insert_with(HashMap::new)
            .insert(fnv1a64(&key), grant);
        assert!(
            !repeated(&peer, "c", path, Action::Stat, None, Verdict::Denied(&why)),
            "a denial was counted as a repeat of a grant whose hash it shares"
        );
    }
}
