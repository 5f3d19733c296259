//! The fdbroker broker: decide each request by policy, open the file beneath a
//! pre-opened root, check what was opened, and pass the descriptor to the worker.
//!
//! Embed it with [`Shared`] (a loaded policy) and a [`Server`] on a [`Listener`]:
//!
//! ```no_run
//! use std::sync::Arc;
//! use fdbroker::{Listener, Server, ServeOptions, Shared};
//! let policy = fdbroker_policy::Policy::load("/etc/fdbroker/policy.toml".as_ref())?;
//! let listener = Listener::bind("/run/fdbroker/fdbroker.sock".as_ref(), 0o660, None)?;
//! let shared = Arc::new(Shared::new(policy, None));
//! let server = Server::new(shared, listener, &ServeOptions::default())?;
//! let stopper = server.stopper(); // stopper.stop() from another thread
//! server.run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(unsafe_code)]

pub mod audit;
pub mod cat;
pub mod cli;
pub mod confine;
pub mod daemon;
pub mod inspect;
pub mod lint;
pub mod listener;
pub mod log;
pub mod request;
pub mod server;
pub mod spawn;
pub mod sys;
pub mod systemd;

pub use listener::Listener;
pub use request::loaded::Loaded;
pub use server::conn::Binding;
pub use server::state::Shared;
pub use server::{ServeOptions, Server, Stopper};
