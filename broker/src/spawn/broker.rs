//! The spawn broker: `fdbroker run`'s own process ([`spawn_main`]), started by the user
//! (or a service) as root; it prepares everything, starts the worker, then confines
//! itself as `fdbroker serve` does and serves the worker alone until it exits.
//!
//! Spawn mode: `fdbroker run -- COMMAND` starts a worker already confined, with the
//! broker as its only way to files.
//!
//! The order matters. Everything that reads files or allocates much — the policy, the
//! sandboxes' user lookup, their Landlock rulesets and seccomp filters — happens here in
//! the parent while it is still single-threaded. The worker starts as the second
//! process of a PID namespace of its own, after that namespace's init, so that nothing
//! it starts outlives it ([`crate::spawn::pidns`]). The worker, between `fork` and `exec`,
//! only makes system calls: un-hide its end of the socketpair from
//! close-on-exec, restore the signal mask, leave the terminal's session (`setsid`),
//! apply the prepared sandbox, set the parent-death signal. Then the parent, still
//! single-threaded, confines itself as `fdbroker serve` does ([`crate::confine`]), and
//! only then starts its threads: Landlock and capability changes apply to the calling
//! thread and are inherited by the threads it starts afterwards.
//!
//! # Signalling the worker
//!
//! The broker stays root: every uid of it stays 0. The kernel lets a process signal
//! another only with `CAP_KILL` or a matching uid, and that check also applies to the
//! worker's parent-death signal, which is sent with the dying broker's credentials:
//! without it, a killed broker would leave its worker running. So the confined spawn
//! broker keeps `CAP_KILL`, and its seccomp filter lets it name only its worker's pid
//! and its own in `kill` and refuses every other way of sending a signal (`tkill`,
//! `rt_sigqueueinfo`, `pidfd_send_signal`, `fcntl(F_SETOWN)`, ...), so the capability
//! reaches no one else. (For the same reason the broker's own Landlock domain must not
//! scope signals.)
//!
//! It used to take the worker's uid as its *real* uid instead, and signal by uid. But
//! the kernel charges descriptors in flight in Unix sockets (sent, not yet received) to
//! the sender's real uid, and refuses more (`ETOOMANYREFS`) once that user's count
//! exceeds the sender's `RLIMIT_NOFILE`: any process of the worker's uid — any `nobody`
//! process sending descriptors to itself and never reading them — could exhaust that
//! budget, and no `fdbroker run` of that user could pass a descriptor any more. Root's
//! count is shared only with other root processes, and the broker raises its soft
//! `RLIMIT_NOFILE` to the hard limit as `fdbroker serve` does ([`crate::confine::rlimit`]),
//! after the worker was started with the limits it was given.

use crate::request::reach::hidden_from_working_directory;
use crate::request::resolve::Holder;
use crate::server::conn::Binding;
use crate::server::state::Shared;
use crate::server::{ServeOptions, Server};
use crate::spawn::identity::{self, IdentityError, Lease};
use crate::spawn::limits::Enforcement;
use crate::spawn::pidns::NamespaceError;
use crate::spawn::scratch::Scratch;
use crate::spawn::worker::{Becomes, set_pre_exec};
use fdbroker_policy::{ClientId, HiddenBeneath, Policy, UserSpec};
use fdbroker_shared::Channel;
use fdbroker_shared::peer::PeerCredentials;
use fdbroker_worker::sandbox::{Identity, Sandbox};
use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode, ExitStatus};
use std::sync::{Arc, Mutex};

/// Signals sent to `fdbroker run` that are passed on to the worker (and, in transparent
/// mode, by the supervisor on to the program: it is given this list).
pub(crate) const FORWARDED: [Signal; 6] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// What to run, and as whom.
#[derive(Debug)]
pub struct Spawn {
    /// The policy file; optional only with `learn` (which then starts from a blank one).
    pub policy: Option<PathBuf>,
    /// `--learn`: learn a policy instead of enforcing one ([`crate::spawn::learn`]).
    pub learn: Option<crate::spawn::learn::Learn>,
    pub client: Option<String>,
    pub user: Option<String>,
    /// Serve the program's own file calls through the broker ([`fdbroker_transparent`]).
    pub transparent: bool,
    /// Exit non-zero when the policy refused anything (also `[sandbox] fail_on_denial`).
    pub fail_on_denial: bool,
    /// The command line's limits; each one unset there comes from `[sandbox]`.
    pub limits: fdbroker_policy::Limits,
    pub command: Vec<OsString>,
}

/// Why the worker could not be started; each maps to a conventional exit status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The policy file could not be read or is not a valid policy.
    #[error("{0}")]
    Policy(#[source] fdbroker_policy::LoadError),
    /// `--client` names no client of the policy.
    #[error("the policy has no client named {name:?} (it has: {})", .known.join(", "))]
    NoSuchClient { name: String, known: Vec<String> },
    /// The policy has several clients and `--client` chose none.
    #[error("the policy has {count} clients; choose one with --client")]
    ChooseClient { count: usize },
    /// Nothing after `--`.
    #[error("no command given")]
    NoCommand,
    /// `--transparent` on a kernel that cannot run it.
    #[error("{0}")]
    Kernel(#[from] fdbroker_transparent::KernelError),
    #[error("cannot prepare the worker's sandbox: {0}")]
    Sandbox(#[source] fdbroker_worker::sandbox::SandboxError),
    /// The broker could not confine itself; the worker was killed.
    #[error("cannot confine the broker: {0}")]
    Confine(#[source] crate::confine::ConfineError),
    #[error("cannot start {command}: {source}")]
    Exec {
        command: String,
        #[source]
        source: io::Error,
    },
    /// No transient uid could be taken for `[sandbox] user = "dynamic"`.
    #[error("cannot take a transient uid for the sandbox: {0}")]
    Identity(#[from] IdentityError),
    /// A limit this system cannot set (a usage error: exit 2).
    #[error("{0}")]
    Limit(#[source] crate::spawn::limits::LimitRefused),
    /// The worker's PID namespace could not be set up.
    #[error(transparent)]
    Namespace(NamespaceError),
    /// The working directory the worker would inherit cannot be looked at.
    #[error("cannot check the working directory: {0}")]
    WorkingDirectory(#[source] io::Error),
    /// From the working directory the worker inherits, its own lookups would reach what
    /// the policy hides from it.
    #[error(
        "refusing to start the worker in {}: from there, {up} level(s) up through `..`, \
         its own lookups would reach what the policy hides ({reason}); start it from \
         another directory",
        .cwd.display()
    )]
    WorkingDirectoryReveals {
        cwd: PathBuf,
        reason: String,
        up: usize,
    },
    /// Stdin, stdout or stderr, which the worker keeps, is a directory or an `O_PATH`
    /// handle: a way for its own lookups past the policy.
    #[error(
        "refusing to start the worker: descriptor {fd} ({name}) is {handle}, which the \
         worker would keep as a way past the policy; redirect it from a file, a pipe or \
         /dev/null"
    )]
    InheritedHandle {
        fd: i32,
        name: &'static str,
        handle: crate::spawn::stdio::Handle,
    },
    /// Stdin, stdout or stderr could not be looked at.
    #[error("cannot check the standard descriptors the worker would keep: {0}")]
    Stdio(#[source] io::Error),
    /// Learn mode could not start, or could not write what it learnt.
    #[error("{0}")]
    Learn(#[from] crate::spawn::learn::LearnError),
    /// Neither `--policy` nor `--learn`.
    #[error("--policy FILE is required (or --learn OUT.toml)")]
    NoPolicy,
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl SpawnError {
    /// 127 for a command that cannot be found, 126 for one that cannot be started
    /// (as shells do), 1 for everything before that.
    pub fn exit_code(&self) -> u8 {
        match self {
            SpawnError::Exec { source, .. } if source.kind() == io::ErrorKind::NotFound => 127,
            SpawnError::Exec { .. } => 126,
            SpawnError::Limit(_) => 2,
            _ => 1,
        }
    }
}

/// Run the worker under the broker; returns the worker's exit status as ours
/// (128 + signal number if it was killed).
pub fn spawn_main(spec: Spawn) -> Result<ExitCode, SpawnError> {
    let learning = match &spec.learn {
        Some(l) => Some(crate::spawn::learn::prepare(
            spec.policy.as_deref(),
            spec.client.as_deref(),
            l,
        )?),
        None => None,
    };
    // The policy served: the file, or in learn mode the file with its client learning.
    let load = || match (&learning, &spec.policy) {
        (Some(l), _) => l.policy(),
        (None, Some(p)) => Policy::load(p).map_err(SpawnError::Policy),
        (None, None) => Err(SpawnError::NoPolicy),
    };
    let policy = load()?;
    // Loud before anything runs, and keeping every decision from the first one on.
    if let Some(l) = &learning {
        l.announce();
        crate::audit::tally::start();
    }
    let spec_client = match &learning {
        Some(l) => Some(l.client().to_owned()),
        None => spec.client.clone(),
    };
    let client = pick_client(&policy, spec_client.as_deref())?;
    // Held until this function returns, after the worker's namespace has ended (and by
    // the namespace's init, which inherits the lock): the uid is this run's alone.
    let who = sandbox_identity(&policy, spec.user.as_deref())?;
    // The namespace's init runs as the same user and needs no path at all.
    let init_sandbox = who.sandbox().prepare().map_err(SpawnError::Sandbox)?;
    let (worker_uid, worker_gid) = init_sandbox.ids();
    check_working_directory(&policy, client, worker_uid, worker_gid)?;
    if let Some((fd, name, handle)) =
        crate::spawn::stdio::first_handle().map_err(SpawnError::Stdio)?
    {
        return Err(SpawnError::InheritedHandle { fd, name, handle });
    }
    // Transparent mode's TMPDIR, writable in the sandbox.
    let scratch = if spec.transparent {
        fdbroker_transparent::check_kernel()?;
        Some(Scratch::create(worker_uid, worker_gid)?)
    } else {
        None
    };
    // Transparent mode: the scratch directory, and the mode and time calls, which the
    // program's notification filter sends to the supervisor (own scratch files only).
    let with_scratch = |sandbox: Sandbox| match &scratch {
        Some(s) => sandbox.allow_read_write(&s.path).allow_metadata_calls(),
        None => sandbox,
    };
    // Prepared while single-threaded; the children then allocate nothing.
    let worker_sandbox = with_scratch(sandbox_for(&policy, &who))
        .prepare()
        .map_err(SpawnError::Sandbox)?;

    // The limits, and the cgroups they need, before anything is forked.
    let limits = spec.limits.or(&policy.sandbox().limits);
    // Beside the worker's tree, its namespace's init runs as its uid. 2, not 1: the
    // allowance `fdbroker run` has always had (one process above a pids cgroup's).
    let mut enforcement =
        Enforcement::prepare(&limits, &format!("fdbroker-run-{}", std::process::id()), 2);
    if let Err(e) = enforcement.check() {
        enforcement.remove();
        return Err(SpawnError::Limit(e));
    }
    for what in &enforcement.missing {
        tracing::warn!("this kernel setup gives no {what}");
    }
    let cgroups = enforcement.directories();
    if !cgroups.is_empty() {
        // The confined broker may no longer remove them; a process that outlives it does.
        crate::spawn::scratch::after_broker_exits(move || {
            cgroups
                .iter()
                .for_each(|d| crate::spawn::limits::remove_cgroup(d));
        })?;
    }
    let output = match limits.output {
        Some(_) => Some(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?),
        None => None,
    };

    let (ours, theirs) = Channel::pair()?;
    let theirs = OwnedFd::from(theirs);
    let child_fd = theirs.as_raw_fd();

    let mut forwarded = SigSet::empty();
    for s in FORWARDED {
        forwarded.add(s);
    }

    // Transparent mode: the supervisor's sandbox, its own connection, its copy of the
    // policy (only to tell paths no rule covers from the rest; the broker decides).
    let mut supervisor_conn = None;
    let becomes = if spec.transparent {
        let supervisor = with_scratch(sandbox_for(&policy, &who));
        // Its stand-in listings hold links too (the program's own domain makes none).
        let supervisor = match &scratch {
            Some(s) => supervisor.allow_read_write_links(&s.path),
            None => supervisor,
        };
        let supervisor = supervisor
            .allow_read("/proc")
            .allow_process_memory()
            .prepare()
            .map_err(SpawnError::Sandbox)?;
        let (broker_end, supervisor_end) = Channel::pair()?;
        supervisor_conn = Some(broker_end);
        Becomes::Supervisor(Box::new(fdbroker_transparent::Prepared {
            supervisor,
            program: worker_sandbox,
            connection: OwnedFd::from(supervisor_end),
            policy: load()?,
            client,
            forwarded,
            scratch: scratch.as_ref().map(|s| s.path.clone()).unwrap_or_default(),
        }))
    } else {
        Becomes::Worker(worker_sandbox)
    };

    // Block the forwarded signals before forking, so one that arrives early is queued
    // for the forwarding thread rather than killing the broker; the worker unblocks them.
    forwarded.thread_block().map_err(io::Error::from)?;

    let Some((program, args)) = spec.command.split_first() else {
        return Err(SpawnError::NoCommand);
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env(fdbroker_worker::client::ENV_FD, child_fd.to_string());
    if let Some(s) = &scratch {
        cmd.env("TMPDIR", &s.path);
    }
    let relay = output.map(|(read, write)| {
        cmd.stdout(write);
        read
    });
    set_pre_exec(&mut cmd, Some(theirs), becomes, enforcement.in_child());
    let (mut child, init) =
        crate::spawn::pidns::spawn(&mut cmd, init_sandbox, who.lease.as_ref().map(AsFd::as_fd))
            .map_err(|e| match e {
                NamespaceError::Spawn(source) => SpawnError::Exec {
                    command: program.to_string_lossy().into_owned(),
                    source,
                },
                e => SpawnError::Namespace(e),
            })?;
    // Drops the parent's copy of the worker's end, captured by the pre_exec closure.
    drop(cmd);
    let pid = Pid::from_raw(child.id() as i32);
    tracing::info!(
        pid = pid.as_raw(),
        init = init.pid().as_raw(),
        uid = worker_uid,
        transient = who.lease.is_some(),
        client = %policy.client(client).name,
        "worker started"
    );
    // The worker keeps the limits it was given; the broker takes what it may.
    if let Err(e) = crate::confine::rlimit::raise_nofile() {
        tracing::warn!("cannot raise RLIMIT_NOFILE: {e}");
    }

    let fail_on_denial = spec.fail_on_denial || policy.sandbox().fail_on_denial;
    // One worker's run, read as a whole: identical decisions are written once, counted.
    crate::audit::repeats::enable();
    let shared = Arc::new(Shared::new(policy, spec.policy.clone()));
    let name = shared.current().policy.client(client).name.clone();
    let worker = PeerCredentials {
        pid: pid.as_raw(),
        uid: worker_uid,
        gid: worker_gid,
    };
    let server = Server::single(
        Arc::clone(&shared),
        ours,
        worker,
        Binding::Named(name.clone()),
        &ServeOptions {
            threads: 2,
            handle_signals: false,
        },
    )?;
    if let Some(conn) = supervisor_conn {
        // The supervisor acts for the worker, with its identity.
        server.also_serve(conn, worker, Binding::Transparent(name))?;
    }
    // Inherited by every thread started below (the worker, forked already, keeps its own).
    let _ = fdbroker_shared::process::prefer_short_slices();
    // Everything is open and no thread has started: give up what serving does not need.
    if let Err(e) = confine_parent(&shared, spec.policy.as_deref(), pid) {
        // Do not leave the worker running with a broker that refuses to serve it.
        let _ = kill(pid, Signal::SIGKILL);
        let _ = child.wait();
        let _ = init.end();
        return Err(e);
    }

    // Set, under the lock, once the worker has exited and before it is reaped: a
    // forwarded signal never reaches a process that reused its pid.
    let exited = Arc::new(Mutex::new(false));
    let gate = Arc::clone(&exited);
    std::thread::Builder::new()
        .name("fdbroker-signals".into())
        .spawn(move || forward_signals(&forwarded, pid, &gate))?;
    // Killing the worker ends its namespace: the waiter below then closes init's
    // lifeline, and the kernel kills everything left in there.
    let watchdog = limits
        .time
        .map(|limit| crate::spawn::limits::watch(limit, pid, Arc::clone(&exited)))
        .transpose()?;
    let relay = relay
        .map(|read| {
            crate::spawn::limits::relay_output(read, limits.output, pid, Arc::clone(&exited))
        })
        .transpose()?;
    let stopper = server.stopper();
    let waiter = std::thread::Builder::new()
        .name("fdbroker-wait".into())
        .spawn(move || -> io::Result<crate::sys::Reaped> {
            // Wait for the exit without reaping (the pid stays the worker's), close
            // the gate, then reap.
            while let Err(Errno::EINTR) =
                waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
            {}
            *exited.lock().unwrap_or_else(|p| p.into_inner()) = true;
            // Reaped here with its rusage (`child` is not waited for again).
            let reaped = crate::sys::wait4(Some(pid), false);
            drop(child);
            // The worker is gone: stop serving whoever else still holds its socket,
            // and end its namespace with everything it started still in there.
            stopper.stop();
            init.end().map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot wait for the worker's PID namespace to end: {e}"),
                )
            })?;
            reaped?.ok_or_else(|| io::Error::other("the worker was reaped by someone else"))
        })?;
    server.run()?;
    let reaped = waiter
        .join()
        .map_err(|_| io::Error::other("the worker-waiting thread panicked"))??;
    let timed_out = watchdog.is_some_and(|w| w.fired());
    let output_cut = match relay {
        Some(r) => r
            .join()
            .map_err(|_| io::Error::other("the output relay thread panicked"))?,
        None => false,
    };
    let mut enforcement = enforcement;
    let ending = crate::spawn::limits::Ending {
        status: reaped.status,
        timed_out,
        output_cut,
        cpu: reaped.cpu,
        evidence: enforcement.evidence(),
    };
    let verdict = crate::spawn::limits::verdict(&limits, &ending);
    if let Some(l) = learning {
        crate::spawn::learn::report(l, &crate::audit::tally::take())?;
    }
    let refused = crate::audit::refused::so_far();
    if let Some(line) = crate::spawn::denials::summary(&refused) {
        // Not a log line: a program sharing standard error must not make it lost.
        crate::log::sink::print_for_user(&line, crate::log::sink::USER_WAIT);
    }
    if let Some(code) = verdict.exit_code() {
        crate::log::sink::print_for_user(
            &crate::spawn::limits::verdict_line(verdict, &limits),
            crate::log::sink::USER_WAIT,
        );
        return Ok(ExitCode::from(code));
    }
    let code =
        crate::spawn::denials::exit_code(exit_code_of(reaped.status), fail_on_denial, &refused);
    Ok(ExitCode::from(code))
}

/// Confine the still single-threaded parent as `fdbroker serve` confines itself, unless
/// the policy says `[broker] confine = false`, keeping `CAP_KILL` for `worker` alone
/// (see the module documentation). No socket file of its own to remove: the worker's
/// connection is one end of a socketpair.
/// The worker inherits the working directory, and a working directory is a starting
/// point for the worker's own lookups (`fstatat(AT_FDCWD, "../x")`), past whatever
/// root-only directories lie above it. Started where it could reach a deny carve-out
/// that way, it could describe what the policy hides: refused, with the reason, rather
/// than started elsewhere behind the operator's back (fails closed when the directory
/// cannot be judged). Where it would reach only paths no rule covers, the sandbox
/// decides those as everywhere else (its own permissions); that is logged as a warning.
fn check_working_directory(
    policy: &Policy,
    client: ClientId,
    uid: u32,
    gid: u32,
) -> Result<(), SpawnError> {
    use std::os::unix::ffi::OsStrExt;
    let cwd = std::env::current_dir().map_err(SpawnError::WorkingDirectory)?;
    let dir = nix::fcntl::open(
        ".",
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| SpawnError::WorkingDirectory(e.into()))?;
    let holder = Holder {
        uid,
        gid,
        groups: &[],
    };
    let hidden = hidden_from_working_directory(
        policy,
        client,
        cwd.as_os_str().as_bytes(),
        dir.as_fd(),
        &holder,
    )
    .map_err(|e| SpawnError::WorkingDirectory(e.into()))?;
    match hidden {
        None => Ok(()),
        Some((HiddenBeneath::NotCovered, up)) => {
            tracing::warn!(
                cwd = %cwd.display(),
                up,
                "from its working directory the worker can look at paths no policy rule \
                 covers with its own permissions, past the directories above it that it \
                 cannot search"
            );
            Ok(())
        }
        Some((hidden, up)) => {
            let reason = match hidden {
                HiddenBeneath::DenyBeneath(rule) => match policy.rules().get(rule.0) {
                    Some(r) => format!(
                        "the deny rule {:?} at {}:{}",
                        r.pattern,
                        policy.origin().display(),
                        r.location
                    ),
                    None => hidden.to_string(),
                },
                other => other.to_string(),
            };
            Err(SpawnError::WorkingDirectoryReveals { cwd, reason, up })
        }
    }
}

fn confine_parent(
    shared: &Shared,
    policy_file: Option<&std::path::Path>,
    worker: Pid,
) -> Result<(), SpawnError> {
    let loaded = shared.current();
    // Asked now, while /sys and /proc are readable: the relay connection of
    // transparent mode consults it on every request.
    let _ = fdbroker_shared::Channel::spinning_pays();
    if !loaded.policy.broker().confine {
        tracing::warn!(
            "RUNNING UNCONFINED: [broker] confine = false keeps every capability and no \
             Landlock or seccomp; use it only for debugging"
        );
        return Ok(());
    }
    match crate::confine::confine(
        &loaded.policy,
        &loaded.roots,
        policy_file,
        None,
        Some(worker.as_raw()),
    ) {
        Ok(c) => {
            tracing::info!("confined: {c}");
            shared.set_confinement(c);
            Ok(())
        }
        Err(e) => Err(SpawnError::Confine(e)),
    }
}

/// The client `--client` names, or the policy's only client.
pub(crate) fn pick_client(
    policy: &Policy,
    name: Option<&str>,
) -> Result<fdbroker_policy::ClientId, SpawnError> {
    match name {
        Some(n) => policy
            .client_by_name(n)
            .ok_or_else(|| SpawnError::NoSuchClient {
                name: n.to_owned(),
                known: policy.clients().iter().map(|c| c.name.clone()).collect(),
            }),
        None if policy.clients().len() == 1 => Ok(fdbroker_policy::ClientId(0)),
        None => Err(SpawnError::ChooseClient {
            count: policy.clients().len(),
        }),
    }
}

/// Who the sandbox runs as: a user (and group), and the lease of a transient uid.
struct SandboxIdentity {
    user: Identity,
    /// `None`: the user's primary group.
    group: Option<Identity>,
    lease: Option<Lease>,
}

impl SandboxIdentity {
    /// A sandbox that becomes this identity and grants nothing yet.
    fn sandbox(&self) -> Sandbox {
        let sandbox = Sandbox::new().user(self.user.clone());
        match &self.group {
            Some(group) => sandbox.group(group.clone()),
            None => sandbox,
        }
    }
}

/// The sandbox user: `--user`, else the policy's `[sandbox] user`; `dynamic` (the
/// default) takes a transient uid from `[sandbox] uid_range` ([`crate::spawn::identity`]).
fn sandbox_identity(policy: &Policy, user: Option<&str>) -> Result<SandboxIdentity, SpawnError> {
    let spec = match user {
        Some(UserSpec::DYNAMIC) => UserSpec::Dynamic,
        Some(u) => u
            .parse::<u32>()
            .map_or_else(|_| UserSpec::Name(u.to_owned()), UserSpec::Id),
        None => policy.sandbox().user.clone(),
    };
    let named = |user: Identity| {
        tracing::warn!(
            user = %user,
            "the sandbox runs as a named user: every other process of that user can take \
             the worker's descriptors and its broker connection ([sandbox] user = \"dynamic\" \
             gives each run a uid of its own)"
        );
        SandboxIdentity {
            user,
            group: None,
            lease: None,
        }
    };
    Ok(match spec {
        UserSpec::Dynamic => {
            let lease = identity::allocate(policy.sandbox().uid_range)?;
            SandboxIdentity {
                user: Identity::Id(lease.uid()),
                group: Some(Identity::Id(lease.gid())),
                lease: Some(lease),
            }
        }
        UserSpec::Name(n) => named(Identity::from(n)),
        UserSpec::Id(id) => named(Identity::from(id)),
    })
}

/// The spawned worker may read and execute the system's program and library
/// directories (the policy's `[sandbox] read_only`), open the standard character
/// devices ([`crate::spawn::devices`]), and nothing else by path.
/// Entries missing on this machine (`/lib64` on some architectures) grant nothing and
/// are skipped.
fn sandbox_for(policy: &Policy, who: &SandboxIdentity) -> Sandbox {
    let mut sandbox = crate::spawn::devices::allow_standard(who.sandbox());
    for path in &policy.sandbox().read_only {
        if path.exists() {
            sandbox = sandbox.allow_read_exec(path);
        } else {
            tracing::debug!(path = %path.display(), "sandbox read_only path does not exist here; skipped");
        }
    }
    sandbox
}

fn forward_signals(set: &SigSet, worker: Pid, exited: &Mutex<bool>) {
    loop {
        match set.wait() {
            Ok(sig) => {
                let gone = exited.lock().unwrap_or_else(|p| p.into_inner());
                if *gone || kill(worker, sig).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// A shell's view of how the worker ended.
fn exit_code_of(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code.clamp(0, 255) as u8,
        (None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Policy {
        Policy::parse(text, std::path::Path::new("p.toml")).expect("a valid policy")
    }

    #[test]
    fn the_client_is_named_or_the_only_one() {
        let one = policy("[[client]]\nname = \"scanner\"\nusers = [1]\n");
        assert_eq!(
            pick_client(&one, None).expect("the only client"),
            fdbroker_policy::ClientId(0)
        );
        let two = policy(
            "[[client]]\nname = \"a\"\nusers = [1]\n[[client]]\nname = \"b\"\nusers = [2]\n",
        );
        let e = pick_client(&two, None).expect_err("two clients, none named");
        assert!(matches!(e, SpawnError::ChooseClient { count: 2 }));
        assert_eq!(
            e.to_string(),
            "the policy has 2 clients; choose one with --client"
        );
        let e = pick_client(&two, Some("c")).expect_err("no such client");
        assert_eq!(
            e.to_string(),
            "the policy has no client named \"c\" (it has: a, b)"
        );
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn errors_keep_their_words_and_their_source() {
        assert_eq!(SpawnError::NoCommand.to_string(), "no command given");
        let load = Policy::load("/nonexistent/fdbroker-spawn-test.toml".as_ref())
            .expect_err("no such file");
        let text = load.to_string();
        let e = SpawnError::Policy(load);
        assert_eq!(e.to_string(), text);
        assert!(std::error::Error::source(&e).is_some());
        let e = SpawnError::from(fdbroker_transparent::KernelError::TooOld {
            release: "5.10.0".into(),
        });
        assert!(
            e.to_string()
                .starts_with("--transparent needs Linux 6.9 or later")
        );
        assert!(std::error::Error::source(&e).is_some());
        let missing = SpawnError::Exec {
            command: "nope".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert_eq!(missing.exit_code(), 127);
    }
}
