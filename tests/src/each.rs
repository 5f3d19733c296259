//! Running `fdbroker each` on a real policy (`tests/tests/each*.rs`).

use crate::{TempDir, fdbroker_bin, run_with_input};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
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
