//! `fdbroker run`: the spawn broker, the worker it starts, and the processes around it
//! (the PID namespace's init, the scratch directory's remover).
//!
//! One file per process of `fdbroker run` (the transparent supervisor is an ordinary
//! broker client and lives in the worker-side crate `fdbroker-transparent`):
//!
//! | process | entry point | runs as, confined by | started by |
//! | --- | --- | --- | --- |
//! | spawn broker | [`broker::spawn_main`] | root; confines itself as `fdbroker serve` does, keeping `CAP_KILL` for its worker | the user (`fdbroker run`) |
//! | namespace init | [`pidns`] `init_main` | the sandbox user, the worker's sandbox without any path | the spawn broker (fork) |
//! | worker | `worker.rs` `worker_pre_exec`, then the command | the sandbox user, the prepared worker sandbox | the spawn broker (fork and exec, pid 2 of its namespace) |
//! | transparent supervisor | `fdbroker_transparent::supervisor_main` | the sandbox user, its own sandbox | the worker's pre-exec, in place of the worker |
//! | program (transparent) | the command | the worker sandbox plus the notification filter | the supervisor (fork and exec) |
//! | scratch remover | [`scratch`] `remover_main` | root, unconfined, deaf to all signals but `SIGKILL` | the spawn broker (fork, transparent mode) |

pub mod broker;
/// Not a process: the summary at exit of what the policy refused, `--fail-on-denial`.
pub mod denials;
/// Not a process: the standard character devices every sandbox may open.
pub mod devices;
/// Not a process: the transient uid each sandbox runs as, taken by the spawn broker.
pub mod identity;
/// Not a process: learn mode, run inside the spawn broker.
pub mod learn;
/// Not a process: the limits of a sandbox, and the verdict on how it ended.
pub mod limits;
pub mod pidns;
pub mod scratch;
/// Not a process: the check of the standard descriptors the worker keeps.
pub mod stdio;
pub(crate) mod worker;
