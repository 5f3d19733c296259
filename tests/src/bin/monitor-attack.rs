//! Attacks on the monitor/server process model (tests/tests/monitor_attacks.rs).
//!
//! ```text
//! monitor-attack forged-handover FDBROKER POLICY SOCKET FILE
//!     act as the monitor and as a compromised predecessor server: hand the successor
//!     the *client* end of a connection made to a listener some other process (uid 0)
//!     created, keep the accepted end, and speak the protocol on it. Prints
//!     `granted` when the successor served it as the listener creator's uid.
//! monitor-attack forged-reload-answer MONITOR_PID
//!     start a victim process, then queue the monitor a SIGHUP reload request whose
//!     si_pid names the victim; prints `victim alive` or `victim killed by SIG...`.
//! monitor-attack confined-connect POLICY SOCKET
//!     confine exactly as a server does for POLICY, then socket(AF_UNIX, SEQPACKET) and
//!     connect to SOCKET: prints `connected` when a confined server can still do it.
//! ```
#![allow(clippy::unwrap_used)]

use fdbroker_shared::Channel;
use fdbroker_worker::Client;
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, accept, bind, connect, listen, socket,
};
use nix::unistd::{ForkResult, fork};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("forged-handover") if args.len() == 6 => {
            forged_handover(&args[2], &args[3], &args[4], &args[5])
        }
        Some("forged-reload-answer") if args.len() == 3 => forged_reload_answer(&args[2]),
        Some("confined-connect") if args.len() == 4 => confined_connect(&args[2], &args[3]),
        _ => {
            eprintln!("usage: monitor-attack forged-handover FDBROKER POLICY SOCKET FILE");
            ExitCode::from(2)
        }
    }
}

fn clear_cloexec(fd: &impl AsFd) {
    nix::fcntl::fcntl(
        fd.as_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();
}

fn forged_handover(fdbroker: &str, policy: &str, sock: &str, file: &str) -> ExitCode {
    let _ = std::fs::remove_file(sock);
    // Another process (the first server, or systemd under socket activation) created
    // the listener: its credentials are what a connecting socket sees as its peer.
    let (give, take) = Channel::pair().unwrap();
    // SAFETY: single-threaded here.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            let l = socket(
                AddressFamily::Unix,
                SockType::SeqPacket,
                SockFlag::empty(),
                None,
            )
            .unwrap();
            bind(l.as_raw_fd(), &UnixAddr::new(sock).unwrap()).unwrap();
            listen(&l, Backlog::new(16).unwrap()).unwrap();
            give.send_with_fds(b"L", &[l]).unwrap();
            std::process::exit(0);
        }
        ForkResult::Parent { child } => {
            let _ = nix::sys::wait::waitpid(child, None);
            println!("listener creator pid {child} (exited)");
        }
    }
    let mut buf = [0u8; 8];
    let (_, mut fds) = take.recv_with_fds(&mut buf, 1).unwrap();
    let listener = fds.pop().unwrap();
    // The compromised predecessor connects to its own listener (socket + connect are
    // in the server's seccomp allowlist) and accepts the other end itself.
    let client_end = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    connect(client_end.as_raw_fd(), &UnixAddr::new(sock).unwrap()).unwrap();
    // SAFETY: accept returned a new descriptor we own.
    let accepted = unsafe { OwnedFd::from_raw_fd(accept(listener.as_raw_fd()).unwrap()) };
    // The monitor's part: control channel, handover socket, environment.
    let (ctl_mon, ctl_srv) = Channel::pair().unwrap();
    let (ho_keep, ho_give) = Channel::pair().unwrap();
    let ctl_srv = OwnedFd::from(ctl_srv);
    let ho_give = OwnedFd::from(ho_give);
    for fd in [&ctl_srv, &ho_give, &listener] {
        clear_cloexec(fd);
    }
    let me = std::process::id();
    let mut cmd = Command::new(fdbroker);
    cmd.args(["serve", "--policy", policy])
        .env("FDBROKER_CONTROL_FD", ctl_srv.as_raw_fd().to_string())
        .env(
            "FDBROKER_LISTEN_FDS",
            format!("{}:attack", listener.as_raw_fd()),
        )
        .env("FDBROKER_HANDOVER_FD", ho_give.as_raw_fd().to_string())
        .env("FDBROKER_PREDECESSOR_PID", me.to_string());
    // SAFETY: only a prctl in the child.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            Ok(())
        });
    }
    let mut server = cmd.spawn().unwrap();
    drop(ctl_srv);
    drop(ho_give);
    loop {
        let mut msg = vec![0u8; 8192];
        let (n, _) = ctl_mon.recv_with_fds(&mut msg, 1).unwrap();
        let text = String::from_utf8_lossy(&msg[1..n]).into_owned();
        println!("server says {}: {text}", msg[0] as char);
        match msg[0] {
            b'R' => break,
            b'F' => {
                let _ = server.wait();
                return ExitCode::from(3);
            }
            _ => {}
        }
    }
    // The predecessor's part: hand over the client end as if it were a worker's
    // connection (flags 0: not greeted, no parked reply).
    let mut m = vec![b'C', 0];
    m.extend_from_slice(&[0u8; 16]);
    ho_keep.send_with_fds(&m, &[client_end]).unwrap();
    ho_keep.send(b"D").unwrap();
    // Speak on the accepted end: the successor reads it from the end it adopted.
    let client = match Client::over(Channel::wrap(accepted)) {
        Ok(c) => c,
        Err(e) => {
            println!("refused at hello: {e}");
            let _ = server.kill();
            let _ = server.wait();
            return ExitCode::SUCCESS;
        }
    };
    println!("served as client {:?}", client.client_name());
    let code = match client.open(file) {
        Ok(f) => {
            let mut s = String::new();
            use std::io::Read;
            let _ = (&f).read_to_string(&mut s);
            println!("granted: {file} ({} bytes: {:?})", s.len(), s.trim());
            ExitCode::from(1)
        }
        Err(e) => {
            println!("denied: {e}");
            ExitCode::SUCCESS
        }
    };
    let _ = server.kill();
    let _ = server.wait();
    code
}

fn confined_connect(policy: &str, sock: &str) -> ExitCode {
    let policy = fdbroker_policy::Policy::load(std::path::Path::new(policy)).unwrap();
    let loaded = fdbroker::Loaded::new(policy, 1);
    fdbroker::confine::confine(&loaded.policy, &loaded.roots, None, None, None).unwrap();
    let s = match socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    ) {
        Ok(s) => s,
        Err(e) => {
            println!("socket {e:?}");
            return ExitCode::SUCCESS;
        }
    };
    match connect(s.as_raw_fd(), &UnixAddr::new(sock).unwrap()) {
        Ok(()) => {
            println!("connected");
            ExitCode::from(1)
        }
        Err(e) => {
            println!("connect {e:?}");
            ExitCode::SUCCESS
        }
    }
}

fn forged_reload_answer(monitor: &str) -> ExitCode {
    let monitor: i32 = monitor.parse().unwrap();
    let mut victim = Command::new("sleep").arg("1000").spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    // siginfo_t as rt_sigqueueinfo takes it: signo, errno, code, pad, then pid, uid
    // and the value, all chosen by the sender.
    let mut info = [0i32; 32];
    info[0] = libc::SIGHUP;
    info[2] = libc::SI_QUEUE;
    info[4] = victim.id() as i32;
    info[5] = 0;
    info[6] = fdbroker::daemon::reload::RELOAD_REQUEST;
    // SAFETY: a pointer to a live 128-byte buffer, the size of siginfo_t.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_rt_sigqueueinfo,
            monitor,
            libc::SIGHUP,
            info.as_ptr(),
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if let Some(status) = victim.try_wait().unwrap() {
            use std::os::unix::process::ExitStatusExt;
            println!("victim killed by signal {:?}", status.signal());
            return ExitCode::from(1);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    println!("victim alive");
    let _ = victim.kill();
    let _ = victim.wait();
    ExitCode::SUCCESS
}
