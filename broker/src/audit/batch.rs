//! The audit line, formatted by hand into a per-thread buffer and written once per
//! request.
//!
//! Going through `tracing-subscriber` cost 2.2-2.4 µs per decision, more than the
//! broker's own `openat2`: field visitors, a `String` for the rule label and another for
//! the line, and one `write(2)` per line. This module produces the same bytes that the
//! subscriber `log::init` installs would (the unit tests of `audit::line` compare the two
//! for every format), appends them to a buffer the thread reuses, and writes everything
//! one request decided with a single `write(2)` when its [`Batch`] ends, which the
//! connection does before the reply goes out: a descriptor is never delivered before
//! the line that records it has been written.
//!
//! That order is in the signatures: [`Batch::flush`] returns the [`Written`] that the
//! connection's send takes, and only a flush makes one. A flush that could not write
//! (the log destination fails; see `crate::log::sink`) returns [`Unwritten`] instead,
//! which becomes a `Written` only through the choice `[broker] audit_failure` makes:
//! refuse the reply's descriptors, or serve it with its lines lost and counted.
//!
//! The summary line of refusals counted instead of written (`audit_limit`) goes the
//! same way ([`Batch::record_summary`]), so it lands in order with the lines around it.
//!
//! It is used only when `log::init` installed the broker's own subscriber (so the
//! destination and format are known; [`install`]), and only for events `tracing` says
//! are enabled, so `FDBROKER_LOG` (`fdbroker::audit=off`, levels, field directives)
//! filters exactly as before. Otherwise [`Batch::record`] declines and
//! `audit::decision` emits the `tracing` event itself.

use crate::audit::limit::Summary;
use crate::audit::line::{Clock, format_line, format_summary};
use crate::audit::{TARGET, Verdict};
use crate::log::Style;
use crate::log::sink;
use fdbroker_shared::peer::PeerCredentials;
use std::fmt;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

static STYLE: OnceLock<Style> = OnceLock::new();

/// Take the hand-formatted path from now on: called once `log::init` has made its
/// subscriber, which writes lines in `style`, the global one.
pub fn install(style: Style) {
    let _ = STYLE.set(style);
}

/// One decision, as the audit line records it.
#[derive(Clone, Copy)]
pub struct Fields<'a> {
    pub peer: &'a PeerCredentials,
    pub client: &'a str,
    pub path: &'a [u8],
    pub access: crate::audit::Action,
    pub rule: Option<&'a dyn fmt::Display>,
    pub verdict: Verdict<'a>,
    /// How the request came: `Some("transparent")` for a program's own call answered
    /// by `fdbroker run --transparent`; `None` (no field) for a client's request.
    pub via: Option<&'static str>,
    /// `Some("learn")` for a client in learn mode (`learn_scope`, `fdbroker run
    /// --learn`): the line may record a grant no rule the operator wrote made.
    pub mode: Option<&'static str>,
}

/// Why the log destination fails, while it is known to: a request that would change
/// the filesystem is then refused before it does under `audit_failure = "refuse"`
/// (its line would be lost). The refusal's own line is a write that finds out when the
/// destination works again.
pub fn trail_failing() -> Option<nix::errno::Errno> {
    sink::health().failing.map(|(_, error)| error)
}

/// The audit lines of the request being answered, and the scratch space for formatting
/// them: one per event-loop thread, reused for every request.
pub struct Batch {
    out: Vec<u8>,
    /// How many lines `out` holds.
    lines: u64,
    /// Under journald with its native socket: where each entry in `out` ends (one
    /// datagram each), and the line formatted for an entry's `MESSAGE=`.
    ends: Vec<usize>,
    line: Vec<u8>,
    /// The request's decision counts, added to the process's at each write.
    tally: crate::audit::counts::Local,
    scratch: String,
    clock: Clock,
    via: Option<&'static str>,
    mode: Option<&'static str>,
}

/// Proof that a batch's lines have been written (or, by `audit_failure`'s choice, that
/// losing them was decided: [`Unwritten`]): what a reply with descriptors needs before
/// it may be sent. Only [`Batch::flush`] and [`Unwritten`] make one.
#[derive(Debug)]
#[must_use = "a reply is sent only once its audit lines are written"]
pub struct Written(());

/// A batch's lines could not be written (the log destination fails: a full disk, a
/// reader gone or stalled). They are counted lost ([`crate::log::sink::Health`]); what
/// the reply does now is `audit_failure`'s choice, made by whoever holds this: the answer
/// to a request is refused ([`Unwritten::refused`]), or sent anyway
/// ([`Unwritten::serve_anyway`]).
#[derive(Debug)]
#[must_use = "a reply whose audit lines were lost is refused or served, as audit_failure says"]
pub struct Unwritten {
    /// How many lines were lost.
    pub lines: u64,
    /// Why.
    pub error: nix::errno::Errno,
}

impl Unwritten {
    /// `audit_failure = "serve"`: send the reply although its lines were lost.
    pub fn serve_anyway(self) -> Written {
        Written(())
    }

    /// `audit_failure = "refuse"`: the reply that replaces the answer to a request
    /// (granted or not: nothing is answered unrecorded); it may go out with this proof.
    pub fn refused(self) -> (Written, fdbroker_shared::wire::WireError) {
        let why = fdbroker_shared::wire::WireError::new(
            nix::errno::Errno::EIO as i32,
            format!(
                "refused: the broker cannot write its audit trail ({}), and grants nothing \
                 it cannot record (audit_failure = \"refuse\"); try again later",
                self.error.desc()
            ),
        );
        (Written(()), why)
    }
}

impl Written {
    /// For a reply a predecessor server built and parked, then handed over: it wrote
    /// the reply's lines before parking it.
    pub(crate) fn by_predecessor() -> Written {
        Written(())
    }
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            out: Vec::with_capacity(4096),
            lines: 0,
            ends: Vec::new(),
            line: Vec::new(),
            tally: crate::audit::counts::Local::default(),
            scratch: String::with_capacity(256),
            clock: Clock::default(),
            via: None,
            mode: None,
        }
    }
}

/// A batch dropped with lines still in it (a panic while answering) writes them: an
/// audit line is never lost, even for a reply that was never sent.
impl Drop for Batch {
    fn drop(&mut self) {
        let _ = self.write();
    }
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("pending_bytes", &self.out.len())
            .field("via", &self.via)
            .finish()
    }
}

impl Batch {
    /// Mark every line recorded from now on `via` (`fdbroker run --transparent` marks
    /// the answers to a program's own calls `via="transparent"`), or nothing (`None`).
    pub fn set_via(&mut self, via: Option<&'static str>) {
        self.via = via;
    }

    /// Mark every line recorded from now on with `mode` (`Some("learn")`), or nothing.
    pub fn set_mode(&mut self, mode: Option<&'static str>) {
        self.mode = mode;
    }

    pub fn mode(&self) -> Option<&'static str> {
        self.mode
    }

    /// How the request being recorded came.
    pub fn via(&self) -> Option<&'static str> {
        self.via
    }

    /// Write the collected lines with one `write(2)` through [`crate::log::sink`],
    /// where the subscriber writes too (its lock keeps other threads' lines from landing
    /// inside ours). `Err` when they could not be written: they are lost and counted,
    /// and the caller decides what the reply does ([`Unwritten`]).
    pub fn flush(&mut self) -> Result<Written, Unwritten> {
        match self.write() {
            Ok(()) => Ok(Written(())),
            Err((lines, error)) => Err(Unwritten { lines, error }),
        }
    }

    /// Lines that say what happened but grant nothing (summaries of refusals): written
    /// if they can be, counted lost otherwise.
    pub fn flush_summaries(&mut self) {
        let _ = self.write();
    }

    /// Count one decision for `status` (added to the process's tally at the write).
    pub fn count(
        &mut self,
        client: &str,
        rule: Option<&dyn fmt::Display>,
        outcome: crate::audit::counts::Outcome,
    ) {
        self.tally.count(client, rule, outcome);
    }

    fn write(&mut self) -> Result<(), (u64, nix::errno::Errno)> {
        self.tally.flush();
        if self.out.is_empty() {
            return Ok(());
        }
        let lines = std::mem::take(&mut self.lines);
        let result = if self.ends.is_empty() {
            sink::write_line(&self.out, lines, sink::Kind::Audit)
        } else {
            sink::write_entries(&self.out, &self.ends, sink::Kind::Audit)
        };
        self.out.clear();
        self.ends.clear();
        result.map_err(|e| (lines, e))
    }

    /// Record one decision on the fast path. Returns false when this path does not
    /// apply (another subscriber) and the caller must go through `tracing`; true when
    /// the line was queued or the filter turned it off.
    pub fn record(&mut self, fields: &Fields<'_>) -> bool {
        self.queue(
            enabled(&fields.verdict),
            |style, now, out, scratch, clock| {
                format_line(style, now, fields, out, scratch, clock);
            },
            |line, out, scratch| super::journal::entry(fields, line, out, scratch),
        )
    }

    /// Record a summary of suppressed refusals on the fast path; like [`Batch::record`].
    pub fn record_summary(&mut self, summary: &Summary) -> bool {
        let enabled = tracing::enabled!(
            target: TARGET,
            tracing::Level::WARN,
            message, uid, pid, client, denied, failed, from, to
        );
        self.queue(
            enabled,
            |style, now, out, scratch, clock| {
                format_summary(style, now, summary, out, scratch, clock);
            },
            |line, out, scratch| super::journal::summary_entry(summary, line, out, scratch),
        )
    }

    /// Append a line made by `format` to the pending lines, or, under journald with its
    /// native socket, the entry `entry` makes of it. `enabled`: whether the
    /// subscriber's filter lets it through.
    fn queue(
        &mut self,
        enabled: bool,
        format: impl FnOnce(Style, std::time::Duration, &mut Vec<u8>, &mut String, &mut Clock),
        entry: impl FnOnce(&[u8], &mut Vec<u8>, &mut String),
    ) -> bool {
        let Some(style) = STYLE.get().copied() else {
            return false;
        };
        if !enabled {
            return true;
        }
        let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) else {
            // Before 1970: leave the rare timestamp to the subscriber.
            return false;
        };
        self.lines += 1;
        if style.journal && sink::journal_installed() {
            self.line.clear();
            format(
                style,
                now,
                &mut self.line,
                &mut self.scratch,
                &mut self.clock,
            );
            entry(&self.line, &mut self.out, &mut self.scratch);
            self.ends.push(self.out.len());
            return true;
        }
        format(
            style,
            now,
            &mut self.out,
            &mut self.scratch,
            &mut self.clock,
        );
        true
    }
}

/// Whether the subscriber's filter lets this event through, asked with the same target,
/// level and field names the `tracing` event carries.
fn enabled(verdict: &Verdict<'_>) -> bool {
    match verdict {
        Verdict::Granted { .. } => tracing::enabled!(
            target: TARGET,
            tracing::Level::INFO,
            uid, gid, pid, client, path, access, rule, result, ino
        ),
        // Denials are warnings (`audit::via_tracing`).
        Verdict::Denied(_) => tracing::enabled!(
            target: TARGET,
            tracing::Level::WARN,
            uid, gid, pid, client, path, access, rule, result, reason
        ),
        Verdict::Failed(_) => tracing::enabled!(
            target: TARGET,
            tracing::Level::INFO,
            uid, gid, pid, client, path, access, rule, result, reason
        ),
    }
}
