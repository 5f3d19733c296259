//! `fdbroker run --transparent`: unmodified programs (coreutils, a shell, Python) read a
//! root-only tree through the broker, print exactly what they print as root, and get
//! nothing more than the policy grants.
#![allow(clippy::unwrap_used)]

use fdbroker_tests::transparent::{as_root, run, same_as_root, transparent, tree_policy};
use fdbroker_tests::{TempDir, text};
use std::path::{Path, PathBuf};
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
    let policy = tree_policy(&t, "", "");
    (t, policy)
}

/// `[sandbox] uid_range`'s default, where `user = "dynamic"` (the default) takes each
/// run's uid.
const TRANSIENT: std::ops::RangeInclusive<u32> = 0x7000_0000..=0x7000_ffff;

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
    // readlink on each component: none is a link.
    same_as_root(&policy, &["readlink", "-f", a, c]);
    same_as_root(&policy, &["realpath", b]);
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
    // Runs as a transient uid of its own (tests/tests/identity.rs).
    let out = run(transparent(&policy, &["id", "-u"]));
    let uid: u32 = text(&out.stdout).trim().parse().unwrap();
    assert!(TRANSIENT.contains(&uid), "{uid}");
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
    // A missing file in the tree is ENOENT, as for root; a directory opened without
    // O_DIRECTORY (`grep -r`, `fdopendir`) works.
    let missing = t.join("tree/sub/missing.txt");
    let out = run(transparent(&policy, &["cat", missing.to_str().unwrap()]));
    assert!(
        text(&out.stderr).contains("No such file or directory"),
        "{}",
        text(&out.stderr)
    );
    let sub = t.join("tree/sub");
    same_as_root(&policy, &["grep", "-r", "bravo", sub.to_str().unwrap()]);
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
    // Every answer writes the usual audit line, marked as transparent.
    let out = run(transparent(
        &policy,
        &["cat", a.to_str().unwrap(), carved.to_str().unwrap()],
    ));
    let log = text(&out.stderr);
    let line = |result: &str| {
        log.lines().any(|l| {
            l.contains("fdbroker::audit")
                && l.contains(&format!("result=\"{result}\""))
                && l.ends_with("via=\"transparent\"")
        })
    };
    assert!(line("granted") && line("denied"), "{log}");
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

#[test]
fn transparent_program_gets_a_private_scratch_tmpdir_removed_afterwards() {
    let (_t, policy) = fixture();
    let script = "echo $TMPDIR; echo kept > $TMPDIR/f && cat $TMPDIR/f && mkdir $TMPDIR/d && \
                  stat -c %u $TMPDIR; echo no > /tmp/fdbroker-transparent-probe || echo refused";
    let out = run(transparent(&policy, &["sh", "-c", script]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert_eq!([lines[1], lines[3]], ["kept", "refused"], "{stdout}");
    assert!(TRANSIENT.contains(&lines[2].parse().unwrap()), "{stdout}");
    let dir = Path::new(lines[0]);
    assert!(dir.is_absolute() && dir.starts_with(std::env::temp_dir()));
    // Removed once fdbroker run has exited (by a process that waits for that).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while dir.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!dir.exists(), "{} was left behind", dir.display());
    assert!(!Path::new("/tmp/fdbroker-transparent-probe").exists());
}

/// A scanner with a signature database it reads through the broker, and temporary
/// files in its scratch directory: `clamscan` (Debian's `clamav`) with a local `.ndb`.
#[test]
fn transparent_clamscan_finds_the_infected_file_as_root_does() {
    if !Path::new("/usr/bin/clamscan").exists() {
        eprintln!("clamscan is not installed (scripts/test.sh installs clamav); skipped");
        return;
    }
    let (t, policy) = fixture();
    t.file("tree/scan/clean.txt", b"nothing to see\n", 0o600);
    t.file("tree/scan/bad.bin", b"xx FDBROKER-TEST-MARKER xx\n", 0o600);
    t.dir("tree/scan", 0o700);
    let sig: String = b"FDBROKER-TEST-MARKER"
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let db = t.file(
        "tree/test.ndb",
        format!("FdbrokerTest:0:*:{sig}\n").as_bytes(),
        0o600,
    );
    let scan = t.join("tree/scan");
    let command = [
        "/usr/bin/clamscan",
        "--no-summary",
        "-d",
        db.to_str().unwrap(),
        "-r",
        scan.to_str().unwrap(),
    ];
    let root = run(as_root(&command));
    assert_eq!(root.status.code(), Some(1), "{}", text(&root.stderr));
    let confined = run(transparent(&policy, &command));
    assert_eq!(
        confined.status.code(),
        Some(1),
        "{}",
        text(&confined.stderr)
    );
    let sorted = |b: &[u8]| {
        let mut l: Vec<String> = text(b).lines().map(str::to_owned).collect();
        l.sort();
        l
    };
    assert_eq!(sorted(&confined.stdout), sorted(&root.stdout));
    let out = text(&confined.stdout);
    assert!(
        out.contains("bad.bin: FdbrokerTest.UNOFFICIAL FOUND"),
        "{out}"
    );
    assert!(out.contains("clean.txt: OK"), "{out}");
}

/// `yara -r` with a local rule, scanning with several threads.
#[test]
fn transparent_yara_matches_as_root_does() {
    if !Path::new("/usr/bin/yara").exists() {
        eprintln!("yara is not installed (scripts/test.sh installs it); skipped");
        return;
    }
    let (t, policy) = fixture();
    t.file("tree/scan/clean.txt", b"nothing to see\n", 0o600);
    t.file(
        "tree/scan/deep/bad.bin",
        b"xx FDBROKER-TEST-MARKER xx\n",
        0o600,
    );
    t.dir("tree/scan/deep", 0o700);
    t.dir("tree/scan", 0o700);
    let rule = t.file(
        "tree/rule.yar",
        b"rule FdbrokerTest { strings: $a = \"FDBROKER-TEST-MARKER\" condition: $a }\n",
        0o600,
    );
    let scan = t.join("tree/scan");
    let command = [
        "/usr/bin/yara",
        "-r",
        "-p",
        "4",
        rule.to_str().unwrap(),
        scan.to_str().unwrap(),
    ];
    let root = run(as_root(&command));
    assert!(root.status.success(), "{}", text(&root.stderr));
    let confined = run(transparent(&policy, &command));
    assert!(confined.status.success(), "{}", text(&confined.stderr));
    assert_eq!(text(&confined.stdout), text(&root.stdout));
    assert!(text(&root.stdout).contains("FdbrokerTest"));
}

/// The supervisor killed: the program's calls cannot be answered any more, so it is
/// killed too, and `fdbroker run` ends with the supervisor's status.
#[test]
fn transparent_program_dies_with_its_supervisor() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let (t, policy) = fixture();
    let marker = format!("fdbroker-supervisor-death-{}", std::process::id());
    let script = format!(
        "import sys\nprint('started', flush=True)\nwhile True:\n    open({a:?}).read()\n# {marker}\n",
        a = t.join("tree/a.txt").to_str().unwrap()
    );
    let mut child = transparent(&policy, &[PYTHON, "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut supervisor = None;
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        if let Some(rest) = line.split("worker started pid=").nth(1) {
            supervisor = rest
                .split_whitespace()
                .next()
                .map(|p| p.parse::<i32>().unwrap());
            break;
        }
        line.clear();
    }
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert_eq!(first, "started\n");
    let supervisor = supervisor.expect("no 'worker started' line");
    // The supervisor is an ordinary client: the sandbox user, no capability, not
    // dumpable; the program is its child and runs as the same transient uid.
    let status = std::fs::read_to_string(format!("/proc/{supervisor}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    let uid = field("Uid:")[0].to_owned();
    assert!(TRANSIENT.contains(&uid.parse().unwrap()), "{status}");
    assert_eq!(field("Uid:"), [uid.as_str(); 4], "{status}");
    assert_eq!(field("Gid:"), [uid.as_str(); 4], "{status}");
    for caps in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        assert_eq!(field(caps), ["0000000000000000"], "{caps} {status}");
    }
    assert_eq!(field("NoNewPrivs:"), ["1"]);
    let children =
        std::fs::read_to_string(format!("/proc/{supervisor}/task/{supervisor}/children")).unwrap();
    let program: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    let program_status = std::fs::read_to_string(format!("/proc/{program}/status")).unwrap();
    assert!(
        program_status.contains(&format!("Uid:\t{0}\t{0}\t{0}\t{0}", uid)),
        "{program_status}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(supervisor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "fdbroker run did not end"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(128 + 9));
    // Nothing of the program is left.
    let left = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).contains(&marker))
        .count();
    assert_eq!(left, 0);
}

/// Signals arriving all the time during intercepted calls: every open still returns the
/// right file exactly once (a call answered is never re-run; no descriptor leaks), and a
/// program that exits with calls still pending ends cleanly.
#[test]
fn transparent_survives_signals_during_calls_and_exit_with_calls_pending() {
    let (t, policy) = fixture();
    let a = t.join("tree/sub/b.txt");
    let script = format!(
        r#"
import os, signal, threading
hits = [0]
def tick(signum, frame):
    hits[0] += 1
signal.signal(signal.SIGALRM, tick)
signal.siginterrupt(signal.SIGALRM, False)   # SA_RESTART
signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
highest = 0
for _ in range(1500):
    fd = os.open({a:?}, os.O_RDONLY)
    highest = max(highest, fd)
    assert os.read(fd, 100) == b"bravo bravo\n"
    os.close(fd)
signal.setitimer(signal.ITIMER_REAL, 0, 0)
print("ok", highest < 16, hits[0] > 0, flush=True)
def spin():
    while True:
        os.close(os.open({a:?}, os.O_RDONLY))
for _ in range(4):
    threading.Thread(target=spin, daemon=True).start()
os._exit(3)
"#,
        a = a.to_str().unwrap()
    );
    let out = run(transparent(&policy, &[PYTHON, "-c", &script]));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ok True True\n", "{}", text(&out.stderr));
}

/// An i386 system call (`int 0x80`) from x86_64 code kills the program: a 32-bit `open`
/// cannot slip past the filter.
#[cfg(target_arch = "x86_64")]
#[test]
fn transparent_i386_system_call_kills_the_program() {
    let (t, policy) = fixture();
    // mov eax, 5 (i386 open); mov ebx, path; xor ecx, ecx; int 0x80; ret
    let script = format!(
        r#"
import ctypes, mmap, struct
path = ctypes.create_string_buffer({a:?}.encode())
addr = ctypes.addressof(path)   # truncated to 32 bits: never used, the call is killed first
code = b"\xb8\x05\x00\x00\x00" + b"\xbb" + struct.pack("<I", addr & 0xffffffff) + b"\x31\xc9\xcd\x80\xc3"
buf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
buf.write(code)
fn = ctypes.CFUNCTYPE(ctypes.c_long)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))
print("returned", fn(), flush=True)
"#,
        a = t.join("tree/a.txt").to_str().unwrap()
    );
    let out = run(transparent(&policy, &[PYTHON, "-c", &script]));
    assert!(
        !text(&out.stdout).contains("returned"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        out.status.code(),
        Some(128 + libc::SIGSYS),
        "{}",
        text(&out.stderr)
    );
}

/// Where the policy grants `write` and `create`, a shell's redirections work through the
/// broker: `>` creates (then truncates), `>>` appends.
#[test]
fn transparent_writes_where_the_policy_grants_them() {
    let t = TempDir::new("transparent-write");
    t.dir("out", 0o700);
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
  path = "{dir}/out/"
  access = ["read", "write", "create", "directory"]
"#,
            dir = t.path().display()
        )
        .as_bytes(),
        0o644,
    );
    let f = t.join("out/report.txt");
    let script = format!(
        "echo one > {f}; echo two >> {f}; cat {f}; echo three > {f}",
        f = f.display()
    );
    let out = run(transparent(&policy, &["sh", "-c", &script]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "one\ntwo\n");
    assert_eq!(std::fs::read(&f).unwrap(), b"three\n");
}

/// Paths read from the program's memory end where the kernel's own reading would: a
/// name ending on the last byte of a mapping, one with no terminator before unmapped
/// memory (`EFAULT`), ones straddling a page boundary, and lengths around `PATH_MAX`
/// (4095 bytes and its terminator fit; 4096 is `ENAMETOOLONG` wherever the terminator
/// is). A stat result that runs into unmapped memory is `EFAULT`. Each call's result
/// is the one root gets.
#[test]
fn transparent_paths_end_where_the_kernel_ends_them() {
    let (t, policy) = fixture();
    let tree = t.join("tree");
    same_as_root(&policy, &[PYTHON, "-c", PATH_PROBE, tree.to_str().unwrap()]);
}

const PATH_PROBE: &str = r#"
import ctypes, mmap, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
SYS_openat, SYS_newfstatat, AT_FDCWD = 257, 262, -100
tree = sys.argv[1]
PAGE = mmap.PAGESIZE
# Two pages, the second inaccessible: whatever ends at the first's end is followed by
# unmapped memory.
m = mmap.mmap(-1, 2 * PAGE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
base = ctypes.addressof(ctypes.c_char.from_buffer(m))
assert libc.mprotect(base + PAGE, PAGE, 0) == 0
def at_end(data):
    m[PAGE - len(data):PAGE] = data
    return base + PAGE - len(data)
def openat(addr):
    fd = libc.syscall(SYS_openat, AT_FDCWD, ctypes.c_void_p(addr), os.O_RDONLY, 0)
    if fd < 0:
        return "E%d" % ctypes.get_errno()
    data = os.read(fd, 100)
    os.close(fd)
    return data.decode().strip()
def long_path(n):
    """An absolute path of exactly n bytes naming tree/a.txt."""
    head, tail = tree + "/", "a.txt"
    pad = n - len(head) - len(tail)
    p = head + "./" * (pad // 2) + ("/" if pad % 2 else "") + tail
    assert len(p) == n, (len(p), n)
    return p.encode()
a = (tree + "/a.txt").encode()
print("nul on the last byte", openat(at_end(a + b"\0")))
print("no nul before unmapped", openat(at_end(a)))
for n in [511, 512, 513, 1024, 4094, 4095, 4096, 4097, 5000]:
    p = long_path(n)
    keep = ctypes.create_string_buffer(p)
    print(n,
          "ending the page:", openat(at_end(p + b"\0")) if n < PAGE else "-",
          "unterminated:", openat(at_end(p)) if n <= PAGE else "-",
          "anywhere:", openat(ctypes.addressof(keep)))
    # NUL-terminated, straddling a page boundary at many offsets.
    buf = mmap.mmap(-1, 3 * PAGE)
    b0 = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    seen = set()
    for back in range(1, min(n, 1100), 37):
        buf[PAGE - back:PAGE - back + n + 1] = p + b"\0"
        seen.add(openat(b0 + PAGE - back))
    print(n, "straddling:", sorted(seen))
for room in [200, 144, 143, 1]:
    r = libc.syscall(SYS_newfstatat, AT_FDCWD, ctypes.c_char_p(a),
                     ctypes.c_void_p(base + PAGE - room), 0)
    print("stat with room", room, r if r >= 0 else "E%d" % ctypes.get_errno())
"#;

/// A tree only a descriptor could reach (issue 19, section 5): `vault` is root-only, the
/// granted `vault/tree` and its carve-out `keys` are searchable (0755), so a directory
/// descriptor for the tree, or for `sub` (`..`), would be a way into `keys`.
fn vault() -> (TempDir, PathBuf) {
    let t = TempDir::new("transparent-vault");
    t.file("vault/tree/a.txt", b"alpha\n", 0o644);
    t.file("vault/tree/sub/b.txt", b"bravo\n", 0o644);
    t.file(
        "vault/tree/keys/k.pem",
        b"a secret of exactly 37 bytes, really.",
        0o600,
    );
    std::os::unix::fs::symlink("target-only-in-keys", t.join("vault/tree/keys/link")).unwrap();
    t.dir("vault", 0o700);
    for d in ["vault/tree", "vault/tree/sub", "vault/tree/keys"] {
        t.dir(d, 0o755);
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
  path = "{dir}/vault/tree/"
  access = ["read", "directory"]
  [[client.deny]]
  path = "{dir}/vault/tree/keys/"
"#,
            dir = t.path().display()
        )
        .as_bytes(),
        0o644,
    );
    (t, policy)
}

/// What a program holding whatever directory descriptors it can get learns about the
/// carve-out: `os.stat`/`os.readlink` through each, and `newfstatat` with
/// `AT_EMPTY_PATH` and a non-empty path made straight to the kernel, through each
/// descriptor and from the working directory.
const PEEK: &str = r#"
import ctypes, os, sys
tree = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
NR = {"x86_64": 262, "aarch64": 79}[os.uname().machine]
AT_EMPTY_PATH, AT_SYMLINK_NOFOLLOW, AT_FDCWD = 0x1000, 0x100, -100
libc.syscall.restype = ctypes.c_long
def raw(fd, name):
    buf = ctypes.create_string_buffer(256)
    rc = libc.syscall(ctypes.c_long(NR), ctypes.c_int(fd), name.encode(), buf,
                      ctypes.c_int(AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW))
    if rc != 0:
        return "errno %d" % ctypes.get_errno()
    return "size %d" % int.from_bytes(buf.raw[48:56], "little")
def probe(label, fd, names):
    for name in names:
        try:
            r = "size %d" % os.stat(name, dir_fd=fd, follow_symlinks=False).st_size
        except OSError as e:
            r = "errno %d" % e.errno
        try:
            l = "target " + os.readlink(name, dir_fd=fd)
        except OSError as e:
            l = "errno %d" % e.errno
        print(label, name.replace("k.pem", "X").replace("missing", "X").replace("link", "X"),
              "stat", r, "raw", raw(fd, name), "readlink", l)
names = ["keys/k.pem", "keys/missing", "keys/link"]
up = ["../" + n for n in names]
for d in [tree, tree + "/sub"]:
    for flags in [os.O_RDONLY | os.O_DIRECTORY, os.O_PATH | os.O_DIRECTORY]:
        try:
            fd = os.open(d, flags)
        except OSError as e:
            print("OPEN", d, "errno", e.errno)
            continue
        probe("FD " + d, fd, names + up)
probe("CWD", AT_FDCWD, up)
"#;

#[test]
fn transparent_a_program_learns_nothing_of_a_carve_out_through_any_descriptor() {
    let (t, policy) = vault();
    let tree = t.join("vault/tree");
    let tree = tree.to_str().unwrap();
    let secret = t.join("vault/tree/keys/k.pem");
    let missing = t.join("vault/tree/keys/missing");

    // Real programs: `stat` answers the secret as it answers a missing name; `ls -l` and
    // `find` list the tree (through a stand-in holding the broker's listing) and never
    // show the carve-out.
    let stat = |p: &Path| {
        let out = run(transparent(
            &policy,
            &["stat", "-c", "%s %a %U", p.to_str().unwrap()],
        ));
        (
            out.status.code(),
            text(&out.stdout),
            text(&out.stderr).replace(p.to_str().unwrap(), "P"),
        )
    };
    let (s, m) = (stat(&secret), stat(&missing));
    assert_eq!((s.0, &s.1), (m.0, &m.1), "{s:?} {m:?}");
    assert!(s.0 != Some(0) && !s.1.contains("37"), "{s:?}");
    for command in [
        vec!["ls", "-laR", tree],
        vec!["find", tree, "-ls"],
        vec!["ls", "-la", &format!("{tree}/sub/..")],
    ] {
        let out = run(transparent(&policy, &command));
        let (o, e) = (text(&out.stdout), text(&out.stderr));
        assert!(
            !o.contains("keys") && !o.contains("k.pem") && !e.contains("k.pem"),
            "{command:?}: {o}\n{e}"
        );
        assert!(o.contains("sub"), "{command:?}: {o}\n{e}");
    }
    // What they print is the real tree's, as root sees it, less the carve-out.
    let out = run(transparent(
        &policy,
        &["find", tree, "-printf", "%P %s %m %U\n"],
    ));
    let mut listed: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    listed.sort();
    let root = run(as_root(&[
        "find",
        tree,
        "-path",
        "*/keys",
        "-prune",
        "-o",
        "-printf",
        "%P %s %m %U\n",
    ]));
    let mut want: Vec<String> = text(&root.stdout).lines().map(str::to_owned).collect();
    want.sort();
    assert_eq!(listed, want, "{}", text(&out.stderr));

    // The working directory is a directory handle too: the worker is not started where
    // its own lookups from it would reach the carve-out (`..` from `sub`).
    let mut cmd = transparent(&policy, &[PYTHON, "-c", PEEK, tree]);
    cmd.current_dir(t.join("vault/tree/sub"));
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("refusing to start the worker in")
            && text(&out.stdout).is_empty(),
        "{}",
        text(&out.stderr)
    );

    // A program that tries every descriptor it can hold, and its working directory.
    let mut cmd = transparent(&policy, &[PYTHON, "-c", PEEK, tree]);
    cmd.current_dir(t.path());
    let out = run(cmd);
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{o}\n{e}");
    assert!(
        !o.contains("size 37") && !o.contains("target-only-in-keys") && !o.contains("size 19"),
        "{o}"
    );
    // Each probe of the secret and of its link reads exactly as the probe of a missing
    // name next to it.
    let lines: Vec<&str> = o.lines().filter(|l| !l.starts_with("OPEN")).collect();
    for group in lines.chunks(3) {
        assert!(group.iter().all(|l| *l == group[0]), "{o}");
    }
}

/// Each thread of `pid`: its name and the slice the scheduler gives it (`se.slice` of
/// `/proc/PID/task/TID/sched`, in ns), where the kernel shows it.
fn slices(pid: u32) -> Vec<(String, Option<u64>)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .map(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            let sched = std::fs::read_to_string(t.path().join("sched")).unwrap_or_default();
            let slice = sched
                .lines()
                .find(|l| l.starts_with("se.slice"))
                .and_then(|l| l.split(':').nth(1))
                .and_then(|v| v.trim().parse().ok());
            (comm.trim().to_owned(), slice)
        })
        .collect()
}

/// Every process below `root` (by `PPid`), `root` included.
fn descendants(root: u32) -> Vec<u32> {
    let parent = |pid: u32| -> Option<u32> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|v| v.trim().parse().ok())
    };
    let all: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    let mut found = vec![root];
    loop {
        let more: Vec<u32> = all
            .iter()
            .copied()
            .filter(|p| !found.contains(p) && parent(*p).is_some_and(|pp| found.contains(&pp)))
            .collect();
        if more.is_empty() {
            return found;
        }
        found.extend(more);
    }
}

#[test]
fn transparent_relays_ask_for_short_slices_and_the_program_keeps_its_own() {
    // Linux 6.12 reads a fair task's requested slice; /proc shows it with SCHED_DEBUG.
    let own = slices(std::process::id());
    if own.first().and_then(|t| t.1).is_none() {
        eprintln!("skipped: this kernel does not show se.slice in /proc/PID/task/TID/sched");
        return;
    }
    let (_t, policy) = fixture();
    let mut child = transparent(&policy, &["sh", "-c", "exec sleep 60"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // The threads appear once the program runs: the sleep is the last to start.
    let seen = std::cell::RefCell::new(Vec::new());
    fdbroker_tests::wait_until(
        Duration::from_secs(30),
        || format!("the run's threads: {:?}", seen.borrow()),
        || {
            let now: Vec<_> = descendants(pid).into_iter().flat_map(slices).collect();
            let ready = now.iter().any(|t| t.0 == "sleep")
                && now.iter().any(|t| t.0.starts_with("answer-"));
            *seen.borrow_mut() = now;
            ready
        },
    );
    let threads = seen.into_inner();
    let broker = slices(pid);
    let _ = child.kill();
    let _ = child.wait();
    let slice_of = |name: &str| -> Vec<Option<u64>> {
        threads
            .iter()
            .filter(|t| t.0.starts_with(name))
            .map(|t| t.1)
            .collect()
    };
    // The supervisor's answering threads and the spawn broker's threads: 0.1 ms.
    let answering = slice_of("answer-");
    assert!(
        !answering.is_empty() && answering.iter().all(|s| *s == Some(100_000)),
        "{threads:?}"
    );
    assert!(
        broker.len() >= 2 && broker.iter().all(|t| t.1 == Some(100_000)),
        "{broker:?}"
    );
    // The program runs as it would without fdbroker: the slice this test runs with.
    assert_eq!(slice_of("sleep"), vec![own[0].1], "{threads:?}");
}
