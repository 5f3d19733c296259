//! A connected `SOCK_SEQPACKET` Unix socket: one call, one whole message.
//!
//! Both sides talk through [`Channel`], so the rules for descriptors live in one place:
//! the broker receives with *no* control buffer (whatever descriptors a worker sends
//! are discarded by the kernel and reported as a violation), and the worker receives
//! with a control buffer sized for the protocol's cap and `MSG_CMSG_CLOEXEC`, taking
//! ownership of every descriptor that arrived before it looks at anything else, so
//! that an error path drops — closes — them all.

use crate::error::{ProtocolError, RecvError};
use crate::sys;
use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, sockopt};
use sendfd::SendWithFd;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// A connected `SOCK_SEQPACKET` Unix socket.
///
/// The descriptor is held as a std `UnixStream` only because that is the type
/// `sendfd` sends through; no stream semantics are used.
#[derive(Debug)]
pub struct Channel {
    sock: UnixStream,
    /// How recent spins on this channel went ([`Channel::spin_until_readable`]).
    spins: Spins,
}

/// Whether spinning has been paying on one channel: after a spin that saw nothing
/// within its limit, the next calls do not spin, twice as many after each miss in a
/// row (8 up to 1024), none after a spin that saw its message. Relaxed atomics: the
/// threads sharing a channel race on a hint, never on a decision.
#[derive(Debug, Default)]
struct Spins {
    /// Calls left that do not spin.
    skip: std::sync::atomic::AtomicU32,
    /// How many the next miss skips, divided by 2.
    backoff: std::sync::atomic::AtomicU32,
}

impl Spins {
    const FIRST: u32 = 8;
    const MOST: u32 = 1024;

    /// True when this call should not spin (and counts it).
    fn skipping(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let left = self.skip.load(Relaxed);
        if left == 0 {
            return false;
        }
        self.skip.store(left - 1, Relaxed);
        true
    }

    fn hit(&self) {
        self.backoff.store(0, std::sync::atomic::Ordering::Relaxed);
    }

    fn missed(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let next = (self.backoff.load(Relaxed) * 2).clamp(Self::FIRST, Self::MOST);
        self.backoff.store(next, Relaxed);
        self.skip.store(next, Relaxed);
    }
}

impl Channel {
    /// Connect to a listening broker socket (blocking, close-on-exec).
    pub fn connect(path: &Path) -> io::Result<Channel> {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        let addr = UnixAddr::new(path)?;
        socket::connect(fd.as_raw_fd(), &addr)?;
        Ok(Channel::wrap(fd))
    }

    /// [`Channel::connect`], giving up after `timeout` (`ErrorKind::TimedOut`) when the
    /// listener's backlog is full, as it is when the broker has stopped accepting.
    ///
    /// On a Unix socket a blocking `connect(2)` waits for room in the backlog for as long
    /// as `SO_SNDTIMEO` allows, so the bound is that option; it stays set, bounding every
    /// later send too, until [`Channel::set_write_timeout`] changes it.
    pub fn connect_timeout(path: &Path, timeout: std::time::Duration) -> io::Result<Channel> {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        let channel = Channel::wrap(fd);
        channel.set_write_timeout(Some(timeout))?;
        let addr = UnixAddr::new(path)?;
        match socket::connect(channel.as_raw_fd(), &addr) {
            Ok(()) => Ok(channel),
            Err(Errno::EAGAIN | Errno::EINPROGRESS) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the listener did not take the connection within {timeout:?}"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// A connected pair, both ends close-on-exec (spawn mode, tests).
    pub fn pair() -> io::Result<(Channel, Channel)> {
        let (a, b) = socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        Ok((Channel::wrap(a), Channel::wrap(b)))
    }

    /// Adopt a descriptor that should be a connected `AF_UNIX` `SOCK_SEQPACKET` socket,
    /// checking that it is one: an inherited number could name anything.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Channel> {
        let ty = socket::getsockopt(&fd, sockopt::SockType).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("descriptor {} is not a socket: {e}", fd.as_raw_fd()),
            )
        })?;
        if ty != SockType::SeqPacket {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "descriptor {} is a {ty:?} socket, not SOCK_SEQPACKET",
                    fd.as_raw_fd()
                ),
            ));
        }
        let addr: UnixAddr = socket::getsockname(fd.as_raw_fd()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("descriptor {} is not an AF_UNIX socket", fd.as_raw_fd()),
            )
        })?;
        let _ = addr;
        Ok(Channel::wrap(fd))
    }

    /// Wrap an accepted or created socket without checks (the caller made it).
    pub fn wrap(fd: OwnedFd) -> Channel {
        Channel {
            spins: Spins::default(),
            sock: UnixStream::from(fd),
        }
    }

    /// Put the socket in non-blocking mode (the broker's event loop) or back.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        self.sock.set_nonblocking(on)
    }

    /// Send one message with no descriptors. `MSG_NOSIGNAL`: a vanished peer is an
    /// `EPIPE` error, never a `SIGPIPE` that would kill a worker.
    pub fn send(&self, bytes: &[u8]) -> io::Result<()> {
        let n = socket::send(self.sock.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL)?;
        sent_whole(n, bytes.len())
    }

    /// Send one message with descriptors attached as `SCM_RIGHTS`.
    ///
    /// Up to [`MAX_FDS_PER_REPLY`](crate::frame::MAX_FDS_PER_REPLY) descriptors go
    /// with `MSG_NOSIGNAL` from a control buffer on the stack: the broker sends one
    /// of these per reply, so it neither allocates nor frees for it. More (never sent
    /// by this protocol) go through `sendfd`, which sends without `MSG_NOSIGNAL`, so a
    /// process using this must still ignore `SIGPIPE` (the broker does, from its first
    /// instruction).
    pub fn send_with_fds<F: AsFd>(&self, bytes: &[u8], fds: &[F]) -> io::Result<()> {
        if fds.is_empty() {
            return self.send(bytes);
        }
        if fds.len() <= crate::frame::MAX_FDS_PER_REPLY {
            let mut raw = [0 as RawFd; crate::frame::MAX_FDS_PER_REPLY];
            for (slot, f) in raw.iter_mut().zip(fds) {
                *slot = f.as_fd().as_raw_fd();
            }
            let n = retry_eintr(|| sys::send_rights(self.as_fd(), bytes, &raw[..fds.len()]))?;
            return sent_whole(n, bytes.len());
        }
        let raw: smallvec_raw::RawFds = fds.iter().map(|f| f.as_fd().as_raw_fd()).collect();
        let n = self.sock.send_with_fd(bytes, &raw)?;
        sent_whole(n, bytes.len())
    }

    /// Receive one message, accepting no descriptors.
    ///
    /// There is no control buffer, so descriptors the peer attached never enter this
    /// process; their presence (`MSG_CTRUNC`) is still reported as a violation.
    pub fn recv(&self, buf: &mut [u8]) -> Result<usize, RecvError> {
        let (bytes, flags) = loop {
            let mut iov = [IoSliceMut::new(&mut *buf)];
            match socket::recvmsg::<()>(self.sock.as_raw_fd(), &mut iov, None, MsgFlags::empty()) {
                Ok(msg) => break (msg.bytes, msg.flags),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(io::Error::from(e).into()),
            }
        };
        if flags.contains(MsgFlags::MSG_CTRUNC) {
            return Err(ProtocolError::UnexpectedDescriptors.into());
        }
        if flags.contains(MsgFlags::MSG_TRUNC) {
            return Err(ProtocolError::Truncated.into());
        }
        if bytes == 0 {
            return Err(ProtocolError::Closed.into());
        }
        Ok(bytes)
    }

    /// Receive one message and at most `max_fds` descriptors, atomically
    /// close-on-exec (`MSG_CMSG_CLOEXEC`).
    ///
    /// Truncated data or control data is an error, and so is more descriptors than
    /// `max_fds`; in every error case the descriptors that did arrive are closed.
    pub fn recv_with_fds(
        &self,
        buf: &mut [u8],
        max_fds: usize,
    ) -> Result<(usize, Vec<OwnedFd>), RecvError> {
        self.recv_with_fds_reusing(buf, &mut Vec::new(), max_fds)
    }

    /// [`Channel::recv_with_fds`] with a control buffer the caller keeps between calls,
    /// so a client receiving reply after reply does not allocate (and free) one each
    /// time. It is resized and zeroed here before every receive: the walk that adopts
    /// descriptors must never see a header left over from an earlier message.
    pub fn recv_with_fds_reusing(
        &self,
        buf: &mut [u8],
        control: &mut Vec<u8>,
        max_fds: usize,
    ) -> Result<(usize, Vec<OwnedFd>), RecvError> {
        // A Vec<u8> of this size is allocated with at least the alignment cmsghdr needs
        // (the same allocation nix's own `cmsg_space!` makes).
        control.clear();
        control.resize(sys::cmsg_space_for_fds(max_fds), 0);
        // Every descriptor that arrived is owned by `fds` when this returns: from here
        // on every early return closes them.
        let sys::Received {
            bytes,
            flags,
            fds,
            foreign_control,
        } = sys::recv_rights(self.as_fd(), buf, control)?;
        if flags.contains(MsgFlags::MSG_CTRUNC) || fds.len() > max_fds || foreign_control {
            return Err(ProtocolError::ControlTruncated.into());
        }
        if flags.contains(MsgFlags::MSG_TRUNC) {
            return Err(ProtocolError::Truncated.into());
        }
        if bytes == 0 {
            return Err(ProtocolError::Closed.into());
        }
        Ok((bytes, fds))
    }

    /// Look for a message for up to `limit` without going to sleep. True when one is
    /// waiting.
    ///
    /// For the one place where a wake-up costs more than the work: a synchronous relay
    /// (transparent mode's supervisor and the broker serving it), where the program waits
    /// for every answer and each side is idle only for the few microseconds the other
    /// takes. Waking a sleeping thread on an idle virtual CPU costs about 20 µs on a small
    /// VM, more than the broker's work for an open.
    ///
    /// It never yields the CPU: on a busy machine `sched_yield` hands it to a CPU-bound
    /// neighbour for that one's whole slice (milliseconds, where the answer takes
    /// microseconds: measured, a transparent scan beside two busy loops ran 3 to 10
    /// times slower spinning with yields than sleeping). Where spinning does not pay (the
    /// peer waits for a CPU, or shares this one), the answers come late, the spins miss,
    /// and the channel stops spinning for a while (see `Spins`), so a busy machine costs
    /// at most one limit's worth of CPU every few hundred calls.
    pub fn spin_until_readable(&self, limit: std::time::Duration) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let readable = || {
            let mut fds = [PollFd::new(self.as_fd(), PollFlags::POLLIN)];
            // Whatever an error is, the blocking call that follows reports it.
            !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(0) | Err(Errno::EINTR))
        };
        if self.spins.skipping() {
            return readable();
        }
        let start = std::time::Instant::now();
        loop {
            if readable() {
                self.spins.hit();
                return true;
            }
            if start.elapsed() >= limit {
                self.spins.missed();
                return false;
            }
            std::hint::spin_loop();
        }
    }

    /// Whether [`Channel::spin_until_readable`] can pay off in this process: only when
    /// it may run on more than one CPU (affinity, cgroup quota), so that the peer can
    /// work on another CPU meanwhile. On one CPU a spinner only takes turns from the
    /// thread it waits for (measured: transparent mode pinned to one CPU ran 2.7x the
    /// baseline spinning, 1.9x sleeping). Asked once per process.
    pub fn spinning_pays() -> bool {
        static SEVERAL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *SEVERAL.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
    }

    /// Bound how long a blocking receive may wait (`SO_RCVTIMEO`); `None` waits forever.
    pub fn set_read_timeout(&self, t: Option<std::time::Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(t)
    }

    /// Bound how long a blocking send may wait for room (`SO_SNDTIMEO`); `None` waits
    /// forever. A send that runs out of time fails with `WouldBlock`.
    pub fn set_write_timeout(&self, t: Option<std::time::Duration>) -> io::Result<()> {
        self.sock.set_write_timeout(t)
    }

    /// Make this channel's descriptor refer to `other`'s socket instead, atomically
    /// (`dup3(2)`), keeping its number and close-on-exec, then close `other`'s own
    /// descriptor. For a client that reconnects: whoever borrowed the descriptor (through
    /// [`AsFd`]) keeps a valid one, now the new connection.
    pub fn replace_with(&self, other: Channel) -> io::Result<()> {
        sys::dup3_cloexec(other.as_fd(), self.as_fd())
    }

    /// Bytes this end has sent that the peer has not received yet (`SIOCOUTQ`, see
    /// `unix(7)`): 0 means every message sent, and every descriptor in it, has been
    /// taken by the peer.
    pub fn unreceived_bytes(&self) -> io::Result<usize> {
        sys::unreceived_bytes(self.as_fd())
    }

    /// Shut the socket down for both directions, waking any thread blocked on it.
    pub fn shutdown(&self) -> io::Result<()> {
        match self.sock.shutdown(std::net::Shutdown::Both) {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            r => r,
        }
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl From<Channel> for OwnedFd {
    fn from(c: Channel) -> OwnedFd {
        OwnedFd::from(c.sock)
    }
}

/// Accept one connection from a listening socket, non-blocking and close-on-exec.
pub fn accept(listener: &impl AsFd) -> io::Result<Channel> {
    let fd = retry_eintr(|| {
        sys::accept4(
            listener.as_fd(),
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )
    })?;
    Ok(Channel::wrap(fd))
}

fn sent_whole(n: usize, len: usize) -> io::Result<()> {
    if n == len {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {n} of {len} bytes of a message"),
        ))
    }
}

fn retry_eintr<T>(mut f: impl FnMut() -> nix::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(Errno::EINTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

/// Raw descriptor numbers for one send without heap allocation for the common case.
mod smallvec_raw {
    use std::os::fd::RawFd;

    pub struct RawFds {
        inline: [RawFd; 32],
        len: usize,
        spill: Vec<RawFd>,
    }

    impl FromIterator<RawFd> for RawFds {
        fn from_iter<I: IntoIterator<Item = RawFd>>(iter: I) -> Self {
            let mut out = RawFds {
                inline: [0; 32],
                len: 0,
                spill: Vec::new(),
            };
            for fd in iter {
                if out.len < out.inline.len() && out.spill.is_empty() {
                    out.inline[out.len] = fd;
                    out.len += 1;
                } else {
                    if out.spill.is_empty() {
                        out.spill.extend_from_slice(&out.inline[..out.len]);
                    }
                    out.spill.push(fd);
                }
            }
            out
        }
    }

    impl std::ops::Deref for RawFds {
        type Target = [RawFd];
        fn deref(&self) -> &[RawFd] {
            if self.spill.is_empty() {
                &self.inline[..self.len]
            } else {
                &self.spill
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::fd::AsFd;

    fn fd_flags(fd: &impl AsFd) -> nix::fcntl::FdFlag {
        nix::fcntl::FdFlag::from_bits_truncate(
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).unwrap(),
        )
    }

    #[test]
    fn spinning_sees_a_message_without_taking_it_and_gives_up_when_none_comes() {
        use std::time::{Duration, Instant};
        let (a, b) = Channel::pair().unwrap();
        // A waiting message is seen at once and left for the receive that follows.
        a.send(b"ping").unwrap();
        assert!(b.spin_until_readable(Duration::ZERO));
        assert!(b.spin_until_readable(Duration::from_secs(30)));
        let mut buf = [0u8; 8];
        assert_eq!(b.recv(&mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"ping");
        // One sent while it spins is seen (the spinner never sleeps; on one CPU the
        // sender runs when the tick preempts it), and still there to receive.
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1));
            a.send(b"pong").unwrap();
            a
        });
        assert!(b.spin_until_readable(Duration::from_secs(30)));
        let a = sender.join().unwrap();
        assert_eq!(b.recv(&mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"pong");
        // A peer that hangs up ends the spin too (the receive then reports it).
        drop(a);
        assert!(b.spin_until_readable(Duration::from_secs(30)));
        assert!(matches!(
            b.recv(&mut buf),
            Err(RecvError::Protocol(ProtocolError::Closed))
        ));

        // Nothing comes: it gives up by its limit.
        let (a, b) = Channel::pair().unwrap();
        let start = Instant::now();
        assert!(!b.spin_until_readable(Duration::from_millis(20)));
        assert!(start.elapsed() >= Duration::from_millis(20));
        // After that miss the next calls only look once, whatever their limit (a spin
        // of 60 s would fail the assertion by taking it), and still see a message.
        for _ in 0..Spins::FIRST - 1 {
            let start = Instant::now();
            assert!(!b.spin_until_readable(Duration::from_secs(60)));
            assert!(start.elapsed() < Duration::from_secs(30));
        }
        a.send(b"late").unwrap();
        assert!(b.spin_until_readable(Duration::from_secs(60)));
        // The skipped calls used up, it spins again, and a hit resets the back-off.
        assert!(b.spin_until_readable(Duration::from_secs(60)));
        assert_eq!(
            b.spins.backoff.load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        // Misses in a row skip twice as many calls each time.
        assert_eq!(b.recv(&mut buf).unwrap(), 4);
        assert!(!b.spin_until_readable(Duration::ZERO));
        for _ in 0..Spins::FIRST {
            assert!(!b.spin_until_readable(Duration::ZERO));
        }
        assert!(!b.spin_until_readable(Duration::ZERO));
        assert_eq!(
            b.spins.skip.load(std::sync::atomic::Ordering::Relaxed),
            2 * Spins::FIRST
        );
    }

    #[test]
    fn descriptors_arrive_cloexec() {
        let (a, b) = Channel::pair().unwrap();
        let f = std::fs::File::open("/dev/null").unwrap();
        a.send_with_fds(b"x", &[f.as_fd()]).unwrap();
        let mut buf = [0u8; 16];
        let (n, fds) = b.recv_with_fds(&mut buf, 4).unwrap();
        assert_eq!((n, fds.len()), (1, 1));
        assert!(fd_flags(&fds[0]).contains(nix::fcntl::FdFlag::FD_CLOEXEC));
    }

    /// A full reply's worth (from the stack buffer) and one more (the fallback) arrive
    /// whole and in order.
    #[test]
    fn every_descriptor_arrives_in_order() {
        use nix::sys::stat::{SFlag, fstat};
        let (a, b) = Channel::pair().unwrap();
        let null = std::fs::File::open("/dev/null").unwrap();
        let (r, _w) = nix::unistd::pipe().unwrap();
        for n in [
            1,
            2,
            crate::frame::MAX_FDS_PER_REPLY,
            crate::frame::MAX_FDS_PER_REPLY + 1,
        ] {
            let fds: Vec<BorrowedFd<'_>> = (0..n)
                .map(|i| if i % 3 == 0 { r.as_fd() } else { null.as_fd() })
                .collect();
            a.send_with_fds(b"hello", &fds).unwrap();
            let mut buf = [0u8; 16];
            let (len, got) = b.recv_with_fds(&mut buf, n).unwrap();
            assert_eq!((&buf[..len], got.len()), (&b"hello"[..], n));
            for (i, fd) in got.iter().enumerate() {
                let kind = SFlag::from_bits_truncate(fstat(fd).unwrap().st_mode) & SFlag::S_IFMT;
                let want = if i % 3 == 0 {
                    SFlag::S_IFIFO
                } else {
                    SFlag::S_IFCHR
                };
                assert_eq!(kind, want, "descriptor {i} of {n}");
            }
        }
    }

    #[test]
    fn descriptors_to_a_peer_gone_are_an_error() {
        let (a, b) = Channel::pair().unwrap();
        drop(b);
        let f = std::fs::File::open("/dev/null").unwrap();
        let err = a.send_with_fds(b"x", &[f.as_fd()]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    /// Every count of descriptors, on the stack path (up to the protocol's cap) and
    /// past it, arrives whole or fails whole, and leaves no copy of any descriptor
    /// behind in the sender or the receiver: with the original closed, the pipe reads
    /// end-of-file only if no write end survives anywhere in this process.
    #[test]
    fn no_count_of_descriptors_leaks_one() {
        use crate::frame::MAX_FDS_PER_REPLY as CAP;
        // SCM_MAX_FD: the kernel refuses more in one message.
        const KERNEL_MAX: usize = 253;
        for n in [
            1,
            2,
            CAP - 1,
            CAP,
            CAP + 1,
            KERNEL_MAX,
            KERNEL_MAX + 1,
            4096,
        ] {
            let (a, b) = Channel::pair().unwrap();
            let (r, w) = nix::unistd::pipe().unwrap();
            let fds = vec![w.as_fd(); n];
            let sent = a.send_with_fds(b"x", &fds);
            drop(fds);
            drop(w);
            let mut buf = [0u8; 16];
            if n <= KERNEL_MAX {
                sent.unwrap();
                let got = b.recv_with_fds(&mut buf, CAP);
                if n <= CAP {
                    assert_eq!(got.unwrap().1.len(), n);
                } else {
                    assert!(
                        matches!(
                            got,
                            Err(RecvError::Protocol(ProtocolError::ControlTruncated))
                        ),
                        "{n}: {got:?}"
                    );
                }
            } else {
                let e = sent.unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{n}: {e}");
            }
            let mut one = [0u8; 1];
            assert_eq!(
                nix::unistd::read(&r, &mut one),
                Ok(0),
                "{n}: a write end leaked"
            );
        }
    }

    #[test]
    fn surplus_descriptors_are_an_error() {
        let (a, b) = Channel::pair().unwrap();
        let f = std::fs::File::open("/dev/null").unwrap();
        a.send_with_fds(b"x", &[f.as_fd(), f.as_fd(), f.as_fd()])
            .unwrap();
        let mut buf = [0u8; 16];
        let err = b.recv_with_fds(&mut buf, 1).unwrap_err();
        assert!(
            matches!(err, RecvError::Protocol(ProtocolError::ControlTruncated)),
            "{err:?}"
        );
    }

    /// The descriptors that did arrive with a truncated control message must be
    /// closed: with the sender's copies gone too, the pipe reads EOF only if no
    /// write end survives anywhere in this process.
    #[test]
    fn truncation_closes_what_arrived() {
        let (a, b) = Channel::pair().unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        a.send_with_fds(b"x", &[w.as_fd(), w.as_fd(), w.as_fd(), w.as_fd()])
            .unwrap();
        drop(w);
        let mut buf = [0u8; 16];
        let err = b.recv_with_fds(&mut buf, 2).unwrap_err();
        assert!(
            matches!(err, RecvError::Protocol(ProtocolError::ControlTruncated)),
            "{err:?}"
        );
        nix::fcntl::fcntl(
            &r,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
        let mut one = [0u8; 1];
        assert_eq!(nix::unistd::read(&r, &mut one), Ok(0), "a write end leaked");
    }

    #[test]
    fn receiver_without_control_buffer_refuses_descriptors() {
        let (a, b) = Channel::pair().unwrap();
        let f = std::fs::File::open("/dev/null").unwrap();
        a.send_with_fds(b"x", &[f.as_fd()]).unwrap();
        let mut buf = [0u8; 16];
        let err = b.recv(&mut buf).unwrap_err();
        assert!(
            matches!(
                err,
                RecvError::Protocol(ProtocolError::UnexpectedDescriptors)
            ),
            "{err:?}"
        );
    }

    #[test]
    fn oversized_message_is_truncation() {
        let (a, b) = Channel::pair().unwrap();
        a.send(&[7u8; 100]).unwrap();
        let mut buf = [0u8; 10];
        let err = b.recv(&mut buf).unwrap_err();
        assert!(
            matches!(err, RecvError::Protocol(ProtocolError::Truncated)),
            "{err:?}"
        );
    }

    #[test]
    fn peer_gone_is_an_error_not_sigpipe() {
        let (a, b) = Channel::pair().unwrap();
        drop(b);
        let err = a.send(b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn from_fd_checks_the_socket_type() {
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(Channel::from_fd(OwnedFd::from(f)).is_err());
        let (s, _peer) = UnixStream::pair().unwrap();
        let err = Channel::from_fd(OwnedFd::from(s)).unwrap_err();
        assert!(err.to_string().contains("SOCK_SEQPACKET"), "{err}");
        let (a, _b) = Channel::pair().unwrap();
        Channel::from_fd(OwnedFd::from(a)).unwrap();
    }
}
