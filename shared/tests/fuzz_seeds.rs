//! The seed corpora of the frame fuzz targets (`fuzz/corpus/decode_*`): one valid
//! frame of each shape a peer sends. This test checks the committed seeds are current
//! (each file holds exactly what is generated here); after a protocol change, rewrite
//! them with
//!
//! ```sh
//! FDBROKER_WRITE_SEEDS=1 cargo test -p fdbroker-shared --test fuzz_seeds
//! ```
#![allow(clippy::unwrap_used)]

use fdbroker_shared::frame::{self, Kind};
use fdbroker_shared::wire::{
    Accepted, Access, FileKind, FileMeta, Hello, MAX_BATCH, OPEN_APPEND, OPEN_TRUNC, Op, OpenSpec,
    Reply, ReplyBody, Request, Welcome, WireError,
};
use std::path::{Path, PathBuf};

fn enc<T: serde::Serialize>(kind: Kind, msg: &T) -> Vec<u8> {
    let mut buf = Vec::new();
    frame::encode(kind, msg, &mut buf).unwrap();
    buf
}

fn open(id: u64, path: &[u8], access: Access, flags: u32) -> Vec<u8> {
    enc(
        Kind::Request,
        &Request {
            id,
            op: Op::Open(OpenSpec {
                path: path.to_vec(),
                access,
                flags,
            }),
        },
    )
}

fn meta(kind: FileKind) -> FileMeta {
    FileMeta {
        kind,
        size: 4096,
        dev: 0x803,
        ino: 1_234_567,
        mode: 0o100_600,
        nlink: 1,
        mtime_sec: 1_700_000_000,
        mtime_nsec: 999_999_999,
    }
}

fn reply(id: u64, body: ReplyBody) -> Vec<u8> {
    enc(Kind::Reply, &Reply { id, body })
}

/// What a worker sends: the broker side's seeds.
fn broker_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let hello = Hello {
        version: frame::PROTOCOL_VERSION,
        agent: "fdbroker-worker 0.1.0".into(),
    };
    let many = |n: usize, access| {
        enc(
            Kind::Request,
            &Request {
                id: 77,
                op: Op::OpenMany {
                    paths: (0..n)
                        .map(|i| format!("/var/spool/q/{i:03}.bin").into_bytes())
                        .collect(),
                    access,
                    flags: 0,
                },
            },
        )
    };
    vec![
        ("hello", enc(Kind::Hello, &hello)),
        ("open-read", open(1, b"/var/spool/q/a.bin", Access::Read, 0)),
        ("open-root", open(2, b"/", Access::Directory, 0)),
        (
            "open-write-trunc",
            open(3, b"/srv/out/report.txt", Access::Write, OPEN_TRUNC),
        ),
        (
            "open-rw-append",
            open(4, b"/srv/out/log", Access::ReadWrite, OPEN_APPEND),
        ),
        ("open-create", open(5, b"/srv/out/new", Access::Create, 0)),
        ("open-bytes", open(6, b"/q/\xff\xfe\n.bin", Access::Read, 0)),
        ("open-many-3", many(3, Access::Read)),
        ("open-many-max", many(MAX_BATCH, Access::Read)),
    ]
}

/// What a broker sends: the worker side's seeds.
fn worker_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let denied = || WireError::new(13, "permission denied by the broker's policy");
    vec![
        (
            "welcome-accepted",
            enc(
                Kind::Welcome,
                &Welcome::Accepted(Accepted {
                    client: "scanner".into(),
                    max_batch: 128,
                }),
            ),
        ),
        (
            "welcome-refused",
            enc(
                Kind::Welcome,
                &Welcome::Refused(WireError::new(
                    13,
                    "no client in the broker's policy matches uid 65534 gid 65534",
                )),
            ),
        ),
        (
            "reply-open-ok",
            reply(1, ReplyBody::Open(Ok(meta(FileKind::Regular)))),
        ),
        (
            "reply-open-denied",
            reply(2, ReplyBody::Open(Err(denied()))),
        ),
        (
            "reply-open-many",
            reply(
                3,
                ReplyBody::OpenMany(vec![
                    Ok(meta(FileKind::Regular)),
                    Err(denied()),
                    Err(WireError::new(2, "No such file or directory")),
                    Ok(meta(FileKind::Directory)),
                ]),
            ),
        ),
        (
            "reply-open-many-max",
            reply(
                4,
                ReplyBody::OpenMany(vec![Ok(meta(FileKind::Fifo)); MAX_BATCH]),
            ),
        ),
        (
            "reply-refused",
            reply(
                5,
                ReplyBody::Refused(WireError::new(7, "batch of 200 paths exceeds 128")),
            ),
        ),
    ]
}

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

fn check_or_write(target: &str, seeds: Vec<(&'static str, Vec<u8>)>) {
    let dir = corpus(target);
    let write = std::env::var_os("FDBROKER_WRITE_SEEDS").is_some();
    if write {
        std::fs::create_dir_all(&dir).unwrap();
    }
    for (name, bytes) in seeds {
        let path = dir.join(format!("seed-{name}"));
        if write {
            std::fs::write(&path, &bytes).unwrap();
            continue;
        }
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(
            committed == bytes,
            "{} is missing or stale: regenerate the seeds with \
             FDBROKER_WRITE_SEEDS=1 cargo test -p fdbroker-shared --test fuzz_seeds",
            path.display()
        );
    }
}

#[test]
fn frame_seeds_are_current() {
    check_or_write("decode_broker", broker_seeds());
    check_or_write("decode_worker", worker_seeds());
}
