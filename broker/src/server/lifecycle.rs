//! How a server ends: its connections handed to a successor (reload), or answered
//! up to a deadline and shut down (stop).

use super::conn::{Conn, ConnRef, Next, Scratch};
use super::state::Shared;
use fdbroker_shared::Channel;
use fdbroker_shared::wire::WireError;
use nix::errno::Errno;
use std::io;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// Pass every connection, with its state, to the successor. Nothing is read or answered
/// any more here: what a worker sent and this server did not read waits in its socket
/// for the successor, and a reply it could not take yet goes along. A connection that
/// cannot be passed is closed (its worker sees the connection end, as at a restart).
/// A connection made by `Connect` is shut down and passed only for its charge (see
/// `Conn::export`). Returns why the handover was incomplete, if it was.
pub(super) fn hand_over(
    to: &Channel,
    conns: &[ConnRef],
    draining: &[ConnRef],
) -> Result<(), String> {
    // `to` is a fresh socketpair end from the monitor: blocking, so each send waits
    // for room rather than failing.
    let mut passed = 0usize;
    let mut lost = 0usize;
    let all = conns
        .iter()
        .map(|c| (c, false))
        .chain(draining.iter().map(|c| (c, true)));
    for (conn, is_draining) in all {
        match conn.export() {
            Ok(Some(e)) => match crate::server::handover::send(to, e, is_draining) {
                Ok(()) => passed += 1,
                Err(e) => {
                    lost += 1;
                    tracing::warn!(error = %e, "cannot hand a connection over; closing it");
                }
            },
            Ok(None) => {}
            Err(e) => {
                lost += 1;
                tracing::warn!(error = %e, "cannot hand a connection over; closing it");
            }
        }
    }
    // The counts since the service started, so `status` and `STATUS=` survive the reload.
    if let Err(e) = crate::server::handover::tally(to) {
        tracing::warn!(error = %e, "cannot hand the decision counts over; they restart from zero");
    }
    if let Err(e) = crate::server::handover::done(to) {
        tracing::warn!(error = %e, "cannot finish the handover");
        return Err(format!(
            "the handover socket failed ({e}) after {passed} connections"
        ));
    }
    if lost > 0 {
        return Err(format!(
            "{lost} connections could not be handed over and were closed"
        ));
    }
    tracing::info!(
        connections = passed,
        "handed every connection over to the new server"
    );
    Ok(())
}

/// Answer every request the connections already sent, until `deadline` (graceful
/// shutdown), then shut each down. All are served together: a worker that does not
/// read its replies holds up only itself, and only until the deadline.
pub(super) fn finish(conns: &[ConnRef], shared: &Shared, scratch: &mut Scratch, deadline: Instant) {
    let mut waiting: Vec<&ConnRef> = conns.iter().collect();
    while !waiting.is_empty() {
        let mut more = false;
        waiting.retain(|c| match settle(c, shared, scratch, deadline) {
            Drained::Done => {
                let _ = c.channel().shutdown();
                false
            }
            Drained::Full => true,
            Drained::More => {
                more = true;
                true
            }
        });
        let left = deadline.saturating_duration_since(Instant::now());
        if waiting.is_empty() || left.is_zero() {
            break;
        }
        if !more && !any_writable(&waiting, left) {
            break;
        }
    }
    for c in waiting {
        let _ = c.channel().shutdown();
    }
}

pub(super) enum Drained {
    /// Everything sent was answered, or the connection is closing.
    Done,
    /// A reply waits for the worker to read.
    Full,
    /// More requests wait; others get a turn first.
    More,
}

/// Budgets of messages one connection may have answered per turn while stopping.
pub(super) const TURNS: usize = 8;

pub(super) fn settle(
    conn: &Conn,
    shared: &Shared,
    scratch: &mut Scratch,
    deadline: Instant,
) -> Drained {
    for _ in 0..TURNS {
        if Instant::now() >= deadline {
            return Drained::Done;
        }
        let mut next = conn.service(shared, scratch);
        while let Next::Connect(born) = next {
            // Stopping: no new connection is taken, as `Inner::take_connection` says.
            drop(born.conn);
            let stopping = WireError::new(libc::ESHUTDOWN, "the broker is stopping");
            next = conn.answer_connect(born.reply, Err(stopping), scratch);
        }
        match next {
            // Stopping: a status asked for now goes unanswered; the requester sees the
            // connection close.
            Next::Connect(_) | Next::Status(_) => return Drained::Done,
            Next::Close => return Drained::Done,
            // `service` also yields after a budget of messages: go on while any wait.
            Next::Read if !message_waiting(conn.channel()) => return Drained::Done,
            Next::Read => {}
            Next::Write => return Drained::Full,
            Next::Stall => return Drained::Done,
        }
    }
    Drained::More
}

/// Has the peer queued a message (not just end-of-file)? `recvmsg(2)` with `MSG_PEEK`,
/// so nothing is consumed.
pub(super) fn message_waiting(ch: &Channel) -> bool {
    use nix::sys::socket::{MsgFlags, recvmsg};
    use std::os::fd::AsRawFd;
    let mut byte = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC;
    matches!(recvmsg::<()>(ch.as_fd().as_raw_fd(), &mut iov, None, flags), Ok(m) if m.bytes > 0)
}

/// Wait up to `limit` for any of `conns` to take more data (or to fail, which the next
/// `service` reports).
pub(super) fn any_writable(conns: &[&ConnRef], limit: Duration) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let ms = u16::try_from(limit.as_millis()).unwrap_or(u16::MAX).max(1);
    let mut fds: Vec<PollFd<'_>> = conns
        .iter()
        .map(|c| PollFd::new(c.channel().as_fd(), PollFlags::POLLOUT))
        .collect();
    loop {
        match poll(&mut fds, PollTimeout::from(ms)) {
            Err(Errno::EINTR) => continue,
            Ok(n) => return n > 0,
            Err(_) => return false,
        }
    }
}
