//! The `Broker` fixture: a real `fdbroker serve` process started on a policy, watched
//! through its log and `/proc`, and stopped on drop.

use crate::bins::fdbroker_bin;
use crate::nobody::nobody_uid;
use crate::tree::TempDir;
use crate::wait::wait_until;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `fdbroker serve`, stopped with SIGTERM on drop.
pub struct Broker {
    child: Option<Child>,
    pub socket: PathBuf,
    pub policy: PathBuf,
    log: PathBuf,
    _dir: TempDir,
}

impl Broker {
    /// Start a broker on `policy` (the text may use `{dir}` for the test's tree,
    /// `{sock}` for the socket path and `{nobody}` for nobody's uid). Returns once the
    /// socket accepts connections.
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

    /// Like [`Broker::start`], with the broker's stderr going to `stderr` (a file on a
    /// small filesystem, a pipe nobody reads) instead of the fixture's log file, which
    /// [`Broker::log`] then reads as empty; `env` is added to its environment.
    pub fn start_logging_to(
        tree: &TempDir,
        policy: &str,
        stderr: Stdio,
        env: &[(&str, &str)],
    ) -> Broker {
        Broker::launch_to(tree, policy, Some(stderr), |policy_path, socket| {
            let mut cmd = Command::new(fdbroker_bin());
            cmd.envs(env.iter().copied())
                .arg("serve")
                .arg("--policy")
                .arg(policy_path)
                .arg("--socket")
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
        Broker::launch_to(tree, policy, None, command)
    }

    /// [`Broker::launch`], logging to `stderr` when given.
    fn launch_to(
        tree: &TempDir,
        policy: &str,
        stderr: Option<Stdio>,
        command: impl FnOnce(&Path, &Path) -> Command,
    ) -> Broker {
        let dir = TempDir::new("broker");
        let socket = dir.join("broker.sock");
        let policy_path = dir.join("policy.toml");
        let text = policy
            .replace("{dir}", tree.path().to_str().unwrap())
            .replace("{sock}", socket.to_str().unwrap())
            .replace("{nobody}", &nobody_uid().to_string());
        fs::write(&policy_path, text).unwrap();
        let log = dir.join("broker.log");
        let child = command(&policy_path, &socket)
            .env("FDBROKER_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr.unwrap_or_else(|| fs::File::create(&log).unwrap().into()))
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

    /// Wait up to 10 s until the broker's log has said `what` at least `times` times
    /// (reloads and start-up steps are asynchronous to whatever asked for them).
    pub fn wait_log(&self, what: &str, times: usize) {
        wait_until(
            Duration::from_secs(10),
            || format!("log never said {what:?} {times} times:\n{}", self.log()),
            || self.log().matches(what).count() >= times,
        );
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
        crate::process::wait_exit(self.child.as_mut().unwrap(), limit)
    }

    /// Rewrite the policy file (same substitutions as `start`).
    pub fn rewrite_policy(&self, tree: &TempDir, policy: &str) {
        let text = policy
            .replace("{dir}", tree.path().to_str().unwrap())
            .replace("{sock}", self.socket.to_str().unwrap())
            .replace("{nobody}", &nobody_uid().to_string());
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
