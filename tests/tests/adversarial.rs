//! The adversarial suite: a hostile worker against a live broker, as root, with real
//! processes, sockets, links, mounts and devices. Every case asserts the specific
//! refusal *and* that the broker is still serving afterwards. `serve/basics.rs` covers the
//! basics (a sibling prefix, `..`, the first symlink and hard link, one flag); this
//! file covers what a determined attacker tries next.
#![allow(clippy::unwrap_used)]

use fdbroker_shared::Channel;
use fdbroker_shared::frame::{self, HEADER_LEN, Kind, MAX_MESSAGE};
use fdbroker_shared::wire::{
    Accepted, Access, FileKind, FileMeta, MAX_BATCH, OPEN_APPEND, OPEN_TRUNC, Reply, ReplyBody,
    Request, Welcome, WireError,
};
use fdbroker_tests::{Broker, TempDir, run_as_nobody, run_with_timeout, sibling_bin, text};
use fdbroker_tests::{
    assert_dropped, dev_ino, errno_of, eventually, hello_frame, many_frame, nobody_gid, nobody_uid,
    open_frame, path_dev_ino, raw_session, read_all, recv_reply, settled_fd_count,
};
use fdbroker_worker::Client;
use std::ffi::OsStr;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const POLICY: &str = r#"
[broker]
socket_mode = "0666"

[[client]]
name = "adv"
users = [0]

  [[client.allow]]
  path = "{dir}/in/"
  access = ["read", "directory"]

  [[client.allow]]
  path = "{dir}/conf/a.conf"

  [[client.allow]]
  path = "{dir}/conf/*.cfg"

  [[client.allow]]
  path = "{dir}/b/"
  symlinks = "beneath"

  [[client.allow]]
  path = "{dir}/w/"
  access = ["read", "write", "create"]

  [[client.allow]]
  path = "{dir}/wh/"
  access = ["read", "write"]
  hardlinks = true

  [[client.allow]]
  path = "{dir}/dev/"
  access = ["read", "write"]
  devices = true

  [[client.allow]]
  path = "{dir}/ro/"

  [[client.allow]]
  path = "{dir}/wo/"
  access = ["write"]
"#;

const SECRET: &[u8] = b"SECRET-IN\n";
const OUTSIDE: &[u8] = b"OUTSIDE\n";

fn fixture() -> (TempDir, Broker) {
    let t = TempDir::new("adv");
    t.file("in/secret.txt", SECRET, 0o600);
    t.file("in/sub/deep.txt", b"deep\n", 0o600);
    t.file("outside.txt", OUTSIDE, 0o644);
    t.file("outdir/f", OUTSIDE, 0o644);
    t.file("conf/a.conf", b"a", 0o644);
    t.file("conf/a.conf.bak", b"bak", 0o644);
    t.file("b/real.txt", b"real\n", 0o600);
    t.file("ro/file", b"read-only\n", 0o644);
    t.file("wo/file", b"write-only\n", 0o644);
    for d in ["w", "wh", "dev"] {
        t.dir(d, 0o755);
    }
    let b = Broker::start(&t, POLICY);
    (t, b)
}

fn still_serving(t: &TempDir, c: &Client) {
    assert_eq!(read_all(c.open(t.join("in/secret.txt")).unwrap()), SECRET);
}

fn bytes_path(b: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(b))
}

/// A pipe whose ends no concurrently spawned child inherits (other tests in this
/// process start brokers), so "EOF" really means "no write end left".
fn cloexec_pipe() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK).unwrap()
}

/// Whether the pipe reads EOF within a few seconds (a child forked by another test
/// may hold a close-on-exec copy until it execs).
fn reads_eof(r: &std::os::fd::OwnedFd) -> bool {
    eventually(Duration::from_secs(5), || {
        matches!(nix::unistd::read(r, &mut [0u8; 8]), Ok(0))
    })
}

fn fl(f: &impl AsFd) -> i32 {
    nix::fcntl::fcntl(f, nix::fcntl::FcntlArg::F_GETFL).unwrap()
}

// ---------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------

#[test]
fn unclean_paths_are_invalid_and_never_resolved() {
    let (t, b) = fixture();
    let c = b.client();
    let root = t.path().as_os_str().as_bytes().to_vec();
    let under = |s: &[u8]| [&root[..], s].concat();
    let mut too_long = under(b"/in/");
    too_long.resize(libc::PATH_MAX as usize + 1, b'a');
    let cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"in/secret.txt".to_vec(),
        b"./in".to_vec(),
        under(b"/in/secret.txt\0"),
        under(b"/in/sec\0ret.txt"),
        under(b"/in/secret.txt/."),
        under(b"/in/sub/.."),
        under(b"/in/./secret.txt"),
        under(b"/in/sub/../secret.txt"),
        under(b"/in/sub/../../outside.txt"),
        under(b"//in/secret.txt"),
        under(b"/in//secret.txt"),
        [b"/", &root[..], b"/in/secret.txt"].concat(),
        under(b"/in/sub/"),
        under(b"/in/"),
        too_long,
    ];
    for p in &cases {
        let e = c.open(bytes_path(p)).unwrap_err();
        assert_eq!(errno_of(&e), libc::EINVAL, "{}: {e}", p.escape_ascii());
    }
    // The longest path the lexical check accepts (PATH_MAX - 1 bytes) reaches the
    // kernel, which answers for this missing file with ENOENT.
    let mut longest = under(b"/in");
    while longest.len() < libc::PATH_MAX as usize - 1 {
        longest.push(b'/');
        let room = (libc::PATH_MAX as usize - 1 - longest.len()).min(200);
        longest.extend(std::iter::repeat_n(b'x', room.max(1)));
    }
    longest.truncate(libc::PATH_MAX as usize - 1);
    if longest.last() == Some(&b'/') {
        longest.pop();
        longest.push(b'y');
    }
    assert_eq!(longest.len(), 4095);
    let e = c.open(bytes_path(&longest)).unwrap_err();
    assert_eq!(errno_of(&e), libc::ENOENT, "{e}");
    // Siblings that share a string prefix with a rule get nothing.
    for p in ["conf/a.conf.bak", "conf/a.con", "in.txt", "inx/secret.txt"] {
        let e = c.open(t.join(p)).unwrap_err();
        assert_eq!(errno_of(&e), libc::EACCES, "{p}: {e}");
    }
    still_serving(&t, &c);
    assert!(b.log().contains("invalid path"), "{}", b.log());
}

#[test]
fn non_utf8_names_are_plain_bytes_end_to_end() {
    let (t, b) = fixture();
    let c = b.client();
    let dir = t.path().as_os_str().as_bytes();
    // A name with invalid UTF-8, a newline and an escape sequence, inside the policy.
    let name = b"/in/\xff\xfe\nINFO forged\x1b[2J.bin";
    let inside = bytes_path(&[dir, &name[..]].concat());
    std::fs::write(&inside, b"bytes\n").unwrap();
    assert_eq!(read_all(c.open(&inside).unwrap()), b"bytes\n");
    // A glob matches non-UTF-8 bytes like any other within a component.
    let cfg = bytes_path(&[dir, &b"/conf/\xc3\x28.cfg"[..]].concat());
    std::fs::write(&cfg, b"cfg").unwrap();
    assert_eq!(read_all(c.open(&cfg).unwrap()), b"cfg");
    // Outside: the same uniform refusal as for any name, existing or not.
    let outside = bytes_path(&[dir, &b"/\xff\xfe.txt"[..]].concat());
    std::fs::write(&outside, b"x").unwrap();
    let e1 = c.open(&outside).unwrap_err();
    let e2 = c
        .open(bytes_path(&[dir, &b"/\xff\xfd.txt"[..]].concat()))
        .unwrap_err();
    assert_eq!(errno_of(&e1), libc::EACCES);
    assert_eq!(e1.to_string(), e2.to_string());
    still_serving(&t, &c);
    // The audit line is escaped: the newline cannot start a forged line.
    let log = b.log();
    assert!(log.contains(r"\xff\xfe\x0aINFO forged\x1b[2J.bin"), "{log}");
    assert!(!log.lines().any(|l| l.starts_with("INFO forged")), "{log}");
}

// ---------------------------------------------------------------------------------
// Symlinks
// ---------------------------------------------------------------------------------

#[test]
fn symlink_chains_and_proc_magic_links_are_refused() {
    let (t, b) = fixture();
    let c = b.client();
    let fd_target = format!("/proc/self/fd/{}", 0);
    let links: &[(&str, &str)] = &[
        ("in/c1", "c2"),
        ("in/c2", "c3"),
        ("in/c3", "secret.txt"),
        ("in/fd0", &fd_target),
        ("in/cwd", "/proc/self/cwd"),
        ("in/root", "/proc/self/root"),
        ("in/proc", "/proc"),
        ("b/c1", "c2"),
        ("b/c2", "sub/../real.txt"),
        ("b/up", "../outside.txt"),
        ("b/abs", "/etc/passwd"),
        ("b/abs-in", ""), // filled below: an absolute link back into b/
        ("b/fd0", &fd_target),
        ("b/cwd", "/proc/self/cwd"),
        ("b/root", "/proc/self/root"),
        ("b/loop1", "loop2"),
        ("b/loop2", "loop1"),
    ];
    t.dir("b/sub", 0o755);
    for (link, target) in links {
        let target = if *link == "b/abs-in" {
            t.join("b/real.txt").to_str().unwrap().to_owned()
        } else {
            (*target).to_owned()
        };
        symlink(target, t.join(link)).unwrap();
    }
    // symlinks = "none": any link on the way is refused, even one that stays inside.
    for p in [
        "in/c1",
        "in/c3",
        "in/fd0",
        "in/cwd/etc/passwd",
        "in/root/etc/passwd",
        "in/proc/self/root/etc/passwd",
        "in/proc/1/environ",
    ] {
        let e = c.open(t.join(p)).unwrap_err();
        assert_eq!(errno_of(&e), libc::EACCES, "{p}: {e}");
    }
    // symlinks = "beneath": a chain that stays inside works (even through `..`
    // inside the link text), anything leaving the root or magic is refused.
    assert_eq!(read_all(c.open(t.join("b/c1")).unwrap()), b"real\n");
    for p in [
        "b/up",
        "b/abs",
        "b/abs-in",
        "b/fd0",
        "b/cwd/etc/passwd",
        "b/root/etc/passwd",
    ] {
        let e = c.open(t.join(p)).unwrap_err();
        assert_eq!(errno_of(&e), libc::EACCES, "{p}: {e}");
    }
    let e = c.open(t.join("b/loop1")).unwrap_err();
    assert_eq!(errno_of(&e), libc::ELOOP, "{e}");
    still_serving(&t, &c);
}

/// An operator who grants `/proc/` itself still never hands out the broker's magic
/// links: `/proc/self` is a symlink and `root`, `cwd`, `exe`, `fd/N` are magic.
#[test]
fn a_proc_rule_does_not_expose_the_brokers_magic_links() {
    let t = TempDir::new("proc");
    let b = Broker::start(
        &t,
        "[[client]]\nname = \"p\"\nusers = [0]\n[[client.allow]]\npath = \"/proc/\"\n\
         access = [\"read\", \"directory\"]\n",
    );
    let c = b.client();
    let pid = b.pid();
    for p in [
        "/proc/self/status".to_owned(),
        "/proc/thread-self/status".to_owned(),
        format!("/proc/{pid}/root/etc/passwd"),
        format!("/proc/{pid}/cwd"),
        format!("/proc/{pid}/exe"),
        format!("/proc/{pid}/fd/0"),
        format!("/proc/{pid}/fd/2"),
        format!("/proc/{pid}/task/{pid}/root/etc/passwd"),
        format!("/proc/{pid}/map_files"),
    ] {
        let e = c.open(&p).unwrap_err();
        assert!(
            matches!(errno_of(&e), libc::EACCES | libc::EISDIR),
            "{p}: {e}"
        );
    }
    // The same file reached without a magic link is what the rule grants.
    let status = read_all(c.open(format!("/proc/{pid}/status")).unwrap());
    assert!(String::from_utf8_lossy(&status).contains("fdbroker"));
}

/// A thread swaps a directory and a symlink to an outside directory thousands of
/// times (`renameat2(RENAME_EXCHANGE)`, atomic) while requests go for a file under
/// that name. Under either symlink setting, no descriptor may ever name the outside
/// file: checked by device and inode on every descriptor received. Run with the
/// broker confined (Landlock would also stop the escape) and unconfined (so the
/// `openat2` resolution is what is tested).
#[test]
fn racing_a_directory_with_an_outside_symlink_never_leaks() {
    for confine in [false, true] {
        race_directory_and_symlink(confine);
    }
}

fn race_directory_and_symlink(confine: bool) {
    let t = TempDir::new("race");
    t.file("none/d/f", b"INSIDE", 0o600);
    t.file("beneath/d/f", b"INSIDE", 0o600);
    t.file("out/f", OUTSIDE, 0o600);
    symlink(t.join("out"), t.join("none/l")).unwrap();
    symlink("../out", t.join("beneath/l")).unwrap();
    let b = Broker::start(
        &t,
        &format!(
            "[broker]\nconfine = {confine}\n\
             [[client]]\nname = \"r\"\nusers = [0]\n\
             [[client.allow]]\npath = \"{{dir}}/none/\"\n\
             [[client.allow]]\npath = \"{{dir}}/beneath/\"\nsymlinks = \"beneath\"\n"
        ),
    );
    let outside = path_dev_ino(&t.join("out/f"));
    for variant in ["none", "beneath"] {
        let variant = &*format!("{variant} (confine = {confine})");
        let dir = variant.split(' ').next().unwrap();
        let inside = path_dev_ino(&t.join(&format!("{dir}/d/f")));
        let (d, l) = (t.join(&format!("{dir}/d")), t.join(&format!("{dir}/l")));
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicU64::new(0));
        let swapper = {
            let (stop, swaps) = (Arc::clone(&stop), Arc::clone(&swaps));
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(20);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    nix::fcntl::renameat2(
                        nix::fcntl::AT_FDCWD,
                        &d,
                        nix::fcntl::AT_FDCWD,
                        &l,
                        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                    )
                    .unwrap();
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let c = b.client();
        let target = t.join(&format!("{dir}/d/f"));
        let batch = vec![target; 32];
        let (mut granted, mut refused) = (0u32, 0u32);
        let started = Instant::now();
        while (swaps.load(Ordering::Relaxed) < 10_000 || granted < 500 || refused < 500)
            && started.elapsed() < Duration::from_secs(15)
        {
            for r in c.open_many(&batch).unwrap() {
                match r {
                    Ok(f) => {
                        let got = dev_ino(&f);
                        assert_ne!(got, outside, "{variant}: a descriptor to the outside file");
                        assert_eq!(got, inside, "{variant}: an unexpected file");
                        granted += 1;
                    }
                    Err(e) => {
                        // The link (refused) or a name caught mid-swap.
                        assert!(
                            matches!(
                                errno_of(&e),
                                libc::EACCES | libc::ENOENT | libc::EAGAIN | libc::ENOTDIR
                            ),
                            "{variant}: {e}"
                        );
                        refused += 1;
                    }
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap();
        let n = swaps.load(Ordering::Relaxed);
        eprintln!("{variant}: {n} swaps, {granted} granted, {refused} refused");
        assert!(
            n >= 10_000 && granted >= 500 && refused >= 500,
            "{variant}: the race did not interleave: {n} swaps, {granted} granted, {refused} refused"
        );
    }
}

// ---------------------------------------------------------------------------------
// Hard links, mounts, special files
// ---------------------------------------------------------------------------------

/// A hard link planted in a writable tree names a file the rule must not touch.
/// Asking to truncate it must be refused *before* anything is truncated: the broker
/// checks the file it opened, so the open itself must have no side effect.
#[test]
fn truncating_a_planted_hard_link_is_refused_before_it_truncates() {
    let (t, b) = fixture();
    let c = b.client();
    let precious = t.file("precious.txt", b"PRECIOUS DATA\n", 0o600);
    std::fs::hard_link(&precious, t.join("w/link")).unwrap();
    for (access, flags) in [
        (Access::Write, OPEN_TRUNC),
        (Access::ReadWrite, OPEN_TRUNC),
        (Access::Write, OPEN_TRUNC | OPEN_APPEND),
        (Access::Write, 0),
        (Access::Write, OPEN_APPEND),
    ] {
        let e = c
            .open_detailed(t.join("w/link"), access, flags)
            .unwrap_err();
        assert_eq!(errno_of(&e), libc::EACCES, "{access} {flags:#x}: {e}");
        assert_eq!(
            std::fs::read(&precious).unwrap(),
            b"PRECIOUS DATA\n",
            "{access} {flags:#x} modified a file it refused"
        );
    }
    // Truncation still works where it is granted, on a plain file ...
    std::fs::write(t.join("w/plain"), b"old contents").unwrap();
    let mut f = c
        .open_detailed(t.join("w/plain"), Access::Write, OPEN_TRUNC)
        .unwrap();
    assert_eq!(f.meta.size, 0, "metadata describes the truncated file");
    f.file.write_all(b"new").unwrap();
    assert_eq!(std::fs::read(t.join("w/plain")).unwrap(), b"new");
    // ... and on a hard-linked one where the rule allows hard links.
    let shared = t.file("shared.txt", b"shared data", 0o600);
    std::fs::hard_link(&shared, t.join("wh/link")).unwrap();
    let o = c
        .open_detailed(t.join("wh/link"), Access::ReadWrite, OPEN_TRUNC)
        .unwrap();
    assert_eq!((o.meta.nlink, o.meta.size), (2, 0));
    assert_eq!(fl(&o.file) & libc::O_ACCMODE, libc::O_RDWR);
    assert_eq!(std::fs::read(&shared).unwrap(), b"");
    // Truncate on a FIFO is no truncation, and a FIFO is not a regular file.
    nix::unistd::mkfifo(
        &t.join("w/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let e = c
        .open_detailed(t.join("w/fifo"), Access::ReadWrite, OPEN_TRUNC)
        .unwrap_err();
    assert_eq!(errno_of(&e), libc::EACCES, "{e}");
    still_serving(&t, &c);
}

#[test]
fn hard_links_are_refused_unless_the_rule_allows_them() {
    let (t, b) = fixture();
    let c = b.client();
    std::fs::hard_link(t.join("outside.txt"), t.join("in/planted")).unwrap();
    std::fs::hard_link(t.join("outside.txt"), t.join("wh/planted")).unwrap();
    let e = c.open(t.join("in/planted")).unwrap_err();
    assert_eq!(errno_of(&e), libc::EACCES);
    assert!(e.to_string().contains("hard link"), "{e}");
    // In the hard-link tree the same file is served: the rule says so.
    let o = c
        .open_detailed(t.join("wh/planted"), Access::Read, 0)
        .unwrap();
    assert_eq!(o.meta.nlink, 3);
    assert_eq!(read_all(o.file), OUTSIDE);
    // Once the extra link is gone the original is an ordinary file again.
    std::fs::remove_file(t.join("wh/planted")).unwrap();
    std::fs::remove_file(t.join("outside.txt")).unwrap();
    assert_eq!(read_all(c.open(t.join("in/planted")).unwrap()), OUTSIDE);
}

/// Mount points under a root. The choice: a mount the operator made under a root
/// is part of that tree and is crossed (bind mounts included), unless the rule says
/// `same_filesystem = true`, which adds `RESOLVE_NO_XDEV` and refuses both a tmpfs
/// and a bind mount of an outside directory. The mounts live in a private mount
/// namespace that only the broker sees, so nothing leaks onto the host.
#[test]
fn mounts_under_a_root_are_crossed_only_without_same_filesystem() {
    let t = TempDir::new("mounts");
    t.file("outdir/secret", OUTSIDE, 0o600);
    for d in ["x/tmp", "x/bind", "s/tmp", "s/bind"] {
        t.dir(d, 0o755);
    }
    t.file("s/plain", b"plain", 0o600);
    let dir = t.path().to_str().unwrap();
    let prelude = format!(
        "set -e\n\
         for r in x s; do\n\
           mount -t tmpfs -o size=1m tmpfs '{dir}'/$r/tmp\n\
           printf tmpfs > '{dir}'/$r/tmp/f\n\
           mount --bind '{dir}'/outdir '{dir}'/$r/bind\n\
         done"
    );
    let b = Broker::start_wrapped(
        &t,
        "[[client]]\nname = \"m\"\nusers = [0]\n\
         [[client.allow]]\npath = \"{dir}/x/\"\n\
         [[client.allow]]\npath = \"{dir}/s/\"\nsame_filesystem = true\n",
        &["unshare", "-m", "--propagation", "private"],
        &prelude,
    );
    let c = b.client();
    // The test process is outside the namespace: its view has no mounts.
    assert!(!t.join("x/tmp/f").exists());
    assert_eq!(read_all(c.open(t.join("x/tmp/f")).unwrap()), b"tmpfs");
    assert_eq!(read_all(c.open(t.join("x/bind/secret")).unwrap()), OUTSIDE);
    for p in ["s/tmp/f", "s/bind/secret"] {
        let e = c.open(t.join(p)).unwrap_err();
        assert_eq!(errno_of(&e), libc::EACCES, "{p}: {e}");
        assert!(e.to_string().contains("filesystem"), "{p}: {e}");
    }
    assert_eq!(read_all(c.open(t.join("s/plain")).unwrap()), b"plain");
}

#[test]
fn special_files_are_typed_after_opening_and_never_block() {
    let (t, b) = fixture();
    let c = b.client();
    let mode = nix::sys::stat::Mode::from_bits_truncate(0o600);
    for d in ["in", "dev"] {
        nix::unistd::mkfifo(&t.join(&format!("{d}/fifo")), mode).unwrap();
        nix::sys::stat::mknod(
            &t.join(&format!("{d}/null")),
            nix::sys::stat::SFlag::S_IFCHR,
            mode,
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        nix::sys::stat::mknod(
            &t.join(&format!("{d}/loop0")),
            nix::sys::stat::SFlag::S_IFBLK,
            mode,
            nix::sys::stat::makedev(7, 0),
        )
        .unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(t.join(&format!("{d}/sock")));
    }
    let start = Instant::now();
    // Without `devices`: refused by type, after a non-blocking open.
    for p in ["in/fifo", "in/null", "in/loop0"] {
        let e = c.open(t.join(p)).unwrap_err();
        assert_eq!(errno_of(&e), libc::EACCES, "{p}: {e}");
    }
    // A socket file cannot be opened at all (the kernel says ENXIO), granted or not.
    for p in ["in/sock", "dev/sock"] {
        let e = c.open(t.join(p)).unwrap_err();
        assert_eq!(errno_of(&e), libc::ENXIO, "{p}: {e}");
    }
    // With `devices = true`: the descriptor comes back, typed, non-blocking.
    let kinds = [
        ("dev/fifo", FileKind::Fifo),
        ("dev/null", FileKind::CharDevice),
        ("dev/loop0", FileKind::BlockDevice),
    ];
    for (p, kind) in kinds {
        let o = c.open_detailed(t.join(p), Access::Read, 0).unwrap();
        assert_eq!(o.meta.kind, kind, "{p}");
        assert_ne!(fl(&o.file) & libc::O_NONBLOCK, 0, "{p}");
    }
    // Opening a FIFO for writing with no reader fails at once instead of blocking.
    let e = c.open_with(t.join("dev/fifo"), Access::Write).unwrap_err();
    assert_eq!(errno_of(&e), libc::ENXIO, "{e}");
    assert!(start.elapsed() < Duration::from_secs(5));
    // Directories: not a file without `directory`; `directory` on a file is ENOTDIR;
    // `directory` where the rule does not grant it is a policy refusal.
    assert_eq!(
        errno_of(&c.open(t.join("in/sub")).unwrap_err()),
        libc::EISDIR
    );
    let e = c
        .open_with(t.join("in/secret.txt"), Access::Directory)
        .unwrap_err();
    assert_eq!(errno_of(&e), libc::ENOTDIR);
    let e = c.open_with(t.join("ro"), Access::Directory).unwrap_err();
    assert_eq!(errno_of(&e), libc::EACCES);
    let d = c.open_with(t.join("in"), Access::Directory).unwrap();
    assert_eq!(fl(&d) & libc::O_ACCMODE, libc::O_RDONLY);
    still_serving(&t, &c);
}

// ---------------------------------------------------------------------------------
// Access
// ---------------------------------------------------------------------------------

#[test]
fn every_open_flag_bit_is_refused_on_a_read_only_rule() {
    let (t, b) = fixture();
    let c = b.client();
    let file = t.join("ro/file");
    let named = [
        ("O_PATH", libc::O_PATH),
        ("O_TMPFILE", libc::O_TMPFILE),
        ("O_ASYNC", libc::O_ASYNC),
        ("O_TRUNC", libc::O_TRUNC),
        ("O_CREAT", libc::O_CREAT),
        ("O_EXCL", libc::O_EXCL),
        ("O_DIRECTORY", libc::O_DIRECTORY),
        ("O_NOFOLLOW", libc::O_NOFOLLOW),
        ("O_WRONLY", libc::O_WRONLY),
        ("O_RDWR", libc::O_RDWR),
        ("O_APPEND", libc::O_APPEND),
        ("O_DIRECT", libc::O_DIRECT),
        ("O_NOATIME", libc::O_NOATIME),
        ("O_SYNC", libc::O_SYNC),
        ("all", -1),
    ];
    let bits = (0..32).map(|i| (format!("bit {i}"), 1u32 << i));
    for (name, flags) in named
        .iter()
        .map(|(n, f)| (n.to_string(), *f as u32))
        .chain(bits)
    {
        let e = c.open_detailed(&file, Access::Read, flags).unwrap_err();
        assert_eq!(errno_of(&e), libc::EINVAL, "read + {name}: {e}");
        // As a write the flag is either not allowed at all (EINVAL) or a write the
        // rule does not grant (EACCES): never an open.
        let e = c.open_detailed(&file, Access::Write, flags).unwrap_err();
        let want = if flags & !(OPEN_TRUNC | OPEN_APPEND) == 0 {
            libc::EACCES
        } else {
            libc::EINVAL
        };
        assert_eq!(errno_of(&e), want, "write + {name}: {e}");
    }
    // Every access but read is refused, and nothing is created or changed.
    for access in [
        Access::Write,
        Access::ReadWrite,
        Access::Create,
        Access::Directory,
    ] {
        let e = c.open_with(&file, access).unwrap_err();
        assert_eq!(errno_of(&e), libc::EACCES, "{access}: {e}");
        let e = c.open_with(t.join("ro/new"), access).unwrap_err();
        assert_eq!(errno_of(&e), libc::EACCES, "{access}: {e}");
    }
    assert!(!t.join("ro/new").exists());
    assert_eq!(std::fs::read(&file).unwrap(), b"read-only\n");
    // The grant: exactly O_RDONLY, and a write through it is EBADF.
    let mut f = c.open(&file).unwrap();
    assert_eq!(fl(&f) & libc::O_ACCMODE, libc::O_RDONLY);
    assert_eq!(fl(&f) & (libc::O_APPEND | libc::O_TRUNC | libc::O_ASYNC), 0);
    assert_eq!(f.write(b"x").unwrap_err().raw_os_error(), Some(libc::EBADF));
    still_serving(&t, &c);
}

#[test]
fn each_grant_is_exactly_its_access_mode() {
    let (t, b) = fixture();
    let c = b.client();
    // A write-only rule: write works, read-write does not (it needs both).
    let e = c
        .open_with(t.join("wo/file"), Access::ReadWrite)
        .unwrap_err();
    assert_eq!(errno_of(&e), libc::EACCES);
    let e = c.open(t.join("wo/file")).unwrap_err();
    assert_eq!(errno_of(&e), libc::EACCES);
    let mut w = c
        .open_detailed(t.join("wo/file"), Access::Write, OPEN_APPEND)
        .unwrap()
        .file;
    assert_eq!(fl(&w) & libc::O_ACCMODE, libc::O_WRONLY);
    assert_ne!(fl(&w) & libc::O_APPEND, 0);
    let mut buf = [0u8; 4];
    assert_eq!(
        w.read(&mut buf).unwrap_err().raw_os_error(),
        Some(libc::EBADF)
    );
    w.write_all(b"more\n").unwrap();
    assert_eq!(
        std::fs::read(t.join("wo/file")).unwrap(),
        b"write-only\nmore\n"
    );
    // Create on an existing file: EEXIST, contents untouched.
    std::fs::write(t.join("w/exists"), b"keep").unwrap();
    let e = c.open_with(t.join("w/exists"), Access::Create).unwrap_err();
    assert_eq!(errno_of(&e), libc::EEXIST);
    assert_eq!(std::fs::read(t.join("w/exists")).unwrap(), b"keep");
    // Create through a symlinked parent is a symlink on the way: refused.
    symlink(t.join("outdir"), t.join("w/linkdir")).unwrap();
    let e = c
        .open_with(t.join("w/linkdir/new"), Access::Create)
        .unwrap_err();
    assert_eq!(errno_of(&e), libc::EACCES);
    assert!(!t.join("outdir/new").exists());
    still_serving(&t, &c);
}

/// Created files get the rule's mode exactly, whatever umask the broker runs with.
#[test]
fn created_files_get_the_fixed_mode_whatever_the_umask() {
    let t = TempDir::new("umask");
    t.dir("default", 0o755);
    t.dir("shared", 0o755);
    let policy = "[[client]]\nname = \"u\"\nusers = [0]\n\
         [[client.allow]]\npath = \"{dir}/default/\"\naccess = [\"create\"]\n\
         [[client.allow]]\npath = \"{dir}/shared/\"\naccess = [\"create\"]\nmode = \"0644\"\n";
    for (umask, tag) in [("077", "tight"), ("000", "open")] {
        let b = Broker::start_wrapped(&t, policy, &[], &format!("umask {umask}"));
        let c = b.client();
        let status = std::fs::read_to_string(format!("/proc/{}/status", b.pid())).unwrap();
        assert!(
            status.contains(&format!("Umask:\t0{umask}")),
            "the broker runs with umask {umask}: {status}"
        );
        for (dir, want) in [("default", 0o600), ("shared", 0o644)] {
            let p = t.join(&format!("{dir}/{tag}"));
            let o = c.open_detailed(&p, Access::Create, 0).unwrap();
            assert_eq!(fl(&o.file) & libc::O_ACCMODE, libc::O_WRONLY);
            let meta = std::fs::metadata(&p).unwrap();
            assert_eq!(
                meta.permissions().mode() & 0o7777,
                want,
                "{dir} under umask {umask}"
            );
            assert_eq!((meta.uid(), meta.len()), (0, 0));
        }
    }
}

/// Files a rule creates belong to the rule's `owner` and `group` (set before the
/// descriptor is passed, with the mode applied after), or else to the broker's user.
#[test]
fn created_files_get_the_rules_owner_and_group() {
    let t = TempDir::new("owner");
    t.dir("owned", 0o755);
    t.dir("plain", 0o755);
    let policy = format!(
        "[[client]]\nname = \"u\"\nusers = [0]\n\
         [[client.allow]]\npath = \"{{dir}}/owned/\"\naccess = [\"create\"]\n\
         owner = \"nobody\"\ngroup = {}\nmode = \"0640\"\n\
         [[client.allow]]\npath = \"{{dir}}/plain/\"\naccess = [\"create\"]\n",
        nobody_gid()
    );
    let b = Broker::start(&t, &policy);
    let c = b.client();
    for (dir, owner, group, mode) in [
        ("owned", nobody_uid(), nobody_gid(), 0o640),
        ("plain", 0, 0, 0o600),
    ] {
        let p = t.join(&format!("{dir}/new"));
        let o = c
            .open_detailed(&p, Access::Create, 0)
            .unwrap_or_else(|e| panic!("{e}\n{}", b.log()));
        // Already so when the descriptor arrives.
        let meta = o.file.metadata().unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.permissions().mode() & 0o7777),
            (owner, group, mode),
            "{dir}"
        );
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", b.pid())).unwrap();
    // CAP_CHOWN (bit 0) and CAP_DAC_OVERRIDE (1) for creating, CAP_DAC_READ_SEARCH (2).
    assert!(status.contains("CapEff:\t0000000000000007"), "{status}");
}

/// A broker started without a capability its policy needs says which one, and how to
/// grant it, instead of failing on a bare `capset` error.
#[test]
fn a_broker_without_a_needed_capability_names_it() {
    let t = TempDir::new("nocap");
    t.dir("w", 0o777);
    let dir = TempDir::new("nocap-broker");
    std::os::unix::fs::chown(dir.path(), Some(992), Some(992)).unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[[client]]\nname = \"u\"\nusers = [0]\n[[client.allow]]\npath = \"{}/w/\"\n\
             access = [\"create\"]\n",
            t.path().display()
        ),
    )
    .unwrap();
    let out = run_with_timeout(
        Command::new("setpriv")
            .args([
                "--reuid=992",
                "--regid=992",
                "--clear-groups",
                "--inh-caps=-all,+dac_read_search",
                "--ambient-caps=+dac_read_search",
                "--bounding-set=-all,+dac_read_search",
            ])
            .arg(fdbroker_tests::fdbroker_bin())
            .args(["serve", "--policy"])
            .arg(&policy)
            .arg("--socket")
            .arg(dir.join("s.sock")),
        Duration::from_secs(20),
    );
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("the policy needs CAP_DAC_OVERRIDE")
            && err.contains("AmbientCapabilities=CAP_DAC_READ_SEARCH CAP_DAC_OVERRIDE"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------
// Protocol
// ---------------------------------------------------------------------------------

/// Each malformed message on its own connection: that connection is dropped, the
/// broker keeps serving, and it holds no more descriptors than before.
#[test]
fn malformed_messages_drop_only_their_connection() {
    let (t, b) = fixture();
    let good = b.client();
    still_serving(&t, &good);
    let base = settled_fd_count(b.pid());
    let secret = t.join("in/secret.txt");
    let secret = secret.as_os_str().as_bytes();
    let valid = open_frame(1, secret, Access::Read, 0);
    let with_header = |version: u16, kind: u16, declared: u32, body: &[u8]| {
        let mut f = b"FDBK".to_vec();
        f.extend_from_slice(&version.to_le_bytes());
        f.extend_from_slice(&kind.to_le_bytes());
        f.extend_from_slice(&declared.to_le_bytes());
        f.extend_from_slice(body);
        f
    };
    let body = &valid[HEADER_LEN..];
    let blen = body.len() as u32;
    let patched = |at: usize, bytes: &[u8]| {
        let mut f = valid.clone();
        f[at..at + bytes.len()].copy_from_slice(bytes);
        f
    };
    // Offsets in an Open request body: id 0..8, Op tag 8..12, path length 12..20.
    let path_len_at = HEADER_LEN + 12;
    let access_at = HEADER_LEN + 20 + secret.len();
    let mut trailing = valid.clone();
    trailing.push(0);
    let tl = (trailing.len() - HEADER_LEN) as u32;
    trailing[8..12].copy_from_slice(&tl.to_le_bytes());
    let welcome = {
        let mut buf = Vec::new();
        let w = Welcome::Accepted(Accepted {
            client: "x".into(),
            max_batch: 1,
        });
        frame::encode(Kind::Welcome, &w, &mut buf).unwrap();
        buf
    };
    let reply = {
        let mut buf = Vec::new();
        let r = Reply {
            id: 1,
            body: ReplyBody::Refused(WireError::new(1, "x")),
        };
        frame::encode(Kind::Reply, &r, &mut buf).unwrap();
        buf
    };
    let too_many = many_frame(2, vec![secret.to_vec(); MAX_BATCH + 1]);
    let mid_session: Vec<(&str, Vec<u8>)> = vec![
        ("empty message", vec![]),
        ("truncated header", valid[..5].to_vec()),
        ("header only", valid[..HEADER_LEN].to_vec()),
        ("bad magic", patched(0, b"FDBX")),
        ("version 2", with_header(2, 3, blen, body)),
        ("version 0", with_header(0, 3, blen, body)),
        ("kind hello", hello_frame()),
        ("kind welcome", welcome.clone()),
        ("kind reply", reply),
        ("kind 0", with_header(1, 0, blen, body)),
        ("kind 99", with_header(1, 99, blen, body)),
        ("declared u32::MAX", with_header(1, 3, u32::MAX, body)),
        ("declared 0", with_header(1, 3, 0, body)),
        ("declared one more", with_header(1, 3, blen + 1, body)),
        ("declared one less", with_header(1, 3, blen - 1, body)),
        (
            "path length u64::MAX",
            patched(path_len_at, &u64::MAX.to_le_bytes()),
        ),
        (
            "path length past the end",
            patched(path_len_at, &4096u64.to_le_bytes()),
        ),
        ("unknown op", patched(HEADER_LEN + 8, &7u32.to_le_bytes())),
        ("unknown access", patched(access_at, &9u32.to_le_bytes())),
        ("trailing byte", trailing),
        ("batch over the protocol cap", too_many),
        ("over the cap", vec![b'F'; MAX_MESSAGE + 1]),
    ];
    for (what, bytes) in &mid_session {
        let ch = raw_session(&b.socket, "adversary");
        ch.send(bytes).unwrap();
        assert_dropped(&ch, what);
    }
    // Before the hello: anything but a hello is a violation too.
    for (what, bytes) in [
        ("request first", valid.clone()),
        ("welcome first", welcome),
        ("garbage first", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
    ] {
        let ch = Channel::connect(&b.socket).unwrap();
        ch.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        ch.send(&bytes).unwrap();
        assert_dropped(&ch, what);
    }
    // The largest frame the cap allows is read and answered (its path is too long
    // to be valid, which is a reply, not a violation); the cap itself is exact.
    let ch = raw_session(&b.socket, "adversary");
    let overhead = valid.len() - secret.len();
    let at_cap = open_frame(3, &vec![b'/'; MAX_MESSAGE - overhead], Access::Read, 0);
    assert_eq!(at_cap.len(), MAX_MESSAGE);
    ch.send(&at_cap).unwrap();
    let (r, fds) = recv_reply(&ch);
    assert_eq!(r.id, 3);
    assert!(fds.is_empty());
    assert!(
        matches!(&r.body, ReplyBody::Open(Err(w)) if w.errno == libc::EINVAL),
        "{r:?}"
    );
    // A full batch at the protocol cap is served.
    ch.send(&many_frame(4, vec![secret.to_vec(); MAX_BATCH]))
        .unwrap();
    let (r, fds) = recv_reply(&ch);
    assert_eq!((r.id, fds.len()), (4, MAX_BATCH));
    drop((ch, fds));
    still_serving(&t, &good);
    assert!(
        eventually(Duration::from_secs(5), || b.fd_count() <= base),
        "the broker holds {} descriptors, {base} before",
        b.fd_count()
    );
    // Logged, at most 20 lines per 10 s window (a peer can cause these at will).
    let violations = b.log().matches("protocol violation").count();
    assert!(violations >= mid_session.len().min(20), "{}", b.log());
}

/// A thousand requests sent back to back (a writer thread, a reader thread): every
/// one answered exactly once, by id, with its descriptors.
#[test]
fn a_thousand_requests_in_a_burst_are_each_answered_once() {
    let (t, b) = fixture();
    let ch = Arc::new(raw_session(&b.socket, "adversary"));
    let secret = t.join("in/secret.txt").as_os_str().as_bytes().to_vec();
    let outside = t.join("outside.txt").as_os_str().as_bytes().to_vec();
    let writer = {
        let ch = Arc::clone(&ch);
        std::thread::spawn(move || {
            for id in 0..1000u64 {
                let f = match id % 3 {
                    0 => open_frame(id, &secret, Access::Read, 0),
                    1 => open_frame(id, &outside, Access::Read, 0),
                    _ => many_frame(id, vec![secret.clone(), outside.clone(), secret.clone()]),
                };
                ch.send(&f).unwrap();
            }
        })
    };
    let want_ino = path_dev_ino(&t.join("in/secret.txt"));
    let mut seen = vec![false; 1000];
    for _ in 0..1000 {
        let (r, fds) = recv_reply(&ch);
        let id = r.id as usize;
        assert!(!std::mem::replace(&mut seen[id], true), "id {id} twice");
        let expected = match id % 3 {
            0 => 1,
            1 => 0,
            _ => 2,
        };
        assert_eq!(fds.len(), expected, "id {id}: {r:?}");
        assert_eq!(r.body.descriptor_count(), expected);
        for fd in &fds {
            assert_eq!(dev_ino(fd), want_ino);
        }
    }
    writer.join().unwrap();
    assert!(seen.iter().all(|s| *s));
    still_serving(&t, &b.client());
}

/// Descriptors a worker attaches never enter the broker: hundreds per message (the
/// kernel's maximum is 253), before and after the hello. The pipe's read end sees
/// EOF only once no write end is left anywhere, so the broker kept none.
#[test]
fn descriptors_sent_to_the_broker_never_enter_it() {
    let (t, b) = fixture();
    let good = b.client();
    still_serving(&t, &good);
    let base = settled_fd_count(b.pid());
    let (r, w) = cloexec_pipe();
    let bait: Vec<_> = (0..253).map(|_| w.as_fd()).collect();
    let secret = t.join("in/secret.txt");
    let req = open_frame(1, secret.as_os_str().as_bytes(), Access::Read, 0);
    let mut held = Vec::new();
    // With the hello itself, and with a valid request mid-session.
    let first = Channel::connect(&b.socket).unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    first.send_with_fds(&hello_frame(), &bait).unwrap();
    held.push(first);
    for _ in 0..4 {
        let ch = raw_session(&b.socket, "adversary");
        ch.send_with_fds(&req, &bait).unwrap();
        held.push(ch);
    }
    // Measure while the worker still holds its copies: the broker holds no more.
    for ch in &held {
        assert_dropped(ch, "descriptors attached");
    }
    assert!(
        b.fd_count() <= base + held.len(),
        "{} > {base}",
        b.fd_count()
    );
    drop(held);
    drop(bait);
    drop(w);
    assert!(
        reads_eof(&r),
        "a write end survives somewhere (in the broker?)"
    );
    assert!(eventually(Duration::from_secs(5), || b.fd_count() <= base));
    still_serving(&t, &good);
}

/// The worker library against a fake broker that attaches too many, too few or
/// unexpected descriptors: every descriptor that arrived is closed, the error is
/// reported, and the connection is unusable afterwards.
#[test]
fn the_worker_library_closes_whatever_a_bad_reply_carried() {
    fn meta() -> FileMeta {
        FileMeta {
            kind: FileKind::Regular,
            size: 0,
            dev: 0,
            ino: 0,
            mode: 0o100_600,
            nlink: 1,
            mtime_sec: 0,
            mtime_nsec: 0,
        }
    }
    let ok_many = |id, n| Reply {
        id,
        body: ReplyBody::OpenMany(vec![Ok(meta()); n]),
    };
    type Case = (
        &'static str,
        Option<Reply>,
        Option<Vec<u8>>,
        usize,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        // More than MAX_FDS_PER_REPLY descriptors: the control buffer truncates.
        (
            "control truncated",
            Some(ok_many(1, 1)),
            None,
            200,
            "ancillary data was truncated",
        ),
        // A body promising one descriptor, five attached.
        (
            "count mismatch",
            Some(ok_many(1, 1)),
            None,
            5,
            "5 descriptors",
        ),
        // A reply to a request never sent.
        (
            "unknown id",
            Some(ok_many(99, 3)),
            None,
            3,
            "unknown request id 99",
        ),
        // Undecodable bytes with descriptors.
        (
            "garbage",
            None,
            Some(b"FDBK garbage".to_vec()),
            7,
            "version mismatch",
        ),
        // A reply to a single open carrying a whole batch.
        ("wrong shape", Some(ok_many(1, 4)), None, 4, "wrong type"),
    ];
    for (what, reply, raw, nfds, needle) in cases {
        let (broker_end, worker_end) = Channel::pair().unwrap();
        let (r, w) = cloexec_pipe();
        let fake = std::thread::spawn(move || {
            let mut rx = vec![0; MAX_MESSAGE];
            let n = broker_end.recv(&mut rx).unwrap();
            assert!(frame::decode::<fdbroker_shared::wire::Hello>(Kind::Hello, &rx[..n]).is_ok());
            let mut buf = Vec::new();
            let welcome = Welcome::Accepted(Accepted {
                client: "fake".into(),
                max_batch: 128,
            });
            frame::encode(Kind::Welcome, &welcome, &mut buf).unwrap();
            broker_end.send(&buf).unwrap();
            let n = broker_end.recv(&mut rx).unwrap();
            let req: Request = frame::decode(Kind::Request, &rx[..n]).unwrap();
            assert_eq!(req.id, 1);
            let bytes = match (reply, raw) {
                (Some(reply), _) => {
                    frame::encode(Kind::Reply, &reply, &mut buf).unwrap();
                    buf
                }
                (None, Some(raw)) => raw,
                _ => unreachable!(),
            };
            let fds: Vec<_> = (0..nfds).map(|_| w.as_fd()).collect();
            broker_end.send_with_fds(&bytes, &fds).unwrap();
            drop(fds);
            drop(w);
            broker_end
        });
        let client = Client::over(worker_end).unwrap();
        client.set_timeout(Some(Duration::from_secs(10))).unwrap();
        let e = client.open("/any/file").unwrap_err();
        assert!(e.to_string().contains(needle), "{what}: {e}");
        let _keep_open = fake.join().unwrap();
        // Every copy the fake sent is closed by now: the pipe reads EOF.
        assert!(reads_eof(&r), "{what}: a received descriptor is still open");
        // The connection is not trusted again.
        let again = client.open("/any/file").unwrap_err();
        assert!(
            !matches!(
                again.kind(),
                ErrorKind::NotFound | ErrorKind::PermissionDenied
            ),
            "{what}: {again}"
        );
    }
    // Descriptors attached to the welcome are never received at all.
    let (broker_end, worker_end) = Channel::pair().unwrap();
    let (r, w) = cloexec_pipe();
    let mut buf = Vec::new();
    let welcome = Welcome::Accepted(Accepted {
        client: "fake".into(),
        max_batch: 128,
    });
    frame::encode(Kind::Welcome, &welcome, &mut buf).unwrap();
    broker_end.send_with_fds(&buf, &[w.as_fd(); 10]).unwrap();
    drop(w);
    let e = Client::over(worker_end).unwrap_err();
    assert!(e.to_string().contains("descriptors"), "{e}");
    drop(broker_end);
    assert!(
        reads_eof(&r),
        "a descriptor attached to the welcome is still open"
    );
}

// ---------------------------------------------------------------------------------
// Identity
// ---------------------------------------------------------------------------------

/// A peer whose uid matches no client is answered at accept time: the refusal names
/// its uid, and the bytes it sent are never parsed (no protocol violation logged).
#[test]
fn an_unknown_peer_is_refused_before_its_bytes_are_parsed() {
    let (t, b) = fixture();
    let out = run_as_nobody(
        Command::new(sibling_bin("adv-peer"))
            .arg("garbage")
            .arg(&b.socket),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("refused errno={}", libc::EACCES))
            && stdout.contains(&format!("uid {}", nobody_uid())),
        "{stdout}"
    );
    still_serving(&t, &b.client());
    let log = b.log();
    assert!(log.contains("refused a connection"), "{log}");
    assert!(!log.contains("protocol violation"), "{log}");
}

/// The client is chosen from `SO_PEERCRED`, recorded by the kernel at `connect`. A
/// process that changes its uid afterwards keeps the identity it connected with:
/// connecting as nobody and becoming root again gains nothing.
#[test]
fn the_peer_identity_is_fixed_at_connect_time() {
    let t = TempDir::new("ident");
    t.file("low/file", b"low", 0o644);
    t.file("high/file", b"high", 0o600);
    let b = Broker::start(
        &t,
        "[broker]\nsocket_mode = \"0666\"\n\
         [[client]]\nname = \"admin\"\nusers = [0]\n\
         [[client.allow]]\npath = \"{dir}/low/\"\n[[client.allow]]\npath = \"{dir}/high/\"\n\
         [[client]]\nname = \"low\"\nusers = [{nobody}]\n\
         [[client.allow]]\npath = \"{dir}/low/\"\n",
    );
    let out = run_with_timeout(
        Command::new(sibling_bin("adv-peer"))
            .arg("uid-switch")
            .arg(&b.socket)
            .arg(t.join("low/file"))
            .arg(t.join("high/file")),
        Duration::from_secs(30),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "root-then-nobody client=admin high=ok low=ok".to_owned(),
            format!(
                "nobody-then-root client=low high=errno{} low=ok",
                libc::EACCES
            ),
            "fresh-root client=admin high=ok".to_owned(),
        ],
        "{stdout}"
    );
    assert!(b.log().contains(&format!("uid={}", nobody_uid())));
}

/// A descriptor confines its holder to its access mode only while the holder cannot
/// open the file again. Through `/proc/self/fd/N` the kernel checks the file's own
/// mode but none of the directories above it, so a read grant of a `0602` file in a
/// `0700` directory used to be a way for `nobody` to write it. Files whose mode would
/// give the peer more than the grant are now refused, with the reason, unless the
/// rule says `allow_reopen = true`.
#[test]
fn a_read_grant_never_reopens_for_writing() {
    let t = TempDir::new("reopen");
    t.dir("r", 0o700);
    t.dir("open", 0o700);
    let other_w = t.file("r/other-w", b"o+w\n", 0o602);
    let group_w = t.file("r/group-w", b"g+w\n", 0o620);
    std::os::unix::fs::chown(&group_w, None, Some(nobody_gid())).unwrap();
    let group_w_not_mine = t.file("r/group-w-root", b"g+w, group root\n", 0o620);
    let mine = t.file("r/mine", b"owned by nobody\n", 0o400);
    std::os::unix::fs::chown(&mine, Some(nobody_uid()), Some(nobody_gid())).unwrap();
    let plain = t.file("r/plain", b"plain\n", 0o644);
    let allowed = t.file("open/other-w", b"o+w, allowed\n", 0o602);
    let b = Broker::start(
        &t,
        "[broker]\nsocket_mode = \"0666\"\n\
         [[client]]\nname = \"n\"\nusers = [{nobody}]\n\
         [[client.allow]]\npath = \"{dir}/r/\"\n\
         [[client.allow]]\npath = \"{dir}/open/\"\nallow_reopen = true\n",
    );
    let mut cmd = Command::new(sibling_bin("worker-probe"));
    cmd.env("FDBROKER_SOCKET", &b.socket);
    let script: String = [
        &other_w,
        &group_w,
        &group_w_not_mine,
        &mine,
        &plain,
        &allowed,
    ]
    .iter()
    .map(|p| format!("reopen {}\n", p.display()))
    .collect();
    std::os::unix::process::CommandExt::uid(&mut cmd, nobody_uid());
    std::os::unix::process::CommandExt::gid(&mut cmd, nobody_gid());
    let out = fdbroker_tests::run_with_input(
        &mut cmd,
        Some(script.into_bytes()),
        Duration::from_secs(30),
    );
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().skip(1).collect();
    let refused = "ERR PermissionDenied 13";
    assert_eq!(
        lines,
        [
            refused,         // others may write
            refused,         // nobody's group may write
            "REOPEN err 13", // the group may write, but nobody is not in it
            refused,         // nobody owns it, and could chmod it
            "REOPEN err 13", // nothing more than reading for nobody
            "REOPEN ok",     // allow_reopen: passed, and reopened for writing
        ],
        "{stdout}\n{}",
        text(&out.stderr)
    );
    let log = b.log();
    assert!(
        log.contains(&format!(
            "would let uid {} reopen the descriptor through /proc/self/fd for writing",
            nobody_uid()
        )),
        "{log}"
    );
}
