//! Running `fdbroker each` on a real policy (`tests/tests/each*.rs`).

use crate::{TempDir, fdbroker_bin, run_with_input};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// How long an `each` run may take before it is a hang, not a slow machine.
pub const HANG: Duration = Duration::from_secs(180);

/// A tree named `name` whose `tree/` the policy's one client (nobody) may read, and
/// nothing else; the policy file.
pub fn fixture(name: &str) -> (TempDir, PathBuf) {
    let t = TempDir::new(name);
    let policy = t.file(
        "policy.toml",
        format!(
            "[[client]]\nname = \"w\"\nusers = [\"nobody\"]\n  [[client.allow]]\n  path = \"{}/tree/\"\n",
            t.path().display()
        )
        .as_bytes(),
        0o644,
    );
    (t, policy)
}

/// `fdbroker each --policy POLICY FLAGS -- COMMAND` with `input` on its stdin, to its
/// end (the broker's own log at `warn`).
pub fn each(policy: &Path, flags: &[&str], command: &[&str], input: &[u8]) -> Output {
    let mut c = Command::new(fdbroker_bin());
    c.arg("each")
        .arg("--policy")
        .arg(policy)
        .args(flags)
        .arg("--")
        .args(command)
        .env("FDBROKER_LOG", "warn");
    run_with_input(&mut c, Some(input.to_vec()), HANG)
}

/// An `fdbroker each` whose item's program is running: killed when dropped, so a failed
/// test leaves no `each` behind. Its stdin stays open (`each` waits for more paths).
pub struct Waiting {
    pub child: std::process::Child,
    _stdin: std::process::ChildStdin,
    _stderr: std::io::BufReader<std::process::ChildStderr>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `fdbroker each --policy POLICY FLAGS -- sh -c '...; exec sleep SLEEP'` on
/// `item` and returns once the item's program has said it started (`SLEEP`, a number
/// of seconds, tells the test's item apart in `/proc`).
pub fn start_waiting(policy: &Path, flags: &[&str], sleep: &str, item: &Path) -> Waiting {
    use std::io::{BufRead as _, Write as _};
    let mut child = Command::new(fdbroker_bin())
        .arg("each")
        .arg("--policy")
        .arg(policy)
        .args(flags)
        .arg("--")
        .args(["sh", "-c", &format!("echo started >&2; exec sleep {sleep}")])
        .env("FDBROKER_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fdbroker each");
    let mut stdin = child.stdin.take().expect("each's stdin");
    let mut input = item.as_os_str().as_encoded_bytes().to_vec();
    input.push(b'\n');
    stdin.write_all(&input).expect("a path to each");
    stdin.flush().expect("a path to each");
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("each's stderr"));
    let mut seen = String::new();
    while !seen.contains("[0] started") {
        let mut l = String::new();
        assert_ne!(
            stderr.read_line(&mut l).expect("each's stderr"),
            0,
            "each ended: {seen}"
        );
        seen.push_str(&l);
    }
    Waiting {
        child,
        _stdin: stdin,
        _stderr: stderr,
    }
}

/// `fdbroker each`'s cgroup directories (`fdbroker-each-PID-N`), in any controller's
/// hierarchy (v1) or the unified one (v2).
pub fn each_cgroups(pid: u32) -> Vec<PathBuf> {
    fn walk(dir: &Path, depth: u32, prefix: &str, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.filter_map(Result::ok) {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if e.file_name().to_string_lossy().starts_with(prefix) {
                found.push(e.path());
            } else if depth > 0 {
                walk(&e.path(), depth - 1, prefix, found);
            }
        }
    }
    let mut found = Vec::new();
    let prefix = format!("fdbroker-each-{pid}-");
    walk(Path::new("/sys/fs/cgroup"), 6, &prefix, &mut found);
    found
}
