//! The command line as operators meet it: help texts, `policy check`, `policy explain`,
//! and the example policies the repository ships (which must stay valid).
#![allow(clippy::unwrap_used)]

use fdbroker_tests::{TempDir, fdbroker, text};
use std::path::Path;

#[test]
fn every_command_has_help_with_an_example() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["cat", "--help"],
        vec!["run", "--help"],
        vec!["policy", "check", "--help"],
        vec!["policy", "explain", "--help"],
        vec!["reload", "--help"],
    ] {
        let out = fdbroker(&args);
        assert!(out.status.success(), "{args:?}");
        let help = text(&out.stdout);
        assert!(
            help.contains("Example"),
            "{args:?} help has no example:\n{help}"
        );
    }
}

#[test]
fn shipped_example_policies_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policy/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = fdbroker(&["policy", "check", path.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                text(&out.stderr)
            );
            assert!(text(&out.stdout).contains(": ok"));
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "expected the demo and scanner examples, found {checked}"
    );
}

#[test]
fn policy_check_reports_file_line_col() {
    let t = TempDir::new("cli-check");
    let bad = t.file(
        "bad.toml",
        b"[[client]]\nname = \"a\"\nusers = [0]\n  [[client.allow]]\n  path = \"relative/path\"\n",
        0o644,
    );
    let out = fdbroker(&["policy", "check", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!("fdbroker: {}:5:", bad.display())),
        "{err}"
    );
    let typo = t.file(
        "typo.toml",
        b"[[client]]\nname = \"a\"\nuser = [0]\n",
        0o644,
    );
    let out = fdbroker(&["policy", "check", typo.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!("{}:3:1", typo.display())),
        "{}",
        text(&out.stderr)
    );
    // serve --check validates without serving, for ExecStartPre=.
    let out = fdbroker(&["serve", "--check", "--policy", typo.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains(":3:1"));
}

#[test]
fn policy_explain_names_the_rule_and_exits_by_decision() {
    let t = TempDir::new("cli-explain");
    let p = t.file(
        "p.toml",
        b"[[client]]\nname = \"scanner\"\nusers = [\"nobody\"]\n  [[client.allow]]\n  path = \"/srv/q/\"\n  [[client.deny]]\n  path = \"/srv/q/keys/\"\n",
        0o644,
    );
    let p = p.to_str().unwrap();
    let out = fdbroker(&["policy", "explain", p, "--uid", "nobody", "/srv/q/a.bin"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(
        s.contains("scanner") && s.contains("allow") && s.contains("p.toml:5:"),
        "{s}"
    );
    assert!(s.ends_with('\n'), "{s:?}");
    let nobody = fdbroker_tests::nobody_uid().to_string();
    let out = fdbroker(&["policy", "explain", p, "--uid", &nobody, "/srv/q/keys/k"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("p.toml:7:"),
        "{}",
        text(&out.stdout)
    );
    let out = fdbroker(&["policy", "explain", p, "--uid", "0", "/srv/q/a.bin"]);
    assert_eq!(out.status.code(), Some(1));
    let out = fdbroker(&[
        "policy",
        "explain",
        p,
        "--uid",
        "no-such-user-xyz",
        "/srv/q/a",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

/// `policy check` also looks at this machine: roots missing or that the broker would
/// refuse, deny rules that match nothing or lie outside every allow, rules written
/// twice. Warnings, each at FILE:LINE:COL; `--strict` makes them errors.
#[test]
fn policy_check_warns_about_the_filesystem_and_strict_fails() {
    use std::os::unix::fs::PermissionsExt;
    let t = TempDir::new("cli-lint");
    t.dir("ok/keys", 0o700);
    t.dir("open", 0o755);
    // A directory others may write, above a root: the broker would refuse the root.
    t.dir("open/shared", 0o777);
    t.dir("open/shared/spool", 0o755);
    std::fs::set_permissions(
        t.join("open/shared"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let d = t.path().display();
    let policy = format!(
        "[[client]]\nname = \"a\"\nusers = [0]\n\
         [[client.allow]]\npath = \"{d}/ok/\"\n\
         [[client.allow]]\npath = \"{d}/missing/\"\n\
         [[client.allow]]\npath = \"{d}/open/shared/spool/\"\n\
         [[client.deny]]\npath = \"{d}/ok/keys/\"\n\
         [[client.deny]]\npath = \"{d}/ok/nothing-here\"\n\
         [[client.deny]]\npath = \"/elsewhere/\"\n\
         [[client.allow]]\npath = \"{d}/ok/\"\n"
    );
    let p = t.file("p.toml", policy.as_bytes(), 0o644);
    let p = p.to_str().unwrap();
    let out = fdbroker(&["policy", "check", p]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    for (at, what) in [
        (":7:8: warning: root", "does not exist"),
        (":9:8: warning: the broker would refuse root", "writable"),
        (":13:8: warning: deny rule", "matches nothing on disk"),
        (":15:8: warning: deny rule", "outside every allow rule"),
        (":17:8: warning: duplicates the allow rule at 5:8", ""),
    ] {
        assert!(
            err.lines().any(|l| l.contains(at) && l.contains(what)),
            "no {at:?} {what:?} in:\n{err}"
        );
    }
    assert_eq!(err.lines().count(), 5, "{err}");
    assert!(
        text(&out.stdout).contains("5 warnings"),
        "{}",
        text(&out.stdout)
    );
    let out = fdbroker(&["policy", "check", "--strict", p]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}
