//! Protocol violations, typed, convertible to `std::io::Error`.

use crate::frame::Kind;
use std::io;

/// Anything about a message that makes the connection untrustworthy. Either side
/// answers one of these by closing that connection (and only that one).
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("message of {size} bytes is shorter than the frame header")]
    Short { size: usize },
    #[error("message does not start with the fdbroker magic")]
    BadMagic,
    #[error(
        "protocol version mismatch: peer speaks version {peer}, this side speaks version {}",
        crate::frame::PROTOCOL_VERSION
    )]
    Version { peer: u16 },
    #[error("unknown message kind {0}")]
    UnknownKind(u16),
    #[error("expected a {expected:?} message, got {got:?}")]
    UnexpectedKind { expected: Kind, got: Kind },
    #[error("header declares a {declared}-byte body but {actual} bytes arrived")]
    LengthMismatch { declared: usize, actual: usize },
    #[error(
        "message of {size} bytes exceeds the {}-byte cap",
        crate::frame::MAX_MESSAGE
    )]
    TooLarge { size: usize },
    #[error("message was truncated by the kernel (larger than the receive buffer)")]
    Truncated,
    #[error(
        "ancillary data was truncated (more descriptors than allowed); every descriptor that arrived was closed"
    )]
    ControlTruncated,
    #[error("descriptors sent where none are accepted; they were discarded")]
    UnexpectedDescriptors,
    #[error(
        "reply carried {got} descriptors but its body accounts for {expected}; all were closed"
    )]
    DescriptorCount { expected: usize, got: usize },
    #[error("undecodable message body: {0}")]
    Decode(String),
    #[error("message body has {extra} trailing bytes")]
    TrailingBytes { extra: usize },
    #[error("cannot encode message: {0}")]
    Encode(String),
    #[error("reply for unknown request id {0}")]
    UnknownId(u64),
    #[error("peer closed the connection")]
    Closed,
}

impl ProtocolError {
    /// The `ErrorKind` a caller should see for this violation.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            ProtocolError::Version { .. } => io::ErrorKind::Unsupported,
            ProtocolError::Closed => io::ErrorKind::ConnectionAborted,
            ProtocolError::TooLarge { .. } | ProtocolError::Encode(_) => {
                io::ErrorKind::InvalidInput
            }
            _ => io::ErrorKind::InvalidData,
        }
    }
}

impl From<ProtocolError> for io::Error {
    fn from(e: ProtocolError) -> io::Error {
        io::Error::new(e.kind(), e)
    }
}

/// What a receive can fail with: the socket, or the peer breaking the protocol.
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

impl From<RecvError> for io::Error {
    fn from(e: RecvError) -> io::Error {
        match e {
            RecvError::Io(e) => e,
            RecvError::Protocol(p) => p.into(),
        }
    }
}
