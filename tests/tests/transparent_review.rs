//! Review of issue 20 (transparent mode for real programs): each test names the finding
//! it shows (`F1`, `F2`, ...) and fails while the finding stands.
#![allow(clippy::unwrap_used)]

use fdbroker_tests::transparent::{run, s, transparent, transparent_with, tree_policy};
use fdbroker_tests::{TempDir, text};
use std::path::PathBuf;

/// The shared carved tree (`fdbroker_tests::transparent::carved_tree`), named for this
/// file; `extra` goes into `[sandbox]`.
fn fixture(extra: &str) -> (TempDir, PathBuf) {
    fdbroker_tests::transparent::carved_tree("transparent-review", extra)
}

/// F1: the scratch directory is private (made 0700, owned by the sandbox's transient
/// uid), but the supervisor's `chmod` takes any directory mode, the scratch directory
/// itself included: a program makes its `TMPDIR` 0777, and every local user can then
/// read what it writes there (what it read from the served tree) and plant files in
/// it. The scratch directory itself must keep its mode.
#[test]
fn review_f1_the_scratch_directory_stays_private() {
    let (_t, policy) = fixture("");
    let script = r#"chmod 777 "$TMPDIR"; stat -c %a "$TMPDIR";
python3 -c 'import os; fd = os.open(os.environ["TMPDIR"], os.O_RDONLY)
try:
    os.fchmod(fd, 0o755)
except OSError:
    pass' ; stat -c %a "$TMPDIR""#;
    let out = run(transparent(&policy, &["sh", "-c", script]));
    assert_eq!(
        text(&out.stdout),
        "700\n700\n",
        "the program widened its private scratch directory: {}",
        text(&out.stderr)
    );
}

/// F2: `Op::Link` describes a symbolic link without the checks `Stat` makes on what it
/// found: a link planted as a hard link into the served tree (the threat model's
/// "hardlink files into allowed trees") describes a link inside the carve-out, its
/// target included; and under a grant of `directory` alone (no `read`), a link's target
/// (its content) is given, where a `Stat` of any non-directory is refused.
#[test]
fn review_f2_a_link_is_described_only_as_a_stat_would_be() {
    let (t, policy) = fixture("");
    std::os::unix::fs::symlink("carved-out-target", t.join("tree/carve/clink")).unwrap();
    // `link(2)` does not follow: the new name is the carve-out's link itself.
    std::fs::hard_link(t.join("tree/carve/clink"), t.join("tree/sub/planted")).unwrap();
    let planted = t.join("tree/sub/planted");
    let out = run(transparent(
        &policy,
        &[
            "sh",
            "-c",
            &format!(
                "readlink {p}; stat -c '%h %s' {p}; ls -l {sub}",
                p = s(&planted),
                sub = s(&t.join("tree/sub"))
            ),
        ],
    ));
    let o = text(&out.stdout);
    assert!(
        !o.contains("carved-out-target"),
        "a hard link planted in the tree describes a link in the carve-out: {o}"
    );

    // A grant of `directory` alone: listing and traversal, no contents.
    let d = TempDir::new("transparent-review-dironly");
    d.file("tree/a.txt", b"alpha\n", 0o600);
    std::os::unix::fs::symlink("only-read-may-see-this", d.join("tree/l")).unwrap();
    d.dir("tree", 0o700);
    let policy = d.file(
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
  access = ["directory"]
"#,
            dir = d.path().display()
        )
        .as_bytes(),
        0o644,
    );
    let tree = d.join("tree");
    let out = run(transparent(
        &policy,
        &[
            "sh",
            "-c",
            &format!("stat -c %s {t}/a.txt; readlink {t}/l; ls {t}", t = s(&tree)),
        ],
    ));
    let o = text(&out.stdout);
    // The grant lists the directory...
    assert!(o.contains("a.txt"), "{o}\n{}", text(&out.stderr));
    // ...and describes no file in it; nor may it give a link's target.
    assert!(!o.contains("\n6\n") && !o.starts_with("6\n"), "{o}");
    assert!(
        !o.contains("only-read-may-see-this"),
        "a directory-only grant gave a link's target: {o}"
    );
}

/// F3: "a denial is never a clean run" counts only deny decisions, not the refusals a
/// rule's own options make (a symbolic link under `symlinks = "none"`, a hard-linked
/// file under `hardlinks = false`, a device): the program gets the same `EACCES` and
/// skips the file, but nothing is said at exit and `--fail-on-denial` exits 0.
#[test]
fn review_f3_a_refusal_by_a_rules_options_is_said_at_exit() {
    let (t, policy) = fixture("");
    std::os::unix::fs::symlink("a.txt", t.join("tree/link")).unwrap();
    std::fs::hard_link(t.join("tree/sub/b.txt"), t.join("tree/sub/twice")).unwrap();
    for what in ["tree/link", "tree/sub/twice"] {
        let p = t.join(what);
        let out = run(transparent_with(
            &policy,
            &["--fail-on-denial"],
            &["sh", "-c", &format!("cat {} ; exit 0", s(&p))],
        ));
        let err = text(&out.stderr);
        assert!(err.contains("Permission denied"), "{what}: {err}");
        assert!(
            err.contains("fdbroker run: the policy refused"),
            "{what}: refused (EACCES), yet nothing said at exit: {err}"
        );
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
    }
}

/// F4: `newfstatat`/`statx` with `AT_EMPTY_PATH` on a descriptor skip the supervisor,
/// and the filter cannot see that the path is absolute (which ignores the descriptor).
/// What that reaches is the kernel's answer under the sandbox user's own rights, as for
/// every stat of plain `fdbroker run` (documented in docs/transparent.md): in a root-only
/// tree, with a carve-out beneath it, the raw call is refused by the kernel just as the
/// supervised `stat` is refused by the policy.
#[test]
fn review_f4_at_empty_path_reveals_no_more_than_the_sandbox_user_may_see() {
    let t = TempDir::new("transparent-review-open");
    t.file("tree/a.txt", b"alpha\n", 0o600);
    t.file(
        "tree/carve/secret.txt",
        b"carved out, 37 bytes long .........\n",
        0o600,
    );
    for d in ["tree", "tree/carve"] {
        t.dir(d, 0o700);
    }
    let policy = tree_policy(&t, "", "");
    let secret = t.join("tree/carve/secret.txt");
    let granted = t.join("tree/a.txt");
    let script = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = {"x86_64": 262, "aarch64": 79}[os.uname().machine]
for p in sys.argv[1:]:
    buf = ctypes.create_string_buffer(256)
    try:
        print("stat ok size %d" % os.stat(p).st_size)
    except OSError as e:
        print("stat errno", e.errno)
    rc = libc.syscall(ctypes.c_long(NR), ctypes.c_int(0), p.encode(), buf,
                      ctypes.c_int(0x1000))
    print("raw", "ok size %d" % int.from_bytes(buf.raw[48:56], "little") if rc == 0
          else "errno %d" % ctypes.get_errno())
"#;
    let out = run(transparent(
        &policy,
        &["/usr/bin/python3", "-c", script, s(&secret), s(&granted)],
    ));
    let o = text(&out.stdout);
    // The granted file's raw call may be answered either way (the kernel refuses the
    // sandbox user; a supervised answer would describe it): only the carve-out matters.
    assert!(
        o == "stat errno 13\nraw errno 13\nstat ok size 6\nraw errno 13\n"
            || o == "stat errno 13\nraw errno 13\nstat ok size 6\nraw ok size 6\n",
        "{o}\n{}",
        text(&out.stderr)
    );
}

/// F5: listing a directory that has both a carve-out beneath it and a symbolic link
/// fails: the stand-in makes a symbolic link in the scratch directory, which the
/// sandbox's Landlock domain does not allow (no `MAKE_SYM`), so `ls` of the tree is
/// `EACCES`; and the half-made stand-in keeps its name, so every later listing in the
/// run fails with `EEXIST`.
#[test]
fn review_f5_a_directory_with_a_carve_out_and_a_link_is_listed() {
    let (t, policy) = fixture("");
    std::os::unix::fs::symlink("a.txt", t.join("tree/link")).unwrap();
    let tree = t.join("tree");
    let out = run(transparent(
        &policy,
        &[
            "sh",
            "-c",
            &format!("ls {t}; echo rc=$?; ls {t}; echo rc=$?", t = s(&tree)),
        ],
    ));
    let o = text(&out.stdout);
    assert_eq!(
        o,
        "a.txt\nlink\nsub\nrc=0\na.txt\nlink\nsub\nrc=0\n",
        "{}",
        text(&out.stderr)
    );
}

/// F6: the summary at exit is written like any log line, given up after 20 ms when the
/// destination does not take it. The program shares that destination (its stderr), so
/// a refused program that fills a piped stderr and exits (while the reader, a log
/// collector or `| less`, is busy for a moment) makes `fdbroker run` drop the one line
/// that says what was refused.
#[test]
fn review_f6_a_program_cannot_drop_the_summary_by_filling_stderr() {
    use std::io::Read;
    let (t, policy) = fixture("");
    let secret = t.join("tree/carve/secret.txt");
    let script = format!(
        r#"
import os, fcntl
try:
    open({secret:?})
except OSError:
    pass
fcntl.fcntl(2, fcntl.F_SETFL, fcntl.fcntl(2, fcntl.F_GETFL) | os.O_NONBLOCK)
try:
    while True:
        os.write(2, b"x" * 4096)
except BlockingIOError:
    pass
"#,
        secret = s(&secret)
    );
    let mut child = transparent(&policy, &["/usr/bin/python3", "-c", &script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    // A reader busy for a moment.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let mut all = Vec::new();
    err.read_to_end(&mut all).unwrap();
    let _ = child.wait();
    let all: Vec<u8> = all.into_iter().filter(|&b| b != b'x').collect();
    assert!(
        text(&all).contains("fdbroker run: the policy refused"),
        "the summary was dropped: {}",
        text(&all)
    );
}
