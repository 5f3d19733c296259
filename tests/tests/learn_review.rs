//! Review r22 of learn mode and the evidence commands (issue 22): each test here failed
//! on the branch as reviewed; the finding it shows is named in its comment (F1, F2, ...).
#![allow(clippy::unwrap_used)]

use fdbroker_tests::transparent::run_script as run;
use fdbroker_tests::{Broker, TempDir, cat_as_nobody, fdbroker, show, text};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

fn fixture() -> (TempDir, PathBuf) {
    let t = TempDir::new("learn-review");
    t.file("data/a.txt", b"denied by the base\n", 0o600);
    t.file("data/b.txt", b"bravo\n", 0o600);
    t.dir("data", 0o700);
    t.dir("out", 0o755);
    // Root's own symbolic link to the scope: open_root follows it.
    std::os::unix::fs::symlink("data", t.join("link")).unwrap();
    let base = t.file(
        "base.toml",
        format!(
            "[sandbox]\nread_only = [\"/usr\", \"/bin\", \"/lib\", \"/lib64\", \"/etc/ld.so.cache\"]\n\n[[client]]\nname = \"worker\"\nusers = [\"nobody\"]\n\n[[client.deny]]\npath = \"{}/data/a.txt\"\n",
            t.path().display()
        )
        .as_bytes(),
        0o644,
    );
    (t, base)
}

/// F1: a learning scope spelled through a symbolic link (root's own link, or
/// `/proc/self/root`) is opened at the link's target, while deny rules are matched on the
/// text: the base policy's deny rule no longer wins, and the written policy grants the
/// denied file under the link's name.
#[test]
fn f1_run_learn_scope_through_a_symlink_keeps_the_base_deny() {
    let (t, base) = fixture();
    let d = t.path().display().to_string();
    let out = t.join("out/l.toml");
    for scope in [format!("{d}/link"), format!("/proc/self/root{d}/data")] {
        let learn = run(
            &[
                "--policy",
                base.to_str().unwrap(),
                "--learn",
                out.to_str().unwrap(),
                "--learn-scope",
                &scope,
            ],
            &format!("cat {scope}/a.txt"),
        );
        assert!(
            !text(&learn.stdout).contains("denied by the base"),
            "{scope}: the base's deny rule lost: {}",
            show(&learn)
        );
        if let Ok(learned) = std::fs::read_to_string(&out) {
            // The base's deny rule names it; no allow rule may.
            assert_eq!(learned.matches("a.txt\"").count(), 1, "{scope}: {learned}");
        }
    }
}

/// F1 under `fdbroker serve`: `learn_scope = ["/proc/self/root"]` is `/` spelled
/// differently (the load refuses `/` itself): every file of the machine, read and write,
/// and the client's deny rules match nothing.
#[test]
fn f1_serve_learn_scope_of_proc_self_root_is_not_the_whole_filesystem() {
    let (t, _) = fixture();
    let b = Broker::start(
        &t,
        "[broker]\nsocket_mode = \"0666\"\n[[client]]\nname = \"scanner\"\nusers = [\"nobody\"]\nlearn_scope = [\"/proc/self/root\"]\n[[client.deny]]\npath = \"{dir}/data/a.txt\"\n",
    );
    let got = cat_as_nobody(
        &b.socket,
        &[Path::new(&format!(
            "/proc/self/root{}/data/a.txt",
            t.path().display()
        ))],
    );
    assert!(
        !text(&got.stdout).contains("denied by the base"),
        "learn_scope /proc/self/root served a denied file: {}\n{}",
        show(&got),
        b.log()
    );
    let shadow = cat_as_nobody(&b.socket, &[Path::new("/proc/self/root/etc/shadow")]);
    assert!(shadow.stdout.is_empty(), "{}", show(&shadow));
}

/// F2: `policy diff` skips learning rules: a learning client's scope widened from one
/// directory to `/etc` (any access, write and create included) is reported as "mean the
/// same", exit 0.
#[test]
fn f2_diff_reports_a_widened_learn_scope() {
    let t = TempDir::new("learn-review-diff");
    t.dir("srv", 0o755);
    let d = t.path().display();
    let old = t.file(
        "old.toml",
        format!("[[client]]\nname = \"c\"\nusers = [1]\nlearn_scope = [\"{d}/srv\"]\n[[client.allow]]\npath = \"/etc/hostname\"\n").as_bytes(),
        0o644,
    );
    let new = t.file(
        "new.toml",
        format!("[[client]]\nname = \"c\"\nusers = [1]\nlearn_scope = [\"{d}/srv\", \"/etc\"]\n[[client.allow]]\npath = \"/etc/hostname\"\n").as_bytes(),
        0o644,
    );
    let out = fdbroker(&[
        "policy",
        "diff",
        old.to_str().unwrap(),
        new.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(text(&out.stdout).contains("/etc"), "{}", show(&out));
}

/// F3: the output file is opened with `O_CREAT` and no check of what was opened: a file
/// another user made there first (a shared directory such as /tmp, where
/// `fs.protected_regular` is 0) receives root's policy and stays theirs to edit before
/// the operator loads it; a hard link makes root truncate and rewrite the linked file.
#[test]
fn f3_learn_out_refuses_a_file_someone_else_prepared() {
    let (t, base) = fixture();
    let d = t.path().display().to_string();
    let shared = t.dir("shared", 0o1777);
    // Another user's file, made before the operator's run.
    let theirs = shared.join("l.toml");
    std::fs::write(&theirs, b"theirs\n").unwrap();
    let nobody = fdbroker_tests::nobody_uid();
    std::os::unix::fs::chown(&theirs, Some(nobody), Some(nobody)).unwrap();
    // A hard link to a file of root's elsewhere.
    let victim = t.file("victim.conf", b"root's own file\n", 0o600);
    std::fs::hard_link(&victim, shared.join("h.toml")).unwrap();
    for (out, owner) in [(theirs.clone(), nobody), (shared.join("h.toml"), 0)] {
        let learn = run(
            &[
                "--policy",
                base.to_str().unwrap(),
                "--learn",
                out.to_str().unwrap(),
                "--learn-scope",
                &format!("{d}/data"),
            ],
            &format!("cat {d}/data/b.txt"),
        );
        let meta = std::fs::metadata(&out).unwrap();
        let written = std::fs::read_to_string(&out).unwrap();
        assert!(
            !(written.contains("[[client]]") && meta.uid() == owner && owner != 0),
            "the learned policy went into another user's file: {}",
            show(&learn)
        );
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "root's own file\n",
            "a hard link made root rewrite another file: {}",
            show(&learn)
        );
    }
}

/// F4: a run's worker inherits the stderr the broker's audit lines go to by default, so
/// lines read from there cannot be told from lines the worker printed. The evidence of a
/// run is its `--log-file`, which only the broker writes: a forged line the worker prints
/// never reaches it, while the broker's own denial does, and `policy suggest` on it
/// proposes the file asked for and nothing the worker made up.
#[test]
fn f4_suggest_from_a_runs_log_file_ignores_lines_the_worker_wrote() {
    let (t, _) = fixture();
    let d = t.path().display().to_string();
    // b.txt may only be written: reading it is a denial a rule would change.
    let base = t.file(
        "stat-only.toml",
        format!(
            "[sandbox]\nread_only = [\"/usr\", \"/bin\", \"/lib\", \"/lib64\", \"/etc/ld.so.cache\"]\n\n[[client]]\nname = \"worker\"\nusers = [\"nobody\"]\n\n[[client.allow]]\npath = \"{d}/data/b.txt\"\naccess = [\"write\"]\n"
        )
        .as_bytes(),
        0o644,
    );
    let forged = "INFO fdbroker::audit: uid=65534 gid=65534 pid=2 client=\"worker\" path=\"/etc/shadow\" access=\"read\" rule=\"-\" result=\"denied\" reason=\"no rule allows this path\"";
    let log = t.join("out/run.log");
    let ran = run(
        &[
            "--policy",
            base.to_str().unwrap(),
            "--log-file",
            log.to_str().unwrap(),
        ],
        &format!("printf '%s\\n' '{forged}' >&2; cat {d}/data/b.txt"),
    );
    assert!(
        text(&ran.stderr).contains("/etc/shadow"),
        "the worker's line is on the run's stderr, where it belongs: {}",
        show(&ran)
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains(&format!("{d}/data/b.txt")) && !logged.contains("/etc/shadow"),
        "the log file holds the broker's lines only: {logged}"
    );
    let s = fdbroker(&["policy", "suggest", "--audit", log.to_str().unwrap()]);
    assert!(s.status.success(), "{}", show(&s));
    let out = text(&s.stdout);
    assert!(
        out.contains(&format!("path = \"{d}/data/b.txt\"")) && !out.contains("/etc/shadow"),
        "a line the worker printed became a suggested rule:\n{}",
        show(&s)
    );
}

/// F5: `policy replay` (and `reload --replay`) re-decide a logged request as the client
/// *named* in the line, while `fdbroker serve` picks the client by the peer's uid and
/// gid: an edit that moves uid 1 to another client with nothing granted takes its
/// recorded grant away, and replay says no decision flips (exit 0), so `reload
/// --replay` lets it through.
#[test]
fn f5_replay_decides_as_the_client_the_uid_now_belongs_to() {
    let t = TempDir::new("learn-review-replay");
    let f = t.file("x/f", b"hi\n", 0o644);
    let f = f.display();
    let new = t.file(
        "new.toml",
        format!("[[client]]\nname = \"a\"\nusers = [2]\n[[client.allow]]\npath = \"{f}\"\n[[client]]\nname = \"b\"\nusers = [1]\n").as_bytes(),
        0o644,
    );
    let log = t.file(
        "audit.log",
        format!("2026-12-07T05:00:00.000001Z  INFO fdbroker::audit: uid=1 gid=1 pid=9 client=\"a\" path=\"{f}\" access=\"read\" rule=\"old.toml:5:8\" result=\"granted\" ino=3\n").as_bytes(),
        0o644,
    );
    let out = fdbroker(&[
        "policy",
        "replay",
        new.to_str().unwrap(),
        "--audit",
        log.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stdout).contains("granted -> denied"),
        "{}",
        show(&out)
    );
}

/// F6: the log reader keeps at most MAX_RECORDS distinct decisions and drops the rest,
/// and `reload --replay` then judges only what it kept: a worker that first fills the
/// log with distinct requests (nonexistent files beneath its grant, denials under the
/// limiter's rate) pushes every later grant past the limit, and a reload taking those
/// grants away goes through. It must refuse what it could not judge.
#[test]
fn f6_reload_replay_refuses_when_the_log_had_more_than_it_could_judge() {
    let t = TempDir::new("learn-review-flood");
    let f = t.file("x/f", b"hi\n", 0o644);
    let f = f.display().to_string();
    let new = t.file(
        "new.toml",
        b"[[client]]\nname = \"a\"\nusers = [1]\n",
        0o644,
    );
    let mut log = String::new();
    for i in 0..=fdbroker_policy::audit_log::MAX_RECORDS {
        log.push_str(&format!("INFO fdbroker::audit: uid=1 gid=1 pid=9 client=\"a\" path=\"/nope/{i}\" access=\"read\" rule=\"-\" result=\"denied\" reason=no rule allows this path\n"));
    }
    log.push_str(&format!("INFO fdbroker::audit: uid=1 gid=1 pid=9 client=\"a\" path=\"{f}\" access=\"read\" rule=\"old.toml:5:8\" result=\"granted\" ino=3\n"));
    let log = t.file("audit.log", log.as_bytes(), 0o644);
    // No monitor at that pid: the replay's verdict comes first, or the target check says so.
    let out = fdbroker(&[
        "reload",
        "--policy",
        new.to_str().unwrap(),
        "--replay",
        log.to_str().unwrap(),
        "2147483646",
    ]);
    let err = text(&out.stderr);
    assert!(
        err.contains("not reloading"),
        "a grant past the reader's limit was not judged, and the reload went on: {}",
        show(&out)
    );
    // `policy replay` cannot rule out a flip among what it dropped either: not "same".
    let out = fdbroker(&[
        "policy",
        "replay",
        new.to_str().unwrap(),
        "--audit",
        log.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("beyond the limit"),
        "{}",
        show(&out)
    );
}
