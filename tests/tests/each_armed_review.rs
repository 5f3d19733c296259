//! Review 21 of `fdbroker each`'s armed workers and their limits: attacks by a hostile
//! item program that found a problem, one test per finding (R1, R2, ...), each failing
//! before its fix.
#![allow(clippy::unwrap_used)]

use fdbroker_tests::each::{each_cgroups, start_waiting};
use fdbroker_tests::{TempDir, fdbroker_bin, run_with_input, text};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
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

/// The `/proc` directories of the children of `parent`.
fn children_of(parent: u32) -> Vec<PathBuf> {
    fdbroker_tests::children_of(parent)
        .into_iter()
        .map(|pid| PathBuf::from(format!("/proc/{pid}")))
        .collect()
}

/// A line of `/proc/PID/status`, its value trimmed.
fn status_line(proc_dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(proc_dir.join("status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
}

/// R2: the armed worker, waiting for its item, was documented to hold nothing but its
/// own socket ("each's own stdin and stdout" among what it closed), but closed only the
/// descriptors from 3 up: it held `each`'s stdin (the path list), stdout (the results)
/// and stderr for as long as it waited.
#[test]
fn r2_an_armed_worker_waits_holding_only_its_socket() {
    let (t, policy) = fixture();
    let item = t.file("tree/a", b"x\n", 0o600);
    let each = start_waiting(&policy, &[], "987653", &item);
    // The slot's next worker: `each`'s child, pid 2 of its namespace, still `each`'s
    // program (no exec yet), confined (no capability, seccomp on).
    let fdbroker = std::fs::metadata(fdbroker_bin())
        .map(|m| (m.dev(), m.ino()))
        .unwrap();
    let mut armed = None;
    assert!(
        fdbroker_tests::eventually(fdbroker_tests::each::HANG, || {
            armed = children_of(each.child.id()).into_iter().find(|p| {
                std::fs::metadata(p.join("exe")).is_ok_and(|m| (m.dev(), m.ino()) == fdbroker)
                    && status_line(p, "NSpid:")
                        .is_some_and(|ns| ns.split_whitespace().last() == Some("2"))
                    && status_line(p, "Seccomp:").as_deref() == Some("2")
            });
            armed.is_some()
        }),
        "no armed worker among {:?}",
        children_of(each.child.id())
    );
    let armed = armed.unwrap();
    assert_eq!(status_line(&armed, "CapEff:").unwrap(), "0000000000000000");
    assert_eq!(status_line(&armed, "NoNewPrivs:").unwrap(), "1");
    assert_eq!(
        std::fs::read_link(armed.join("cwd")).unwrap(),
        Path::new("/")
    );
    let fds_of = |p: &Path| -> Vec<(String, PathBuf)> {
        std::fs::read_dir(p.join("fd"))
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read_link(e.path()).unwrap_or_default(),
                )
            })
            .collect()
    };
    // Once confined it closes what it inherited, then waits: give it a moment.
    fdbroker_tests::eventually(fdbroker_tests::each::HANG, || fds_of(&armed).len() == 1);
    let fds = fds_of(&armed);
    assert_eq!(fds.len(), 1, "only its socket: {fds:?}");
    assert!(fds[0].1.to_string_lossy().starts_with("socket:"), "{fds:?}");
    drop(each);
}

/// R3: docs/each.md: at most 64 KiB of an item's stderr is passed on, "then one
/// `fdbroker: stderr cut` line". The notice came twice whenever the cut fell at the end
/// of a line (short lines: always).
#[test]
fn r3_the_stderr_cut_notice_comes_once() {
    let (t, policy) = fixture();
    let item = t.file("tree/a", b"x\n", 0o600);
    let out = fdbroker_tests::each::each(
        &policy,
        &[],
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 40000 ]; do echo yy; i=$((i+1)); done >&2",
        ],
        &paths_in(&[item]),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let notices = text(&out.stderr)
        .lines()
        .filter(|l| l.contains("fdbroker: stderr cut"))
        .count();
    assert_eq!(notices, 1);
}

/// R4: `fdbroker each` makes each slot's cgroups as it prepares the slot; when a later
/// slot could not be prepared (here: out of descriptors, a large `-j` under a low
/// `ulimit -n`), it exited 2 and left the earlier slots' cgroup directories behind,
/// for ever. Tried under a range of descriptor limits, so that one of them fails
/// between two slots whatever this machine's start-up needs.
#[test]
fn r4_an_each_that_cannot_prepare_every_slot_leaves_no_cgroup_behind() {
    let (_t, policy) = fixture();
    let mut failed_between = 0;
    for nofile in (24..=72).step_by(2) {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
            .arg(fdbroker_bin())
            .arg("each")
            .arg("--policy")
            .arg(&policy)
            .args([
                "--memory-limit",
                "64M",
                "--pids-limit",
                "64",
                "-j",
                "10",
                "--",
            ])
            .arg("cat")
            .env("FDBROKER_LOG", "warn");
        let child = c
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        let left = each_cgroups(pid);
        for dir in &left {
            let _ = std::fs::remove_dir(dir);
        }
        assert!(
            left.is_empty(),
            "ulimit -n {nofile}: exit {:?}, {}: left {left:?}",
            out.status.code(),
            text(&out.stderr)
        );
        failed_between +=
            usize::from(out.status.code() == Some(2) && text(&out.stderr).contains("sandbox"));
    }
    assert!(failed_between > 0, "no limit failed between two slots");
}

/// R5: `fdbroker each` removes its cgroups when it ends, and on SIGTERM, SIGINT or
/// SIGHUP; killed with SIGKILL (the OOM killer, a service manager's last resort, a
/// test's `Child::kill`) it left them behind for ever. `fdbroker run` has a remover
/// process that outlives it for this; `each` now has one too.
#[test]
fn r5_an_each_killed_with_sigkill_leaves_no_cgroup_behind() {
    let (t, policy) = fixture();
    let item = t.file("tree/a", b"x\n", 0o600);
    let mut each = start_waiting(
        &policy,
        &["--memory-limit", "64M", "--pids-limit", "16"],
        "987652",
        &item,
    );
    let child = &mut each.child;
    let pid = child.id();
    let made = each_cgroups(pid);
    if Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists() {
        assert!(!made.is_empty(), "a v1 memory hierarchy: each made cgroups");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let gone =
        fdbroker_tests::eventually(fdbroker_tests::each::HANG, || each_cgroups(pid).is_empty());
    let left = each_cgroups(pid);
    for dir in &left {
        let _ = std::fs::remove_dir(dir);
    }
    assert!(gone, "made {made:?}, left {left:?}");
}
