//! Transparent mode (`fdbroker run --transparent`): an unmodified program's file calls on
//! paths the policy covers are answered by the broker.
//!
//! # The shape
//!
//! ```text
//! fdbroker run (broker, root)
//!  ├─ init        pid 1 of the namespace (fdbroker::spawn::pidns)
//!  └─ supervisor  the broker's child: the sandbox user, no capabilities, a broker client
//!      └─ program the command, confined as a plain `fdbroker run` worker, plus a
//!                 seccomp filter that sends its file calls to the supervisor
//! ```
//!
//! The supervisor is the process `fdbroker run` starts; between `fork` and `exec` it
//! confines itself (the sandbox user, no capabilities, `no_new_privs`, Landlock allowing
//! `[sandbox] read_only` and reading `/proc`, the ordinary seccomp denylist except
//! `process_vm_readv`/`process_vm_writev`), then forks the program. The program applies
//! the ordinary worker sandbox on top (a nested Landlock domain without `/proc`, the full
//! denylist) and, last, the notification filter below with
//! `SECCOMP_FILTER_FLAG_NEW_LISTENER`; it passes the listener to the supervisor and execs.
//! The supervisor is the program's ancestor, has its uid, and its Landlock domain is the
//! parent of the program's: what the kernel requires for it to read and write the
//! program's memory (also under Yama's `ptrace_scope = 1`). It is not dumpable, so the
//! program cannot do the same to it.
//!
//! # What it answers, and how
//!
//! The filter sends `open`, `openat`, `openat2`, `creat`, `stat`, `lstat`, `newfstatat`,
//! `statx` (not with `AT_EMPTY_PATH` on a descriptor: `filter.rs` says why that is
//! safe), `access`, `faccessat`, `faccessat2`, `readlink`, `readlinkat`, the
//! `getxattr`/`listxattr` family, `statfs`, `inotify_add_watch`, `chdir`, `fchdir`,
//! `getcwd` and the mode and time calls (`chmod`, `fchmod`, `fchmodat`, `fchmodat2`,
//! `utimensat`) to the supervisor; i386 and x32 calls
//! kill the program. The mode and time calls are never continued: the supervisor makes
//! them itself on the program's own scratch files alone (`scratch.rs`). The working
//! directory of a process in a served directory is the supervisor's record (`cwd.rs`). For each notification the supervisor reads the path from the
//! program's memory once, makes it absolute (against the working directory or the
//! directory descriptor, as the kernel shows them in `/proc`), and removes `.` and `..`
//! lexically. Then:
//!
//! - a path no policy rule covers (`NoRule`), an empty path, `openat2` with `resolve`
//!   flags: `SECCOMP_USER_NOTIF_FLAG_CONTINUE`, so the kernel runs the call as the
//!   program made it, under its sandbox: exactly what plain `fdbroker run` gives. This
//!   is never a grant.
//! - anything else goes to the broker over the supervisor's own connection, which has
//!   the worker's identity: an open becomes an `Open` with the access its flags mean,
//!   a stat becomes a `Stat`, whose answer is written into the program's `struct stat`
//!   or `struct statx`. A denial is `EACCES`, a failure its errno.
//!
//! The supervisor can ask nothing the program could not ask itself through
//! `FDBROKER_FD`: its connection has the same identity, so a wrong classification here
//! changes which of two sandboxes answers, never what is granted.
//!
//! A call left to the kernel can be raced (another thread rewrites the path after it was
//! read), so what it may reach must not rest on the path read: it rests on the
//! directory handles the program holds. Those are its working directory, which
//! `fdbroker run` checks before starting it, and the directory descriptors the broker
//! passed, which it passes only where they reach nothing the policy hides. The same
//! argument lets a stat with `AT_EMPTY_PATH` on a descriptor stay in the kernel
//! (`filter.rs`: an absolute path there is a stat under the sandbox user's own rights,
//! as in plain `fdbroker run`); with `AT_FDCWD` and a non-empty path it is decoded as a stat of that
//! path (`call.rs`), resolved against the kept working directory where there is one.
//!
//! Wherever the thread id is used to reach the thread (its working directory or
//! descriptors in `/proc` after the path is read, its memory before a stat result is
//! written), `SECCOMP_IOCTL_NOTIF_ID_VALID` first checks the notification is still
//! pending (the thread still blocked in that call, so its id still names it). Answers
//! need no such check: `SECCOMP_IOCTL_NOTIF_SEND` and `SECCOMP_IOCTL_NOTIF_ADDFD` name
//! the notification by its id and fail for one that is gone. Granted descriptors are
//! installed with `ADDFD` and `SECCOMP_ADDFD_FLAG_SEND`, which installs and answers in
//! one step.
//!
//! Speed: several threads answer (`answer.rs`, as many as the CPUs the supervisor may
//! use, 2 to 8), each receiving a notification and answering it on its own, their broker
//! requests in flight together on the one pipelined connection: calls of several
//! program threads are answered at once, not queued behind each other. The program
//! waits for every answer, and on a small VM waking a sleeping
//! process on an idle CPU costs more than the broker's open. The listener asks for
//! synchronous wake-ups (program and supervisor hand the CPU to each other), and both
//! ends of the supervisor's broker connection look for the next message for a bounded
//! time before sleeping (`Client::set_spin`, the server's relay connections).
//!
//! The filter uses `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` (Linux 5.19): once the
//! supervisor has received a call, only a fatal signal interrupts it, so a signal
//! handler cannot re-run a call already answered. If the supervisor dies, the
//! program's intercepted calls fail with `ENOSYS` and its parent-death signal kills it.
//!
//! # The crate
//!
//! Everything here runs unprivileged: the supervisor as the sandbox user, an ordinary
//! broker client, and the program's side of the filter in the program before it execs.
//! So it lives on the worker side of the crate graph and cannot reach the root broker's
//! state (its policy roots, its server): it gets what it needs, prepared by the spawn
//! broker before the fork, as one [`Prepared`] value.
//!
//! - `supervisor.rs`: the supervisor process ([`supervisor_main`]), its answering
//!   threads, its signals and the program's end.
//! - `answer.rs`: answering one notification (through the broker, or by letting the
//!   kernel continue); `call.rs`: what an intercepted call asks, from its registers.
//! - `filter.rs`: which calls are intercepted, the BPF program, installing it (the
//!   program's side).
//! - `listing.rs`: stand-in directories for the program, for directories the broker
//!   lists itself (no descriptor reaches what the policy hides).
//! - `memory.rs`: reading the program's paths and writing its results; `stat.rs`: the
//!   byte layouts a stat answer is written in.
//! - `cwd.rs`: the working directories kept for processes in served directories.
//! - `scratch.rs`: mode and time changes on the program's own scratch files.
//! - `kernel.rs`: the kernel this needs ([`check_kernel`]).
//! - `uapi.rs`: the kernel's seccomp-notification structures and numbers; `sys.rs`: the
//!   raw system calls, the one module that may use `unsafe` (besides the fork of the
//!   program, allowed where it is made).

#![deny(unsafe_code)]

mod answer;
mod call;
mod cwd;
mod filter;
mod kernel;
mod listing;
mod memory;
mod scratch;
mod stat;
mod supervisor;
#[allow(unsafe_code)]
mod sys;
mod uapi;

pub use kernel::{KernelError, check_kernel};
pub use supervisor::supervisor_main;

use fdbroker_policy::{ClientId, Policy};
use fdbroker_worker::sandbox::PreparedSandbox;
use nix::sys::signal::SigSet;
use std::os::fd::OwnedFd;

/// What the supervisor needs, prepared in the broker before it forks.
pub struct Prepared {
    /// The supervisor's own sandbox.
    pub supervisor: PreparedSandbox,
    /// The program's: the ordinary worker sandbox, applied on top.
    pub program: PreparedSandbox,
    /// The supervisor's end of its broker connection.
    pub connection: OwnedFd,
    /// A copy of the policy, only to tell paths no rule covers (left to the sandbox)
    /// from the rest; the broker decides.
    pub policy: Policy,
    /// The worker's client in that policy.
    pub client: ClientId,
    /// The run's scratch directory (`TMPDIR`), where stand-ins for directories the
    /// broker lists itself are made (`listing.rs`).
    pub scratch: std::path::PathBuf,
    /// The signals `fdbroker run` forwards to its worker: the supervisor is that worker
    /// and passes them on to the program. Given by the spawn broker, which alone decides
    /// what it forwards, so the two lists cannot drift apart.
    pub forwarded: SigSet,
}
