//! `fdbroker status` and the `STATUS=` line (issue 23, part 2), against a real broker
//! with known connections: the test process (root, client `ops`) and a `worker-probe`
//! running as nobody (client `scan`), each making known requests. Nothing waits on a
//! clock: every wait is for a state the broker reports, bounded generously.
#![allow(clippy::unwrap_used)]

use fdbroker_tests::{
    Broker, TempDir, fdbroker_bin, nobody_gid, nobody_uid, run_with_timeout, show, sibling_bin,
    text,
};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::{Duration, Instant};

const POLICY: &str = "[broker]\nsocket_mode = \"0666\"\n\
    [[client]]\nname = \"ops\"\nusers = [0]\n\
    [[client.allow]]\npath = \"{dir}/in/\"\n\
    [[client]]\nname = \"scan\"\nusers = [{nobody}]\n\
    [[client.allow]]\npath = \"{dir}/in/\"\n\
    [[client.deny]]\npath = \"{dir}/in/keys/\"\n";

/// How long any one state may take to show: far beyond what it needs.
const WITHIN: Duration = Duration::from_secs(60);

fn tree() -> TempDir {
    let t = TempDir::new("status");
    t.file("in/a.bin", b"a\n", 0o644);
    t.file("in/keys/k", b"k\n", 0o600);
    t
}

/// `worker-probe` as nobody, connected to `socket`.
struct Probe {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<std::process::ChildStdout>,
    pid: i32,
}

impl Probe {
    fn start(socket: &std::path::Path) -> Probe {
        let mut cmd = Command::new(sibling_bin("worker-probe"));
        cmd.env("FDBROKER_SOCKET", socket)
            .uid(nobody_uid())
            .gid(nobody_gid())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let pid = line.trim().strip_prefix("READY ").unwrap().parse().unwrap();
        Probe {
            child,
            stdin,
            out,
            pid,
        }
    }

    fn ask(&mut self, cmd: &str) -> String {
        writeln!(self.stdin, "{cmd}").unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.trim().to_owned()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status(args: &[&str]) -> Output {
    run_with_timeout(
        Command::new(fdbroker_bin()).arg("status").args(args),
        Duration::from_secs(60),
    )
}

fn status_json(b: &Broker) -> Value {
    let out = status(&["--socket", b.socket.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", show(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&out)))
}

fn client<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client"] == name)
        .unwrap_or_else(|| panic!("no client {name}: {report}"))
}

fn reload(b: &Broker) -> Output {
    run_with_timeout(
        Command::new(fdbroker_bin())
            .args(["reload", "--timeout", "60"])
            .arg(b.monitor_pid().to_string()),
        Duration::from_secs(120),
    )
}

/// Two clients with known connections and requests: the JSON lists each connection with
/// its client, uid and pid, counts per client and per rule (the deny rule's `FILE:LINE:COL`
/// and `-` for no rule), the policy file, no reload yet; the text form (asked by the
/// monitor's PID) says the same. Nobody may not ask. After a reload the counts go on
/// from where they were and the reload is `applied`; after a broken one, `refused` with
/// the file's `FILE:LINE:COL`, and the counts are still there.
#[test]
fn status_reports_connections_counts_and_reloads_in_text_and_json() {
    let t = tree();
    let b = Broker::start(&t, POLICY);
    let ops = b.client();
    for _ in 0..2 {
        ops.open(t.join("in/a.bin")).unwrap();
    }
    let mut probe = Probe::start(&b.socket);
    assert!(
        probe
            .ask(&format!("open {}", t.join("in/a.bin").display()))
            .starts_with("OK ")
    );
    for p in [t.join("in/keys/k"), "/etc/shadow".into()] {
        assert!(
            probe
                .ask(&format!("open {}", p.display()))
                .starts_with("ERR ")
        );
    }

    let r = status_json(&b);
    assert_eq!(r["policy"]["file"], b.policy.to_str().unwrap(), "{r}");
    assert!(r["last_reload"].is_null(), "{r}");
    let peers = r["connections"].as_array().unwrap();
    let me = std::process::id() as i64;
    assert!(
        peers
            .iter()
            .any(|p| p["client"] == "ops" && p["uid"] == 0 && p["pid"] == me),
        "{r}"
    );
    assert!(
        peers.iter().any(|p| p["client"] == "scan"
            && p["uid"] == i64::from(nobody_uid())
            && p["pid"] == i64::from(probe.pid)),
        "{r}"
    );
    assert_eq!(
        r["connections_total"], 2,
        "the status request itself is no client's: {r}"
    );
    let (o, s) = (client(&r, "ops"), client(&r, "scan"));
    assert_eq!(
        (o["requests"].as_u64(), o["granted"].as_u64()),
        (Some(2), Some(2)),
        "{r}"
    );
    assert_eq!(
        (
            s["requests"].as_u64(),
            s["granted"].as_u64(),
            s["denied"].as_u64()
        ),
        (Some(3), Some(1), Some(2)),
        "{r}"
    );
    assert_eq!(
        (o["connections"].as_u64(), s["connections"].as_u64()),
        (Some(1), Some(1))
    );
    let rules = r["rules"].as_array().unwrap();
    let deny_line = std::fs::read_to_string(&b.policy)
        .unwrap()
        .lines()
        .position(|l| l.contains("/in/keys/"))
        .unwrap()
        + 1;
    assert!(
        rules.iter().any(|x| x["client"] == "scan"
            && x["rule"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{}:{deny_line}:", b.policy.display()))
            && x["denied"] == 1),
        "{r}"
    );
    assert!(
        rules
            .iter()
            .any(|x| x["client"] == "scan" && x["rule"] == "-" && x["denied"] == 1),
        "{r}"
    );
    assert!(r["in_flight"].is_array() && r["uptime_s"].is_u64(), "{r}");

    // Text, by the monitor's pid.
    let out = status(&[&b.monitor_pid().to_string()]);
    assert!(out.status.success(), "{}", show(&out));
    let txt = text(&out.stdout);
    assert!(
        txt.contains(&format!("policy:      {}", b.policy.display())),
        "{txt}"
    );
    assert!(txt.contains("last reload: none"), "{txt}");
    assert!(txt.contains("connections: 2"), "{txt}");
    assert!(
        txt.lines().any(|l| l.contains("scan")
            && l.contains(&format!("uid {}", nobody_uid()))
            && l.ends_with(&format!("pid {}", probe.pid))),
        "{txt}"
    );
    assert!(
        txt.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w == ["scan", "1", "3", "1", "2", "0"]
        }),
        "{txt}"
    );

    // Nobody may not ask, neither as a client of the policy nor otherwise.
    let mut cmd = Command::new(fdbroker_bin());
    cmd.args(["status", "--socket"])
        .arg(&b.socket)
        .uid(nobody_uid())
        .gid(nobody_gid());
    let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("only root or the broker's own user"),
        "{}",
        show(&out)
    );

    // A reload: the counts survive it, and it is reported applied.
    let started = r["started"].clone();
    let out = reload(&b);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        probe
            .ask(&format!("open {}", t.join("in/a.bin").display()))
            .starts_with("OK ")
    );
    let r2 = status_json(&b);
    assert_eq!(r2["last_reload"]["outcome"], "applied", "{r2}");
    assert_eq!(
        r2["started"], started,
        "the service's start, not the new server's: {r2}"
    );
    assert_ne!(r2["pid"], r["pid"], "a new server answers: {r2}");
    assert_eq!(client(&r2, "scan")["requests"], 4, "{r2}");
    assert_eq!(client(&r2, "ops")["requests"], 2, "{r2}");
    assert_eq!(
        r2["connections_total"], 2,
        "both connections were handed over: {r2}"
    );

    // A broken policy: refused, with where; the counts stay.
    std::fs::write(&b.policy, "[[client]]\nname = 3\n").unwrap();
    let out = reload(&b);
    assert!(!out.status.success(), "{}", show(&out));
    let deadline = Instant::now() + WITHIN;
    let r3 = loop {
        let r3 = status_json(&b);
        if r3["last_reload"]["outcome"] == "refused" || Instant::now() > deadline {
            break r3;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(r3["last_reload"]["outcome"], "refused", "{r3}");
    let error = r3["last_reload"]["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("{}:2:", b.policy.display())),
        "{r3}"
    );
    assert_eq!(client(&r3, "scan")["requests"], 4, "{r3}");
    let out = status(&["--socket", b.socket.to_str().unwrap()]);
    assert!(
        text(&out.stdout).contains("last reload: refused at "),
        "{}",
        show(&out)
    );
    drop(ops);
}

/// The `STATUS=` line read from a real `NOTIFY_SOCKET` the test owns: it catches up with
/// one open connection and five requests (no lag), a reload does not start it over,
/// and a failed reload whose reason does not fit is said in a few whole words, never
/// cut; every line fits in the limit.
#[test]
fn status_line_is_current_survives_reloads_and_is_never_cut() {
    let t = tree();
    let notify_dir = TempDir::new("status-notify");
    let notify_path = notify_dir.join("n.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let log = t.join("broker.log");
    let b = Broker::start_logging_to(
        &t,
        POLICY,
        Stdio::from(std::fs::File::create(&log).unwrap()),
        &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())],
    );
    let mut seen: Vec<String> = Vec::new();
    let wait_for = |want: &dyn Fn(&str) -> bool, seen: &mut Vec<String>| -> String {
        let deadline = Instant::now() + WITHIN;
        let mut buf = vec![0; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = notify.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                for s in msg.lines().filter_map(|l| l.strip_prefix("STATUS=")) {
                    assert!(s.len() <= 240, "too long: {s}");
                    seen.push(s.to_owned());
                    if want(s) {
                        return s.to_owned();
                    }
                }
            }
        }
        panic!("no such STATUS= within {WITHIN:?}; saw {seen:?}");
    };
    let c = b.client();
    for _ in 0..4 {
        c.open(t.join("in/a.bin")).unwrap();
    }
    assert!(c.open("/etc/shadow").is_err());
    let line = wait_for(
        &|s| s.contains("1 connection,") && s.contains("5 requests (4 granted, 1 denied)"),
        &mut seen,
    );
    assert!(
        line.starts_with(&format!("serving {}: ", b.policy.display())),
        "{line}"
    );

    // A reload: from READY on, no line says fewer requests than before.
    let before = seen.len();
    let out = reload(&b);
    assert!(out.status.success(), "{}", show(&out));
    c.open(t.join("in/a.bin")).unwrap();
    wait_for(
        &|s| s.contains("6 requests (5 granted, 1 denied)"),
        &mut seen,
    );
    for s in &seen[before..] {
        if let Some(n) = s
            .split(", ")
            .nth(1)
            .and_then(|x| x.split(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
        {
            assert!(
                n >= 5,
                "the counts started over at the reload: {s} in {seen:?}"
            );
        }
    }

    // A refused reload whose reason is longer than the line allows.
    let long = "x".repeat(300);
    std::fs::write(&b.policy, format!("[[client]]\n{long} = 3\n")).unwrap();
    let out = reload(&b);
    assert!(!out.status.success(), "{}", show(&out));
    let line = wait_for(&|s| s.contains("last reload failed"), &mut seen);
    assert!(
        line.ends_with("; last reload failed (see the journal)") && line.contains("6 requests"),
        "{line}"
    );
    drop(c);
}
