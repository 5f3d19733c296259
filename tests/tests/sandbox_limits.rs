//! `fdbroker run`'s limits, end to end: real programs under a real sandbox, killed or
//! cut by the kernel and the broker, with the verdict line and exit status they
//! document. (Policy limits on requests are `limits.rs`.)
#![allow(clippy::unwrap_used)]

use fdbroker_tests::{TempDir, fdbroker_bin, run_with_timeout, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// Far longer than any limit below: a run that takes this long was never ended.
const HANG: Duration = Duration::from_secs(120);

fn fixture(extra: &str) -> (TempDir, PathBuf) {
    let t = TempDir::new("sandbox-limits");
    t.file("data/a.txt", b"a\n", 0o600);
    let policy = t.file(
        "policy.toml",
        format!(
            "[sandbox]\n{extra}\n[[client]]\nname = \"w\"\nusers = [\"nobody\"]\n  \
             [[client.allow]]\n  path = \"{}/data/\"\n",
            t.path().display()
        )
        .as_bytes(),
        0o644,
    );
    (t, policy)
}

fn run(policy: &Path, flags: &[&str], command: &[&str]) -> Output {
    let mut c = Command::new(fdbroker_bin());
    c.arg("run")
        .arg("--policy")
        .arg(policy)
        .args(flags)
        .arg("--")
        .args(command)
        .env("FDBROKER_LOG", "warn");
    run_with_timeout(&mut c, HANG)
}

fn verdict_lines(out: &Output) -> Vec<String> {
    text(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("fdbroker: verdict: "))
        .map(str::to_owned)
        .collect()
}

/// Whether this machine gives the broker a `kind` cgroup it can use (v1 hierarchy
/// mounted, or v2 with the controller delegated).
fn cgroup(kind: &str) -> bool {
    let v1 = Path::new("/sys/fs/cgroup").join(kind).join("cgroup.procs");
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/cgroup.subtree_control")
        .is_ok_and(|s| s.split_whitespace().any(|c| c == kind));
    v1.exists() || v2
}

/// Processes of `uid` still alive anywhere.
fn processes_of(uid: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .filter(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(str::to_owned))
                == Some(uid.to_string())
        })
        .count()
}

#[test]
fn a_loop_and_the_daemon_it_started_are_killed_at_the_wall_limit() {
    let (_t, policy) = fixture("");
    let out = run(
        &policy,
        &["--time-limit", "1s"],
        &[
            "sh",
            "-c",
            "id -u; sleep 1000 </dev/null 2>/dev/null & while :; do :; done",
        ],
    );
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    assert_eq!(
        verdict_lines(&out),
        ["fdbroker: verdict: timeout (--time-limit 1s): the limit ended the run"]
    );
    let uid: u32 = text(&out.stdout).trim().parse().unwrap();
    assert_eq!(processes_of(uid), 0, "the namespace was killed as a whole");
}

#[test]
fn the_policy_sets_a_limit_and_the_command_line_wins() {
    let (_t, policy) = fixture("time_limit = \"1s\"");
    let out = run(&policy, &[], &["sh", "-c", "while :; do :; done"]);
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    let out = run(
        &policy,
        &["--time-limit", "10m"],
        &["sh", "-c", "sleep 2; echo done"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "done\n");
    assert!(verdict_lines(&out).is_empty());
}

#[test]
fn an_allocation_over_the_memory_limit_ends_the_run() {
    let (_t, policy) = fixture("");
    let out = run(
        &policy,
        &["--memory-limit", "64M"],
        &[
            "python3",
            "-c",
            "b = bytearray(512 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('survived')",
        ],
    );
    assert!(!out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("survived"));
    if cgroup("memory") {
        assert_eq!(out.status.code(), Some(122), "{}", text(&out.stderr));
        assert_eq!(
            verdict_lines(&out),
            ["fdbroker: verdict: memory (--memory-limit 67108864 bytes): the limit ended the run"]
        );
    }
}

#[test]
fn a_fork_bomb_is_held_at_the_pids_limit_and_the_run_still_ends() {
    let (_t, policy) = fixture("");
    let bomb = "import os, time\nn = 0\nprint(os.getuid(), flush=True)\n\
                try:\n  while True:\n    if os.fork() == 0:\n      time.sleep(1000)\n    n += 1\n\
                except OSError:\n  print(n, flush=True)\n  raise SystemExit(1)\n";
    let out = run(
        &policy,
        &["--pids-limit", "8", "--time-limit", "100s"],
        &["python3", "-c", bomb],
    );
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    let uid: u32 = lines.next().unwrap().parse().unwrap();
    let forked: u32 = lines
        .next()
        .expect("fork failed at the limit")
        .parse()
        .unwrap();
    assert!(forked < 8, "held at the limit: {forked} forks");
    assert_ne!(
        out.status.code(),
        Some(124),
        "ended by the limit, not the clock"
    );
    if cgroup("pids") {
        assert_eq!(out.status.code(), Some(121), "{}", text(&out.stderr));
        assert_eq!(verdict_lines(&out).len(), 1);
    } else {
        assert_eq!(out.status.code(), Some(1));
    }
    assert_eq!(
        processes_of(uid),
        0,
        "the sleeping children went with the run"
    );
}

#[test]
fn writing_past_the_file_size_limit_is_cut_and_reported() {
    let (t, policy) = fixture("");
    let target = t.join("out.bin");
    let file = std::fs::File::create(&target).unwrap();
    let mut c = Command::new(fdbroker_bin());
    c.args(["run", "--file-size-limit", "1K", "--policy"])
        .arg(&policy)
        .args(["--", "sh", "-c", "yes | head -c 100000"])
        .env("FDBROKER_LOG", "warn");
    let child = c
        .stdout(file)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(120), "{}", text(&out.stderr));
    assert_eq!(std::fs::metadata(&target).unwrap().len(), 1024);
    assert_eq!(
        verdict_lines(&out),
        ["fdbroker: verdict: file-size (--file-size-limit 1024 bytes): the limit ended the run"]
    );
}

#[test]
fn writing_past_the_output_limit_is_cut_and_reported() {
    let (_t, policy) = fixture("");
    let out = run(&policy, &["--output-limit", "10"], &["yes"]);
    assert_eq!(out.status.code(), Some(119), "{}", text(&out.stderr));
    assert_eq!(out.stdout, b"y\ny\ny\ny\ny\n");
    assert_eq!(
        verdict_lines(&out),
        ["fdbroker: verdict: output (--output-limit 10 bytes): the limit ended the run"]
    );
    // Under the limit, all of it arrives and the status is the program's.
    let out = run(
        &policy,
        &["--output-limit", "1M"],
        &["sh", "-c", "echo hi; exit 3"],
    );
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout, b"hi\n");
}

#[test]
fn spinning_past_the_cpu_limit_is_reported() {
    let (_t, policy) = fixture("");
    let out = run(
        &policy,
        &["--cpu-limit", "1s"],
        &["sh", "-c", "while :; do :; done"],
    );
    assert_eq!(out.status.code(), Some(123), "{}", text(&out.stderr));
    assert_eq!(verdict_lines(&out).len(), 1);
}

#[test]
fn bad_limits_are_usage_errors() {
    let (_t, policy) = fixture("");
    let out = run(&policy, &["--memory-limit", "lots"], &["true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not a size such as"),
        "{}",
        text(&out.stderr)
    );
    let (_t, policy) = fixture("memory_limit = \"0\"");
    let out = run(&policy, &[], &["true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("bad memory_limit"),
        "{}",
        text(&out.stderr)
    );
}
