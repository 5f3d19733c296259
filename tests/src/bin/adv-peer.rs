//! A hostile or tricky peer for the adversarial tests, as its own process (the test
//! harness is multi-threaded, so it must never change its own uid, and a process the
//! tests can SIGKILL mid-request has to be a real one).
//!
//! ```text
//! adv-peer uid-switch SOCKET LOW_FILE HIGH_FILE
//!     (as root) connect as root then drop to nobody, and connect as nobody then regain
//!     root; print which client each connection is and what it may open
//! adv-peer flood SOCKET FILE
//!     greet, then send batch requests for FILE forever without reading a reply;
//!     prints "flooding" once the broker has work in hand
//! adv-peer garbage SOCKET
//!     connect and send bytes that are no frame at all, then print what the broker
//!     answers (a peer matching no client must get a refusal, not a parse)
//! adv-peer log-flood SOCKET DIR REQUESTS GRANTED
//!     send REQUESTS batches of long non-UTF-8 paths that are all refused (outside the
//!     policy, invalid, or missing beneath DIR), reading each reply, then open GRANTED;
//!     print `sent=BYTES denied=N failed=M` and `granted ino=INO`
//! ```
#![allow(clippy::unwrap_used)]

use fdbroker_shared::Channel;
use fdbroker_shared::frame::{self, Kind, MAX_MESSAGE};
use fdbroker_shared::wire::{Access, Op, Reply, ReplyBody, Request, Welcome};
use fdbroker_worker::{BrokerError, Client};
use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("uid-switch") if args.len() == 5 => uid_switch(&args[2], &args[3], &args[4]),
        Some("flood") if args.len() == 4 => flood(&args[2], &args[3]),
        Some("garbage") if args.len() == 3 => garbage(&args[2]),
        Some("log-flood") if args.len() == 6 => {
            log_flood(&args[2], &args[3], args[4].parse().unwrap(), &args[5])
        }
        _ => {
            eprintln!("usage: adv-peer uid-switch|flood|garbage|log-flood ...");
            ExitCode::from(2)
        }
    }
}

/// `ok`, or the errno the broker answered with.
fn outcome(c: &Client, path: &str) -> String {
    match c.open(path) {
        Ok(_) => "ok".into(),
        Err(e) => match e.get_ref().and_then(|i| i.downcast_ref::<BrokerError>()) {
            Some(b) => format!("errno{}", b.errno),
            None => format!("error({e})"),
        },
    }
}

/// Effective ids, keeping root as the saved uid/gid so the switch can be undone.
fn become_ids(uid: u32, gid: u32) {
    let (u, g) = (Uid::from_raw(uid), Gid::from_raw(gid));
    if uid == 0 {
        setresuid(u, u, Uid::from_raw(0)).unwrap();
        setresgid(g, g, Gid::from_raw(0)).unwrap();
    } else {
        setresgid(g, g, Gid::from_raw(0)).unwrap();
        setresuid(u, u, Uid::from_raw(0)).unwrap();
    }
}

fn uid_switch(socket: &str, low: &str, high: &str) -> ExitCode {
    setgroups(&[]).unwrap();
    // Connected as root, then dropped: the connection keeps the root client.
    let as_root = Client::connect(socket).unwrap();
    become_ids(fdbroker_tests::nobody_uid(), fdbroker_tests::nobody_gid());
    println!(
        "root-then-nobody client={} high={} low={}",
        as_root.client_name(),
        outcome(&as_root, high),
        outcome(&as_root, low)
    );
    // Connected as nobody, then root again: still only the nobody client.
    let as_nobody = Client::connect(socket).unwrap();
    become_ids(0, 0);
    assert!(Uid::effective().is_root());
    println!(
        "nobody-then-root client={} high={} low={}",
        as_nobody.client_name(),
        outcome(&as_nobody, high),
        outcome(&as_nobody, low)
    );
    // A new connection is a new identity.
    let fresh = Client::connect(socket).unwrap();
    println!(
        "fresh-root client={} high={}",
        fresh.client_name(),
        outcome(&fresh, high)
    );
    ExitCode::SUCCESS
}

fn greet(socket: &str) -> Channel {
    let ch = fdbroker_tests::raw_session(Path::new(socket), "adv-peer");
    ch.set_read_timeout(None).unwrap();
    ch
}

fn flood(socket: &str, file: &str) -> ExitCode {
    let ch = greet(socket);
    let mut buf = Vec::new();
    for id in 1u64.. {
        let req = Request {
            id,
            op: Op::OpenMany {
                paths: vec![file.as_bytes().to_vec(); 128],
                access: Access::Read,
                flags: 0,
            },
        };
        frame::encode(Kind::Request, &req, &mut buf).unwrap();
        if ch.send(&buf).is_err() {
            return ExitCode::FAILURE;
        }
        if id == 8 {
            println!("flooding");
            std::io::stdout().flush().unwrap();
        }
    }
    ExitCode::SUCCESS
}

fn garbage(socket: &str) -> ExitCode {
    let ch = Channel::connect(Path::new(socket)).unwrap();
    ch.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Not a frame: a broker that parsed it would log a protocol violation.
    let _ = ch.send(b"GARBAGE-THAT-IS-NO-FRAME");
    let mut rx = vec![0; MAX_MESSAGE];
    let mut got = ch.recv(&mut rx);
    if matches!(&got, Err(fdbroker_shared::RecvError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset)
    {
        got = ch.recv(&mut rx);
    }
    match got {
        Ok(n) => match frame::decode::<Welcome>(Kind::Welcome, &rx[..n]) {
            Ok(Welcome::Refused(w)) => {
                println!("refused errno={} {}", w.errno, w.message);
                ExitCode::SUCCESS
            }
            other => {
                println!("unexpected {other:?}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            println!("error {e}");
            ExitCode::FAILURE
        }
    }
}

/// `len` bytes of path made of non-UTF-8 bytes (each escaped as `\xNN` in a log line)
/// in components of at most 200 bytes after `prefix`, varied by `seed`.
fn hostile_path(prefix: &[u8], len: usize, seed: usize) -> Vec<u8> {
    let mut p = prefix.to_vec();
    let mut i = 0;
    while p.len() < len {
        if i > 0 && i % 200 == 0 {
            p.push(b'/');
        } else {
            p.push(0x80 | ((i + seed) % 0x7f) as u8);
        }
        i += 1;
    }
    p
}

/// Refused requests as fast as the broker answers them: each batch close to the
/// 64 KiB message cap, each path growing 4x when escaped. Three shapes, so that every
/// way to a refusal is covered: 128 paths outside the policy (denied), 16 paths of
/// 4,000 bytes beneath `dir` that do not exist (failed), one 60,000-byte path (denied
/// as invalid). Then one open the policy grants.
fn log_flood(socket: &str, dir: &str, requests: u64, granted: &str) -> ExitCode {
    let ch = greet(socket);
    ch.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let inside = format!("{dir}/d/missing-").into_bytes();
    let (mut sent, mut denied, mut failed) = (0usize, 0u64, 0u64);
    let mut buf = Vec::new();
    let mut rx = vec![0; MAX_MESSAGE];
    for id in 0..requests {
        let n = id as usize;
        let paths: Vec<Vec<u8>> = match id % 3 {
            0 => (0..128).map(|i| hostile_path(b"/", 480, n + i)).collect(),
            1 => (0..16)
                .map(|i| hostile_path(&inside, 4000, n + i))
                .collect(),
            _ => vec![hostile_path(b"/", 60_000, n)],
        };
        let req = Request {
            id,
            op: Op::OpenMany {
                paths,
                access: Access::Read,
                flags: 0,
            },
        };
        frame::encode(Kind::Request, &req, &mut buf).unwrap();
        ch.send(&buf).unwrap();
        sent += buf.len();
        let (got, fds) = ch.recv_with_fds(&mut rx, 128).unwrap();
        assert!(fds.is_empty());
        let reply: Reply = frame::decode(Kind::Reply, &rx[..got]).unwrap();
        let ReplyBody::OpenMany(outcomes) = reply.body else {
            panic!("{:?}", reply.body)
        };
        for o in outcomes {
            match o.map_err(|e| e.errno) {
                Err(libc::EACCES | libc::EINVAL) => denied += 1,
                Err(libc::ENOENT) => failed += 1,
                other => panic!("unexpected outcome {other:?}"),
            }
        }
    }
    println!("sent={sent} denied={denied} failed={failed}");
    let req = Request {
        id: requests,
        op: Op::OpenMany {
            paths: vec![granted.as_bytes().to_vec()],
            access: Access::Read,
            flags: 0,
        },
    };
    frame::encode(Kind::Request, &req, &mut buf).unwrap();
    ch.send(&buf).unwrap();
    let (got, fds) = ch.recv_with_fds(&mut rx, 128).unwrap();
    let reply: Reply = frame::decode(Kind::Reply, &rx[..got]).unwrap();
    match reply.body {
        ReplyBody::OpenMany(o) if fds.len() == 1 => match &o[..] {
            [Ok(meta)] => println!("granted ino={}", meta.ino),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    ExitCode::SUCCESS
}
