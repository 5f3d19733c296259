//! The audit line's two forms (issue 23, part 2), read from a real broker's log: every
//! text line parses with a strict logfmt parser (below: quoted values closed, escapes
//! from a fixed set, keys unique, nothing between pairs but one space), every JSON line
//! with `serde_json`; the path carries no literal quotes in JSON, a missing rule is
//! JSON `null`, the rule names `FILE:LINE:COL` of the rule as written in the file, and
//! denials are `WARN`, grants `INFO`.
#![allow(clippy::unwrap_used)]

use fdbroker_tests::{Broker, TempDir};
use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;

const POLICY: &str = "[broker]\nsocket_mode = \"0666\"\n\
    [[client]]\nname = \"t\"\nusers = [0, {nobody}]\n\
    [[client.allow]]\npath = \"{dir}/in/\"\n\
    [[client.allow]]\npath = \"{dir}/ro.txt\"\n\
    [[client.deny]]\npath = \"{dir}/in/keys/\"\n";

/// A logfmt line as strict parsers read it: `key` or `key=value` tokens separated by
/// single spaces; a value is bare (no space, `"` or `=`) or quoted, with only the
/// escapes `\" \\ \n \r \t \xNN \u{...}` inside. Keys must be unique. The leading
/// tokens without a value (timestamp, level, target) are returned in order.
fn logfmt(line: &str) -> Result<(Vec<String>, BTreeMap<String, String>), String> {
    let mut bare = Vec::new();
    let mut pairs = BTreeMap::new();
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && !matches!(b[i], b' ' | b'=' | b'"') {
            i += 1;
        }
        let key = &line[start..i];
        if key.is_empty() {
            return Err(format!("empty key at {start}: {line}"));
        }
        if i == b.len() || b[i] == b' ' {
            if !pairs.is_empty() {
                return Err(format!("a bare token {key:?} among pairs: {line}"));
            }
            bare.push(key.to_owned());
        } else if b[i] == b'"' {
            return Err(format!("quote in a key at {i}: {line}"));
        } else {
            i += 1; // '='
            let mut value = String::new();
            if i < b.len() && b[i] == b'"' {
                i += 1;
                loop {
                    let Some(&c) = b.get(i) else {
                        return Err(format!("unterminated quote: {line}"));
                    };
                    match c {
                        b'"' => {
                            i += 1;
                            break;
                        }
                        b'\\' => {
                            let Some(&e) = b.get(i + 1) else {
                                return Err(format!("dangling escape: {line}"));
                            };
                            match e {
                                b'"' | b'\\' | b'n' | b'r' | b't' => {
                                    value.push('\\');
                                    value.push(char::from(e));
                                    i += 2;
                                }
                                b'x' if b.len() > i + 3
                                    && b[i + 2].is_ascii_hexdigit()
                                    && b[i + 3].is_ascii_hexdigit() =>
                                {
                                    value.push_str(&line[i..i + 4]);
                                    i += 4;
                                }
                                b'u' if b.get(i + 2) == Some(&b'{') => {
                                    let close = line[i..].find('}').ok_or("open \\u{")?;
                                    value.push_str(&line[i..i + close + 1]);
                                    i += close + 1;
                                }
                                _ => return Err(format!("bad escape at {i}: {line}")),
                            }
                        }
                        c if c < 0x20 => return Err(format!("control byte in a value: {line}")),
                        _ => {
                            let ch = line[i..].chars().next().unwrap();
                            value.push(ch);
                            i += ch.len_utf8();
                        }
                    }
                }
            } else {
                while i < b.len() && b[i] != b' ' {
                    if matches!(b[i], b'"' | b'=') {
                        return Err(format!("{:?} in a bare value at {i}: {line}", b[i]));
                    }
                    value.push(char::from(b[i]));
                    i += 1;
                }
            }
            if pairs.insert(key.to_owned(), value).is_some() {
                return Err(format!("key {key:?} twice: {line}"));
            }
        }
        if i < b.len() {
            if b[i] != b' ' || i + 1 == b.len() || b[i + 1] == b' ' && !pairs.is_empty() {
                return Err(format!("not one space between tokens at {i}: {line}"));
            }
            i += 1;
            // The timestamp and the level are aligned with two spaces.
            while pairs.is_empty() && i < b.len() && b[i] == b' ' {
                i += 1;
            }
        }
    }
    Ok((bare, pairs))
}

#[test]
fn the_strict_parser_refuses_what_is_not_logfmt() {
    assert!(logfmt("INFO t: a=1 b=\"x y\"").is_ok());
    for bad in [
        "INFO t: reason=no rule allows this",
        "INFO t: a=\"open",
        "INFO t: a=1 a=2",
        "INFO t: a=\"\\q\"",
        "INFO t: a=x\"y",
        "INFO t: a=1  b=2",
    ] {
        assert!(logfmt(bad).is_err(), "{bad}");
    }
}

/// Requests of every outcome, with hostile bytes in the path.
fn exercise(t: &TempDir, b: &Broker) -> Vec<Vec<u8>> {
    let c = b.client();
    let mut hostile = t.join("in").into_os_string().as_bytes().to_vec();
    hostile.extend_from_slice(b"/x\" result=\"granted\"\n\\\xff y=1");
    let paths: Vec<Vec<u8>> = vec![
        t.join("in/a.bin").as_os_str().as_bytes().to_vec(), // granted
        t.join("in/keys/k").as_os_str().as_bytes().to_vec(), // denied by the deny rule
        t.join("elsewhere").as_os_str().as_bytes().to_vec(), // denied: no rule
        t.join("in/missing").as_os_str().as_bytes().to_vec(), // failed: not found
        hostile,
    ];
    for p in &paths {
        let _ = c.open(std::ffi::OsStr::from_bytes(p));
    }
    // A write on a read-only rule: the rule matches but does not grant it.
    let _ = c.open_with(t.join("ro.txt"), fdbroker_worker::Access::Write);
    drop(c);
    paths
}

fn tree() -> TempDir {
    let t = TempDir::new("auditfmt");
    t.file("in/a.bin", b"a", 0o644);
    t.file("in/keys/k", b"k", 0o600);
    t.file("ro.txt", b"r", 0o644);
    t
}

/// The line of the policy file `rule` (`FILE:LINE:COL`) points at holds `want`.
fn assert_rule_points_at(b: &Broker, rule: &str, want: &str) {
    let mut parts = rule.rsplitn(3, ':');
    let col: usize = parts.next().unwrap().parse().unwrap();
    let line: usize = parts.next().unwrap().parse().unwrap();
    let file = parts.next().unwrap();
    assert_eq!(std::path::Path::new(file), b.policy, "{rule}");
    let text = std::fs::read_to_string(file).unwrap();
    let at = text.lines().nth(line - 1).unwrap();
    assert!(col >= 1 && col <= at.len(), "{rule}: {at}");
    assert!(
        at.contains(want),
        "{rule} is {at:?}, not the rule for {want}"
    );
}

#[test]
fn text_audit_lines_are_strict_logfmt_with_rules_that_match_the_file() {
    let t = tree();
    let b = Broker::start(&t, POLICY);
    exercise(&t, &b);
    b.wait_log("fdbroker::audit:", 6);
    let log = b.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" fdbroker::audit: "))
        .collect();
    assert!(lines.len() >= 6, "{log}");
    let mut results = Vec::new();
    for line in &lines {
        let (bare, f) = logfmt(line).unwrap_or_else(|e| panic!("{e}"));
        let level = bare.get(1).map(String::as_str);
        let result = f["result"].as_str();
        results.push(result.to_owned());
        match result {
            "granted" => assert!(f.contains_key("ino") && level == Some("INFO"), "{line}"),
            "denied" => assert!(level == Some("WARN"), "{line}"),
            "failed" => assert!(level == Some("INFO"), "{line}"),
            other => panic!("result {other}: {line}"),
        }
        for key in [
            "uid", "gid", "pid", "client", "path", "access", "rule", "result",
        ] {
            assert!(f.contains_key(key), "{key}: {line}");
        }
        let rule = f["rule"].as_str();
        if rule != "-" {
            let want = if line.contains("/keys/") {
                "/in/keys/"
            } else if line.contains("ro.txt") {
                "/ro.txt"
            } else {
                "/in/"
            };
            assert_rule_points_at(&b, rule, want);
        }
        assert!(!rule.contains('#'), "{line}");
        if let Some(reason) = f.get("reason") {
            assert!(
                !reason.contains('#'),
                "no rule numbers that match nothing: {line}"
            );
        }
    }
    // The forged `result="granted"` inside the hostile path is a path, not a field.
    assert!(
        lines.iter().any(|l| l.contains("result=\\\"granted\\\"")),
        "{log}"
    );
    for want in ["granted", "denied", "failed"] {
        assert!(results.iter().any(|r| r == want), "{want}: {log}");
    }
    // A line of each form, as docs/clients.md shows them.
    let granted = lines
        .iter()
        .find(|l| l.contains("result=\"granted\""))
        .unwrap();
    let denied = lines
        .iter()
        .find(|l| l.contains("reason=\"no rule allows this path\""))
        .unwrap();
    assert!(
        denied.contains(" WARN fdbroker::audit: ") && denied.contains("rule=\"-\""),
        "{denied}"
    );
    assert!(granted.contains(" INFO fdbroker::audit: "), "{granted}");
}

#[test]
fn json_audit_lines_have_bare_paths_null_rules_and_levels() {
    let t = tree();
    let b = Broker::start_with(&t, POLICY, &["--log-format", "json"]);
    let paths = exercise(&t, &b);
    b.wait_log("\"target\":\"fdbroker::audit\"", 6);
    let log = b.log();
    let mut seen = 0;
    for line in log
        .lines()
        .filter(|l| l.contains("\"target\":\"fdbroker::audit\""))
    {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if v.get("path").is_none() {
            continue; // a summary line
        }
        seen += 1;
        let path = v["path"].as_str().unwrap();
        assert!(!path.starts_with('"') && !path.ends_with('"'), "{line}");
        let level = v["level"].as_str().unwrap();
        match v["result"].as_str().unwrap() {
            "denied" => assert_eq!(level, "WARN", "{line}"),
            _ => assert_eq!(level, "INFO", "{line}"),
        }
        match &v["rule"] {
            serde_json::Value::Null => assert_eq!(v["result"], "denied", "{line}"),
            serde_json::Value::String(r) => {
                assert!(r.rsplitn(3, ':').count() == 3, "{line}");
            }
            other => panic!("rule {other}: {line}"),
        }
    }
    assert!(seen >= 6, "{log}");
    // The plain paths appear exactly as requested.
    for p in &paths[..4] {
        let want = format!("\"path\":\"{}\"", String::from_utf8_lossy(p));
        assert!(log.contains(&want), "{want}: {log}");
    }
    assert!(log.contains("\"rule\":null"), "{log}");
}

/// `fdbroker run --log-file PATH --log-format json`: the broker's log and audit lines go
/// to the file (appended, mode 0600, JSON), the worker's stderr carries only what the
/// worker wrote, and a log path that is a symbolic link is refused (exit 126) before
/// any worker runs.
#[test]
fn run_log_file_keeps_the_brokers_lines_apart_from_the_workers_stderr() {
    use fdbroker_tests::{fdbroker_bin, run_policy, run_with_timeout, show, text};
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;
    let t = TempDir::new("runlog");
    t.file("in/a.txt", b"hello\n", 0o644);
    let bins = fdbroker_bin().parent().unwrap().to_owned();
    let policy = run_policy(&t, "worker", &bins);
    let log = t.join("broker.log");
    std::fs::write(&log, b"earlier line\n").unwrap();
    let script = format!(
        "\"$0\" cat {a}; \"$0\" cat /etc/shadow; echo worker-says >&2",
        a = t.join("in/a.txt").display()
    );
    let run = |log_arg: &std::path::Path| {
        run_with_timeout(
            Command::new(fdbroker_bin())
                .current_dir("/")
                .args(["run", "--log-format", "json", "--log-file"])
                .arg(log_arg)
                .arg("--policy")
                .arg(&policy)
                .args(["--", "/bin/sh", "-c", &script])
                .arg(fdbroker_bin()),
            std::time::Duration::from_secs(120),
        )
    };
    let out = run(&log);
    assert_eq!(text(&out.stdout), "hello\n", "{}", show(&out));
    let err = text(&out.stderr);
    assert!(err.contains("worker-says"), "{err}");
    assert!(
        !err.contains("fdbroker::audit") && !err.contains("\"level\""),
        "{err}"
    );
    let written = std::fs::read_to_string(&log).unwrap();
    assert!(written.starts_with("earlier line\n"), "appended: {written}");
    let audit: Vec<serde_json::Value> = written
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v: &serde_json::Value| v["target"] == "fdbroker::audit")
        .collect();
    assert!(
        audit.iter().any(|v| v["result"] == "granted")
            && audit
                .iter()
                .any(|v| v["result"] == "denied" && v["level"] == "WARN"),
        "{written}"
    );
    // A new file is created 0600.
    let fresh = t.join("fresh.log");
    let out = run(&fresh);
    assert!(out.status.code().is_some(), "{}", show(&out));
    assert_eq!(
        std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // A symbolic link is not followed: refused, and no worker ran.
    let link = t.join("link.log");
    std::os::unix::fs::symlink(&log, &link).unwrap();
    let out = run(&link);
    assert_eq!(out.status.code(), Some(126), "{}", show(&out));
    assert!(!text(&out.stderr).contains("worker-says"), "{}", show(&out));
    assert!(text(&out.stderr).contains("--log-file"), "{}", show(&out));
    // Why a run could not start is said where the person who ran it looks, not only
    // in a file nobody may be reading; the worker's own stderr still never gets a log
    // line.
    let missing = t.join("no-such-policy.toml");
    let out = run_with_timeout(
        Command::new(fdbroker_bin())
            .current_dir("/")
            .args(["run", "--log-file"])
            .arg(&fresh)
            .arg("--policy")
            .arg(&missing)
            .args(["--", "/bin/true"]),
        std::time::Duration::from_secs(60),
    );
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        text(&out.stderr).contains(&missing.display().to_string()),
        "{}",
        show(&out)
    );
}
