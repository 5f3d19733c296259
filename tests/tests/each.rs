//! `fdbroker each`, end to end: real programs (sha256sum, sh, python3) in a fresh
//! sandbox per path, as transient uids, with real limits and a real policy.
#![allow(clippy::unwrap_used)]

use fdbroker_tests::{TempDir, run_with_input, text};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::process::{Command, Output};

use fdbroker_tests::each::{HANG, each};

/// The shared fixture, named for this file (and a root-only file beside the tree).
fn fixture() -> (TempDir, PathBuf) {
    let (t, policy) = fdbroker_tests::each::fixture("each");
    t.file("secret.txt", b"root only\n", 0o600);
    (t, policy)
}

/// Each stdout line parsed; every one must be valid JSON.
fn lines(out: &Output) -> Vec<serde_json::Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn paths_in(list: &[PathBuf], sep: u8) -> Vec<u8> {
    let mut v = Vec::new();
    for p in list {
        v.extend_from_slice(p.as_os_str().as_encoded_bytes());
        v.push(sep);
    }
    v
}

#[test]
fn each_over_a_tree_gives_one_correct_line_per_file_in_input_order() {
    let (t, policy) = fixture();
    let mut files = Vec::new();
    for i in 0..24 {
        let content: Vec<u8> = (0..(i * 37 + 1)).map(|b| (b * 7 + i) as u8).collect();
        files.push(t.file(&format!("tree/d{}/f{i}.bin", i % 3), &content, 0o600));
    }
    let out = each(
        &policy,
        &["-j", "3"],
        &["sha256sum"],
        &paths_in(&files, b'\n'),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let got = lines(&out);
    assert_eq!(got.len(), files.len());
    for (i, (line, file)) in got.iter().zip(&files).enumerate() {
        let want = format!("{:x}", Sha256::digest(std::fs::read(file).unwrap()));
        assert_eq!(line["index"], i);
        assert_eq!(line["path"], file.to_str().unwrap());
        assert_eq!(line["verdict"], "ok");
        assert_eq!(line["exit_status"], 0);
        assert_eq!(
            line["stdout"],
            format!("{want}  -\n"),
            "hash of {}",
            file.display()
        );
        for key in ["signal", "wall_ms", "cpu_ms", "max_rss_kib"] {
            assert!(line.get(key).is_some(), "{key} in {line}");
        }
    }
}

#[test]
fn a_denied_path_is_denied_while_the_rest_run() {
    let (t, policy) = fixture();
    let a = t.file("tree/a.txt", b"a\n", 0o600);
    let b = t.file("tree/b.txt", b"b\n", 0o600);
    let files = [a, t.join("secret.txt"), t.join("tree/missing"), b];
    let out = each(&policy, &[], &["cat"], &paths_in(&files, b'\n'));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let got = lines(&out);
    let verdicts: Vec<_> = got.iter().map(|l| l["verdict"].as_str().unwrap()).collect();
    assert_eq!(verdicts, ["ok", "denied", "error", "ok"]);
    assert_eq!(got[0]["stdout"], "a\n");
    assert_eq!(got[3]["stdout"], "b\n");
    assert!(got[1]["message"].is_string() && got[2]["message"].is_string());
    assert_eq!(got[1]["stdout"], "", "nothing of the secret");
}

#[test]
fn a_worker_holds_only_its_file_and_can_reach_nothing_else() {
    let (t, policy) = fixture();
    let a = t.file("tree/a.txt", b"item a\n", 0o600);
    let b = t.file("tree/b.txt", b"item b\n", 0o644);
    let probe = r#"
import os, socket, sys
tried = []
for p in sys.argv[1:]:
    try:
        open(p, 'rb').read(); tried.append('READ ' + p)
    except OSError:
        tried.append('no')
try:
    os.listdir('/'); tried.append('LISTED /')
except OSError:
    tried.append('no')
try:
    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).connect('/run/fdbroker/fdbroker.sock'); tried.append('CONNECTED')
except OSError:
    tried.append('no')
fds = []
for fd in range(0, 1024):
    try:
        os.fstat(fd); fds.append(fd)
    except OSError:
        pass
print(' '.join(tried), fds, os.environ.get('FDBROKER_FD'), os.environ['FDBROKER_ITEM'], os.getuid(), os.getcwd(), sys.stdin.read().strip())
"#;
    let secret = t.join("secret.txt");
    let others = [
        b.to_str().unwrap(),
        a.to_str().unwrap(),
        "/etc/passwd",
        secret.to_str().unwrap(),
    ];
    let mut cmd = vec!["python3", "-c", probe, "--"];
    cmd.extend(others);
    let out = each(
        &policy,
        &[],
        &cmd,
        &paths_in(&[a.clone(), b.clone()], b'\n'),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let got = lines(&out);
    for (line, (me, content)) in got.iter().zip([(&a, "item a"), (&b, "item b")]) {
        let s = line["stdout"].as_str().unwrap();
        assert!(s.starts_with("no no no no no no no [0, 1, 2] None "), "{s}");
        assert!(s.contains(me.to_str().unwrap()), "FDBROKER_ITEM: {s}");
        assert!(s.trim_end().ends_with(&format!("/ {content}")), "{s}");
        assert!(!s.contains(" 0 /"), "not root: {s}");
    }
}

#[test]
fn concurrent_workers_have_different_uids() {
    let (t, policy) = fixture();
    let files: Vec<_> = (0..4)
        .map(|i| t.file(&format!("tree/{i}"), b"x", 0o600))
        .collect();
    // All four start at once (four free slots); each stays until all could have started.
    let out = each(
        &policy,
        &["-j", "4"],
        &["sh", "-c", "id -u; sleep 1"],
        &paths_in(&files, b'\n'),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let uids: std::collections::BTreeSet<u32> = lines(&out)
        .iter()
        .map(|l| l["stdout"].as_str().unwrap().trim().parse().unwrap())
        .collect();
    assert_eq!(uids.len(), 4, "{uids:?}");
    assert!(
        uids.iter()
            .all(|&u| u != 0 && u != fdbroker_tests::nobody_uid())
    );
}

#[test]
fn limits_give_their_verdicts_per_item_and_never_stop_the_others() {
    let (t, policy) = fixture();
    let files: Vec<_> = (0..4)
        .map(|i| t.file(&format!("tree/{i}"), b"x\n", 0o600))
        .collect();
    let script = "case $FDBROKER_ITEM in \
        */0) while :; do :; done;; \
        */1) yes;; \
        */2) exec >&-; sleep 1000 & echo left a daemon >&2;; \
        *) cat;; esac";
    let out = each(
        &policy,
        &["-j", "2", "--time-limit", "2s", "--output-limit", "100"],
        &["sh", "-c", script],
        &paths_in(&files, b'\n'),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let got = lines(&out);
    let verdicts: Vec<_> = got.iter().map(|l| l["verdict"].as_str().unwrap()).collect();
    assert_eq!(verdicts, ["timeout", "output", "ok", "ok"]);
    assert_eq!(got[1]["stdout"].as_str().unwrap().len(), 100);
    assert_eq!(got[3]["stdout"], "x\n");
    assert!(
        text(&out.stderr).contains("[2] left a daemon"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn hostile_stderr_and_crafted_paths_never_corrupt_the_output() {
    let (t, policy) = fixture();
    let odd = t.file("tree/a\nb \"q\"", b"odd\n", 0o600);
    let mut input = paths_in(std::slice::from_ref(&odd), 0);
    input.extend_from_slice(b"/tree/\xff\xfe\0");
    input.extend(std::iter::repeat_n(b'x', 100_000));
    input.push(0);
    input.extend_from_slice(odd.as_os_str().as_encoded_bytes());
    let flood = "head -c 300000 /proc/self/fd/0 2>/dev/null; cat; yes no-newline | tr -d '\\n' | head -c 200000 >&2";
    let out = each(&policy, &["-0"], &["sh", "-c", flood], &input);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let got = lines(&out);
    assert_eq!(got.len(), 4, "{}", text(&out.stdout));
    assert_eq!(got[0]["path"], odd.to_str().unwrap());
    assert_eq!(got[0]["stdout"], "odd\n");
    assert_eq!(got[1]["path_hex"], "2f747265652fff fe".replace(' ', ""));
    assert_eq!(got[1]["verdict"], "denied");
    assert_eq!(got[2]["verdict"], "error");
    assert_eq!(got[3]["stdout"], "odd\n");
    let stderr = text(&out.stderr);
    let bad: Vec<&str> = stderr
        .lines()
        // The worker's lines are prefixed with its item; the rest are `each`'s own
        // audit lines (denials are logged at warn).
        .filter(|l| {
            let ours = l.as_bytes().first().is_some_and(u8::is_ascii_digit)
                && l.contains("Z  WARN fdbroker::audit: ");
            !(ours || l.starts_with('[') && l.len() <= 4096 + 16)
        })
        .map(|l| l.get(..200).unwrap_or(l))
        .collect();
    assert!(bad.is_empty(), "every line prefixed and cut: {bad:?}");
    assert!(
        stderr.len() < 4 * 70 * 1024,
        "at most 64 KiB of stderr per item passed on"
    );
}

#[test]
fn stdout_dir_receives_the_output_and_usage_errors_exit_2() {
    let (t, policy) = fixture();
    let a = t.file("tree/a", b"to a file\n", 0o600);
    let dir = t.dir("out", 0o700);
    let out = each(
        &policy,
        &["--stdout-dir", dir.to_str().unwrap()],
        &["cat"],
        &paths_in(&[a], b'\n'),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let got = lines(&out);
    assert_eq!(got[0]["stdout"], "");
    let file = got[0]["stdout_file"].as_str().unwrap();
    assert_eq!(std::fs::read(file).unwrap(), b"to a file\n");
    let out = each(&policy, &["--memory-limit", "lots"], &["cat"], b"");
    assert_eq!(out.status.code(), Some(2));
    let out = each(&t.join("nope.toml"), &[], &["cat"], b"");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_library_engine_takes_descriptors_and_paths_through_a_bounded_queue() {
    let (t, policy) = fixture();
    let a = t.file("tree/a", b"alpha\n", 0o600);
    let outside = t.join("secret.txt");
    let mut c = Command::new(fdbroker_tests::sibling_bin("each-probe"));
    c.arg(&policy)
        .arg("1")
        .arg(&a)
        .arg(&outside)
        .env("FDBROKER_LOG", "warn");
    let out = run_with_input(&mut c, None, HANG);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The caller's own descriptors are its to vouch for; the paths are decided.
    assert_eq!(
        text(&out.stdout),
        "0 ok alpha\n1 ok root only\n2 ok alpha\n3 denied \nrefused 1\n"
    );
}

#[test]
fn system_v_ipc_made_by_one_item_never_reaches_the_next() {
    let (t, policy) = fixture();
    let files: Vec<_> = (0..3)
        .map(|i| t.file(&format!("tree/{i}"), b"x", 0o600))
        .collect();
    // Item 0 makes a shared memory segment under a fixed key and leaves it; the items
    // after it (the same slot, so the same uid: -j 1) look for it.
    let probe = r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
key = 0x21f00d
if os.environ['FDBROKER_ITEM'].endswith('/0'):
    print('made' if libc.shmget(key, 4096, 0o1600) >= 0 else 'not made %d' % ctypes.get_errno())
else:
    print('found' if libc.shmget(key, 0, 0o600) >= 0 else 'absent')
"#;
    let out = each(
        &policy,
        &["-j", "1"],
        &["python3", "-c", probe],
        &paths_in(&files, b'\n'),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let said: Vec<_> = lines(&out)
        .iter()
        .map(|l| l["stdout"].as_str().unwrap().trim().to_owned())
        .collect();
    assert_eq!(said, ["made", "absent", "absent"]);
    // Nor is it in this (the host's) IPC namespace.
    // SAFETY: shmget takes no pointers.
    #[allow(unsafe_code)]
    let here = unsafe { libc::shmget(0x21f00d, 0, 0) };
    assert_eq!(here, -1);
}

/// The next items' workers are made, confined, while an item runs, some under the same
/// uid (the slot's): an item that signals everything it may (`kill(-1, SIGKILL)`)
/// reaches only its own namespace, and every later item still runs and gets its own
/// file.
#[test]
fn an_item_signalling_everything_it_may_cannot_reach_the_next_items_workers() {
    let (t, policy) = fixture();
    let files: Vec<_> = (0..5)
        .map(|i| {
            t.file(
                &format!("tree/{i}"),
                format!("item {i}\n").as_bytes(),
                0o600,
            )
        })
        .collect();
    let probe = r#"
import os, signal, sys
if os.environ['FDBROKER_ITEM'].endswith('/0'):
    os.kill(-1, signal.SIGKILL)
print(sys.stdin.read().strip())
"#;
    let out = each(
        &policy,
        &["-j", "1"],
        &["python3", "-c", probe],
        &paths_in(&files, b'\n'),
    );
    let got = lines(&out);
    assert_eq!(got.len(), 5, "{}", text(&out.stderr));
    // Killed with the rest of its namespace, or refused by the sandbox: not `ok`.
    assert!(
        got[0]["verdict"] == "signal" || got[0]["verdict"] == "exit",
        "{}",
        got[0]
    );
    for (i, line) in got.iter().enumerate().skip(1) {
        assert_eq!(line["verdict"], "ok", "{line}");
        assert_eq!(line["stdout"], format!("item {i}\n"), "{line}");
    }
}

/// A program that cannot be executed (not found) is each item's `error`, with why, as
/// when `fdbroker run` cannot start its command: never an `exit` verdict the program
/// itself seemed to give.
#[test]
fn a_program_that_cannot_be_executed_is_an_error_with_why() {
    let (t, policy) = fixture();
    let a = t.file("tree/a", b"a\n", 0o600);
    let out = each(
        &policy,
        &[],
        &["/nonexistent/fdbroker-no-such-program"],
        &paths_in(&[a.clone(), a], b'\n'),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    for line in lines(&out) {
        assert_eq!(line["verdict"], "error", "{line}");
        let why = line["message"].as_str().unwrap_or_default();
        assert!(
            why.contains("fdbroker-no-such-program") && why.contains("No such file"),
            "{line}"
        );
    }
}
