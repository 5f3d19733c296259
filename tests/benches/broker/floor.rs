//! The floor: the least a broker can do, written directly on the system calls.
//!
//! A separate *process* (this benchmark binary re-executed with [`SERVER_ARG`]), like
//! `fdbroker serve`, holding one end of a `SOCK_SEQPACKET` socketpair. Its loop is what a
//! minimal hand-written broker does, blocking, single-threaded, with no policy, no
//! framing and no logging: `recv` one message (paths separated by NUL bytes), `open`
//! each path `O_RDONLY | O_CLOEXEC`, `sendmsg` one reply carrying every descriptor as
//! `SCM_RIGHTS`, `close` its copies. The client side sends the path(s), receives with
//! `MSG_CMSG_CLOEXEC` and closes what arrived, as a caller of `Client::open` does when
//! it drops the `File`.

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recv,
    recvmsg, send, sendmsg, socketpair,
};
use nix::sys::stat::Mode;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The argument that turns this binary into the floor server.
pub const SERVER_ARG: &str = "--floor-server";
/// Where the server finds its end of the socketpair.
const SERVER_FD: RawFd = 3;
/// Most descriptors one reply carries (the batch size is 32).
const MAX_FDS: usize = 64;

/// The client's handle on a running floor server process.
pub struct Floor {
    child: Option<Child>,
    sock: Option<OwnedFd>,
    control: Vec<u8>,
}

impl Floor {
    pub fn start() -> Floor {
        let (mine, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair(SOCK_SEQPACKET) for the floor broker");
        let theirs_raw = theirs.as_raw_fd();
        let exe = std::env::current_exe().expect("the benchmark's own path");
        let mut cmd = Command::new(exe);
        cmd.arg(SERVER_ARG)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // SAFETY: only async-signal-safe calls (dup2, fcntl, prctl) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if theirs_raw == SERVER_FD {
                    if libc::fcntl(SERVER_FD, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(theirs_raw, SERVER_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Never outlive the benchmark.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawning the floor broker process");
        drop(theirs);
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE((MAX_FDS * size_of::<RawFd>()) as u32) } as usize;
        Floor {
            child: Some(child),
            sock: Some(mine),
            control: vec![0; space],
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("floor server is running").id()
    }

    fn fd(&self) -> RawFd {
        self.sock
            .as_ref()
            .expect("floor socket is open")
            .as_raw_fd()
    }

    /// One round trip: send `request` (paths joined by NUL), receive and close the
    /// descriptors. Returns how many arrived.
    pub fn round_trip(&mut self, request: &[u8]) -> usize {
        let fd = self.fd();
        send(fd, request, MsgFlags::MSG_NOSIGNAL).expect("floor: send request");
        let mut count = [0u8; 4];
        let mut iov = [IoSliceMut::new(&mut count)];
        let msg = loop {
            match recvmsg::<()>(
                fd,
                &mut iov,
                Some(&mut self.control[..]),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Err(Errno::EINTR) => continue,
                r => break r.expect("floor: recvmsg reply"),
            }
        };
        assert!(
            !msg.flags
                .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC),
            "floor: reply truncated"
        );
        let mut got = 0;
        for cmsg in msg.cmsgs().expect("floor: control messages") {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                for raw in fds {
                    // SAFETY: the kernel installed this descriptor for us; we own it.
                    drop(unsafe { OwnedFd::from_raw_fd(raw) });
                    got += 1;
                }
            }
        }
        assert_eq!(msg.bytes, 4, "floor: reply size");
        assert_eq!(
            u32::from_ne_bytes(count) as usize,
            got,
            "floor: descriptor count"
        );
        got
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        // Closing our end makes the server's recv return 0 and it exits.
        drop(self.sock.take());
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The floor server's main loop (in the re-executed process).
pub fn serve_main() -> ! {
    // SAFETY: the parent placed our end of the socketpair at SERVER_FD for us alone.
    let sock = unsafe { OwnedFd::from_raw_fd(SERVER_FD) };
    let fd = sock.as_raw_fd();
    let mut buf = vec![0u8; 64 * 1024];
    let mut opened: Vec<OwnedFd> = Vec::with_capacity(MAX_FDS);
    let mut raw: Vec<RawFd> = Vec::with_capacity(MAX_FDS);
    loop {
        let n = match recv(fd, &mut buf, MsgFlags::empty()) {
            Ok(0) => std::process::exit(0),
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("floor server: recv: {e}");
                std::process::exit(1);
            }
        };
        for path in buf[..n].split(|&b| b == 0) {
            match open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()) {
                Ok(f) if opened.len() < MAX_FDS => opened.push(f),
                Ok(_) => {
                    eprintln!("floor server: more than {MAX_FDS} paths in one request");
                    std::process::exit(1);
                }
                Err(e) => {
                    eprintln!(
                        "floor server: open {:?}: {e}",
                        String::from_utf8_lossy(path)
                    );
                    std::process::exit(1);
                }
            }
        }
        raw.clear();
        raw.extend(opened.iter().map(AsRawFd::as_raw_fd));
        let count = (raw.len() as u32).to_ne_bytes();
        let sent = sendmsg::<()>(
            fd,
            &[IoSlice::new(&count)],
            &[ControlMessage::ScmRights(&raw)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        );
        opened.clear();
        if let Err(e) = sent {
            if e != Errno::EPIPE {
                eprintln!("floor server: sendmsg: {e}");
            }
            std::process::exit(0);
        }
    }
}
