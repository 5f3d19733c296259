//! `fdbroker run --learn`: a real program (coreutils, a shell) run under learn mode
//! gets what it asks for beneath the learning scope and nothing outside it; the policy
//! written then passes `policy check --strict` and, rerun, grants what the program
//! needed and refuses the rest.
#![allow(clippy::unwrap_used)]

use fdbroker_tests::transparent::run_script as run;
use fdbroker_tests::{TempDir, fdbroker_bin, run_with_timeout, show, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// A root-only tree: what the program uses, a sibling it never touches, a file outside
/// the scope, and a directory whose name extends the scope's (`data-other`).
fn fixture() -> (TempDir, PathBuf) {
    let t = TempDir::new("learn");
    t.file("data/a.txt", b"alpha\n", 0o600);
    t.file("data/sub/b.txt", b"bravo\n", 0o600);
    t.file("data/sub/c.txt", b"charlie\n", 0o600);
    t.file("data/unused.txt", b"never read\n", 0o600);
    t.file("data-other/x.txt", b"prefix trap\n", 0o600);
    t.file("secret.txt", b"outside the scope\n", 0o600);
    for d in ["data", "data/sub", "data-other"] {
        t.dir(d, 0o700);
    }
    t.dir("out", 0o755);
    let base = t.file(
        "base.toml",
        b"# the operator's base\n[sandbox]\nread_only = [\"/usr\", \"/bin\", \"/lib\", \"/lib64\", \"/etc/ld.so.cache\"]\n\n[[client]]\nname = \"worker\"\nusers = [\"nobody\"]\n",
        0o644,
    );
    (t, base)
}

fn check_strict(policy: &Path) -> Output {
    run_with_timeout(
        Command::new(fdbroker_bin())
            .args(["policy", "check", "--strict"])
            .arg(policy),
        Duration::from_secs(30),
    )
}

#[test]
fn learned_policy_passes_strict_and_rerun_grants_exactly_what_was_used() {
    let (t, base) = fixture();
    let d = t.path().display().to_string();
    let out = t.join("out/learned.toml");
    // A probe for an optional file that does not exist, as many programs make.
    let script = format!(
        "test -e {d}/data/optional.conf || cat {d}/data/a.txt && ls {d}/data/sub && cat {d}/data/sub/b.txt"
    );
    let learn = run(
        &[
            "--policy",
            base.to_str().unwrap(),
            "--learn",
            out.to_str().unwrap(),
            "--learn-scope",
            &format!("{d}/data"),
        ],
        &script,
    );
    assert!(learn.status.success(), "{}", show(&learn));
    assert_eq!(text(&learn.stdout), "alpha\nb.txt\nc.txt\nbravo\n");
    let log = text(&learn.stderr);
    assert!(log.contains("LEARN MODE"), "{log}");
    let audit: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("fdbroker::audit:"))
        .collect();
    assert!(!audit.is_empty(), "{log}");
    assert!(audit.iter().all(|l| l.ends_with("mode=\"learn\"")), "{log}");
    assert!(log.contains("fdbroker: learned"), "{log}");

    let strict = check_strict(&out);
    assert!(
        strict.status.success(),
        "{}\n{}",
        show(&strict),
        std::fs::read_to_string(&out).unwrap()
    );
    let learned = std::fs::read_to_string(&out).unwrap();
    assert!(
        learned.starts_with("# the operator's base\n[sandbox]"),
        "{learned}"
    );
    assert!(
        learned.contains(&format!("path = \"{d}/data/a.txt\"\naccess = [\"read\"]")),
        "{learned}"
    );
    assert!(
        learned.contains(&format!(
            "path = \"{d}/data/sub/b.txt\"\naccess = [\"read\"]"
        )),
        "{learned}"
    );
    assert!(learned.contains("# learned: 1 request\n"), "{learned}");
    // Learnt though it failed, so that the rerun's probe fails the same way (ENOENT),
    // not with a refusal.
    assert!(
        learned.contains(&format!("path = \"{d}/data/optional.conf\"")),
        "{learned}"
    );
    assert!(
        !learned.contains("unused") && !learned.contains("c.txt"),
        "{learned}"
    );
    assert!(
        !learned.contains("learn_scope") && !learned.contains(&format!("\"{d}/data/\"")),
        "{learned}"
    );

    // Rerun under what was learnt: the same output, no refusal the program sees.
    let again = run(&["--policy", out.to_str().unwrap()], &script);
    assert!(again.status.success(), "{}", show(&again));
    // The broker's listing leaves out what the learned rules do not grant: c.txt was
    // seen, never opened, so it is no longer shown.
    assert_eq!(text(&again.stdout), "alpha\nb.txt\nbravo\n");
    let log = text(&again.stderr);
    for l in log.lines().filter(|l| l.contains("result=\"denied\"")) {
        // A directory's descriptor is refused when the rules do not cover all of it;
        // the program then gets the broker's listing (the `ls` above printed it).
        assert!(l.contains("access=\"directory\""), "{log}");
    }
    assert!(!log.contains("mode=\"learn\""), "{log}");
    // ... and what it did not use is refused.
    for other in ["data/unused.txt", "data/sub/c.txt"] {
        let refused = run(
            &["--policy", out.to_str().unwrap()],
            &format!("cat {d}/{other}"),
        );
        assert!(!refused.status.success(), "{other}: {}", show(&refused));
        assert!(
            !text(&refused.stdout).contains("never read")
                && !text(&refused.stdout).contains("charlie")
        );
    }
}

#[test]
fn learn_mode_never_grants_outside_the_scope() {
    let (t, base) = fixture();
    let d = t.path().display().to_string();
    // Ways out of the scope: a symlink inside it, `..`, a sibling whose name extends
    // the scope's, a file outside.
    std::os::unix::fs::symlink(t.join("secret.txt"), t.join("data/link")).unwrap();
    std::os::unix::fs::symlink("..", t.join("data/up")).unwrap();
    let out = t.join("out/learned.toml");
    for target in [
        "data/link",
        "data/../secret.txt",
        "data/up/secret.txt",
        "data-other/x.txt",
        "secret.txt",
    ] {
        let learn = run(
            &[
                "--policy",
                base.to_str().unwrap(),
                "--learn",
                out.to_str().unwrap(),
                "--learn-scope",
                &format!("{d}/data"),
            ],
            &format!("cat {d}/{target}"),
        );
        assert!(!learn.status.success(), "{target}: {}", show(&learn));
        let stdout = text(&learn.stdout);
        assert!(
            !stdout.contains("outside") && !stdout.contains("prefix trap"),
            "{target}: {}",
            show(&learn)
        );
        let learned = std::fs::read_to_string(&out).unwrap();
        assert!(!learned.contains("[[client.allow]]"), "{target}: {learned}");
        assert!(check_strict(&out).status.success(), "{target}");
    }
}

#[test]
fn learn_mode_refuses_what_it_cannot_do_safely() {
    let (t, base) = fixture();
    let d = t.path().display().to_string();
    // No scope: refused by the command line.
    let none = run(
        &["--policy", base.to_str().unwrap(), "--learn", "/tmp/x.toml"],
        "true",
    );
    assert_eq!(none.status.code(), Some(2), "{}", show(&none));
    // The output inside the scope, where the worker could write it.
    let inside = run(
        &[
            "--policy",
            base.to_str().unwrap(),
            "--learn",
            &format!("{d}/data/out.toml"),
            "--learn-scope",
            &format!("{d}/data"),
        ],
        "true",
    );
    assert_eq!(inside.status.code(), Some(1), "{}", show(&inside));
    assert!(
        text(&inside.stderr).contains("lies inside --learn-scope"),
        "{}",
        show(&inside)
    );
    assert!(!t.join("data/out.toml").exists());
    // `/` is no scope.
    let root = run(
        &[
            "--policy",
            base.to_str().unwrap(),
            "--learn",
            t.join("out/l.toml").to_str().unwrap(),
            "--learn-scope",
            "/",
        ],
        "true",
    );
    assert_eq!(root.status.code(), Some(1), "{}", show(&root));
    // Under `fdbroker serve`, learn mode is a policy key of one client, never two, and
    // `policy check --strict` refuses a policy still learning.
    let two = t.file(
        "two.toml",
        format!("[[client]]\nname = \"a\"\nusers = [1]\nlearn_scope = [\"{d}/data\"]\n[[client]]\nname = \"b\"\nusers = [2]\nlearn_scope = [\"{d}/data\"]\n").as_bytes(),
        0o644,
    );
    let c = check_strict(&two);
    assert_eq!(c.status.code(), Some(1), "{}", show(&c));
    assert!(
        text(&c.stderr).contains("learn mode is for one client at a time"),
        "{}",
        show(&c)
    );
    let one = t.file(
        "one.toml",
        format!("[[client]]\nname = \"a\"\nusers = [1]\nlearn_scope = [\"{d}/data\"]\n").as_bytes(),
        0o644,
    );
    let c = check_strict(&one);
    assert_eq!(c.status.code(), Some(1), "{}", show(&c));
    assert!(text(&c.stderr).contains("is in learn mode"), "{}", show(&c));
}

#[test]
fn serve_learns_for_the_one_client_the_policy_names_and_suggest_reads_it_back() {
    use fdbroker_tests::{Broker, cat_as_nobody};
    let (t, _) = fixture();
    let b = Broker::start(
        &t,
        "[broker]\nsocket_mode = \"0666\"\n[[client]]\nname = \"scanner\"\nusers = [\"nobody\"]\nlearn_scope = [\"{dir}/data\"]\n",
    );
    let inside = cat_as_nobody(&b.socket, &[&t.join("data/a.txt")]);
    assert!(inside.status.success(), "{}", show(&inside));
    assert_eq!(text(&inside.stdout), "alpha\n");
    for outside in ["secret.txt", "data-other/x.txt"] {
        let out = cat_as_nobody(&b.socket, &[&t.join(outside)]);
        assert_eq!(out.status.code(), Some(1), "{outside}: {}", show(&out));
        assert!(out.stdout.is_empty(), "{outside}");
    }
    b.wait_log("data-other", 1);
    let log = b.log();
    let audit: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("fdbroker::audit:"))
        .collect();
    assert_eq!(audit.len(), 3, "{log}");
    assert!(log.contains("LEARN MODE"), "{log}");
    assert!(audit.iter().all(|l| l.contains("mode=\"learn\"")), "{log}");
    assert!(
        audit[0].contains("rule=\"learn_scope:") && audit[0].contains("result=\"granted\""),
        "{log}"
    );
    let file = t.join("out/audit.log");
    std::fs::write(&file, &log).unwrap();
    let out = run_with_timeout(
        Command::new(fdbroker_bin())
            .args(["policy", "suggest", "--audit"])
            .arg(&file),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", show(&out));
    let s = text(&out.stdout);
    let d = t.path().display();
    // The learning grant and the two denials, each as its own exact rule.
    for p in ["data/a.txt", "secret.txt", "data-other/x.txt"] {
        assert!(s.contains(&format!("path = \"{d}/{p}\"")), "{p}: {s}");
    }
}

#[test]
fn siblings_fold_into_one_glob_only_past_the_collapse_threshold() {
    let (t, base) = fixture();
    let d = t.path().display().to_string();
    for i in 0..3 {
        t.file(
            &format!("data/many/f{i}"),
            format!("{i}\n").as_bytes(),
            0o600,
        );
    }
    t.dir("data/many", 0o700);
    let script = format!("cat {d}/data/many/f0 {d}/data/many/f1 {d}/data/many/f2");
    for (collapse, folded) in [("3", false), ("2", true)] {
        let out = t.join(&format!("out/c{collapse}.toml"));
        let learn = run(
            &[
                "--policy",
                base.to_str().unwrap(),
                "--learn",
                out.to_str().unwrap(),
                "--learn-scope",
                &format!("{d}/data"),
                "--learn-collapse",
                collapse,
            ],
            &script,
        );
        assert!(learn.status.success(), "{}", show(&learn));
        let learned = std::fs::read_to_string(&out).unwrap();
        assert_eq!(
            learned.contains(&format!("path = \"{d}/data/many/*\"")),
            folded,
            "{learned}"
        );
        assert_eq!(
            learned.contains(&format!("path = \"{d}/data/many/f1\"")),
            !folded,
            "{learned}"
        );
        if folded {
            assert!(
                learned.contains("# learned: 3 requests for 3 paths"),
                "{learned}"
            );
        }
        assert!(check_strict(&out).status.success(), "{learned}");
        let again = run(&["--policy", out.to_str().unwrap()], &script);
        assert_eq!(text(&again.stdout), "0\n1\n2\n", "{}", show(&again));
    }
}
