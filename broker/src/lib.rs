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

pub mod activation;
pub mod audit;
pub mod audit_limit;
pub mod audit_line;
pub mod cli;
pub mod confine;
mod conn;
pub mod control;
mod handle;
mod handover;
pub mod inflight;
pub mod lint;
pub mod listener;
pub mod log;
pub mod monitor;
pub mod notify;
pub mod pidns;
pub mod resolve;
pub mod rlimit;
pub mod roots;
pub mod run;
pub mod server;
pub mod state;
pub mod throttle;
pub mod transparent;

pub use conn::Binding;
pub use listener::Listener;
pub use server::{ServeOptions, Server, Stopper};
pub use state::{Loaded, Shared};
