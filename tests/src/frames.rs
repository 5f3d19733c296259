//! Raw protocol frames and sessions, for sending what a real client never would.

use fdbroker_shared::frame::{self, Kind, MAX_MESSAGE};
use fdbroker_shared::wire::{Access, Hello, Op, OpenSpec, Reply, Request};
use fdbroker_shared::{Channel, ProtocolError, RecvError};
use std::io::ErrorKind;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

/// Connect without the client library and greet as `agent`, expecting to be served:
/// for sending what a real client never would. Reads time out after 10 s.
pub fn raw_session(socket: &Path, agent: &str) -> Channel {
    let ch = Channel::connect(socket).unwrap();
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
    let w: fdbroker_shared::wire::Welcome = frame::decode(Kind::Welcome, &rx[..n]).unwrap();
    assert!(
        matches!(w, fdbroker_shared::wire::Welcome::Accepted(_)),
        "{w:?}"
    );
    ch
}

/// A request frame, encoded as a client would send it.
pub fn request_frame(req: &Request) -> Vec<u8> {
    let mut buf = Vec::new();
    frame::encode(Kind::Request, req, &mut buf).unwrap();
    buf
}

/// The greeting of a current client (agent `adversarial`).
pub fn hello_frame() -> Vec<u8> {
    let mut buf = Vec::new();
    let hello = Hello {
        version: frame::PROTOCOL_VERSION,
        agent: "adversarial".into(),
    };
    frame::encode(Kind::Hello, &hello, &mut buf).unwrap();
    buf
}

/// An `Open` request for `path` with raw `access` and `flags`.
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

/// An `OpenMany` request for reading `paths`.
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
