//! Pins descriptors "in flight" for its user (for tests/tests/spawn.rs): sends copies of
//! one pipe descriptor to itself over Unix socketpairs it never reads from. The kernel
//! charges descriptors in flight to the sender's real uid, and refuses any process of
//! that uid more (`ETOOMANYREFS`) once the count exceeds the sending process's
//! `RLIMIT_NOFILE`.
//!
//! ```text
//! fd-pinner COUNT
//! ```
//! raises its soft `RLIMIT_NOFILE` to the hard limit, pins at least COUNT descriptors,
//! prints `PINNED <n>` (or `REFUSED <n> <ERRNO>` if the kernel stopped it first), and
//! holds them until its stdin closes.
#![allow(clippy::unwrap_used)]

use nix::errno::Errno;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, sendmsg, socketpair,
};
use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};

/// The most descriptors one `SCM_RIGHTS` message may carry (`SCM_MAX_FD`).
const PER_MESSAGE: usize = 253;

fn main() {
    let want: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    let (bait, _write_end) = nix::unistd::pipe().unwrap();
    let copies = [bait.as_raw_fd(); PER_MESSAGE];
    // Every pair is kept: closing one would release what it holds.
    let mut pairs: Vec<(OwnedFd, OwnedFd)> = Vec::new();
    let mut pinned = 0;
    let outcome = loop {
        if pinned >= want {
            break format!("PINNED {pinned}");
        }
        let Some((sender, _)) = pairs.last() else {
            pairs.push(pair());
            continue;
        };
        let cmsg = [ControlMessage::ScmRights(&copies)];
        match sendmsg::<()>(
            sender.as_raw_fd(),
            &[IoSlice::new(b"x")],
            &cmsg,
            MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            Ok(_) => pinned += PER_MESSAGE,
            // This pair's queue is full: another one.
            Err(Errno::EAGAIN) => pairs.push(pair()),
            Err(e) => break format!("REFUSED {pinned} {e:?}"),
        }
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{outcome}").unwrap();
    out.flush().unwrap();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(pairs);
}

fn pair() -> (OwnedFd, OwnedFd) {
    socketpair(
        AddressFamily::Unix,
        SockType::Datagram,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap()
}
