//! Helpers shared by `adversarial.rs` and `limits.rs`: raw protocol frames and
//! sessions, descriptor counts, and waiting for a condition.
#![allow(dead_code, clippy::unwrap_used)]

use fdbroker_shared::frame::{self, Kind, MAX_MESSAGE};
use fdbroker_shared::wire::{Access, Hello, Op, OpenSpec, Reply, Request};
use fdbroker_shared::{Channel, ProtocolError, RecvError};
use fdbroker_worker::BrokerError;
use std::fs;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
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
