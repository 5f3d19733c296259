//! Harness for the end-to-end tests: temporary trees, a real `fdbroker serve` process,
//! and unprivileged children. Nothing here mocks the kernel.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The uid/gid of `nobody`/`nogroup` on Debian.
pub const NOBODY: u32 = 65534;

/// A directory under /tmp, world-traversable, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "fdbroker-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }

    /// Write `content` at `rel` (creating parents) with `mode`, owned by root.
    pub fn file(&self, rel: &str, content: &[u8], mode: u32) -> PathBuf {
        let p = self.path.join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    pub fn dir(&self, rel: &str, mode: u32) -> PathBuf {
        let p = self.path.join(rel);
        fs::create_dir_all(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// The fdbroker binary under test: this package's `fdbroker-e2e`, which cargo builds
/// before it runs the package's tests or benchmarks, beside their own executables.
pub fn fdbroker_bin() -> PathBuf {
    sibling_bin("fdbroker-e2e")
}

/// A binary of this package, found next to the running test executable
/// (`target/<profile>/deps/test-HASH` -> `target/<profile>/NAME`).
pub fn sibling_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap();
    if dir.ends_with("deps") {
        dir = dir.parent().unwrap();
    }
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: build with `cargo test --workspace`",
        p.display()
    );
    if reachable_by_others(&p) {
        p
    } else {
        exposed(&p)
    }
}

/// Can a process that is neither owner nor group (`nobody`) reach and run `bin`?
fn reachable_by_others(bin: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let mode = |p: &Path| fs::metadata(p).map(|m| m.mode()).unwrap_or(0);
    mode(bin) & 0o001 != 0 && bin.ancestors().skip(1).all(|d| mode(d) & 0o001 != 0)
}

/// `bin`, made reachable for unprivileged children: a checkout under a private
/// directory (`mktemp -d` gives 0700) keeps `nobody` out of `target/`. Linked (or
/// copied) into a root-owned directory under /tmp that no one else can write, named by
/// the build's inode and mtime so a rebuild never reuses a stale copy.
fn exposed(bin: &Path) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let dir = std::env::temp_dir().join("fdbroker-tests-bin");
    match fs::create_dir(&dir) {
        Ok(()) => fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap(),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => panic!("{}: {e}", dir.display()),
    }
    let d = fs::symlink_metadata(&dir).unwrap();
    assert!(
        d.is_dir() && d.uid() == 0 && d.mode() & 0o022 == 0,
        "{} must be a root-owned directory no one else can write",
        dir.display()
    );
    let m = fs::metadata(bin).unwrap();
    let name = bin.file_name().unwrap().to_string_lossy();
    let target = dir.join(format!("{name}-{}-{}-{}", m.dev(), m.ino(), m.mtime_nsec()));
    if target.exists() {
        return target;
    }
    // A link shares the build's mode, so it serves only if that lets others run it.
    if m.mode() & 0o005 != 0o005 || fs::hard_link(bin, &target).is_err() {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("{name}.{}.{n}.tmp", std::process::id()));
        fs::copy(bin, &tmp).unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
        fs::rename(&tmp, &target).unwrap();
    }
    target
}

/// A running `fdbroker serve`, stopped with SIGTERM on drop.
pub struct Broker {
    child: Option<Child>,
    pub socket: PathBuf,
    pub policy: PathBuf,
    log: PathBuf,
    _dir: TempDir,
}

impl Broker {
    /// Start a broker on `policy` (the text may use `{dir}` for the test's tree and
    /// `{sock}` for the socket path). Returns once the socket accepts connections.
    pub fn start(tree: &TempDir, policy: &str) -> Broker {
        Broker::start_with(tree, policy, &[])
    }

    pub fn start_with(tree: &TempDir, policy: &str, extra_args: &[&str]) -> Broker {
        Broker::launch(tree, policy, |policy_path, socket| {
            let mut cmd = Command::new(fdbroker_bin());
            cmd.arg("serve")
                .arg("--policy")
                .arg(policy_path)
                .arg("--socket")
                .arg(socket)
                .args(extra_args);
            cmd
        })
    }

    /// Like [`Broker::start`], with `prelude` run by `sh` first (e.g. `ulimit -n 40`,
    /// `umask 0`), which then execs the broker, all under `wrapper` (a command and its
    /// arguments, e.g. `setpriv ...`; empty for none) that execs in turn, so the pid is
    /// the broker's.
    pub fn start_wrapped(tree: &TempDir, policy: &str, wrapper: &[&str], prelude: &str) -> Broker {
        Broker::launch(tree, policy, |policy_path, socket| {
            let script = format!("{prelude}\nexec \"$0\" serve --policy \"$1\" --socket \"$2\"");
            let mut cmd = match wrapper.split_first() {
                Some((program, args)) => {
                    let mut cmd = Command::new(program);
                    cmd.args(args).arg("sh");
                    cmd
                }
                None => Command::new("sh"),
            };
            cmd.arg("-c")
                .arg(script)
                .arg(fdbroker_bin())
                .arg(policy_path)
                .arg(socket);
            cmd
        })
    }

    /// Like [`Broker::start_wrapped`], but the broker runs as the dedicated, unprivileged
    /// `uid` (and gid) holding only `CAP_DAC_READ_SEARCH`, started the way the README
    /// says to start it by hand (`setpriv` with an ambient capability): nothing else of
    /// root's shares its descriptor budget. The socket's directory is given to `uid` so
    /// it can bind there.
    pub fn start_as(tree: &TempDir, policy: &str, uid: u32, prelude: &str) -> Broker {
        Broker::launch(tree, policy, |policy_path, socket| {
            use std::os::unix::fs::chown;
            chown(socket.parent().unwrap(), Some(uid), Some(uid)).unwrap();
            let script = format!("{prelude}\nexec \"$0\" serve --policy \"$1\" --socket \"$2\"");
            let mut cmd = Command::new("setpriv");
            cmd.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .args([
                    "--clear-groups",
                    "--inh-caps=-all,+dac_read_search",
                    "--ambient-caps=+dac_read_search",
                    "--bounding-set=-all,+dac_read_search",
                    "sh",
                    "-c",
                ])
                .arg(script)
                .arg(fdbroker_bin())
                .arg(policy_path)
                .arg(socket);
            cmd
        })
    }

    /// Write the policy, start what `command` builds for it and the socket (logging
    /// to a file), and wait until the socket accepts connections.
    fn launch(
        tree: &TempDir,
        policy: &str,
        command: impl FnOnce(&Path, &Path) -> Command,
    ) -> Broker {
        let dir = TempDir::new("broker");
        let socket = dir.join("broker.sock");
        let policy_path = dir.join("policy.toml");
        let text = policy
            .replace("{dir}", tree.path().to_str().unwrap())
            .replace("{sock}", socket.to_str().unwrap());
        fs::write(&policy_path, text).unwrap();
        let log = dir.join("broker.log");
        let child = command(&policy_path, &socket)
            .env("FDBROKER_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut b = Broker {
            child: Some(child),
            socket,
            policy: policy_path,
            log,
            _dir: dir,
        };
        b.wait_ready();
        b
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if fdbroker_shared::Channel::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("broker exited early with {status}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("broker did not start listening:\n{}", self.log());
    }

    /// The serving process: `fdbroker serve` is a monitor whose one child (two for a
    /// moment during a reload) serves. Waits for a reload in progress to settle.
    pub fn pid(&self) -> i32 {
        let monitor = self.monitor_pid();
        let children = format!("/proc/{monitor}/task/{monitor}/children");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let list = fs::read_to_string(&children).unwrap_or_default();
            let pids: Vec<i32> = list
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
            if pids.len() == 1 || (Instant::now() > deadline && !pids.is_empty()) {
                return pids[pids.len() - 1];
            }
            assert!(
                Instant::now() < deadline,
                "the monitor {monitor} has no server:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `fdbroker serve` itself: the monitor, which takes the signals (SIGHUP reloads,
    /// SIGTERM stops) and is what a service manager sees as the main process.
    pub fn monitor_pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// The broker's stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A client connected as this (root) test process.
    pub fn client(&self) -> fdbroker_worker::Client {
        fdbroker_worker::Client::connect(&self.socket).unwrap()
    }

    /// How many descriptors the broker holds.
    pub fn fd_count(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Is the broker process still running?
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// Send `sig` to the broker (its monitor).
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.monitor_pid()), sig).unwrap();
    }

    /// Wait up to `limit` for the broker to exit; its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Rewrite the policy file (same substitutions as `start`).
    pub fn rewrite_policy(&self, tree: &TempDir, policy: &str) {
        let text = policy
            .replace("{dir}", tree.path().to_str().unwrap())
            .replace("{sock}", self.socket.to_str().unwrap());
        fs::write(&self.policy, text).unwrap();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child);
        }
    }
}

/// SIGTERM, up to 10 s to exit, then SIGKILL; reaped either way.
pub fn stop_child(child: &mut Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Connect without the client library and greet as `agent`, expecting to be served:
/// for sending what a real client never would. Reads time out after 10 s.
pub fn raw_session(socket: &Path, agent: &str) -> fdbroker_shared::Channel {
    use fdbroker_shared::frame::{self, Kind, MAX_MESSAGE};
    use fdbroker_shared::wire::{Hello, Welcome};
    let ch = fdbroker_shared::Channel::connect(socket).unwrap();
    ch.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let hello = Hello {
        version: frame::PROTOCOL_VERSION,
        agent: agent.into(),
    };
    frame::encode(Kind::Hello, &hello, &mut buf).unwrap();
    ch.send(&buf).unwrap();
    let mut rx = vec![0; MAX_MESSAGE];
    let n = ch.recv(&mut rx).unwrap();
    let w: Welcome = frame::decode(Kind::Welcome, &rx[..n]).unwrap();
    assert!(matches!(w, Welcome::Accepted(_)), "{w:?}");
    ch
}

/// Run `cmd` as nobody:nogroup with no supplementary groups, with a time limit.
pub fn run_as_nobody(cmd: &mut Command) -> Output {
    // std calls setgroups(0) itself when a root parent sets the child's uid.
    cmd.uid(NOBODY).gid(NOBODY);
    run_with_timeout(cmd, Duration::from_secs(30))
}

/// Run `cmd` to completion, killing it after `limit` (a hang is a test failure, not a
/// hung suite).
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> Output {
    run_with_input(cmd, None, limit)
}

/// Like [`run_with_timeout`], feeding `input` on stdin (written from another thread, so
/// a child that answers while reading cannot deadlock against us).
pub fn run_with_input(cmd: &mut Command, input: Option<Vec<u8>>, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&input);
        });
    }
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            v
        })
    };
    let t_out = drain(
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn Read + Send>),
    );
    let t_err = drain(
        child
            .stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// `fdbroker cat --socket S FILES...` as nobody.
pub fn cat_as_nobody(socket: &Path, files: &[&Path]) -> Output {
    let mut cmd = Command::new(fdbroker_bin());
    cmd.arg("cat").arg("--socket").arg(socket).args(files);
    run_as_nobody(&mut cmd)
}

/// A new pseudo-terminal pair `(master, slave)`, both close-on-exec from the start (glibc's
/// `openpty` is not, and tests running in parallel would hand them to their children).
pub fn open_pty() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use nix::fcntl::OFlag;
    use std::os::fd::AsFd;
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = nix::pty::posix_openpt(flags).expect("posix_openpt");
    nix::pty::grantpt(&master).expect("grantpt");
    nix::pty::unlockpt(&master).expect("unlockpt");
    let name = nix::pty::ptsname_r(&master).expect("ptsname");
    let slave = nix::fcntl::open(name.as_str(), flags, nix::sys::stat::Mode::empty())
        .expect("open the pty slave");
    let master = master
        .as_fd()
        .try_clone_to_owned()
        .expect("dup the pty master");
    (master, slave)
}

/// A spawn-mode policy, written at `TREE/run.toml`: client `name` is `nobody`, may read
/// and list `TREE/in/`, and the sandbox may also run programs from `programs`.
pub fn run_policy(tree: &TempDir, name: &str, programs: &Path) -> PathBuf {
    tree.file(
        "run.toml",
        format!(
            r#"
[sandbox]
read_only = ["/usr", "/bin", "/lib", "/lib64", "/etc/ld.so.cache", "{programs}"]

[[client]]
name = "{name}"
users = ["nobody"]

  [[client.allow]]
  path = "{dir}/in/"
  access = ["read", "directory"]
"#,
            programs = programs.display(),
            dir = tree.path().display()
        )
        .as_bytes(),
        0o644,
    )
}
