//! Connecting to the broker and inheriting a connection from the process that started
//! us (`FDBROKER_FD`): everything that happens before the first request.
//!
//! Every way in ends the same: a channel whose greeting the broker accepted, with the
//! caller's timeout set on it, and the [`Origin`] that says whether it can be made
//! again. The request pipeline starts from there.

use super::locks::lock;
use crate::error::{BrokerError, broken, context, is_disconnect, recv_error, timed_out_error};
use fdbroker_shared::Channel;
use fdbroker_shared::frame::{self, Kind, MAX_MESSAGE};
use fdbroker_shared::wire::{Accepted, Hello, Op, Reply, ReplyBody, Request, Welcome};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Where `fdbroker serve` listens when neither the policy nor the caller says otherwise.
///
/// ```
/// assert_eq!(fdbroker_worker::DEFAULT_SOCKET, "/run/fdbroker/fdbroker.sock");
/// ```
pub const DEFAULT_SOCKET: &str = "/run/fdbroker/fdbroker.sock";
/// The environment variable holding an inherited connection's descriptor number, as
/// `fdbroker run` sets it for the worker it starts.
///
/// ```
/// assert_eq!(fdbroker_worker::ENV_FD, "FDBROKER_FD");
/// ```
pub const ENV_FD: &str = "FDBROKER_FD";
/// The environment variable naming the broker's socket when no descriptor is inherited.
///
/// ```
/// assert_eq!(fdbroker_worker::ENV_SOCKET, "FDBROKER_SOCKET");
/// ```
pub const ENV_SOCKET: &str = "FDBROKER_SOCKET";
/// The environment variable bounding, in seconds (`5`, `0.5`), how long
/// [`Client::from_env`] waits for the broker: to connect, and then for each reply.
///
/// ```
/// assert_eq!(fdbroker_worker::ENV_TIMEOUT, "FDBROKER_TIMEOUT");
/// ```
///
/// [`Client::from_env`]: super::Client::from_env
pub const ENV_TIMEOUT: &str = "FDBROKER_TIMEOUT";

/// How the connection was made, which decides what happens when it is lost.
#[derive(Debug, Clone)]
pub(super) enum Origin {
    /// Reconnects to this socket.
    Socket(PathBuf),
    /// Inherited (`FDBROKER_FD`): the broker that started the worker; no reconnecting.
    Inherited,
    /// A channel the caller made ([`Client::over`]).
    ///
    /// [`Client::over`]: super::Client::over
    Given,
}

/// The bound [`ENV_TIMEOUT`] sets, if it is set and not empty.
pub(super) fn env_timeout() -> io::Result<Option<Duration>> {
    match std::env::var_os(ENV_TIMEOUT) {
        Some(v) if !v.is_empty() => Some(parse_timeout(&v)).transpose(),
        _ => Ok(None),
    }
}

/// A greeted connection the way a worker is usually set up: through the connection in
/// [`ENV_FD`], else to the socket in [`ENV_SOCKET`], else to [`DEFAULT_SOCKET`].
pub(super) fn from_env(timeout: Option<Duration>) -> io::Result<(Channel, Accepted, Origin)> {
    if let Some(raw) = std::env::var_os(ENV_FD) {
        let deadline = timeout.map(|t| Instant::now() + t);
        let channel = connection_through(inherited(&raw)?, deadline)?;
        let accepted = greet_over(&channel, timeout, deadline)?;
        return Ok((channel, accepted, Origin::Inherited));
    }
    let path = match std::env::var_os(ENV_SOCKET) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_SOCKET),
    };
    let (channel, accepted) = dial_and_greet(&path, timeout)?;
    Ok((channel, accepted, Origin::Socket(path)))
}

/// Greet the broker over an already connected channel within `deadline`, then bound
/// each later reply and send by `timeout`.
pub(super) fn greet_over(
    channel: &Channel,
    timeout: Option<Duration>,
    deadline: Option<Instant>,
) -> io::Result<Accepted> {
    let accepted = greet(channel, deadline)?;
    channel.set_read_timeout(timeout)?;
    channel.set_write_timeout(timeout)?;
    Ok(accepted)
}

/// Connect to `path` and greet the broker there, all within `timeout` if given.
pub(super) fn dial_and_greet(
    path: &Path,
    timeout: Option<Duration>,
) -> io::Result<(Channel, Accepted)> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let channel = match timeout {
        Some(t) => Channel::connect_timeout(path, t),
        None => Channel::connect(path),
    }
    .map_err(|e| {
        let why = match e.kind() {
            io::ErrorKind::PermissionDenied => super::refused::who_may_connect(path)
                .map(|w| format!(": {w}"))
                .unwrap_or_default(),
            _ => String::new(),
        };
        io::Error::new(
            e.kind(),
            format!(
                "cannot connect to the broker at {}: {e}{why}",
                path.display()
            ),
        )
    })?;
    let accepted = greet(&channel, deadline)?;
    channel.set_read_timeout(timeout)?;
    channel.set_write_timeout(timeout)?;
    Ok((channel, accepted))
}

/// The time left until `deadline` as a socket timeout (never zero, which would mean
/// "for ever"), or `TimedOut` if it has passed.
fn remaining(deadline: Option<Instant>) -> io::Result<Option<Duration>> {
    match deadline {
        None => Ok(None),
        Some(d) => match d.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Ok(Some(left)),
            _ => Err(timed_out_error()),
        },
    }
}

/// Send the hello and read the welcome, within `deadline`.
fn greet(channel: &Channel, deadline: Option<Instant>) -> io::Result<Accepted> {
    let mut buf = Vec::with_capacity(256);
    frame::encode(
        Kind::Hello,
        &Hello {
            version: frame::PROTOCOL_VERSION,
            agent: concat!("fdbroker-worker ", env!("CARGO_PKG_VERSION")).to_owned(),
        },
        &mut buf,
    )?;
    channel.set_write_timeout(remaining(deadline)?)?;
    // A broker that refuses this peer answers at accept time and closes, possibly
    // before the hello goes out: then the send fails with EPIPE but the refusal,
    // which says why, is still queued for us to read.
    let sent = channel.send(&buf).map_err(|e| context(e, "sending hello"));
    buf.resize(MAX_MESSAGE, 0);
    channel.set_read_timeout(remaining(deadline)?)?;
    let mut received = channel.recv(&mut buf);
    if matches!(&received, Err(fdbroker_shared::RecvError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset)
    {
        // The broker closed with our hello unread, so the kernel reports
        // ECONNRESET once (and clears it) before handing over queued messages.
        received = channel.recv(&mut buf);
    }
    let n = match received {
        Ok(n) => n,
        Err(fdbroker_shared::RecvError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the broker did not answer the greeting in time (is it wedged or stopped?)",
            ));
        }
        Err(e) => {
            sent?;
            return Err(context(e.into(), "waiting for the broker's welcome"));
        }
    };
    let welcome: Welcome = frame::decode(Kind::Welcome, &buf[..n]).map_err(|e| {
        let e: io::Error = e.into();
        context(e, "reading the broker's welcome")
    })?;
    match welcome {
        Welcome::Accepted(a) => Ok(a),
        Welcome::Refused(w) => {
            // Keep the BrokerError inside (callers read its errno, e.g. EAGAIN for
            // a connection limit); only the reason gets the context.
            let mut e = BrokerError::from_wire(w);
            e.reason = format!("the broker refused this connection: {}", e.reason);
            Err(e.into())
        }
    }
}

/// The inherited connection, adopted once per process and kept for the process's
/// lifetime: every [`Client::from_env`] asks for its own connection through it.
struct Inherited {
    channel: Channel,
    /// One request at a time from this process; other processes may be asking too.
    asking: Mutex<()>,
}

fn inherited(raw: &OsStr) -> io::Result<&'static Inherited> {
    static INHERITED: OnceLock<Result<Inherited, (io::ErrorKind, String)>> = OnceLock::new();
    INHERITED
        .get_or_init(|| {
            adopt_env_fd(raw)
                .and_then(Channel::from_fd)
                .map(|channel| Inherited {
                    channel,
                    asking: Mutex::new(()),
                })
                .map_err(|e| (e.kind(), e.to_string()))
        })
        .as_ref()
        .map_err(|(kind, why)| io::Error::new(*kind, why.clone()))
}

/// Ask over the shared, inherited connection for a connection of our own.
///
/// The exchange is one message each way, and every reply to it is alike (a new
/// connection with the worker's identity), so processes sharing the socket may each take
/// any of them: no process greets it, and none depends on which reply it reads.
fn connection_through(shared: &Inherited, deadline: Option<Instant>) -> io::Result<Channel> {
    let _one_at_a_time = lock(&shared.asking);
    let mut buf = Vec::with_capacity(64);
    frame::encode(
        Kind::Request,
        &Request {
            id: 0,
            op: Op::Connect,
        },
        &mut buf,
    )?;
    shared.channel.send(&buf).map_err(|e| {
        if is_disconnect(&e) {
            inherited_gone()
        } else {
            context(e, "asking the broker for a connection")
        }
    })?;
    // Wait with poll, not a receive timeout: the socket's options are shared with
    // every other process holding it.
    wait_readable(&shared.channel, deadline)?;
    buf.resize(MAX_MESSAGE, 0);
    let (n, fds) = shared
        .channel
        .recv_with_fds(&mut buf, 1)
        .map_err(|e| match recv_error(e) {
            e if e.kind() == io::ErrorKind::ConnectionAborted => inherited_gone(),
            e => e,
        })?;
    let reply: Reply = frame::decode(Kind::Reply, &buf[..n])?;
    if reply.body.descriptor_count() != fds.len() {
        return Err(fdbroker_shared::ProtocolError::DescriptorCount {
            expected: reply.body.descriptor_count(),
            got: fds.len(),
        }
        .into());
    }
    connected(reply.body, fds, || {
        broken("the inherited connection answered a connect with another reply")
    })
}

fn wait_readable(channel: &Channel, deadline: Option<Instant>) -> io::Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    loop {
        let timeout = match remaining(deadline)? {
            None => PollTimeout::NONE,
            Some(left) => PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX),
        };
        let mut fds = [PollFd::new(channel.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) => {}
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cold]
fn inherited_gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        format!(
            "the inherited broker connection ({ENV_FD}) is closed: the broker that started \
             this worker has gone"
        ),
    )
}

fn parse_timeout(v: &OsStr) -> io::Result<Duration> {
    v.to_str()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{ENV_TIMEOUT}={v:?} is not a positive number of seconds"),
            )
        })
}

fn adopt_env_fd(raw: &OsStr) -> io::Result<OwnedFd> {
    let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
    let text = raw
        .to_str()
        .ok_or_else(|| invalid(format!("{ENV_FD} is not a number")))?;
    let n: RawFd = text
        .trim()
        .parse()
        .map_err(|_| invalid(format!("{ENV_FD}={text:?} is not a descriptor number")))?;
    if n < 0 {
        return Err(invalid(format!("{ENV_FD}={n} is negative")));
    }
    // Confirm the number names an open descriptor before anything owns it (the
    // caller's OnceLock asks once per process, as the adoption requires).
    crate::sys::adopt_inherited_fd(n).map_err(|e| match e {
        nix::errno::Errno::EBUSY => invalid(format!("{ENV_FD}={n} was adopted already")),
        e => invalid(format!("{ENV_FD}={n} is not an open descriptor: {e}")),
    })
}

/// The new connection a connect reply carries.
pub(crate) fn connected(
    body: ReplyBody,
    fds: Vec<OwnedFd>,
    wrong: impl FnOnce() -> io::Error,
) -> io::Result<Channel> {
    match body {
        ReplyBody::Connected => match fds.into_iter().next() {
            Some(fd) => Channel::from_fd(fd),
            None => Err(broken("reply lacks a descriptor it promised")),
        },
        ReplyBody::Refused(w) => Err(BrokerError::from_wire(w).into()),
        _ => Err(wrong()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn timeouts_parse_as_seconds() {
        assert_eq!(
            parse_timeout(OsStr::new("2.5")).unwrap(),
            Duration::from_millis(2500)
        );
        for bad in ["", "0", "-1", "soon", "NaN"] {
            assert!(parse_timeout(OsStr::new(bad)).is_err(), "{bad}");
        }
    }
}
