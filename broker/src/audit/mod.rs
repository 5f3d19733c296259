//! One structured line per decision: who, what, which rule, and the result.
//!
//! Paths come from the worker, so they are escaped before they reach the log: a
//! newline or terminal escape in a file name must not forge or hide an audit line.
//! They are also cut to a bounded length ([`Escaped`]), and refusals are capped per
//! uid ([`crate::audit::limit`]): what a worker sends must not decide how fast the log
//! grows.

pub mod limit;
pub mod line;

use crate::audit::limit::{Limiter, Summary};
use fdbroker_shared::peer::PeerCredentials;
use fdbroker_shared::wire::Access;
use line::Fields;
use std::fmt;
use std::sync::LazyLock;
use std::time::Instant;

/// Where audit events go (a `tracing` target, so operators can route or filter it).
pub const TARGET: &str = "fdbroker::audit";

/// Longest escaped text (between the quotes) written whole.
pub const WHOLE: usize = 256;
/// How much of a longer text's escaped form is written before the cut.
pub const PREFIX: usize = 200;

/// A worker-supplied byte string, printed quoted with everything but printable ASCII
/// escaped as `\xNN` (and `\"`, `\\`).
///
/// Bounded: when the escaped text would be longer than [`WHOLE`] characters, only as
/// many bytes as fit in [`PREFIX`] escaped characters are written (never half an
/// escape), then `…(len=BYTES, fnv1a64=HASH)` inside the quotes: the length in bytes
/// of the whole string and its 64-bit FNV-1a hash ([`fnv1a64`]) in 16 hex digits, so
/// lines about the same long path can be matched. The `…` cannot come from the
/// string itself (every non-ASCII byte is escaped), so a cut is never ambiguous. At
/// most 240 characters are written between the quotes for anything up to 99,999 bytes
/// (a message is at most 64 KiB).
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0;
        f.write_str("\"")?;
        if fitting(bytes, WHOLE) == bytes.len() {
            escape(f, bytes)?;
        } else {
            escape(f, &bytes[..fitting(bytes, PREFIX)])?;
            write!(
                f,
                "\u{2026}(len={}, fnv1a64={:016x})",
                bytes.len(),
                fnv1a64(bytes)
            )?;
        }
        f.write_str("\"")
    }
}

impl Escaped<'_> {
    /// Append the same text as [`fmt::Display`] to `out`, without going through the
    /// formatter for the common case of a short path of plain ASCII (the audit line's
    /// fast path writes every request's path this way).
    pub fn push_to(&self, out: &mut Vec<u8>) {
        let bytes = self.0;
        if bytes.len() <= WHOLE && bytes.iter().all(|&b| escaped_width(b) == 1) {
            out.push(b'"');
            out.extend_from_slice(bytes);
            out.push(b'"');
        } else {
            use std::io::Write as _;
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{self}");
        }
    }
}

/// How many characters `b` takes escaped.
fn escaped_width(b: u8) -> usize {
    match b {
        b'"' | b'\\' => 2,
        0x20..0x7f => 1,
        _ => 4,
    }
}

/// The length of the longest prefix of `bytes` whose escaped form fits in `budget`
/// characters (looks at no more than `budget + 1` bytes).
fn fitting(bytes: &[u8], budget: usize) -> usize {
    let mut used = 0;
    for (i, &b) in bytes.iter().enumerate() {
        used += escaped_width(b);
        if used > budget {
            return i;
        }
    }
    bytes.len()
}

fn escape(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if escaped_width(b) == 1 {
            continue;
        }
        // Runs of plain bytes are ASCII, so from_utf8 cannot fail on them.
        f.write_str(std::str::from_utf8(&bytes[start..i]).unwrap_or(""))?;
        match b {
            b'"' => f.write_str("\\\"")?,
            b'\\' => f.write_str("\\\\")?,
            _ => write!(f, "\\x{b:02x}")?,
        }
        start = i + 1;
    }
    f.write_str(std::str::from_utf8(&bytes[start..]).unwrap_or(""))
}

/// 64-bit FNV-1a of `bytes` (offset basis `0xcbf29ce484222325`, prime
/// `0x100000001b3`): a well-known hash anyone can recompute from a path, so a cut
/// path in the log can be matched with a file name. Not a security feature: a worker
/// can make two paths with the same hash; it only helps an operator correlate lines.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Refusals counted per uid, for the whole process (the uid, not a connection, is
/// the unit a worker cannot multiply).
static LIMITER: LazyLock<Limiter> = LazyLock::new(Limiter::new);

/// What a decision was about: an open with an access, or a stat (the metadata of a path,
/// decided like an open for `read` or `directory`). Logged as the access word, or `stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Open(Access),
    Stat,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Open(a) => a.as_str(),
            Action::Stat => "stat",
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

thread_local! {
    /// How the request being answered on this thread came (see [`via`]).
    static VIA: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with every audit line it writes on this thread marked `via` (`fdbroker run
/// --transparent` marks the answers to a program's own calls `via="transparent"`).
pub fn via<R>(via: Option<&'static str>, f: impl FnOnce() -> R) -> R {
    let before = VIA.with(|v| v.replace(via));
    let result = f();
    VIA.with(|v| v.set(before));
    result
}

/// Record one decision: on `audit_line`'s fast path when the broker's own subscriber
/// is installed, otherwise as a `tracing` event (an embedding program's subscriber).
///
/// Every grant is written. A refusal (denied or failed) is written if it is among the
/// first [`crate::audit::limit::LINES`] of its uid's window, and counted otherwise; the
/// count is written as one summary line when the window ends.
pub fn decision(
    peer: &PeerCredentials,
    client: &str,
    path: &[u8],
    access: impl Into<Action>,
    rule: Option<&dyn fmt::Display>,
    verdict: Verdict<'_>,
) {
    let failed = match verdict {
        Verdict::Granted { .. } => None,
        Verdict::Denied(_) => Some(false),
        Verdict::Failed(_) => Some(true),
    };
    if let Some(failed) = failed {
        let admit = LIMITER.refusal(peer, client, failed, Instant::now());
        if let Some(ended) = admit.ended {
            summary(&ended);
        }
        if !admit.write {
            return;
        }
    }
    let fields = Fields {
        peer,
        client,
        path,
        access: access.into(),
        rule,
        verdict,
        via: VIA.with(std::cell::Cell::get),
    };
    if !line::record(&fields) {
        via_tracing(&fields);
    }
}

/// Write the summaries of the refusal windows that have ended: called from the event
/// loop's timer, so a count is written even when its uid sends nothing more.
pub fn tick() {
    for s in LIMITER.ended(Instant::now()) {
        summary(&s);
    }
}

/// Write what every open window has counted so far: called when the broker stops.
pub fn flush_suppressed() {
    for s in LIMITER.drain() {
        summary(&s);
    }
}

/// One window's refusals counted but not written, as one line (`WARN`: the audit trail of that
/// second is incomplete, and some worker is hammering the broker).
fn summary(s: &Summary) {
    if !line::record_summary(s) {
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
pub(crate) fn via_tracing(f: &Fields<'_>) {
    let Fields {
        peer,
        client,
        path,
        access,
        rule,
        verdict,
        via,
    } = *f;
    let rule = rule.map(|r| r.to_string());
    let rule = rule.as_deref().unwrap_or("-");
    match verdict {
        Verdict::Granted { ino } => tracing::info!(
            target: TARGET,
            uid = peer.uid, gid = peer.gid, pid = peer.pid, client,
            path = %Escaped(path), access = access.as_str(), rule,
            result = "granted", ino, via,
        ),
        Verdict::Denied(why) => tracing::info!(
            target: TARGET,
            uid = peer.uid, gid = peer.gid, pid = peer.pid, client,
            path = %Escaped(path), access = access.as_str(), rule,
            result = "denied", reason = %why, via,
        ),
        Verdict::Failed(why) => tracing::info!(
            target: TARGET,
            uid = peer.uid, gid = peer.gid, pid = peer.pid, client,
            path = %Escaped(path), access = access.as_str(), rule,
            result = "failed", reason = %why, via,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_could_forge_a_line() {
        assert_eq!(Escaped(b"/a b").to_string(), "\"/a b\"");
        for bytes in [
            &b"/a b"[..],
            b"",
            b"/x\nINFO fake\x1b[2J\"\\\xff",
            &[b'a'; WHOLE],
            &[b'a'; WHOLE + 1],
            &[0xff; WHOLE],
        ] {
            let mut pushed = Vec::new();
            Escaped(bytes).push_to(&mut pushed);
            assert_eq!(pushed, Escaped(bytes).to_string().into_bytes());
        }
        assert_eq!(
            Escaped(b"/x\nINFO fake\x1b[2J\"\\\xff").to_string(),
            "\"/x\\x0aINFO fake\\x1b[2J\\\"\\\\\\xff\""
        );
    }
}

#[cfg(test)]
mod bounded {
    use super::*;

    #[test]
    fn fnv1a64_is_the_published_function() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn long_strings_are_cut_with_their_length_and_hash() {
        // Up to WHOLE escaped characters: whole.
        let plain = vec![b'a'; WHOLE];
        assert_eq!(
            Escaped(&plain).to_string(),
            format!("\"{}\"", "a".repeat(WHOLE))
        );
        let escaped = [0xffu8; WHOLE / 4];
        assert_eq!(Escaped(&escaped).to_string().len(), WHOLE + 2);
        // One more: cut at PREFIX characters, never inside an escape.
        let mut long = vec![b'/'];
        long.extend_from_slice(&[0xfe; 4095]);
        let text = Escaped(&long).to_string();
        let want = format!(
            "\"/{}\u{2026}(len=4096, fnv1a64={:016x})\"",
            "\\xfe".repeat((PREFIX - 1) / 4),
            fnv1a64(&long)
        );
        assert_eq!(text, want);
        let mut over = plain.clone();
        over.push(b'"');
        let text = Escaped(&over).to_string();
        assert!(text.starts_with(&format!("\"{}\u{2026}(len=257, ", "a".repeat(PREFIX))));
        // The longest possible output, whatever the input.
        let huge = vec![b'a'; 65_536];
        let text = Escaped(&huge).to_string();
        assert!(text.chars().count() <= 240 + 2, "{text}");
    }
}
