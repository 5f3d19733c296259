//! How many decisions were made, per client and rule, since the service started: what
//! `fdbroker status` and the `STATUS=` line report. Counted where every decision is
//! recorded ([`crate::audit::decision`]), before a refusal's line may be suppressed, so
//! the counts are whole even when the lines are capped.
//!
//! One server per process, so the tally is the process's. A reload replaces the server:
//! the old one sends its tally to the new one with the connections ([`Snapshot`] over
//! the handover socket), which adds it to its own, so counts and the start time survive
//! every reload. The successor trusts nothing it receives beyond its shape: a
//! predecessor that lies can only make the numbers wrong, never the decisions.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::{LazyLock, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// The most (client, rule) pairs kept: a bound on what many reloads of many policies
/// can make the map hold; past it, new pairs count under [`OTHER`].
pub const MAX_KEYS: usize = 4096;
/// The rule name of pairs counted past [`MAX_KEYS`].
pub const OTHER: &str = "(other rules)";
/// The rule name of decisions no rule made (nothing matched, a malformed path).
pub const NO_RULE: &str = "-";

/// Decisions of one kind of outcome.
#[derive(Serialize, Deserialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub granted: u64,
    pub denied: u64,
    pub failed: u64,
}

impl Counts {
    /// Every decision: what `status` calls requests (each path of a batch is one).
    pub fn requests(&self) -> u64 {
        self.granted + self.denied + self.failed
    }

    fn add(&mut self, o: &Counts) {
        self.granted = self.granted.saturating_add(o.granted);
        self.denied = self.denied.saturating_add(o.denied);
        self.failed = self.failed.saturating_add(o.failed);
    }
}

/// What a decision came to, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Granted,
    Denied,
    Failed,
}

/// The counts of one client's decisions by one rule.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RuleCount {
    pub client: String,
    /// `FILE:LINE:COL` of the rule when it decided, or [`NO_RULE`], or [`OTHER`].
    pub rule: String,
    #[serde(flatten)]
    pub counts: Counts,
}

/// The whole tally, as `status` reports it and a server hands it to its successor.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// When the first server of this service started (seconds since the epoch).
    pub started_unix: u64,
    /// In order of client, then rule.
    pub rules: Vec<RuleCount>,
}

impl Snapshot {
    /// The counts per client, in order of client.
    pub fn per_client(&self) -> Vec<(String, Counts)> {
        let mut out: Vec<(String, Counts)> = Vec::new();
        for r in &self.rules {
            match out.last_mut() {
                Some((c, counts)) if *c == r.client => counts.add(&r.counts),
                _ => out.push((r.client.clone(), r.counts)),
            }
        }
        out
    }

    /// The counts of every decision.
    pub fn total(&self) -> Counts {
        let mut t = Counts::default();
        for r in &self.rules {
            t.add(&r.counts);
        }
        t
    }
}

struct Tally {
    started_unix: u64,
    /// Keyed by `client NUL rule`, looked up by a borrowed `str`.
    by_pair: HashMap<String, Counts>,
}

static TALLY: LazyLock<Mutex<Tally>> = LazyLock::new(|| {
    Mutex::new(Tally {
        started_unix: now_unix(),
        by_pair: HashMap::new(),
    })
});

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn lock() -> std::sync::MutexGuard<'static, Tally> {
    TALLY.lock().unwrap_or_else(|p| p.into_inner())
}

/// The counts of the request being answered, kept by its thread's audit batch and
/// added to the process's tally once per request ([`Local::flush`]): one lock per
/// request rather than per decision, and, as the batch is reused, no allocation once
/// its pairs have been seen.
#[derive(Debug, Default)]
pub struct Local {
    /// `client NUL rule` and its counts since the last flush (zero once flushed; the
    /// keys are kept for the next request, up to [`LOCAL_KEYS`]).
    entries: Vec<(String, Counts)>,
    scratch: String,
}

/// Most pairs a batch keeps between requests.
const LOCAL_KEYS: usize = 16;

impl Local {
    /// Count one decision of `client` by `rule` (`None`: no rule made it).
    pub fn count(&mut self, client: &str, rule: Option<&dyn fmt::Display>, outcome: Outcome) {
        self.scratch.clear();
        self.scratch.push_str(client);
        self.scratch.push('\0');
        match rule {
            Some(r) => {
                let _ = write!(self.scratch, "{r}");
            }
            None => self.scratch.push_str(NO_RULE),
        }
        let at = match self.entries.iter().rposition(|(k, _)| *k == self.scratch) {
            Some(i) => i,
            None => {
                self.entries.push((self.scratch.clone(), Counts::default()));
                self.entries.len() - 1
            }
        };
        let counts = &mut self.entries[at].1;
        let slot = match outcome {
            Outcome::Granted => &mut counts.granted,
            Outcome::Denied => &mut counts.denied,
            Outcome::Failed => &mut counts.failed,
        };
        *slot = slot.saturating_add(1);
    }

    /// Add what was counted to the process's tally.
    pub fn flush(&mut self) {
        if self.entries.iter().all(|(_, c)| c.requests() == 0) {
            return;
        }
        let mut t = lock();
        for (key, counts) in &mut self.entries {
            if counts.requests() == 0 {
                continue;
            }
            match t.by_pair.get_mut(key.as_str()) {
                Some(c) => c.add(counts),
                None => {
                    let key = if t.by_pair.len() < MAX_KEYS {
                        key.clone()
                    } else {
                        let client = key.split('\0').next().unwrap_or_default();
                        format!("{client}\0{OTHER}")
                    };
                    t.by_pair.entry(key).or_default().add(counts);
                }
            }
            *counts = Counts::default();
        }
        drop(t);
        if self.entries.len() > LOCAL_KEYS {
            self.entries.clear();
        }
    }
}

/// Count one decision now (outside a batch).
pub fn count(client: &str, rule: Option<&dyn fmt::Display>, outcome: Outcome) {
    let mut local = Local::default();
    local.count(client, rule, outcome);
    local.flush();
}

/// The tally now, sorted by client and rule.
pub fn snapshot() -> Snapshot {
    let t = lock();
    let mut rules: Vec<RuleCount> = t
        .by_pair
        .iter()
        .map(|(key, counts)| {
            let (client, rule) = key.split_once('\0').unwrap_or((key.as_str(), NO_RULE));
            RuleCount {
                client: client.to_owned(),
                rule: rule.to_owned(),
                counts: *counts,
            }
        })
        .collect();
    rules.sort_by(|a, b| (&a.client, &a.rule).cmp(&(&b.client, &b.rule)));
    Snapshot {
        started_unix: t.started_unix,
        rules,
    }
}

/// Add a predecessor's tally to this process's: its counts, and its start time when
/// that is earlier (the service's start).
pub fn merge(from: &Snapshot) {
    let mut t = lock();
    if from.started_unix > 0 && from.started_unix < t.started_unix {
        t.started_unix = from.started_unix;
    }
    for r in &from.rules {
        // A name with a NUL would split differently: it cannot come from a policy.
        if r.client.contains('\0') || r.rule.contains('\0') {
            continue;
        }
        let key = if t.by_pair.len() < MAX_KEYS
            || t.by_pair.contains_key(&format!("{}\0{}", r.client, r.rule))
        {
            format!("{}\0{}", r.client, r.rule)
        } else {
            format!("{}\0{OTHER}", r.client)
        };
        t.by_pair.entry(key).or_default().add(&r.counts);
    }
}

/// The tally as the handover carries it.
pub fn encode() -> Vec<u8> {
    serde_json::to_vec(&snapshot()).unwrap_or_default()
}

/// A predecessor's tally, from the handover.
pub fn decode(bytes: &[u8]) -> Result<Snapshot, serde_json::Error> {
    serde_json::from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_merge_and_sort_by_client_then_rule() {
        count("b", Some(&"p.toml:3:8"), Outcome::Granted);
        count("a", None, Outcome::Denied);
        count("b", Some(&"p.toml:3:8"), Outcome::Failed);
        let before = snapshot();
        let wire = encode();
        let mut theirs = decode(&wire).expect("decodes");
        theirs.started_unix = 1;
        merge(&theirs);
        let after = snapshot();
        assert_eq!(after.started_unix, 1);
        let b = after
            .rules
            .iter()
            .find(|r| r.client == "b" && r.rule == "p.toml:3:8")
            .expect("b's rule");
        let b0 = before
            .rules
            .iter()
            .find(|r| r.client == "b" && r.rule == "p.toml:3:8")
            .expect("b's rule");
        assert_eq!(b.counts.requests(), 2 * b0.counts.requests());
        let clients: Vec<String> = after.per_client().into_iter().map(|(c, _)| c).collect();
        let mut sorted = clients.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(clients, sorted);
        assert!(decode(b"{\"started_unix\":\"x\"}").is_err());
    }
}
