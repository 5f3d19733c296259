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

/// `SO_PEERGROUPS`: the peer's supplementary groups when it connected (see `unix(7)`),
/// so the broker can judge what the peer could do with a file by its group bits.
pub fn groups(sock: &impl AsFd) -> io::Result<Vec<u32>> {
    // NGROUPS_MAX is 65,536; most processes have a handful.
    let mut len = 16;
    loop {
        let mut buf = vec![0u32; len];
        match crate::sys::peer_groups(sock.as_fd(), &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Some(needed)) if needed > len && needed <= 65_536 => len = needed,
            Err(Some(_)) => return Err(io::Error::from_raw_os_error(libc::ERANGE)),
            Err(None) => return Err(io::Error::last_os_error()),
        }
    }
}
