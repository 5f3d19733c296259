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
        match peer_groups(sock, &mut buf) {
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

/// One `getsockopt(SO_PEERGROUPS)` into `buf`: how many groups it holds, or on
/// `ERANGE` how many it would need (`Err(None)`: another error, in `errno`).
fn peer_groups(sock: &impl AsFd, buf: &mut [u32]) -> Result<usize, Option<usize>> {
    use std::os::fd::AsRawFd;
    let mut bytes = libc::socklen_t::try_from(std::mem::size_of_val(buf)).unwrap_or(0);
    // SAFETY: the kernel writes at most `bytes` bytes through the pointer, which points
    // at `buf`, live and writable for the call, and updates `bytes` through its pointer.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERGROUPS,
            buf.as_mut_ptr().cast(),
            &mut bytes,
        )
    };
    let count = bytes as usize / std::mem::size_of::<u32>();
    if rc == 0 {
        Ok(count.min(buf.len()))
    } else if io::Error::last_os_error().raw_os_error() == Some(libc::ERANGE) {
        Err(Some(count))
    } else {
        Err(None)
    }
}
