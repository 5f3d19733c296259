//! Socket activation: listening sockets passed by the service manager
//! (`sd_listen_fds(3)`).
//!
//! When `LISTEN_PID` names this process, descriptors `3 .. 3 + LISTEN_FDS` are sockets
//! the manager opened for it, named by `LISTEN_FDNAMES` (the `.socket` unit's name or
//! its `FileDescriptorName=`). Each must be an `AF_UNIX` `SOCK_SEQPACKET` socket in the
//! listening state; anything else is refused, so a unit that says `ListenStream=` fails
//! loudly at start instead of serving a protocol it cannot frame. The manager owns the
//! socket files: the broker never removes them.
//!
//! <https://www.freedesktop.org/software/systemd/man/sd_listen_fds.html>

use crate::listener::Listener;
use std::io;
use std::os::fd::RawFd;

/// Most listening sockets one broker serves.
pub const MAX_LISTENERS: usize = 8;

/// One listener the service manager passed.
#[derive(Debug)]
pub struct Activated {
    /// Its `LISTEN_FDNAMES` entry (`unknown` when the manager gave no names).
    pub name: String,
    /// The descriptor number it arrived as.
    pub fd: RawFd,
    pub listener: Listener,
}

#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("socket activation: {0}")]
    Environment(#[source] io::Error),
    #[error("socket activation: fd {fd} ({name:?}): {source}")]
    Socket {
        fd: RawFd,
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("socket activation: {0} sockets were passed; fdbroker serves at most {MAX_LISTENERS}")]
    TooMany(usize),
}

/// The listeners passed to this process, in descriptor order; empty when the broker was
/// not socket-activated (no `LISTEN_PID`, or one naming another process).
///
/// Call this once, early, while the process is single-threaded and before it opens
/// anything: from here on the descriptors belong to the returned listeners.
pub fn listeners() -> Result<Vec<Activated>, ActivationError> {
    // Checks LISTEN_PID against this process and marks each descriptor close-on-exec.
    let passed: Vec<(RawFd, String)> = sd_notify::listen_fds_with_names()
        .map_err(ActivationError::Environment)?
        .collect();
    if passed.len() > MAX_LISTENERS {
        return Err(ActivationError::TooMany(passed.len()));
    }
    let mut owned = Vec::with_capacity(passed.len());
    for (fd, name) in passed {
        // The service-manager protocol hands descriptors 3..3+LISTEN_FDS to the process
        // LISTEN_PID names, which is this one (checked above), and
        // `listen_fds_with_names` has just set FD_CLOEXEC on each. No other code in the
        // broker takes ownership of them, and this runs once.
        let sock = crate::sys::adopt_inherited(fd).map_err(|source| ActivationError::Socket {
            fd,
            name: name.clone(),
            source,
        })?;
        owned.push((fd, name, sock));
    }
    // Owning every descriptor before validating any: on error, all of them close.
    let mut activated = Vec::with_capacity(owned.len());
    for (fd, name, sock) in owned {
        match Listener::from_fd(sock) {
            Ok(listener) => activated.push(Activated { name, fd, listener }),
            Err(source) => return Err(ActivationError::Socket { fd, name, source }),
        }
    }
    Ok(activated)
}
