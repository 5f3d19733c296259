//! Audit entries under journald (issue 23, part 2): when `JOURNAL_STREAM` says stderr
//! is the journal, each decision goes to the journal's native socket as an entry with
//! fields of its own (`FDBROKER_RESULT=denied`, `FDBROKER_CLIENT=`, `FDBROKER_PATH=`,
//! `FDBROKER_RULE=`, the peer's uid and pid), denials at priority 4. The socket here is
//! one the test owns (`FDBROKER_JOURNAL_SOCKET`), read and parsed strictly as the native
//! protocol; a journal that goes away costs no crash and no hang, and is found again
//! once it is back (sent by address, as journald's restart needs).
#![allow(clippy::unwrap_used)]

use fdbroker_tests::{Broker, TempDir, errno_of};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::{Duration, Instant};

const POLICY: &str = "[broker]\nsocket_mode = \"0666\"\n\
    [[client]]\nname = \"ops\"\nusers = [0]\n\
    [[client.allow]]\npath = \"{dir}/in/\"\n\
    [[client.deny]]\npath = \"{dir}/in/keys/\"\n";

const WITHIN: Duration = Duration::from_secs(60);

/// One native entry: `NAME=value\n`, or `NAME\n` + u64 LE length + value + `\n`. Names
/// are upper-case letters, digits and `_`, not starting with `_` (trusted fields are
/// journald's to add) or a digit.
fn parse_entry(mut b: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    while !b.is_empty() {
        let name_end = b
            .iter()
            .position(|&c| c == b'=' || c == b'\n')
            .ok_or("a field without = or newline")?;
        let name = std::str::from_utf8(&b[..name_end]).map_err(|e| e.to_string())?;
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_')
            && !name.starts_with('_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(format!("bad field name {name:?}"));
        }
        let value;
        if b[name_end] == b'=' {
            let rest = &b[name_end + 1..];
            let nl = rest
                .iter()
                .position(|&c| c == b'\n')
                .ok_or("unterminated value")?;
            value = rest[..nl].to_vec();
            b = &rest[nl + 1..];
        } else {
            let rest = &b[name_end + 1..];
            if rest.len() < 8 {
                return Err("short length".into());
            }
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            let rest = &rest[8..];
            if rest.len() < len + 1 || rest[len] != b'\n' {
                return Err("binary value not followed by a newline".into());
            }
            value = rest[..len].to_vec();
            b = &rest[len + 1..];
        }
        if out.insert(name.to_owned(), value).is_some() {
            return Err(format!("{name} twice"));
        }
    }
    Ok(out)
}

fn s(e: &BTreeMap<String, Vec<u8>>, k: &str) -> String {
    String::from_utf8_lossy(e.get(k).map_or(&b""[..], |v| v)).into_owned()
}

struct Journal {
    sock: UnixDatagram,
}

impl Journal {
    fn bind(path: &std::path::Path) -> Journal {
        let _ = std::fs::remove_file(path);
        let sock = UnixDatagram::bind(path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Journal { sock }
    }

    /// Entries until `want` has seen one it likes, within [`WITHIN`].
    fn until(
        &self,
        want: impl Fn(&BTreeMap<String, Vec<u8>>) -> bool,
    ) -> Vec<BTreeMap<String, Vec<u8>>> {
        let deadline = Instant::now() + WITHIN;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65_536];
        while Instant::now() < deadline {
            if let Ok(n) = self.sock.recv(&mut buf) {
                let e = parse_entry(&buf[..n])
                    .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&buf[..n])));
                let done = want(&e);
                got.push(e);
                if done {
                    return got;
                }
            }
        }
        panic!("no such entry within {WITHIN:?}; got {got:?}");
    }
}

#[test]
fn decisions_are_native_journal_entries_with_fields_and_survive_a_journal_restart() {
    let t = TempDir::new("journal");
    t.file("in/a.bin", b"a", 0o644);
    t.file("in/keys/k", b"k", 0o600);
    let jdir = TempDir::new("journal-sock");
    let jpath = jdir.join("socket");
    let journal = Journal::bind(&jpath);
    let log = t.join("stderr.log");
    std::fs::write(&log, b"").unwrap();
    let m = std::fs::metadata(&log).unwrap();
    let stream = format!("{}:{}", m.dev(), m.ino());
    let b = Broker::start_logging_to(
        &t,
        POLICY,
        Stdio::from(std::fs::OpenOptions::new().append(true).open(&log).unwrap()),
        &[
            ("JOURNAL_STREAM", stream.as_str()),
            ("FDBROKER_JOURNAL_SOCKET", jpath.to_str().unwrap()),
        ],
    );
    let c = b.client();
    c.open(t.join("in/a.bin")).unwrap();
    assert!(c.open(t.join("in/keys/k")).is_err());
    let hostile = t.join("in/x\nFDBROKER_RESULT=granted");
    assert!(c.open(&hostile).is_err());
    assert!(c.open("/etc/shadow").is_err());
    let got = journal.until(|e| s(e, "FDBROKER_PATH") == "/etc/shadow");
    let me = std::process::id().to_string();
    let granted = got
        .iter()
        .find(|e| s(e, "FDBROKER_RESULT") == "granted")
        .unwrap();
    assert_eq!(s(granted, "PRIORITY"), "6", "{granted:?}");
    assert_eq!(s(granted, "FDBROKER_CLIENT"), "ops");
    assert_eq!(
        s(granted, "FDBROKER_PATH"),
        t.join("in/a.bin").to_str().unwrap()
    );
    assert_eq!(s(granted, "FDBROKER_UID"), "0");
    assert_eq!(s(granted, "FDBROKER_PID"), me);
    assert_eq!(s(granted, "SYSLOG_IDENTIFIER"), "fdbroker");
    assert!(s(granted, "FDBROKER_RULE").starts_with(&format!("{}:", b.policy.display())));
    assert!(
        s(granted, "MESSAGE").contains("result=\"granted\""),
        "{granted:?}"
    );
    let denied: Vec<_> = got
        .iter()
        .filter(|e| s(e, "FDBROKER_RESULT") == "denied")
        .collect();
    assert!(denied.len() >= 2, "{got:?}");
    for d in &denied {
        assert_eq!(s(d, "PRIORITY"), "4", "denials are warnings: {d:?}");
        assert!(d.contains_key("FDBROKER_REASON"), "{d:?}");
    }
    let by_deny = denied
        .iter()
        .find(|e| s(e, "FDBROKER_PATH").ends_with("/in/keys/k"))
        .unwrap();
    let deny_line = std::fs::read_to_string(&b.policy)
        .unwrap()
        .lines()
        .position(|l| l.contains("/in/keys/"))
        .unwrap()
        + 1;
    assert!(
        s(by_deny, "FDBROKER_RULE").starts_with(&format!("{}:{deny_line}:", b.policy.display())),
        "{by_deny:?}"
    );
    let none = denied
        .iter()
        .find(|e| s(e, "FDBROKER_PATH") == "/etc/shadow")
        .unwrap();
    assert_eq!(s(none, "FDBROKER_RULE"), "-");
    // The newline in a path is escaped: no entry claims `granted` for it.
    let forged = got
        .iter()
        .find(|e| s(e, "FDBROKER_PATH").contains("\\x0aFDBROKER_RESULT=granted"))
        .expect("the hostile path's entry");
    assert_ne!(s(forged, "FDBROKER_RESULT"), "granted");
    // Decisions went to the journal, not to the stream.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("fdbroker::audit: uid="), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("<6>") && l.contains("serving")),
        "{text}"
    );

    // The journal goes away: the broker neither dies nor hangs; with audit_failure
    // "refuse" (the default) it refuses what it cannot record.
    drop(journal);
    std::fs::remove_file(&jpath).unwrap();
    let e = c.open(t.join("in/a.bin")).unwrap_err();
    assert_eq!(errno_of(&e), libc::EIO, "{e}");
    // journald is back (a new socket at the same path): entries reach it again.
    let journal = Journal::bind(&jpath);
    let deadline = Instant::now() + WITHIN;
    loop {
        match c.open(t.join("in/a.bin")) {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline && errno_of(&e) == libc::EIO => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("{e}"),
        }
    }
    journal.until(|e| s(e, "FDBROKER_RESULT") == "granted");
    // And the broker says what was lost meanwhile, on its stream.
    let deadline = Instant::now() + WITHIN;
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("log writes resumed")
    {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(b);
}

/// The same against a real journald, started in a private mount namespace (its own
/// `/run/systemd` and `/run/log`): `journalctl FDBROKER_RESULT=denied` finds exactly the
/// denials, with the client, path, rule, uid and pid, and `journalctl -p warning`
/// shows them while grants stay at info.
#[test]
fn a_real_journald_selects_denials_by_field_and_priority() {
    const JOURNALD: &str = "/lib/systemd/systemd-journald";
    assert!(
        std::path::Path::new(JOURNALD).exists(),
        "{JOURNALD} is missing: install the Debian package `systemd` (scripts/test.sh does)"
    );
    let t = TempDir::new("journald");
    t.file("in/a.bin", b"a", 0o644);
    t.file("in/keys/k", b"k", 0o600);
    let policy = t.file(
        "policy.toml",
        POLICY
            .replace("{dir}", t.path().to_str().unwrap())
            .as_bytes(),
        0o644,
    );
    let script = r#"
set -e
mount -t tmpfs tmpfs /run/systemd 2>/dev/null || { mkdir -p /run/systemd && mount -t tmpfs tmpfs /run/systemd; }
mkdir -p /run/log && mount -t tmpfs tmpfs /run/log
"$JOURNALD" & J=$!
i=0; until [ -S /run/systemd/journal/socket ]; do i=$((i+1)); [ $i -lt 600 ]; sleep 0.1; done
: > "$DIR/stderr.log"
JOURNAL_STREAM=$(stat -c '%d:%i' "$DIR/stderr.log") "$FDBROKER" serve --policy "$POLICY" --socket "$DIR/s.sock" 2>>"$DIR/stderr.log" & B=$!
i=0; until [ -S "$DIR/s.sock" ]; do i=$((i+1)); [ $i -lt 600 ]; sleep 0.1; done
"$FDBROKER" cat --socket "$DIR/s.sock" "$DIR/in/a.bin" "$DIR/in/keys/k" /etc/shadow > /dev/null 2>&1 || true
kill -TERM $B; wait $B || true
# Until journald has stored both denials (the entries came in order, the grant first).
i=0; until [ "$(journalctl -D /run/log/journal --no-pager -o cat FDBROKER_RESULT=denied | wc -l)" -ge 2 ]; do i=$((i+1)); [ $i -lt 600 ]; sleep 0.1; done
journalctl -D /run/log/journal --no-pager -o json FDBROKER_RESULT=denied > "$DIR/denied.json"
journalctl -D /run/log/journal --no-pager -o json -p warning SYSLOG_IDENTIFIER=fdbroker > "$DIR/warnings.json"
journalctl -D /run/log/journal --no-pager -o json FDBROKER_RESULT=granted > "$DIR/granted.json"
kill $J
"#;
    let out = fdbroker_tests::run_with_timeout(
        std::process::Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", script])
            .env("JOURNALD", JOURNALD)
            .env("FDBROKER", fdbroker_tests::fdbroker_bin())
            .env("POLICY", &policy)
            .env("DIR", t.path()),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "{}", fdbroker_tests::show(&out));
    let entries = |name: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(t.join(name))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let denied = entries("denied.json");
    assert_eq!(denied.len(), 2, "{denied:?}");
    for d in &denied {
        assert_eq!(d["PRIORITY"], "4", "{d}");
        assert_eq!(d["FDBROKER_CLIENT"], "ops", "{d}");
        assert_eq!(d["FDBROKER_UID"], "0", "{d}");
        assert!(
            d["FDBROKER_PID"]
                .as_str()
                .is_some_and(|p| p.parse::<u32>().is_ok()),
            "{d}"
        );
        assert_eq!(d["SYSLOG_IDENTIFIER"], "fdbroker", "{d}");
    }
    let paths: Vec<&str> = denied
        .iter()
        .map(|d| d["FDBROKER_PATH"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"/etc/shadow"), "{paths:?}");
    let keys = t.join("in/keys/k");
    assert!(paths.contains(&keys.to_str().unwrap()), "{paths:?}");
    let by_deny = denied
        .iter()
        .find(|d| d["FDBROKER_PATH"] == keys.to_str().unwrap())
        .unwrap();
    assert!(
        by_deny["FDBROKER_RULE"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}:", policy.display())),
        "{by_deny}"
    );
    let warnings = entries("warnings.json");
    assert!(
        warnings
            .iter()
            .filter(|w| w["FDBROKER_RESULT"] == "denied")
            .count()
            == 2
            && !warnings.iter().any(|w| w["FDBROKER_RESULT"] == "granted"),
        "{warnings:?}"
    );
    let granted = entries("granted.json");
    assert_eq!(granted.len(), 1, "{granted:?}");
    assert_eq!(granted[0]["PRIORITY"], "6");
}
