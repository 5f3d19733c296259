//! The worker library as a program uses it (issue 13): metadata, directories and whole
//! trees through the broker, pipelined batches, timeouts, reconnecting, several processes
//! of one `fdbroker run` tree, the privilege order, and the async client. Real brokers,
//! real `nobody` processes, real sockets.
#![allow(clippy::unwrap_used)]

use fdbroker_tests::{
    Broker, TempDir, errno_of, eventually, fdbroker_bin, nobody_gid, nobody_uid, run_as_nobody,
    run_with_timeout, sibling_bin, text,
};
use fdbroker_worker::{Access, Client, FileKind};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A root-only tree (every directory 0700, every file 0600), a deny carve-out, a file
/// outside the policy, and a directory granted for listing only.
fn tree() -> TempDir {
    let t = TempDir::new("library");
    t.file("q/a.txt", b"alpha", 0o600);
    t.file("q/sub/b.txt", b"beta!", 0o600);
    t.file("q/sub/deeper/c.txt", b"gamma gamma", 0o600);
    t.file("q/keys/k.pem", b"KEY", 0o600);
    t.file("q/z.txt", b"zed", 0o600);
    t.file("d/f.txt", b"listed, not read", 0o600);
    t.file("outside.txt", b"outside", 0o644);
    for d in ["q", "q/sub", "q/sub/deeper", "q/keys", "d"] {
        t.dir(d, 0o700);
    }
    t
}

const POLICY: &str = r#"
[broker]
socket_mode = "0666"

[[client]]
name = "tester"
users = [0, {nobody}]

  [[client.allow]]
  path = "{dir}/q/"
  access = ["read", "directory"]

  [[client.allow]]
  path = "{dir}/d/"
  access = ["directory"]

  [[client.deny]]
  path = "{dir}/q/keys/"
"#;

fn probe() -> PathBuf {
    sibling_bin("library-probe")
}

/// `library-probe ARGS` as nobody against `socket`; its stdout lines.
fn probe_as_nobody(socket: &Path, args: &[&str]) -> Vec<String> {
    let mut cmd = Command::new(probe());
    cmd.args(args).env("FDBROKER_SOCKET", socket);
    let out = run_as_nobody(&mut cmd);
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout).lines().map(str::to_owned).collect()
}

fn line_for<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in {lines:#?}"))
}

#[test]
fn metadata_is_the_brokers_view_under_the_policy() {
    let t = tree();
    let b = Broker::start(&t, POLICY);
    std::os::unix::fs::symlink(t.join("outside.txt"), t.join("q/link-out")).unwrap();
    std::fs::hard_link(t.join("outside.txt"), t.join("q/hard")).unwrap();
    t.file("elsewhere/e.txt", b"elsewhere", 0o644);
    std::os::unix::fs::symlink(t.join("elsewhere"), t.join("q/dirlink")).unwrap();
    nix::unistd::mkfifo(
        &t.join("q/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o666),
    )
    .unwrap();
    let p = |rel: &str| t.join(rel).display().to_string();
    // nobody cannot even look at the tree itself.
    let direct = run_as_nobody(Command::new("/usr/bin/stat").arg(p("q/a.txt")));
    assert!(
        !direct.status.success(),
        "nobody could stat the file itself"
    );

    let paths = [
        "q/a.txt",
        "q/sub",
        "q",
        "outside.txt",
        "no-such-file",
        "q/keys/k.pem",
        "q/missing",
        "q/link-out",
        "q/hard",
        "q/dirlink/e.txt",
        "q/fifo",
        "d",
        "d/f.txt",
    ]
    .map(p);
    let mut args = vec!["stat"];
    args.extend(paths.iter().map(String::as_str));
    let lines = probe_as_nobody(&b.socket, &args);
    let stat = |rel: &str| line_for(&lines, &format!("STAT {} ", p(rel))).to_owned();
    let err = |rel: &str| line_for(&lines, &format!("ERR {} ", p(rel))).to_owned();

    assert_eq!(
        stat("q/a.txt"),
        format!("STAT {} file 5 0 0 100600", p("q/a.txt"))
    );
    assert!(stat("q/sub").contains(" dir "), "{lines:#?}");
    assert!(stat("q").contains(" dir "), "{lines:#?}");
    // Outside the policy: one uniform denial, whether or not the file exists, and the
    // same for a deny carve-out.
    let denied = |rel: &str| {
        let l = err(rel);
        let rest = l
            .strip_prefix(&format!("ERR {} ", p(rel)))
            .unwrap()
            .to_owned();
        assert!(rest.starts_with("PermissionDenied 13 "), "{rel}: {l}");
        rest
    };
    assert_eq!(denied("outside.txt"), denied("no-such-file"));
    assert_eq!(denied("outside.txt"), denied("q/keys/k.pem"));
    // Inside it, the kernel's answer.
    assert!(err("q/missing").contains("NotFound 2 "), "{lines:#?}");
    // Resolved as an open is: no symlink out, no planted hard link described.
    assert!(
        err("q/link-out").contains("PermissionDenied 13 "),
        "{lines:#?}"
    );
    assert!(err("q/hard").contains("hard links"), "{lines:#?}");
    // A symlinked directory on the way is not crossed either. A FIFO is described
    // without being opened (nobody writes to it, so an open would block), though the
    // rule does not allow opening devices: describing one is not opening it.
    assert!(
        err("q/dirlink/e.txt").contains("PermissionDenied 13 "),
        "{lines:#?}"
    );
    assert!(stat("q/fifo").contains(" fifo 0 "), "{lines:#?}");
    assert!(
        probe_as_nobody(&b.socket, &["cat", &p("q/fifo")])
            .iter()
            .any(|l| l.contains("PermissionDenied 13 ")),
        "a FIFO opened without `devices`"
    );
    // A listing-only grant describes directories, not the files in them.
    assert!(stat("d").contains(" dir "), "{lines:#?}");
    assert!(err("d/f.txt").contains("NotADirectory 20 "), "{lines:#?}");
    // Each decision is audited, marked as a stat.
    let log = b.log();
    assert!(
        log.contains("access=\"stat\"") && log.contains(&format!("uid={}", nobody_uid())),
        "{log}"
    );
}

#[test]
fn walk_lists_a_root_only_tree_as_nobody_and_leaves_the_carve_out_out() {
    let t = tree();
    let b = Broker::start(&t, POLICY);
    std::os::unix::fs::symlink(t.join("q/sub"), t.join("q/sublink")).unwrap();
    let direct = run_as_nobody(Command::new("/bin/ls").arg(t.join("q")));
    assert!(
        !direct.status.success(),
        "nobody could list the tree itself"
    );

    let lines = probe_as_nobody(&b.socket, &["walk", t.join("q").to_str().unwrap()]);
    let entry = |rel: &str, kind: &str| format!("ENTRY {} {kind}", t.join(rel).display());
    for (rel, kind) in [
        ("q/a.txt", "file"),
        ("q/z.txt", "file"),
        ("q/sub", "dir"),
        ("q/sub/b.txt", "file"),
        ("q/sub/deeper", "dir"),
        ("q/sub/deeper/c.txt", "file"),
        ("q/sublink", "symlink"),
    ] {
        assert!(lines.contains(&entry(rel, kind)), "{rel}: {lines:#?}");
    }
    // The carve-out is left out of its parent's listing, as if it did not exist: not
    // entered, not named, no error about it.
    assert!(
        !lines.iter().any(|l| l.contains("keys")),
        "listed keys/: {lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.starts_with("ERR")), "{lines:#?}");
    // A symlinked directory is reported, never followed.
    assert!(!lines.iter().any(|l| l.contains("sublink/")), "{lines:#?}");
    // Depth first: a directory's entries follow it before its next sibling's.
    let at = |s: &str| lines.iter().position(|l| l == s).unwrap();
    assert!(at(&entry("q/sub", "dir")) < at(&entry("q/sub/deeper/c.txt", "file")));
}

#[test]
fn read_dir_lists_through_a_granted_descriptor_and_only_there() {
    let t = tree();
    let b = Broker::start(&t, POLICY);
    let c = b.client();
    let mut names: Vec<String> = c
        .read_dir(t.join("q/sub"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            assert_eq!(e.path(), t.join("q/sub").join(e.file_name()));
            format!(
                "{}:{}",
                e.file_name().to_string_lossy(),
                e.file_type().unwrap().as_str()
            )
        })
        .collect();
    names.sort();
    assert_eq!(names, ["b.txt:regular file", "deeper:directory"]);
    for (p, errno) in [
        ("q/keys", libc::EACCES),
        ("outside.txt", libc::EACCES),
        ("q/a.txt", libc::ENOTDIR),
    ] {
        let e = c.read_dir(t.join(p)).unwrap_err();
        assert_eq!(errno_of(&e), errno, "{p}: {e}");
    }
}

#[test]
fn a_scan_walks_and_opens_every_file_each_result_with_its_path() {
    let t = tree();
    let b = Broker::start(&t, POLICY);
    std::fs::hard_link(t.join("outside.txt"), t.join("q/sub/planted")).unwrap();
    let lines = probe_as_nobody(&b.socket, &["scan", t.join("q").to_str().unwrap()]);
    for (rel, n) in [
        ("q/a.txt", 5),
        ("q/z.txt", 3),
        ("q/sub/b.txt", 5),
        ("q/sub/deeper/c.txt", 11),
    ] {
        assert!(
            lines.contains(&format!("FILE {} {n}", t.join(rel).display())),
            "{rel}: {lines:#?}"
        );
    }
    // The refused file is reported under its own name, and only there.
    let planted = line_for(
        &lines,
        &format!("ERR {} ", t.join("q/sub/planted").display()),
    );
    assert!(planted.contains("hard links"), "{planted}");
    assert_eq!(lines.iter().filter(|l| l.starts_with("ERR")).count(), 1);
}

#[test]
fn open_iter_has_the_next_batch_opened_while_the_caller_works() {
    let t = TempDir::new("library-iter");
    let names: Vec<PathBuf> = (0..7)
        .map(|i| {
            t.file(
                &format!("in/f{i}.txt"),
                format!("file {i}").as_bytes(),
                0o600,
            )
        })
        .collect();
    let b = Broker::start(
        &t,
        r#"
[broker]
socket_mode = "0666"
max_batch = 2

[[client]]
name = "tester"
users = [0]
  [[client.allow]]
  path = "{dir}/in/"
  [[client.deny]]
  path = "{dir}/in/f3.txt"
"#,
    );
    let c = b.client();
    assert_eq!(c.max_batch(), 2);
    let audited = |p: &Path| {
        let log = b.log();
        log.contains(&format!("path=\"{}\"", p.display()))
    };
    let mut it = c.open_iter(names.iter());
    let (first, file) = it.next().unwrap();
    assert_eq!(first, &names[0]);
    assert!(file.is_ok());
    // Handed the first batch, the caller has the broker working on the second already...
    assert!(
        eventually(Duration::from_secs(10), || audited(&names[2])
            && audited(&names[3])),
        "the next batch was not requested ahead:\n{}",
        b.log()
    );
    // ...and on no more than that.
    std::thread::sleep(Duration::from_millis(200));
    assert!(!audited(&names[4]), "more than one batch ahead");
    // Every result in order, each with its own path.
    let rest: Vec<_> = it.collect();
    assert_eq!(rest.len(), 6);
    for (i, (path, result)) in rest.into_iter().enumerate() {
        let i = i + 1;
        assert_eq!(path, &names[i]);
        if i == 3 {
            let e = result.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
        } else {
            let mut s = String::new();
            result.unwrap().read_to_string(&mut s).unwrap();
            assert_eq!(s, format!("file {i}"));
        }
    }
    // An iterator dropped with a batch in flight leaves the connection usable.
    let mut it = c.open_iter(names.iter());
    it.next().unwrap().1.unwrap();
    drop(it);
    for _ in 0..3 {
        c.open(&names[6]).unwrap();
    }
    // ...and the batch it had in flight is closed when it arrives, not parked.
    let held = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|l| l == &names[2] || l == &names[3])
        .count();
    assert_eq!(held, 0, "the abandoned batch's descriptors are still open");
}

#[test]
fn a_wedged_broker_is_a_timeout_not_a_hang() {
    let t = tree();
    let b = Broker::start(&t, POLICY);
    let c = b.client();
    c.set_timeout(Some(Duration::from_secs(1))).unwrap();
    stop_server(&b, nix::sys::signal::Signal::SIGSTOP);
    // kill(2) returns before every thread has stopped: wait until they all have.
    assert!(
        eventually(Duration::from_secs(10), || all_stopped(b.pid())),
        "the broker did not stop"
    );
    let start = Instant::now();
    let e = Client::connect_timeout(&b.socket, Duration::from_secs(1)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    // A call on a connection made before the broker stopped times out too.
    let e = c.open(t.join("q/a.txt")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    // from_env honours FDBROKER_TIMEOUT.
    let mut cmd = Command::new(probe());
    cmd.args(["stat", "/"])
        .env("FDBROKER_SOCKET", &b.socket)
        .env("FDBROKER_TIMEOUT", "1");
    let out = run_as_nobody(&mut cmd);
    let stdout = text(&out.stdout);
    assert!(
        !out.status.success() && stdout.contains("TimedOut"),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(start.elapsed() < Duration::from_secs(20));
    stop_server(&b, nix::sys::signal::Signal::SIGCONT);
    // The timed-out request's late reply is dropped; the connection still serves.
    let mut s = String::new();
    c.set_timeout(Some(Duration::from_secs(10))).unwrap();
    c.open(t.join("q/a.txt"))
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    assert_eq!(s, "alpha");
    Client::connect_timeout(&b.socket, Duration::from_secs(10)).unwrap();
}

#[test]
fn a_spinning_client_gets_the_same_answers_and_still_times_out() {
    let t = tree();
    let b = Broker::start(&t, POLICY);
    let c = b.client();
    c.set_spin(Duration::from_millis(2));
    for _ in 0..50 {
        let mut s = String::new();
        c.open(t.join("q/a.txt"))
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "alpha");
        let e = c.open(t.join("q/keys/k.pem")).unwrap_err();
        assert_eq!(errno_of(&e), libc::EACCES, "{e}");
    }
    let files: Vec<_> = ["q/a.txt", "q/z.txt", "q/sub/b.txt"]
        .iter()
        .map(|p| t.join(p))
        .collect();
    assert!(c.open_many(&files).unwrap().iter().all(Result::is_ok));
    // The spin comes before the timeout, not instead of it.
    c.set_timeout(Some(Duration::from_secs(1))).unwrap();
    stop_server(&b, nix::sys::signal::Signal::SIGSTOP);
    assert!(
        eventually(Duration::from_secs(10), || all_stopped(b.pid())),
        "the broker did not stop"
    );
    let start = Instant::now();
    let e = c.open(t.join("q/a.txt")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    assert!(start.elapsed() < Duration::from_secs(20));
    stop_server(&b, nix::sys::signal::Signal::SIGCONT);
}

/// Is every thread of `pid` in the stopped state (`T`)?
/// Stop (or continue) the process that serves: the monitor is not what answers.
fn stop_server(b: &Broker, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(b.pid()), sig).unwrap();
}

fn all_stopped(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().starts_with('T'))
            })
            .unwrap_or(false)
    })
}

#[test]
fn connect_timeout_bounds_a_listener_that_never_accepts() {
    use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
    let t = TempDir::new("library-wedged");
    let path = t.join("wedged.sock");
    let listener = nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    nix::sys::socket::bind(listener.as_raw_fd(), &UnixAddr::new(&path).unwrap()).unwrap();
    nix::sys::socket::listen(&listener, Backlog::new(0).unwrap()).unwrap();
    // Fill the backlog; whatever connects next waits.
    let _queued: Vec<_> = (0..4)
        .filter_map(|_| {
            let s = nix::sys::socket::socket(
                AddressFamily::Unix,
                SockType::SeqPacket,
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                None,
            )
            .unwrap();
            nix::sys::socket::connect(s.as_raw_fd(), &UnixAddr::new(&path).unwrap())
                .ok()
                .map(|()| s)
        })
        .collect();
    let start = Instant::now();
    let e = Client::connect_timeout(&path, Duration::from_millis(500)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

/// A probe in `repl` mode, driven line by line.
struct Repl {
    child: Child,
    stdin: std::process::ChildStdin,
    lines: mpsc::Receiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Repl {
    fn start(mut cmd: Command) -> Repl {
        let mut child = cmd
            .arg("repl")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = std::sync::Arc::clone(&stderr);
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines() {
                let Ok(l) = l else { break };
                let mut s = sink.lock().unwrap();
                s.push_str(&l);
                s.push('\n');
            }
        });
        let r = Repl {
            child,
            stdin,
            lines,
            stderr,
        };
        assert_eq!(r.line(), "READY", "{}", r.stderr());
        r
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("the probe did not answer:\n{}", self.stderr()))
    }

    fn ask(&mut self, cmd: &str) -> String {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        self.line()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Repl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Point `link` at `target`, replacing what it pointed at.
fn repoint(link: &Path, target: &Path) {
    let tmp = link.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

#[test]
fn a_socket_client_reconnects_once_when_the_broker_restarts() {
    let t = tree();
    let link = t.join("broker.sock");
    let a = t.join("q/a.txt");
    let b1 = Broker::start(&t, POLICY);
    repoint(&link, &b1.socket);
    // In this process: the descriptor number survives the reconnect.
    let c = Client::connect(&link).unwrap();
    c.open(&a).unwrap();
    let fd = c.as_fd().as_raw_fd();
    // As nobody, with the tracing event on its stderr.
    let mut cmd = Command::new(probe());
    cmd.env("FDBROKER_SOCKET", &link)
        .uid(nobody_uid())
        .gid(nobody_gid());
    let mut repl = Repl::start(cmd);
    assert_eq!(
        repl.ask(&format!("cat {}", a.display())),
        format!("CAT {} alpha", a.display())
    );

    drop(b1);
    let b2 = Broker::start(&t, POLICY);
    repoint(&link, &b2.socket);
    let mut s = String::new();
    c.open(&a).unwrap().read_to_string(&mut s).unwrap();
    assert_eq!(s, "alpha");
    assert_eq!(c.as_fd().as_raw_fd(), fd, "the descriptor number changed");
    assert_eq!(c.metadata(&a).unwrap().len(), 5);
    assert_eq!(
        repl.ask(&format!("cat {}", a.display())),
        format!("CAT {} alpha", a.display())
    );
    assert!(
        eventually(Duration::from_secs(5), || repl
            .stderr()
            .contains("reconnected")),
        "no tracing event:\n{}",
        repl.stderr()
    );
    // Once: with no broker to reconnect to, the error is plain.
    drop(b2);
    let e = c.open(&a).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionAborted, "{e}");
    assert!(e.to_string().contains("reconnecting"), "{e}");
}

#[test]
fn an_inherited_connection_reports_a_lost_broker_as_aborted() {
    use fdbroker::{Binding, ServeOptions, Server, Shared};
    let t = tree();
    let policy = POLICY
        .replace("{dir}", t.path().to_str().unwrap())
        .replace("{nobody}", &nobody_uid().to_string());
    let policy = fdbroker_policy::Policy::parse(&policy, Path::new("inline.toml")).unwrap();
    let (ours, theirs) = fdbroker_shared::Channel::pair().unwrap();
    let theirs = std::os::fd::OwnedFd::from(theirs);
    let n = theirs.as_raw_fd();
    let mut cmd = Command::new(probe());
    cmd.env("FDBROKER_FD", n.to_string())
        .env_remove("FDBROKER_SOCKET")
        .uid(nobody_uid())
        .gid(nobody_gid());
    // SAFETY: between fork and exec, only fcntl(2) on a descriptor the child inherited:
    // async-signal-safe, allocating nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::fcntl::fcntl(
                std::os::fd::BorrowedFd::borrow_raw(n),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )?;
            Ok(())
        });
    }
    let shared = std::sync::Arc::new(Shared::new(policy, None));
    let server = Server::single(
        shared,
        ours,
        fdbroker_shared::peer::PeerCredentials {
            pid: 0,
            uid: nobody_uid(),
            gid: nobody_gid(),
        },
        Binding::Named("tester".into()),
        &ServeOptions {
            threads: 2,
            handle_signals: false,
        },
    )
    .unwrap();
    let stopper = server.stopper();
    let serving = std::thread::spawn(move || server.run());
    let mut repl = Repl::start(cmd);
    drop(theirs);
    let a = t.join("q/a.txt");
    assert_eq!(
        repl.ask(&format!("cat {}", a.display())),
        format!("CAT {} alpha", a.display())
    );
    stopper.stop();
    serving.join().unwrap().unwrap();
    let answer = repl.ask(&format!("cat {}", a.display()));
    assert!(
        answer.starts_with(&format!("ERR {} ConnectionAborted", a.display()))
            && answer.contains("FDBROKER_FD"),
        "{answer}"
    );
}

/// A spawn-mode policy whose sandbox may run the shell and this build's binaries.
fn spawn_policy(t: &TempDir) -> PathBuf {
    let bins: Vec<String> = [fdbroker_bin(), probe()]
        .iter()
        .map(|b| format!("{:?}", b.parent().unwrap().display().to_string()))
        .collect();
    t.file(
        "spawn.toml",
        format!(
            r#"
[sandbox]
read_only = ["/usr", "/bin", "/lib", "/lib64", "/etc/ld.so.cache", {bins}]

[[client]]
name = "worker"
users = ["nobody"]
  [[client.allow]]
  path = "{dir}/q/"
  access = ["read", "directory"]
  [[client.deny]]
  path = "{dir}/q/keys/"
"#,
            bins = bins.join(", "),
            dir = t.path().display()
        )
        .as_bytes(),
        0o644,
    )
}

#[test]
fn several_processes_of_one_run_tree_each_get_a_connection() {
    let t = tree();
    let policy = spawn_policy(&t);
    let e2e = fdbroker_bin();
    let (a, b) = (t.join("q/a.txt"), t.join("q/sub/b.txt"));
    let script = format!(
        "set -e; E={e2e}; $E cat {a}; $E cat {b}; \
         $E cat {a} | ( $E cat {b}; cat ); \
         {probe} stat {a}; {probe} cat {b}",
        e2e = e2e.display(),
        probe = probe().display(),
        a = a.display(),
        b = b.display()
    );
    // The pipeline's two stages share the inherited connection at the same time.
    let mut cmd = Command::new(fdbroker_bin());
    cmd.arg("run")
        .arg("--policy")
        .arg(&policy)
        .args(["--", "/bin/sh", "-c", &script]);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.matches("alpha").count(), 2, "{stdout}\n{stderr}");
    assert_eq!(stdout.matches("beta!").count(), 3, "{stdout}\n{stderr}");
    assert!(!stderr.contains("protocol violation"), "{stderr}");
    assert!(
        stdout.contains(&format!("STAT {} file 5 ", a.display())),
        "{stdout}"
    );
}

#[test]
fn new_connections_share_the_identity_and_the_limits() {
    let t = tree();
    let b = Broker::start(
        &t,
        &POLICY.replace(
            "socket_mode = \"0666\"",
            "socket_mode = \"0666\"\nmax_connections_per_uid = 3",
        ),
    );
    let c = b.client();
    let second = c.new_connection().unwrap();
    assert_eq!(second.client_name(), c.client_name());
    assert_eq!(second.metadata(t.join("q/a.txt")).unwrap().len(), 5);
    let third = second.new_connection().unwrap();
    // uid 0 now holds three connections: the next is refused, like a fourth connect.
    let e = third.new_connection().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WouldBlock, "{e}");
    assert_eq!(errno_of(&e), libc::EAGAIN);
    // The refused request leaves the connection serving.
    third.open(t.join("q/a.txt")).unwrap();
    // The socket a client stands on is a SOCK_SEQPACKET connection.
    let ty = nix::sys::socket::getsockopt(&c.as_fd(), nix::sys::socket::sockopt::SockType).unwrap();
    assert_eq!(ty, nix::sys::socket::SockType::SeqPacket);
}

#[test]
fn a_root_worker_drops_privileges_connects_then_confines() {
    let t = tree();
    let b = Broker::start(
        &t,
        &POLICY.replace("users = [0, {nobody}]", "users = [\"nobody\"]"),
    );
    let a = t.join("q/a.txt");
    // Connecting as root first: the broker sees uid 0, which no client matches.
    let mut cmd = Command::new(probe());
    cmd.args(["cat", a.to_str().unwrap()])
        .env("FDBROKER_SOCKET", &b.socket);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(30));
    assert!(text(&out.stdout).contains("uid 0"), "{}", text(&out.stdout));
    // The documented order: drop, connect, confine.
    let mut cmd = Command::new(probe());
    cmd.args([
        "--order",
        b.socket.to_str().unwrap(),
        "cat",
        a.to_str().unwrap(),
    ]);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(30));
    let stdout = text(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("CAT {} alpha", a.display())),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    let mut cmd = Command::new(probe());
    cmd.args(["--order", b.socket.to_str().unwrap(), "uid"]);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(30));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("UID {0} {0}", nobody_uid())
    );
    assert!(
        b.log().contains(&format!("uid={}", nobody_uid())),
        "{}",
        b.log()
    );
}

#[tokio::test]
async fn the_async_client_opens_stats_and_lists() {
    let t = tree();
    let b = Broker::start(&t, POLICY);
    let c = std::sync::Arc::new(
        fdbroker_worker::tokio::Client::connect(&b.socket)
            .await
            .unwrap(),
    );
    assert_eq!(c.client_name(), "tester");
    let mut s = String::new();
    c.open(t.join("q/a.txt"))
        .await
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    assert_eq!(s, "alpha");
    let e = c.open(t.join("outside.txt")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    let many = c
        .open_many(&[t.join("q/a.txt"), t.join("q/nope"), t.join("q/z.txt")])
        .await
        .unwrap();
    assert!(many[0].is_ok() && many[2].is_ok());
    assert_eq!(many[1].as_ref().unwrap_err().kind(), ErrorKind::NotFound);
    drop(many);
    let m = c.metadata(t.join("q/sub")).await.unwrap();
    assert!(m.is_dir());
    assert_eq!(m.file_type(), FileKind::Directory);
    let mut names: Vec<String> = c
        .read_dir(t.join("q/sub"))
        .await
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["b.txt", "deeper"]);
    // Many tasks on one connection, each given its own reply.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let c = std::sync::Arc::clone(&c);
        let (path, want) = if i % 2 == 0 {
            (t.join("q/a.txt"), 5)
        } else {
            (t.join("q/sub/deeper/c.txt"), 11)
        };
        tasks.push(tokio::spawn(async move {
            let m = c.metadata(&path).await.unwrap();
            assert_eq!(m.len(), want);
            let f = c.open(&path).await.unwrap();
            assert_eq!(f.metadata().unwrap().len(), want);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // A task given up while it waits (a timeout) leaves its reply to be dropped on
    // arrival: the connection goes on serving the others.
    stop_server(&b, nix::sys::signal::Signal::SIGSTOP);
    assert!(eventually(Duration::from_secs(10), || all_stopped(b.pid())));
    let gave_up = tokio::time::timeout(Duration::from_millis(200), c.open(t.join("q/a.txt"))).await;
    assert!(gave_up.is_err(), "the stopped broker answered");
    stop_server(&b, nix::sys::signal::Signal::SIGCONT);
    for _ in 0..3 {
        assert_eq!(c.metadata(t.join("q/z.txt")).await.unwrap().len(), 3);
    }
    // ...and its descriptor is closed, not parked for ever.
    let a = t.join("q/a.txt");
    let held = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == a))
        .count();
    assert_eq!(held, 0, "the abandoned reply's descriptor is still open");
    // A blocking connection with the same identity, made by the broker.
    let blocking = c.new_connection().await.unwrap();
    assert_eq!(blocking.client_name(), "tester");
    let _ = blocking
        .open_with(t.join("q/sub"), Access::Directory)
        .unwrap();
}

#[test]
fn the_scanner_example_walks_a_tree_under_run() {
    let t = tree();
    t.file(
        "q/sub/marker.bin",
        b"xxEICAR-STANDARD-ANTIVIRUS-TEST-FILExx",
        0o600,
    );
    t.dir("q/sub", 0o700);
    t.file(
        "sigs.txt",
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../worker/examples/scanner/signatures.txt"),
        )
        .unwrap(),
        0o600,
    );
    let policy = spawn_policy(&t);
    let text = std::fs::read_to_string(&policy).unwrap()
        + &format!(
            "  [[client.allow]]\n  path = \"{}\"\n",
            t.join("sigs.txt").display()
        );
    std::fs::write(&policy, text).unwrap();
    let scanner = sibling_bin("examples/scanner");
    let mut cmd = Command::new(fdbroker_bin());
    cmd.arg("run")
        .arg("--policy")
        .arg(&policy)
        .arg("--")
        .arg(&scanner)
        .args([
            "--signatures",
            t.join("sigs.txt").to_str().unwrap(),
            "--walk",
            t.join("q").to_str().unwrap(),
        ]);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
    let stdout = fdbroker_tests::text(&out.stdout);
    let stderr = fdbroker_tests::text(&out.stderr);
    for (rel, verdict) in [
        ("q/a.txt", "clean"),
        ("q/sub/deeper/c.txt", "clean"),
        ("q/sub/marker.bin", "FOUND Test.EICAR-Marker"),
    ] {
        assert!(
            stdout.contains(&format!("{}: {verdict}", t.join(rel).display())),
            "{rel}: {stdout}\n{stderr}"
        );
    }
    // The deny carve-out is not scanned, and not even seen: the broker's listing leaves
    // it out, as if it did not exist.
    assert!(!stdout.contains("k.pem"), "{stdout}");
    assert!(
        !stderr.contains("not scanned") && !stdout.contains("keys"),
        "{stdout}\n{stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "found something: exit 1");
}

/// A spin longer than the timeout does not outlast it: the timeout bounds how long a
/// reply may take, spinning or not.
#[test]
fn a_spin_longer_than_the_timeout_still_times_out() {
    let t = tree();
    let b = Broker::start(&t, POLICY);
    let c = b.client();
    c.set_spin(Duration::from_secs(60));
    c.set_timeout(Some(Duration::from_secs(1))).unwrap();
    c.open(t.join("q/a.txt")).unwrap();
    stop_server(&b, nix::sys::signal::Signal::SIGSTOP);
    assert!(
        eventually(Duration::from_secs(10), || all_stopped(b.pid())),
        "the broker did not stop"
    );
    let start = Instant::now();
    let e = c.open(t.join("q/a.txt")).unwrap_err();
    let took = start.elapsed();
    stop_server(&b, nix::sys::signal::Signal::SIGCONT);
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
}
