//! Framing: a fixed 12-byte header in front of a bincode body, one frame per
//! `SOCK_SEQPACKET` message.
//!
//! ```text
//! 0      4        6     8            12
//! | FDBK | version | kind | body length | bincode body ... |
//! ```
//! The header carries the protocol version so a mismatch is recognised before any body
//! is decoded, and the body length so a message that lies about itself is refused
//! rather than half-decoded. Decoding runs with a bincode byte limit equal to the frame
//! cap, so no length inside the body can make the decoder allocate more than a message
//! could hold.

use crate::error::ProtocolError;
use bincode::config::{Configuration, Fixint, Limit, LittleEndian};
use serde::{Serialize, de::DeserializeOwned};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// Bytes before the body.
pub const HEADER_LEN: usize = 12;
/// Largest frame either side sends or accepts, header included.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Most descriptors one reply may carry (the kernel's own cap is 253).
pub const MAX_FDS_PER_REPLY: usize = 128;
/// Longest request path in bytes (`PATH_MAX` less its terminating NUL).
pub const MAX_PATH: usize = libc::PATH_MAX as usize - 1;

const MAGIC: [u8; 4] = *b"FDBK";

type Config = Configuration<LittleEndian, Fixint, Limit<MAX_MESSAGE>>;

fn config() -> Config {
    // Fixed-width integers keep a frame's size predictable for the capacity checks
    // clients make before sending a batch.
    bincode::config::standard()
        .with_fixed_int_encoding()
        .with_limit::<MAX_MESSAGE>()
}

/// What a frame holds; a peer sending the wrong kind at the wrong time is a protocol
/// violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Kind {
    Hello = 1,
    Welcome = 2,
    Request = 3,
    Reply = 4,
}

impl Kind {
    fn from_u16(v: u16) -> Option<Kind> {
        Some(match v {
            1 => Kind::Hello,
            2 => Kind::Welcome,
            3 => Kind::Request,
            4 => Kind::Reply,
            _ => return None,
        })
    }
}

/// A checked frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u16,
    pub kind: Kind,
    pub body_len: usize,
}

/// Encode `msg` as one frame into `out` (cleared first, capacity reused).
pub fn encode<T: Serialize>(kind: Kind, msg: &T, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
    out.clear();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    out.extend_from_slice(&(kind as u16).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    bincode::serde::encode_into_std_write(msg, out, config())
        .map_err(|e| ProtocolError::Encode(e.to_string()))?;
    if out.len() > MAX_MESSAGE {
        return Err(ProtocolError::TooLarge { size: out.len() });
    }
    let body_len = (out.len() - HEADER_LEN) as u32;
    out[8..12].copy_from_slice(&body_len.to_le_bytes());
    Ok(())
}

/// Check a frame's header against the bytes that actually arrived.
///
/// A version mismatch is reported before anything else is trusted, so both sides can
/// say which versions met.
pub fn header(bytes: &[u8]) -> Result<Header, ProtocolError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(ProtocolError::TooLarge { size: bytes.len() });
    }
    let Some((head, body)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(ProtocolError::Short { size: bytes.len() });
    };
    if head[0..4] != MAGIC {
        return Err(ProtocolError::BadMagic);
    }
    let version = u16::from_le_bytes([head[4], head[5]]);
    if version != PROTOCOL_VERSION {
        return Err(ProtocolError::Version { peer: version });
    }
    let raw_kind = u16::from_le_bytes([head[6], head[7]]);
    let kind = Kind::from_u16(raw_kind).ok_or(ProtocolError::UnknownKind(raw_kind))?;
    let declared = u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize;
    if declared != body.len() {
        return Err(ProtocolError::LengthMismatch {
            declared,
            actual: body.len(),
        });
    }
    Ok(Header {
        version,
        kind,
        body_len: declared,
    })
}

/// Decode one frame of the expected kind; the body must be consumed exactly.
pub fn decode<T: DeserializeOwned>(expected: Kind, bytes: &[u8]) -> Result<T, ProtocolError> {
    let header = header(bytes)?;
    if header.kind != expected {
        return Err(ProtocolError::UnexpectedKind {
            expected,
            got: header.kind,
        });
    }
    let body = &bytes[HEADER_LEN..];
    let (msg, used) = bincode::serde::decode_from_slice(body, config())
        .map_err(|e| ProtocolError::Decode(e.to_string()))?;
    if used != body.len() {
        return Err(ProtocolError::TrailingBytes {
            extra: body.len() - used,
        });
    }
    Ok(msg)
}

/// The encoded size of one path inside an `OpenMany` request: a u64 length and the
/// bytes. Clients use it to split batches so no request exceeds [`MAX_MESSAGE`].
pub fn path_cost(path: &[u8]) -> usize {
    8 + path.len()
}

/// Upper bound of the fixed part of an `OpenMany` request frame (header, id, variant
/// tags, vector length, access, flags), for the same batch splitting.
pub const OPEN_MANY_OVERHEAD: usize = HEADER_LEN + 64;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::wire::{Access, Op, OpenSpec, Request};

    fn req() -> Request {
        Request {
            id: 7,
            op: Op::Open(OpenSpec {
                path: b"/etc/hosts".to_vec(),
                access: Access::Read,
                flags: 0,
            }),
        }
    }

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        encode(Kind::Request, &req(), &mut buf).unwrap();
        let back: Request = decode(Kind::Request, &buf).unwrap();
        assert_eq!(back, req());
    }

    #[test]
    fn refuses_lies_and_mismatches() {
        let mut buf = Vec::new();
        encode(Kind::Request, &req(), &mut buf).unwrap();
        assert!(matches!(
            decode::<Request>(Kind::Reply, &buf),
            Err(ProtocolError::UnexpectedKind { .. })
        ));
        let mut short = buf.clone();
        short.pop();
        assert!(matches!(
            decode::<Request>(Kind::Request, &short),
            Err(ProtocolError::LengthMismatch { .. })
        ));
        let mut v2 = buf.clone();
        v2[4] = 2;
        assert!(matches!(
            decode::<Request>(Kind::Request, &v2),
            Err(ProtocolError::Version { peer: 2 })
        ));
        let mut magic = buf.clone();
        magic[0] = b'X';
        assert!(matches!(
            decode::<Request>(Kind::Request, &magic),
            Err(ProtocolError::BadMagic)
        ));
        assert!(matches!(
            decode::<Request>(Kind::Request, &buf[..5]),
            Err(ProtocolError::Short { size: 5 })
        ));
        let mut trailing = buf.clone();
        trailing.push(0);
        let len = (trailing.len() - HEADER_LEN) as u32;
        trailing[8..12].copy_from_slice(&len.to_le_bytes());
        assert!(matches!(
            decode::<Request>(Kind::Request, &trailing),
            Err(ProtocolError::TrailingBytes { extra: 1 })
        ));
    }

    #[test]
    fn a_lying_inner_length_does_not_allocate() {
        // An OpenMany whose vector claims u64::MAX elements must fail, not allocate.
        let mut buf = Vec::new();
        encode(
            Kind::Request,
            &Request {
                id: 1,
                op: Op::OpenMany {
                    paths: vec![],
                    access: Access::Read,
                    flags: 0,
                },
            },
            &mut buf,
        )
        .unwrap();
        // id (8) + variant tag (4) then the vector length.
        let at = HEADER_LEN + 8 + 4;
        buf[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            decode::<Request>(Kind::Request, &buf),
            Err(ProtocolError::Decode(_))
        ));
    }

    #[test]
    fn oversized_is_refused_both_ways() {
        let big = Request {
            id: 1,
            op: Op::Open(OpenSpec {
                path: vec![b'a'; MAX_MESSAGE],
                access: Access::Read,
                flags: 0,
            }),
        };
        let mut buf = Vec::new();
        assert!(matches!(
            encode(Kind::Request, &big, &mut buf),
            Err(ProtocolError::Encode(_) | ProtocolError::TooLarge { .. })
        ));
        assert!(matches!(
            header(&vec![0; MAX_MESSAGE + 1]),
            Err(ProtocolError::TooLarge { .. })
        ));
    }

    #[test]
    fn batch_cost_bounds_the_frame() {
        let paths: Vec<Vec<u8>> = (0..100)
            .map(|i| format!("/d/{i:04}").into_bytes())
            .collect();
        let predicted = OPEN_MANY_OVERHEAD + paths.iter().map(|p| path_cost(p)).sum::<usize>();
        let mut buf = Vec::new();
        encode(
            Kind::Request,
            &Request {
                id: u64::MAX,
                op: Op::OpenMany {
                    paths,
                    access: Access::Read,
                    flags: u32::MAX,
                },
            },
            &mut buf,
        )
        .unwrap();
        assert!(buf.len() <= predicted, "{} > {}", buf.len(), predicted);
    }
}
