//! Helpers shared by `adversarial.rs` and `limits.rs`: raw protocol sessions, and a
//! broker started under a shell prelude (umask, `ulimit -n`) or a wrapper (a private
//! mount namespace), which the harness's `Broker` cannot do.
#![allow(dead_code, clippy::unwrap_used)]

use fdbroker_shared::frame::{self, Kind, MAX_MESSAGE};
use fdbroker_shared::wire::{Access, Hello, Op, OpenSpec, Reply, Request};
use fdbroker_shared::{Channel, ProtocolError, RecvError};
use fdbroker_tests::TempDir;
use fdbroker_worker::BrokerError;
use std::fs;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The errno inside a broker error.
pub fn errno_of(e: &std::io::Error) -> i32 {
    e.get_ref()
        .and_then(|i| i.downcast_ref::<BrokerError>())
        .map(|b| b.errno)
        .unwrap_or_else(|| panic!("not a broker error: {e:?}"))
}

pub fn read_all(mut f: fs::File) -> Vec<u8> {
    let mut v = Vec::new();
    f.read_to_end(&mut v).unwrap();
    v
}

/// `(st_dev, st_ino)` of an open descriptor.
pub fn dev_ino(fd: &impl AsFd) -> (u64, u64) {
    let st = nix::sys::stat::fstat(fd).unwrap();
    (st.st_dev, st.st_ino)
}

pub fn path_dev_ino(p: &Path) -> (u64, u64) {
    let st = nix::sys::stat::lstat(p).unwrap();
    (st.st_dev, st.st_ino)
}

/// Descriptors a process holds.
pub fn fd_count_of(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// A process's descriptor count once it has stopped changing (a broker may still be
/// closing a connection it just saw end, such as the harness's readiness probe).
pub fn settled_fd_count(pid: i32) -> usize {
    let mut last = fd_count_of(pid);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = fd_count_of(pid);
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// Wait until `f` holds, or `limit` passes; whether it held.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn request_frame(req: &Request) -> Vec<u8> {
    let mut buf = Vec::new();
    frame::encode(Kind::Request, req, &mut buf).unwrap();
    buf
}

pub fn hello_frame() -> Vec<u8> {
    let mut buf = Vec::new();
    let hello = Hello {
        version: frame::PROTOCOL_VERSION,
        agent: "adversarial".into(),
    };
    frame::encode(Kind::Hello, &hello, &mut buf).unwrap();
    buf
}

pub fn open_frame(id: u64, path: &[u8], access: Access, flags: u32) -> Vec<u8> {
    request_frame(&Request {
        id,
        op: Op::Open(OpenSpec {
            path: path.to_vec(),
            access,
            flags,
        }),
    })
}

pub fn many_frame(id: u64, paths: Vec<Vec<u8>>) -> Vec<u8> {
    request_frame(&Request {
        id,
        op: Op::OpenMany {
            paths,
            access: Access::Read,
            flags: 0,
        },
    })
}

/// Connect raw, greet, and expect to be served.
pub fn raw_session(socket: &Path) -> Channel {
    fdbroker_tests::raw_session(socket, "adversary")
}

/// Receive one reply and its descriptors.
pub fn recv_reply(ch: &Channel) -> (Reply, Vec<OwnedFd>) {
    let mut rx = vec![0; MAX_MESSAGE];
    let (n, fds) = ch.recv_with_fds(&mut rx, frame::MAX_FDS_PER_REPLY).unwrap();
    (frame::decode(Kind::Reply, &rx[..n]).unwrap(), fds)
}

/// The broker closed this connection (after a violation): EOF, or a reset if it
/// closed with our bytes unread. Never a reply.
pub fn assert_dropped(ch: &Channel, what: &str) {
    let mut rx = vec![0; MAX_MESSAGE];
    match ch.recv_with_fds(&mut rx, 4) {
        Err(RecvError::Protocol(ProtocolError::Closed)) => {}
        Err(RecvError::Io(e)) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("{what}: the connection was not dropped: {other:?}"),
    }
}

/// A `fdbroker serve` started through `sh -c PRELUDE; exec broker ...`, optionally
/// under a wrapper command that execs (so the pid is the broker's).
pub struct Spawned {
    child: Option<Child>,
    pub socket: PathBuf,
    log: PathBuf,
    _dir: TempDir,
}

impl Spawned {
    pub fn start(tree: &TempDir, policy: &str, wrapper: &[&str], prelude: &str) -> Spawned {
        let dir = TempDir::new("spawned");
        let socket = dir.join("broker.sock");
        let policy_path = dir.join("policy.toml");
        let text = policy
            .replace("{dir}", tree.path().to_str().unwrap())
            .replace("{sock}", socket.to_str().unwrap());
        fs::write(&policy_path, text).unwrap();
        let log = dir.join("broker.log");
        let script = format!("{prelude}\nexec \"$0\" serve --policy \"$1\" --socket \"$2\"");
        let (program, pre_args) = match wrapper.split_first() {
            Some((p, rest)) => (p.to_string(), rest.to_vec()),
            None => ("sh".to_string(), vec![]),
        };
        let mut cmd = Command::new(program);
        cmd.args(pre_args);
        if !wrapper.is_empty() {
            cmd.arg("sh");
        }
        cmd.arg("-c")
            .arg(script)
            .arg(fdbroker_tests::fdbroker_bin())
            .arg(&policy_path)
            .arg(&socket)
            .env("FDBROKER_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap());
        let child = cmd.spawn().unwrap();
        let mut s = Spawned {
            child: Some(child),
            socket,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if Channel::connect(&s.socket).is_ok() {
                break;
            }
            if let Some(st) = s.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("broker exited early with {st}:\n{}", s.log());
            }
            assert!(
                Instant::now() < deadline,
                "broker did not start:\n{}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn fd_count(&self) -> usize {
        fd_count_of(self.pid())
    }

    pub fn alive(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    pub fn client(&self) -> fdbroker_worker::Client {
        fdbroker_worker::Client::connect(&self.socket).unwrap()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            fdbroker_tests::stop_child(&mut child);
        }
    }
}
