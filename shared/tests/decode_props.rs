//! Property tests on the frame decoder, both sides: it never panics, never holds more
//! heap than the frame cap allows, and what decodes re-encodes to the same bytes.
//! The same checks run under cargo-fuzz (`fuzz/`); these run in CI.
#![allow(clippy::unwrap_used)]

#[path = "support/decode_checks.rs"]
mod checks;

use checks::{ALLOC_BOUND, CountingAlloc, check_broker_side, check_worker_side, peak_during};
use fdbroker_shared::ProtocolError;
use fdbroker_shared::frame::{self, HEADER_LEN, Kind, MAX_MESSAGE};
use fdbroker_shared::wire::{
    Accepted, Access, FileKind, FileMeta, Hello, MAX_BATCH, Op, OpenSpec, Outcome, Reply,
    ReplyBody, Request, StatMeta, StatSpec, Welcome, WireError,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn access() -> impl Strategy<Value = Access> {
    prop::sample::select(Access::ALL.to_vec())
}

fn path() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        "(/[a-z.]{1,8}){1,5}".prop_map(String::into_bytes),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (path(), access(), any::<u32>()).prop_map(|(path, access, flags)| Op::Open(OpenSpec {
            path,
            access,
            flags
        })),
        (
            prop::collection::vec(path(), 0..=MAX_BATCH),
            access(),
            any::<u32>()
        )
            .prop_map(|(paths, access, flags)| Op::OpenMany {
                paths,
                access,
                flags
            }),
        path().prop_map(|path| Op::Stat(StatSpec { path })),
        Just(Op::Connect),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    (any::<u64>(), op()).prop_map(|(id, op)| Request { id, op })
}

fn wire_error() -> impl Strategy<Value = WireError> {
    (any::<i32>(), ".{0,40}").prop_map(|(errno, message)| WireError { errno, message })
}

fn file_kind() -> impl Strategy<Value = FileKind> {
    prop::sample::select(vec![
        FileKind::Regular,
        FileKind::Directory,
        FileKind::CharDevice,
        FileKind::BlockDevice,
        FileKind::Fifo,
        FileKind::Socket,
        FileKind::Symlink,
    ])
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        (
            file_kind(),
            any::<[u64; 4]>(),
            any::<u32>(),
            any::<i64>(),
            any::<u32>()
        )
            .prop_map(
                |(kind, [size, dev, ino, nlink], mode, mtime_sec, mtime_nsec)| Ok(FileMeta {
                    kind,
                    size,
                    dev,
                    ino,
                    mode,
                    nlink,
                    mtime_sec,
                    mtime_nsec,
                })
            ),
        wire_error().prop_map(Err),
    ]
}

fn reply() -> impl Strategy<Value = Reply> {
    let body = prop_oneof![
        outcome().prop_map(ReplyBody::Open),
        prop::collection::vec(outcome(), 0..=MAX_BATCH).prop_map(ReplyBody::OpenMany),
        wire_error().prop_map(ReplyBody::Refused),
        prop_oneof![(outcome(), any::<[u32; 2]>(), any::<[u64; 3]>()).prop_map(
            |(o, [uid, gid], [rdev, blksize, blocks])| match o {
                Ok(file) => Ok(StatMeta {
                    file,
                    uid,
                    gid,
                    rdev,
                    blksize,
                    blocks,
                    atime_sec: -1,
                    atime_nsec: 7,
                    ctime_sec: i64::MAX,
                    ctime_nsec: 999_999_999,
                }),
                Err(e) => Err(e),
            }
        ),]
        .prop_map(ReplyBody::Stat),
        Just(ReplyBody::Connected),
    ];
    (any::<u64>(), body).prop_map(|(id, body)| Reply { id, body })
}

fn hello() -> impl Strategy<Value = Hello> {
    (any::<u16>(), ".{0,40}").prop_map(|(version, agent)| Hello { version, agent })
}

fn welcome() -> impl Strategy<Value = Welcome> {
    prop_oneof![
        (".{0,20}", any::<u32>())
            .prop_map(|(client, max_batch)| Welcome::Accepted(Accepted { client, max_batch })),
        wire_error().prop_map(Welcome::Refused),
    ]
}

/// A valid frame of any kind, as bytes.
fn valid_frame() -> impl Strategy<Value = Vec<u8>> {
    fn enc<T: serde::Serialize>(kind: Kind, m: &T) -> Vec<u8> {
        let mut buf = Vec::new();
        frame::encode(kind, m, &mut buf).unwrap();
        buf
    }
    prop_oneof![
        hello().prop_map(|m| enc(Kind::Hello, &m)),
        welcome().prop_map(|m| enc(Kind::Welcome, &m)),
        request().prop_map(|m| enc(Kind::Request, &m)),
        reply().prop_map(|m| enc(Kind::Reply, &m)),
    ]
}

/// One way a hostile peer bends a valid frame.
#[derive(Clone, Debug)]
enum Mutation {
    /// Overwrite one byte.
    Set(prop::sample::Index, u8),
    /// Overwrite eight bytes with a little-endian u64 (length prefixes, ids).
    Word(prop::sample::Index, u64),
    /// Cut the frame short.
    Truncate(prop::sample::Index),
    /// Append bytes, then fix the header so only the body is wrong.
    Append(Vec<u8>),
    /// Rewrite the header's body length.
    Declare(u32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (
            any::<prop::sample::Index>(),
            prop_oneof![
                Just(u64::MAX),
                Just(u64::from(u32::MAX)),
                Just(MAX_MESSAGE as u64),
                0..300u64
            ]
        )
            .prop_map(|(i, w)| Mutation::Word(i, w)),
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        prop::collection::vec(any::<u8>(), 1..16).prop_map(Mutation::Append),
        any::<u32>().prop_map(Mutation::Declare),
    ]
}

fn apply(frame: &mut Vec<u8>, m: &Mutation) {
    match m {
        Mutation::Set(i, b) => {
            if !frame.is_empty() {
                let at = i.index(frame.len());
                frame[at] = *b;
            }
        }
        Mutation::Word(i, w) => {
            if frame.len() >= 8 {
                let at = i.index(frame.len() - 7);
                frame[at..at + 8].copy_from_slice(&w.to_le_bytes());
            }
        }
        Mutation::Truncate(i) => {
            if !frame.is_empty() {
                frame.truncate(i.index(frame.len()));
            }
        }
        Mutation::Append(extra) => {
            frame.extend_from_slice(extra);
            if frame.len() >= HEADER_LEN {
                let len = (frame.len() - HEADER_LEN) as u32;
                frame[8..12].copy_from_slice(&len.to_le_bytes());
            }
        }
        Mutation::Declare(n) => {
            if frame.len() >= HEADER_LEN {
                frame[8..12].copy_from_slice(&n.to_le_bytes());
            }
        }
    }
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/proptest-regressions/decode_props.txt",
        ))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn arbitrary_bytes_decode_safely(data in prop::collection::vec(any::<u8>(), 0..256)) {
        check_broker_side(&data);
        check_worker_side(&data);
    }

    #[test]
    fn arbitrary_bodies_behind_a_valid_header(
        kind in 1u16..=4,
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut data = b"FDBK".to_vec();
        data.extend_from_slice(&frame::PROTOCOL_VERSION.to_le_bytes());
        data.extend_from_slice(&kind.to_le_bytes());
        data.extend_from_slice(&(body.len() as u32).to_le_bytes());
        data.extend_from_slice(&body);
        check_broker_side(&data);
        check_worker_side(&data);
    }

    #[test]
    fn mutated_frames_decode_safely(
        mut data in valid_frame(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        for m in &mutations {
            apply(&mut data, m);
        }
        check_broker_side(&data);
        check_worker_side(&data);
    }

    #[test]
    fn valid_frames_pass_every_check(data in valid_frame()) {
        check_broker_side(&data);
        check_worker_side(&data);
    }
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn requests_round_trip(req in request()) {
        let mut buf = Vec::new();
        frame::encode(Kind::Request, &req, &mut buf).unwrap();
        prop_assert_eq!(frame::decode::<Request>(Kind::Request, &buf).unwrap(), req);
    }

    #[test]
    fn replies_round_trip(reply in reply()) {
        let mut buf = Vec::new();
        frame::encode(Kind::Reply, &reply, &mut buf).unwrap();
        prop_assert_eq!(frame::decode::<Reply>(Kind::Reply, &buf).unwrap(), reply);
    }

    #[test]
    fn greetings_round_trip(h in hello(), w in welcome()) {
        let mut buf = Vec::new();
        frame::encode(Kind::Hello, &h, &mut buf).unwrap();
        prop_assert_eq!(frame::decode::<Hello>(Kind::Hello, &buf).unwrap(), h);
        frame::encode(Kind::Welcome, &w, &mut buf).unwrap();
        prop_assert_eq!(frame::decode::<Welcome>(Kind::Welcome, &buf).unwrap(), w);
    }
}

fn open_many(paths: Vec<Vec<u8>>) -> Vec<u8> {
    let mut buf = Vec::new();
    let req = Request {
        id: 9,
        op: Op::OpenMany {
            paths,
            access: Access::Read,
            flags: 0,
        },
    };
    frame::encode(Kind::Request, &req, &mut buf).unwrap();
    buf
}

/// The wire format is fixed: a path is a u64 length then its bytes, whatever serde
/// machinery produces it. Old and new peers must agree byte for byte.
#[test]
fn request_encoding_is_pinned() {
    let mut buf = Vec::new();
    let req = Request {
        id: 0x0102,
        op: Op::Open(OpenSpec {
            path: b"/a\xff".to_vec(),
            access: Access::ReadWrite,
            flags: 0x200,
        }),
    };
    frame::encode(Kind::Request, &req, &mut buf).unwrap();
    let mut want = b"FDBK\x01\x00\x03\x00".to_vec();
    let body: &[u8] = &[
        0x02, 0x01, 0, 0, 0, 0, 0, 0, // id
        0, 0, 0, 0, // Op::Open
        3, 0, 0, 0, 0, 0, 0, 0, b'/', b'a', 0xff, // path
        2, 0, 0, 0, // Access::ReadWrite
        0, 0x02, 0, 0, // flags
    ];
    want.extend_from_slice(&(body.len() as u32).to_le_bytes());
    want.extend_from_slice(body);
    assert_eq!(buf, want);
    let many = open_many(vec![b"/x".to_vec(), b"/yz".to_vec()]);
    let body = &many[HEADER_LEN..];
    assert_eq!(&body[8..12], &[1, 0, 0, 0], "Op::OpenMany");
    assert_eq!(&body[12..20], &2u64.to_le_bytes(), "two paths");
    assert_eq!(&body[20..30], b"\x02\0\0\0\0\0\0\0/x");
    assert_eq!(&body[30..41], b"\x03\0\0\0\0\0\0\0/yz");
    // The operations added later come after, so the old ones keep their tags.
    let enc = |op| {
        let mut buf = Vec::new();
        frame::encode(Kind::Request, &Request { id: 1, op }, &mut buf).unwrap();
        buf[HEADER_LEN..].to_vec()
    };
    let stat = enc(Op::Stat(StatSpec {
        path: b"/s".to_vec(),
    }));
    assert_eq!(&stat[8..], b"\x02\0\0\0\x02\0\0\0\0\0\0\0/s", "Op::Stat");
    assert_eq!(&enc(Op::Connect)[8..], &[3, 0, 0, 0], "Op::Connect");
    let mut buf = Vec::new();
    frame::encode(
        Kind::Reply,
        &Reply {
            id: 1,
            body: ReplyBody::Connected,
        },
        &mut buf,
    )
    .unwrap();
    assert_eq!(
        &buf[HEADER_LEN + 8..],
        &[4, 0, 0, 0],
        "ReplyBody::Connected"
    );
}

#[test]
fn batches_are_capped_at_decode() {
    let full = open_many(vec![b"/p".to_vec(); MAX_BATCH]);
    match frame::decode::<Request>(Kind::Request, &full).unwrap().op {
        Op::OpenMany { paths, .. } => assert_eq!(paths.len(), MAX_BATCH),
        op => panic!("{op:?}"),
    }
    let over = open_many(vec![b"/p".to_vec(); MAX_BATCH + 1]);
    let err = frame::decode::<Request>(Kind::Request, &over).unwrap_err();
    assert!(
        matches!(&err, ProtocolError::Decode(m) if m.contains("exceeds the protocol's limit")),
        "{err:?}"
    );
    let outcomes = vec![Err(WireError::new(2, "")); MAX_BATCH + 1];
    let mut buf = Vec::new();
    frame::encode(
        Kind::Reply,
        &Reply {
            id: 1,
            body: ReplyBody::OpenMany(outcomes),
        },
        &mut buf,
    )
    .unwrap();
    assert!(matches!(
        frame::decode::<Reply>(Kind::Reply, &buf),
        Err(ProtocolError::Decode(_))
    ));
}

/// The cases that used to cost a megabyte: a list or a path whose length prefix lies,
/// and a frame packed with thousands of empty paths or outcomes.
#[test]
fn lying_lengths_do_not_allocate() {
    let at = HEADER_LEN + 8 + 4;
    for claim in [u64::MAX, 1 << 40, MAX_MESSAGE as u64 + 1, 100_000] {
        let mut list = open_many(vec![]);
        list[at..at + 8].copy_from_slice(&claim.to_le_bytes());
        let mut one = Vec::new();
        frame::encode(
            Kind::Request,
            &Request {
                id: 1,
                op: Op::Open(OpenSpec {
                    path: vec![],
                    access: Access::Read,
                    flags: 0,
                }),
            },
            &mut one,
        )
        .unwrap();
        one[at..at + 8].copy_from_slice(&claim.to_le_bytes());
        for data in [&list, &one] {
            let (r, peak) = peak_during(|| frame::decode::<Request>(Kind::Request, data));
            assert!(r.is_err(), "claim {claim}");
            assert!(peak <= 4096, "claim {claim}: decoder held {peak} bytes");
        }
    }
    let mut packed = b"FDBK\x01\x00\x03\x00".to_vec();
    let mut body = vec![0u8; 8];
    body.extend_from_slice(&1u32.to_le_bytes());
    let n = (MAX_MESSAGE - HEADER_LEN - 40) / 8;
    body.extend_from_slice(&(n as u64).to_le_bytes());
    body.resize(body.len() + n * 8, 0);
    body.extend_from_slice(&[0; 8]);
    packed.extend_from_slice(&(body.len() as u32).to_le_bytes());
    packed.extend_from_slice(&body);
    assert!(packed.len() <= MAX_MESSAGE);
    let (r, peak) = peak_during(|| frame::decode::<Request>(Kind::Request, &packed));
    assert!(r.is_err());
    assert!(peak <= ALLOC_BOUND, "{peak}");
}

/// A path as long as the cap allows decodes, and the decoder holds about its size.
#[test]
fn a_frame_at_the_cap_decodes_within_the_bound() {
    let overhead = HEADER_LEN + 8 + 4 + 8 + 4 + 4;
    let req = Request {
        id: 1,
        op: Op::Open(OpenSpec {
            path: vec![b'a'; MAX_MESSAGE - overhead],
            access: Access::Read,
            flags: 0,
        }),
    };
    let mut buf = Vec::new();
    frame::encode(Kind::Request, &req, &mut buf).unwrap();
    assert_eq!(buf.len(), MAX_MESSAGE);
    let (r, peak) = peak_during(|| frame::decode::<Request>(Kind::Request, &buf));
    assert_eq!(r.unwrap(), req);
    assert!(peak <= ALLOC_BOUND, "{peak}");
    check_broker_side(&buf);
}
