//! The broker's refusals, as `std::io::Error`s a caller can match on.
//!
//! ```no_run
//! let broker = fdbroker_worker::Client::from_env()?;
//! match broker.open("/var/spool/quarantine/a.bin") {
//!     Ok(_file) => {}
//!     Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => eprintln!("not granted: {e}"),
//!     Err(e) => return Err(e),
//! }
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fmt;
use std::io;

/// A refusal or failure the broker reported for one path.
///
/// It travels inside an `io::Error` whose `kind()` comes from the broker's errno
/// (`PermissionDenied` for `EACCES`, `NotFound` for `ENOENT`, ...); recover it with
/// `err.get_ref().and_then(|e| e.downcast_ref::<BrokerError>())` for the raw errno.
///
/// ```no_run
/// use fdbroker_worker::{BrokerError, Client};
/// let broker = Client::from_env()?;
/// if let Err(e) = broker.open("/var/spool/quarantine/gone.bin") {
///     let errno = e.get_ref().and_then(|e| e.downcast_ref::<BrokerError>()).map(|b| b.errno);
///     eprintln!("{e} (errno {errno:?})");
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerError {
    /// The errno the broker chose (the kernel's own inside the policy, `EACCES` outside).
    pub errno: i32,
    /// The broker's reason, for people.
    pub reason: String,
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for BrokerError {}

impl From<BrokerError> for io::Error {
    fn from(e: BrokerError) -> io::Error {
        io::Error::new(e.kind(), e)
    }
}

impl BrokerError {
    /// The `io::ErrorKind` for this errno. `ETOOMANYREFS` (the broker is out of its
    /// budget of descriptors passed but not yet received, its own per-uid share or the
    /// kernel's limit) has no kind of its own in std, so it becomes `QuotaExceeded`:
    /// a caller can tell "receive your replies, then retry" from a real failure.
    ///
    /// ```
    /// let e = fdbroker_worker::BrokerError { errno: libc::ENOENT, reason: "no such file".into() };
    /// assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    /// let e = fdbroker_worker::BrokerError { errno: libc::ETOOMANYREFS, reason: "busy".into() };
    /// assert_eq!(e.kind(), std::io::ErrorKind::QuotaExceeded);
    /// ```
    pub fn kind(&self) -> io::ErrorKind {
        if self.errno == libc::ETOOMANYREFS {
            return io::ErrorKind::QuotaExceeded;
        }
        io::Error::from_raw_os_error(self.errno).kind()
    }

    pub(crate) fn from_wire(w: fdbroker_shared::wire::WireError) -> BrokerError {
        BrokerError {
            errno: w.errno,
            reason: w.message,
        }
    }
}

#[cold]
pub(crate) fn broken(why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        format!("broker connection is unusable: {why}"),
    )
}

/// However the loss shows (EOF, `EPIPE` on send, `ECONNRESET` when our request was
/// unread), a vanished broker is one error kind for callers: `ConnectionAborted`.
#[cold]
pub(crate) fn broker_gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the broker closed the connection",
    )
}

#[cold]
pub(crate) fn timed_out_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "timed out waiting for the broker")
}

/// The errors a send or receive reports when the broker has closed its end.
pub(crate) fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::NotConnected
    )
}

/// `e`, its kind kept, with what we were doing in front of its message.
pub(crate) fn context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// A failed receive as callers see it: a closed or reset connection is
/// [`broker_gone`], a receive timeout is [`timed_out_error`].
pub(crate) fn recv_error(e: fdbroker_shared::RecvError) -> io::Error {
    match e {
        fdbroker_shared::RecvError::Protocol(fdbroker_shared::ProtocolError::Closed) => {
            broker_gone()
        }
        fdbroker_shared::RecvError::Io(e) if is_disconnect(&e) => broker_gone(),
        fdbroker_shared::RecvError::Io(e) if e.kind() == io::ErrorKind::WouldBlock => {
            timed_out_error()
        }
        e => e.into(),
    }
}
