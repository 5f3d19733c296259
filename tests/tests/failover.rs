//! A broker that fails safe: a server that dies (`kill -9`, a crash, an exit) is
//! replaced by the monitor while the listeners stay open and the socket file stays;
//! servers that keep dying make the monitor give up with a non-zero exit, for the
//! service manager; a reload keeps the descriptor charge of connections made with
//! `Connect`; and a handover that fails is reported as a failed reload, without
//! removing the socket file the new server listens on. Real processes, real signals.
#![allow(clippy::unwrap_used)]

use fdbroker_shared::frame::MAX_MESSAGE;
use fdbroker_tests::{
    Broker, TempDir, fdbroker_bin, many_frame, open_frame, read_text, run_with_timeout, show,
    wait_until,
};
use fdbroker_worker::Client;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const FILES: usize = 128;

fn tree() -> TempDir {
    let t = TempDir::new("failover");
    for i in 0..FILES {
        t.file(&format!("d/f{i:03}"), format!("file {i}").as_bytes(), 0o600);
    }
    t
}

fn policy() -> String {
    "[[client]]\nname = \"t\"\nusers = [0]\n[[client.allow]]\npath = \"{dir}/d/\"\n".to_owned()
}

/// The monitor's children (its servers).
fn servers(b: &Broker) -> Vec<i32> {
    let m = b.monitor_pid();
    std::fs::read_to_string(format!("/proc/{m}/task/{m}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// A fresh client's request, served (within the client's own timeout).
fn served(t: &TempDir, socket: &Path) -> bool {
    let Ok(c) = Client::connect_timeout(socket, Duration::from_secs(5)) else {
        return false;
    };
    c.open(t.join("d/f007"))
        .is_ok_and(|f| read_text(f) == "file 7")
}

/// Return once the monitor knows its server is ready: a reload is answered only then
/// (before, a server that dies is a failed start, and the monitor exits). Then a new
/// server, ready, serves.
fn settled(b: &Broker) {
    let out = reload(b);
    assert!(out.status.success(), "{}\n{}", show(&out), b.log());
}

/// `fdbroker reload PID`, with a generous timeout.
fn reload(b: &Broker) -> Output {
    let mut cmd = Command::new(fdbroker_bin());
    cmd.arg("reload")
        .arg(b.monitor_pid().to_string())
        .arg("--timeout")
        .arg("60");
    run_with_timeout(&mut cmd, Duration::from_secs(70))
}

/// `kill -9` of the serving server used to make the monitor exit (rc 1) and leave the
/// socket file behind: one crash was a full outage. Now a new server serves on the
/// same, never-closed listener; a client connected before reconnects once, as the
/// client library documents; the log says how the old server ended.
#[test]
fn a_server_killed_with_sigkill_is_replaced_and_the_next_request_is_served() {
    let t = tree();
    let mut b = Broker::start(&t, &policy());
    settled(&b);
    let before = b.client();
    assert_eq!(read_text(before.open(t.join("d/f001")).unwrap()), "file 1");
    let file = fdbroker_tests::path_dev_ino(&b.socket);
    let old = b.pid();

    let killed = Instant::now();
    kill(Pid::from_raw(old), Signal::SIGKILL).unwrap();
    wait_until(
        Duration::from_secs(30),
        || format!("no request was served after the kill:\n{}", b.log()),
        || served(&t, &b.socket),
    );
    let took = killed.elapsed();
    println!("from kill -9 of the server to the next served request: {took:?}");

    assert!(b.alive(), "the monitor exited:\n{}", b.log());
    assert_ne!(b.pid(), old, "a new server serves");
    assert_eq!(
        fdbroker_tests::path_dev_ino(&b.socket),
        file,
        "the socket file is the same one"
    );
    assert!(
        b.log().contains("was killed by signal SIGKILL"),
        "the log says how it ended:\n{}",
        b.log()
    );
    // The connection made before: it reconnects once and carries on.
    assert_eq!(read_text(before.open(t.join("d/f002")).unwrap()), "file 2");
    // And the service still stops cleanly, removing its socket file.
    b.signal(Signal::SIGTERM);
    let status = b
        .wait_exit(Duration::from_secs(30))
        .expect("the monitor exits");
    assert!(status.success(), "{status}\n{}", b.log());
    assert!(!b.socket.exists(), "the socket file is removed at the stop");
}

/// The Python client, like the Rust one, reconnects once when its connection ends
/// because the server died, and its request is served by the replacement.
#[test]
fn the_python_client_reconnects_once_after_the_server_is_killed() {
    use std::io::{BufRead, BufReader, Write};
    let t = tree();
    let b = Broker::start(&t, &policy());
    settled(&b);
    let script = r#"
import sys
from fdbroker import Client
c = Client(sys.argv[1], timeout=20)
fileno = c.fileno()
print("first", c.open(sys.argv[2]).read().decode(), flush=True)
sys.stdin.readline()
print("second", c.open(sys.argv[3]).read().decode(), c.fileno() == fileno, flush=True)
"#;
    let mut py = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .arg(&b.socket)
        .arg(t.join("d/f001"))
        .arg(t.join("d/f002"))
        .env(
            "PYTHONPATH",
            fdbroker_tests::repo_root().join("worker/python/src"),
        )
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(py.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "first file 1");
    let old = b.pid();
    kill(Pid::from_raw(old), Signal::SIGKILL).unwrap();
    wait_until(
        Duration::from_secs(30),
        || format!("no request was served after the kill:\n{}", b.log()),
        || served(&t, &b.socket),
    );
    py.stdin.take().unwrap().write_all(b"go\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    let status = fdbroker_tests::wait_exit(&mut py, Duration::from_secs(60));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut py.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(line.trim(), "second file 2 True", "{err}\n{}", b.log());
    assert!(status.is_some_and(|s| s.success()), "{err}");
}

/// A server that exits on its own (here: SIGTERM sent to it, not to the monitor) used
/// to remove the socket file on its way out, and the monitor then exited too. The
/// socket file is the monitor's now: it stays, and the replacement serves there.
#[test]
fn a_server_that_exits_on_its_own_leaves_the_socket_file_to_its_replacement() {
    let t = tree();
    let mut b = Broker::start(&t, &policy());
    settled(&b);
    let file = fdbroker_tests::path_dev_ino(&b.socket);
    let old = b.pid();
    kill(Pid::from_raw(old), Signal::SIGTERM).unwrap();
    wait_until(
        Duration::from_secs(30),
        || format!("the old server {old} did not go:\n{}", b.log()),
        || !Path::new(&format!("/proc/{old}")).exists() || servers(&b) != vec![old],
    );
    wait_until(
        Duration::from_secs(30),
        || format!("no request was served after the exit:\n{}", b.log()),
        || served(&t, &b.socket),
    );
    assert!(b.alive(), "the monitor exited:\n{}", b.log());
    assert_eq!(fdbroker_tests::path_dev_ino(&b.socket), file);
    assert!(b.log().contains("exited with status 0"), "{}", b.log());
}

/// Servers that keep dying soon after their start make the monitor give up, after a
/// few tries with growing pauses, and exit non-zero: then it is the service manager's
/// turn (`Restart=`). It must not give up at the first death, nor spin for ever.
#[test]
fn servers_that_keep_dying_make_the_monitor_give_up_with_a_failure() {
    let t = tree();
    let mut b = Broker::start(&t, &policy());
    settled(&b);
    let mut killed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = b.wait_exit(Duration::from_millis(10)) {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the monitor never gave up:\n{}",
            b.log()
        );
        for pid in servers(&b) {
            if !killed.contains(&pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                killed.push(pid);
            }
        }
    };
    let log = b.log();
    assert!(!status.success(), "{status}\n{log}");
    assert!(killed.len() > 1, "it gave up at the first death:\n{log}");
    assert!(log.contains("giving up"), "{log}");
    assert!(
        log.matches("starting a new one").count() >= 2,
        "it tried again before giving up:\n{log}"
    );
}

/// A connection made with `Connect` (`Client::new_connection`) was closed at a reload
/// with its charge of descriptors in flight dropped, while the kernel still counted
/// them: a uid that never reads got a fresh allowance after every reload. The charge
/// now survives every reload: after two the uid, which has a full reply unread, is held back
/// until its worker has received those descriptors.
#[test]
fn a_reload_keeps_the_charge_of_connections_made_with_connect() {
    let t = tree();
    // At 1,024 descriptors a uid may have one full reply (128) in flight.
    let b = Broker::start_wrapped(&t, &policy(), &[], "ulimit -n 1024");
    let c = b.client();
    let derived = c.new_connection().unwrap();
    let hog = fdbroker_shared::Channel::wrap(derived.as_fd().try_clone_to_owned().unwrap());
    let batch: Vec<Vec<u8>> = (0..FILES)
        .map(|i| {
            t.join(&format!("d/f{i:03}"))
                .as_os_str()
                .as_bytes()
                .to_vec()
        })
        .collect();
    hog.send(&many_frame(1 << 40, batch)).unwrap();
    // Answered, unread: the reply and its 128 descriptors wait in the hog's socket.
    wait_until(
        Duration::from_secs(10),
        || format!("the batch was never answered:\n{}", b.log()),
        || readable(&hog),
    );

    // Every reload, not only the first: the charge travels on each time.
    for _ in 0..2 {
        let out = reload(&b);
        assert!(out.status.success(), "{}\n{}", show(&out), b.log());
    }

    // A new connection of the same uid asks for one file: held back, not answered.
    let probe = fdbroker_tests::raw_session(&b.socket, "probe");
    probe
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    probe
        .send(&open_frame(
            9,
            t.join("d/f003").as_os_str().as_bytes(),
            fdbroker_shared::wire::Access::Read,
            0,
        ))
        .unwrap();
    let mut rx = vec![0; MAX_MESSAGE];
    let early = probe.recv_with_fds(&mut rx, 1);
    assert!(
        early.is_err(),
        "the uid got a fresh allowance at the reload: answered while 128 descriptors \
         are unread\n{}",
        b.log()
    );
    // Once the hog reads its reply, the kernel releases the charge, and so does the
    // broker: the request is answered.
    let (_, fds) = hog.recv_with_fds(&mut rx, 128).unwrap();
    assert_eq!(fds.len(), FILES);
    drop(fds);
    probe
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (reply, fds) = fdbroker_tests::recv_reply(&probe);
    assert_eq!(reply.id, 9);
    assert_eq!(fds.len(), 1, "{reply:?}\n{}", b.log());
}

/// Whether a message waits to be read on `ch` (`poll`, no wait).
fn readable(ch: &fdbroker_shared::Channel) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(ch.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
}

/// A handover that fails midway (the old server stops and is killed before it hands
/// anything over) used to be reported as a successful reload. It is a failure now
/// (`fdbroker reload` exits 1), the socket file stays, and the new server serves.
#[test]
fn a_handover_that_fails_is_reported_and_keeps_the_socket_file() {
    let t = tree();
    let b = Broker::start(&t, &policy());
    settled(&b);
    let file = fdbroker_tests::path_dev_ino(&b.socket);
    let old = b.pid();
    // Stopped, it cannot hand over; the monitor kills it after its bound.
    kill(Pid::from_raw(old), Signal::SIGSTOP).unwrap();
    let out = reload(&b);
    assert!(
        !out.status.success(),
        "the reload reported success although the handover failed:\n{}\n{}",
        show(&out),
        b.log()
    );
    assert!(
        fdbroker_tests::text(&out.stderr).contains("could not hand every connection over"),
        "{}",
        show(&out)
    );
    assert_eq!(fdbroker_tests::path_dev_ino(&b.socket), file);
    wait_until(
        Duration::from_secs(30),
        || format!("nothing served after the failed handover:\n{}", b.log()),
        || served(&t, &b.socket),
    );
    assert!(b.log().contains("the handover failed"), "{}", b.log());
    assert!(!Path::new(&format!("/proc/{old}")).exists() || servers(&b) != vec![old]);
}
