//! Passing live connections from a server to its successor on reload (see `monitor`).
//!
//! One `SOCK_SEQPACKET` message per connection: the socket and the descriptors of a
//! reply it could not take yet travel as `SCM_RIGHTS`; the rest is a fixed header:
//!
//! ```text
//! b'C' | flags u8 | charged u64 LE | request id u64 LE | parked reply bytes...
//! flags: 1 greeted, 2 draining (closed, replies unread), 4 parked reply, 8 it has an id,
//!        16 made by `Connect`: only its charge travels, and the id word is its uid
//! ```
//!
//! then `b'T'` and the predecessor's decision counts as JSON (`audit::counts`'s
//! `Snapshot`, no descriptor), and a last message `b'D'`: nothing more follows. The successor is the receiver and
//! trusts nothing it cannot check: every descriptor must be a connected `SOCK_SEQPACKET`
//! socket, counts are bounded, and anything malformed closes what arrived with it.

use crate::server::conn::Exported;
use fdbroker_shared::frame::{MAX_FDS_PER_REPLY, MAX_MESSAGE};
use fdbroker_shared::{Channel, ProtocolError, RecvError};
use std::io;
use std::os::fd::OwnedFd;

const CONN: u8 = b'C';
const DONE: u8 = b'D';
const TALLY: u8 = b'T';
const GREETED: u8 = 1;
const DRAINING: u8 = 2;
const PARKED: u8 = 4;
const HAS_ID: u8 = 8;
const DERIVED: u8 = 16;
const HEADER: usize = 2 + 8 + 8;

/// One message from the predecessor.
#[derive(Debug)]
pub enum Received {
    Conn {
        conn: Exported,
        draining: bool,
    },
    Done,
    /// The predecessor's decision counts, to add to this server's.
    Tally(crate::audit::counts::Snapshot),
    /// The predecessor closed its end (it exited) without saying it was done.
    Closed,
}

/// Send one connection.
pub fn send(to: &Channel, conn: Exported, draining: bool) -> io::Result<()> {
    let mut flags = 0;
    if conn.greeted {
        flags |= GREETED;
    }
    if draining {
        flags |= DRAINING;
    }
    let (id, bytes, reply_fds) = match conn.parked {
        Some((id, bytes, fds)) => {
            flags |= PARKED;
            if id.is_some() {
                flags |= HAS_ID;
            }
            (id.unwrap_or(0), bytes, fds)
        }
        None => (0, Vec::new(), Vec::new()),
    };
    let id = match conn.derived_uid {
        Some(uid) => {
            flags |= DERIVED | DRAINING;
            u64::from(uid)
        }
        None => id,
    };
    let mut msg = Vec::with_capacity(HEADER + bytes.len());
    msg.push(CONN);
    msg.push(flags);
    msg.extend_from_slice(&(conn.charged as u64).to_le_bytes());
    msg.extend_from_slice(&id.to_le_bytes());
    msg.extend_from_slice(&bytes);
    let mut fds = Vec::with_capacity(1 + reply_fds.len());
    fds.push(conn.socket);
    fds.extend(reply_fds);
    to.send_with_fds(&msg, &fds)
}

/// Send this server's decision counts ([`crate::audit::counts`]).
pub fn tally(to: &Channel) -> io::Result<()> {
    let mut msg = vec![TALLY];
    msg.extend_from_slice(&crate::audit::counts::encode());
    if msg.len() > MAX_MESSAGE {
        return Err(bad("the counts do not fit in one message"));
    }
    to.send(&msg)
}

/// Say that every connection was sent.
pub fn done(to: &Channel) -> io::Result<()> {
    to.send(&[DONE])
}

/// Receive one message (blocking as the channel is set).
pub fn recv(from: &Channel) -> io::Result<Received> {
    let mut buf = vec![0u8; HEADER + MAX_MESSAGE];
    let (n, mut fds) = match from.recv_with_fds(&mut buf, 1 + MAX_FDS_PER_REPLY) {
        Ok(r) => r,
        Err(RecvError::Protocol(ProtocolError::Closed)) => return Ok(Received::Closed),
        Err(RecvError::Io(e)) => return Err(e),
        Err(RecvError::Protocol(p)) => return Err(bad(&p.to_string())),
    };
    let msg = &buf[..n];
    match msg.first() {
        Some(&DONE) if n == 1 && fds.is_empty() => return Ok(Received::Done),
        Some(&TALLY) if fds.is_empty() => {
            return crate::audit::counts::decode(&msg[1..])
                .map(Received::Tally)
                .map_err(|e| bad(&format!("counts: {e}")));
        }
        Some(&CONN) if n >= HEADER && !fds.is_empty() => {}
        _ => return Err(bad("malformed message")),
    }
    let flags = msg[1];
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&msg[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let charged = usize::try_from(word(2)).map_err(|_| bad("charge out of range"))?;
    let id = word(10);
    let socket: OwnedFd = fds.remove(0);
    // It must be what it claims: a connected SEQPACKET socket (checked by from_fd).
    let socket = OwnedFd::from(Channel::from_fd(socket)?);
    if flags & DERIVED != 0 {
        // Only a charge: no parked reply, no other descriptor, a uid in the id word.
        let uid = u32::try_from(id).map_err(|_| bad("uid out of range"))?;
        if flags & PARKED != 0 || !fds.is_empty() || n != HEADER {
            return Err(bad("a charge-only connection with more"));
        }
        return Ok(Received::Conn {
            conn: Exported {
                socket,
                greeted: false,
                charged,
                parked: None,
                derived_uid: Some(uid),
            },
            draining: true,
        });
    }
    let parked = if flags & PARKED != 0 {
        Some((
            (flags & HAS_ID != 0).then_some(id),
            msg[HEADER..].to_vec(),
            fds,
        ))
    } else if fds.is_empty() && n == HEADER {
        None
    } else {
        return Err(bad("descriptors or bytes without a parked reply"));
    };
    Ok(Received::Conn {
        conn: Exported {
            socket,
            greeted: flags & GREETED != 0,
            charged,
            parked,
            derived_uid: None,
        },
        draining: flags & DRAINING != 0,
    })
}

#[cold]
fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("handover: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_and_its_parked_reply_arrive_whole() {
        let (a, b) = Channel::pair().expect("pair");
        let (conn, _peer) = Channel::pair().expect("pair");
        let reply_fd = OwnedFd::from(std::fs::File::open("/dev/null").expect("null"));
        send(
            &a,
            Exported {
                socket: OwnedFd::from(conn),
                greeted: true,
                charged: 3,
                parked: Some((Some(7), b"reply".to_vec(), vec![reply_fd])),
                derived_uid: None,
            },
            true,
        )
        .expect("send");
        done(&a).expect("done");
        let Received::Conn { conn, draining } = recv(&b).expect("recv") else {
            panic!("not a connection");
        };
        assert!(draining && conn.greeted);
        assert_eq!(conn.charged, 3);
        let (id, bytes, fds) = conn.parked.expect("parked");
        assert_eq!(
            (id, bytes.as_slice(), fds.len()),
            (Some(7), &b"reply"[..], 1)
        );
        assert!(matches!(recv(&b).expect("recv"), Received::Done));
        tally(&a).expect("tally");
        assert!(matches!(recv(&b).expect("recv"), Received::Tally(_)));
        a.send(&[TALLY, b'{']).expect("send");
        assert!(recv(&b).is_err(), "malformed counts are refused");
        drop(a);
        assert!(matches!(recv(&b).expect("recv"), Received::Closed));
    }

    #[test]
    fn a_connect_made_connection_travels_with_its_uid_and_charge_only() {
        let (a, b) = Channel::pair().expect("pair");
        let (conn, _peer) = Channel::pair().expect("pair");
        send(
            &a,
            Exported {
                socket: OwnedFd::from(conn),
                greeted: true,
                charged: 128,
                parked: None,
                derived_uid: Some(65534),
            },
            false,
        )
        .expect("send");
        let Received::Conn { conn, draining } = recv(&b).expect("recv") else {
            panic!("not a connection");
        };
        assert!(draining, "never served, only kept charged");
        assert_eq!((conn.derived_uid, conn.charged), (Some(65534), 128));
        assert!(!conn.greeted && conn.parked.is_none());
        // A charge-only message with a reply attached is refused.
        let (c2, _p2) = Channel::pair().expect("pair");
        let null = OwnedFd::from(std::fs::File::open("/dev/null").expect("null"));
        let mut msg = vec![CONN, DERIVED | PARKED];
        msg.extend_from_slice(&[0; 16]);
        a.send_with_fds(&msg, &[OwnedFd::from(c2), null])
            .expect("send");
        assert!(recv(&b).is_err());
    }

    #[test]
    fn anything_but_a_socket_is_refused() {
        let (a, b) = Channel::pair().expect("pair");
        let file = OwnedFd::from(std::fs::File::open("/dev/null").expect("null"));
        let mut msg = vec![CONN, 0];
        msg.extend_from_slice(&[0; 16]);
        a.send_with_fds(&msg, &[file]).expect("send");
        assert!(recv(&b).is_err());
    }
}
