//! The channel between the monitor and one server: a `SOCK_SEQPACKET` socketpair the
//! monitor makes for each server it starts (see `monitor`).
//!
//! The messages are few and small: a tag byte, then at most [`MAX_TEXT`] bytes of
//! UTF-8 text (a status line, a failure reason). The monitor parses nothing else from a
//! server: a server handles hostile input and may be compromised, so nothing it says
//! can make the monitor do more than log a line, forward a bounded one-line status to
//! the service manager, or pick which server gets the listeners next.

use fdbroker_shared::{Channel, RecvError};
use std::io;
use std::os::fd::{AsFd, OwnedFd};

/// Longest text a message carries; longer texts are cut at a character boundary.
pub const MAX_TEXT: usize = 4096;

/// The descriptor number of a server's end, in its environment.
pub const ENV_CONTROL_FD: &str = "FDBROKER_CONTROL_FD";
/// The listeners a server is given: `FD[:NAME],...` (descriptor numbers it inherited).
pub const ENV_LISTEN_FDS: &str = "FDBROKER_LISTEN_FDS";
/// A successor's end of the socket its predecessor hands the connections over on.
pub const ENV_HANDOVER_FD: &str = "FDBROKER_HANDOVER_FD";
/// The predecessor's pid: a connection whose peer is the predecessor itself is not a
/// worker's, and is refused (a compromised server must not become a client).
pub const ENV_PREDECESSOR_PID: &str = "FDBROKER_PREDECESSOR_PID";
/// The service manager's watchdog timeout, in microseconds, for the server to keep the
/// monitor's watchdog fed from its own event loop.
pub const ENV_WATCHDOG_USEC: &str = "FDBROKER_WATCHDOG_USEC";

/// From a server to the monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Up {
    /// The first server bound the socket itself (no socket activation); the listener
    /// travels with this message, and the text says which file it created, which the
    /// monitor owns from then on (no server removes it).
    Bound { socket_file: String },
    /// Loaded, confined and serving (its event loop runs); a status line.
    Ready { status: String },
    /// Could not start (a broken policy, a missing capability); the reason, with
    /// `FILE:LINE:COL` where there is one. The server exits next.
    Failed { reason: String },
    /// A new status line for the service manager.
    Status { text: String },
    /// The event loop turned: the monitor may feed the watchdog.
    Alive,
    /// Every connection went to the successor; the server exits next. A handover that
    /// failed midway says [`Up::Failed`] instead, and the reload is reported failed.
    HandedOver,
}

/// From the monitor to a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Down {
    /// Hand every connection over on the socket that travels with this message, then
    /// exit.
    HandOver,
    /// Stop gracefully: answer what was sent, close everything, exit (the socket file
    /// is the monitor's to remove).
    Stop,
    /// A reload was refused (the new server could not start, or the handover failed);
    /// the text says why. This server keeps serving, and tells `fdbroker status`.
    ReloadRefused { reason: String },
}

impl Up {
    fn encode(&self) -> Vec<u8> {
        let (tag, text) = match self {
            Up::Bound { socket_file } => (b'B', socket_file.as_str()),
            Up::Ready { status } => (b'R', status.as_str()),
            Up::Failed { reason } => (b'F', reason.as_str()),
            Up::Status { text } => (b'S', text.as_str()),
            Up::Alive => (b'A', ""),
            Up::HandedOver => (b'H', ""),
        };
        let mut out = Vec::with_capacity(1 + text.len().min(MAX_TEXT));
        out.push(tag);
        out.extend_from_slice(cut(text, MAX_TEXT).as_bytes());
        out
    }

    fn decode(msg: &[u8]) -> io::Result<Up> {
        let (tag, rest) = msg.split_first().ok_or_else(|| bad("an empty message"))?;
        let text = String::from_utf8_lossy(rest).into_owned();
        Ok(match tag {
            b'B' => Up::Bound { socket_file: text },
            b'R' => Up::Ready { status: text },
            b'F' => Up::Failed { reason: text },
            b'S' => Up::Status { text },
            b'A' => Up::Alive,
            b'H' => Up::HandedOver,
            other => return Err(bad(&format!("unknown message tag {other:#x}"))),
        })
    }
}

impl Down {
    fn encode(&self) -> Vec<u8> {
        match self {
            Down::HandOver => vec![b'h'],
            Down::Stop => vec![b's'],
            Down::ReloadRefused { reason } => {
                let mut out = vec![b'r'];
                out.extend_from_slice(cut(reason, MAX_TEXT).as_bytes());
                out
            }
        }
    }

    fn decode(msg: &[u8]) -> io::Result<Down> {
        match msg {
            [b'h'] => Ok(Down::HandOver),
            [b's'] => Ok(Down::Stop),
            [b'r', reason @ ..] => Ok(Down::ReloadRefused {
                reason: String::from_utf8_lossy(reason).into_owned(),
            }),
            _ => Err(bad("unknown message from the monitor")),
        }
    }
}

/// Send `msg` up, with `fd` attached (only [`Up::Bound`] carries one).
pub fn send_up(ch: &Channel, msg: &Up, fd: Option<&OwnedFd>) -> io::Result<()> {
    let bytes = msg.encode();
    match fd {
        Some(fd) => ch.send_with_fds(&bytes, &[fd.as_fd()]),
        None => ch.send(&bytes),
    }
}

/// Receive one message from a server, with at most one descriptor. `Ok(None)` when the
/// server has closed its end (it exited).
pub fn recv_up(ch: &Channel) -> io::Result<Option<(Up, Option<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX_TEXT + 1];
    match ch.recv_with_fds(&mut buf, 1) {
        Ok((n, mut fds)) => Ok(Some((Up::decode(&buf[..n])?, fds.pop()))),
        Err(e) => closed_or(e),
    }
}

/// Send `msg` down, with `fd` attached (only [`Down::HandOver`] carries one).
pub fn send_down(ch: &Channel, msg: Down, fd: Option<&OwnedFd>) -> io::Result<()> {
    let bytes = msg.encode();
    match fd {
        Some(fd) => ch.send_with_fds(&bytes, &[fd.as_fd()]),
        None => ch.send(&bytes),
    }
}

/// Receive one message from the monitor. `Ok(None)` when the monitor is gone.
pub fn recv_down(ch: &Channel) -> io::Result<Option<(Down, Option<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX_TEXT + 1];
    match ch.recv_with_fds(&mut buf, 1) {
        Ok((n, mut fds)) => Ok(Some((Down::decode(&buf[..n])?, fds.pop()))),
        Err(e) => closed_or(e),
    }
}

fn closed_or<T>(e: RecvError) -> io::Result<Option<T>> {
    match e {
        RecvError::Protocol(fdbroker_shared::ProtocolError::Closed) => Ok(None),
        RecvError::Io(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ) =>
        {
            Ok(None)
        }
        RecvError::Io(e) => Err(e),
        RecvError::Protocol(p) => Err(bad(&p.to_string())),
    }
}

/// `text`, at most `max` bytes, cut at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cold]
fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("control channel: {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_texts_are_bounded() {
        let (a, b) = Channel::pair().expect("pair");
        let long = "é".repeat(MAX_TEXT);
        for msg in [
            Up::Ready {
                status: "serving".into(),
            },
            Up::Failed {
                reason: "p.toml:3:1: bad".into(),
            },
            Up::Alive,
            Up::HandedOver,
        ] {
            send_up(&a, &msg, None).expect("send");
            let (got, fd) = recv_up(&b).expect("recv").expect("open");
            assert_eq!((got, fd.is_none()), (msg, true));
        }
        send_up(&a, &Up::Status { text: long }, None).expect("send");
        let Some((Up::Status { text }, None)) = recv_up(&b).expect("recv") else {
            panic!("not a status");
        };
        assert!(text.len() <= MAX_TEXT && text.chars().all(|c| c == 'é'));
        send_down(&b, Down::Stop, None).expect("send");
        assert_eq!(
            recv_down(&a).expect("recv").map(|(d, _)| d),
            Some(Down::Stop)
        );
        drop(b);
        assert!(recv_down(&a).expect("recv").is_none());
    }
}
