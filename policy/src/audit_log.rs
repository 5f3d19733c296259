//! Reading the broker's audit lines back: the evidence `policy suggest`, `policy replay`
//! and `reload --replay` work from.
//!
//! An audit log is untrusted text. Paths in it came from a hostile worker (escaped by
//! the broker, but a log file can be edited by anyone who can write it), and the file
//! may be huge, truncated mid-line or not a log at all. So everything here is bounded
//! (a line is read up to [`MAX_LINE`] bytes, at most [`MAX_RECORDS`] distinct decisions
//! are kept, each with a count) and nothing panics: a line that is not a decision is
//! counted and skipped.
//!
//! Accepted forms, one decision per line: the text form (`... INFO fdbroker::audit:
//! uid=.. client=".." path=".." access=".." rule=".." result=".." ...`, values quoted or
//! bare, bare values running to the next known key, so both today's form and strict
//! logfmt read the same), the JSON form (`{"client":..,"path":..,"result":..}`, fields
//! flat or under `"fields"`), and either of them inside journal output: a syslog
//! prefix (`<6>`, `Dec 07 10:00:00 host fdbroker[12]: `) is skipped, and a
//! `journalctl -o json` object is read through its `MESSAGE`.

use std::collections::HashMap;
use std::io::BufRead;

use crate::Access;

/// Longest line read; the rest of a longer one is skipped (a broker line is at most a
/// few hundred bytes: paths are cut at 256 escaped characters).
pub const MAX_LINE: usize = 64 * 1024;
/// Most distinct decisions kept (client, path, action, result); more are counted as
/// [`Evidence::dropped`].
pub const MAX_RECORDS: usize = 100_000;
/// Most bytes of paths, client names and rule labels kept in all: a worker sending
/// long distinct paths (or a forged log) must not decide how much memory is used.
pub const MAX_BYTES: usize = 64 << 20;

/// What a decision was about, as the audit line's `access` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Open(Access),
    /// The metadata of a path (decided as `read`, failing that as `directory`).
    Stat,
    /// A listing the broker answered itself (decided as `directory`).
    List,
}

impl Action {
    pub fn parse(word: &str) -> Option<Action> {
        match word {
            // `lstat` describes a path without following its last component; the
            // broker decides it as it decides `stat`.
            "stat" | "lstat" => Some(Action::Stat),
            "list" => Some(Action::List),
            w => w.parse::<Access>().ok().map(Action::Open),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Open(a) => a.as_str(),
            Action::Stat => "stat",
            Action::List => "list",
        }
    }
}

/// What the broker did: `granted`, `denied` (by the policy, or because a directory's
/// descriptor would show what it hides), or `failed` (the policy allowed it; the open
/// did not work, e.g. the file does not exist).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Granted,
    Denied,
    Failed,
}

impl Outcome {
    fn parse(word: &str) -> Option<Outcome> {
        match word {
            "granted" => Some(Outcome::Granted),
            "denied" => Some(Outcome::Denied),
            "failed" => Some(Outcome::Failed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Granted => "granted",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }

    /// Did the policy allow it (whatever the filesystem then said)?
    pub fn allowed(self) -> bool {
        matches!(self, Outcome::Granted | Outcome::Failed)
    }
}

/// One decision read from a line.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Record {
    pub client: String,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// The requested path, unescaped.
    pub path: Vec<u8>,
    pub action: Action,
    pub outcome: Outcome,
    /// The rule label as logged (`FILE:LINE:COL`), if any.
    pub rule: Option<String>,
    /// `mode="learn"`: the client was learning (its rule may be a learning scope).
    pub learn: bool,
    /// For `denied`: which of the policy's refusals it was, by its `reason`.
    pub refusal: Option<Refusal>,
    /// For `failed`: the file did not exist (`reason` is ENOENT's text).
    pub missing: bool,
}

/// The `reason` of a request that failed because the file does not exist.
pub const MISSING: &str = "No such file or directory";

/// Why a request was denied, as far as its `reason` tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// No rule matched (`Denial::NoRule`): a rule can grant it.
    NoRule,
    /// A rule matched without the access (`Denial::AccessNotGranted`).
    AccessNotGranted,
    /// A deny rule (`Denial::DeniedBy`): no allow rule can change that.
    DenyRule,
    InvalidPath,
    /// Not the policy's lexical decision: open flags refused, or a directory descriptor
    /// that would show what the policy hides. Not re-decidable from the log alone.
    Other,
}

impl Refusal {
    /// From the `reason` the broker wrote: `Denial`'s own words, read from its `Display`
    /// so that rewording a denial cannot silently turn it into `Other` here; and the
    /// wording of earlier versions (`denied by deny rule #N`, `rule #N matches but
    /// does not grant this access`), which logs being read may still hold.
    pub fn of_reason(reason: &str) -> Refusal {
        use crate::decide::Denial;
        let said = |d: Denial| reason.starts_with(&d.to_string());
        if said(Denial::NoRule) {
            Refusal::NoRule
        } else if said(Denial::DeniedBy(crate::RuleId(0)))
            || reason.starts_with("denied by deny rule")
        {
            Refusal::DenyRule
        } else if reason.starts_with("invalid path:") {
            Refusal::InvalidPath
        } else if said(Denial::AccessNotGranted(crate::RuleId(0)))
            || (reason.starts_with("rule #") && reason.contains("does not grant this access"))
        {
            Refusal::AccessNotGranted
        } else {
            Refusal::Other
        }
    }

    /// Could an allow rule turn it into a grant?
    pub fn a_rule_would_grant(self) -> bool {
        matches!(self, Refusal::NoRule | Refusal::AccessNotGranted)
    }

    /// Was it the policy's decision on the path and access alone?
    pub fn lexical(self) -> bool {
        !matches!(self, Refusal::Other)
    }
}

/// Why a line that looks like a decision could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("a field is missing or malformed")]
    Malformed,
    /// The broker cut a long path (`…(len=N, fnv1a64=H)`): it cannot be re-decided.
    #[error("the path was cut in the log")]
    CutPath,
}

/// Read one line: `None` when it is not an audit decision at all (another log line, a
/// summary of suppressed refusals, noise).
pub fn parse_line(line: &str) -> Option<Result<Record, LineError>> {
    let line = line.trim_end_matches(['\r', '\n']);
    let trimmed = line.trim_start();
    if trimmed.starts_with('{') {
        return parse_json(trimmed);
    }
    let at = line.find("fdbroker::audit: ")?;
    let fields = line.get(at + "fdbroker::audit: ".len()..)?;
    let rest = fields.trim_start();
    // journalctl -o cat of a JSON-format broker never has the marker; a JSON line can
    // still follow a syslog prefix.
    if rest.starts_with('{') {
        return parse_json(rest);
    }
    parse_text(rest)
}

/// The keys of a decision line; a bare value runs up to the next ` KEY=`.
const KEYS: [&str; 13] = [
    "uid", "gid", "pid", "client", "path", "access", "rule", "result", "ino", "reason", "via",
    "mode", "message",
];

fn parse_text(fields: &str) -> Option<Result<Record, LineError>> {
    let mut map: HashMap<&str, Vec<u8>> = HashMap::new();
    let mut rest = fields;
    while let Some(eq) = rest.find('=') {
        let key = rest.get(..eq)?.trim_start();
        let after = rest.get(eq + 1..)?;
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let (v, used) = unquote(quoted)?;
            (v, quoted.get(used..).unwrap_or_default())
        } else {
            let end = next_key(after).unwrap_or(after.len());
            (
                after.get(..end)?.trim_end().as_bytes().to_vec(),
                after.get(end..).unwrap_or_default(),
            )
        };
        if !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            map.entry(key).or_insert(value);
        }
        rest = next;
    }
    if !map.contains_key("result") {
        return None;
    }
    Some(record(
        |k| map.get(k).map(|v| String::from_utf8_lossy(v).into_owned()),
        map.get("path").cloned(),
    ))
}

/// Where, in a bare value, the next ` KEY=` starts.
fn next_key(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while let Some(off) = s.get(i..).and_then(|t| t.find(' ')) {
        let space = i + off;
        let after = s.get(space + 1..).unwrap_or_default();
        if KEYS
            .iter()
            .any(|k| after.starts_with(k) && after.as_bytes().get(k.len()) == Some(&b'='))
        {
            return Some(space);
        }
        i = space + 1;
        if i >= bytes.len() {
            break;
        }
    }
    None
}

/// A quoted value after its opening quote: its bytes and how much of `s` it used (the
/// closing quote included). Understands `\"`, `\\`, `\n`, `\r`, `\t`, `\0`, `\xNN` and
/// `\u{...}` (Rust's `Debug` and the broker's path escaping); `None` if unterminated.
fn unquote(s: &str) -> Option<(Vec<u8>, usize)> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len().min(512));
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' => return Some((out, i + 1)),
            b'\\' => {
                let e = *bytes.get(i + 1)?;
                i += 2;
                match e {
                    b'"' | b'\\' | b'\'' => out.push(e),
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'0' => out.push(0),
                    b'x' => {
                        let hex = s.get(i..i + 2)?;
                        out.push(u8::from_str_radix(hex, 16).ok()?);
                        i += 2;
                    }
                    b'u' => {
                        let body = s.get(i..)?.strip_prefix('{')?;
                        let close = body.find('}')?;
                        let code = u32::from_str_radix(body.get(..close)?, 16).ok()?;
                        let c = char::from_u32(code)?;
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        i += 1 + close + 1;
                    }
                    _ => return None,
                }
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    None
}

fn parse_json(line: &str) -> Option<Result<Record, LineError>> {
    use serde_json::Value;
    let value: Value = serde_json::from_str(line).ok()?;
    let obj = value.as_object()?;
    // journalctl -o json: the broker's own line is the MESSAGE (a string, or an array
    // of bytes when it was not UTF-8). Read once, never recursively.
    if let Some(message) = obj.get("MESSAGE") {
        let text = match message {
            Value::String(s) => s.clone(),
            Value::Array(items) => {
                let bytes: Vec<u8> = items
                    .iter()
                    .filter_map(|v| v.as_u64().and_then(|n| u8::try_from(n).ok()))
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            _ => return None,
        };
        if text.trim_start().starts_with('{') {
            return parse_json_fields(&text);
        }
        let at = text.find("fdbroker::audit: ")?;
        return parse_text(text.get(at + "fdbroker::audit: ".len()..)?);
    }
    parse_json_fields(line)
}

fn parse_json_fields(line: &str) -> Option<Result<Record, LineError>> {
    use serde_json::Value;
    let value: Value = serde_json::from_str(line).ok()?;
    let obj = value.as_object()?;
    if let Some(target) = obj.get("target").and_then(Value::as_str)
        && target != "fdbroker::audit"
    {
        return None;
    }
    let nested = obj.get("fields").and_then(Value::as_object);
    let get = |k: &str| -> Option<String> {
        let v = obj.get(k).or_else(|| nested.and_then(|n| n.get(k)))?;
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    get("result")?;
    // The broker writes the path's escaped, quoted form as the JSON string.
    let path = get("path").and_then(|p| match p.strip_prefix('"') {
        Some(inner) => unquote(inner).and_then(|(v, used)| (used == inner.len()).then_some(v)),
        None => Some(p.into_bytes()),
    });
    Some(record(get, path))
}

fn record(
    get: impl Fn(&str) -> Option<String>,
    path: Option<Vec<u8>>,
) -> Result<Record, LineError> {
    let outcome = get("result")
        .as_deref()
        .and_then(Outcome::parse)
        .ok_or(LineError::Malformed)?;
    let action = get("access")
        .as_deref()
        .and_then(Action::parse)
        .ok_or(LineError::Malformed)?;
    let client = get("client").ok_or(LineError::Malformed)?;
    let path = path.ok_or(LineError::Malformed)?;
    if path.windows(3).any(|w| w == "\u{2026}".as_bytes()) && path.ends_with(b")") {
        return Err(LineError::CutPath);
    }
    let rule = get("rule").filter(|r| r != "-");
    Ok(Record {
        client,
        uid: get("uid").and_then(|u| u.parse().ok()),
        gid: get("gid").and_then(|g| g.parse().ok()),
        path,
        action,
        outcome,
        rule,
        learn: get("mode").as_deref() == Some("learn"),
        refusal: (outcome == Outcome::Denied)
            .then(|| Refusal::of_reason(get("reason").as_deref().unwrap_or_default())),
        missing: outcome == Outcome::Failed
            && get("reason").is_some_and(|r| r.starts_with(MISSING)),
    })
}

/// Every decision of a log, counted: the same request made a thousand times is one
/// entry with a count of 1000.
#[derive(Debug, Default)]
pub struct Evidence {
    /// Distinct decisions and how often each was logged, in first-seen order.
    pub records: Vec<(Record, u64)>,
    index: HashMap<Record, usize>,
    /// Lines read in all.
    pub lines: u64,
    /// Lines that looked like decisions but could not be read (or had a cut path).
    pub unreadable: u64,
    /// Lines longer than [`MAX_LINE`] or not UTF-8, skipped.
    pub skipped: u64,
    /// Decisions not kept because [`MAX_RECORDS`] distinct ones (or [`MAX_BYTES`])
    /// were already held.
    pub dropped: u64,
    bytes: usize,
}

impl Evidence {
    /// Read a whole log, bounded per line and in what it keeps. I/O errors are the
    /// only failure; bad lines are counted.
    pub fn read(mut input: impl BufRead) -> std::io::Result<Evidence> {
        let mut ev = Evidence::default();
        let mut buf = Vec::with_capacity(1024);
        loop {
            buf.clear();
            let (n, complete) = read_bounded_line(&mut input, &mut buf)?;
            if n == 0 {
                break;
            }
            ev.lines += 1;
            if !complete {
                ev.skipped += 1;
                continue;
            }
            match std::str::from_utf8(&buf) {
                Ok(line) => ev.add_line(line),
                Err(_) => ev.skipped += 1,
            }
        }
        Ok(ev)
    }

    /// Add one line's decision, if it is one.
    pub fn add_line(&mut self, line: &str) {
        match parse_line(line) {
            None => {}
            Some(Err(_)) => self.unreadable += 1,
            Some(Ok(rec)) => self.add(rec, 1),
        }
    }

    pub fn add(&mut self, rec: Record, count: u64) {
        if let Some(&i) = self.index.get(&rec) {
            if let Some(slot) = self.records.get_mut(i) {
                slot.1 = slot.1.saturating_add(count);
            }
            return;
        }
        let size = rec.path.len() + rec.client.len() + rec.rule.as_ref().map_or(0, String::len);
        if self.records.len() >= MAX_RECORDS || self.bytes.saturating_add(size) > MAX_BYTES {
            self.dropped = self.dropped.saturating_add(count);
            return;
        }
        self.bytes += size;
        self.index.insert(rec.clone(), self.records.len());
        self.records.push((rec, count));
    }

    /// How many decisions were read, counting repeats.
    pub fn decisions(&self) -> u64 {
        self.records.iter().map(|(_, n)| *n).sum()
    }
}

/// Read up to a newline, keeping at most [`MAX_LINE`] bytes: returns the bytes consumed
/// and whether the line fit.
fn read_bounded_line(
    input: &mut impl BufRead,
    out: &mut Vec<u8>,
) -> std::io::Result<(usize, bool)> {
    let mut consumed = 0;
    let mut fits = true;
    loop {
        let chunk = match input.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok((consumed, fits));
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if fits {
            let room = MAX_LINE.saturating_sub(out.len());
            match chunk.get(..take) {
                Some(part) if part.len() <= room => out.extend_from_slice(part),
                _ => {
                    fits = false;
                    out.clear();
                }
            }
        }
        input.consume(take);
        consumed += take;
        if done {
            return Ok((consumed, fits));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_denial_the_broker_writes_is_read_back_as_its_refusal() {
        use crate::RuleId;
        use crate::decide::Denial;
        let cases = [
            (Denial::NoRule, Refusal::NoRule),
            (Denial::DeniedBy(RuleId(3)), Refusal::DenyRule),
            (
                Denial::AccessNotGranted(RuleId(3)),
                Refusal::AccessNotGranted,
            ),
            (
                Denial::InvalidPath(crate::path::PathError::DotComponent),
                Refusal::InvalidPath,
            ),
        ];
        for (denial, refusal) in cases {
            assert_eq!(Refusal::of_reason(&denial.to_string()), refusal, "{denial}");
        }
        // Older logs' words.
        assert_eq!(
            Refusal::of_reason("denied by deny rule #1"),
            Refusal::DenyRule
        );
        assert_eq!(
            Refusal::of_reason("rule #2 matches but does not grant this access"),
            Refusal::AccessNotGranted
        );
        assert_eq!(Refusal::of_reason("open flags refused"), Refusal::Other);
    }

    const TEXT: &str = "2026-12-07T05:00:00.000001Z  INFO fdbroker::audit: uid=65534 gid=65534 pid=18386 client=\"worker\" path=\"/srv/mail/a\" access=\"read\" rule=\"scan.toml:8:10\" result=\"granted\" ino=10068745 via=\"transparent\"";

    #[test]
    fn text_lines_read_in_both_quotings() {
        let r = parse_line(TEXT).and_then(Result::ok).expect("a record");
        assert_eq!(r.client, "worker");
        assert_eq!(r.path, b"/srv/mail/a");
        assert_eq!(r.action, Action::Open(Access::Read));
        assert_eq!(r.outcome, Outcome::Granted);
        assert_eq!(r.rule.as_deref(), Some("scan.toml:8:10"));
        assert_eq!(r.uid, Some(65534));
        // Today's bare reason with spaces, and strict logfmt's quoted one.
        for reason in [
            "reason=denied by deny rule #1 via=\"transparent\" mode=\"learn\"",
            "reason=\"denied by deny rule #1\" via=transparent mode=learn",
        ] {
            let line = format!(
                "<6>INFO fdbroker::audit: uid=1 gid=1 pid=2 client=\"w\" path=\"/a\\\"b\\x0a\" access=\"read-write\" rule=\"-\" result=\"denied\" {reason}"
            );
            let r = parse_line(&line).and_then(Result::ok).expect("a record");
            assert_eq!(r.path, b"/a\"b\n");
            assert_eq!(r.action, Action::Open(Access::ReadWrite));
            assert_eq!(r.outcome, Outcome::Denied);
            assert_eq!(r.rule, None);
            assert!(r.learn);
            assert_eq!(r.refusal, Some(Refusal::DenyRule));
        }
    }

    #[test]
    fn json_and_journal_lines_read() {
        let line = r#"{"timestamp":"x","level":"INFO","uid":7,"gid":7,"pid":1,"client":"c","path":"\"/srv/x\\xff\"","access":"stat","rule":"-","result":"denied","reason":"no rule allows this path","target":"fdbroker::audit"}"#;
        let r = parse_line(line).and_then(Result::ok).expect("a record");
        assert_eq!(r.path, b"/srv/x\xff");
        assert_eq!(r.action, Action::Stat);
        let journal = serde_json::json!({"MESSAGE": TEXT, "_PID": "1"}).to_string();
        let j = parse_line(&journal).and_then(Result::ok).expect("a record");
        assert_eq!(j.path, b"/srv/mail/a");
        let syslog = format!("Dec 07 05:00:00 host fdbroker[12]: {}", &TEXT[29..]);
        assert!(parse_line(&syslog).is_some_and(|r| r.is_ok()));
    }

    #[test]
    fn other_lines_are_not_decisions_and_bad_ones_never_panic() {
        assert!(parse_line("2026 INFO fdbroker: worker started pid=3").is_none());
        assert!(parse_line("WARN fdbroker::audit: 5 more denials from uid 1 suppressed uid=1 pid=2 client=\"c\" denied=5 failed=0").is_none());
        assert!(parse_line("{\"not\":\"ours\",\"target\":\"x\",\"result\":\"denied\"}").is_none());
        let cut = "INFO fdbroker::audit: uid=1 gid=1 pid=2 client=\"c\" path=\"/aaaa\u{2026}(len=900, fnv1a64=0123456789abcdef)\" access=\"read\" rule=\"-\" result=\"denied\" reason=x";
        assert_eq!(parse_line(cut), Some(Err(LineError::CutPath)));
        for junk in [
            "fdbroker::audit: result=",
            "fdbroker::audit: path=\"\\x",
            "fdbroker::audit: path=\"\\u{110000}\" result=\"granted\"",
            "fdbroker::audit: ===== result=\"granted\" access=\"read\"",
            "{\"MESSAGE\":[1,2,300]}",
            "{",
        ] {
            let _ = parse_line(junk);
        }
    }

    #[test]
    fn evidence_counts_repeats_and_bounds_lines() {
        let long = "x".repeat(MAX_LINE + 10);
        let input = format!("{TEXT}\n{TEXT}\n{long}\nnoise\n{TEXT}");
        let ev = Evidence::read(input.as_bytes()).expect("read");
        assert_eq!(ev.records.len(), 1);
        assert_eq!(ev.records[0].1, 3);
        assert_eq!(ev.lines, 5);
        assert_eq!(ev.skipped, 1);
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Any text, and any damage to a real line (a cut, a byte spliced in), is read
        /// or skipped, never a panic.
        #[test]
        fn no_line_panics(
            junk in "\\PC{0,300}",
            cut in 0usize..400,
            at in 0usize..400,
            spliced in prop::sample::select(vec!["\\", "\"", "=", " ", "{", "\\x", "\\u{", "\u{2026}(len=", "result="]),
        ) {
            let _ = parse_line(&junk);
            let _ = parse_line(&format!("{{\"MESSAGE\":{junk:?}}}"));
            for base in [TEXT, r#"{"client":"c","path":"\"/a\"","access":"read","result":"granted","target":"fdbroker::audit"}"#] {
                let cut_at = (0..=cut.min(base.len())).rev().find(|&i| base.is_char_boundary(i)).unwrap_or(0);
                let _ = parse_line(&base[..cut_at]);
                let at = (0..=at.min(base.len())).rev().find(|&i| base.is_char_boundary(i)).unwrap_or(0);
                let _ = parse_line(&format!("{}{spliced}{}", &base[..at], &base[at..]));
            }
        }
    }
}
