//! A deny rule with `listed = true` (issue 20: a denial is never a clean scan): the
//! carve-out shows as a directory that exists and cannot be opened, as the kernel shows
//! an unreadable directory, so a scanner walking the tree reports it as a scan error
//! instead of never meeting it. Without `listed` it stays hidden. A real broker, real
//! unprivileged programs (`fdbroker ls`/`cat` as nobody, `find` and `clamscan` under
//! `fdbroker run --transparent`).
#![allow(clippy::unwrap_used)]

use fdbroker_tests::transparent::{run, s, transparent};
use fdbroker_tests::{
    Broker, TempDir, cat_as_nobody, fdbroker_bin, nobody_gid, nobody_uid, run_with_timeout, text,
};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const POLICY: &str = r#"
[broker]
socket_mode = "0666"

[sandbox]
read_only = ["/usr", "/bin", "/lib", "/lib64", "/etc/ld.so.cache"]

[[client]]
name = "scanner"
users = ["nobody"]
  [[client.allow]]
  path = "{dir}/tree/"
  access = ["read", "directory"]
  [[client.deny]]
  path = "{dir}/tree/quarantine/"
  listed = true
  [[client.deny]]
  path = "{dir}/tree/hidden/"
"#;

/// A root-only tree with a listed carve-out (`quarantine`) and an unlisted one
/// (`hidden`), each holding a file.
fn tree() -> TempDir {
    let t = TempDir::new("listed");
    t.file("tree/a.txt", b"alpha\n", 0o600);
    t.file(
        "tree/quarantine/infected.bin",
        b"not for the worker\n",
        0o600,
    );
    t.file("tree/hidden/secret.txt", b"not for the worker\n", 0o600);
    for d in ["tree", "tree/quarantine", "tree/hidden"] {
        t.dir(d, 0o700);
    }
    t
}

#[test]
fn a_listed_carve_out_is_listed_and_refused_through_the_broker() {
    let t = tree();
    let b = Broker::start(&t, POLICY);
    let mut ls = Command::new(fdbroker_bin());
    ls.args(["ls", "--socket"])
        .arg(&b.socket)
        .arg(t.join("tree"))
        .uid(nobody_uid())
        .gid(nobody_gid());
    let out = run_with_timeout(&mut ls, Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let names = text(&out.stdout);
    assert!(names.contains("quarantine"), "listed: {names}");
    assert!(!names.contains("hidden"), "unlisted stays hidden: {names}");
    // Its contents stay refused, as any deny.
    let inside: PathBuf = t.join("tree/quarantine/infected.bin");
    let out = cat_as_nobody(&b.socket, &[&inside]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
}

#[test]
fn a_scanner_meets_a_listed_carve_out_as_an_unreadable_directory() {
    let t = tree();
    let policy = t.file(
        "policy.toml",
        POLICY
            .replace("{dir}", s(t.path()))
            .replace("[broker]\nsocket_mode = \"0666\"\n", "")
            .as_bytes(),
        0o644,
    );
    let tree = t.join("tree");
    let quarantine = t.join("tree/quarantine");
    // find: the carve-out is there and cannot be opened; the hidden one is not there.
    let out = run(transparent(&policy, &["find", s(&tree)]));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.lines().any(|l| l == s(&quarantine)), "{stdout}");
    assert!(
        stderr.contains(&format!("'{}': Permission denied", s(&quarantine)))
            || stderr.contains(&format!("‘{}’: Permission denied", s(&quarantine))),
        "{stderr}"
    );
    assert!(
        !stdout.contains("hidden") && !stdout.contains("infected"),
        "{stdout}"
    );
    // Its own metadata is the kernel's (a directory), nothing beneath it is.
    let out = run(transparent(
        &policy,
        &[
            "sh",
            "-c",
            &format!(
                "stat -c %F {q}; stat -c %F {q}/infected.bin",
                q = s(&quarantine)
            ),
        ],
    ));
    assert_eq!(text(&out.stdout), "directory\n", "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("Permission denied"));
    // clamscan: a scan error for the carve-out (exit 2), as for an unreadable
    // directory, instead of a clean scan.
    if !Path::new("/usr/bin/clamscan").exists() {
        eprintln!("clamscan is not installed (scripts/test.sh installs clamav); skipped");
        return;
    }
    let db = t.file(
        "tree/local.ndb",
        b"FdbrokerNothing:0:*:00112233445566778899\n",
        0o600,
    );
    let out = run(transparent(
        &policy,
        &[
            "/usr/bin/clamscan",
            "--no-summary",
            "-d",
            s(&db),
            "-r",
            s(&tree),
        ],
    ));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains(&format!("{}: Can't open directory", s(&quarantine))),
        "{all}"
    );
}

/// The other side of it: a directory whose descriptor the broker will not hand over
/// (granted by an exact rule, so a descriptor would reach names no rule covers) is
/// listed through the broker in transparent mode; the program sees no refusal, so the
/// run says none at exit and `--fail-on-denial` keeps its clean exit.
#[test]
fn a_directory_listed_through_the_broker_is_not_a_refusal_of_the_run() {
    let t = TempDir::new("listed-instead");
    t.file("spool/f.txt", b"f\n", 0o600);
    t.dir("spool", 0o700);
    let d = t.join("spool");
    let policy = t.file(
        "policy.toml",
        format!(
            "[sandbox]\nread_only = [\"/usr\", \"/bin\", \"/lib\", \"/lib64\", \"/etc/ld.so.cache\"]\n\
             [[client]]\nname = \"w\"\nusers = [\"nobody\"]\n\
             [[client.allow]]\npath = \"{d}\"\naccess = [\"directory\"]\n\
             [[client.allow]]\npath = \"{d}/*\"\n",
            d = s(&d)
        )
        .as_bytes(),
        0o644,
    );
    let out = run(fdbroker_tests::transparent::transparent_with(
        &policy,
        &["--fail-on-denial"],
        &["ls", s(&d)],
    ));
    let err = text(&out.stderr);
    assert_eq!(text(&out.stdout), "f.txt\n", "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("the policy refused"), "{err}");
}

/// F2: a listed carve-out that is a symbolic link shows as an entry that exists, and no
/// more: `readlink` of it must not hand the worker the link's target (its contents, as
/// the names inside a directory are), which the deny refuses like everything at it.
#[test]
fn a_listed_carve_out_that_is_a_symlink_does_not_give_its_target() {
    let t = tree();
    std::os::unix::fs::symlink("/srv/keys/2026-private-target", t.join("tree/held")).unwrap();
    let policy = t.file(
        "policy.toml",
        POLICY
            .replace("{dir}", s(t.path()))
            .replace("[broker]\nsocket_mode = \"0666\"\n", "")
            .replace(
                "  [[client.deny]]\n  path = \"{dir}/tree/hidden/\"",
                "",
            )
            .replace(
                "listed = true\n",
                &format!(
                    "listed = true\n  [[client.deny]]\n  path = \"{}/tree/held\"\n  listed = true\n",
                    s(t.path())
                ),
            )
            .as_bytes(),
        0o644,
    );
    let held = t.join("tree/held");
    let out = run(transparent(
        &policy,
        &[
            "sh",
            "-c",
            &format!("ls -a {}; readlink {}", s(&t.join("tree")), s(&held)),
        ],
    ));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        stdout.lines().any(|l| l == "held"),
        "listed: {stdout}{stderr}"
    );
    assert!(
        !stdout.contains("2026-private-target"),
        "the target of a denied link: {stdout}{stderr}"
    );
}

/// F4: a listed carve-out is a directory that cannot be entered, as the kernel refuses
/// `cd` into an unreadable one (`EACCES`); the transparent supervisor's `chdir` took the
/// stat it now answers as leave to enter.
#[test]
fn a_listed_carve_out_cannot_be_entered() {
    let t = tree();
    let policy = t.file(
        "policy.toml",
        POLICY
            .replace("{dir}", s(t.path()))
            .replace("[broker]\nsocket_mode = \"0666\"\n", "")
            .as_bytes(),
        0o644,
    );
    let quarantine = t.join("tree/quarantine");
    let out = run(transparent(
        &policy,
        &[
            "sh",
            "-c",
            &format!("cd {} && echo entered", s(&quarantine)),
        ],
    ));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!stdout.contains("entered"), "{stdout}{stderr}");
    assert!(
        stderr.contains("ermission denied") || stderr.contains("can't cd"),
        "{stdout}{stderr}"
    );
}
