//! `fdbroker run --transparent`: unmodified programs (coreutils, a shell, Python) read a
//! root-only tree through the broker, print exactly what they print as root, and get
//! nothing more than the policy grants.
#![allow(clippy::unwrap_used)]

use fdbroker_tests::{TempDir, fdbroker_bin, run_with_timeout};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const PYTHON: &str = "/usr/bin/python3";

/// A root-only tree (0700 directories, 0600 files) with a deny carve-out, a root-only
/// file outside the policy, and a policy granting read and directory on the tree.
fn fixture() -> (TempDir, PathBuf) {
    let t = TempDir::new("transparent");
    t.file("tree/a.txt", b"alpha\n", 0o600);
    t.file("tree/sub/b.txt", b"bravo bravo\n", 0o600);
    t.file("tree/sub/deeper/c.bin", &[0u8, 1, 2, 3, 255], 0o600);
    t.file("tree/carve/secret.txt", b"carved out\n", 0o600);
    t.file("outside.txt", b"not in the policy\n", 0o600);
    for d in ["tree", "tree/sub", "tree/sub/deeper", "tree/carve"] {
        t.dir(d, 0o700);
    }
    let policy = t.file(
        "policy.toml",
        format!(
            r#"
[sandbox]
read_only = ["/usr", "/bin", "/lib", "/lib64", "/etc/ld.so.cache"]

[[client]]
name = "worker"
users = ["nobody"]
  [[client.allow]]
  path = "{dir}/tree/"
  access = ["read", "directory"]
  [[client.deny]]
  path = "{dir}/tree/carve/"
"#,
            dir = t.path().display()
        )
        .as_bytes(),
        0o644,
    );
    (t, policy)
}

fn transparent(policy: &Path, command: &[&str]) -> Command {
    let mut c = Command::new(fdbroker_bin());
    c.arg("run")
        .arg("--transparent")
        .arg("--policy")
        .arg(policy)
        .arg("--")
        .args(command);
    c
}

fn as_root(command: &[&str]) -> Command {
    let mut c = Command::new(command[0]);
    c.args(&command[1..]);
    c
}

fn run(mut cmd: Command) -> Output {
    run_with_timeout(&mut cmd, Duration::from_secs(60))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `command` as root and under `fdbroker run --transparent`; both must succeed and
/// print the same.
fn same_as_root(policy: &Path, command: &[&str]) {
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

#[test]
fn transparent_programs_print_what_root_prints() {
    let (t, policy) = fixture();
    let a = t.join("tree/a.txt");
    let b = t.join("tree/sub/b.txt");
    let c = t.join("tree/sub/deeper/c.bin");
    let sub = t.join("tree/sub");
    let (a, b, c, sub) = (
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        c.to_str().unwrap(),
        sub.to_str().unwrap(),
    );
    same_as_root(&policy, &["cat", a, b]);
    same_as_root(&policy, &["sha256sum", a, b, c]);
    same_as_root(
        &policy,
        &["stat", "-c", "%n %s %a %u %g %i %h %Y %F", a, sub, c],
    );
    // Numeric ids: /etc/passwd is not readable in the sandbox.
    same_as_root(&policy, &["ls", "-lan", "--time-style=+%s", sub]);
    let pipeline = format!("cat {a} {b} | sha256sum; wc -c < {c}");
    same_as_root(&policy, &["sh", "-c", &pipeline]);
    let walk = format!(
        r#"
import os
for d, dirs, files in os.walk({sub:?}):
    dirs.sort()
    for f in sorted(files):
        p = os.path.join(d, f)
        st = os.stat(p)
        with open(p, "rb") as fh:
            print(p, st.st_size, oct(st.st_mode), st.st_ino, fh.read())
    print(d, sorted(os.listdir(d)), os.access(d, os.R_OK))
"#
    );
    same_as_root(&policy, &[PYTHON, "-c", &walk]);
}

#[test]
fn transparent_relative_paths_resolve_against_the_working_directory() {
    let (t, policy) = fixture();
    let command = ["sh", "-c", "cat b.txt ../a.txt deeper/../b.txt; ls deeper"];
    let mut root = as_root(&command);
    root.current_dir(t.join("tree/sub"));
    let root = run(root);
    let mut confined = transparent(&policy, &command);
    confined.current_dir(t.join("tree/sub"));
    let confined = run(confined);
    assert!(confined.status.success(), "{}", text(&confined.stderr));
    assert_eq!(text(&confined.stdout), text(&root.stdout));
    assert_eq!(
        text(&confined.stdout),
        "bravo bravo\nalpha\nbravo bravo\nc.bin\n"
    );
}

#[test]
fn transparent_grants_nothing_more_than_the_policy() {
    let (t, policy) = fixture();
    let a = t.join("tree/a.txt");
    let carved = t.join("tree/carve/secret.txt");
    let outside = t.join("outside.txt");
    // Runs as nobody.
    let out = run(transparent(&policy, &["id", "-u"]));
    assert_eq!(text(&out.stdout), "65534\n");
    // The carve-out: the policy's denial is EACCES.
    let out = run(transparent(&policy, &["cat", carved.to_str().unwrap()]));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).contains("carved"));
    // Outside the policy: the sandbox decides, and refuses.
    let out = run(transparent(&policy, &["cat", outside.to_str().unwrap()]));
    assert!(!out.status.success());
    assert!(!text(&out.stdout).contains("not in the policy"));
    // A write through a read grant fails, and the file is unchanged.
    let script = format!(
        "echo x >> {a}; echo y > {a}; {PYTHON} -c 'open(\"{a}\", \"r+\")' 2>/dev/null || echo refused",
        a = a.display()
    );
    let out = run(transparent(&policy, &["sh", "-c", &script]));
    assert!(
        text(&out.stdout).contains("refused"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read(&a).unwrap(), b"alpha\n");
}

#[test]
fn transparent_serves_a_multithreaded_program() {
    let (t, policy) = fixture();
    let script = format!(
        r#"
import threading, hashlib
out = {{}}
def work(i):
    for _ in range(40):
        with open({a:?}, "rb") as f:
            out[i] = hashlib.sha256(f.read()).hexdigest()
threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
for th in threads: th.start()
for th in threads: th.join()
print(len(set(out.values())), len(out))
"#,
        a = t.join("tree/sub/b.txt").to_str().unwrap()
    );
    let out = run(transparent(&policy, &[PYTHON, "-c", &script]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "1 8\n");
}

#[test]
fn transparent_program_cannot_install_its_own_listener() {
    let (_t, policy) = fixture();
    // seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, allow-all):
    // the kernel allows one listener per filter tree, and the program's already has one.
    let script = r#"
import ctypes, ctypes.util, os
libc = ctypes.CDLL(None, use_errno=True)
class Insn(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]
class Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Insn))]
insns = (Insn * 1)(Insn(0x06, 0, 0, 0x7fff0000))
prog = Prog(1, insns)
rc = libc.syscall(317, 1, 8, ctypes.byref(prog))
print(rc, os.strerror(ctypes.get_errno()) if rc < 0 else "")
"#;
    let out = run(transparent(&policy, &[PYTHON, "-c", script]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("-1 "),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn transparent_exit_status_and_signals_are_the_programs() {
    let (_t, policy) = fixture();
    let out = run(transparent(&policy, &["sh", "-c", "exit 7"]));
    assert_eq!(out.status.code(), Some(7));
    let out = run(transparent(&policy, &["sh", "-c", "kill -TERM $$"]));
    assert_eq!(out.status.code(), Some(128 + 15));
    let out = run(transparent(&policy, &["/nonexistent/program"]));
    assert_eq!(out.status.code(), Some(127));
}
