//! The worker side of fdbroker: a client that gets file descriptors from the broker
//! ([`Client`]), and the sandbox a worker locks itself into ([`sandbox`]).
//!
//! ```no_run
//! let broker = fdbroker_worker::Client::from_env()?;
//! let file = broker.open("/var/spool/quarantine/sample.bin")?;
//! # Ok::<(), std::io::Error>(())
//! ```

pub mod client;
pub mod error;
pub mod sandbox;

pub use client::{Client, DEFAULT_SOCKET, Opened};
pub use error::BrokerError;
pub use fdbroker_shared::wire::{Access, FileKind, FileMeta};
