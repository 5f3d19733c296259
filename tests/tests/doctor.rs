//! `fdbroker --version`, `fdbroker version --check` (alias `doctor`) and `fdbroker
//! completions`, checked against what the test finds out on its own: the commit from
//! git, the kernel from `uname -r`, Landlock from the kernel's list of security modules,
//! and each shell's own parser for the completion scripts.
#![allow(clippy::unwrap_used)]

use fdbroker_tests::{fdbroker, repo_root, run_with_timeout, show, text};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// What `git describe` says of the checkout, or `unknown` where there is none (the
/// fallback broker/build.rs takes).
fn expected_commit() -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo_root())
        .args(["describe", "--always", "--tags", "--abbrev=12"])
        .output();
    match out {
        Ok(o) if o.status.success() => text(&o.stdout).trim().to_owned(),
        _ => "unknown".to_owned(),
    }
}

fn kernel_version(release: &str) -> (u32, u32) {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok());
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// The kernel's list of security modules (securityfs `lsm`), mounted in a private
/// mount namespace where the machine has not mounted securityfs.
fn security_modules() -> String {
    if let Ok(list) = std::fs::read_to_string("/sys/kernel/security/lsm") {
        return list;
    }
    let out = run_with_timeout(
        Command::new("unshare").args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount -t securityfs securityfs /sys/kernel/security && cat /sys/kernel/security/lsm",
        ]),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "cannot read the LSM list: {}",
        show(&out)
    );
    text(&out.stdout)
}

#[test]
fn the_new_commands_have_help_with_an_example() {
    for args in [
        ["version", "--help"],
        ["doctor", "--help"],
        ["completions", "--help"],
    ] {
        let out = fdbroker(&args);
        assert!(out.status.success(), "{args:?}: {}", show(&out));
        assert!(
            text(&out.stdout).contains("Example"),
            "{args:?}: {}",
            show(&out)
        );
    }
}

#[test]
fn version_names_the_commit() {
    let commit = expected_commit();
    let out = fdbroker(&["--version"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("fdbroker {} (commit {commit})", env!("CARGO_PKG_VERSION"))
    );
    let out = fdbroker(&["version"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(text(&out.stdout).contains(&commit), "{}", show(&out));
}

#[test]
fn version_check_reports_this_kernel_in_text_and_json() {
    let out = fdbroker(&["version", "--check", "--json"]);
    assert!(out.status.success(), "{}", show(&out));
    let doc: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    let release = text(
        &Command::new("uname")
            .arg("-r")
            .output()
            .expect("uname")
            .stdout,
    )
    .trim()
    .to_owned();
    assert_eq!(doc["kernel"], release.as_str());
    assert_eq!(doc["commit"], expected_commit().as_str());
    let features = doc["features"].as_object().unwrap();
    for name in [
        "openat2",
        "landlock",
        "seccomp",
        "seccomp_user_notification",
        "cgroup",
    ] {
        let f = &features[name];
        let support = f["support"].as_str().unwrap();
        assert!(["yes", "partial", "no"].contains(&support), "{name}: {f}");
        assert!(!f["without"].as_str().unwrap().is_empty(), "{name}: {f}");
    }
    // The suite itself needs openat2 (every broker test opens through it).
    assert_eq!(features["openat2"]["support"], "yes");
    // Landlock: on exactly when the kernel lists the module.
    let lsm = security_modules();
    assert_eq!(
        features["landlock"]["support"] != "no",
        lsm.split(',').any(|m| m.trim() == "landlock"),
        "{lsm:?}: {}",
        features["landlock"]
    );
    // Transparent mode's floor is Linux 6.9; user notification itself is 5.0.
    let v = kernel_version(&release);
    let expected = match v {
        v if v >= (6, 9) => "yes",
        v if v >= (5, 0) => "partial",
        _ => "no",
    };
    assert_eq!(
        features["seccomp_user_notification"]["support"], expected,
        "{release}"
    );

    // The text form says the same, and what fdbroker does without anything missing.
    let out = fdbroker(&["doctor", "--check"]);
    assert!(out.status.success(), "{}", show(&out));
    let said = text(&out.stdout);
    assert!(said.contains(&format!("kernel: Linux {release}")), "{said}");
    for (name, f) in features {
        let line = format!("{name}: {} (", f["support"].as_str().unwrap());
        assert!(said.contains(&line), "{line:?} not in\n{said}");
        if f["support"] != "yes" {
            assert!(said.contains(f["without"].as_str().unwrap()), "{said}");
        }
    }
}

#[test]
fn completions_are_scripts_each_shell_parses() {
    for (shell, parser, args) in [
        ("bash", "/bin/bash", &["-n"][..]),
        ("zsh", "/bin/zsh", &["-n"][..]),
        ("fish", "/usr/bin/fish", &["--no-execute"][..]),
    ] {
        let out = fdbroker(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", show(&out));
        let script = text(&out.stdout);
        for sub in ["serve", "run", "reload", "policy", "completions", "version"] {
            assert!(script.contains(sub), "{shell} script lacks {sub}");
        }
        // bash is always here; zsh and fish only where installed (scripts/test.sh
        // installs them): the parse is then checked too.
        if Path::new(parser).exists() {
            let t = fdbroker_tests::TempDir::new("completions");
            let file = t.join(&format!("fdbroker.{shell}"));
            std::fs::write(&file, &script).unwrap();
            let out = run_with_timeout(
                Command::new(parser).args(args).arg(&file),
                Duration::from_secs(30),
            );
            assert!(out.status.success(), "{shell} rejects it: {}", show(&out));
        } else {
            assert_ne!(shell, "bash", "bash is missing");
        }
    }
    let out = fdbroker(&["completions", "tcsh"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("bash"), "{}", show(&out));
}
