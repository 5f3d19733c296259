//! A log destination that fails (issue 19, section 1): stderr into a file on a full
//! filesystem (a real, small tmpfs), into a pipe whose reader has exited, and into a
//! pipe nobody reads. In each, the events that used to crash or wedge the broker (a
//! connection from a uid the policy does not know, malformed frames from a known one,
//! SIGHUP) must leave it serving: every request is answered within a bound, granted or
//! refused as `audit_failure` says, the broker never panics, it recovers when the
//! destination does, and SIGTERM still stops it cleanly.
#![allow(clippy::unwrap_used)]

use fdbroker_tests::{Broker, TempDir, fdbroker_bin, run_as_nobody, sibling_bin, text};
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CONTENT: &[u8] = b"the data\n";

/// Root and nobody may read `data/`; no other uid is a client.
const POLICY: &str = r#"
[broker]
socket_mode = "0666"
SETTING

[[client]]
name = "root"
users = [0]

  [[client.allow]]
  path = "{dir}/data/"

[[client]]
name = "worker"
users = [{nobody}]

  [[client.allow]]
  path = "{dir}/data/"
"#;

/// A uid no client names (and no account, most likely).
const STRANGER: u32 = 54_321;

/// How long any one answer may take: generous, since the machine is shared; a wedged
/// broker never answers at all.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

fn tree() -> TempDir {
    let t = TempDir::new("logfail");
    t.file("data/file", CONTENT, 0o644);
    t
}

fn policy(setting: &str) -> String {
    POLICY.replace("SETTING", setting)
}

/// `fdbroker cat FILE`, as root or as nobody, bounded in time.
fn cat(b: &Broker, file: &Path, as_nobody: bool) -> Output {
    let mut cmd = Command::new(fdbroker_bin());
    cmd.arg("cat").arg("--socket").arg(&b.socket).arg(file);
    if as_nobody {
        run_as_nobody(&mut cmd)
    } else {
        fdbroker_tests::run_with_timeout(&mut cmd, ANSWER_WITHIN)
    }
}

/// The file is served to both clients.
fn assert_granted(b: &Broker, file: &Path) {
    for as_nobody in [false, true] {
        let out = cat(b, file, as_nobody);
        assert!(
            out.status.success() && out.stdout == CONTENT,
            "as_nobody={as_nobody}: {}",
            fdbroker_tests::show(&out)
        );
    }
}

/// The file is refused to both clients, with the errno and message the documentation
/// gives for an audit trail that cannot be written.
fn assert_refused_for_audit(b: &Broker, file: &Path) {
    for as_nobody in [false, true] {
        let out = cat(b, file, as_nobody);
        let err = text(&out.stderr);
        assert!(
            !out.status.success() && out.stdout.is_empty() && err.contains("audit trail"),
            "as_nobody={as_nobody}: {}",
            fdbroker_tests::show(&out)
        );
    }
}

/// What used to take the broker down with a failing stderr: a connection from a uid no
/// client names, two malformed frames from a known client, and SIGHUP (a reload).
/// Afterwards the monitor and a server are still there.
fn provoke(b: &mut Broker) {
    let stranger = fdbroker_tests::run_with_timeout(
        Command::new(sibling_bin("adv-peer"))
            .arg("garbage")
            .arg(&b.socket)
            .uid(STRANGER)
            .gid(STRANGER),
        ANSWER_WITHIN,
    );
    assert!(
        text(&stranger.stdout).contains(&format!("refused errno={}", libc::EACCES)),
        "{}",
        fdbroker_tests::show(&stranger)
    );
    for _ in 0..2 {
        // A known client whose first message is no frame: a protocol violation, logged.
        let _ = run_as_nobody(
            Command::new(sibling_bin("adv-peer"))
                .arg("garbage")
                .arg(&b.socket),
        );
    }
    b.signal(nix::sys::signal::Signal::SIGHUP);
    // The reload is asynchronous: a request after it exercises the new server too.
    std::thread::sleep(Duration::from_millis(300));
    assert!(b.alive(), "the broker exited");
    let _ = b.pid();
}

/// SIGTERM stops the broker with success, not a panic's 101.
fn assert_stops_cleanly(mut b: Broker) {
    b.signal(nix::sys::signal::Signal::SIGTERM);
    let status = b
        .wait_exit(ANSWER_WITHIN)
        .expect("the broker did not stop on SIGTERM");
    assert!(status.success(), "stopped with {status}");
}

/// A small tmpfs mounted for the test, unmounted when dropped.
struct SmallFs {
    dir: TempDir,
}

impl SmallFs {
    fn mount(kib: u32) -> SmallFs {
        let dir = TempDir::new("logfs");
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={kib}k,mode=0755"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs");
        SmallFs { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Fill what is left with `filler`, then the last page of `log` (a description
    /// the broker's stderr shares, so its offset moves too), until the filesystem says
    /// ENOSPC: the broker's next line needs a page there is no room for.
    fn fill(&self, log: &mut fs::File) {
        fill_file(&mut fs::File::create(self.path("filler")).unwrap());
        fill_file(log);
    }

    fn free(&self) {
        fs::remove_file(self.path("filler")).unwrap();
    }
}

/// Write to `f` until ENOSPC (blank lines, harmless in a log).
fn fill_file(f: &mut fs::File) {
    let block = vec![b'\n'; 4096];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling the tmpfs: {e}"),
        }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap()
}

/// Fill a pipe to the brim from its write end, leaving the end blocking again (the
/// broker shares the open file description, so its flags must be as it would find them).
fn fill_pipe(w: &OwnedFd) {
    fcntl(w.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap();
    let block = [b'#'; 4096];
    while nix::unistd::write(w, &block).is_ok() {}
    fcntl(w.as_fd(), FcntlArg::F_SETFL(OFlag::empty())).unwrap();
}

/// When the disk fills: before the broker starts (which used to exit 101 at once), or
/// once it serves (after which one event used to kill the thread logging it).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fill {
    BeforeStart,
    AfterStart,
}

fn full_disk(setting: &str, env: &[(&str, &str)], when: Fill) -> (TempDir, SmallFs, Broker) {
    let t = tree();
    let fs = SmallFs::mount(256);
    let log = fs::File::create(fs.path("broker.log")).unwrap();
    let mut pad = log.try_clone().unwrap();
    if when == Fill::BeforeStart {
        fs.fill(&mut pad);
    }
    let b = Broker::start_logging_to(&t, &policy(setting), log.into(), env);
    if when == Fill::AfterStart {
        fs.fill(&mut pad);
    }
    (t, fs, b)
}

/// The default (`refuse`): while the audit trail cannot be written, nothing is
/// granted; once it can, grants resume and the log says how much was lost.
#[test]
fn a_full_disk_refuses_grants_until_the_audit_trail_can_be_written() {
    let (t, fs, mut b) = full_disk("", &[], Fill::AfterStart);
    let file = t.join("data/file");
    provoke(&mut b);
    assert_refused_for_audit(&b, &file);
    fs.free();
    fdbroker_tests::wait_until(
        ANSWER_WITHIN,
        || "grants did not resume after the disk was freed".into(),
        || cat(&b, &file, false).status.success(),
    );
    assert_granted(&b, &file);
    let log_path = fs.path("broker.log");
    let log = || fs::read_to_string(&log_path).unwrap_or_default();
    // Said by the server's timer, soon after the first line that got through.
    fdbroker_tests::wait_until(
        ANSWER_WITHIN,
        || format!("the log never said it had resumed:\n{}", log()),
        || log().contains("log writes resumed"),
    );
    let log = log();
    assert!(log.contains("lost="), "{log}");
    assert!(log.contains("granted"), "{log}");
    assert_stops_cleanly(b);
}

/// `audit_failure = "serve"`: grants go on while the lines are lost, and counted.
#[test]
fn a_full_disk_with_audit_failure_serve_keeps_granting_and_counts_the_loss() {
    let (t, fs, mut b) = full_disk("audit_failure = \"serve\"", &[], Fill::BeforeStart);
    let file = t.join("data/file");
    provoke(&mut b);
    assert_granted(&b, &file);
    fs.free();
    fdbroker_tests::wait_until(
        ANSWER_WITHIN,
        || "the log never said it had resumed".into(),
        || {
            let _ = cat(&b, &file, false);
            fs::read_to_string(fs.path("broker.log"))
                .unwrap_or_default()
                .contains("log writes resumed")
        },
    );
    let log = fs::read_to_string(fs.path("broker.log")).unwrap();
    let lost_audit = log
        .split("lost_audit=")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no lost_audit count:\n{log}"));
    // At least the two grants above were lost.
    assert!(lost_audit >= 2, "{log}");
    assert_stops_cleanly(b);
}

/// A reader that exited (EPIPE on every write), before the broker starts or while it
/// serves: serving goes on, refusing grants.
#[test]
fn a_broken_pipe_neither_crashes_nor_wedges_the_broker() {
    let t = tree();
    let (r, w) = pipe();
    drop(r);
    let b = Broker::start_logging_to(&t, &policy(""), w.into(), &[]);
    assert_refused_for_audit(&b, &t.join("data/file"));
    assert_stops_cleanly(b);
    // The reader exits once the broker serves (its start-up lines fit in the pipe).
    let (r, w) = pipe();
    let mut b = Broker::start_logging_to(&t, &policy(""), w.into(), &[]);
    drop(r);
    let file = t.join("data/file");
    provoke(&mut b);
    assert_refused_for_audit(&b, &file);
    assert_stops_cleanly(b);
}

/// A reader that never reads: no write may block the broker; once the reader drains
/// the pipe, grants resume and the log says what was lost.
#[test]
fn a_stalled_pipe_does_not_wedge_the_broker_and_it_recovers() {
    let (r, w) = pipe();
    stalled(r, w);
}

/// The same with a stream socket, as the journal's stream is (`JOURNAL_STREAM`).
#[test]
fn a_stalled_stream_socket_does_not_wedge_the_broker_and_it_recovers() {
    let (r, w) = std::os::unix::net::UnixStream::pair().unwrap();
    stalled(r.into(), w.into());
}

/// stderr into `w`, full, whose reader `r` does not read until the broker has been
/// provoked and answered; then it reads everything.
fn stalled(r: OwnedFd, w: OwnedFd) {
    let t = tree();
    fill_pipe(&w);
    let mut b = Broker::start_logging_to(&t, &policy(""), w.into(), &[]);
    let file = t.join("data/file");
    provoke(&mut b);
    assert_refused_for_audit(&b, &file);
    // `fdbroker reload` used to hang waiting for a server wedged in a write.
    let reload = fdbroker_tests::run_with_timeout(
        Command::new(fdbroker_bin())
            .arg("reload")
            .args(["--timeout", "20"])
            .arg(b.monitor_pid().to_string())
            .stdin(Stdio::null()),
        ANSWER_WITHIN,
    );
    assert!(reload.status.success(), "{}", fdbroker_tests::show(&reload));
    // Now a reader drains it.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    std::thread::spawn(move || {
        let mut r = fs::File::from(r);
        let mut buf = [0u8; 65536];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    fdbroker_tests::wait_until(
        ANSWER_WITHIN,
        || "grants did not resume after the pipe was drained".into(),
        || cat(&b, &file, false).status.success(),
    );
    assert_granted(&b, &file);
    fdbroker_tests::wait_until(
        ANSWER_WITHIN,
        || {
            format!(
                "the log never said it had resumed:\n{}",
                text(&seen.lock().unwrap())
            )
        },
        || text(&seen.lock().unwrap()).contains("log writes resumed"),
    );
    assert_stops_cleanly(b);
}

/// The service manager hears it too: a `STATUS=` line when writing fails (with what
/// is lost and what the broker does meanwhile), and another once it works again.
#[test]
fn a_failing_log_and_its_recovery_are_said_in_status() {
    let notify_dir = TempDir::new("logfail-notify");
    let notify_path = notify_dir.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let (t, fs, b) = full_disk(
        "",
        &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())],
        Fill::BeforeStart,
    );
    let file = t.join("data/file");
    let mut seen = Vec::new();
    // Skip notifications until a STATUS= satisfies `want`, requesting `file` meanwhile
    // (a request is what finds out whether lines can be written).
    let status_until = |want: &dyn Fn(&str) -> bool, seen: &mut Vec<String>| {
        let deadline = std::time::Instant::now() + ANSWER_WITHIN;
        let mut buf = vec![0; 4096];
        while std::time::Instant::now() < deadline {
            let _ = cat(&b, &file, false);
            while let Ok(n) = notify.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let status = msg
                    .lines()
                    .find_map(|l| l.strip_prefix("STATUS="))
                    .map(str::to_owned);
                seen.push(msg);
                if status.is_some_and(|s| want(&s)) {
                    return;
                }
            }
        }
        panic!("no such STATUS= within {ANSWER_WITHIN:?}; saw {seen:?}");
    };
    status_until(
        &|s| s.contains("log writes failing") && s.contains("refusing descriptors"),
        &mut seen,
    );
    fs.free();
    status_until(
        &|s| !s.contains("log writes failing") && s.contains("log lines lost"),
        &mut seen,
    );
    assert_stops_cleanly(b);
}

/// A small ext4 filesystem in a loop-mounted image (freezing needs a real block
/// filesystem; tmpfs cannot be frozen), unmounted and removed when dropped.
struct Ext4 {
    dir: TempDir,
    image: PathBuf,
}

impl Ext4 {
    fn mount() -> Ext4 {
        let dir = TempDir::new("logfail-ext4");
        let image = PathBuf::from(format!("{}.img", dir.path().display()));
        fs::File::create(&image).unwrap().set_len(32 << 20).unwrap();
        let mkfs = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&image)
            .status()
            .unwrap();
        assert!(mkfs.success(), "mkfs.ext4");
        let mount = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(
            mount.success(),
            "mount -o loop (this test needs loop devices)"
        );
        Ext4 { dir, image }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `fsfreeze -f`: every write to it blocks until the returned guard is dropped.
    fn freeze(&self) -> Frozen<'_> {
        let st = Command::new("fsfreeze")
            .arg("-f")
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "fsfreeze -f");
        Frozen { fs: self }
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
        let _ = fs::remove_file(&self.image);
    }
}

struct Frozen<'a> {
    fs: &'a Ext4,
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        let _ = Command::new("fsfreeze")
            .arg("-u")
            .arg(self.fs.dir.path())
            .status();
    }
}

/// Collect notifications for `window`; whether any was `WATCHDOG=1`.
fn watchdog_within(notify: &std::os::unix::net::UnixDatagram, window: Duration) -> bool {
    let end = std::time::Instant::now() + window;
    let mut buf = vec![0; 4096];
    let mut fed = false;
    while std::time::Instant::now() < end {
        if let Ok(n) = notify.recv(&mut buf) {
            fed |= String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "WATCHDOG=1");
        }
    }
    fed
}

/// A write that never returns (a regular file on a frozen filesystem, which no flag
/// makes non-blocking) holds up only the thread making it: the broker's other thread
/// goes on answering (refusing, since the audit line cannot be written), the watchdog
/// stops being fed while that thread makes no progress, and both come back once the
/// filesystem thaws.
#[test]
fn a_writer_stuck_on_a_frozen_filesystem_stops_the_watchdog_not_the_broker() {
    let t = tree();
    let file = t.join("data/file");
    let ext4 = Ext4::mount();
    let notify_dir = TempDir::new("logfail-notify");
    let notify_path = notify_dir.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let log = fs::File::create(ext4.path("broker.log")).unwrap();
    let b = Broker::start_logging_to(
        &t,
        &policy(""),
        log.into(),
        &[
            ("NOTIFY_SOCKET", notify_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    assert!(
        fdbroker_tests::eventually(ANSWER_WITHIN, || watchdog_within(
            &notify,
            Duration::from_secs(1)
        )),
        "the watchdog was never fed"
    );
    let frozen = ext4.freeze();
    // This request's thread blocks writing its first line, until the thaw.
    let socket = b.socket.clone();
    let stuck_file = file.clone();
    let stuck = std::thread::spawn(move || {
        let mut cmd = Command::new(fdbroker_bin());
        cmd.arg("cat").arg("--socket").arg(&socket).arg(&stuck_file);
        fdbroker_tests::run_with_timeout(&mut cmd, Duration::from_secs(120))
    });
    // The watchdog goes quiet: no WATCHDOG=1 for a whole 3 s window.
    assert!(
        fdbroker_tests::eventually(ANSWER_WITHIN, || !watchdog_within(
            &notify,
            Duration::from_secs(3)
        )),
        "the watchdog is still fed while a thread is stuck"
    );
    // The other thread still answers, within the bound.
    assert_refused_for_audit(&b, &file);
    drop(frozen);
    let out = stuck.join().unwrap();
    assert!(
        out.status.success() && out.stdout == CONTENT,
        "{}",
        fdbroker_tests::show(&out)
    );
    assert!(
        fdbroker_tests::eventually(ANSWER_WITHIN, || watchdog_within(
            &notify,
            Duration::from_secs(1)
        )),
        "the watchdog was not fed again after the thaw"
    );
    assert_granted(&b, &file);
    assert_stops_cleanly(b);
}

/// `fdbroker run` with its stderr (and so the worker's) into a pipe whose reader has
/// gone: the spawn broker neither panics nor hangs; its worker is answered as
/// `audit_failure` says and its exit status is the run's.
#[test]
fn a_spawn_broker_with_a_broken_stderr_answers_as_audit_failure_says() {
    let t = tree();
    let bins = fdbroker_bin().parent().unwrap().to_owned();
    for (setting, granted) in [("audit_failure = \"serve\"", true), ("", false)] {
        let policy = t.file(
            "run.toml",
            format!(
                r#"
[broker]
{setting}

[sandbox]
read_only = ["/usr", "/bin", "/lib", "/lib64", "/etc/ld.so.cache", "{bins}"]

[[client]]
name = "worker"
users = ["nobody"]

  [[client.allow]]
  path = "{dir}/data/"
"#,
                bins = bins.display(),
                dir = t.path().display()
            )
            .as_bytes(),
            0o644,
        );
        let (r, w) = pipe();
        drop(r);
        let mut child = Command::new(fdbroker_bin())
            .arg("run")
            .arg("--policy")
            .arg(&policy)
            .arg("--")
            .arg(fdbroker_bin())
            .arg("cat")
            .arg(t.join("data/file"))
            .env("FDBROKER_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(w))
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = stdout.read_to_end(&mut v);
            v
        });
        let status = fdbroker_tests::wait_exit(&mut child, ANSWER_WITHIN)
            .expect("fdbroker run did not finish");
        let out = reader.join().unwrap();
        if granted {
            assert!(status.success() && out == CONTENT, "{setting}: {status}");
        } else {
            // `fdbroker cat` was refused: its own failure (1), not a panic (101).
            assert_eq!(status.code(), Some(1), "{setting}");
            assert!(out.is_empty(), "{setting}");
        }
    }
}

/// SIGTERM while the destination still fails (a full disk, a stalled pipe): the broker
/// stops with success, its stop lines lost and counted, not with a panic's 101 or never.
#[test]
fn sigterm_stops_the_broker_while_its_log_still_fails() {
    let (_t, _fs, mut b) = full_disk("", &[], Fill::AfterStart);
    provoke(&mut b);
    assert_stops_cleanly(b);

    let t = tree();
    let (_r, w) = pipe();
    fill_pipe(&w);
    let mut b = Broker::start_logging_to(&t, &policy(""), w.into(), &[]);
    provoke(&mut b);
    assert_stops_cleanly(b);
}

/// A client that may truncate, create, stat and list in `out/`.
const WRITABLE: &str = r#"
[broker]
socket_mode = "0600"

[[client]]
name = "root"
users = [0]

  [[client.allow]]
  path = "{dir}/out/"
  access = ["read", "write", "create", "directory"]
"#;

const KEPT: &[u8] = b"fourteen bytes";

/// With `refuse` (issue 19, findings F1 and F4): a request whose audit line cannot be
/// written has no effect at all. A truncate leaves the file as it was, a create leaves no
/// file (alone or in a batch), and a stat or a listing is not answered either. Each is
/// tried as the first request after the disk fills (when the broker finds out by the
/// request's own line) and after the broker knows its log fails. Once the log can be
/// written again, each works.
#[test]
fn refused_for_the_audit_trail_truncates_creates_and_answers_nothing() {
    use fdbroker_worker::{Access, OPEN_TRUNC};
    let t = TempDir::new("logfail-effects");
    t.file("out/keep", KEPT, 0o600);
    t.file("out/keep2", KEPT, 0o600);
    let fs = SmallFs::mount(256);
    let log = fs::File::create(fs.path("broker.log")).unwrap();
    let mut pad = log.try_clone().unwrap();
    let b = Broker::start_logging_to(&t, WRITABLE, log.into(), &[]);
    let c = fdbroker_worker::Client::connect(&b.socket).unwrap();
    let refused = |what: &str, r: std::io::Result<()>| {
        let e = r.expect_err(what);
        assert_eq!(fdbroker_tests::errno_of(&e), libc::EIO, "{what}: {e}");
        assert!(e.to_string().contains("audit trail"), "{what}: {e}");
    };
    let keep = t.join("out/keep");
    let keep2 = t.join("out/keep2");
    let untouched = |what: &str| {
        assert_eq!(fs::read(&keep).unwrap(), KEPT, "{what}: keep was truncated");
        assert_eq!(
            fs::read(&keep2).unwrap(),
            KEPT,
            "{what}: keep2 was truncated"
        );
        for name in ["new.txt", "new2.txt", "new3.txt"] {
            assert!(
                !t.join("out").join(name).exists(),
                "{what}: {name} was created"
            );
        }
    };
    let create = || {
        c.open_detailed(t.join("out/new.txt"), Access::Create, 0)
            .map(drop)
    };
    let trunc = || c.open_detailed(&keep, Access::Write, OPEN_TRUNC).map(drop);
    let batch = |paths: &[PathBuf], access, flags| {
        c.open_many_detailed(paths, access, flags)
            .and_then(|outcomes| outcomes.into_iter().try_for_each(|o| o.map(drop)))
    };
    let batch_create = || {
        let news = [t.join("out/new2.txt"), t.join("out/new3.txt")];
        batch(&news, Access::Create, 0)
    };
    let batch_trunc = || batch(&[keep.clone(), keep2.clone()], Access::Write, OPEN_TRUNC);
    let resumed = || {
        fdbroker_tests::wait_until(
            ANSWER_WITHIN,
            || "grants did not resume after the disk was freed".into(),
            || c.metadata(t.join("out")).is_ok(),
        );
    };
    type Try<'a> = (&'a str, &'a dyn Fn() -> std::io::Result<()>);
    let tries: [Try<'_>; 4] = [
        ("create", &create),
        ("truncate", &trunc),
        ("batch create", &batch_create),
        ("batch truncate", &batch_trunc),
    ];
    for (first, _) in tries {
        fs.fill(&mut pad);
        // The one tried first meets a log the broker does not know is failing yet.
        let order = tries
            .iter()
            .filter(|(w, _)| *w == first)
            .chain(tries.iter().filter(|(w, _)| *w != first));
        for (what, f) in order {
            refused(what, f());
            untouched(what);
        }
        refused("stat", c.metadata(&keep).map(drop));
        refused("list", c.read_dir(t.join("out")).map(drop));
        untouched("at the end");
        fs.free();
        resumed();
    }
    let opened = c.open_detailed(&keep, Access::Write, OPEN_TRUNC).unwrap();
    assert_eq!(opened.meta.size, 0);
    assert_eq!(fs::read(&keep).unwrap(), b"");
    create().unwrap();
    assert!(t.join("out/new.txt").exists());
    assert!(c.read_dir(t.join("out")).is_ok());
    assert_stops_cleanly(b);
}
