//! End-to-end: a real `fdbroker serve`, real unprivileged processes, real sockets.
#![allow(clippy::unwrap_used)]

use fdbroker_shared::Channel;
use fdbroker_shared::frame::{self, Kind, MAX_MESSAGE};
use fdbroker_shared::wire::{Access, Hello, Op, OpenSpec, Request, Welcome};
use fdbroker_tests::{
    Broker, TempDir, cat_as_nobody, errno_of, eventually, nobody_gid, nobody_uid, read_all,
    run_as_nobody, text,
};
use fdbroker_worker::Client;
use std::io::{ErrorKind, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A tree with a spool (granted), a key carve-out (denied), a sibling `inbox`
/// (outside), and a root-only secret, plus a policy granting root and nobody.
fn fixture() -> (TempDir, Broker) {
    let t = TempDir::new("core");
    t.file("in/secret.txt", b"root-only contents\n", 0o600);
    t.file("in/sub/deep.txt", b"deep\n", 0o600);
    t.file("in/keys/private.pem", b"KEY", 0o600);
    t.file("inbox/other.txt", b"other", 0o644);
    t.file("outside.txt", b"outside", 0o644);
    t.file("conf/a.conf", b"a", 0o644);
    t.file("conf/b.txt", b"b", 0o644);
    t.dir("out", 0o755);
    let b = Broker::start(
        &t,
        r#"
[broker]
socket_mode = "0666"

[[client]]
name = "tester"
users = [0, {nobody}]

  [[client.allow]]
  path = "{dir}/in/"
  access = ["read", "directory"]

  [[client.allow]]
  path = "{dir}/conf/*.conf"

  [[client.allow]]
  path = "{dir}/out/"
  access = ["read", "write", "create"]

  [[client.deny]]
  path = "{dir}/in/keys/"
"#,
    );
    (t, b)
}

fn still_serving(t: &TempDir, c: &Client) {
    assert_eq!(
        read_all(c.open(t.join("in/secret.txt")).unwrap()),
        b"root-only contents\n"
    );
}

#[test]
fn nobody_reads_a_root_only_file_only_through_the_broker() {
    let (t, b) = fixture();
    let secret = t.join("in/secret.txt");
    // Directly: refused by the kernel.
    let direct = run_as_nobody(Command::new("/bin/cat").arg(&secret));
    assert!(
        !direct.status.success(),
        "nobody could read the file directly"
    );
    assert!(text(&direct.stderr).contains("Permission denied"));
    // Through the broker: granted.
    let out = cat_as_nobody(&b.socket, &[&secret]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout, b"root-only contents\n");
    // Outside the policy: a clear error naming the path, and non-zero exit.
    let out = cat_as_nobody(&b.socket, &[&t.join("outside.txt")]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("outside.txt") && err.contains("denied"),
        "{err}"
    );
    // The audit log names the peer uid and the result.
    let log = b.log();
    assert!(
        log.contains(&format!("uid={}", nobody_uid())) && log.contains("result=\"granted\""),
        "{log}"
    );
}

#[test]
fn refusals_are_uniform_and_the_broker_keeps_serving() {
    let (t, b) = fixture();
    let c = b.client();
    let denied = |p: &Path| {
        let e = c.open(p).unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::PermissionDenied,
            "{}: {e}",
            p.display()
        );
        still_serving(&t, &c);
        e
    };
    // Outside the policy: the same answer whether or not the file exists.
    let a = denied(&t.join("outside.txt"));
    let b2 = denied(&t.join("does-not-exist.txt"));
    assert_eq!(a.to_string(), b2.to_string());
    // Deny carve-out, and a sibling with a common string prefix.
    denied(&t.join("in/keys/private.pem"));
    denied(&t.join("inbox/other.txt"));
    // A glob grants only what it matches.
    assert_eq!(read_all(c.open(t.join("conf/a.conf")).unwrap()), b"a");
    denied(&t.join("conf/b.txt"));
    // Inside the policy the kernel's answer comes back.
    let e = c.open(t.join("in/nope.txt")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    // Lexically unclean or relative paths are invalid, never resolved.
    for p in ["in/secret.txt", "", "/../etc/passwd"] {
        let e = c.open(p).unwrap_err();
        assert_eq!(errno_of(&e), libc::EINVAL, "{p}: {e}");
    }
    let dotdot = format!("{}/in/../outside.txt", t.path().display());
    assert_eq!(errno_of(&c.open(&dotdot).unwrap_err()), libc::EINVAL);
    still_serving(&t, &c);
}

#[test]
fn symlinks_hardlinks_fifos_and_devices_are_refused() {
    let (t, b) = fixture();
    let c = b.client();
    let i = |p: &str| t.join(&format!("in/{p}"));
    std::os::unix::fs::symlink(t.join("outside.txt"), i("link-out")).unwrap();
    std::os::unix::fs::symlink("../outside.txt", i("link-rel")).unwrap();
    std::os::unix::fs::symlink("secret.txt", i("link-in")).unwrap();
    std::os::unix::fs::symlink(t.join("inbox"), i("dirlink")).unwrap();
    std::os::unix::fs::symlink("/proc/self/root/etc/passwd", i("magic")).unwrap();
    std::fs::hard_link(t.join("outside.txt"), i("hard")).unwrap();
    nix::unistd::mkfifo(&i("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
    nix::sys::stat::mknod(
        &i("null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    for p in [
        "link-out",
        "link-rel",
        "link-in",
        "dirlink/other.txt",
        "magic",
        "hard",
        "null",
    ] {
        let e = c.open(i(p)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{p}: {e}");
        still_serving(&t, &c);
    }
    // A FIFO is refused without blocking the broker (nobody writes to it).
    let start = Instant::now();
    let e = c.open(i("fifo")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(start.elapsed() < Duration::from_secs(5));
    still_serving(&t, &c);
    // A directory is not a file; with `directory` access it lists.
    let e = c.open(i("sub")).unwrap_err();
    assert_eq!(errno_of(&e), libc::EISDIR, "{e}");
    let dir = c.open_with(i("sub"), Access::Directory).unwrap();
    assert!(dir.metadata().unwrap().is_dir());
    let names: Vec<_> = nix::dir::Dir::from_fd(dir.into())
        .unwrap()
        .iter()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n == "deep.txt"), "{names:?}");
    assert!(b.log().contains("hard links"));
}

#[test]
fn descriptors_are_cloexec_with_exactly_the_granted_access() {
    let (t, b) = fixture();
    let c = b.client();
    let flags = |f: &std::fs::File| {
        let fd = nix::fcntl::fcntl(f.as_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        let fl = nix::fcntl::fcntl(f.as_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
        (fd & libc::FD_CLOEXEC != 0, fl & libc::O_ACCMODE)
    };
    let r = c.open(t.join("in/secret.txt")).unwrap();
    assert_eq!(flags(&r), (true, libc::O_RDONLY));
    let mut r2 = c.open(t.join("in/secret.txt")).unwrap();
    let e = r2.write(b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EBADF));

    // write, read-write, create: each exactly its mode.
    std::fs::write(t.join("out/w.txt"), b"old").unwrap();
    let w = c.open_with(t.join("out/w.txt"), Access::Write).unwrap();
    assert_eq!(flags(&w), (true, libc::O_WRONLY));
    let rw = c.open_with(t.join("out/w.txt"), Access::ReadWrite).unwrap();
    assert_eq!(flags(&rw), (true, libc::O_RDWR));
    // Write access is not granted under in/.
    let e = c
        .open_with(t.join("in/secret.txt"), Access::Write)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    // Truncate is a write: refused with read access.
    let e = c
        .open_detailed(
            t.join("in/secret.txt"),
            Access::Read,
            fdbroker_shared::wire::OPEN_TRUNC,
        )
        .unwrap_err();
    assert_eq!(errno_of(&e), libc::EINVAL);
    assert_eq!(
        std::fs::read(t.join("in/secret.txt")).unwrap(),
        b"root-only contents\n"
    );
    // Unknown flag bits are refused.
    let e = c
        .open_detailed(t.join("out/w.txt"), Access::Write, libc::O_PATH as u32)
        .unwrap_err();
    assert_eq!(errno_of(&e), libc::EINVAL);
    let mut trunc = c
        .open_detailed(
            t.join("out/w.txt"),
            Access::Write,
            fdbroker_shared::wire::OPEN_TRUNC,
        )
        .unwrap()
        .file;
    trunc.write_all(b"new").unwrap();
    assert_eq!(std::fs::read(t.join("out/w.txt")).unwrap(), b"new");

    // create: O_EXCL, fixed mode 0600 whatever the umask, EEXIST on an existing file.
    let created = c.open_with(t.join("out/made.txt"), Access::Create).unwrap();
    assert_eq!(flags(&created), (true, libc::O_WRONLY));
    let meta = std::fs::metadata(t.join("out/made.txt")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    let e = c
        .open_with(t.join("out/made.txt"), Access::Create)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    std::os::unix::fs::symlink(t.join("outside.txt"), t.join("out/dangling")).unwrap();
    let e = c
        .open_with(t.join("out/dangling"), Access::Create)
        .unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::AlreadyExists,
        "create must not follow a symlink: {e}"
    );
}

#[test]
fn many_threads_on_one_client_get_their_own_replies() {
    let t = TempDir::new("threads");
    for i in 0..16 {
        t.file(&format!("d/f{i}"), format!("file {i}").as_bytes(), 0o600);
    }
    let b = Broker::start(
        &t,
        "[[client]]\nname = \"t\"\nusers = [0]\n[[client.allow]]\npath = \"{dir}/d/\"\n",
    );
    let c = Arc::new(b.client());
    let threads: Vec<_> = (0..8)
        .map(|n| {
            let c = Arc::clone(&c);
            let t = t.path().to_owned();
            std::thread::spawn(move || {
                for round in 0..200 {
                    let i = (n * 7 + round) % 16;
                    let f = c.open(t.join(format!("d/f{i}"))).unwrap();
                    assert_eq!(read_all(f), format!("file {i}").as_bytes());
                    if round % 50 == 0 {
                        let paths: Vec<_> = (0..16).map(|k| t.join(format!("d/f{k}"))).collect();
                        for (k, r) in c.open_many(&paths).unwrap().into_iter().enumerate() {
                            assert_eq!(read_all(r.unwrap()), format!("file {k}").as_bytes());
                        }
                    }
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
}

#[test]
fn open_many_answers_each_path() {
    let (t, b) = fixture();
    let c = b.client();
    let paths = vec![
        t.join("in/secret.txt"),
        t.join("outside.txt"),
        t.join("in/nope"),
        t.join("in/sub/deep.txt"),
    ];
    let r = c.open_many(&paths).unwrap();
    assert_eq!(r.len(), 4);
    assert_eq!(
        read_all(r.into_iter().next().unwrap().unwrap()),
        b"root-only contents\n"
    );
    let r = c.open_many(&paths).unwrap();
    let kinds: Vec<_> = r
        .iter()
        .map(|x| x.as_ref().err().map(|e| e.kind()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            None,
            Some(ErrorKind::PermissionDenied),
            Some(ErrorKind::NotFound),
            None
        ]
    );
    // Larger than one reply may carry: the client splits it.
    let many: Vec<_> = (0..300).map(|_| t.join("in/sub/deep.txt")).collect();
    let r = c.open_many(&many).unwrap();
    assert_eq!(r.len(), 300);
    assert!(r.iter().all(|x| x.is_ok()));
}

/// Connect raw and greet, to send what a real client never would.
fn raw_session(b: &Broker) -> Channel {
    fdbroker_tests::raw_session(&b.socket, "raw")
}

fn assert_dropped(ch: &Channel) {
    let mut rx = vec![0; MAX_MESSAGE];
    match ch.recv_with_fds(&mut rx, 4) {
        Err(fdbroker_shared::RecvError::Protocol(fdbroker_shared::ProtocolError::Closed)) => {}
        Err(fdbroker_shared::RecvError::Io(e)) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("connection was not dropped: {other:?}"),
    }
}

#[test]
fn protocol_violations_drop_only_that_connection() {
    let (t, b) = fixture();
    let good = b.client();
    // Garbage.
    let ch = raw_session(&b);
    ch.send(b"this is not a frame at all").unwrap();
    assert_dropped(&ch);
    // A header whose length lies.
    let ch = raw_session(&b);
    let mut buf = Vec::new();
    let req = Request {
        id: 1,
        op: Op::Open(OpenSpec {
            path: b"/x".to_vec(),
            access: Access::Read,
            flags: 0,
        }),
    };
    frame::encode(Kind::Request, &req, &mut buf).unwrap();
    buf[8] = buf[8].wrapping_add(9);
    ch.send(&buf).unwrap();
    assert_dropped(&ch);
    // Oversized.
    let ch = raw_session(&b);
    ch.send(&vec![0u8; MAX_MESSAGE + 100]).unwrap();
    assert_dropped(&ch);
    // A valid request carrying descriptors: they are discarded and the peer dropped.
    let ch = raw_session(&b);
    frame::encode(Kind::Request, &req, &mut buf).unwrap();
    let f = std::fs::File::open("/dev/null").unwrap();
    let many: Vec<_> = (0..100).map(|_| f.as_fd()).collect();
    ch.send_with_fds(&buf, &many).unwrap();
    assert_dropped(&ch);
    // A second hello, or a reply-kind frame, mid-session.
    let ch = raw_session(&b);
    frame::encode(
        Kind::Hello,
        &Hello {
            version: 1,
            agent: "again".into(),
        },
        &mut buf,
    )
    .unwrap();
    ch.send(&buf).unwrap();
    assert_dropped(&ch);
    // The well-behaved client never noticed.
    still_serving(&t, &good);
    assert!(b.log().contains("protocol violation"));
}

#[test]
fn version_mismatch_and_unknown_peers_get_clear_refusals() {
    let (t, b) = fixture();
    let ch = Channel::connect(&b.socket).unwrap();
    let mut buf = Vec::new();
    frame::encode(
        Kind::Hello,
        &Hello {
            version: 99,
            agent: "future".into(),
        },
        &mut buf,
    )
    .unwrap();
    buf[4..6].copy_from_slice(&99u16.to_le_bytes());
    ch.send(&buf).unwrap();
    let mut rx = vec![0; MAX_MESSAGE];
    let n = ch.recv(&mut rx).unwrap();
    match frame::decode::<Welcome>(Kind::Welcome, &rx[..n]).unwrap() {
        Welcome::Refused(w) => assert!(w.message.contains("version 99"), "{}", w.message),
        w => panic!("{w:?}"),
    }
    // A uid the policy does not know: refused at connect with the reason.
    let t2 = TempDir::new("strangers");
    let b2 = Broker::start(
        &t2,
        "[broker]\nsocket_mode = \"0666\"\n[[client]]\nname = \"root-only\"\nusers = [0]\n[[client.allow]]\npath = \"{dir}/\"\n",
    );
    let out = cat_as_nobody(&b2.socket, &[&t.join("in/secret.txt")]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("uid {}", nobody_uid())) && err.contains("refused"),
        "{err}"
    );
    assert!(b2.log().contains("refused a connection"));
    still_serving(&t, &b.client());
}

#[test]
fn no_descriptor_or_memory_growth_after_thousands_of_requests() {
    let (t, b) = fixture();
    {
        let c = b.client();
        still_serving(&t, &c);
    }
    std::thread::sleep(Duration::from_millis(100));
    let base_fds = b.fd_count();
    let c = b.client();
    for i in 0..3000 {
        match i % 4 {
            0 => drop(c.open(t.join("in/secret.txt")).unwrap()),
            1 => drop(c.open(t.join("outside.txt")).unwrap_err()),
            2 => drop(c.open(t.join("in/missing")).unwrap_err()),
            _ => drop(
                c.open_many(&[t.join("in/secret.txt"), t.join("in/sub/deep.txt")])
                    .unwrap(),
            ),
        }
    }
    let rss_mid = b.rss_kib();
    for _ in 0..2000 {
        drop(c.open(t.join("in/secret.txt")).unwrap());
    }
    assert!(
        b.rss_kib() <= rss_mid + 512,
        "broker memory grew: {} -> {}",
        rss_mid,
        b.rss_kib()
    );
    drop(c);
    // Disconnected clients cost nothing: wait for the broker to notice.
    eventually(Duration::from_secs(5), || b.fd_count() <= base_fds);
    assert_eq!(b.fd_count(), base_fds, "broker leaked descriptors");
}

#[test]
fn socket_file_mode_stale_replacement_and_removal_on_sigterm() {
    let t = TempDir::new("sock");
    t.file("f", b"x", 0o600);
    let policy = "[broker]\nsocket_mode = \"0640\"\nsocket_group = \"nogroup\"\n[[client]]\nname = \"t\"\nusers = [0]\n[[client.allow]]\npath = \"{dir}/f\"\n";
    let mut b = Broker::start(&t, policy);
    let meta = std::fs::symlink_metadata(&b.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert_eq!(meta.gid(), nobody_gid());
    // A second broker on the same live socket refuses to steal it.
    let out = fdbroker_tests::run_with_timeout(
        Command::new(fdbroker_tests::fdbroker_bin())
            .args(["serve", "--policy"])
            .arg(&b.policy)
            .arg("--socket")
            .arg(&b.socket),
        Duration::from_secs(10),
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("another broker"));
    // SIGTERM: exit 0 and the socket file is gone.
    b.signal(nix::sys::signal::Signal::SIGTERM);
    let status = b
        .wait_exit(Duration::from_secs(10))
        .expect("broker did not stop");
    assert!(status.success(), "{status}");
    assert!(!b.socket.exists());
    // A stale socket file (nobody listening) is replaced.
    let stale = t.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let b2 = Broker::start_with(&t, policy, &[]);
    drop(b2);
    // A regular file where the socket should go is never replaced.
    let regular = t.file("not-a-socket", b"precious", 0o644);
    let out = fdbroker_tests::run_with_timeout(
        Command::new(fdbroker_tests::fdbroker_bin())
            .args(["serve", "--policy"])
            .arg(&b.policy)
            .arg("--socket")
            .arg(&regular),
        Duration::from_secs(10),
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("not a socket"));
    assert_eq!(std::fs::read(&regular).unwrap(), b"precious");
}
