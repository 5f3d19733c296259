//! The worker side of fdbroker: a client that gets file descriptors from the broker
//! ([`Client`]), and the sandbox a worker locks itself into ([`sandbox`]).
//!
//! ```no_run
//! let broker = fdbroker_worker::Client::from_env()?;
//! let file = broker.open("/var/spool/quarantine/sample.bin")?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! A tree-walking scanner: list what the broker grants, then open it in pipelined
//! batches (`worker/examples/scanner.rs` is a complete one):
//!
//! ```
//! # include!("../doctest_broker.rs");
//! # fn main() -> std::io::Result<()> {
//! # let doc = DocBroker::start();
//! # let (socket, spool) = (doc.socket(), doc.spool());
//! use fdbroker_worker::{Client, FileKind};
//! use std::io::Read;
//!
//! let broker = Client::connect(&socket)?; // or Client::from_env()
//! let files = broker
//!     .walk(&spool)
//!     .filter_map(Result::ok)
//!     .filter(|e| matches!(e.file_type(), Ok(FileKind::Regular)))
//!     .map(|e| e.path());
//! let mut total = 0;
//! for (path, file) in broker.open_iter(files) {
//!     let mut bytes = Vec::new();
//!     match file.and_then(|mut f| f.read_to_end(&mut bytes)) {
//!         Ok(n) => total += n,
//!         Err(e) => println!("{}: {e}", path.display()),
//!     }
//! }
//! assert_eq!(total, 15);
//! # Ok(()) }
//! ```
//!
//! # Started as root: become the user, connect, confine
//!
//! The broker decides by the uid it sees when the worker connects, so a worker started
//! as root drops to its user first, then connects, then confines itself (after which it
//! could no longer connect):
//!
//! ```no_run
//! use fdbroker_worker::{Client, sandbox::Sandbox};
//!
//! let sandbox = Sandbox::new().user("scanner");
//! sandbox.drop_privileges()?;                       // 1. uid "scanner", no capabilities
//! let broker = Client::connect("/run/fdbroker/fdbroker.sock")?; // 2. the broker sees "scanner"
//! let report = sandbox.apply()?;                    // 3. Landlock, seccomp, no_new_privs
//! eprintln!("{report}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// `unsafe` only in `sys`, where each use has a safe wrapper that checks its invariant.
#![deny(unsafe_code)]

pub mod client;
pub mod error;
pub mod fs;
#[doc(inline)]
pub use client::iter;
pub mod sandbox;
#[allow(unsafe_code)]
mod sys;
#[cfg(feature = "tokio")]
pub mod tokio;

pub use client::{Client, DEFAULT_SOCKET, ENV_FD, ENV_SOCKET, ENV_TIMEOUT, Opened};
pub use error::BrokerError;
pub use fdbroker_shared::Channel;
pub use fdbroker_shared::wire::{
    Access, FileKind, FileMeta, MAX_BATCH, OPEN_APPEND, OPEN_FLAGS_ALLOWED, OPEN_TRUNC, StatMeta,
};
pub use fs::{DirEntry, Metadata, PathError, ReadDir, Walk};
pub use iter::OpenIter;
