//! Golden vectors: the bytes of every message shape, in `shared/testdata/vectors.json`,
//! so that `PROTOCOL.md`, this crate and the clients in other languages (the Python
//! package's tests read the same file) cannot drift apart, and so that the bincode
//! codec can one day be replaced without changing a byte on the wire.
//!
//! Each valid vector holds a message as JSON (serde's externally tagged form: an enum
//! variant is `{"Name": value}`, a unit variant `"Name"`, a byte string an array of
//! numbers) and its whole frame in hex; the test checks that encoding the value gives
//! exactly the frame and decoding the frame gives back the value. Each invalid vector
//! is a frame that must be refused. The worked examples in `PROTOCOL.md` (the blocks
//! after `<!-- vector: NAME -->`) are checked against the vectors too.
//!
//! After a deliberate protocol change, rewrite the file with
//!
//! ```sh
//! FDBROKER_WRITE_VECTORS=1 cargo test -p fdbroker-shared --test golden
//! ```
//! and say in `PROTOCOL.md` what changed. Adding an operation appends vectors; an
//! existing vector changes only with a new protocol version.
#![allow(clippy::unwrap_used)]

use fdbroker_shared::ProtocolError;
use fdbroker_shared::frame::{self, HEADER_LEN, Kind, MAX_MESSAGE, PROTOCOL_VERSION};
use fdbroker_shared::wire::{
    Accepted, Access, FileKind, FileMeta, Hello, LinkMeta, ListEntry, ListSpec, Listing, MAX_BATCH,
    OPEN_APPEND, OPEN_TRUNC, Op, OpenSpec, Reply, ReplyBody, Request, StatMeta, StatSpec, Welcome,
    WireError,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

const EACCES: i32 = libc::EACCES;

/// One message of each shape, with the values chosen so every field's width and
/// byte order shows (no field is zero where a zero could hide a swapped half).
enum Msg {
    Hello(Hello),
    Welcome(Welcome),
    Request(Request),
    Reply(Reply),
}

impl Msg {
    fn kind(&self) -> Kind {
        match self {
            Msg::Hello(_) => Kind::Hello,
            Msg::Welcome(_) => Kind::Welcome,
            Msg::Request(_) => Kind::Request,
            Msg::Reply(_) => Kind::Reply,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Msg::Hello(m) => frame::encode(Kind::Hello, m, &mut out),
            Msg::Welcome(m) => frame::encode(Kind::Welcome, m, &mut out),
            Msg::Request(m) => frame::encode(Kind::Request, m, &mut out),
            Msg::Reply(m) => frame::encode(Kind::Reply, m, &mut out),
        }
        .unwrap();
        out
    }

    fn json(&self) -> Value {
        match self {
            Msg::Hello(m) => serde_json::to_value(m),
            Msg::Welcome(m) => serde_json::to_value(m),
            Msg::Request(m) => serde_json::to_value(m),
            Msg::Reply(m) => serde_json::to_value(m),
        }
        .unwrap()
    }

    /// Decode `bytes` as this message's kind and compare with it.
    fn decodes_from(&self, bytes: &[u8]) -> bool {
        fn same<T: DeserializeOwned + PartialEq>(kind: Kind, bytes: &[u8], want: &T) -> bool {
            frame::decode::<T>(kind, bytes).is_ok_and(|got| &got == want)
        }
        match self {
            Msg::Hello(m) => same(Kind::Hello, bytes, m),
            Msg::Welcome(m) => same(Kind::Welcome, bytes, m),
            Msg::Request(m) => same(Kind::Request, bytes, m),
            Msg::Reply(m) => same(Kind::Reply, bytes, m),
        }
    }
}

fn meta(kind: FileKind, mode: u32) -> FileMeta {
    FileMeta {
        kind,
        size: 0x0102_0304_0506_0708,
        dev: 0x0803,
        ino: 0x0012_d687,
        mode,
        nlink: 1,
        mtime_sec: 1_700_000_000,
        mtime_nsec: 123_456_789,
    }
}

fn open(id: u64, path: &[u8], access: Access, flags: u32) -> Msg {
    Msg::Request(Request {
        id,
        op: Op::Open(OpenSpec {
            path: path.to_vec(),
            access,
            flags,
        }),
    })
}

/// What a stat of a character device answers: every field of `StatMeta` non-zero and
/// distinct, so a swapped or misplaced field shows.
fn stat_meta() -> StatMeta {
    StatMeta {
        file: FileMeta {
            size: 0,
            nlink: 2,
            ..meta(FileKind::CharDevice, 0o020_640)
        },
        uid: 1000,
        gid: 0x0102_0304,
        rdev: 0x0000_0001_0000_0005,
        blksize: 4096,
        blocks: 0x0a0b,
        atime_sec: 1_700_000_100,
        atime_nsec: 987_654_321,
        ctime_sec: -2,
        ctime_nsec: 1,
    }
}

fn reply(id: u64, body: ReplyBody) -> Msg {
    Msg::Reply(Reply { id, body })
}

fn valid() -> Vec<(&'static str, &'static str, Msg)> {
    let denied = || WireError::new(EACCES, "permission denied by the broker's policy");
    vec![
        (
            "hello",
            "The client's greeting, the first message on a connection.",
            Msg::Hello(Hello {
                version: PROTOCOL_VERSION,
                agent: "fdbroker-worker 0.1.0".into(),
            }),
        ),
        (
            "hello-empty-agent",
            "An empty agent string is a u64 zero length and nothing else.",
            Msg::Hello(Hello {
                version: PROTOCOL_VERSION,
                agent: String::new(),
            }),
        ),
        (
            "welcome-accepted",
            "The broker serves the connection as policy client \"scanner\".",
            Msg::Welcome(Welcome::Accepted(Accepted {
                client: "scanner".into(),
                max_batch: 128,
            })),
        ),
        (
            "welcome-refused",
            "No policy client matches the peer: EACCES, then the broker closes.",
            Msg::Welcome(Welcome::Refused(WireError::new(
                EACCES,
                "no client in the broker's policy matches uid 65534 gid 65534",
            ))),
        ),
        (
            "welcome-refused-busy",
            "Over a connection limit: EAGAIN. Messages are UTF-8 (here a multi-byte character).",
            Msg::Welcome(Welcome::Refused(WireError::new(
                libc::EAGAIN,
                "uid 65534 is at its limit of 1024 connections \u{2014} try later",
            ))),
        ),
        (
            "request-open-read",
            "Open one file for reading.",
            open(1, b"/etc/hosts", Access::Read, 0),
        ),
        (
            "request-open-write-trunc",
            "Open an existing file write-only and truncate it (O_TRUNC = 0x200).",
            open(2, b"/srv/out/report.txt", Access::Write, OPEN_TRUNC),
        ),
        (
            "request-open-readwrite-append",
            "Open an existing file read-write in append mode (O_APPEND = 0x400).",
            open(3, b"/srv/out/log", Access::ReadWrite, OPEN_APPEND),
        ),
        (
            "request-open-create",
            "Create a new file (O_WRONLY | O_CREAT | O_EXCL beneath the rule's root).",
            open(4, b"/srv/out/new.txt", Access::Create, 0),
        ),
        (
            "request-open-directory",
            "Open a directory for listing.",
            open(5, b"/srv/in", Access::Directory, 0),
        ),
        (
            "request-open-bytes",
            "Paths are bytes, not text: this one is not UTF-8.",
            open(6, b"/q/\xff\xfe\n.bin", Access::Read, 0),
        ),
        (
            "request-id-max",
            "Ids are any u64 the client chooses.",
            open(u64::MAX, b"/", Access::Directory, 0),
        ),
        (
            "request-open-many",
            "Open three files with one access in one round trip.",
            Msg::Request(Request {
                id: 7,
                op: Op::OpenMany {
                    paths: vec![b"/q/a".to_vec(), b"/q/b".to_vec(), b"/q/c".to_vec()],
                    access: Access::Read,
                    flags: 0,
                },
            }),
        ),
        (
            "request-open-many-empty",
            "An empty batch is valid and is answered with an empty list.",
            Msg::Request(Request {
                id: 8,
                op: Op::OpenMany {
                    paths: vec![],
                    access: Access::Read,
                    flags: 0,
                },
            }),
        ),
        (
            "request-open-many-max",
            "The longest batch the protocol allows (128 paths).",
            Msg::Request(Request {
                id: 9,
                op: Op::OpenMany {
                    paths: (0..MAX_BATCH)
                        .map(|i| format!("/q/{i:03}").into_bytes())
                        .collect(),
                    access: Access::Read,
                    flags: 0,
                },
            }),
        ),
        (
            "reply-open-ok",
            "A granted open: the file's metadata; one descriptor travels with it.",
            reply(1, ReplyBody::Open(Ok(meta(FileKind::Regular, 0o100_600)))),
        ),
        (
            "reply-open-denied",
            "A refused open: EACCES and the broker's reason; no descriptor.",
            reply(2, ReplyBody::Open(Err(denied()))),
        ),
        (
            "reply-open-not-found",
            "Inside the policy the kernel's own error comes back: ENOENT.",
            reply(
                3,
                ReplyBody::Open(Err(WireError::new(
                    libc::ENOENT,
                    "No such file or directory",
                ))),
            ),
        ),
        (
            "reply-open-directory",
            "A directory descriptor's metadata.",
            reply(5, ReplyBody::Open(Ok(meta(FileKind::Directory, 0o040_755)))),
        ),
        (
            "reply-open-negative-mtime",
            "mtime_sec is signed: a file dated before 1970.",
            reply(
                10,
                ReplyBody::Open(Ok(FileMeta {
                    mtime_sec: -1,
                    mtime_nsec: 0,
                    ..meta(FileKind::Regular, 0o100_644)
                })),
            ),
        ),
        (
            "reply-open-many",
            "One outcome per path, in order; two descriptors travel with it (for the two Ok).",
            reply(
                7,
                ReplyBody::OpenMany(vec![
                    Ok(meta(FileKind::Regular, 0o100_600)),
                    Err(denied()),
                    Ok(meta(FileKind::Regular, 0o100_640)),
                ]),
            ),
        ),
        (
            "reply-open-many-kinds",
            "Every file kind, in tag order (what a rule with devices = true can pass).",
            reply(
                11,
                ReplyBody::OpenMany(vec![
                    Ok(meta(FileKind::Regular, 0o100_644)),
                    Ok(meta(FileKind::Directory, 0o040_755)),
                    Ok(meta(FileKind::CharDevice, 0o020_666)),
                    Ok(meta(FileKind::BlockDevice, 0o060_660)),
                    Ok(meta(FileKind::Fifo, 0o010_600)),
                    Ok(meta(FileKind::Socket, 0o140_777)),
                    Ok(meta(FileKind::Symlink, 0o120_777)),
                ]),
            ),
        ),
        (
            "reply-open-many-empty",
            "The answer to an empty batch.",
            reply(8, ReplyBody::OpenMany(vec![])),
        ),
        (
            "reply-refused",
            "The request as a whole was refused: E2BIG for a batch over the broker's max_batch.",
            reply(
                9,
                ReplyBody::Refused(WireError::new(
                    libc::E2BIG,
                    "batch of 200 paths exceeds this broker's limit of 128",
                )),
            ),
        ),
        (
            "request-stat",
            "The metadata of one path, without opening it (answered by a Stat reply, no descriptor).",
            Msg::Request(Request {
                id: 12,
                op: Op::Stat(StatSpec {
                    path: b"/dev/null".to_vec(),
                }),
            }),
        ),
        (
            "request-connect",
            "Ask for a new connection with this one's identity: the id and the tag, nothing else. \
             Id 0 as the Rust client sends it before the hello on an inherited connection.",
            Msg::Request(Request {
                id: 0,
                op: Op::Connect,
            }),
        ),
        (
            "reply-stat-ok",
            "A granted stat: FileMeta and the rest of struct stat; no descriptor.",
            reply(12, ReplyBody::Stat(Ok(stat_meta()))),
        ),
        (
            "reply-stat-denied",
            "A refused stat: the same EACCES and reason an open outside the policy gets.",
            reply(13, ReplyBody::Stat(Err(denied()))),
        ),
        (
            "reply-connected",
            "The new connection: the tag alone; exactly one descriptor travels with it.",
            reply(0, ReplyBody::Connected),
        ),
        (
            "reply-connect-refused",
            "A connect over a connection limit: refused as a whole with EAGAIN, no descriptor.",
            reply(
                14,
                ReplyBody::Refused(WireError::new(
                    libc::EAGAIN,
                    "uid 65534 is at its limit of 1024 connections",
                )),
            ),
        ),
        (
            "request-list",
            "The entries of one directory from entry 512 on (answered by a List reply, no descriptor).",
            Msg::Request(Request {
                id: 15,
                op: Op::List(ListSpec {
                    path: b"/srv/in".to_vec(),
                    start: 0x0102_0304_0506_0708,
                }),
            }),
        ),
        (
            "reply-list-ok",
            "A page of a listing: each entry's name and type, and where the next page starts.",
            reply(
                15,
                ReplyBody::List(Ok(Listing {
                    entries: vec![
                        ListEntry {
                            name: b"a.txt".to_vec(),
                            kind: FileKind::Regular,
                        },
                        ListEntry {
                            name: b"sub".to_vec(),
                            kind: FileKind::Directory,
                        },
                    ],
                    next: 514,
                })),
            ),
        ),
        (
            "reply-list-last",
            "The last page of a listing: no entries left, no next page.",
            reply(
                16,
                ReplyBody::List(Ok(Listing {
                    entries: Vec::new(),
                    next: 0,
                })),
            ),
        ),
        (
            "reply-list-denied",
            "A refused listing: the same EACCES and reason an open outside the policy gets.",
            reply(17, ReplyBody::List(Err(denied()))),
        ),
        (
            "request-link",
            "The metadata of one path without following its last component, and a link's \
             target (answered by a Link reply, no descriptor).",
            Msg::Request(Request {
                id: 18,
                op: Op::Link(StatSpec {
                    path: b"/srv/in/l".to_vec(),
                }),
            }),
        ),
        (
            "reply-link-ok",
            "A described symbolic link: its own StatMeta, then its target; no descriptor.",
            reply(
                18,
                ReplyBody::Link(Ok(Box::new(LinkMeta {
                    meta: stat_meta(),
                    target: b"a.txt".to_vec(),
                }))),
            ),
        ),
        (
            "reply-link-denied",
            "A refused link description: the same EACCES and reason an open outside the policy gets.",
            reply(19, ReplyBody::Link(Err(denied()))),
        ),
        (
            "request-status",
            "The operator asks for the broker's state, before any hello: the id and the tag.",
            Msg::Request(Request {
                id: 1,
                op: Op::Status,
            }),
        ),
        (
            "reply-status-ok",
            "The broker's state as one JSON text (fdbroker status --json); no descriptor.",
            reply(1, ReplyBody::Status(Ok("{\"pid\":42}".to_owned()))),
        ),
        (
            "reply-status-refused",
            "Status asked by a peer that is neither root nor the broker's user: EACCES.",
            reply(
                1,
                ReplyBody::Status(Err(WireError::new(
                    libc::EACCES,
                    "only root or the broker's own user may ask for its status",
                ))),
            ),
        ),
    ]
}

/// Frames that must be refused, each with the reason (a `ProtocolError` variant name).
fn invalid() -> Vec<(&'static str, &'static str, Kind, Vec<u8>)> {
    let base = |m: Msg| m.encode();
    let hello = base(Msg::Hello(Hello {
        version: PROTOCOL_VERSION,
        agent: "x".into(),
    }));
    let req = base(open(1, b"/a", Access::Read, 0));
    let set_len = |mut f: Vec<u8>| {
        let len = (f.len() - HEADER_LEN) as u32;
        f[8..12].copy_from_slice(&len.to_le_bytes());
        f
    };
    let with = |f: &[u8], at: usize, bytes: &[u8]| {
        let mut f = f.to_vec();
        f[at..at + bytes.len()].copy_from_slice(bytes);
        f
    };
    let body = HEADER_LEN;
    // Request layout: id u64 at body, op tag u32 at body+8, then for Open the path
    // length u64 at body+12, path bytes, access tag u32, flags u32.
    let access_at = body + 8 + 4 + 8 + 2;
    let many_len_at = body + 8 + 4;
    let empty_many = base(Msg::Request(Request {
        id: 1,
        op: Op::OpenMany {
            paths: vec![],
            access: Access::Read,
            flags: 0,
        },
    }));
    // 129 empty paths: each is a zero u64 length, so the frame is small and well
    // formed except for the count.
    let mut over_batch = empty_many[..many_len_at].to_vec();
    over_batch.extend_from_slice(&((MAX_BATCH as u64) + 1).to_le_bytes());
    over_batch.extend(std::iter::repeat_n(0u8, 8 * (MAX_BATCH + 1)));
    over_batch.extend_from_slice(&[0; 8]);
    let over_batch = set_len(over_batch);
    let bad_utf8 = {
        // Agent "x" -> 0xff.
        let at = hello.len() - 1;
        with(&hello, at, &[0xff])
    };
    // Reply layout: id u64 at body, body tag u32 at body+8.
    let connected = base(reply(1, ReplyBody::Connected));
    let connect = base(Msg::Request(Request {
        id: 1,
        op: Op::Connect,
    }));
    let past_end = {
        // Path length 0x100 with 2 bytes present.
        with(&req, body + 12, &0x100u64.to_le_bytes())
    };
    vec![
        (
            "short",
            "Short",
            Kind::Hello,
            hello[..HEADER_LEN - 1].to_vec(),
        ),
        (
            "bad-magic",
            "BadMagic",
            Kind::Hello,
            with(&hello, 0, b"FDBX"),
        ),
        (
            "version-2",
            "Version",
            Kind::Hello,
            with(&hello, 4, &2u16.to_le_bytes()),
        ),
        (
            "unknown-kind",
            "UnknownKind",
            Kind::Hello,
            with(&hello, 6, &0xffffu16.to_le_bytes()),
        ),
        (
            "wrong-kind",
            "UnexpectedKind",
            Kind::Request,
            with(&req, 6, &(Kind::Reply as u16).to_le_bytes()),
        ),
        (
            "length-longer-than-body",
            "LengthMismatch",
            Kind::Request,
            with(
                &req,
                8,
                &((req.len() - HEADER_LEN + 1) as u32).to_le_bytes(),
            ),
        ),
        (
            "length-shorter-than-body",
            "LengthMismatch",
            Kind::Request,
            with(
                &req,
                8,
                &((req.len() - HEADER_LEN - 1) as u32).to_le_bytes(),
            ),
        ),
        (
            "trailing-bytes",
            "TrailingBytes",
            Kind::Request,
            set_len([req.as_slice(), &[0]].concat()),
        ),
        (
            "empty-body",
            "Decode",
            Kind::Request,
            set_len(req[..HEADER_LEN].to_vec()),
        ),
        (
            "unknown-op",
            "Decode",
            Kind::Request,
            with(&req, body + 8, &u32::MAX.to_le_bytes()),
        ),
        (
            "unknown-access",
            "Decode",
            Kind::Request,
            with(&req, access_at, &u32::MAX.to_le_bytes()),
        ),
        ("string-past-end", "Decode", Kind::Request, past_end),
        ("batch-over-limit", "Decode", Kind::Request, over_batch),
        (
            "batch-length-huge",
            "Decode",
            Kind::Request,
            with(&empty_many, many_len_at, &u64::MAX.to_le_bytes()),
        ),
        ("agent-not-utf8", "Decode", Kind::Hello, bad_utf8),
        (
            "unknown-reply-body",
            "Decode",
            Kind::Reply,
            with(&connected, body + 8, &5u32.to_le_bytes()),
        ),
        (
            "connect-with-content",
            "TrailingBytes",
            Kind::Request,
            set_len([connect.as_slice(), &[0, 0, 0, 0]].concat()),
        ),
    ]
}

fn variant_name(e: &ProtocolError) -> &'static str {
    match e {
        ProtocolError::Short { .. } => "Short",
        ProtocolError::BadMagic => "BadMagic",
        ProtocolError::Version { .. } => "Version",
        ProtocolError::UnknownKind(_) => "UnknownKind",
        ProtocolError::UnexpectedKind { .. } => "UnexpectedKind",
        ProtocolError::LengthMismatch { .. } => "LengthMismatch",
        ProtocolError::TooLarge { .. } => "TooLarge",
        ProtocolError::Decode(_) => "Decode",
        ProtocolError::TrailingBytes { .. } => "TrailingBytes",
        _ => "other",
    }
}

fn refusal(kind: Kind, bytes: &[u8]) -> Option<&'static str> {
    let r = match kind {
        Kind::Hello => frame::decode::<Hello>(kind, bytes).err(),
        Kind::Welcome => frame::decode::<Welcome>(kind, bytes).err(),
        Kind::Request => frame::decode::<Request>(kind, bytes).err(),
        Kind::Reply => frame::decode::<Reply>(kind, bytes).err(),
    };
    r.as_ref().map(variant_name)
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Hello => "Hello",
        Kind::Welcome => "Welcome",
        Kind::Request => "Request",
        Kind::Reply => "Reply",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn generate() -> Value {
    let valid: Vec<Value> = valid()
        .iter()
        .map(|(name, about, m)| {
            json!({
                "name": name,
                "about": about,
                "kind": kind_name(m.kind()),
                "value": m.json(),
                "frame": hex(&m.encode()),
            })
        })
        .collect();
    let invalid: Vec<Value> = invalid()
        .iter()
        .map(|(name, error, kind, bytes)| {
            json!({
                "name": name,
                "kind": kind_name(*kind),
                "error": error,
                "frame": hex(bytes),
            })
        })
        .collect();
    json!({
        "about": "Golden vectors of the fdbroker wire protocol (shared/PROTOCOL.md). \
                  Generated by `FDBROKER_WRITE_VECTORS=1 cargo test -p fdbroker-shared --test golden`; \
                  checked by that test and by the Python package's tests. `value` is the message \
                  in serde's externally tagged JSON form; `frame` the whole frame in hex. \
                  Each `invalid` frame must be refused when received as `kind`.",
        "protocol_version": PROTOCOL_VERSION,
        "max_message": MAX_MESSAGE,
        "max_batch": MAX_BATCH,
        "valid": valid,
        "invalid": invalid,
    })
}

fn vectors_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/vectors.json")
}

#[test]
fn vectors_file_is_current() {
    let text = serde_json::to_string_pretty(&generate()).unwrap() + "\n";
    let path = vectors_path();
    if std::env::var_os("FDBROKER_WRITE_VECTORS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "{} is missing or differs from what this build encodes. If the protocol changed \
         on purpose, regenerate it with FDBROKER_WRITE_VECTORS=1 cargo test -p \
         fdbroker-shared --test golden and document the change in shared/PROTOCOL.md",
        path.display()
    );
}

/// Decoding each committed frame gives the message it was made from, and every
/// invalid frame is refused for the reason the file gives.
#[test]
fn committed_frames_decode_and_invalid_ones_are_refused() {
    let committed: Value =
        serde_json::from_str(&std::fs::read_to_string(vectors_path()).unwrap()).unwrap();
    let by_name = |list: &str, name: &str| -> Vec<u8> {
        let v = committed[list]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("vector {name} missing from the file"));
        unhex(v["frame"].as_str().unwrap())
    };
    for (name, _, m) in valid() {
        let bytes = by_name("valid", name);
        assert!(
            m.decodes_from(&bytes),
            "{name} does not decode to its value"
        );
    }
    for (name, error, kind, _) in invalid() {
        let bytes = by_name("invalid", name);
        assert_eq!(refusal(kind, &bytes), Some(error), "{name}");
    }
}

/// Every message kind, every `Op`, `ReplyBody`, `Welcome`, `Access` and `FileKind`
/// variant, and both outcomes appear in at least one vector of the message that holds
/// them: an enum that grows a variant without a vector fails here.
#[test]
fn vectors_cover_every_variant() {
    let generated = generate();
    let of_kind = |kind: &str| -> String {
        let list: Vec<&Value> = generated["valid"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["kind"] == kind)
            .collect();
        serde_json::to_string(&list).unwrap()
    };
    let (welcomes, requests, replies) = (of_kind("Welcome"), of_kind("Request"), of_kind("Reply"));
    assert!(!of_kind("Hello").is_empty());
    // Each needle is a variant as serde's JSON names it: `{"Name":` for one with
    // content, `"Name"` for a unit variant.
    for (list, needles) in [
        (&welcomes, &["{\"Accepted\":", "{\"Refused\":"][..]),
        (
            &requests,
            &[
                "{\"Open\":",
                "{\"OpenMany\":",
                "{\"Stat\":",
                "\"op\":\"Connect\"",
                "{\"List\":",
                "{\"Link\":",
                "\"op\":\"Status\"",
            ][..],
        ),
        (
            &replies,
            &[
                "{\"Open\":{\"Ok\":",
                "{\"Open\":{\"Err\":",
                "{\"OpenMany\":",
                "{\"Refused\":",
                "{\"Stat\":{\"Ok\":",
                "{\"Stat\":{\"Err\":",
                "\"body\":\"Connected\"",
                "{\"List\":{\"Ok\":",
                "{\"List\":{\"Err\":",
                "{\"Link\":{\"Ok\":",
                "{\"Link\":{\"Err\":",
                "{\"Status\":{\"Ok\":",
                "{\"Status\":{\"Err\":",
            ][..],
        ),
    ] {
        for needle in needles {
            assert!(list.contains(needle), "no vector has {needle}");
        }
    }
    for a in Access::ALL {
        let tag = serde_json::to_string(&a).unwrap();
        assert!(requests.contains(&tag), "no vector has access {tag}");
    }
    for k in [
        FileKind::Regular,
        FileKind::Directory,
        FileKind::CharDevice,
        FileKind::BlockDevice,
        FileKind::Fifo,
        FileKind::Socket,
        FileKind::Symlink,
    ] {
        let tag = serde_json::to_string(&k).unwrap();
        assert!(replies.contains(&tag), "no vector has file kind {tag}");
    }
    // Exhaustive matches: a new variant stops this compiling until it is listed above
    // and given a vector.
    let _ = |op: &Op| match op {
        Op::Open(_)
        | Op::OpenMany { .. }
        | Op::Stat(_)
        | Op::Connect
        | Op::List(_)
        | Op::Link(_)
        | Op::Status => (),
    };
    let _ = |b: &ReplyBody| match b {
        ReplyBody::Open(_)
        | ReplyBody::OpenMany(_)
        | ReplyBody::Refused(_)
        | ReplyBody::Stat(_)
        | ReplyBody::Connected
        | ReplyBody::List(_)
        | ReplyBody::Link(_)
        | ReplyBody::Status(_) => (),
    };
    let _ = |w: &Welcome| match w {
        Welcome::Accepted(_) | Welcome::Refused(_) => (),
    };
}

/// The worked examples in PROTOCOL.md are the vectors' bytes: a block after
/// `<!-- vector: NAME -->` lists the frame's bytes in hex before a `|` on each line.
#[test]
fn protocol_md_examples_match_the_vectors() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("PROTOCOL.md")).unwrap();
    let vectors = valid();
    let mut checked = 0;
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line
            .trim()
            .strip_prefix("<!-- vector: ")
            .and_then(|r| r.strip_suffix(" -->"))
        else {
            continue;
        };
        let (_, _, m) = vectors
            .iter()
            .find(|(n, _, _)| *n == name)
            .unwrap_or_else(|| panic!("PROTOCOL.md shows vector {name}, which does not exist"));
        assert!(lines.next().unwrap().starts_with("```"), "{name}: no block");
        let mut shown = Vec::new();
        for l in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            let bytes = l.split('|').next().unwrap();
            shown.extend(bytes.split_whitespace().map(|b| {
                u8::from_str_radix(b, 16)
                    .unwrap_or_else(|_| panic!("{name}: {b:?} is not a hex byte"))
            }));
        }
        assert_eq!(hex(&shown), hex(&m.encode()), "PROTOCOL.md's {name}");
        checked += 1;
    }
    assert!(checked >= 4, "PROTOCOL.md shows only {checked} vectors");
}
