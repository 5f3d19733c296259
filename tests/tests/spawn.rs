//! Spawn mode (`fdbroker run`) and the library lockdown, end to end: real confined
//! workers, a real broker, real signals.
#![allow(clippy::unwrap_used)]

use fdbroker_tests::{
    Broker, HANG, TempDir, fdbroker_bin, nobody_uid, run_with_input, run_with_timeout, sibling_bin,
    status_field, text, wait_exit,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A tree with a root-only secret and a spawn-mode policy whose sandbox may also
/// execute this build's binaries.
fn fixture() -> (TempDir, PathBuf) {
    let t = TempDir::new("spawn");
    t.file("data/secret.txt", b"root only\n", 0o600);
    t.file(
        "data/eicar.bin",
        b"xxEICAR-STANDARD-ANTIVIRUS-TEST-FILExx",
        0o600,
    );
    t.file("data/plain.bin", b"nothing here", 0o600);
    t.file("data/known-bad.bin", b"known bad sample payload", 0o600);
    t.file(
        "sigs.txt",
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../worker/examples/scanner/signatures.txt"),
        )
        .unwrap(),
        0o600,
    );
    let bin_dir = fdbroker_bin().parent().unwrap().to_owned();
    let policy = t.file(
        "policy.toml",
        format!(
            r#"
[sandbox]
read_only = ["/usr", "/bin", "/lib", "/lib64", "/etc/ld.so.cache", "{bins}"]

[[client]]
name = "worker"
users = ["nobody"]
  [[client.allow]]
  path = "{dir}/data/"
  [[client.allow]]
  path = "{dir}/sigs.txt"
"#,
            bins = bin_dir.display(),
            dir = t.path().display()
        )
        .as_bytes(),
        0o644,
    );
    (t, policy)
}

fn run_cmd(policy: &Path, command: &[&str]) -> Command {
    let mut c = Command::new(fdbroker_bin());
    c.arg("run")
        .arg("--policy")
        .arg(policy)
        .arg("--")
        .args(command);
    c
}

/// A worker-probe under `fdbroker run` (or connected to a serve broker), driven line by line.
struct Driven {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Driven {
    fn start(cmd: Command) -> Driven {
        Driven::start_with_stderr(cmd, Stdio::inherit())
    }

    fn start_with_stderr(mut cmd: Command, stderr: Stdio) -> Driven {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Driven {
            child,
            stdin,
            lines,
        }
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(HANG)
            .expect("the worker did not answer (a hang)")
    }

    fn ask(&mut self, cmd: &str) -> String {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        self.line()
    }

    fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        wait_exit(&mut self.child, limit).expect("process did not exit in time")
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `[sandbox] uid_range`'s default, where `user = "dynamic"` (the default) takes each
/// run's uid (tests/tests/identity.rs).
const TRANSIENT: std::ops::RangeInclusive<u32> = 0x7000_0000..=0x7000_ffff;

/// The uid `pid` runs as (real, effective, saved and filesystem alike), checked to be a
/// transient one and to be its gid too.
fn transient_uid_of(pid: u32) -> u32 {
    let st = status_of(pid);
    let uid: u32 = status_field(&st, "Uid:")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(TRANSIENT.contains(&uid), "{st}");
    for key in ["Uid:", "Gid:"] {
        assert_eq!(
            status_field(&st, key),
            format!("{uid}\t{uid}\t{uid}\t{uid}"),
            "{st}"
        );
    }
    uid
}

fn status_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default()
}

/// The children of `parent`, each with its `/proc` status.
fn children_of(parent: u32) -> Vec<(u32, String)> {
    fdbroker_tests::children_of(parent)
        .into_iter()
        .map(|pid| (pid, status_of(pid)))
        .filter(|(_, st)| !st.is_empty())
        .collect()
}

/// The pid, as this test sees it, of the child of `broker` whose own pid is `reported`
/// in its PID namespace (the last `NSpid` entry): a worker reports its pid as it sees it.
fn worker_pid(broker: u32, reported: u32) -> u32 {
    let children = children_of(broker);
    children
        .iter()
        .find(|(_, st)| {
            status_field(st, "NSpid:").split_whitespace().last()
                == Some(reported.to_string().as_str())
        })
        .map(|(pid, _)| *pid)
        .unwrap_or_else(|| {
            let seen: Vec<_> = children
                .iter()
                .map(|(pid, st)| (pid, status_field(st, "NSpid:")))
                .collect();
            panic!("no child of {broker} is {reported} in its namespace: {seen:?}")
        })
}

/// A marker no other test or run uses, to put in the environment of a process tree.
fn unique_marker() -> (String, String) {
    let value = format!(
        "{}-{}",
        std::process::id(),
        std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos()
    );
    (format!("FDBROKER_TEST_TREE={value}"), value)
}

/// Every process whose environment holds `marker` (`NAME=VALUE`) and that is still
/// running (a zombie's environment reads empty).
fn carrying(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap() {
        let Ok(pid) = e.unwrap().file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|v| v == marker.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

/// Kills, on drop, every process still carrying a marker: a failed assertion leaves
/// nothing running.
struct KillCarrying(String);

impl Drop for KillCarrying {
    fn drop(&mut self) {
        for pid in carrying(&self.0) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// A worker-probe under `fdbroker run`, with the broker's log in the tree as `log`.
fn probe_under_run(t: &TempDir, policy: &Path, log: &str) -> (Driven, PathBuf) {
    let probe = sibling_bin("worker-probe");
    let log = t.join(log);
    let w = Driven::start_with_stderr(
        run_cmd(policy, &[probe.to_str().unwrap()]),
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    (w, log)
}

#[test]
fn run_confines_the_worker_and_serves_it_through_the_broker() {
    let (t, policy) = fixture();
    let (mut w, log) = probe_under_run(&t, &policy, "broker.log");
    let ready = w.line();
    let reported: u32 = ready.strip_prefix("READY ").unwrap().parse().unwrap();
    // It runs as pid 2 of a PID namespace of its own (pid 1 is the namespace's init).
    assert_eq!(reported, 2);
    let pid = worker_pid(w.child.id(), reported);
    // A transient uid and gid of its own (tests/tests/identity.rs).
    let uid = transient_uid_of(pid);
    let secret = t.join("data/secret.txt");
    assert_eq!(
        w.ask(&format!("open {}", secret.display())),
        "OK 10 root only"
    );
    // The audit line names the worker as it runs (not the broker that made the pair),
    // by its pid outside its namespace, as the broker and the administrator see it.
    let audit = std::fs::read_to_string(&log).unwrap();
    let granted = audit
        .lines()
        .find(|l| l.contains("fdbroker::audit") && l.contains("secret.txt"))
        .unwrap_or_else(|| panic!("no audit line in:\n{audit}"));
    for field in [
        format!("uid={uid}"),
        format!("gid={uid}"),
        format!("pid={pid}"),
    ] {
        assert!(granted.contains(&field), "{field} not in {granted}");
    }
    assert_eq!(
        w.ask(&format!("direct {}", secret.display())),
        "ERR PermissionDenied 13"
    );
    assert_eq!(w.ask("direct /etc/passwd"), "ERR PermissionDenied 13");
    assert_eq!(w.ask("open /etc/passwd"), "ERR PermissionDenied 13");
    assert_eq!(w.ask("uid"), format!("UID {uid} {uid}"));
    // Seen from outside: no capabilities, no_new_privs, seccomp filter mode.
    let st = status_of(pid);
    for cap in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        assert_eq!(status_field(&st, cap), "0000000000000000", "{cap}");
    }
    assert_eq!(status_field(&st, "NoNewPrivs:"), "1");
    assert_eq!(status_field(&st, "Seccomp:"), "2");
    // The exit status passes through.
    writeln!(w.stdin, "exit 42").unwrap();
    assert_eq!(w.wait(HANG).code(), Some(42));
}

#[test]
fn run_worker_cannot_reach_the_network_other_sockets_or_other_processes() {
    let (_t, policy) = fixture();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    let name = format!("fdbroker-spawn-{}", std::process::id());
    let abs = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        std::os::unix::net::UnixListener::bind_addr(&addr).unwrap()
    };
    // A process of the same uid outside the sandbox.
    let mut outsider = Command::new("/bin/sleep");
    std::os::unix::process::CommandExt::uid(&mut outsider, nobody_uid());
    let mut outsider = outsider.arg("30").spawn().unwrap();
    let probe = sibling_bin("sandbox-probe");
    let out = run_with_timeout(
        &mut run_cmd(
            &policy,
            &[
                probe.to_str().unwrap(),
                "--no-apply",
                "setuid0",
                "socket:inet",
                &format!("tcp-connect:{port}"),
                &format!("abstract:{name}"),
                &format!("kill:{}", outsider.id()),
                "kill:1",
                "open:/etc/passwd",
            ],
        ),
        HANG,
    );
    let _ = outsider.kill();
    let _ = outsider.wait();
    let text = text(&out.stdout);
    for (check, want) in [
        ("setuid0", "err EPERM"),
        ("socket:inet", "err EPERM"),
        ("open:/etc/passwd", "err EACCES"),
    ] {
        assert!(
            text.contains(&format!("CHECK {check} => {want}")),
            "{check}: {text}"
        );
    }
    // TCP: no AF_INET socket can even be made (seccomp), so no connection either;
    // connect/bind on inherited sockets are in tests/tests/sandbox.rs.
    assert!(
        text.contains(&format!("CHECK tcp-connect:{port} => err EPERM")),
        "{text}"
    );
    assert!(
        text.contains(&format!("CHECK abstract:{name} => err EPERM")),
        "{text}"
    );
    // A process outside the worker's PID namespace has no pid there at all; inside
    // it, the namespace's init runs as the same uid, but outside the worker's Landlock
    // domain, which scopes signals.
    assert!(
        text.contains(&format!("CHECK kill:{} => err ESRCH", outsider.id())),
        "{text}"
    );
    assert!(text.contains("CHECK kill:1 => err EPERM"), "{text}");
    drop((tcp, abs));
}

/// A second broker, as `fdbroker serve` with a 0666 socket, granting user nobody a file
/// the spawn-mode policy does not: what a worker would reach for.
fn other_broker(t: &TempDir) -> (Broker, PathBuf) {
    let file = t.file("other/granted.txt", b"other broker\n", 0o600);
    let b = Broker::start(
        t,
        "[broker]\nsocket_mode = \"0666\"\n[[client]]\nname = \"other\"\nusers = [\"nobody\"]\n[[client.allow]]\npath = \"{dir}/other/\"\n",
    );
    (b, file)
}

#[test]
fn run_worker_cannot_connect_to_another_broker_and_keeps_its_own() {
    let (t, policy) = fixture();
    let (other, file) = other_broker(&t);
    let via = format!("via {} {}", other.socket.display(), file.display());

    // Control: user nobody outside the sandbox reaches the other broker and is served.
    let mut outside = unprivileged(&sibling_bin("worker-probe"));
    outside.env("FDBROKER_SOCKET", &other.socket);
    let mut outside = Driven::start(outside);
    assert!(outside.line().starts_with("READY "));
    assert_eq!(outside.ask(&via), "OK 13 other broker");
    drop(outside);
    let served = |b: &Broker| b.log().matches("granted.txt").count();
    let served_before = served(&other);
    assert_eq!(served_before, 1, "{}", other.log());

    let (mut w, _log) = probe_under_run(&t, &policy, "broker.log");
    assert!(w.line().starts_with("READY "));
    // socket(2) itself is refused (EPERM; the library's message keeps only the kind).
    let refused = w.ask(&via);
    assert!(refused.starts_with("ERR PermissionDenied "), "{refused}");
    // Its own broker still serves it.
    let secret = t.join("data/secret.txt");
    assert_eq!(
        w.ask(&format!("open {}", secret.display())),
        "OK 10 root only"
    );
    assert_eq!(
        served(&other),
        served_before,
        "the other broker served the worker:\n{}",
        other.log()
    );
}

#[test]
fn locked_down_worker_cannot_connect_to_another_broker_and_keeps_its_own() {
    let (t, _) = fixture();
    let (other, file) = other_broker(&t);
    let own = Broker::start(
        &t,
        "[broker]\nsocket_mode = \"0666\"\n[[client]]\nname = \"w\"\nusers = [\"nobody\"]\n[[client.allow]]\npath = \"{dir}/data/\"\n",
    );
    let mut cmd = unprivileged(&sibling_bin("worker-probe"));
    cmd.arg("--lockdown").env("FDBROKER_SOCKET", &own.socket);
    let mut w = Driven::start(cmd);
    assert!(w.line().starts_with("READY "));
    let via = format!("via {} {}", other.socket.display(), file.display());
    let refused = w.ask(&via);
    assert!(refused.starts_with("ERR PermissionDenied "), "{refused}");
    // Not even a second connection to its own broker.
    let secret = t.join("data/secret.txt");
    let refused = w.ask(&format!(
        "via {} {}",
        own.socket.display(),
        secret.display()
    ));
    assert!(refused.starts_with("ERR PermissionDenied "), "{refused}");
    assert_eq!(
        w.ask(&format!("open {}", secret.display())),
        "OK 10 root only"
    );
}

#[test]
fn run_worker_makes_no_socket_that_reaches_a_pathname_socket() {
    let (t, policy) = fixture();
    let (other, _) = other_broker(&t);
    // A datagram socket nobody may send to.
    let dgram_path = t.join("dgram.sock");
    let dgram = std::os::unix::net::UnixDatagram::bind(&dgram_path).unwrap();
    dgram.set_nonblocking(true).unwrap();
    std::fs::set_permissions(
        &dgram_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let sock = other.socket.to_str().unwrap();
    let dgram_str = dgram_path.to_str().unwrap();
    let reaching = [
        format!("unix-connect:seqpacket:{sock}"),
        format!("unix-connect:stream:{sock}"),
        format!("unix-connect:dgram:{dgram_str}"),
        format!("unix-sendto:{dgram_str}"),
        format!("pair-sendmsg:dgram:{dgram_str}"),
        "socket:unix".to_owned(),
        "socketpair:unix-dgram".to_owned(),
    ];
    let probe = sibling_bin("sandbox-probe");
    let mut args = vec![probe.to_str().unwrap(), "--no-apply"];
    args.extend(reaching.iter().map(String::as_str));
    args.extend(["socketpair:unix", "socketpair:unix-seqpacket"]);
    let out = run_with_timeout(&mut run_cmd(&policy, &args), HANG);
    let text = text(&out.stdout);
    assert!(text.contains("\nDONE"), "{text}");
    for check in &reaching {
        assert!(
            text.contains(&format!("CHECK {check} => err EPERM")),
            "{check}: {text}"
        );
    }
    for check in ["socketpair:unix", "socketpair:unix-seqpacket"] {
        assert!(text.contains(&format!("CHECK {check} => ok")), "{text}");
    }
    let mut buf = [0u8; 64];
    assert!(dgram.recv(&mut buf).is_err(), "a datagram arrived");
}

#[test]
fn run_worker_cannot_execute_a_program_copied_into_memory() {
    let (_t, policy) = fixture();
    let probe = sibling_bin("sandbox-probe");
    let checks = [
        "memfd-exec:empty-path:/usr/bin/true",
        "memfd-exec:proc:/usr/bin/true",
        "memfd-sealed-exec:proc:/usr/bin/true",
        "execveat-empty:/usr/bin/true",
        "exec:/usr/bin/true",
    ];
    let mut args = vec![probe.to_str().unwrap(), "--no-apply"];
    args.extend(checks);
    // Control: the same probe, unconfined, runs both memfd copies.
    let control = run_with_timeout(Command::new(&probe).args(&args[1..]), HANG);
    let control = text(&control.stdout);
    for check in &checks[..2] {
        assert!(
            control.contains(&format!("CHECK {check} => ok exit=0")),
            "{check}: {control}"
        );
    }

    let out = run_with_timeout(&mut run_cmd(&policy, &args), HANG);
    let text = text(&out.stdout);
    for (check, want) in [
        (checks[0], "err EPERM"),
        (checks[1], "err EPERM"),
        (checks[2], "err EACCES"),
        (checks[3], "err EPERM"),
        (checks[4], "ok exit=0"),
    ] {
        assert!(
            text.contains(&format!("CHECK {check} => {want}")),
            "{check}: {text}"
        );
    }
}

#[test]
fn run_reports_exit_status_and_forwards_signals() {
    let (_t, policy) = fixture();
    let out = run_with_timeout(&mut run_cmd(&policy, &["/bin/sh", "-c", "exit 7"]), HANG);
    assert_eq!(out.status.code(), Some(7));
    let out = run_with_timeout(
        &mut run_cmd(&policy, &["/bin/sh", "-c", "kill -USR1 $$"]),
        HANG,
    );
    assert_eq!(out.status.code(), Some(128 + libc::SIGUSR1));
    let out = run_with_timeout(&mut run_cmd(&policy, &["/no/such/program"]), HANG);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    let out = run_with_timeout(&mut run_cmd(&policy, &["/usr/bin/id", "-u"]), HANG);
    let uid: u32 = fdbroker_tests::text(&out.stdout).trim().parse().unwrap();
    assert!(TRANSIENT.contains(&uid), "{uid}");

    // A signal sent to `fdbroker run` reaches the worker.
    let mut w = Driven::start(run_cmd(
        &policy,
        &[
            "/bin/sh",
            "-c",
            "trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.05; done",
        ],
    ));
    assert_eq!(w.line(), "ready");
    kill(Pid::from_raw(w.child.id() as i32), Signal::SIGTERM).unwrap();
    assert_eq!(w.line(), "got-term");
    assert_eq!(w.wait(HANG).code(), Some(3));
}

#[test]
fn run_broker_confines_itself_while_it_serves_the_worker() {
    let (t, policy) = fixture();
    let (mut w, log) = probe_under_run(&t, &policy, "broker.log");
    assert!(w.line().starts_with("READY "));
    // Served after the broker confined itself (read-only policy: CAP_DAC_READ_SEARCH).
    let secret = t.join("data/secret.txt");
    assert_eq!(
        w.ask(&format!("open {}", secret.display())),
        "OK 10 root only"
    );
    let st = status_of(w.child.id());
    // CAP_DAC_READ_SEARCH to open, CAP_KILL to signal its worker (only: seccomp).
    for cap in ["CapPrm:", "CapEff:", "CapBnd:"] {
        assert_eq!(status_field(&st, cap), "0000000000000024", "{cap}\n{st}");
    }
    assert_eq!(status_field(&st, "Uid:"), "0\t0\t0\t0", "{st}");
    for cap in ["CapInh:", "CapAmb:"] {
        assert_eq!(status_field(&st, cap), "0000000000000000", "{cap}\n{st}");
    }
    assert_eq!(status_field(&st, "NoNewPrivs:"), "1", "{st}");
    assert_eq!(status_field(&st, "Seccomp:"), "2", "{st}");
    // Every thread, not just the one that confined itself.
    let pid = w.child.id();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().file_name();
        let st = std::fs::read_to_string(format!("/proc/{pid}/task/{}/status", task.display()))
            .unwrap_or_default();
        if st.is_empty() {
            continue; // the thread ended meanwhile
        }
        assert_eq!(status_field(&st, "CapEff:"), "0000000000000024", "{st}");
        assert_eq!(status_field(&st, "Seccomp:"), "2", "{st}");
    }
    let audit = std::fs::read_to_string(&log).unwrap();
    assert!(audit.contains("confined: "), "{audit}");
    // Still forwards a signal and reports how the worker ended, confined.
    kill(Pid::from_raw(pid as i32), Signal::SIGUSR1).unwrap();
    assert_eq!(w.wait(HANG).code(), Some(128 + libc::SIGUSR1));

    // `[broker] confine = false` keeps everything, and says so.
    let text = std::fs::read_to_string(&policy).unwrap();
    let unconfined = t.file(
        "unconfined.toml",
        format!("[broker]\nconfine = false\n{text}").as_bytes(),
        0o644,
    );
    let (w, log) = probe_under_run(&t, &unconfined, "unconfined.log");
    assert!(w.line().starts_with("READY "));
    let st = status_of(w.child.id());
    assert_eq!(status_field(&st, "Seccomp:"), "0", "{st}");
    assert_ne!(status_field(&st, "CapEff:"), "0000000000000024", "{st}");
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("RUNNING UNCONFINED"), "{said}");
}

/// The kernel charges descriptors in flight in Unix sockets to the sender's *real* uid,
/// and refuses more once that user's count exceeds the sending process's
/// `RLIMIT_NOFILE` (`ETOOMANYREFS`). A spawn broker whose real uid was its worker's
/// could be starved by any process of that uid: `nobody` sending descriptors to itself
/// and never reading them left every `fdbroker run` of `nobody` unable to pass one. The
/// broker keeps real uid 0, and signals its worker with `CAP_KILL` instead.
#[test]
fn run_broker_is_not_charged_for_descriptors_of_the_worker_uid() {
    let (t, policy) = fixture();
    // The broker's limit, set here so the test does not depend on the environment's;
    // high, since what other root processes have in flight counts against it.
    // The pinner raises its own limit to the hard one, which must be above the count.
    const BROKER_LIMIT: usize = 8_192;
    let mut pinner = Command::new("setpriv");
    pinner
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(sibling_bin("fd-pinner"))
        .arg((BROKER_LIMIT + 512).to_string());
    let pinner = Driven::start(pinner);
    let pinned = pinner.line();
    assert!(pinned.starts_with("PINNED "), "{pinned}");
    assert_eq!(
        status_field(&status_of(pinner.child.id()), "Uid:"),
        format!("{0}\t{0}\t{0}\t{0}", nobody_uid())
    );

    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(format!("ulimit -n {BROKER_LIMIT} && exec \"$@\""))
        .arg("sh")
        .arg(fdbroker_bin())
        .arg("run")
        .arg("--policy")
        .arg(&policy)
        .arg("--")
        .arg(sibling_bin("worker-probe"));
    let log = t.join("broker.log");
    let mut w = Driven::start_with_stderr(cmd, Stdio::from(std::fs::File::create(&log).unwrap()));
    assert!(w.line().starts_with("READY "));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", w.child.id())).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(&format!(" {BROKER_LIMIT} "))),
        "{limits}"
    );
    let secret = t.join("data/secret.txt");
    assert_eq!(
        w.ask(&format!("open {}", secret.display())),
        "OK 10 root only",
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    // Seen from outside: every uid 0, and CAP_KILL kept besides CAP_DAC_READ_SEARCH
    // (its seccomp filter lets it signal only its worker: tests/tests/confine.rs).
    let st = status_of(w.child.id());
    assert_eq!(status_field(&st, "Uid:"), "0\t0\t0\t0", "{st}");
    for cap in ["CapPrm:", "CapEff:", "CapBnd:"] {
        assert_eq!(status_field(&st, cap), "0000000000000024", "{cap}\n{st}");
    }
    writeln!(w.stdin, "exit 0").unwrap();
    assert_eq!(w.wait(HANG).code(), Some(0));
    drop(pinner);
}

/// A pseudo-terminal whose master side this test holds, reading everything the terminal
/// shows (echoed input and the output of whatever runs on it) on a thread.
struct Terminal {
    master: std::fs::File,
    slave: std::os::fd::OwnedFd,
    shown: mpsc::Receiver<Vec<u8>>,
    transcript: String,
    /// Where in `transcript` the next [`Terminal::line`] starts looking.
    seen: usize,
}

impl Terminal {
    fn open() -> Terminal {
        use std::io::Read;
        let (master, slave) = fdbroker_tests::open_pty();
        let master = std::fs::File::from(master);
        let mut reader = master.try_clone().unwrap();
        let (tx, shown) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once every slave descriptor is closed.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Terminal {
            master,
            slave,
            shown,
            transcript: String::new(),
            seen: 0,
        }
    }

    /// `cmd` with this terminal as its stdin, stdout, stderr and controlling terminal,
    /// in a session of its own, as a login shell would start it.
    fn attach(&self, cmd: &mut Command) {
        use std::os::unix::process::CommandExt;
        cmd.stdin(self.slave.try_clone().unwrap())
            .stdout(self.slave.try_clone().unwrap())
            .stderr(self.slave.try_clone().unwrap());
        // SAFETY: runs in the forked child before exec and only makes two system calls.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()?;
                if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    fn type_in(&mut self, text: &str) {
        self.master.write_all(text.as_bytes()).unwrap();
    }

    fn collect(&mut self, wait: Duration) -> bool {
        match self.shown.recv_timeout(wait) {
            Ok(bytes) => {
                self.transcript.push_str(&String::from_utf8_lossy(&bytes));
                true
            }
            Err(_) => false,
        }
    }

    /// The next complete line shown that starts with `prefix`.
    fn line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + HANG;
        loop {
            let rest = &self.transcript[self.seen..];
            let mut offset = 0;
            for l in rest.split_inclusive('\n') {
                offset += l.len();
                if !l.ends_with('\n') {
                    break;
                }
                let l = l.trim_end_matches(['\r', '\n']);
                if l.starts_with(prefix) {
                    self.seen += offset;
                    return l.to_owned();
                }
            }
            assert!(
                Instant::now() < deadline,
                "no line {prefix:?} on the terminal:\n{}",
                self.transcript
            );
            self.collect(Duration::from_millis(100));
        }
    }

    /// Everything shown so far, after waiting for output to settle.
    fn settle(&mut self) -> &str {
        while self.collect(Duration::from_millis(300)) {}
        &self.transcript
    }
}

/// A child killed and reaped on drop, so a failed assertion leaves no process behind.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `/proc/PID/stat` fields after the command name: (session, tty_nr).
fn session_and_tty(pid: u32) -> (i32, i32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // state ppid pgrp session tty_nr
    (f[3].parse().unwrap(), f[4].parse().unwrap())
}

#[test]
fn run_worker_cannot_type_into_the_terminal_and_ctrl_c_still_reaches_it() {
    let (_t, policy) = fixture();
    let probe = sibling_bin("worker-probe");
    let mut term = Terminal::open();
    let mut cmd = run_cmd(&policy, &[probe.to_str().unwrap()]);
    term.attach(&mut cmd);
    let mut broker = Reaped(cmd.spawn().unwrap());
    let ready = term.line("READY ");
    let reported: u32 = ready.strip_prefix("READY ").unwrap().parse().unwrap();
    let worker = worker_pid(broker.0.id(), reported);

    // The broker has the terminal as its controlling terminal; the worker has none, in
    // a session of its own.
    let (_, broker_tty) = session_and_tty(broker.0.id());
    assert_ne!(broker_tty, 0, "the test did not give the broker a terminal");
    assert_eq!(session_and_tty(worker), (worker as i32, 0));

    // What the reviewer's worker did: TIOCSTI on stdin and on stderr.
    term.type_in("tiocsti 0\n");
    assert_eq!(term.line("TIOCSTI 0 "), "TIOCSTI 0 err EPERM");
    term.type_in("tiocsti 2\n");
    assert_eq!(term.line("TIOCSTI 2 "), "TIOCSTI 2 err EPERM");
    // Nothing arrived as input: the worker, reading that same terminal, would answer an
    // injected line (`?? injected-by-worker`), and the terminal would echo it.
    term.type_in("uid\n");
    let uid = term.line("UID ");
    let ids: Vec<u32> = uid
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(
        ids.len() == 2 && ids[0] == ids[1] && TRANSIENT.contains(&ids[0]),
        "{uid}"
    );
    assert!(
        !term.settle().contains("injected-by-worker"),
        "the worker typed into the terminal:\n{}",
        term.transcript
    );
    // (The check above can see an injection: one by root, which may, shows up both ways.)
    for byte in b"control-line\n" {
        // SAFETY: TIOCSTI reads one byte through a pointer to a live byte; the slave
        // descriptor is open.
        let rc = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&term.slave),
                libc::TIOCSTI,
                std::ptr::from_ref(byte),
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    }
    assert_eq!(term.line("?? "), "?? control-line");

    // Ctrl-C at the terminal signals its foreground process group: the broker's, no
    // longer the worker's. The broker forwards it, and exits as the worker did.
    term.type_in("\x03");
    let status = wait_exit(&mut broker.0, HANG)
        .unwrap_or_else(|| panic!("Ctrl-C did not end the worker:\n{}", term.settle()));
    assert_eq!(status.code(), Some(128 + libc::SIGINT), "{}", term.settle());
}

/// A worker's descendant that leaves the worker's session (`setsid`) used to outlive
/// `fdbroker run` with the terminal still open, and could then ask for a password on it
/// and read what the user typed next. Nothing of the worker's tree may be left running
/// once `fdbroker run` has returned.
#[test]
fn run_leaves_nothing_of_the_worker_tree_running_on_the_terminal() {
    let (_t, policy) = fixture();
    // Every process of this run inherits the marker through its environment.
    let (marker, value) = unique_marker();
    let _cleanup = KillCarrying(marker.clone());
    // The worker starts a descendant in a session of its own, sees it run (`up`, through
    // a pipe), then exits at a line typed on the terminal. The descendant waits until
    // the worker is gone, then prompts on the terminal and reads it.
    // (`setsid -f` forks: an asynchronous list `&` would open /dev/null, out of reach.)
    let script = "setsid -f sh -c \"echo up; exec >&2; while kill -0 $$; do sleep 0.1; done; \
                  echo Password:; read l; echo STOLEN:\\$l\" | head -n 1; \
                  echo WORKER-WAITING; read go; exit 5";
    let mut term = Terminal::open();
    let mut cmd = run_cmd(&policy, &["/bin/sh", "-c", script]);
    cmd.env("FDBROKER_TEST_TREE", &value);
    term.attach(&mut cmd);
    let mut broker = Reaped(cmd.spawn().unwrap());
    assert_eq!(term.line("up"), "up");
    term.line("WORKER-WAITING");
    // The check below can see the tree: the worker and its descendant, at least.
    let tree: Vec<u32> = carrying(&marker)
        .into_iter()
        .filter(|p| *p != broker.0.id())
        .collect();
    assert!(tree.len() >= 2, "{tree:?}");

    term.type_in("go\n");
    let status = wait_exit(&mut broker.0, HANG)
        .unwrap_or_else(|| panic!("fdbroker run did not return:\n{}", term.settle()));
    assert_eq!(status.code(), Some(5), "{}", term.settle());
    let left: Vec<String> = carrying(&marker)
        .into_iter()
        .map(|p| format!("{p}: {}", status_field(&status_of(p), "Name:")))
        .collect();
    assert!(
        left.is_empty(),
        "still running after fdbroker run returned (of {tree:?}): {left:?}"
    );
    // What such a descendant was after: the next line the user types. (A survivor polls
    // for the worker every 0.1 s; two seconds is plenty for it to show up, and nothing
    // that is gone can.)
    term.type_in("hunter2\n");
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        term.collect(Duration::from_millis(100));
    }
    assert!(!term.transcript.contains("STOLEN"), "{}", term.transcript);
}

#[test]
fn killing_the_broker_leaves_no_worker_behind() {
    let (_t, policy) = fixture();
    let probe = sibling_bin("worker-probe");
    let mut w = Driven::start(run_cmd(&policy, &[probe.to_str().unwrap()]));
    let reported: u32 = w.line().strip_prefix("READY ").unwrap().parse().unwrap();
    let pid = worker_pid(w.child.id(), reported);
    kill(Pid::from_raw(w.child.id() as i32), Signal::SIGKILL).unwrap();
    let _ = w.wait(HANG);
    // PR_SET_PDEATHSIG: the worker dies with its broker (gone, or a zombie of init).
    let deadline = Instant::now() + HANG;
    loop {
        let st = status_of(pid);
        if st.is_empty() || status_field(&st, "State:").starts_with('Z') {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "worker outlived its broker:\n{st}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The same for everything the worker started, in a session of its own or not: the
/// parent-death signal reaches only the worker, the end of its namespace the rest.
#[test]
fn killing_the_broker_leaves_nothing_of_the_worker_tree() {
    let (_t, policy) = fixture();
    let (marker, value) = unique_marker();
    let _cleanup = KillCarrying(marker.clone());
    let mut cmd = run_cmd(
        &policy,
        &[
            "/bin/sh",
            "-c",
            "setsid -f sleep 60; echo started; sleep 61",
        ],
    );
    cmd.env("FDBROKER_TEST_TREE", &value);
    let mut w = Driven::start(cmd);
    assert_eq!(w.line(), "started");
    let broker = w.child.id();
    let tree: Vec<u32> = carrying(&marker)
        .into_iter()
        .filter(|p| *p != broker)
        .collect();
    // The worker and its descendant in a session of its own, at least.
    assert!(tree.len() >= 2, "{tree:?}");
    kill(Pid::from_raw(broker as i32), Signal::SIGKILL).unwrap();
    let _ = w.wait(HANG);
    let deadline = Instant::now() + HANG;
    loop {
        let left = carrying(&marker);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "outlived the broker (of {tree:?}): {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Orphans in the worker's namespace are re-parented to the namespace's init, which
/// reaps them: no zombie piles up while the worker runs.
#[test]
fn run_namespace_init_reaps_orphans() {
    let (_t, policy) = fixture();
    let mut w = Driven::start(run_cmd(
        &policy,
        &[
            "/bin/sh",
            "-c",
            "for i in 1 2 3 4 5; do setsid -f true; done; echo started; read x; exit 9",
        ],
    ));
    assert_eq!(w.line(), "started");
    let init = worker_pid(w.child.id(), 1);
    let deadline = Instant::now() + HANG;
    loop {
        let children: Vec<String> = children_of(init)
            .iter()
            .map(|(pid, st)| {
                format!(
                    "{pid} {} {}",
                    status_field(st, "Name:"),
                    status_field(st, "State:")
                )
            })
            .collect();
        if children.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "init's children: {children:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Init itself: confined like the worker, as its uid, in a session of its own.
    assert_eq!(
        transient_uid_of(init),
        transient_uid_of(worker_pid(w.child.id(), 2))
    );
    let st = status_of(init);
    assert_eq!(status_field(&st, "CapEff:"), "0000000000000000", "{st}");
    assert_eq!(status_field(&st, "CapBnd:"), "0000000000000000", "{st}");
    assert_eq!(status_field(&st, "NoNewPrivs:"), "1", "{st}");
    assert_eq!(status_field(&st, "Seccomp:"), "2", "{st}");
    assert_eq!(session_and_tty(init), (init as i32, 0));
    writeln!(w.stdin).unwrap();
    assert_eq!(w.wait(HANG).code(), Some(9));
}

#[test]
fn locked_down_worker_fails_promptly_when_its_broker_dies() {
    let (t, _) = fixture();
    let b = Broker::start(
        &t,
        "[broker]\nsocket_mode = \"0666\"\n[[client]]\nname = \"w\"\nusers = [\"nobody\"]\n[[client.allow]]\npath = \"{dir}/data/\"\n",
    );
    let mut cmd = unprivileged(&sibling_bin("worker-probe"));
    cmd.arg("--lockdown").env("FDBROKER_SOCKET", &b.socket);
    let mut w = Driven::start(cmd);
    assert!(w.line().starts_with("READY "));
    let secret = t.join("data/secret.txt");
    assert_eq!(
        w.ask(&format!("open {}", secret.display())),
        "OK 10 root only"
    );
    assert_eq!(
        w.ask(&format!("direct {}", secret.display())),
        "ERR PermissionDenied 13"
    );
    assert_eq!(w.ask("direct /etc/passwd"), "ERR PermissionDenied 13");
    // The whole broker dies: the server that serves the worker, and its monitor.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(b.pid()), Signal::SIGKILL).unwrap();
    b.signal(Signal::SIGKILL);
    // Promptly: an answer at all (`ask` waits up to HANG), not a worker that blocks
    // forever on a connection nobody serves.
    let reply = w.ask(&format!("open {}", secret.display()));
    assert!(reply.starts_with("ERR ConnectionAborted"), "{reply}");
    drop(b);
}

/// A service the way a systemd unit with `User=nobody` and `CapabilityBoundingSet=`
/// starts it: unprivileged, with an empty bounding set, so the strict sandbox applies.
fn unprivileged(program: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "--bounding-set=-all",
        "--",
    ])
    .arg(program);
    cmd
}

/// Built by `cargo test --workspace` (or `cargo build -p fdbroker-worker --examples`).
fn scanner_bin() -> PathBuf {
    sibling_bin("examples/scanner")
}

fn scan_list(t: &TempDir) -> String {
    [
        "data/plain.bin",
        "data/eicar.bin",
        "data/known-bad.bin",
        "data/missing.bin",
    ]
    .iter()
    .map(|p| format!("{}\n", t.join(p).display()))
    .collect()
}

fn check_scan(t: &TempDir, stdout: &str) {
    let line = |p: &str| format!("{}: ", t.join(p).display());
    assert!(
        stdout.contains(&format!("{}clean", line("data/plain.bin"))),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{}FOUND Test.EICAR-Marker",
            line("data/eicar.bin")
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{}FOUND Known.Bad-Sample",
            line("data/known-bad.bin")
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{}ERROR", line("data/missing.bin"))),
        "{stdout}"
    );
}

fn feed(mut cmd: Command, input: String) -> std::process::Output {
    run_with_input(&mut cmd, Some(input.into_bytes()), HANG)
}

#[test]
fn scanner_example_finds_planted_signatures_under_run() {
    let (t, policy) = fixture();
    let sigs = t.join("sigs.txt");
    let out = feed(
        run_cmd(
            &policy,
            &[
                scanner_bin().to_str().unwrap(),
                "--signatures",
                sigs.to_str().unwrap(),
            ],
        ),
        scan_list(&t),
    );
    let stdout = text(&out.stdout);
    check_scan(&t, &stdout);
    assert_eq!(out.status.code(), Some(1), "found something: exit 1");
}

#[test]
fn scanner_example_locks_itself_down_against_a_serving_broker() {
    let (t, _) = fixture();
    let b = Broker::start(
        &t,
        "[broker]\nsocket_mode = \"0666\"\n[[client]]\nname = \"w\"\nusers = [\"nobody\"]\n[[client.allow]]\npath = \"{dir}/data/\"\n[[client.allow]]\npath = \"{dir}/sigs.txt\"\n",
    );
    let sigs = t.join("sigs.txt");
    let mut cmd = unprivileged(&scanner_bin());
    cmd.args(["--lockdown", "--signatures", sigs.to_str().unwrap()])
        .env("FDBROKER_SOCKET", &b.socket);
    let out = feed(cmd, scan_list(&t));
    check_scan(&t, &text(&out.stdout));
    assert!(
        text(&out.stderr).contains("landlock"),
        "{}",
        text(&out.stderr)
    );
}

/// From the second independent review: a worker could start a process whose parent is
/// the broker, not itself (`clone(CLONE_PARENT)`). The kernel killed it with the
/// namespace, but then it was a zombie only the broker could reap, and the namespace's
/// init waited for it in `zap_pid_ns_processes` while the broker waited for init:
/// `fdbroker run` never returned, and ignored Ctrl-C and SIGTERM (both only forwarded).
/// Now the sandbox refuses `CLONE_PARENT`, and the broker reaps every child until init
/// is gone.
#[test]
fn run_returns_after_a_worker_child_made_with_clone_parent() {
    let (t, policy) = fixture();
    let (marker, value) = unique_marker();
    let _cleanup = KillCarrying(marker.clone());
    let attack = sibling_bin("spawn-attack");
    let mut cmd = run_cmd(&policy, &[attack.to_str().unwrap(), "clone-parent"]);
    let out = t.join("clone-parent.out");
    cmd.env("FDBROKER_TEST_TREE", &value)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null());
    let mut broker = Reaped(cmd.spawn().unwrap());
    let Some(status) = wait_exit(&mut broker.0, HANG) else {
        // Free the namespace: the zombie goes to the broker's parent, init finishes.
        let _ = broker.0.kill();
        panic!("fdbroker run did not return after its worker exited");
    };
    assert_eq!(status.code(), Some(7));
    let said = std::fs::read_to_string(&out).unwrap();
    assert!(said.starts_with("clone refused"), "{said}");
    let left: Vec<u32> = carrying(&marker)
        .into_iter()
        .filter(|p| *p != broker.0.id())
        .collect();
    assert!(left.is_empty(), "still running: {left:?}");
}
