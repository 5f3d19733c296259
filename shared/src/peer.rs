//! Who is on the other end of a Unix socket, as the kernel recorded it at connect time.

use nix::sys::socket::{getsockopt, sockopt};
use std::io;
use std::os::fd::AsFd;

/// `SO_PEERCRED`: the pid, uid and gid of the peer *when it connected* (or created the
/// socketpair). A peer that changes uid later keeps these credentials, which is why
/// the broker decides the client once, at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCredentials {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// Read `SO_PEERCRED` (see `unix(7)`).
pub fn credentials(sock: &impl AsFd) -> io::Result<PeerCredentials> {
    let cred = getsockopt(sock, sockopt::PeerCredentials)?;
    Ok(PeerCredentials {
        pid: cred.pid(),
        uid: cred.uid(),
        gid: cred.gid(),
    })
}
