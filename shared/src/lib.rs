//! The part of fdbroker both sides speak: message types ([`wire`]), framing
//! ([`frame`]), the socket and its descriptor passing ([`channel`]), and peer
//! credentials ([`peer`]).
//!
//! The data path of one request: the worker encodes a [`wire::Request`] into a frame
//! and sends it as one `SOCK_SEQPACKET` message; the broker receives it with no control
//! buffer, decodes it under the size cap, decides, opens, and answers with a
//! [`wire::Reply`] frame carrying the granted descriptors as `SCM_RIGHTS`.
//!
//! `unsafe` is denied crate-wide; the few system calls that need it are fenced in one
//! private module, `sys`, each behind a safe function whose invariant it checks.

#![deny(unsafe_code)]

pub mod channel;
pub mod error;
pub mod frame;
pub mod peer;
pub mod process;
#[allow(unsafe_code)]
mod sys;
pub mod wire;

pub use channel::Channel;
pub use error::{ProtocolError, RecvError};
