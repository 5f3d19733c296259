//! The broker's refusals, as `std::io::Error`s a caller can match on.

use std::fmt;
use std::io;

/// A refusal or failure the broker reported for one path.
///
/// It travels inside an `io::Error` whose `kind()` comes from the broker's errno
/// (`PermissionDenied` for `EACCES`, `NotFound` for `ENOENT`, ...); recover it with
/// `err.get_ref().and_then(|e| e.downcast_ref::<BrokerError>())` for the raw errno.
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
