//! The audit line as a native journal entry (`systemd.journal-fields(7)`; the wire form
//! of `sd_journal_sendv(3)`, <https://systemd.io/JOURNAL_NATIVE_PROTOCOL/>), for a broker
//! whose stderr is the journal: the same line as `MESSAGE=` and each field of its own,
//! so `journalctl FDBROKER_RESULT=denied` or `FDBROKER_CLIENT=scanner` selects decisions
//! and `journalctl -p warning` shows denials.
//!
//! A field is `NAME=value\n`, or, for a value that may hold a newline, `NAME\n`, its
//! length as a little-endian `u64`, the value, `\n`. Worker-supplied bytes (the path)
//! go in their escaped form ([`crate::audit::Bare`]), bounded like the line's, so an
//! entry is small and no field can be forged; the client name and reason, which a policy
//! or the kernel wrote, go in the length-prefixed form, which needs no escaping.

use crate::audit::Bare;
use crate::audit::batch::Fields;
use crate::audit::limit::Summary;
use crate::audit::{TARGET, Verdict};
use std::fmt::Write as _;

/// The entry for one decision, appended to `out`; `line` is the text line the stream
/// would get (its `<N>` prefix and newline are left out of `MESSAGE=`).
pub(super) fn entry(f: &Fields<'_>, line: &[u8], out: &mut Vec<u8>, scratch: &mut String) {
    let (result, priority) = match f.verdict {
        Verdict::Granted { .. } => ("granted", b'6'),
        Verdict::Denied(_) => ("denied", b'4'),
        Verdict::Failed(_) => ("failed", b'6'),
    };
    head(out, line, priority);
    field(out, "FDBROKER_RESULT", result.as_bytes());
    field(out, "FDBROKER_CLIENT", f.client.as_bytes());
    scratch.clear();
    let _ = write!(scratch, "{}", Bare(f.path));
    field(out, "FDBROKER_PATH", scratch.as_bytes());
    field(out, "FDBROKER_ACCESS", f.access.as_str().as_bytes());
    scratch.clear();
    match f.rule {
        Some(r) => {
            let _ = write!(scratch, "{r}");
        }
        None => scratch.push('-'),
    }
    field(out, "FDBROKER_RULE", scratch.as_bytes());
    number(out, scratch, "FDBROKER_UID", u64::from(f.peer.uid));
    number(out, scratch, "FDBROKER_GID", u64::from(f.peer.gid));
    scratch.clear();
    let _ = write!(scratch, "{}", f.peer.pid);
    field(out, "FDBROKER_PID", scratch.as_bytes());
    match f.verdict {
        Verdict::Granted { ino } => number(out, scratch, "FDBROKER_INO", ino),
        Verdict::Denied(why) | Verdict::Failed(why) => {
            scratch.clear();
            let _ = write!(scratch, "{why}");
            field(out, "FDBROKER_REASON", scratch.as_bytes());
        }
    }
    if let Some(via) = f.via {
        field(out, "FDBROKER_VIA", via.as_bytes());
    }
}

/// The entry for a summary of refusals counted instead of written.
pub(super) fn summary_entry(s: &Summary, line: &[u8], out: &mut Vec<u8>, scratch: &mut String) {
    head(out, line, b'4');
    field(out, "FDBROKER_RESULT", b"suppressed");
    field(out, "FDBROKER_CLIENT", s.client.as_bytes());
    number(out, scratch, "FDBROKER_UID", u64::from(s.uid));
    scratch.clear();
    let _ = write!(scratch, "{}", s.pid);
    field(out, "FDBROKER_PID", scratch.as_bytes());
    number(out, scratch, "FDBROKER_DENIED", s.denied);
    number(out, scratch, "FDBROKER_FAILED", s.failed);
}

fn head(out: &mut Vec<u8>, line: &[u8], priority: u8) {
    let line = match line {
        [b'<', _, b'>', rest @ ..] => rest,
        other => other,
    };
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    field(out, "MESSAGE", line);
    out.extend_from_slice(b"PRIORITY=");
    out.push(priority);
    out.push(b'\n');
    field(out, "SYSLOG_IDENTIFIER", b"fdbroker");
    field(out, "FDBROKER_TARGET", TARGET.as_bytes());
}

fn number(out: &mut Vec<u8>, scratch: &mut String, name: &str, n: u64) {
    scratch.clear();
    let _ = write!(scratch, "{n}");
    field(out, name, scratch.as_bytes());
}

/// `NAME=value\n` when the value has no newline, else the length-prefixed form.
fn field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    if value.contains(&b'\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn values_with_newlines_are_length_prefixed() {
        let mut out = Vec::new();
        field(&mut out, "A", b"x y");
        field(&mut out, "B", b"1\n2");
        let mut want = b"A=x y\nB\n".to_vec();
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(b"1\n2\n");
        assert_eq!(out, want);
    }
}
