//! One structured line per decision: who, what, which rule, and the result.
//!
//! Paths come from the worker, so they are escaped before they reach the log: a
//! newline or terminal escape in a file name must not forge or hide an audit line.
//! They are also cut to a bounded length ([`Escaped`]), and refusals are capped per
//! uid ([`crate::audit::limit`]): what a worker sends must not decide how fast the log
//! grows.

pub mod batch;
pub mod counts;
pub mod escape;
mod journal;
pub mod limit;
pub mod line;
pub mod refused;
pub mod repeats;
pub mod tally;

pub use batch::{Batch, Unwritten, Written, trail_failing};
pub use escape::{Bare, Escaped, PREFIX, WHOLE, fnv1a64};

use crate::audit::limit::{Limiter, Summary};
use batch::Fields;
use fdbroker_shared::peer::PeerCredentials;
use fdbroker_shared::wire::Access;
use std::fmt;
use std::sync::LazyLock;
use std::time::Instant;

/// Install the process-wide subscriber ([`crate::log::init`]) and, when it is ours,
/// let audit lines take the hand-formatted path, which writes the same bytes to the same
/// stderr; under another subscriber they go through it.
pub fn init_logging(format: crate::log::LogFormat) {
    if let Some(style) = crate::log::init(format) {
        batch::install(style);
    }
    crate::log::report_journal();
}

/// [`init_logging`], every line going to `file` instead of stderr
/// (`fdbroker run --log-file`).
pub fn init_logging_to_file(
    format: crate::log::LogFormat,
    file: std::os::fd::OwnedFd,
) -> std::io::Result<()> {
    if let Some(style) = crate::log::init_to_file(format, file)? {
        batch::install(style);
    }
    Ok(())
}

/// Where audit events go (a `tracing` target, so operators can route or filter it).
pub const TARGET: &str = "fdbroker::audit";

/// Refusals counted per uid, for the whole process (the uid, not a connection, is
/// the unit a worker cannot multiply).
static LIMITER: LazyLock<Limiter> = LazyLock::new(Limiter::new);

/// What a decision was about: an open with an access, or a stat (the metadata of a path,
/// decided like an open for `read` or `directory`). Logged as the access word, or `stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Open(Access),
    Stat,
    /// A listing the broker answers itself (`Op::List`).
    List,
    /// A description without following the last component (`Op::Link`).
    Link,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Open(a) => a.as_str(),
            Action::Stat => "stat",
            Action::List => "list",
            Action::Link => "lstat",
        }
    }
}

impl From<Access> for Action {
    fn from(a: Access) -> Action {
        Action::Open(a)
    }
}

/// The outcome part of an audit line.
#[derive(Clone, Copy)]
pub enum Verdict<'a> {
    Granted { ino: u64 },
    Denied(&'a dyn fmt::Display),
    Failed(&'a dyn fmt::Display),
}

/// Record one decision into `batch` (its lines are written when the batch is flushed,
/// before the reply) when the broker's own subscriber is installed, otherwise as a
/// `tracing` event (an embedding program's subscriber).
///
/// Every grant is written (in `fdbroker run`, only the first of identical ones: the
/// rest are counted, [`repeats`]). A refusal (denied or failed) is written if it is among the
/// first [`crate::audit::limit::LINES`] of its uid's window, and counted otherwise; the
/// count is written as one summary line when the window ends.
pub fn decision(
    batch: &mut Batch,
    peer: &PeerCredentials,
    client: &str,
    path: &[u8],
    access: impl Into<Action>,
    rule: Option<&dyn fmt::Display>,
    verdict: Verdict<'_>,
) {
    decide_and_count(
        batch,
        peer,
        client,
        path,
        access.into(),
        rule,
        verdict,
        true,
    );
}

/// [`decision`] for a directory descriptor refused because it would show what the
/// policy hides, where the answer is "list it through the broker instead". Transparent
/// mode always does (the program gets a stand-in holding the listing and sees no
/// refusal), so there it is written and counted like any denial but is not one of the
/// requests `fdbroker run` says at exit the policy refused (nor does it fail a run
/// under `--fail-on-denial`); the names the listing leaves out are counted there.
pub fn decision_listed_instead(
    batch: &mut Batch,
    peer: &PeerCredentials,
    client: &str,
    path: &[u8],
    access: impl Into<Action>,
    rule: Option<&dyn fmt::Display>,
    refusal: &dyn fmt::Display,
) {
    let refused = batch.via().is_none();
    let verdict = Verdict::Denied(refusal);
    decide_and_count(
        batch,
        peer,
        client,
        path,
        access.into(),
        rule,
        verdict,
        refused,
    );
}

#[allow(clippy::too_many_arguments)]
fn decide_and_count(
    batch: &mut Batch,
    peer: &PeerCredentials,
    client: &str,
    path: &[u8],
    access: Action,
    rule: Option<&dyn fmt::Display>,
    verdict: Verdict<'_>,
    a_refusal: bool,
) {
    let fields = Fields {
        peer,
        client,
        path,
        access,
        rule,
        verdict,
        via: batch.via(),
        mode: batch.mode(),
    };
    // Learn mode keeps every decision, also the repeats and the refusals the limit leaves
    // unwritten.
    if fields.mode.is_some() {
        tally::record(&fields);
    }
    let failed = match verdict {
        Verdict::Granted { .. } => None,
        Verdict::Denied(_) => Some(false),
        Verdict::Failed(_) => Some(true),
    };
    // Counted whether or not its line is written (a repeat's and a capped refusal's
    // are not).
    batch.count(
        client,
        rule,
        match failed {
            None => counts::Outcome::Granted,
            Some(false) => counts::Outcome::Denied,
            Some(true) => counts::Outcome::Failed,
        },
    );
    if let Verdict::Denied(_) = verdict
        && a_refusal
    {
        refused::request(path);
    }
    if repeats::repeated(peer, client, path, fields.access, rule, verdict) {
        // The first of its kind was written; this one is counted (`repeats`).
        return;
    }
    if let Some(failed) = failed {
        let admit = LIMITER.refusal(peer, client, failed, Instant::now());
        if let Some(ended) = admit.ended {
            summary(batch, &ended);
        }
        if !admit.write {
            return;
        }
    }
    if !batch.record(&fields) {
        // Another subscriber: its format is unknown; the text format's quoting is the
        // one that reads the same either way.
        via_tracing(&fields, true);
    }
}

/// Write the summaries of the refusal windows that have ended: called from the event
/// loop's timer, so a count is written even when its uid sends nothing more.
pub fn tick() {
    summaries(LIMITER.ended(Instant::now()));
    repeats::summarise();
}

/// Write what every open window has counted so far: called when the broker stops.
pub fn flush_suppressed() {
    summaries(LIMITER.drain());
    repeats::summarise();
}

/// Write `ended` summaries now, in one batch (none made when there are none: the timer
/// calls this every tick).
fn summaries(ended: Vec<Summary>) {
    if ended.is_empty() {
        return;
    }
    let mut batch = Batch::default();
    for s in &ended {
        summary(&mut batch, s);
    }
    batch.flush_summaries();
}

/// One window's refusals counted but not written, as one line (`WARN`: the audit trail of that
/// second is incomplete, and some worker is hammering the broker).
fn summary(batch: &mut Batch, s: &Summary) {
    if !batch.record_summary(s) {
        summary_via_tracing(s);
    }
}

/// The summary as a `tracing` event; `audit_line` writes the same line by hand.
pub(crate) fn summary_via_tracing(s: &Summary) {
    tracing::warn!(
        target: TARGET,
        uid = s.uid, pid = s.pid, client = s.client.as_str(),
        denied = s.denied, failed = s.failed,
        from = %line::Utc(s.from), to = %line::Utc(s.to),
        "{} more denials from uid {} suppressed", s.total(), s.uid,
    );
}

/// The decision as a `tracing` event; `audit_line` writes the same line by hand.
/// `quoted`: the path in quotes, as the text format writes it (a subscriber that quotes
/// strings itself, JSON, gets it bare). Denials are `WARN`, so `journalctl -p warning`
/// shows them; grants and failures `INFO`. A line without a rule says `rule="-"` (a
/// subscriber cannot write JSON's `null`).
pub(crate) fn via_tracing(f: &Fields<'_>, quoted: bool) {
    let Fields {
        peer,
        client,
        path,
        access,
        rule,
        verdict,
        via,
        mode,
    } = *f;
    let rule = rule.map(|r| r.to_string());
    let rule = rule.as_deref().unwrap_or("-");
    let path = if quoted {
        Escaped(path).to_string()
    } else {
        Bare(path).to_string()
    };
    let path = path.as_str();
    match verdict {
        Verdict::Granted { ino } => tracing::info!(
            target: TARGET,
            uid = peer.uid, gid = peer.gid, pid = peer.pid, client,
            path = %path, access = access.as_str(), rule,
            result = "granted", ino, via, mode,
        ),
        Verdict::Denied(why) => tracing::warn!(
            target: TARGET,
            uid = peer.uid, gid = peer.gid, pid = peer.pid, client,
            path = %path, access = access.as_str(), rule,
            result = "denied", reason = why.to_string().as_str(), via, mode,
        ),
        Verdict::Failed(why) => tracing::info!(
            target: TARGET,
            uid = peer.uid, gid = peer.gid, pid = peer.pid, client,
            path = %path, access = access.as_str(), rule,
            result = "failed", reason = why.to_string().as_str(), via, mode,
        ),
    }
}
