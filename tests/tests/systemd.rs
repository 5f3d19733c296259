//! Under systemd, for real: socket activation (`systemd-socket-activate --seqpacket`),
//! `sd_notify` on a socket the test listens on, journal priority prefixes and JSON
//! logs, the shipped units checked by `systemd-analyze`, and those units run by a real
//! systemd user manager in a private mount and PID namespace.
//!
//! These tests need root and systemd's tools; where one is missing they fail with a
//! message saying what to install, never pass silently.
#![allow(clippy::unwrap_used)]

use fdbroker::server::DRAIN_BOUND;
use fdbroker_tests::manager::{UnitPaths, UserDatabase, UserManager, install_user_units, require};
use fdbroker_tests::{
    HANG, TempDir, fdbroker_bin, read_text, repo_root, run_with_timeout, show, text, wait_until,
};
use fdbroker_worker::Client;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const SOCKET_ACTIVATE: &str = "/usr/bin/systemd-socket-activate";
const ANALYZE: &str = "/usr/bin/systemd-analyze";

/// The exposure `systemd-analyze security --offline=true` gives the shipped service,
/// as stated in README.md. A unit change that weakens the hardening raises it and fails.
const EXPOSURE_CEILING: f64 = 1.0;

fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../broker/systemd")
}

/// `[[client]]` root, granted `paths` under `dir`.
fn policy(dir: &Path, broker: &str, paths: &[&str]) -> String {
    let mut p = format!("[broker]\n{broker}[[client]]\nname = \"t\"\nusers = [0]\n");
    for path in paths {
        p.push_str(&format!(
            "[[client.allow]]\npath = \"{}\"\n",
            dir.join(path).display()
        ));
    }
    p
}

fn wait_for(what: &str, limit: Duration, ready: impl FnMut() -> bool) {
    wait_until(limit, || format!("waiting for {what}"), ready);
}

/// A child process killed on drop (SIGTERM, then SIGKILL).
struct Proc {
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(cmd: &mut Command, log: &Path) -> Proc {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        Proc {
            child: Some(child),
            log: log.to_owned(),
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().unwrap().id() as i32)
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).unwrap();
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        fdbroker_tests::wait_exit(self.child.as_mut().unwrap(), limit)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            fdbroker_tests::stop_child(&mut child);
        }
    }
}

/// The test's end of `NOTIFY_SOCKET`.
struct Notifications {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Notifications {
    fn bind(path: PathBuf) -> Notifications {
        let socket = UnixDatagram::bind(&path).unwrap();
        Notifications { socket, path }
    }

    /// The next notification, within `limit`.
    fn next(&self, limit: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(limit)).unwrap();
        let mut buf = vec![0; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8(buf[..n].to_vec()).unwrap()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
            Err(e) => panic!("notify socket: {e}"),
        }
    }

    /// Skip notifications until one has the line `key` (such as `READY=1`); return it.
    /// `WATCHDOG=1` pings in between are skipped unless asked for.
    fn expect(&self, key: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(msg) = self.next(left.max(Duration::from_millis(1))) else {
                panic!("no {key} within {limit:?}; saw {seen:?}");
            };
            if msg.lines().any(|l| l == key) {
                return msg;
            }
            seen.push(msg);
        }
    }
}

fn value<'a>(msg: &'a str, key: &str) -> Option<&'a str> {
    msg.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the one it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0);
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

#[test]
fn socket_activation_serves_the_passed_socket_and_reports_to_the_manager() {
    require(SOCKET_ACTIVATE, "systemd");
    let t = TempDir::new("sd-activate");
    t.file("a.txt", b"A", 0o600);
    let policy_path = t.join("policy.toml");
    fs::write(&policy_path, policy(t.path(), "", &["a.txt"])).unwrap();
    let socket = t.join("activated.sock");
    let notify = Notifications::bind(t.join("notify.sock"));
    let mut broker = Proc::spawn(
        Command::new(SOCKET_ACTIVATE)
            .arg("--seqpacket")
            .arg("--listen")
            .arg(&socket)
            .arg("--fdname=fdbroker-test")
            .arg(format!("--setenv=NOTIFY_SOCKET={}", notify.path.display()))
            .arg("--setenv=WATCHDOG_USEC=400000")
            .arg("--setenv=FDBROKER_LOG=debug")
            .arg(fdbroker_bin())
            .arg("serve")
            .arg("--policy")
            .arg(&policy_path),
        &t.join("broker.log"),
    );
    // The first connection starts the broker, which serves it on the passed socket. The
    // file exists from the bind, before listen: connect until the listener accepts.
    let mut client = None;
    wait_for("the activation socket", Duration::from_secs(10), || {
        client = Client::connect(&socket).ok();
        client.is_some()
    });
    let client = client.expect("connected");
    assert_eq!(read_text(client.open(t.join("a.txt")).unwrap()), "A");
    let ready = notify.expect("READY=1", Duration::from_secs(10));
    let status = value(&ready, "STATUS").unwrap();
    assert!(
        // STATUS= names the policy by its whole path while that is short, as here.
        status.starts_with(&format!("serving {}: ", policy_path.display())),
        "{ready:?}"
    );
    let log = broker.log();
    assert!(log.contains("fd 3 (fdbroker-test)"), "{log}");

    // The watchdog is fed, again and again. (How often, half of WATCHDOG_USEC, is not
    // asserted by this test's clock: on a loaded machine a ping, or this read of it, can
    // be late without anything being wrong.)
    for _ in 0..3 {
        notify.expect("WATCHDOG=1", HANG);
    }

    // A reload: RELOADING=1 with the time it began, then READY=1.
    let before = monotonic_usec();
    broker.signal(Signal::SIGHUP);
    let reloading = notify.expect("RELOADING=1", Duration::from_secs(10));
    let at: u64 = value(&reloading, "MONOTONIC_USEC")
        .unwrap()
        .parse()
        .unwrap();
    assert!(before <= at && at <= monotonic_usec(), "{reloading:?}");
    let ready = notify.expect("READY=1", Duration::from_secs(10));
    assert!(!ready.contains("last reload failed"), "{ready:?}");

    // A broken policy is reported in STATUS, and READY=1 follows all the same.
    fs::write(&policy_path, "[[client]]\nname = 7\n").unwrap();
    broker.signal(Signal::SIGHUP);
    notify.expect("RELOADING=1", Duration::from_secs(10));
    let ready = notify.expect("READY=1", Duration::from_secs(10));
    let status = value(&ready, "STATUS").unwrap();
    let at = format!("last reload failed: {}:2:8:", policy_path.display());
    assert!(status.contains(&at), "{status:?}");
    assert_eq!(read_text(client.open(t.join("a.txt")).unwrap()), "A");

    // SIGTERM: STOPPING=1, exit 0; the socket belongs to the manager and stays.
    broker.signal(Signal::SIGTERM);
    notify.expect("STOPPING=1", Duration::from_secs(10));
    let exit = broker
        .wait_exit(DRAIN_BOUND + Duration::from_secs(3))
        .expect("the broker did not stop");
    assert!(exit.success(), "{exit}\n{}", broker.log());
    assert!(
        socket.exists(),
        "the broker removed a socket it did not create"
    );
}

#[test]
fn socket_activation_refuses_a_socket_that_is_not_seqpacket() {
    require(SOCKET_ACTIVATE, "systemd");
    let t = TempDir::new("sd-stream");
    fs::write(t.join("policy.toml"), policy(t.path(), "", &["a.txt"])).unwrap();
    let socket = t.join("stream.sock");
    let mut broker = Proc::spawn(
        Command::new(SOCKET_ACTIVATE)
            .arg("--listen")
            .arg(&socket)
            .arg(fdbroker_bin())
            .arg("serve")
            .arg("--policy")
            .arg(t.join("policy.toml")),
        &t.join("broker.log"),
    );
    // The file exists from the bind, before listen: connect until the listener accepts.
    let mut trigger = None;
    wait_for("the activation socket", Duration::from_secs(10), || {
        trigger = UnixStream::connect(&socket).ok();
        trigger.is_some()
    });
    let exit = broker
        .wait_exit(Duration::from_secs(10))
        .expect("the broker kept running on a stream socket");
    assert!(!exit.success());
    let log = broker.log();
    assert!(
        log.contains("socket activation: fd 3") && log.contains("SOCK_SEQPACKET"),
        "{log}"
    );
    assert!(!log.contains("serving"), "{log}");
}

/// Start `fdbroker serve` with stderr to `log`, extra `args` and `env`; return once
/// the socket accepts connections.
fn serve(t: &TempDir, policy_text: &str, args: &[&str], env: &[(&str, String)]) -> Proc {
    let policy_path = t.join("policy.toml");
    fs::write(&policy_path, policy_text).unwrap();
    let socket = t.join("broker.sock");
    let log = t.join("broker.log");
    fs::write(&log, b"").unwrap();
    let mut cmd = Command::new(fdbroker_bin());
    cmd.arg("serve")
        .arg("--policy")
        .arg(&policy_path)
        .arg("--socket")
        .arg(&socket)
        .args(args)
        .env("FDBROKER_LOG", "debug");
    for (k, v) in env {
        cmd.env(k, v);
    }
    // Appending to the file made above keeps its inode (JOURNAL_STREAM names it).
    let stderr = fs::OpenOptions::new().append(true).open(&log).unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut p = Proc {
        child: Some(child),
        log,
    };
    wait_for("the broker's socket", Duration::from_secs(20), || {
        if let Some(s) = p.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("broker exited early with {s}:\n{}", p.log());
        }
        fdbroker_shared::Channel::connect(&socket).is_ok()
    });
    p
}

fn journal_stream_of(path: &Path) -> String {
    let m = fs::metadata(path).unwrap();
    format!("{}:{}", m.dev(), m.ino())
}

#[test]
fn journal_stream_lines_carry_syslog_priorities() {
    let t = TempDir::new("sd-journal");
    t.file("a.txt", b"A", 0o600);
    let log = t.join("broker.log");
    fs::write(&log, b"").unwrap();
    // Unconfined, for a warning line: it says so at start-up.
    let text = policy(t.path(), "confine = false\n", &["a.txt"]);
    let b = serve(
        &t,
        &text,
        &[],
        &[("JOURNAL_STREAM", journal_stream_of(&log))],
    );
    let c = Client::connect(t.join("broker.sock")).unwrap();
    c.open(t.join("a.txt")).unwrap();
    fs::write(t.join("policy.toml"), "[[client]]\nname = 7\n").unwrap();
    b.signal(Signal::SIGHUP);
    wait_for("the reload error", Duration::from_secs(10), || {
        b.log().contains("policy reload failed")
    });
    let out = b.log();
    let with = |prefix: &str, what: &str| {
        out.lines()
            .any(|l| l.starts_with(prefix) && l.contains(what))
    };
    assert!(with("<4>", "RUNNING UNCONFINED"), "{out}");
    assert!(with("<6>", "serving"), "{out}");
    assert!(with("<7>", "connection accepted"), "{out}");
    assert!(with("<3>", "policy reload failed"), "{out}");
    for line in out.lines() {
        let ok = ["<3>", "<4>", "<6>", "<7>"]
            .iter()
            .any(|p| line.starts_with(p));
        assert!(ok, "a line without its priority: {line:?}");
        // The journal stamps lines itself: no timestamp of our own after the prefix.
        let after = line[3..].trim_start();
        assert!(
            after.starts_with(|c: char| c.is_ascii_uppercase()),
            "{line:?}"
        );
    }
}

#[test]
fn json_logs_are_one_object_per_line_and_no_prefix_without_the_journal() {
    let t = TempDir::new("sd-json");
    t.file("a.txt", b"A", 0o600);
    // JOURNAL_STREAM naming another file: stderr is not the journal, so no prefixes.
    let other = t.file("other", b"", 0o600);
    let b = serve(
        &t,
        &policy(t.path(), "", &["a.txt"]),
        &["--log-format", "json"],
        &[("JOURNAL_STREAM", journal_stream_of(&other))],
    );
    let c = Client::connect(t.join("broker.sock")).unwrap();
    c.open(t.join("a.txt")).unwrap();
    // A file name with a newline cannot split or forge a line.
    let forged = t.join("x\n{\"level\":\"INFO\",\"message\":\"forged\"}");
    assert!(c.open(&forged).is_err());
    drop(c);
    b.signal(Signal::SIGTERM);
    let mut b = b;
    assert!(b.wait_exit(Duration::from_secs(10)).unwrap().success());
    let out = b.log();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() >= 4, "{out}");
    for line in &lines {
        assert!(
            line.starts_with("{\"timestamp\":\"") && line.ends_with('}'),
            "not one JSON object: {line:?}"
        );
        assert!(line.contains("\"level\":\""), "{line}");
    }
    assert!(out.contains("\"message\":\"serving\""), "{out}");
    assert!(out.contains("\"message\":\"stopped\""), "{out}");
}

#[test]
fn shipped_units_pass_verify_and_keep_their_exposure() {
    require(ANALYZE, "systemd");
    let service = fs::read_to_string(units_dir().join("fdbroker.service")).unwrap();
    let socket = fs::read_to_string(units_dir().join("fdbroker.socket")).unwrap();
    for needed in [
        "Type=notify",
        "ExecStart=/usr/bin/fdbroker serve --policy /etc/fdbroker/policy.toml",
        "ExecStartPre=/usr/bin/fdbroker serve --check --policy /etc/fdbroker/policy.toml",
        "NotifyAccess=exec\n",
        "ExecReload=/usr/bin/fdbroker reload --policy /etc/fdbroker/policy.toml $MAINPID",
        "CapabilityBoundingSet=CAP_DAC_READ_SEARCH\n",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "PrivateNetwork=yes",
        "PrivateDevices=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_UNIX\n",
        "SystemCallFilter=",
    ] {
        assert!(
            service.contains(needed),
            "fdbroker.service lacks {needed:?}"
        );
    }
    for needed in [
        "ListenSequentialPacket=/run/fdbroker/fdbroker.sock",
        "SocketMode=0660",
        "SocketGroup=",
    ] {
        assert!(socket.contains(needed), "fdbroker.socket lacks {needed:?}");
    }

    // verify wants ExecStart= to name a binary that exists: the one under test.
    let t = TempDir::new("sd-units");
    let bin = fdbroker_bin();
    fs::write(
        t.join("fdbroker.service"),
        service.replace("/usr/bin/fdbroker", bin.to_str().unwrap()),
    )
    .unwrap();
    fs::write(t.join("fdbroker.socket"), &socket).unwrap();
    let out = run_with_timeout(
        Command::new(ANALYZE).current_dir(t.path()).args([
            "verify",
            "./fdbroker.socket",
            "./fdbroker.service",
        ]),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", show(&out));
    assert!(!text(&out.stderr).contains("fdbroker"), "{}", show(&out));

    let out = run_with_timeout(
        Command::new(ANALYZE).current_dir(t.path()).args([
            "security",
            "--offline=true",
            "--no-pager",
            "./fdbroker.service",
        ]),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", show(&out));
    let report = text(&out.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for fdbroker.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure figure in:\n{report}"));
    assert!(
        exposure <= EXPOSURE_CEILING,
        "exposure {exposure} is above {EXPOSURE_CEILING}: a hardening line was weakened\n{report}"
    );
}

#[test]
fn a_user_manager_runs_the_shipped_units() {
    let t = TempDir::new("sd-manager");
    let root = t.path();
    t.file("tree/a.txt", b"A", 0o600);
    t.file("tree/b.txt", b"B", 0o600);
    let policy_path = t.join("policy.toml");
    fs::write(&policy_path, policy(root, "", &["tree/a.txt"])).unwrap();
    // The binary under test, where the service (PrivateTmp=yes) will see it.
    let bin = t.join("bin/fdbroker");
    fs::create_dir_all(bin.parent().unwrap()).unwrap();
    fs::copy(fdbroker_bin(), &bin).unwrap();
    let socket = t.join("fdbroker.sock");
    let log = t.join("broker.log");

    // The shipped units unchanged, and drop-ins for this test's paths.
    install_user_units(
        root,
        &UnitPaths {
            units: &units_dir(),
            bin: &bin,
            policy: &policy_path,
            socket: &socket,
            log: &log,
            socket_group: Some("root"),
        },
    );
    let policy_s = policy_path.display();

    // The `fdbroker` user as the package makes it (its sysusers.d entry): whatever id
    // this machine gives it, read back, never assumed.
    let users = UserDatabase::with_sysusers(
        &root.join("users"),
        &repo_root().join("packaging/sysusers.conf"),
    );
    let m = UserManager::start(root, &users);
    m.systemctl(&["start", "fdbroker.socket"]);
    let meta = fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(m.property("fdbroker.service", "ActiveState"), "inactive");

    // The first connection starts the service, which serves it. Made over a given
    // channel, so it does not reconnect (a client made from the socket path would, and
    // start the service again) and the stop below shows as the connection's end.
    let c = fdbroker_worker::Channel::connect(&socket)
        .and_then(Client::over)
        .unwrap_or_else(|e| {
            panic!(
                "{e}\nbroker:\n{}\nstatus:\n{}",
                fs::read_to_string(&log).unwrap_or_default(),
                show(&m.systemctl_quiet(&["show", "fdbroker.service", "-p", "ExecStartPre"]))
            )
        });
    assert_eq!(read_text(c.open(t.join("tree/a.txt")).unwrap()), "A");
    assert_eq!(
        m.property("fdbroker.service", "ActiveState"),
        "active",
        "{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    let status = m.property("fdbroker.service", "StatusText");
    assert!(
        status.starts_with(&format!("serving {}: ", policy_path.display())),
        "{status:?}"
    );
    // Confined by the unit and by itself: the monitor (MainPID) holds the capability
    // for its servers but uses none; the server uses only it.
    let main_pid = m.property("fdbroker.service", "MainPID");
    let id = users.uid;
    let uid_line = format!("Uid:\t{id}\t{id}\t{id}\t{id}");
    let gid_line = format!("Gid:\t{0}\t{0}\t{0}\t{0}", users.gid);
    let monitor_status = m.inside(&["cat", &format!("/proc/{main_pid}/status")]);
    let server_pid = m.inside(&["cat", &format!("/proc/{main_pid}/task/{main_pid}/children")]);
    let server_pid = server_pid.trim();
    let server_status = m.inside(&["cat", &format!("/proc/{server_pid}/status")]);
    for (who, status, lines) in [
        (
            "monitor",
            &monitor_status,
            [
                uid_line.as_str(),
                gid_line.as_str(),
                "CapBnd:\t0000000000000004",
                "CapEff:\t0000000000000000",
                "NoNewPrivs:\t1",
                "Seccomp:\t2",
            ],
        ),
        (
            "server",
            &server_status,
            [
                uid_line.as_str(),
                gid_line.as_str(),
                "CapBnd:\t0000000000000004",
                "CapEff:\t0000000000000004",
                "NoNewPrivs:\t1",
                "Seccomp:\t2",
            ],
        ),
    ] {
        for line in lines {
            assert!(status.contains(line), "{who}: {line:?} not in\n{status}");
        }
    }

    // Reload: the same connection gets the new rules on its next request, with a new
    // root the confined server could never have reached; MainPID stays.
    let denied = c.open(t.join("tree/b.txt")).unwrap_err();
    assert_eq!(denied.kind(), ErrorKind::PermissionDenied);
    t.file("later/c.txt", b"C", 0o600);
    fs::write(&policy_path, policy(root, "", &["tree/", "later/"])).unwrap();
    let out = m.systemctl_quiet(&["reload", "fdbroker.service"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        show(&out),
        fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(read_text(c.open(t.join("tree/b.txt")).unwrap()), "B");
    assert_eq!(read_text(c.open(t.join("later/c.txt")).unwrap()), "C");
    assert_eq!(m.property("fdbroker.service", "ActiveState"), "active");
    assert_eq!(m.property("fdbroker.service", "MainPID"), main_pid);

    // A refused reload: `systemctl reload` fails, the journal (here the log) says why
    // with FILE:LINE:COL, and the running policy stays.
    fs::write(&policy_path, "[[client]]\nname = 7\n").unwrap();
    let out = m.systemctl_quiet(&["reload", "fdbroker.service"]);
    assert!(!out.status.success(), "{}", show(&out));
    assert_eq!(read_text(c.open(t.join("later/c.txt")).unwrap()), "C");
    assert_eq!(m.property("fdbroker.service", "ActiveState"), "active");
    // Valid again, but one the server refuses (a capability the unit does not grant):
    // refused by the new server, not by the check, and reported the same way.
    fs::write(
        &policy_path,
        policy(root, "", &["tree/"]).replace("path = ", "access = [\"write\"]\npath = "),
    )
    .unwrap();
    let out = m.systemctl_quiet(&["reload", "fdbroker.service"]);
    assert!(!out.status.success(), "{}", show(&out));
    let broker_log = fs::read_to_string(&log).unwrap();
    assert!(
        broker_log.contains("policy reload failed") && broker_log.contains("CAP_DAC_OVERRIDE"),
        "{broker_log}"
    );
    assert_eq!(read_text(c.open(t.join("later/c.txt")).unwrap()), "C");
    assert_eq!(m.property("fdbroker.service", "MainPID"), main_pid);
    fs::write(&policy_path, policy(root, "", &["tree/", "later/"])).unwrap();

    // Stop: clean exit, connection closed, the socket (the manager's) stays.
    m.systemctl(&["stop", "fdbroker.service"]);
    assert_eq!(m.property("fdbroker.service", "Result"), "success");
    assert_eq!(m.property("fdbroker.service", "ExecMainStatus"), "0");
    assert_eq!(m.property("fdbroker.service", "ExecMainCode"), "1"); // exited, not killed
    let gone = c.open(t.join("tree/a.txt")).unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::ConnectionAborted, "{gone}");
    assert!(socket.exists());
    let broker_log = fs::read_to_string(&log).unwrap();
    assert!(
        broker_log.contains("stopping: received SIGTERM"),
        "{broker_log}"
    );
    assert!(broker_log.contains("stopped"), "{broker_log}");

    // A broken policy never starts: ExecStartPre= refuses it with FILE:LINE:COL.
    let servers = |log: &str| {
        log.matches("INFO fdbroker::daemon::server: serving")
            .count()
    };
    let started = servers(&fs::read_to_string(&log).unwrap());
    fs::write(&policy_path, "[[client]]\nname = 7\n").unwrap();
    let out = m.systemctl_quiet(&["start", "fdbroker.service"]);
    assert!(!out.status.success(), "{}", show(&out));
    let broker_log = fs::read_to_string(&log).unwrap();
    assert!(
        broker_log.contains(&format!("{policy_s}:2:8:")),
        "{broker_log}"
    );
    assert_eq!(servers(&broker_log), started, "{broker_log}");
    // ...and `systemctl status` says why without the journal: the check's STATUS=.
    let status = text(&m.systemctl_quiet(&["status", "fdbroker.service"]).stdout);
    assert!(
        status.contains(&format!(
            "Status: \"policy refused, not started: {policy_s}:2:8:"
        )) && status.contains("ExecStartPre="),
        "{status}"
    );
    m.systemctl(&["stop", "fdbroker.service", "fdbroker.socket"]);
    assert!(!socket.exists(), "RemoveOnStop= left the socket");
}
