//! Review 21 of `fdbroker each`'s armed workers and their limits: attacks by a hostile
//! item program that found a problem, one test per finding (R1, R2, ...), each failing
//! before its fix.
#![allow(clippy::unwrap_used)]

use fdbroker_tests::{TempDir, fdbroker_bin, run_with_input, text};
use std::path::PathBuf;
use std::process::{Command, Output};

/// The shared fixture, named for this file.
fn fixture() -> (TempDir, PathBuf) {
    fdbroker_tests::each::fixture("each-armed-review")
}

fn paths_in(list: &[PathBuf]) -> Vec<u8> {
    let mut v = Vec::new();
    for p in list {
        v.extend_from_slice(p.as_os_str().as_encoded_bytes());
        v.push(b'\n');
    }
    v
}

/// Each stdout line parsed; every one must be valid JSON.
fn lines(out: &Output) -> Vec<serde_json::Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// R1: where no pids cgroup can be had, `--pids-limit N` is the sandbox uid's
/// RLIMIT_NPROC, set to N + 2 for the namespace's init and the slot's spare init. But
/// the slot's armed worker, made while the item runs, is a third process of that uid
/// outside the item's tree: the item got N - 1 processes, not the N a pids cgroup (or
/// `fdbroker run`) gives it, and which depended on whether the arming had happened yet.
#[test]
fn r1_the_pids_rlimit_fallback_gives_the_item_its_whole_limit() {
    let (t, policy) = fixture();
    let item = t.file("tree/a", b"x\n", 0o600);
    // The item waits until its slot's next worker is armed, then forks as many children
    // as it may: with --pids-limit 3 it is 3 processes, so 2 children.
    let probe = r#"
import os, time
time.sleep(1)
kids = []
for _ in range(2):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(3)
        os._exit(0)
    kids.append(pid)
print(len(kids))
for k in kids:
    os.waitpid(k, 0)
"#;
    // No cgroup hierarchy at all in a private mount namespace: the rlimit alone applies.
    let mut c = Command::new("unshare");
    c.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs none /sys/fs/cgroup && exec \"$0\" \"$@\"")
        .arg(fdbroker_bin())
        .arg("each")
        .arg("--policy")
        .arg(&policy)
        .args(["-j", "1", "--pids-limit", "3", "--"])
        .args(["python3", "-c", probe])
        .env("FDBROKER_LOG", "warn");
    let out = run_with_input(&mut c, Some(paths_in(&[item])), fdbroker_tests::each::HANG);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("no a pids cgroup"),
        "the rlimit fallback is in use: {stderr}"
    );
    let got = lines(&out);
    assert_eq!(got.len(), 1, "{}", text(&out.stdout));
    assert_eq!(got[0]["verdict"], "ok", "{} {stderr}", got[0]);
    assert_eq!(
        got[0]["stdout"], "2\n",
        "children the item could fork under --pids-limit 3: {}",
        got[0]
    );
}
