//! The worker sandbox against the real kernel: runs `sandbox-probe` (which applies
//! `fdbroker_worker::sandbox::Sandbox` to itself and then tries things), as root, and checks
//! both what the probe reports and what the kernel shows from outside.
//!
//! Most tests pair the sandboxed run with a control run of the same checks without the
//! sandbox (`--no-apply`), so an assertion that something is denied cannot pass merely
//! because the check was broken or the environment forbids it anyway.

use fdbroker_tests::{nobody_gid, nobody_uid, status_field, text};
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

// ---------------------------------------------------------------------------------------------
// Helpers

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the sandbox tests apply a real sandbox and must run as root"
    );
}

/// A directory that nobody can traverse (0755), removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("fdbroker-sandbox-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).expect("create temp dir");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// Creates `name` with `contents` and `mode`, owned by root.
    fn file(&self, name: &str, contents: &str, mode: u32) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, contents).expect("write file");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod file");
        path
    }

    fn subdir(&self, name: &str) -> PathBuf {
        let path = self.0.join(name);
        fs::create_dir(&path).expect("mkdir");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod dir");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A child this test started, killed and reaped on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What one probe run printed.
#[derive(Debug)]
struct Run {
    stdout: String,
    #[allow(dead_code)] // read through Debug, in failure messages
    stderr: String,
    checks: BTreeMap<String, String>,
}

impl Run {
    fn from_output(stdout: String, stderr: String) -> Run {
        let checks = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("CHECK "))
            .filter_map(|l| l.split_once(" => "))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Run {
            stdout,
            stderr,
            checks,
        }
    }

    fn line(&self, prefix: &str) -> Option<&str> {
        self.stdout.lines().find_map(|l| l.strip_prefix(prefix))
    }

    /// The report line; fails the test if the sandbox was not applied.
    fn applied(&self) -> &str {
        self.line("APPLIED ")
            .unwrap_or_else(|| panic!("sandbox not applied:\n{self:#?}"))
    }

    /// The apply error line; fails the test if apply succeeded.
    fn apply_error(&self) -> &str {
        self.line("APPLY-ERROR ")
            .unwrap_or_else(|| panic!("expected apply to fail:\n{self:#?}"))
    }

    /// The result of `check`; fails the test if the probe did not run it.
    fn check(&self, check: &str) -> &str {
        self.checks
            .get(check)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("the probe did not run {check}:\n{self:#?}"))
    }

    fn assert_denied(&self, check: &str, errno: &str) {
        assert_eq!(
            self.check(check),
            format!("err {errno}"),
            "{check}\n{self:#?}"
        );
    }

    fn assert_ok(&self, check: &str) {
        let result = self.check(check);
        assert!(
            result == "ok" || result.starts_with("ok "),
            "{check} should succeed, got {result}\n{self:#?}"
        );
    }

    fn assert_done(&self) {
        assert!(
            self.stdout.lines().any(|l| l == "DONE"),
            "probe did not finish:\n{self:#?}"
        );
    }
}

fn probe_path() -> &'static str {
    env!("CARGO_BIN_EXE_sandbox-probe")
}

fn probe(args: &[&str]) -> Command {
    let mut cmd = Command::new(probe_path());
    cmd.args(args).stdin(Stdio::null());
    cmd
}

fn run_cmd(mut cmd: Command) -> Run {
    // A copy of the probe just written (`probe_copy_for_nobody`) is still open for writing
    // in any child another test forked meanwhile, until that child execs: exec fails with
    // ETXTBSY for that moment. Wait it out.
    let mut busy = 0;
    let out = loop {
        match cmd.output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && busy < 100 => {
                busy += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            result => break result.expect("run sandbox-probe"),
        }
    };
    Run::from_output(text(&out.stdout), text(&out.stderr))
}

fn run(args: &[&str]) -> Run {
    run_cmd(probe(args))
}

/// A copy of the probe that user nobody can execute (the build directory may not be
/// reachable for it).
fn probe_copy_for_nobody(dir: &TempDir) -> PathBuf {
    let copy = dir.path().join("sandbox-probe");
    fs::copy(probe_path(), &copy).expect("copy probe");
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).expect("chmod probe");
    copy
}

fn as_nobody(cmd: &mut Command) -> &mut Command {
    // std clears the supplementary groups when root sets a uid.
    cmd.uid(nobody_uid()).gid(nobody_gid())
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

// ---------------------------------------------------------------------------------------------
// Filesystem

#[test]
fn paths_outside_the_allowlist_cannot_be_opened() {
    require_root();
    let dir = TempDir::new("fs");
    let secret = dir.file("secret", "root only", 0o600);
    let public = dir.file("public", "world readable", 0o644);
    let checks = [
        format!("open:{}", s(&secret)),
        format!("open:{}", s(&public)),
        "open:/etc/passwd".to_owned(),
        format!("readdir:{}", s(dir.path())),
    ];
    let mut args = vec!["--"];
    args.extend(checks.iter().map(String::as_str));

    let control = run(&[&["--no-apply"], &args[..]].concat());
    for check in &checks {
        control.assert_ok(check);
    }

    let sandboxed = run(&args);
    sandboxed.applied();
    for check in &checks {
        // EACCES from Landlock for the world-readable ones, from the mode bits for the secret.
        sandboxed.assert_denied(check, "EACCES");
    }
}

#[test]
fn allow_read_grants_reading_beneath_a_directory_and_nothing_else() {
    require_root();
    let dir = TempDir::new("allow");
    let allowed = dir.subdir("allowed");
    let other = dir.subdir("other");
    // 0666: the file permissions would let nobody write, so only Landlock can refuse it.
    let inside = dir.file("allowed/data", "allowed content", 0o666);
    let outside = dir.file("other/data", "other content", 0o666);
    let single = dir.file("other/single", "single file", 0o666);
    let created = allowed.join("new");

    let read_inside = format!("read:{}", s(&inside));
    let write_inside = format!("write:{}", s(&inside));
    let create_inside = format!("create:{}", s(&created));
    let list_inside = format!("readdir:{}", s(&allowed));
    let read_outside = format!("read:{}", s(&outside));
    let read_single = format!("read:{}", s(&single));
    let list_other = format!("readdir:{}", s(&other));
    let r = run(&[
        "--read",
        s(&allowed),
        "--read",
        s(&single),
        "--",
        &read_inside,
        &write_inside,
        &create_inside,
        &list_inside,
        &read_outside,
        &read_single,
        &list_other,
    ]);
    r.applied();
    assert_eq!(r.check(&read_inside), "ok \"allowed content\"");
    r.assert_denied(&write_inside, "EACCES");
    r.assert_denied(&create_inside, "EACCES");
    r.assert_ok(&list_inside);
    r.assert_denied(&read_outside, "EACCES");
    assert_eq!(r.check(&read_single), "ok \"single file\"");
    r.assert_denied(&list_other, "EACCES");
    assert_eq!(
        fs::read_to_string(&inside).expect("read back"),
        "allowed content"
    );
    assert!(!created.exists());
}

#[test]
fn allow_read_exec_is_needed_to_execute() {
    require_root();
    let exec = "exec:/usr/bin/true";
    let r = run(&["--read-exec", "/usr", "--", exec, "thread"]);
    r.applied();
    assert_eq!(r.check(exec), "ok exit=0");
    // Thread creation goes through clone3 -> ENOSYS -> clone.
    r.assert_ok("thread");

    let r = run(&["--read", "/usr", "--", exec]);
    r.applied();
    r.assert_denied(exec, "EACCES");

    let r = run(&["--", exec]);
    r.applied();
    r.assert_denied(exec, "EACCES");
}

// ---------------------------------------------------------------------------------------------
// Identity, capabilities, no_new_privs, seccomp mode: read from outside

#[test]
fn proc_status_seen_from_outside_shows_no_privileges() {
    require_root();
    let mut child = Reaped(
        probe(&["--", "pause"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn probe"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = String::new();
    let pid = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("probe ended before pausing:\n{seen}"))
            .expect("read probe output");
        seen.push_str(&line);
        seen.push('\n');
        if let Some(pid) = line.strip_prefix("PAUSE ") {
            break pid.to_owned();
        }
    };
    assert_eq!(pid, child.0.id().to_string());
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");

    // Release the probe and let it finish.
    let mut stdin = child.0.stdin.take().expect("stdin");
    stdin.write_all(b"\n").expect("release probe");
    drop(stdin);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l == "DONE"), "{seen}{rest:?}");

    for key in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        assert_eq!(status_field(&status, key), "0000000000000000", "{key}");
    }
    assert_eq!(status_field(&status, "NoNewPrivs:"), "1");
    assert_eq!(status_field(&status, "Seccomp:"), "2");
    for (key, id) in [("Uid:", nobody_uid()), ("Gid:", nobody_gid())] {
        let ids: Vec<&str> = status_field(&status, key).split_whitespace().collect();
        let id = id.to_string();
        assert_eq!(ids, [id.as_str(); 4], "{key}");
    }
    assert_eq!(status_field(&status, "Groups:"), "");
    assert!(
        seen.contains(&format!(
            "APPLIED sandbox: uid {} gid {}",
            nobody_uid(),
            nobody_gid()
        )),
        "{seen}"
    );
}

#[test]
fn root_cannot_be_regained() {
    require_root();
    let control = run(&["--no-apply", "--", "setuid0", "setgid0"]);
    control.assert_ok("setuid0");
    control.assert_ok("setgid0");

    let r = run(&["--", "setuid0", "setgid0"]);
    r.applied();
    r.assert_denied("setuid0", "EPERM");
    r.assert_denied("setgid0", "EPERM");
}

// ---------------------------------------------------------------------------------------------
// Network and scopes

#[test]
fn tcp_is_denied_and_no_socket_can_be_created() {
    require_root();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let connect = format!("tcp-connect:{port}");
    let checks = [
        connect.as_str(),
        "tcp-bind",
        "socket:inet",
        "socket:inet6",
        "socket:netlink",
        "socket:unix",
        "socketpair:unix",
        "socketpair:inet",
    ];

    let control = run(&[&["--no-apply", "--"], &checks[..]].concat());
    control.assert_ok(&connect);
    control.assert_ok("tcp-bind");
    control.assert_ok("socket:inet");
    // The kernel's own answer, so the EPERM below is the filter's.
    control.assert_denied("socketpair:inet", "EOPNOTSUPP");
    let (accepted, _) = listener.accept().expect("control connection arrived");
    drop(accepted);

    let r = run(&[&["--"], &checks[..]].concat());
    r.applied();
    // On sockets created before the sandbox: seccomp refuses connect and bind on any
    // socket (EPERM) before Landlock, which handles TCP too, would answer EACCES.
    r.assert_denied(&connect, "EPERM");
    r.assert_denied("tcp-bind", "EPERM");
    // seccomp: EPERM for socket() of every family, and for socketpair() but of AF_UNIX
    // (see no_new_socket_reaches_a_pathname_socket_and_the_broker_connection_still_works).
    r.assert_denied("socket:inet", "EPERM");
    r.assert_denied("socket:inet6", "EPERM");
    r.assert_denied("socket:netlink", "EPERM");
    r.assert_denied("socket:unix", "EPERM");
    r.assert_denied("socketpair:inet", "EPERM");
    r.assert_ok("socketpair:unix");
    assert_eq!(
        listener.accept().err().map(|e| e.kind()),
        Some(std::io::ErrorKind::WouldBlock),
        "the sandboxed probe reached the listener"
    );
}

#[test]
fn abstract_sockets_and_signals_outside_the_sandbox_are_refused() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener};

    require_root();
    let name = format!("fdbroker-sandbox-test-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(&name).expect("abstract name");
    let _listener = UnixListener::bind_addr(&addr).expect("listen on abstract socket");
    // A process of the same user as the sandbox, outside it: permission checks alone
    // would let the sandbox signal it.
    let sleeper = Reaped(
        as_nobody(Command::new("sleep").arg("60"))
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep as nobody"),
    );
    let kill = format!("kill:{}", sleeper.0.id());
    let connect = format!("abstract:{name}");

    let control = run(&["--no-apply", "--", &connect, &kill]);
    control.assert_ok(&connect);
    control.assert_ok(&kill);
    // The same uid without the sandbox may signal it: the denial below is Landlock's scope.
    let dir = TempDir::new("scope");
    let mut cmd = Command::new(probe_copy_for_nobody(&dir));
    cmd.args(["--no-apply", "--", &kill]).stdin(Stdio::null());
    as_nobody(&mut cmd);
    run_cmd(cmd).assert_ok(&kill);

    let r = run(&["--", &connect, &kill]);
    r.applied();
    r.assert_denied(&connect, "EPERM");
    r.assert_denied(&kill, "EPERM");
}

// ---------------------------------------------------------------------------------------------
// seccomp and descriptors held before the sandbox

#[test]
fn metadata_changes_namespaces_and_clone3_are_refused_and_stdin_still_reads() {
    require_root();
    let dir = TempDir::new("seccomp");
    // Owned by nobody: as its owner the sandbox could chmod/chown it, and Landlock does not
    // govern either, so only the seccomp filter stands in the way.
    let file = dir.file("owned-by-nobody", "inherited descriptor", 0o644);
    chown(&file, Some(nobody_uid()), Some(nobody_gid())).expect("chown");
    let chmod = format!("chmod:{}", s(&file));

    let mut cmd = probe(&[
        "--read",
        s(dir.path()),
        "--",
        "fchmod-stdin",
        "fchown-stdin",
        &chmod,
        "unshare:user",
        "clone3",
        "thread",
        "read-stdin",
    ]);
    cmd.stdin(fs::File::open(&file).expect("open"));
    let r = run_cmd(cmd);
    r.applied();
    r.assert_denied("fchmod-stdin", "EPERM");
    r.assert_denied("fchown-stdin", "EPERM");
    r.assert_denied(&chmod, "EPERM");
    r.assert_denied("unshare:user", "EPERM");
    r.assert_denied("clone3", "ENOSYS");
    r.assert_ok("thread");
    assert_eq!(r.check("read-stdin"), "ok \"inherited descriptor\"");
    r.assert_done();
    let mode = fs::metadata(&file).expect("stat").permissions().mode() & 0o7777;
    assert_eq!(mode, 0o644);

    // Control: without the filter the same calls work (clone3's own answer to a zero-sized
    // argument is EINVAL).
    let spare = dir.file("spare", "spare", 0o644);
    let mut cmd = probe(&["--no-apply", "--", "fchmod-stdin", "clone3", "read-stdin"]);
    cmd.stdin(fs::File::open(&spare).expect("open"));
    let control = run_cmd(cmd);
    control.assert_ok("fchmod-stdin");
    control.assert_denied("clone3", "EINVAL");
    assert_eq!(control.check("read-stdin"), "ok \"spare\"");
}

/// The probe on a fresh pseudo-terminal that is its controlling terminal and its stdin
/// (stdout and stderr stay pipes, for the report); returns the report and everything the
/// terminal echoed, which includes whatever was pushed into its input queue.
fn run_on_pty(args: &[&str]) -> (Run, String) {
    use std::io::Read;
    let (master, slave) = fdbroker_tests::open_pty();
    let mut cmd = probe(args);
    cmd.stdin(slave.try_clone().expect("dup the pty slave"));
    // SAFETY: runs in the forked child before exec and only makes two system calls.
    unsafe {
        cmd.pre_exec(|| {
            // A new session, then the terminal on stdin as its controlling terminal: the
            // one case in which TIOCSTI needs no capability (with legacy_tiocsti = 1).
            nix::unistd::setsid()?;
            if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let r = run_cmd(cmd);
    // Drain what the terminal echoed. The slave stays open until then (our copy), so
    // the master reports no hang-up; it is non-blocking, so an empty queue ends the loop.
    nix::fcntl::fcntl(
        &master,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .expect("O_NONBLOCK on the pty master");
    let mut master = fs::File::from(master);
    let mut echoed = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => echoed.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("read the pty master: {e}"),
        }
    }
    drop(slave);
    (r, String::from_utf8_lossy(&echoed).into_owned())
}

#[test]
fn typing_into_the_controlling_terminal_is_refused() {
    require_root();
    let checks = ["tiocsti:0", "tiocsti-high:0", "tioclinux:0"];
    let args = |apply: bool| -> Vec<&str> {
        let mut a = if apply { vec![] } else { vec!["--no-apply"] };
        a.push("--");
        a.extend(checks);
        a
    };

    // Control: the probe can type into its terminal, the terminal echoes it, and the
    // high bits of the request make no difference to the kernel.
    let (control, echoed) = run_on_pty(&args(false));
    control.assert_ok("tiocsti:0");
    control.assert_ok("tiocsti-high:0");
    assert_ne!(control.check("tioclinux:0"), "err EPERM", "{control:#?}");
    assert_eq!(
        echoed.matches("injected-by-probe").count(),
        2,
        "control: {echoed:?}"
    );

    // Sandboxed, as nobody with no capabilities but still on its own controlling
    // terminal, where legacy TIOCSTI needs no privilege: only the seccomp filter refuses
    // (with EPERM; the kernel's own answers would be success, or EIO where
    // dev.tty.legacy_tiocsti = 0).
    let (r, echoed) = run_on_pty(&args(true));
    r.applied();
    for check in checks {
        r.assert_denied(check, "EPERM");
    }
    r.assert_done();
    assert!(
        !echoed.contains("injected-by-probe"),
        "typed into the terminal: {echoed:?}"
    );
}

/// A stand-in broker on a `SOCK_SEQPACKET` socket at `dir/broker.sock`: accepts one
/// connection, answers one request with `echo:REQUEST` and a descriptor for `granted`, and
/// returns the request.
fn one_shot_broker(
    dir: &TempDir,
    granted: &Path,
) -> (PathBuf, std::thread::JoinHandle<Result<String, String>>) {
    use nix::sys::socket::{
        self, AddressFamily, Backlog, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr,
    };
    use std::io::IoSlice;

    let path = dir.path().join("broker.sock");
    let listener = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    socket::bind(
        listener.as_raw_fd(),
        &UnixAddr::new(&path).expect("address"),
    )
    .expect("bind");
    socket::listen(&listener, Backlog::new(4).expect("backlog")).expect("listen");

    let granted = granted.to_owned();
    let broker = std::thread::spawn(move || -> Result<String, String> {
        let conn = socket::accept(listener.as_raw_fd()).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 64];
        let n = socket::recv(conn, &mut buf, MsgFlags::empty()).map_err(|e| e.to_string())?;
        let request = String::from_utf8_lossy(&buf[..n]).into_owned();
        let file = fs::File::open(&granted).map_err(|e| e.to_string())?;
        let reply = format!("echo:{request}");
        let fds = [file.as_raw_fd()];
        socket::sendmsg::<()>(
            conn,
            &[IoSlice::new(reply.as_bytes())],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .map_err(|e| e.to_string())?;
        nix::unistd::close(conn).map_err(|e| e.to_string())?;
        Ok(request)
    });
    (path, broker)
}

#[test]
fn broker_connection_made_before_the_sandbox_still_delivers_descriptors() {
    require_root();
    let dir = TempDir::new("broker");
    let secret = dir.file("secret", "granted by the broker", 0o600);
    let (path, broker) = one_shot_broker(&dir, &secret);

    let open_secret = format!("open:{}", s(&secret));
    let r = run(&["--connect", s(&path), "--", &open_secret, "broker:hello"]);
    r.applied();
    r.assert_denied(&open_secret, "EACCES");
    assert_eq!(
        r.check("broker:hello"),
        "ok reply=\"echo:hello\" fd=\"granted by the broker\""
    );
    assert_eq!(
        broker.join().expect("broker thread"),
        Ok("hello".to_owned())
    );
}

/// Listening pathname Unix sockets of every type, mode 0666 in a world-traversable
/// directory, so that user nobody may reach all of them: only the sandbox stands in the
/// way. Non-blocking, so the test can see whether anything arrived.
struct UnixListeners {
    stream: std::os::unix::net::UnixListener,
    seqpacket: std::os::fd::OwnedFd,
    dgram: std::os::unix::net::UnixDatagram,
    stream_path: PathBuf,
    seqpacket_path: PathBuf,
    dgram_path: PathBuf,
}

impl UnixListeners {
    fn new(dir: &TempDir) -> UnixListeners {
        use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
        let stream_path = dir.path().join("stream.sock");
        let seqpacket_path = dir.path().join("seqpacket.sock");
        let dgram_path = dir.path().join("dgram.sock");
        let stream = std::os::unix::net::UnixListener::bind(&stream_path).expect("bind stream");
        stream.set_nonblocking(true).expect("nonblocking");
        let seqpacket = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .expect("socket");
        socket::bind(
            seqpacket.as_raw_fd(),
            &UnixAddr::new(&seqpacket_path).expect("address"),
        )
        .expect("bind seqpacket");
        socket::listen(&seqpacket, Backlog::new(8).expect("backlog")).expect("listen");
        let dgram = std::os::unix::net::UnixDatagram::bind(&dgram_path).expect("bind dgram");
        dgram.set_nonblocking(true).expect("nonblocking");
        for p in [&stream_path, &seqpacket_path, &dgram_path] {
            fs::set_permissions(p, fs::Permissions::from_mode(0o666)).expect("chmod socket");
        }
        UnixListeners {
            stream,
            seqpacket,
            dgram,
            stream_path,
            seqpacket_path,
            dgram_path,
        }
    }

    /// How many connections and datagrams arrived since the last call (and drops them).
    fn drain(&self) -> (usize, usize, usize) {
        let mut streams = 0;
        while self.stream.accept().is_ok() {
            streams += 1;
        }
        let mut seqpackets = 0;
        while let Ok(conn) = nix::sys::socket::accept(self.seqpacket.as_raw_fd()) {
            let _ = nix::unistd::close(conn);
            seqpackets += 1;
        }
        let mut datagrams = 0;
        let mut buf = [0u8; 256];
        while self.dgram.recv(&mut buf).is_ok() {
            datagrams += 1;
        }
        (streams, seqpackets, datagrams)
    }
}

#[test]
fn no_new_socket_reaches_a_pathname_socket_and_the_broker_connection_still_works() {
    require_root();
    let dir = TempDir::new("unix");
    let listeners = UnixListeners::new(&dir);
    let secret = dir.file("secret", "granted by the broker", 0o600);
    let (broker_path, broker) = one_shot_broker(&dir, &secret);
    let (stream, seqpacket, dgram) = (
        s(&listeners.stream_path),
        s(&listeners.seqpacket_path),
        s(&listeners.dgram_path),
    );
    let abstract_name = format!("fdbroker-sandbox-bind-{}", std::process::id());
    let connect_stream = format!("unix-connect:stream:{stream}");
    let connect_seqpacket = format!("unix-connect:seqpacket:{seqpacket}");
    let connect_dgram = format!("unix-connect:dgram:{dgram}");
    let sendto = format!("unix-sendto:{dgram}");
    let held_connect = format!("held-connect:{stream}");
    let held_bind = format!("held-bind:{abstract_name}");
    let held_sendto = format!("held-sendto:{dgram}");
    let pair_stream = format!("pair-sendmsg:stream:{dgram}");
    let pair_seqpacket = format!("pair-sendmsg:seqpacket:{dgram}");
    let pair_dgram = format!("pair-sendmsg:dgram:{dgram}");
    // Each of these reaches a listener when nothing stops it.
    let reaching = [
        connect_stream.as_str(),
        &connect_seqpacket,
        &connect_dgram,
        &sendto,
        &held_connect,
        &held_bind,
        "held-listen",
        &held_sendto,
        &pair_dgram,
        "socket:unix",
        "socketpair:unix-dgram",
    ];
    // What a worker may still make: a private pair of connected sockets.
    let harmless = [
        "socketpair:unix",
        "socketpair:unix-seqpacket",
        "socketpair:unix-nonblock",
    ];
    let mut checks: Vec<&str> = reaching.to_vec();
    checks.extend(harmless);
    checks.extend([pair_stream.as_str(), &pair_seqpacket]);

    let control = run(&[&["--no-apply", "--"], &checks[..]].concat());
    for check in reaching.iter().chain(&harmless) {
        control.assert_ok(check);
    }
    assert_eq!(control.check(&pair_dgram), "ok not-to-peer", "{control:#?}");
    // The kernel's own answers: a stream socket refuses a destination, a seqpacket socket
    // ignores it and delivers to its peer.
    control.assert_denied(&pair_stream, "EISCONN");
    assert_eq!(control.check(&pair_seqpacket), "ok to-peer", "{control:#?}");
    // 2 streams (new socket, held socket), 1 seqpacket, 3 datagrams (sendto from a new
    // socket, from a held one, sendmsg from a datagram pair); connect on a datagram socket
    // sends nothing.
    assert_eq!(listeners.drain(), (2, 1, 3), "control run\n{control:#?}");

    let r = run(&[
        &["--connect", s(&broker_path), "--"],
        &checks[..],
        &["broker:hello"],
    ]
    .concat());
    r.applied();
    for check in reaching {
        r.assert_denied(check, "EPERM");
    }
    for check in harmless {
        r.assert_ok(check);
    }
    r.assert_denied(&pair_stream, "EISCONN");
    assert_eq!(r.check(&pair_seqpacket), "ok to-peer", "{r:#?}");
    assert_eq!(
        listeners.drain(),
        (0, 0, 0),
        "the sandbox reached a listener"
    );
    // The connection made before the sandbox still works, descriptors included.
    assert_eq!(
        r.check("broker:hello"),
        "ok reply=\"echo:hello\" fd=\"granted by the broker\""
    );
    assert_eq!(
        broker.join().expect("broker thread"),
        Ok("hello".to_owned())
    );
}

// ---------------------------------------------------------------------------------------------
// Executing

#[test]
fn a_program_copied_into_memory_or_an_unnamed_file_cannot_be_executed() {
    require_root();
    let dir = TempDir::new("memexec");
    // World-writable and executable by the sandbox's allowlist: only Landlock's refusal of
    // writes (O_TMPFILE opens for writing) keeps a new file from appearing there.
    let scratch = dir.subdir("scratch");
    fs::set_permissions(&scratch, fs::Permissions::from_mode(0o1777)).expect("chmod");
    let program = "/usr/bin/true";
    let memfd_empty_path = format!("memfd-exec:empty-path:{program}");
    let memfd_proc = format!("memfd-exec:proc:{program}");
    let sealed_empty_path = format!("memfd-sealed-exec:empty-path:{program}");
    let sealed_proc = format!("memfd-sealed-exec:proc:{program}");
    let tmpfile = format!("tmpfile-exec:{}:{program}", s(&scratch));
    let fexecve = format!("execveat-empty:{program}");
    let by_path = format!("exec:{program}");
    let checks = [
        memfd_empty_path.as_str(),
        &memfd_proc,
        &sealed_empty_path,
        &sealed_proc,
        &tmpfile,
        &fexecve,
        &by_path,
    ];

    // Control: every route runs the copy (exit=0), except a memfd sealed against
    // execution, which the kernel itself refuses.
    let control = run(&[&["--no-apply", "--"], &checks[..]].concat());
    for check in [&memfd_empty_path, &memfd_proc, &tmpfile, &fexecve] {
        assert_eq!(control.check(check), "ok exit=0", "{check}\n{control:#?}");
    }
    control.assert_denied(&sealed_empty_path, "EACCES");
    control.assert_denied(&sealed_proc, "EACCES");

    let r = run(&[
        &["--read-exec", "/usr", "--read-exec", s(&scratch), "--"],
        &checks[..],
    ]
    .concat());
    r.applied();
    // memfd_create without MFD_NOEXEC_SEAL: refused.
    r.assert_denied(&memfd_empty_path, "EPERM");
    r.assert_denied(&memfd_proc, "EPERM");
    // With it, the memfd is made (a parser may want one), but it never becomes executable;
    // execveat(AT_EMPTY_PATH) is refused before the kernel looks.
    r.assert_denied(&sealed_empty_path, "EPERM");
    r.assert_denied(&sealed_proc, "EACCES");
    r.assert_denied(&tmpfile, "EACCES");
    // fexecve is refused even for a program the sandbox may run by path ...
    r.assert_denied(&fexecve, "EPERM");
    // ... which still works.
    assert_eq!(r.check(&by_path), "ok exit=0", "{r:#?}");
    r.assert_done();
    assert_eq!(fs::read_dir(&scratch).expect("list").count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Preconditions, spawn mode, strict versus best effort

#[test]
fn apply_refuses_a_multithreaded_process_before_changing_anything() {
    require_root();
    let r = run(&["--threads", "2", "--", "setuid0"]);
    let error = r.apply_error();
    assert!(
        error.starts_with("Threads(2) | kind=InvalidInput"),
        "{error}"
    );
    assert_eq!(r.line("AFTER-ERROR "), Some("uid=0 nnp=0"));
    assert!(r.checks.is_empty(), "{r:#?}");
}

#[test]
fn spawn_mode_prepares_in_a_threaded_parent_and_applies_in_the_forked_child() {
    require_root();
    let r = run(&[
        "--threads",
        "3",
        "--fork",
        "--",
        "open:/etc/passwd",
        "setuid0",
        "thread",
    ]);
    assert!(
        r.applied().starts_with(&format!(
            "sandbox: uid {} gid {}",
            nobody_uid(),
            nobody_gid()
        )),
        "{r:#?}"
    );
    r.assert_denied("open:/etc/passwd", "EACCES");
    r.assert_denied("setuid0", "EPERM");
    r.assert_ok("thread");
    r.assert_done();
}

#[test]
fn strict_and_best_effort_report_full_enforcement_on_this_kernel() {
    require_root();
    for args in [&["--"][..], &["--best-effort", "--"][..]] {
        let r = run(args);
        let report = r.applied();
        assert!(report.starts_with("sandbox: "), "{report}");
        assert!(report.contains("full (fs net scope)"), "{report}");
        let debug = r.line("REPORT-DEBUG ").expect("debug report");
        assert!(debug.contains("status: Full"), "{debug}");
        assert!(debug.contains("seccomp: true"), "{debug}");
    }
}

#[test]
fn without_landlock_strict_fails_early_and_best_effort_says_so() {
    require_root();
    let strict = run(&["--hide-landlock", "--", "open:/etc/passwd"]);
    let error = strict.apply_error();
    assert!(error.starts_with("Landlock("), "{error}");
    assert!(error.contains("kind=Unsupported"), "{error}");
    // Failed while preparing: still root (nnp=1 comes from the probe's own hiding filter).
    assert_eq!(strict.line("AFTER-ERROR "), Some("uid=0 nnp=1"));
    assert!(strict.checks.is_empty());

    let r = run(&[
        "--hide-landlock",
        "--best-effort",
        "--",
        "open:/etc/passwd",
        "setuid0",
        "socket:inet",
    ]);
    let report = r.applied();
    assert!(report.starts_with("sandbox (INCOMPLETE): "), "{report}");
    assert!(
        report.contains("landlock not enforced (unavailable)"),
        "{report}"
    );
    // The report tells the truth: without Landlock the world-readable file opens ...
    r.assert_ok("open:/etc/passwd");
    // ... while everything else still holds.
    r.assert_denied("setuid0", "EPERM");
    r.assert_denied("socket:inet", "EPERM");
}

#[test]
fn an_unprivileged_process_keeps_its_bounding_set_only_in_best_effort() {
    require_root();
    let dir = TempDir::new("unprivileged");
    let copy = probe_copy_for_nobody(&dir);

    let mut cmd = Command::new(&copy);
    cmd.args(["--", "setuid0"]).stdin(Stdio::null());
    as_nobody(&mut cmd);
    let strict = run_cmd(cmd);
    let error = strict.apply_error();
    assert!(error.starts_with("Capabilities {"), "{error}");
    assert!(error.contains("kind=PermissionDenied"), "{error}");

    let mut cmd = Command::new(&copy);
    cmd.args(["--best-effort", "--", "open:/etc/passwd", "setuid0"])
        .stdin(Stdio::null());
    as_nobody(&mut cmd);
    let r = run_cmd(cmd);
    let report = r.applied();
    assert!(report.starts_with("sandbox (INCOMPLETE): "), "{report}");
    assert!(report.contains("BOUNDING SET KEPT"), "{report}");
    assert!(report.contains("full (fs net scope)"), "{report}");
    r.assert_denied("open:/etc/passwd", "EACCES");
    r.assert_denied("setuid0", "EPERM");
}

// ---------------------------------------------------------------------------------------------
// Review of the x86_64 dispatch filter (rdispatch)

/// F1: nothing in the worker's environment turns the filter off. `seccomp::install` had
/// a leftover switch (`XNOSECCOMP`) that skipped every filter while `apply` still
/// reported `seccomp: true`; a program started with it ran unfiltered.
#[test]
fn no_environment_variable_turns_the_seccomp_filter_off() {
    require_root();
    let dir = TempDir::new("xnoseccomp");
    let mut cmd = probe(&["--read", s(dir.path()), "--", "unshare:user", "clone3"]);
    cmd.env("XNOSECCOMP", "1");
    let r = run_cmd(cmd);
    r.applied();
    r.assert_denied("unshare:user", "EPERM");
    r.assert_denied("clone3", "ENOSYS");
    r.assert_done();
}

/// The x86_64 filter's search over call numbers, at its boundaries, by the real kernel:
/// every call refused outright answers `EPERM`, and every allowed number next to a
/// refused or argument-checked one answers exactly as it does without the filter (each
/// call with every argument -1, harmless for the numbers named; `rt_sigreturn`, `fork`
/// and `landlock_restrict_self` left out). Numbers past the last call and before the x32 range are allowed.
#[test]
#[cfg(target_arch = "x86_64")]
fn the_filter_search_decides_each_number_at_its_boundaries_as_listed() {
    require_root();
    let refused: &[u32] = &[
        41, 42, 49, 50, 90, 91, 92, 93, 94, 101, 132, 155, 161, 165, 166, 175, 176, 188, 189, 190,
        197, 198, 199, 235, 246, 248, 249, 250, 260, 261, 268, 272, 280, 298, 303, 304, 308, 310,
        311, 313, 320, 321, 323, 425, 426, 427, 428, 429, 430, 431, 432, 433, 438, 442, 447, 452,
        463, 466, 467,
    ];
    // Read arguments: with every argument -1, socketpair (a domain not AF_UNIX), sendto
    // (a destination), clone (CLONE_NEW* bits) and execveat (AT_EMPTY_PATH) are refused;
    // ioctl (not a terminal-input request) and memfd_create (MFD_NOEXEC_SEAL set) are not.
    let checked_refused: &[u32] = &[44, 53, 56, 322];
    let checked_allowed: &[u32] = &[16, 319];
    // landlock_restrict_self (446) answers by no_new_privs, which only the sandbox sets.
    let unsafe_to_call = [15, 57, 446];
    let mut allowed: Vec<u32> = refused
        .iter()
        .chain(checked_refused)
        .chain(checked_allowed)
        .flat_map(|&n| [n - 1, n + 1])
        .filter(|n| {
            !refused.contains(n)
                && !checked_refused.contains(n)
                && !checked_allowed.contains(n)
                && !unsafe_to_call.contains(n)
        })
        .collect();
    allowed.extend(checked_allowed);
    allowed.extend([0, 469, 470, 1000, 0x3fff_ffff]);
    allowed.sort_unstable();
    allowed.dedup();

    let checks: Vec<String> = allowed
        .iter()
        .chain(refused)
        .chain(checked_refused)
        .map(|n| format!("syscall:{n}"))
        .collect();
    let dir = TempDir::new("boundaries");
    let copy = probe_copy_for_nobody(&dir);
    let with_args = |first: &[&str]| {
        let mut args: Vec<&str> = first.to_vec();
        args.push("--");
        args.extend(checks.iter().map(String::as_str));
        let mut cmd = Command::new(&copy);
        cmd.args(&args).stdin(Stdio::null());
        cmd
    };
    let filtered = run_cmd(with_args(&["--read", s(dir.path())]));
    filtered.applied();
    filtered.assert_done();
    let mut control = with_args(&["--no-apply"]);
    let control = run_cmd(std::mem::replace(
        as_nobody(&mut control),
        Command::new("true"),
    ));
    control.assert_done();
    for n in refused.iter().chain(checked_refused) {
        filtered.assert_denied(&format!("syscall:{n}"), "EPERM");
    }
    for n in &allowed {
        let check = format!("syscall:{n}");
        assert_ne!(
            control.check(&check),
            "err EPERM",
            "{check}: the control is refused"
        );
        assert_eq!(filtered.check(&check), control.check(&check), "{check}");
    }
}

/// An i386 call through `int 0x80` from the x86_64 worker runs the filter with
/// `AUDIT_ARCH_I386`, which no rule covers: the process is killed (`SIGSYS`), as the
/// filter before the search decided. Without the filter the same call returns the pid
/// (unless the kernel has no i386 emulation, where there is nothing to walk around).
#[test]
#[cfg(target_arch = "x86_64")]
fn an_i386_call_through_int_0x80_kills_the_worker() {
    use std::os::unix::process::ExitStatusExt;
    require_root();
    let control = run(&["--no-apply", "--", "int80-getpid"]);
    if !control.check("int80-getpid").starts_with("ok ") {
        eprintln!("no i386 emulation: {:?}", control.check("int80-getpid"));
        return;
    }
    let dir = TempDir::new("int80");
    let out = probe(&["--read", s(dir.path()), "--", "int80-getpid"])
        .output()
        .expect("run sandbox-probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("APPLIED"), "{stdout}");
    assert!(!stdout.contains("CHECK int80-getpid"), "{stdout}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGSYS),
        "{:?} {stdout}",
        out.status
    );
}
