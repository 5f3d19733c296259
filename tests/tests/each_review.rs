//! Review of issue 21 (`fdbroker each`, limits): attacks that found a problem, one test
//! per finding (F1, F2, ...), each failing before its fix.
#![allow(clippy::unwrap_used)]

use fdbroker_tests::{TempDir, fdbroker_bin, text};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use fdbroker_tests::each::{HANG, Waiting, each, each_cgroups, start_waiting};

/// The shared fixture, named for this file.
fn fixture() -> (TempDir, PathBuf) {
    let (t, policy) = fdbroker_tests::each::fixture("each-review");
    (t, policy)
}

/// `path` as one line of `each`'s input.
fn line(path: &Path) -> Vec<u8> {
    let mut input = path.as_os_str().as_encoded_bytes().to_vec();
    input.push(b'\n');
    input
}

/// `fdbroker run FLAGS --policy POLICY -- true`.
fn run_true(policy: &Path, flags: &[&str]) -> Output {
    let mut c = Command::new(fdbroker_bin());
    c.arg("run")
        .args(flags)
        .arg("--policy")
        .arg(policy)
        .args(["--", "true"])
        .env("FDBROKER_LOG", "warn");
    fdbroker_tests::run_with_timeout(&mut c, HANG)
}

/// F1: `--stdout-dir` is written by root. A name planted there by anyone who may write
/// the directory (a symlink `0.out -> /etc/...`) must not make root write the worker's
/// output (which the hostile file controls) through it; and the output, made from files
/// only root may read, must not be readable by everyone.
#[test]
fn f1_stdout_dir_follows_no_planted_link_and_keeps_outputs_private() {
    let (t, policy) = fixture();
    let item = t.file("tree/a", b"attacker's bytes\n", 0o600);
    let victim = t.file("victim", b"precious\n", 0o600);
    let dir = t.dir("out", 0o777);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("0.out")).unwrap();
    let mut input = item.as_os_str().as_encoded_bytes().to_vec();
    input.push(b'\n');
    let out = each(
        &policy,
        &["--stdout-dir", dir.to_str().unwrap()],
        &["cat"],
        &input,
    );
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"precious\n",
        "root wrote the worker's output through a planted symlink: {}",
        text(&out.stdout)
    );
    let meta = std::fs::symlink_metadata(dir.join("0.out")).unwrap();
    assert!(meta.file_type().is_file(), "a file of its own");
    assert_eq!(
        meta.mode() & 0o077,
        0,
        "not readable by others: {:o}",
        meta.mode()
    );
    assert_eq!(
        std::fs::read(dir.join("0.out")).unwrap(),
        b"attacker's bytes\n"
    );
}

/// F2: a `--pids-limit` of u64::MAX (parsed as valid) overflows `n + 2` in the rlimit
/// fallback: a panic (exit 101) in debug builds, an RLIMIT_NPROC of 1 in release ones.
#[test]
fn f2_the_largest_pids_limit_panics_nothing() {
    let (t, policy) = fixture();
    let item = t.file("tree/a", b"x\n", 0o600);
    let max = u64::MAX.to_string();
    let out = each(&policy, &["--pids-limit", &max], &["cat"], &line(&item));
    assert_ne!(out.status.code(), Some(101), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
    let out = run_true(&policy, &["--pids-limit", &max]);
    assert_ne!(out.status.code(), Some(101), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
}

/// F3: the worker's stderr is passed to the operator's terminal with its index in front,
/// but raw: a carriage return or an escape sequence lets item N overwrite its prefix and
/// print a line that reads as another item's (or as `fdbroker`'s own).
#[test]
fn f3_passed_on_stderr_carries_no_terminal_controls() {
    let (t, policy) = fixture();
    let item = t.file("tree/a", b"x\n", 0o600);
    let mut input = item.as_os_str().as_encoded_bytes().to_vec();
    input.push(b'\n');
    let out = each(
        &policy,
        &[],
        &[
            "sh",
            "-c",
            r"printf 'x\r[7] fdbroker: item 7 is clean\n\033[2K\033[1A[8] forged\n' >&2",
        ],
        &input,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = out.stderr;
    assert!(
        !stderr.iter().any(|&b| b == b'\r' || b == 0x1b),
        "{:?}",
        text(&stderr)
    );
    assert!(text(&stderr).contains("[0] "), "{}", text(&stderr));
}

/// F5: a limit the kernel refuses was caught only when the first worker started (an
/// `error` verdict per item, `cannot start the worker: Operation not permitted`). A
/// limit can only lower what `fdbroker` itself runs under: one above its hard limit
/// (`RLIMIT_NOFILE` past `fs.nr_open`, any rlimit without `CAP_SYS_RESOURCE`) is a
/// usage error, exit 2, naming the flag, before anything runs, for `each` and `run`.
#[test]
fn f5_a_limit_above_the_hard_limit_is_a_usage_error() {
    let (t, policy) = fixture();
    let item = t.file("tree/a", b"x\n", 0o600);
    let huge = (u64::MAX / 2).to_string();
    let out = each(&policy, &["--nofile-limit", &huge], &["cat"], &line(&item));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--nofile-limit"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "nothing ran: {}", text(&out.stdout));
    let out = run_true(&policy, &["--nofile-limit", &huge]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--nofile-limit"),
        "{}",
        text(&out.stderr)
    );
}

/// F5: a low `--nofile-limit` was set before the sandbox was applied, which opens
/// `/proc` files on its way (its thread count, its ids) above the descriptors the
/// worker inherits: every item failed with `EMFILE` (`cannot start the worker`). The
/// limit applies to the program, so it is set last, after the sandbox.
#[test]
fn f5_a_low_nofile_limit_still_starts_the_worker() {
    let (t, policy) = fixture();
    let item = t.file("tree/a", b"small\n", 0o600);
    let out = each(&policy, &["--nofile-limit", "8"], &["cat"], &line(&item));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("\"verdict\":\"ok\""),
        "{stdout} {}",
        text(&out.stderr)
    );
    assert!(stdout.contains("\"stdout\":\"small\\n\""), "{stdout}");
    assert_eq!(out.status.code(), Some(0));
}

/// Starts `each` (with memory and pids cgroups) on `item` and returns once the item's
/// program (`sleep 987654`) has started; its input stays open.
fn start_waiting_item(policy: &Path, item: &Path) -> Waiting {
    start_waiting(
        policy,
        &["--memory-limit", "64M", "--pids-limit", "16"],
        "987654",
        item,
    )
}

/// `fdbroker each` confines itself once its engine is ready: only the capabilities
/// making and ending sandboxes needs, in every set, and `no_new_privs`; the items still
/// run and it still ends them and removes its cgroups (F4's test).
#[test]
fn each_runs_with_only_the_capabilities_it_needs() {
    let (t, policy) = fixture();
    let item = t.file("tree/a", b"x\n", 0o600);
    let waiting = start_waiting_item(&policy, &item);
    let status = std::fs::read_to_string(format!("/proc/{}/status", waiting.child.id())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap()
    };
    // CAP_DAC_OVERRIDE 1, CAP_DAC_READ_SEARCH 2, CAP_KILL 5, CAP_SETGID 6,
    // CAP_SETUID 7, CAP_SETPCAP 8, CAP_SYS_PTRACE 19, CAP_SYS_ADMIN 21.
    let kept: u64 = [1u32, 2, 5, 6, 7, 8, 19, 21]
        .iter()
        .map(|b| 1u64 << b)
        .sum();
    let eff = u64::from_str_radix(&field("CapEff:"), 16).unwrap();
    assert_eq!(eff & !kept, 0, "CapEff {eff:x} holds more than {kept:x}");
    assert_eq!(u64::from_str_radix(&field("CapInh:"), 16).unwrap(), 0);
    assert_eq!(u64::from_str_radix(&field("CapAmb:"), 16).unwrap(), 0);
    let bnd = u64::from_str_radix(&field("CapBnd:"), 16).unwrap();
    assert_eq!(bnd & !kept, 0, "CapBnd {bnd:x} holds more than {kept:x}");
    assert_eq!(field("NoNewPrivs:"), "1");
}

/// F4: `fdbroker each` ended by SIGTERM (or SIGINT, Ctrl-C) died at once, leaving its
/// cgroup directories behind (one per slot and controller, for ever) and its running
/// items to the kernel's parent-death signal. Now it kills the items, waits for their
/// namespaces, removes its cgroups, and exits 128 + the signal's number.
#[test]
fn f4_sigterm_ends_the_items_and_removes_the_cgroups() {
    let (t, policy) = fixture();
    let item = t.file("tree/a", b"x\n", 0o600);
    for signal in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
    ] {
        let mut waiting = start_waiting_item(&policy, &item);
        let pid = waiting.child.id();
        let cgroups = each_cgroups(pid);
        // `started` is said just before the shell execs `sleep`: wait for the exec.
        let mut item_proc = Vec::new();
        assert!(
            fdbroker_tests::eventually(HANG, || {
                item_proc = sleepers(pid);
                item_proc.len() == 1
            }),
            "the item runs: {item_proc:?}"
        );
        if Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists() {
            assert!(
                !cgroups.is_empty(),
                "a v1 memory hierarchy: each made cgroups"
            );
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
        let deadline = std::time::Instant::now() + HANG;
        let status = loop {
            if let Some(s) = waiting.child.try_wait().unwrap() {
                break s;
            }
            assert!(std::time::Instant::now() < deadline, "each did not end");
            std::thread::sleep(Duration::from_millis(20));
        };
        drop(waiting);
        assert_eq!(
            status.code(),
            Some(128 + signal as i32),
            "{signal}: {status}"
        );
        for dir in &cgroups {
            assert!(!dir.exists(), "{signal}: left behind: {}", dir.display());
        }
        assert!(each_cgroups(pid).is_empty(), "{signal}");
        assert!(!item_proc[0].exists(), "{signal}: the item still runs");
    }
}

/// The `/proc` directories of the children of `parent` running `sleep 987654`, the F4 item's program (the worker is
/// `each`'s own child).
fn sleepers(parent: u32) -> Vec<PathBuf> {
    fdbroker_tests::children_of(parent)
        .into_iter()
        .map(|pid| PathBuf::from(format!("/proc/{pid}")))
        .filter(|p| std::fs::read(p.join("cmdline")).is_ok_and(|c| c == b"sleep\0987654\0"))
        .collect()
}
