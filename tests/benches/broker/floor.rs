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
//!
//! The **secure floor** ([`Floor::start_secure`]) is the same loop doing exactly the
//! work the security model makes mandatory, and nothing else of the broker's: each path
//! is opened with `openat2` beneath the pre-opened root it falls under, with the
//! broker's `RESOLVE_*` and open flags; `fstat` checks it is a regular file with one
//! link; one `write(2)` per request appends an audit line per path, of the broker's
//! length, to a file; and the process confines itself with the broker's own code
//! (`fdbroker::confine`: the same Landlock domain over the same roots and the same
//! seccomp filter). The difference between it and the broker is what the broker's own
//! code costs; the difference between it and the bare floor is the confinement tax.
//! [`Floor::start_confined`] runs it under Landlock alone, seccomp alone or neither, so
//! the benchmark can split that tax into the mandatory work and each confinement.

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
/// After [`SERVER_ARG`]: `--secure POLICY AUDIT_FILE [CONFINEMENT]` makes it the secure
/// floor; CONFINEMENT is one of [`Confinement::arg`] (default: both).
pub const SECURE_ARG: &str = "--secure";

/// Which of the broker's kernel-enforced confinements the secure floor runs under:
/// the secure floor proper has both; the others split the confinement tax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confinement {
    Both,
    LandlockOnly,
    SeccompOnly,
    Neither,
}

impl Confinement {
    pub const ALL: [Confinement; 4] = [
        Confinement::Both,
        Confinement::LandlockOnly,
        Confinement::SeccompOnly,
        Confinement::Neither,
    ];

    pub fn arg(self) -> &'static str {
        match self {
            Confinement::Both => "both",
            Confinement::LandlockOnly => "landlock",
            Confinement::SeccompOnly => "seccomp",
            Confinement::Neither => "none",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Confinement::Both => "Landlock + seccomp",
            Confinement::LandlockOnly => "Landlock only",
            Confinement::SeccompOnly => "seccomp only",
            Confinement::Neither => "no confinement",
        }
    }

    fn parts(self) -> fdbroker::confine::Parts {
        let (landlock, seccomp) = match self {
            Confinement::Both => (true, true),
            Confinement::LandlockOnly => (true, false),
            Confinement::SeccompOnly => (false, true),
            Confinement::Neither => (false, false),
        };
        fdbroker::confine::Parts { landlock, seccomp }
    }

    fn from_arg(arg: &str) -> Option<Confinement> {
        Confinement::ALL.into_iter().find(|c| c.arg() == arg)
    }
}
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
    /// The bare floor.
    pub fn start() -> Floor {
        Floor::spawn(&[])
    }

    /// The secure floor, serving the roots of `policy`, its audit lines to `audit`.
    pub fn start_secure(policy: &std::path::Path, audit: &std::path::Path) -> Floor {
        Floor::start_confined(policy, audit, Confinement::Both)
    }

    /// The secure floor under only part of the broker's confinement (or none).
    pub fn start_confined(
        policy: &std::path::Path,
        audit: &std::path::Path,
        confinement: Confinement,
    ) -> Floor {
        Floor::spawn(&[
            SECURE_ARG.as_ref(),
            policy.as_os_str(),
            audit.as_os_str(),
            confinement.arg().as_ref(),
        ])
    }

    fn spawn(extra: &[&std::ffi::OsStr]) -> Floor {
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
            .args(extra)
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

/// The floor server's main loop (in the re-executed process); `args` are the ones
/// after [`SERVER_ARG`].
pub fn serve_main(args: &[String]) -> ! {
    if let [flag, policy, audit, how @ ..] = args
        && flag == SECURE_ARG
        && how.len() <= 1
    {
        let how = match how.first() {
            None => Confinement::Both,
            Some(how) => Confinement::from_arg(how)
                .unwrap_or_else(|| panic!("secure floor: unknown confinement {how:?}")),
        };
        secure_main(policy, audit, how);
    }
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
        reply(fd, &mut opened, &mut raw, "floor server");
    }
}

/// The secure floor's loop (see the module documentation).
fn secure_main(policy_path: &str, audit_path: &str, confinement: Confinement) -> ! {
    use nix::fcntl::{OpenHow, ResolveFlag, openat2};
    use std::io::Write;
    let policy = fdbroker_policy::Policy::load(std::path::Path::new(policy_path))
        .unwrap_or_else(|e| panic!("secure floor: {e}"));
    let loaded = fdbroker::Loaded::new(policy, 1);
    // Every open root, longest first, as `PATH/`.
    let mut roots: Vec<(Vec<u8>, RawFd)> = loaded
        .roots
        .iter()
        .filter_map(|(p, fd)| {
            let mut prefix = p.as_os_str().as_encoded_bytes().to_vec();
            prefix.push(b'/');
            fd.map(|fd| (prefix, fd.as_raw_fd()))
        })
        .collect();
    roots.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    let mut audit = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(audit_path)
        .unwrap_or_else(|e| panic!("secure floor: {audit_path}: {e}"));
    fdbroker::confine::confine_parts(
        &loaded.policy,
        &loaded.roots,
        Some(std::path::Path::new(policy_path)),
        None,
        None,
        confinement.parts(),
    )
    .unwrap_or_else(|e| panic!("secure floor: confine: {e}"));
    // SAFETY: the parent placed our end of the socketpair at SERVER_FD for us alone.
    let sock = unsafe { OwnedFd::from_raw_fd(SERVER_FD) };
    let fd = sock.as_raw_fd();
    let pid = std::process::id();
    let mut buf = vec![0u8; 64 * 1024];
    let mut lines: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut opened: Vec<OwnedFd> = Vec::with_capacity(MAX_FDS);
    let mut raw: Vec<RawFd> = Vec::with_capacity(MAX_FDS);
    let how = || {
        OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            )
    };
    loop {
        let n = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(fd, &mut iov, None, MsgFlags::empty()) {
                Ok(m) if m.bytes == 0 => std::process::exit(0),
                Ok(m) => m.bytes,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    eprintln!("secure floor: recvmsg: {e}");
                    std::process::exit(1);
                }
            }
        };
        lines.clear();
        for path in buf[..n].split(|&b| b == 0) {
            let Some((prefix, root)) = roots.iter().find(|(p, _)| path.starts_with(p)) else {
                eprintln!(
                    "secure floor: no root for {:?}",
                    String::from_utf8_lossy(path)
                );
                std::process::exit(1);
            };
            let rel = &path[prefix.len()..];
            // SAFETY: the root descriptors live as long as `loaded`, for the whole loop.
            let root = unsafe { std::os::fd::BorrowedFd::borrow_raw(*root) };
            let f = match openat2(root, rel, how()) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("secure floor: openat2: {e}");
                    std::process::exit(1);
                }
            };
            let st = nix::sys::stat::fstat(&f).expect("secure floor: fstat");
            assert!(
                st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_nlink == 1,
                "secure floor: not a single-link regular file"
            );
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            // The broker's audit line, field for field, at its length.
            let _ = writeln!(
                lines,
                "{}.{:06}Z  INFO fdbroker::audit: uid=0 gid=0 pid={pid} client=\"bench\" \
                 path=\"{}\" access=\"read\" rule=\"{policy_path}:7:8\" result=\"granted\" ino={}",
                now.as_secs(),
                now.subsec_micros(),
                path.escape_ascii(),
                st.st_ino
            );
            if opened.len() == MAX_FDS {
                eprintln!("secure floor: more than {MAX_FDS} paths in one request");
                std::process::exit(1);
            }
            opened.push(f);
        }
        if let Err(e) = audit.write_all(&lines) {
            eprintln!("secure floor: audit: {e}");
            std::process::exit(1);
        }
        reply(fd, &mut opened, &mut raw, "secure floor");
    }
}

/// Send one reply: the count, and every opened descriptor as `SCM_RIGHTS`; then close
/// them. A client gone is the end of the server.
fn reply(fd: RawFd, opened: &mut Vec<OwnedFd>, raw: &mut Vec<RawFd>, who: &str) {
    raw.clear();
    raw.extend(opened.iter().map(AsRawFd::as_raw_fd));
    let count = (raw.len() as u32).to_ne_bytes();
    let sent = sendmsg::<()>(
        fd,
        &[IoSlice::new(&count)],
        &[ControlMessage::ScmRights(raw)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    );
    opened.clear();
    if let Err(e) = sent {
        if e != Errno::EPIPE {
            eprintln!("{who}: sendmsg: {e}");
        }
        std::process::exit(0);
    }
}
