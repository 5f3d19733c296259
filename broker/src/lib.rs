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
//!
//! # The process map
//!
//! One binary, several processes; each has one entry point, in the file named for its
//! role, whose first line says who runs it.
//!
//! | process | entry point | runs as, confined by | started by |
//! | --- | --- | --- | --- |
//! | monitor (`fdbroker serve`) | [`daemon::monitor::monitor_main`] | root or the service's user; only the capabilities a server may need, none effective, `no_new_privs`, seccomp, no Landlock | systemd or the operator |
//! | server | [`daemon::server::server_main`] | the monitor's user; once its sockets and roots are open, confines itself ([`confine`]): `CAP_DAC_READ_SEARCH` (and what the policy needs), Landlock to the roots, seccomp | the monitor (`execve` of this binary), at start, on every reload, and in place of one that died |
//! | reload requester (`fdbroker reload`) | [`daemon::reload::reload_main`] | whoever runs it, unconfined | `systemctl reload` or the operator |
//! | spawn broker (`fdbroker run`) | [`spawn::broker::spawn_main`] | root; confines itself as a server does, keeping `CAP_KILL` for its worker | the operator |
//! | `fdbroker each` | [`each::command::each_main`] (the engine: [`each::Engine`]) | root, unconfined; runs no item code, one thread polling its items | the operator |
//! | PID-namespace init | [`spawn::pidns`] `init_main` | the sandbox user, the worker's sandbox with no path | the spawn broker (`fork`) |
//! | the worker's pre-exec | `spawn::worker::worker_pre_exec` | root becoming the sandbox user, between `fork` and `exec` | the spawn broker (`fork`) |
//! | transparent supervisor | `fdbroker_transparent::supervisor_main` (crate `fdbroker-transparent`) | the sandbox user, its own sandbox; an ordinary broker client | the worker's pre-exec, in the worker's place |
//! | scratch remover | [`spawn::scratch`] `remover_main` | root, unconfined, deaf to all signals but `SIGKILL`, holding nothing | the spawn broker (`fork`, `--transparent` only) |
//! | `fdbroker version`, `fdbroker completions` | [`doctor::version_main`], `cli` | whoever runs them, unconfined | the operator, packaging |
//! | `fdbroker cat`, `put`, `ls`, `status`, `policy` | [`cat::cat_main`], [`put::put_main`], [`ls::ls_main`], [`status::status_main`], [`inspect::check_main`], [`inspect::explain_main`] | whoever runs them, unconfined | the operator |
//!
//! # The layers
//!
//! Lower folders never import higher ones: `sys`, [`log`], [`listener`] and
//! [`systemd`] are leaves; [`request`] (the data path of one request) uses only
//! [`audit`] and `sys`; [`confine`] the request's roots; [`server`] (the event loop)
//! those below it; [`daemon`] and [`spawn`] (the processes) build on [`server`]; [`cli`]
//! only parses and dispatches.

#![deny(unsafe_code)]

pub mod audit;
pub mod cat;
pub mod cli;
pub mod confine;
pub mod daemon;
pub mod doctor;
pub mod each;
pub mod inspect;
pub mod lint;
pub mod listener;
pub mod log;
pub mod ls;
pub mod put;
pub mod request;
pub mod server;
pub mod spawn;
pub mod status;
pub(crate) mod sys;
pub mod systemd;

pub use listener::Listener;
pub use request::loaded::Loaded;
pub use server::conn::Binding;
pub use server::state::Shared;
pub use server::{ServeOptions, Server, Stopper};
