//! Running real, unmodified programs under `fdbroker run --transparent` and, for
//! comparison, as root on the same tree (`tests/tests/transparent*.rs`).

use crate::{TempDir, fdbroker_bin, run_with_timeout, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// `fdbroker run --transparent --policy POLICY [extra...] -- COMMAND`, from `/` (as
/// [`as_root`]'s twin): the test's own working directory may be one the sandbox user
/// cannot enter (a checkout under a 0700 `mktemp -d`), and `find` fails to come back
/// to it.
pub fn transparent_with(policy: &Path, extra: &[&str], command: &[&str]) -> Command {
    let mut c = Command::new(fdbroker_bin());
    c.current_dir("/");
    c.arg("run")
        .arg("--transparent")
        .arg("--policy")
        .arg(policy)
        .args(extra)
        .arg("--")
        .args(command);
    c
}

/// `fdbroker run --transparent --policy POLICY -- COMMAND`.
pub fn transparent(policy: &Path, command: &[&str]) -> Command {
    transparent_with(policy, &[], command)
}

/// The same command, run directly as root, from `/` too.
pub fn as_root(command: &[&str]) -> Command {
    let mut c = Command::new(command[0]);
    c.current_dir("/").args(&command[1..]);
    c
}

/// Runs `cmd` to its end (a minute at most: a hang is a failure, not a slow machine).
pub fn run(mut cmd: Command) -> Output {
    run_with_timeout(&mut cmd, Duration::from_secs(60))
}

/// Runs `command` as root and under `fdbroker run --transparent`; both must succeed and
/// print the same, and print something.
pub fn same_as_root(policy: &Path, command: &[&str]) {
    let root = run(as_root(command));
    assert!(
        root.status.success(),
        "{command:?} as root: {}",
        text(&root.stderr)
    );
    let confined = run(transparent(policy, command));
    assert!(
        confined.status.success(),
        "{command:?} transparent: {:?}\n{}",
        confined.status,
        text(&confined.stderr)
    );
    assert_eq!(
        text(&confined.stdout),
        text(&root.stdout),
        "{command:?}: output differs from root's\nstderr: {}",
        text(&confined.stderr)
    );
    assert!(!root.stdout.is_empty());
}

/// `policy.toml` in `t`: the client `worker` gets read and directory on `t/tree/`
/// except the deny carve-out `t/tree/carve/`; `sandbox` is added to `[sandbox]`, which
/// reads the system's program directories.
pub fn tree_policy(t: &TempDir, sandbox: &str, rules: &str) -> PathBuf {
    t.file(
        "policy.toml",
        format!(
            r#"
[sandbox]
read_only = ["/usr", "/bin", "/lib", "/lib64", "/etc/ld.so.cache"]
{sandbox}

[[client]]
name = "worker"
users = ["nobody"]
  [[client.allow]]
  path = "{dir}/tree/"
  access = ["read", "directory"]
  [[client.deny]]
  path = "{dir}/tree/carve/"
{rules}
"#,
            dir = t.path().display()
        )
        .as_bytes(),
        0o644,
    )
}

/// `fdbroker run --transparent ARGS -- sh -c SCRIPT`, from `/` (the working directory
/// must not reveal anything), to its end.
pub fn run_script(args: &[&str], script: &str) -> Output {
    let mut c = Command::new(fdbroker_bin());
    c.arg("run")
        .arg("--transparent")
        .args(args)
        .args(["--", "sh", "-c", script]);
    c.current_dir("/");
    run(c)
}

/// A root-only tree named `name` (0700 directories, 0600 files) with a deny carve-out
/// (`tree/carve/`), and [`tree_policy`] granting read and directory on it; `extra` goes
/// into `[sandbox]`.
pub fn carved_tree(name: &str, extra: &str) -> (TempDir, PathBuf) {
    let t = TempDir::new(name);
    t.file("tree/a.txt", b"alpha\n", 0o600);
    t.file("tree/sub/b.txt", b"bravo bravo\n", 0o600);
    t.file("tree/carve/secret.txt", b"carved out\n", 0o600);
    for d in ["tree", "tree/sub", "tree/carve"] {
        t.dir(d, 0o700);
    }
    let policy = tree_policy(&t, extra, "");
    (t, policy)
}

/// `p` as the `&str` a command line takes (the tests' paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("not UTF-8: {}", p.display()))
}
