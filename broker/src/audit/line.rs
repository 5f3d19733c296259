//! The audit line's bytes, formatted by hand: exactly what the subscriber `log::init`
//! installs would write for the same event, in every format (the unit tests below
//! compare the two), without its field visitors and allocations. [`crate::audit::batch`]
//! collects them and says when they are written.

use crate::audit::batch::Fields;
use crate::audit::limit::Summary;
use crate::audit::{Bare, Escaped, TARGET, Verdict};
use crate::log::{LogFormat, Style};
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

/// Append one line, newline included, to `out`. `now` is the time since the epoch.
pub(super) fn format_line(
    style: Style,
    now: std::time::Duration,
    f: &Fields<'_>,
    out: &mut Vec<u8>,
    scratch: &mut String,
    clock: &mut Clock,
) {
    let (result, tail) = match f.verdict {
        Verdict::Granted { ino } => ("granted", Tail::Ino(ino)),
        Verdict::Denied(why) => ("denied", Tail::Reason(why)),
        Verdict::Failed(why) => ("failed", Tail::Reason(why)),
    };
    // Denials stand out (`journalctl -p warning`); grants and failures are routine.
    let warn = matches!(f.verdict, Verdict::Denied(_));
    if style.journal {
        // syslog LOG_WARNING or LOG_INFO; the subscriber trims the level's alignment
        // blank after it.
        out.extend_from_slice(if warn { b"<4>" } else { b"<6>" });
    }
    match style.format {
        LogFormat::Text => {
            if !style.journal {
                clock.push(out, now);
                out.extend_from_slice(b"  ");
            }
            out.extend_from_slice(if warn { b"WARN " } else { b"INFO " });
            out.extend_from_slice(TARGET.as_bytes());
            out.extend_from_slice(b": uid=");
            push_u64(out, u64::from(f.peer.uid));
            out.extend_from_slice(b" gid=");
            push_u64(out, u64::from(f.peer.gid));
            out.extend_from_slice(b" pid=");
            push_i64(out, i64::from(f.peer.pid));
            out.extend_from_slice(b" client=");
            push_debug_str(out, scratch, f.client);
            out.extend_from_slice(b" path=");
            // Escaped text has no newline or carriage return of its own.
            Escaped(f.path).push_to(out);
            out.extend_from_slice(b" access=\"");
            out.extend_from_slice(f.access.as_str().as_bytes());
            out.extend_from_slice(b"\" rule=");
            match f.rule {
                Some(rule) => {
                    scratch.clear();
                    let _ = write!(scratch, "{rule}");
                    if !push_plain_debug_str(out, scratch) {
                        let label = std::mem::take(scratch);
                        push_debug_str(out, scratch, &label);
                        *scratch = label;
                    }
                }
                None => out.extend_from_slice(b"\"-\""),
            }
            out.extend_from_slice(b" result=\"");
            out.extend_from_slice(result.as_bytes());
            out.push(b'"');
            match tail {
                Tail::Ino(ino) => {
                    out.extend_from_slice(b" ino=");
                    push_u64(out, ino);
                }
                Tail::Reason(why) => {
                    // Quoted like every text field, so the line stays logfmt.
                    out.extend_from_slice(b" reason=");
                    scratch.clear();
                    let _ = write!(scratch, "{why}");
                    let reason = std::mem::take(scratch);
                    push_debug_str(out, scratch, &reason);
                    *scratch = reason;
                }
            }
            if let Some(via) = f.via {
                out.extend_from_slice(b" via=");
                push_debug_str(out, scratch, via);
            }
            if let Some(mode) = f.mode {
                out.extend_from_slice(b" mode=");
                push_debug_str(out, scratch, mode);
            }
        }
        LogFormat::Json => {
            out.extend_from_slice(b"{\"timestamp\":\"");
            clock.push(out, now);
            out.extend_from_slice(if warn {
                b"\",\"level\":\"WARN\",\"uid\":"
            } else {
                b"\",\"level\":\"INFO\",\"uid\":"
            });
            push_u64(out, u64::from(f.peer.uid));
            out.extend_from_slice(b",\"gid\":");
            push_u64(out, u64::from(f.peer.gid));
            out.extend_from_slice(b",\"pid\":");
            push_i64(out, i64::from(f.peer.pid));
            out.extend_from_slice(b",\"client\":");
            push_json_str(out, f.client);
            out.extend_from_slice(b",\"path\":");
            scratch.clear();
            // JSON quotes the string itself: the escaped path without literal quotes.
            let _ = write!(scratch, "{}", Bare(f.path));
            push_json_str(out, scratch);
            out.extend_from_slice(b",\"access\":\"");
            out.extend_from_slice(f.access.as_str().as_bytes());
            out.extend_from_slice(b"\",\"rule\":");
            match f.rule {
                Some(rule) => {
                    scratch.clear();
                    let _ = write!(scratch, "{rule}");
                    push_json_str(out, scratch);
                }
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"result\":\"");
            out.extend_from_slice(result.as_bytes());
            out.push(b'"');
            match tail {
                Tail::Ino(ino) => {
                    out.extend_from_slice(b",\"ino\":");
                    push_u64(out, ino);
                }
                Tail::Reason(why) => {
                    out.extend_from_slice(b",\"reason\":");
                    scratch.clear();
                    let _ = write!(scratch, "{why}");
                    push_json_str(out, scratch);
                }
            }
            if let Some(via) = f.via {
                out.extend_from_slice(b",\"via\":");
                push_json_str(out, via);
            }
            if let Some(mode) = f.mode {
                out.extend_from_slice(b",\"mode\":");
                push_json_str(out, mode);
            }
            out.extend_from_slice(b",\"target\":\"");
            out.extend_from_slice(TARGET.as_bytes());
            out.extend_from_slice(b"\"}");
        }
    }
    out.push(b'\n');
}

/// Append the summary line of suppressed refusals, as `audit::summary_via_tracing`
/// has the subscriber write it.
pub(super) fn format_summary(
    style: Style,
    now: std::time::Duration,
    s: &Summary,
    out: &mut Vec<u8>,
    scratch: &mut String,
    clock: &mut Clock,
) {
    if style.journal {
        // syslog LOG_WARNING.
        out.extend_from_slice(b"<4>");
    }
    // The message, as its format arguments make it: no character needs escaping.
    let message = |out: &mut Vec<u8>| {
        push_u64(out, s.total());
        out.extend_from_slice(b" more denials from uid ");
        push_u64(out, u64::from(s.uid));
        out.extend_from_slice(b" suppressed");
    };
    match style.format {
        LogFormat::Text => {
            if !style.journal {
                clock.push(out, now);
                out.extend_from_slice(b"  ");
            }
            out.extend_from_slice(b"WARN ");
            out.extend_from_slice(TARGET.as_bytes());
            out.extend_from_slice(b": ");
            message(out);
            out.extend_from_slice(b" uid=");
            push_u64(out, u64::from(s.uid));
            out.extend_from_slice(b" pid=");
            push_i64(out, i64::from(s.pid));
            out.extend_from_slice(b" client=");
            push_debug_str(out, scratch, &s.client);
            out.extend_from_slice(b" denied=");
            push_u64(out, s.denied);
            out.extend_from_slice(b" failed=");
            push_u64(out, s.failed);
            out.extend_from_slice(b" from=");
            push_utc(out, since_epoch(s.from));
            out.extend_from_slice(b" to=");
            push_utc(out, since_epoch(s.to));
        }
        LogFormat::Json => {
            out.extend_from_slice(b"{\"timestamp\":\"");
            clock.push(out, now);
            out.extend_from_slice(b"\",\"level\":\"WARN\",\"message\":\"");
            message(out);
            out.extend_from_slice(b"\",\"uid\":");
            push_u64(out, u64::from(s.uid));
            out.extend_from_slice(b",\"pid\":");
            push_i64(out, i64::from(s.pid));
            out.extend_from_slice(b",\"client\":");
            push_json_str(out, &s.client);
            out.extend_from_slice(b",\"denied\":");
            push_u64(out, s.denied);
            out.extend_from_slice(b",\"failed\":");
            push_u64(out, s.failed);
            out.extend_from_slice(b",\"from\":\"");
            push_utc(out, since_epoch(s.from));
            out.extend_from_slice(b"\",\"to\":\"");
            push_utc(out, since_epoch(s.to));
            out.extend_from_slice(b"\",\"target\":\"");
            out.extend_from_slice(TARGET.as_bytes());
            out.extend_from_slice(b"\"}");
        }
    }
    out.push(b'\n');
}

fn since_epoch(t: SystemTime) -> std::time::Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// A wall-clock time as the log's own timestamps are written (UTC,
/// `YYYY-MM-DDTHH:MM:SS.uuuuuuZ`), for the window of a summary line.
pub struct Utc(pub SystemTime);

impl fmt::Display for Utc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = Vec::with_capacity(32);
        push_utc(&mut text, since_epoch(self.0));
        f.write_str(std::str::from_utf8(&text).unwrap_or(""))
    }
}

enum Tail<'a> {
    Ino(u64),
    Reason(&'a dyn fmt::Display),
}

/// A string as `tracing`'s text format writes a `&str` field: its `Debug` form.
fn push_debug_str(out: &mut Vec<u8>, scratch: &mut String, value: &str) {
    if push_plain_debug_str(out, value) {
        return;
    }
    scratch.clear();
    let _ = write!(scratch, "{value:?}");
    push_one_line(out, scratch);
}

/// The `Debug` form of a string of printable ASCII other than `"` and `\\` is the
/// string in quotes: append that and say so, or append nothing and say no (the caller
/// formats it the long way).
fn push_plain_debug_str(out: &mut Vec<u8>, value: &str) -> bool {
    let plain = value
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    if plain {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    }
    plain
}

fn push_one_line(out: &mut Vec<u8>, text: &str) {
    let mut rest = text.as_bytes();
    while let Some(at) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(if rest[at] == b'\n' { b"\\n" } else { b"\\r" });
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
}

/// A JSON string as `serde_json` writes it: `"` and `\` escaped, the C0 controls as
/// `\b \t \n \f \r` or `\u00XX`, everything else (UTF-8 included) as is.
fn push_json_str(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x09 => b"\\t",
            0x0a => b"\\n",
            0x0c => b"\\f",
            0x0d => b"\\r",
            0x00..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

fn push_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    push_u64(out, n.unsigned_abs());
}

/// Zero-padded to `width` digits.
fn push_padded(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut at = digits.len();
    let mut rest = n;
    while rest > 0 || at > digits.len() - width {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.extend_from_slice(&digits[at..]);
}

/// UTC as the subscriber's `SystemTime` timer writes it:
/// `YYYY-MM-DDTHH:MM:SS.uuuuuuZ` (a year past 9999 as `+YYYYY`). The part up to the
/// seconds is kept and reused while the second lasts: lines come in bursts.
#[derive(Default)]
pub(super) struct Clock {
    second: Option<u64>,
    prefix: Vec<u8>,
}

impl Clock {
    pub(super) fn push(&mut self, out: &mut Vec<u8>, since_epoch: std::time::Duration) {
        let secs = since_epoch.as_secs();
        if self.second != Some(secs) {
            self.prefix.clear();
            push_date_time(&mut self.prefix, secs);
            self.second = Some(secs);
        }
        out.extend_from_slice(&self.prefix);
        out.push(b'.');
        push_padded(out, u64::from(since_epoch.subsec_micros()), 6);
        out.push(b'Z');
    }
}

/// `YYYY-MM-DDTHH:MM:SS.uuuuuuZ` for `since_epoch` (what [`Clock::push`] writes,
/// without its cache).
fn push_utc(out: &mut Vec<u8>, since_epoch: std::time::Duration) {
    push_date_time(out, since_epoch.as_secs());
    out.push(b'.');
    push_padded(out, u64::from(since_epoch.subsec_micros()), 6);
    out.push(b'Z');
}

/// `YYYY-MM-DDTHH:MM:SS` for `secs` after the epoch.
fn push_date_time(out: &mut Vec<u8>, secs: u64) {
    let (year, month, day) = civil_date(secs / 86_400);
    let of_day = secs % 86_400;
    if year > 9999 {
        out.push(b'+');
        push_u64(out, year);
    } else {
        push_padded(out, year, 4);
    }
    for (sep, value) in [
        (b'-', u64::from(month)),
        (b'-', u64::from(day)),
        (b'T', of_day / 3600),
        (b':', of_day / 60 % 60),
        (b':', of_day % 60),
    ] {
        out.push(sep);
        push_padded(out, value, 2);
    }
}

/// The proleptic Gregorian date `days` after 1970-01-01. Counts in 400-year cycles
/// (146,097 days each) from 0000-03-01, so that the leap day ends each year.
fn civil_date(days: u64) -> (u64, u32, u32) {
    const CYCLE: u64 = 146_097;
    // 0000-03-01 is 719,468 days before the epoch.
    let shifted = days + 719_468;
    let cycle = shifted / CYCLE;
    let day_of_cycle = shifted % CYCLE;
    // Years into the cycle: 365 days each, less the leap days the shorter centuries
    // and the cycle's last day would add.
    let year_of_cycle = (day_of_cycle - day_of_cycle / 1460 + day_of_cycle / 36_524
        - day_of_cycle / (CYCLE - 1))
        / 365;
    let day_of_year =
        day_of_cycle - (365 * year_of_cycle + year_of_cycle / 4 - year_of_cycle / 100);
    // Months from March, with the 153-day five-month pattern 31,30,31,30,31.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = cycle * 400 + year_of_cycle + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use fdbroker_shared::peer::PeerCredentials;
    use fdbroker_shared::wire::Access;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[test]
    fn strings_are_written_as_their_debug_form() {
        let mut scratch = String::new();
        for text in [
            "scanner",
            "",
            "/etc/fdbroker/policy.toml:7:8",
            "with \"quotes\" and \\",
            "tab\there",
            "new\nline\r",
            "caf\u{e9}",
            "\u{7f}del",
            "combining \u{301}",
            "'single'",
        ] {
            let mut out = Vec::new();
            push_debug_str(&mut out, &mut scratch, text);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                format!("{text:?}"),
                "{text:?}"
            );
        }
    }

    #[test]
    fn dates_match_the_calendar() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(59), (1970, 3, 1));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(11_017), (2000, 3, 1));
        assert_eq!(civil_date(20_818), (2026, 12, 31));
        assert_eq!(civil_date(47_540), (2100, 2, 28));
        assert_eq!(civil_date(47_541), (2100, 3, 1));
        let mut clock = Clock::default();
        let mut out = Vec::new();
        clock.push(&mut out, Duration::new(1_795_430_056, 7_001_999));
        assert_eq!(out, b"2026-11-23T10:34:16.007001Z");
        out.clear();
        clock.push(&mut out, Duration::new(1_795_430_056, 999_999_999));
        assert_eq!(out, b"2026-11-23T10:34:16.999999Z");
        out.clear();
        clock.push(&mut out, Duration::new(1_795_430_057, 0));
        assert_eq!(out, b"2026-11-23T10:34:17.000000Z");
        out.clear();
        clock.push(&mut out, Duration::from_secs(253_402_300_800));
        assert_eq!(out, b"+10000-01-01T00:00:00.000000Z");
    }

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The line the installed subscriber writes for `f`, and the one this module writes.
    /// A subscriber cannot write JSON's `null`: where there is no rule, its `"-"` is
    /// taken for the `null` this module writes.
    fn both(style: Style, f: &Fields<'_>) -> (String, String) {
        let (theirs, ours) = both_of(
            style,
            || crate::audit::via_tracing(f, style.format == LogFormat::Text),
            |now, out, scratch, clock| format_line(style, now, f, out, scratch, clock),
        );
        match (style.format, f.rule) {
            (LogFormat::Json, None) => (
                theirs.replacen(",\"rule\":\"-\",", ",\"rule\":null,", 1),
                ours,
            ),
            _ => (theirs, ours),
        }
    }

    /// The line the subscriber writes for what `theirs` emits, and the one `ours`
    /// formats.
    fn both_of(
        style: Style,
        theirs: impl FnOnce(),
        ours: impl FnOnce(Duration, &mut Vec<u8>, &mut String, &mut Clock),
    ) -> (String, String) {
        let capture = Capture::default();
        let sink = capture.clone();
        let dispatch = crate::log::dispatch(
            style.format,
            style.journal,
            tracing_subscriber::EnvFilter::new("info"),
            move || sink.clone(),
        );
        tracing::dispatcher::with_default(&dispatch, theirs);
        let theirs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let mut out = Vec::new();
        ours(now, &mut out, &mut String::new(), &mut Clock::default());
        (theirs, String::from_utf8(out).unwrap())
    }

    /// Timestamps differ by when each line was made: replace them with a marker.
    fn untimed(style: Style, line: &str) -> String {
        const LEN: usize = "2026-11-23T10:34:16.401771Z".len();
        let at = match (style.format, style.journal) {
            (LogFormat::Text, true) => return line.to_owned(),
            (LogFormat::Text, false) => 0,
            (LogFormat::Json, false) => "{\"timestamp\":\"".len(),
            (LogFormat::Json, true) => "<6>{\"timestamp\":\"".len(),
        };
        format!("{}TIME{}", &line[..at], &line[at + LEN..])
    }

    #[test]
    fn lines_match_the_subscriber_in_every_format() {
        let peer = PeerCredentials {
            pid: 4242,
            uid: 65534,
            gid: 65534,
        };
        let rule = "/etc/fdbroker/p\u{e9}licy \"x\".toml:12:3";
        let why = "invalid path: a \"name\"\nwith\r\x1b[2J breaks\\ and \u{85}";
        let mut long = b"/var/spool/q/".to_vec();
        long.extend((0..60_000u32).map(|i| 0x80 | (i % 0x7f) as u8));
        let cases: Vec<Fields<'_>> = vec![
            Fields {
                peer: &peer,
                client: "scanner",
                path: b"/var/spool/q/a.bin",
                access: Access::Read.into(),
                rule: Some(&rule),
                verdict: Verdict::Granted { ino: 10_166_283 },
                via: None,
                mode: None,
            },
            Fields {
                peer: &peer,
                client: "sc\"an\u{7}ner\n\u{e9}",
                path: b"/x\nINFO fake\x1b[2J\"\\\xff",
                access: Access::ReadWrite.into(),
                rule: None,
                verdict: Verdict::Denied(&why),
                via: None,
                mode: None,
            },
            // Cut to a prefix with its length and hash.
            Fields {
                peer: &peer,
                client: "scanner",
                path: &long,
                access: crate::audit::Action::Open(Access::Read),
                rule: None,
                verdict: Verdict::Denied(&"no rule allows this path"),
                via: None,
                mode: None,
            },
            Fields {
                peer: &peer,
                client: "scanner",
                path: &long[..4095],
                access: crate::audit::Action::Open(Access::Read),
                rule: Some(&rule),
                verdict: Verdict::Granted { ino: 7 },
                via: None,
                mode: None,
            },
            Fields {
                peer: &peer,
                client: "c",
                path: b"",
                access: Access::Create.into(),
                rule: Some(&rule),
                verdict: Verdict::Failed(&"No such file or directory"),
                via: None,
                mode: None,
            },
            Fields {
                peer: &peer,
                client: "scanner",
                path: b"/srv/a",
                access: crate::audit::Action::Stat,
                rule: Some(&rule),
                verdict: Verdict::Granted { ino: 9 },
                via: Some("transparent"),
                mode: None,
            },
            Fields {
                peer: &peer,
                client: "scanner",
                path: b"/srv/b",
                access: Access::Read.into(),
                rule: None,
                verdict: Verdict::Denied(&"denied"),
                via: Some("transparent"),
                mode: None,
            },
            Fields {
                peer: &peer,
                client: "scanner",
                path: b"/srv/c",
                access: Access::Create.into(),
                rule: Some(&rule),
                verdict: Verdict::Granted { ino: 7 },
                via: None,
                mode: Some("learn"),
            },
        ];
        for format in [LogFormat::Text, LogFormat::Json] {
            for journal in [false, true] {
                let style = Style { format, journal };
                for f in &cases {
                    let (theirs, ours) = both(style, f);
                    assert!(ours.ends_with('\n') && ours.matches('\n').count() == 1);
                    assert_eq!(untimed(style, &theirs), untimed(style, &ours), "{style:?}");
                }
            }
        }
    }

    /// Every byte in a path, and every character below U+0100 in a client name and a
    /// rule label, written by the fast path or the long way, gives the subscriber's
    /// line, in both formats: the fast path's "plain" test leaves out nothing that
    /// needs escaping.
    #[test]
    fn every_byte_and_character_matches_the_subscriber() {
        let peer = PeerCredentials {
            pid: 1,
            uid: 65534,
            gid: 65534,
        };
        let mut cases: Vec<(Vec<u8>, String, String)> = Vec::new();
        for b in 0..=255u8 {
            let ch = char::from(b);
            cases.push((
                vec![b'/', b'a', b, b'z'],
                format!("c{ch}d"),
                format!("/p{ch}.toml:1:2"),
            ));
        }
        let forged = b"/a\" result=\"granted\" ino=1\r\nINFO x".to_vec();
        cases.push((forged, "scanner".into(), "/p.toml:1:2".into()));
        let longest_plain = vec![b'a'; crate::audit::WHOLE];
        cases.push((longest_plain.clone(), "scanner".into(), "r:1:1".into()));
        let mut one_more = longest_plain;
        one_more.push(b'a');
        cases.push((one_more, "scanner".into(), "r:1:1".into()));
        for format in [LogFormat::Text, LogFormat::Json] {
            let style = Style {
                format,
                journal: false,
            };
            for (path, client, rule) in &cases {
                let f = Fields {
                    peer: &peer,
                    client,
                    path,
                    access: Access::Read.into(),
                    rule: Some(rule),
                    verdict: Verdict::Denied(&"denied"),
                    via: None,
                    mode: None,
                };
                let (theirs, ours) = both(style, &f);
                assert_eq!(
                    untimed(style, &theirs),
                    untimed(style, &ours),
                    "{style:?} {path:?} {client:?}"
                );
                assert!(ours.ends_with('\n') && ours.matches('\n').count() == 1);
                assert!(!ours.contains('\r'), "{ours:?}");
            }
        }
    }

    #[test]
    fn summaries_match_the_subscriber_in_every_format() {
        let from = UNIX_EPOCH + Duration::new(1_795_430_056, 7_001_999);
        let summaries = [
            Summary {
                uid: 65534,
                pid: 4242,
                client: "scanner".into(),
                from,
                to: from + crate::audit::limit::WINDOW,
                denied: 12_345,
                failed: 6,
            },
            Summary {
                uid: 0,
                pid: -1,
                client: "sc\"an\u{7}ner\n\u{e9}".into(),
                from: UNIX_EPOCH,
                to: UNIX_EPOCH,
                denied: 0,
                failed: 1,
            },
        ];
        for format in [LogFormat::Text, LogFormat::Json] {
            for journal in [false, true] {
                let style = Style { format, journal };
                for s in &summaries {
                    let (theirs, ours) = both_of(
                        style,
                        || crate::audit::summary_via_tracing(s),
                        |now, out, scratch, clock| {
                            format_summary(style, now, s, out, scratch, clock);
                        },
                    );
                    assert!(ours.ends_with('\n') && ours.matches('\n').count() == 1);
                    assert!(
                        ours.contains(&format!(
                            "{} more denials from uid {} suppressed",
                            s.total(),
                            s.uid
                        )),
                        "{ours}"
                    );
                    assert_eq!(untimed(style, &theirs), untimed(style, &ours), "{style:?}");
                }
            }
        }
        assert_eq!(Utc(from).to_string(), "2026-11-23T10:34:16.007001Z");
    }
}
