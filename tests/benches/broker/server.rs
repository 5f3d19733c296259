//! A real `fdbroker serve` process for the benchmark.
//!
//! Unlike the e2e harness's `Broker` (which logs at `debug` for test diagnostics), this
//! runs the broker as an operator would: default log level `info`, so one audit line per
//! decision goes to stderr, here a file in the broker's temporary directory.

use fdbroker_shared::Channel;
use fdbroker_shared::frame::{self, Kind, MAX_MESSAGE};
use fdbroker_shared::wire::{Access, Hello, Op, OpenSpec, Reply, ReplyBody, Request, Welcome};
use fdbroker_tests::{TempDir, fdbroker_bin};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    child: Option<Child>,
    pub socket: PathBuf,
    log: PathBuf,
    _dir: TempDir,
}

impl Server {
    /// Start `fdbroker serve` on `policy` (already substituted). `log_filter` sets
    /// `FDBROKER_LOG`; `None` leaves the default (`info`, audit lines on).
    pub fn start(tag: &str, policy: &str, log_filter: Option<&str>) -> Server {
        let dir = TempDir::new(tag);
        let socket = dir.join("broker.sock");
        let policy_path = dir.join("policy.toml");
        fs::write(&policy_path, policy).expect("writing the bench policy");
        let log = dir.join("broker.log");
        let mut cmd = Command::new(fdbroker_bin());
        cmd.arg("serve")
            .arg("--policy")
            .arg(&policy_path)
            .arg("--socket")
            .arg(&socket)
            .env_remove("FDBROKER_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("creating the broker log"));
        if let Some(f) = log_filter {
            cmd.env("FDBROKER_LOG", f);
        }
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawning fdbroker serve");
        let mut s = Server {
            child: Some(child),
            socket,
            log,
            _dir: dir,
        };
        s.wait_ready();
        s
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if Channel::connect(&self.socket).is_ok() {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("waiting on the broker"));
            if let Some(status) = exited {
                panic!("fdbroker serve exited early with {status}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "fdbroker serve did not start listening within 20 s:\n{}",
            self.log()
        );
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The serving process: `fdbroker serve` is a monitor whose one child serves (and
    /// is what is pinned, measured and profiled).
    pub fn pid(&self) -> u32 {
        let monitor = self.child.as_ref().expect("broker is running").id();
        let children = format!("/proc/{monitor}/task/{monitor}/children");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let list = fs::read_to_string(&children).unwrap_or_default();
            if let Some(pid) = list.split_whitespace().next().and_then(|p| p.parse().ok()) {
                return pid;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the broker's monitor has no server:\n{}",
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    pub fn client(&self) -> fdbroker_worker::Client {
        fdbroker_worker::Client::connect(&self.socket)
            .unwrap_or_else(|e| panic!("connecting to the broker: {e}\n{}", self.log()))
    }

    /// `VmRSS` of the broker, KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("reading the broker's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Descriptors the broker holds.
    pub fn fd_count(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("listing the broker's descriptors")
            .count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            fdbroker_tests::stop_child(&mut child);
        }
    }
}

/// A connection that has completed the hello and then sits idle: a bare channel, so
/// the benchmark process does not hold a `Client`'s 64 KiB receive buffer per socket.
pub fn idle_connection(socket: &Path) -> Channel {
    let ch = Channel::connect(socket).expect("connecting an idle connection");
    ch.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("SO_RCVTIMEO");
    let mut out = Vec::new();
    frame::encode(
        Kind::Hello,
        &Hello {
            version: frame::PROTOCOL_VERSION,
            agent: "fdbroker-bench".to_owned(),
        },
        &mut out,
    )
    .expect("encoding hello");
    ch.send(&out).expect("sending hello");
    let mut buf = [0u8; 4096];
    let n = ch.recv(&mut buf).expect("receiving welcome");
    match frame::decode::<Welcome>(Kind::Welcome, &buf[..n]).expect("decoding welcome") {
        Welcome::Accepted(_) => ch,
        Welcome::Refused(w) => panic!("the broker refused an idle connection: {w:?}"),
    }
}

/// Ask for `path` on a bare connection; true if the file arrived.
pub fn open_on(ch: &Channel, path: &[u8]) -> bool {
    let mut out = Vec::new();
    frame::encode(
        Kind::Request,
        &Request {
            id: 1,
            op: Op::Open(OpenSpec {
                path: path.to_vec(),
                access: Access::Read,
                flags: 0,
            }),
        },
        &mut out,
    )
    .expect("encoding a request");
    if ch.send(&out).is_err() {
        return false;
    }
    let mut buf = vec![0u8; MAX_MESSAGE];
    let Ok((n, fds)) = ch.recv_with_fds(&mut buf, 1) else {
        return false;
    };
    matches!(
        frame::decode::<Reply>(Kind::Reply, &buf[..n]),
        Ok(Reply {
            body: ReplyBody::Open(Ok(_)),
            ..
        })
    ) && fds.len() == 1
}
