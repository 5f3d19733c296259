//! Learn mode's memory of its decisions: every decision recorded with `mode="learn"`,
//! counted, for `fdbroker run --learn` to turn into rules when the worker has exited.
//!
//! Process-wide like the refusal limiter next to it: a spawn broker serves one worker,
//! and the tally is what that run saw. It is bounded by
//! [`fdbroker_policy::audit_log::MAX_RECORDS`] distinct decisions (more are counted as
//! dropped), and empty, costing one check per decision, unless [`start`] was called.

use crate::audit::Verdict;
use crate::audit::batch::Fields;
use fdbroker_policy::audit_log::{Action, Evidence, Outcome, Record, Refusal};
use std::sync::{Mutex, OnceLock};

static TALLY: OnceLock<Mutex<Evidence>> = OnceLock::new();

/// Keep every learn-mode decision from now on.
pub fn start() {
    let _ = TALLY.set(Mutex::new(Evidence::default()));
}

/// What was kept so far (empty if [`start`] was never called).
pub fn take() -> Evidence {
    match TALLY.get() {
        Some(m) => std::mem::take(&mut *m.lock().unwrap_or_else(|p| p.into_inner())),
        None => Evidence::default(),
    }
}

pub(crate) fn record(f: &Fields<'_>) {
    let Some(tally) = TALLY.get() else { return };
    let action = match f.access {
        crate::audit::Action::Open(a) => Action::Open(a),
        // Decided as a stat is (see `Op::Link`): learnt as one.
        crate::audit::Action::Stat | crate::audit::Action::Link => Action::Stat,
        crate::audit::Action::List => Action::List,
    };
    let (outcome, refusal, missing) = match f.verdict {
        Verdict::Granted { .. } => (Outcome::Granted, None, false),
        Verdict::Denied(why) => (
            Outcome::Denied,
            Some(Refusal::of_reason(&why.to_string())),
            false,
        ),
        Verdict::Failed(why) => (
            Outcome::Failed,
            None,
            why.to_string()
                .starts_with(fdbroker_policy::audit_log::MISSING),
        ),
    };
    let rec = Record {
        client: f.client.to_owned(),
        uid: Some(f.peer.uid),
        gid: Some(f.peer.gid),
        path: f.path.to_vec(),
        action,
        outcome,
        rule: f.rule.map(|r| r.to_string()),
        learn: true,
        refusal,
        missing,
    };
    tally.lock().unwrap_or_else(|p| p.into_inner()).add(rec, 1);
}
