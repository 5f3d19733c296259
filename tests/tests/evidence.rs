//! Policies judged against evidence: `policy suggest`, `diff`, `replay`, `who`,
//! `explain --spawn` and `reload --replay`, on real policies and on the audit log of a
//! real broker (text and JSON), served to a real unprivileged `fdbroker cat`.
#![allow(clippy::unwrap_used)]

use fdbroker_tests::{
    Broker, TempDir, cat_as_nobody, fdbroker, fdbroker_bin, run_with_timeout, show, text,
};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

const POLICY: &str = r#"
[broker]
socket_mode = "0666"

[[client]]
name = "scanner"
users = ["nobody"]
  [[client.allow]]
  path = "{dir}/spool/a.txt"
  [[client.allow]]
  path = "{dir}/spool/keep.txt"
  [[client.deny]]
  path = "{dir}/spool/secret.txt"
"#;

/// A broker on POLICY (in `format`), asked by nobody for a granted file, two files no
/// rule grants (one twice) and one a deny rule refuses; its audit log, written out.
fn logged(t: &TempDir, format: &str) -> (Broker, std::path::PathBuf) {
    for f in ["a.txt", "keep.txt", "b.txt", "c.txt", "secret.txt"] {
        t.file(&format!("spool/{f}"), f.as_bytes(), 0o600);
    }
    let b = Broker::start_with(t, POLICY, &["--log-format", format]);
    let j = |f: &str| t.join(&format!("spool/{f}"));
    let (a, keep, bb, c, s) = (
        j("a.txt"),
        j("keep.txt"),
        j("b.txt"),
        j("c.txt"),
        j("secret.txt"),
    );
    let out = cat_as_nobody(&b.socket, &[&a, &keep, &bb, &c, &bb, &s]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(
        text(&out.stdout).starts_with("a.txtkeep.txt"),
        "{}",
        show(&out)
    );
    b.wait_log("secret.txt", 1);
    let log = t.join(&format!("audit.{format}"));
    std::fs::write(&log, b.log()).unwrap();
    (b, log)
}

#[test]
fn suggest_turns_a_real_brokers_denials_into_rules_in_text_and_json() {
    for format in ["text", "json"] {
        let t = TempDir::new("suggest");
        let (_b, log) = logged(&t, format);
        let out = fdbroker(&["policy", "suggest", "--audit", log.to_str().unwrap()]);
        assert_eq!(code(&out), 0, "{format}: {}", show(&out));
        let s = text(&out.stdout);
        let dir = t.path().display();
        assert!(
            s.contains(&format!("path = \"{dir}/spool/b.txt\"")),
            "{format}: {s}"
        );
        assert!(
            s.contains(&format!("path = \"{dir}/spool/c.txt\"")),
            "{format}: {s}"
        );
        assert!(
            s.contains("# learned: 2 requests"),
            "b was asked twice: {format}: {s}"
        );
        assert!(
            !s.contains("a.txt") && !s.contains("secret.txt"),
            "{format}: {s}"
        );
        assert!(
            text(&out.stderr).contains("deny rule"),
            "{format}: {}",
            show(&out)
        );
        // With the policy, the whole file comes back with the rules in its client, and
        // it then grants what was denied.
        let merged = fdbroker(&[
            "policy",
            "suggest",
            "--audit",
            log.to_str().unwrap(),
            "--client",
            "scanner",
            "--policy",
            _b.policy.to_str().unwrap(),
        ]);
        assert_eq!(code(&merged), 0, "{}", show(&merged));
        let new = t.join("new.toml");
        std::fs::write(&new, &merged.stdout).unwrap();
        let replay = fdbroker(&[
            "policy",
            "replay",
            new.to_str().unwrap(),
            "--audit",
            log.to_str().unwrap(),
        ]);
        assert_eq!(code(&replay), 1, "{}", show(&replay));
        let r = text(&replay.stdout);
        assert!(
            r.contains("denied -> granted  2x  client \"scanner\"  read"),
            "{r}"
        );
        assert!(!r.contains("granted -> denied"), "{r}");
        assert!(!r.contains("secret.txt"), "the deny still wins: {r}");
    }
}

#[test]
fn replay_lists_grants_a_narrowing_takes_away_and_exits_by_flips() {
    let t = TempDir::new("replay");
    let (b, log) = logged(&t, "text");
    let log = log.to_str().unwrap();
    let same = fdbroker(&[
        "policy",
        "replay",
        b.policy.to_str().unwrap(),
        "--audit",
        log,
    ]);
    assert_eq!(code(&same), 0, "{}", show(&same));
    assert!(
        text(&same.stdout).contains("6 decision(s) replayed; 0 would now be denied"),
        "{}",
        show(&same)
    );
    let narrow = t.join("narrow.toml");
    std::fs::write(
        &narrow,
        POLICY.replace("{dir}", t.path().to_str().unwrap()).replace(
            &format!(
                "  [[client.allow]]\n  path = \"{}/spool/keep.txt\"\n",
                t.path().display()
            ),
            "",
        ),
    )
    .unwrap();
    let out = fdbroker(&["policy", "replay", narrow.to_str().unwrap(), "--audit", log]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    let s = text(&out.stdout);
    assert!(
        s.lines().next().unwrap().starts_with(&format!(
            "granted -> denied  1x  client \"scanner\"  read \"{}/spool/keep.txt\"  (was: {}:",
            t.path().display(),
            b.policy.display()
        )),
        "{s}"
    );
    assert_eq!(s.matches(" -> ").count(), 1, "{s}");
    let broken = t.file("broken.toml", b"[[client]\n", 0o644);
    let out = fdbroker(&["policy", "replay", broken.to_str().unwrap(), "--audit", log]);
    assert_eq!(code(&out), 2, "{}", show(&out));
    let out = fdbroker(&[
        "policy",
        "replay",
        narrow.to_str().unwrap(),
        "--audit",
        "/nonexistent/log",
    ]);
    assert_eq!(code(&out), 2, "{}", show(&out));
}

#[test]
fn reload_replay_refuses_a_narrowing_that_breaks_recorded_grants_unless_forced() {
    let t = TempDir::new("reload-replay");
    let (b, log) = logged(&t, "text");
    let keep = t.join("spool/keep.txt");
    let narrowed = POLICY.replace(
        "  [[client.allow]]\n  path = \"{dir}/spool/keep.txt\"\n",
        "",
    );
    b.rewrite_policy(&t, &narrowed);
    // Without --policy, the file is the one the monitor was started with.
    let reload = |force: bool| {
        let mut cmd = Command::new(fdbroker_bin());
        cmd.args(["reload", "--timeout", "30", "--replay"])
            .arg(&log);
        if force {
            cmd.arg("--force");
        }
        cmd.arg(b.monitor_pid().to_string());
        run_with_timeout(&mut cmd, Duration::from_secs(40))
    };
    let out = reload(false);
    assert_eq!(code(&out), 1, "{}", show(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("granted -> denied") && err.contains("keep.txt"),
        "{err}"
    );
    assert!(err.contains("not reloading"), "{err}");
    // Not signalled: the recorded grant still holds.
    let still = cat_as_nobody(&b.socket, &[&keep]);
    assert!(still.status.success(), "{}", show(&still));
    let out = reload(true);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let gone = cat_as_nobody(&b.socket, &[&keep]);
    assert_eq!(code(&gone), 1, "{}", show(&gone));
    // A log that records nothing the file takes away lets the reload through unforced.
    let empty = t.file("empty.log", b"", 0o644);
    let mut cmd = Command::new(fdbroker_bin());
    cmd.args(["reload", "--timeout", "30", "--policy"])
        .arg(&b.policy)
        .arg("--replay")
        .arg(&empty)
        .arg(b.monitor_pid().to_string());
    let out = run_with_timeout(&mut cmd, Duration::from_secs(40));
    assert_eq!(code(&out), 0, "{}", show(&out));
}

fn write(t: &TempDir, name: &str, body: &str) -> String {
    t.file(name, body.as_bytes(), 0o644)
        .to_str()
        .unwrap()
        .to_owned()
}

#[test]
fn diff_says_what_a_change_grants_and_takes_away_with_exit_codes() {
    let t = TempDir::new("diff");
    let old = write(
        &t,
        "old.toml",
        "[[client]]\nname = \"c\"\nusers = [\"nobody\"]\n[[client.allow]]\npath = \"/srv/a/\"\n[[client.allow]]\npath = \"/srv/b\"\naccess = [\"read\", \"write\"]\n",
    );
    let same = write(
        &t,
        "same.toml",
        "# the same, reordered\n[[client]]\nusers = [65534]\nname = \"c\"\n[[client.allow]]\npath = \"/srv/b\"\naccess = [\"write\", \"read\"]\n[[client.allow]]\npath = \"/srv/a/\"\naccess = [\"read\"]\n",
    );
    let new = write(
        &t,
        "new.toml",
        "[[client]]\nname = \"c\"\nusers = [\"nobody\"]\n[[client.allow]]\npath = \"/srv/a/\"\naccess = [\"read\", \"directory\"]\n[[client.deny]]\npath = \"/srv/a/keys/\"\n[[client.allow]]\npath = \"/srv/b\"\n[[client.allow]]\npath = \"/opt/x\"\n",
    );
    let broken = write(&t, "broken.toml", "[[client]]\nname = 1\n");
    let out = fdbroker(&["policy", "diff", &old, &same]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let out = fdbroker(&["policy", "diff", &old, &new]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    let s = text(&out.stdout);
    for want in [
        "+ client \"c\": \"/srv/a/\" widened from [read] to [read, directory]",
        "- client \"c\": \"/srv/b\" narrowed from [read, write] to [read]",
        "+ client \"c\": grants [read] on \"/opt/x\" (rule added)",
        "- client \"c\": denies \"/srv/a/keys/\" (deny rule added)",
        "+ root /opt appears",
    ] {
        assert!(s.contains(want), "missing {want:?} in:\n{s}");
    }
    let out = fdbroker(&["policy", "diff", &old, &broken]);
    assert_eq!(code(&out), 2, "{}", show(&out));
    assert!(
        text(&out.stderr).contains("broken.toml:2:"),
        "{}",
        show(&out)
    );
}

#[test]
fn who_lists_rules_and_carve_outs_and_explain_models_spawn_mode() {
    let t = TempDir::new("who");
    let p = write(
        &t,
        "p.toml",
        "[[client]]\nname = \"scanner\"\nusers = [\"nobody\"]\n[[client.allow]]\npath = \"/srv/q/\"\n[[client.deny]]\npath = \"/srv/q/keys/\"\n[[client.allow]]\npath = \"/etc/hostname\"\n",
    );
    for args in [&["--uid", "nobody"][..], &["--client", "scanner"][..]] {
        let mut a = vec!["policy", "who", &p];
        a.extend_from_slice(args);
        let out = fdbroker(&a);
        assert_eq!(code(&out), 0, "{}", show(&out));
        let s = text(&out.stdout);
        assert!(s.contains("client \"scanner\""), "{s}");
        assert!(s.contains("[read] \"/srv/q/\""), "{s}");
        assert!(s.contains("except \"/srv/q/keys/\""), "{s}");
        assert!(s.contains("[read] \"/etc/hostname\""), "{s}");
    }
    let out = fdbroker(&["policy", "who", &p, "--uid", "0"]);
    assert_eq!(code(&out), 1, "root is no client: {}", show(&out));
    // explain: the uid fdbroker run's worker has is no client, but run serves it anyway.
    let served = fdbroker(&["policy", "explain", &p, "--uid", "0", "/srv/q/a"]);
    assert_eq!(code(&served), 1, "{}", show(&served));
    let spawn = fdbroker(&["policy", "explain", &p, "--spawn", "/srv/q/a"]);
    assert_eq!(code(&spawn), 0, "{}", show(&spawn));
    assert!(
        text(&spawn.stdout).contains("fdbroker run"),
        "{}",
        show(&spawn)
    );
    let carved = fdbroker(&[
        "policy",
        "explain",
        &p,
        "--spawn",
        "--client",
        "scanner",
        "/srv/q/keys/k",
    ]);
    assert_eq!(code(&carved), 1, "{}", show(&carved));
    let broken = write(&t, "broken.toml", "[[client]]\nname = \n");
    let out = fdbroker(&["policy", "explain", &broken, "--uid", "0", "/x"]);
    assert_eq!(
        code(&out),
        2,
        "a broken policy file is an error: {}",
        show(&out)
    );
    let out = fdbroker(&["policy", "explain", &p, "--spawn", "--client", "nope", "/x"]);
    assert_eq!(code(&out), 2, "{}", show(&out));
    let _: &Path = t.path();
}

/// `reload --replay LOG PID` without `--policy` reads the command line of PID only once
/// PID is a monitor: a mistyped pid of a process that names `--policy FILE` is refused
/// as not a monitor, and root never parses FILE.
#[test]
fn reload_replay_reads_the_policy_of_a_monitor_only() {
    let t = TempDir::new("replay-pid");
    let named = t.file("named.toml", b"this is not toml = = marker-8d1f\n", 0o600);
    let log = t.file("audit.log", b"", 0o644);
    let mut other = Command::new("sh")
        .args(["-c", "sleep 60", "sh", "--policy"])
        .arg(&named)
        .spawn()
        .unwrap();
    let pid = other.id().to_string();
    let out = fdbroker(&[
        "reload",
        "--timeout",
        "5",
        "--replay",
        log.to_str().unwrap(),
        &pid,
    ]);
    let _ = other.kill();
    let _ = other.wait();
    assert_eq!(code(&out), 1, "{}", show(&out));
    let err = text(&out.stderr);
    assert!(
        !err.contains("named.toml") && !err.contains("marker-8d1f"),
        "{err}"
    );
    assert!(err.contains("not reloading"), "{err}");
}

/// F2 (review rlead): the monitor check before `reload --replay LOG PID` reads PID's
/// `--policy` is passed by any user's own `fdbroker serve`: one started by nobody with
/// `--policy FIFO` (it lingers, its server waiting on the FIFO) makes root's reload open
/// that FIFO and hang there, never reaching "not reloading". Root must not open, as
/// root, a file an unprivileged process names; at the least not one that is not a
/// regular file.
#[test]
fn f2_reload_replay_does_not_hang_on_a_fifo_an_unprivileged_serve_names() {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    use std::os::unix::process::CommandExt;
    let dir = std::env::temp_dir().join(format!("f2-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let fifo = dir.join("policy.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
    let log = dir.join("audit.log");
    std::fs::write(&log, b"").unwrap();
    let mut serve = Command::new(fdbroker_bin())
        .args(["serve", "--policy"])
        .arg(&fifo)
        .uid(fdbroker_tests::nobody_uid())
        .gid(fdbroker_tests::nobody_gid())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let pid = serve.id().to_string();
    let start = std::time::Instant::now();
    let mut cmd = Command::new(fdbroker_bin());
    cmd.args([
        "reload",
        "--timeout",
        "3",
        "--replay",
        log.to_str().unwrap(),
        &pid,
    ]);
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_with_timeout(&mut cmd, Duration::from_secs(8))
    }));
    let took = start.elapsed();
    // Free whoever still waits on the FIFO, then stop nobody's serve.
    if let Ok(mut w) = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
    {
        use std::io::Write;
        let _ = w.write_all(b"x");
    }
    let _ = serve.kill();
    let _ = serve.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let Ok(out) = out else {
        panic!("reload hung on the FIFO nobody's serve names")
    };
    assert!(
        took < Duration::from_secs(7),
        "reload hung on the FIFO: {}",
        show(&out)
    );
    assert_eq!(code(&out), 1, "{}", show(&out));
}
