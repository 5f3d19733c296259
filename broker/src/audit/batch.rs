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
//! connection's send takes, and only a flush makes one.
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
use fdbroker_shared::peer::PeerCredentials;
use std::fmt;
use std::io::Write as _;
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
}

/// The audit lines of the request being answered, and the scratch space for formatting
/// them: one per event-loop thread, reused for every request.
pub struct Batch {
    out: Vec<u8>,
    scratch: String,
    clock: Clock,
    via: Option<&'static str>,
}

/// Proof that a batch's lines have been written: what a reply with descriptors needs
/// before it may be sent. Only [`Batch::flush`] makes one.
#[derive(Debug)]
#[must_use = "a reply is sent only once its audit lines are written"]
pub struct Written(());

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
            scratch: String::with_capacity(256),
            clock: Clock::default(),
            via: None,
        }
    }
}

/// A batch dropped with lines still in it (a panic while answering) writes them: an
/// audit line is never lost, even for a reply that was never sent.
impl Drop for Batch {
    fn drop(&mut self) {
        let _ = self.flush();
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

    /// How the request being recorded came.
    pub fn via(&self) -> Option<&'static str> {
        self.via
    }

    /// Write the collected lines to stderr with one `write(2)`, where the subscriber
    /// writes too (its lock keeps other threads' lines from landing inside ours). A
    /// failed write is dropped, as the subscriber drops it.
    pub fn flush(&mut self) -> Written {
        if !self.out.is_empty() {
            let _ = std::io::stderr().lock().write_all(&self.out);
            self.out.clear();
        }
        Written(())
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
        )
    }

    /// Record a summary of suppressed refusals on the fast path; like [`Batch::record`].
    pub fn record_summary(&mut self, summary: &Summary) -> bool {
        let enabled = tracing::enabled!(
            target: TARGET,
            tracing::Level::WARN,
            message, uid, pid, client, denied, failed, from, to
        );
        self.queue(enabled, |style, now, out, scratch, clock| {
            format_summary(style, now, summary, out, scratch, clock);
        })
    }

    /// Append a line made by `format` to the pending lines. `enabled`: whether the
    /// subscriber's filter lets it through.
    fn queue(
        &mut self,
        enabled: bool,
        format: impl FnOnce(Style, std::time::Duration, &mut Vec<u8>, &mut String, &mut Clock),
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
        Verdict::Denied(_) | Verdict::Failed(_) => tracing::enabled!(
            target: TARGET,
            tracing::Level::INFO,
            uid, gid, pid, client, path, access, rule, result, reason
        ),
    }
}
