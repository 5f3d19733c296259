//! `fdbroker each`: one fresh sandbox per file. The command ([`command::each_main`],
//! run by the operator as root) reads paths, and the [`engine`] opens each under the
//! policy and runs the program on it in a sandbox that holds only that file, as its
//! stdin: no broker connection, no other descriptor, a uid of its own among the items
//! running at once, the limits of `fdbroker run`. The engine is also the library API
//! for an embedding service ([`Engine`]).
//!
//! | process | entry point | runs as, confined by | started by |
//! | --- | --- | --- | --- |
//! | `fdbroker each` | [`command::each_main`] | root, narrowed once its engine is ready to the capabilities making sandboxes needs, `no_new_privs` ([`confine`]; it never runs item code) | the operator |
//! | namespace init, one per item | `spawn::pidns` `init_main` | the slot's transient uid, the worker's sandbox with no path | `fdbroker each` (`fork`) |
//! | the cgroups' remover | `spawn::scratch` `remover_main` | root, every signal but `SIGKILL` blocked, holding only a pipe from `fdbroker each` | `fdbroker each` (`fork`, before it narrows itself): once `each` is gone however it ended, removes its cgroup directories |
//! | the worker, one per item | `spawn::worker` `worker_pre_exec`, then the program | the slot's transient uid, the `fdbroker run` worker sandbox and limits | `fdbroker each` (`fork`, then `exec`) |

pub mod cli;
pub mod command;
mod confine;
pub mod engine;
mod item;
mod json;

pub use engine::{Config, EachError, Engine, Input, Job, Outcome};
