//! The engine of `fdbroker each` and of the library ([`Engine`]): runs in the caller's
//! process (root, single-threaded: it forks a PID namespace per item), takes jobs into
//! a bounded queue, opens each job's file under the policy, starts it in a fresh
//! sandbox in a free slot, and hands back one [`Outcome`] per job.
//!
//! A slot is prepared once and reused by one item after another, never by two at once:
//! a transient uid (its [`Lease`]), the worker's and the namespace init's prepared
//! sandboxes (copied for each item, [`PreparedSandbox::try_clone`]), the limits'
//! cgroups, and its next sandbox, made while its current item runs: a spare namespace
//! ([`crate::spawn::pidns::Spare`]) whose init confines itself, then the next worker
//! forked into it and confined there before its item is known
//! ([`crate::spawn::pidns::Armed`]), so that an item's start is one message and an
//! `exec`. Every item still gets everything `fdbroker run` gives a worker, fresh: a
//! `fork` of this process (which holds no item's state) made for it alone, a PID and IPC
//! namespace of its own with its own init, the sandbox applied in its own process, then
//! `exec`. The next item of the slot starts only once the previous one's namespace is
//! gone (its init reaped); there are twice as many slots as items run at once, so that
//! an item's outcome (known when its worker is gone) need not wait
//! for that. `docs/each.md` says why each item is as strong as `fdbroker run`.

use crate::each::item::{Running, Stdout};
use crate::request::answer::answer;
use crate::request::loaded::Loaded;
use crate::spawn::identity::{self, Lease};
use crate::spawn::limits::{Enforcement, Verdict};
use crate::spawn::pidns::{Armed, Spare};
use crate::spawn::worker::Exec;
use fdbroker_policy::{ClientId, Decision, Limits, Policy};
use fdbroker_shared::peer::PeerCredentials;
use fdbroker_shared::wire::{Access, Op, OpenSpec, ReplyBody};
use fdbroker_worker::sandbox::{Identity, PreparedSandbox, Sandbox};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Output kept of a worker when no output limit is set: the outcome holds it in memory.
pub const DEFAULT_OUTPUT_LIMIT: u64 = 1 << 20;

/// How an [`Engine`] runs its jobs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The policy file the jobs' paths are decided by.
    pub policy: PathBuf,
    /// The policy client the paths are decided for (default: the only one).
    pub client: Option<String>,
    /// Limits of every item's sandbox; each unset one comes from `[sandbox]`.
    pub limits: Limits,
    /// Items running at once (each a slot with a uid of its own), at least 1.
    pub jobs: usize,
    /// Jobs accepted but not yet started; [`Engine::submit`] refuses more.
    pub queue: usize,
    /// Write each item's stdout to `DIR/INDEX.out` instead of keeping it.
    pub stdout_dir: Option<PathBuf>,
}

/// What a job reads as its stdin.
#[derive(Debug)]
pub enum Input {
    /// A path, decided and opened under the policy as a read request of its client.
    Path(Vec<u8>),
    /// A file the caller opened itself, with the name `FDBROKER_ITEM` gives it; not
    /// decided (the caller vouches for it), but refused if it is a directory or an
    /// `O_PATH` handle.
    Descriptor { fd: OwnedFd, name: Vec<u8> },
}

impl Input {
    fn name(&self) -> &[u8] {
        match self {
            Input::Path(p) => p,
            Input::Descriptor { name, .. } => name,
        }
    }
}

/// One file for one program.
#[derive(Debug)]
pub struct Job {
    /// The caller's number for it, returned in its [`Outcome`] (`fdbroker each`: the
    /// index of the path in its input).
    pub id: u64,
    pub input: Input,
    /// The program and its arguments.
    pub program: Vec<OsString>,
}

/// How one job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub id: u64,
    pub path: Vec<u8>,
    pub verdict: Verdict,
    pub exit_status: Option<i32>,
    pub signal: Option<i32>,
    pub wall_ms: u64,
    pub cpu_ms: u64,
    pub max_rss_kib: u64,
    /// The worker's stdout, up to the output limit (empty with `stdout_dir`).
    pub stdout: Vec<u8>,
    /// With `stdout_dir`: the file it was written to.
    pub stdout_file: Option<PathBuf>,
    /// Why a job was `denied` or an `error`.
    pub message: Option<String>,
}

impl Outcome {
    fn refused(id: u64, path: Vec<u8>, verdict: Verdict, message: String) -> Outcome {
        Outcome {
            id,
            path,
            verdict,
            exit_status: None,
            signal: None,
            wall_ms: 0,
            cpu_ms: 0,
            max_rss_kib: 0,
            stdout: Vec::new(),
            stdout_file: None,
            message: Some(message),
        }
    }
}

/// Why an engine could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EachError {
    #[error("{0}")]
    Spawn(#[from] crate::spawn::broker::SpawnError),
    #[error("cannot take a transient uid for a slot: {0}")]
    Identity(#[from] identity::IdentityError),
    #[error("cannot prepare the sandbox: {0}")]
    Sandbox(#[from] fdbroker_worker::sandbox::SandboxError),
    #[error("cannot use the stdout directory {}: {source}", .dir.display())]
    StdoutDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Limit(#[from] crate::spawn::limits::LimitRefused),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// One slot: what is prepared once and reused by its items, one after another.
struct Slot {
    lease: Lease,
    worker: PreparedSandbox,
    init: PreparedSandbox,
    enforcement: Enforcement,
    running: Option<Running>,
    /// What is ready of the slot's next sandbox, and the program it is for (an item of
    /// another program gets a fresh one).
    next: Next,
}

/// The slot's next sandbox, made while its current item runs (see docs/each.md).
enum Next {
    None,
    /// Its namespace and init, the init confining itself.
    Spare(Spare, Arc<Exec>),
    /// And its worker, confined in it and waiting for an item.
    Armed(Armed, Arc<Exec>),
}

/// A fresh namespace and init for `slot`'s next sandbox; the init confines itself
/// while the caller goes on.
fn spare(slot: &Slot) -> io::Result<Spare> {
    crate::spawn::pidns::spare(slot.init.try_clone()?, Some(slot.lease.as_fd()))
        .map_err(namespace_error)
}

/// Forks `slot`'s next worker for `exec` into `spare`, where it confines itself and
/// waits for an item.
fn arm(slot: &Slot, spare: Spare, exec: &Arc<Exec>) -> io::Result<Armed> {
    let sandbox = slot.worker.try_clone()?;
    let limits = slot.enforcement.in_child_but_cgroups();
    let exec = Arc::clone(exec);
    spare
        .arm(move |trigger| crate::spawn::worker::armed_main(trigger, sandbox, &limits, &exec))
        .map_err(namespace_error)
}

/// Prepares one slot per lease into `slots` (see [`Slot`]); stops at the first that
/// cannot be made, leaving the ones made so far in `slots`.
fn prepare_slots(
    slots: &mut Vec<Slot>,
    leases: Vec<Lease>,
    policy: &Policy,
    limits: &Limits,
) -> Result<(), EachError> {
    for (n, lease) in leases.into_iter().enumerate() {
        let base = || {
            Sandbox::new()
                .user(Identity::Id(lease.uid()))
                .group(Identity::Id(lease.gid()))
        };
        let init = base().prepare()?;
        let mut worker = base();
        for path in &policy.sandbox().read_only {
            if path.exists() {
                worker = worker.allow_read_exec(path);
            }
        }
        let worker = worker.prepare()?;
        // Beside an item's tree, three processes of the slot's uid: the item's
        // namespace init, and the slot's next sandbox (its init and its armed
        // worker), made while the item runs.
        let enforcement = Enforcement::prepare(
            limits,
            &format!("fdbroker-each-{}-{n}", std::process::id()),
            3,
        );
        if n == 0 {
            if let Err(e) = enforcement.check() {
                let mut enforcement = enforcement;
                enforcement.remove();
                return Err(e.into());
            }
            for what in &enforcement.missing {
                tracing::warn!("this kernel setup gives no {what}");
            }
        }
        slots.push(Slot {
            lease,
            worker,
            init,
            enforcement,
            running: None,
            next: Next::None,
        });
    }
    Ok(())
}

impl Next {
    /// Ends whatever was prepared, unused.
    fn end(self) {
        match self {
            Next::None => {}
            Next::Spare(spare, _) => spare.end(),
            Next::Armed(armed, _) => armed.end(),
        }
    }
}

fn namespace_error(e: crate::spawn::pidns::NamespaceError) -> io::Error {
    match e {
        crate::spawn::pidns::NamespaceError::Spawn(e) => e,
        e => io::Error::other(e.to_string()),
    }
}

/// Runs jobs, each in a fresh sandbox holding only its file (see the module
/// documentation). Drive it from one thread of a single-threaded process: submit
/// jobs, call [`Engine::step`] until [`Engine::is_idle`].
pub struct Engine {
    loaded: Loaded,
    client: ClientId,
    limits: Limits,
    queue_cap: usize,
    /// Items whose outcome is not known yet, at most.
    jobs: usize,
    stdout_dir: Option<PathBuf>,
    slots: Vec<Slot>,
    /// The last program's [`Exec`], and the program.
    exec: Option<(Vec<OsString>, Arc<Exec>)>,
    queue: VecDeque<Job>,
    done: Vec<Outcome>,
    /// The signals that end the run early ([`Engine::stop_on`]), and the one that did.
    stop: Option<SignalFd>,
    stopped: Option<Signal>,
}

impl Engine {
    /// Loads the policy, takes one transient uid per slot and prepares the slots'
    /// sandboxes and cgroups.
    pub fn new(config: &Config) -> Result<Engine, EachError> {
        use crate::spawn::broker::SpawnError;
        let policy = Policy::load(&config.policy).map_err(SpawnError::Policy)?;
        let client = crate::spawn::broker::pick_client(&policy, config.client.as_deref())?;
        let mut limits = config.limits.or(&policy.sandbox().limits);
        limits.output = Some(limits.output.unwrap_or(DEFAULT_OUTPUT_LIMIT));
        if let Some(dir) = &config.stdout_dir {
            let meta = std::fs::metadata(dir).map_err(|source| EachError::StdoutDir {
                dir: dir.clone(),
                source,
            })?;
            if !meta.is_dir() {
                return Err(EachError::StdoutDir {
                    dir: dir.clone(),
                    source: io::Error::from(io::ErrorKind::NotADirectory),
                });
            }
        }
        // Twice as many slots as items at once: an item's outcome is known when its
        // worker is gone, but its slot (its uid) is free only once its whole namespace
        // has ended, which takes the kernel a while (an IPC namespace's end waits for an
        // RCU grace period); meanwhile the next item runs in another slot.
        let mut slots = Vec::new();
        let leases = identity::allocate_many(policy.sandbox().uid_range, config.jobs.max(1) * 2)?;
        // A slot's cgroups are removed when the engine drops it; when a slot cannot be
        // made (out of descriptors, say), there is no engine: the slots made so far
        // remove theirs here.
        if let Err(e) = prepare_slots(&mut slots, leases, &policy, &limits) {
            for slot in &mut slots {
                slot.enforcement.remove();
            }
            return Err(e);
        }
        Ok(Engine {
            loaded: Loaded::new(policy, 1),
            client,
            limits,
            queue_cap: config.queue.max(1),
            jobs: config.jobs.max(1),
            stdout_dir: config.stdout_dir.clone(),
            slots,
            exec: None,
            queue: VecDeque::new(),
            done: Vec::new(),
            stop: None,
            stopped: None,
        })
    }

    /// The directories of every slot's cgroups, for a process that removes them once
    /// this one is gone however it ended (`fdbroker each`'s remover; the engine's drop
    /// removes them when it runs).
    pub fn cgroup_directories(&self) -> Vec<PathBuf> {
        self.slots
            .iter()
            .flat_map(|s| s.enforcement.directories())
            .collect()
    }

    /// Queues a job; gives it back when the queue is full (call [`Engine::step`]).
    pub fn submit(&mut self, job: Job) -> Result<(), Job> {
        if self.queue.len() >= self.queue_cap {
            return Err(job);
        }
        self.queue.push_back(job);
        Ok(())
    }

    /// Whether [`Engine::submit`] would take a job now.
    pub fn has_room(&self) -> bool {
        self.queue.len() < self.queue_cap
    }

    /// Nothing queued, nothing running, no outcome waiting to be taken.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
            && self.done.is_empty()
            && self.slots.iter().all(|s| s.running.is_none())
    }

    /// Makes `signals` end the run: once one arrives, [`Engine::step`] returns and
    /// [`Engine::stopped_by`] names it; dropping the engine then kills the items, waits
    /// for their namespaces and removes the cgroups, which the signal's default action
    /// (dying at once) would leave behind. The caller blocks `signals` in this thread
    /// before [`Engine::new`] (a signal before this call waits); the workers unblock
    /// every signal before their `exec`.
    pub fn stop_on(&mut self, signals: &SigSet) -> io::Result<()> {
        self.stop = Some(SignalFd::with_flags(
            signals,
            SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
        )?);
        Ok(())
    }

    /// The signal of [`Engine::stop_on`]'s that arrived, if one did.
    pub fn stopped_by(&self) -> Option<Signal> {
        self.stopped
    }

    /// Reads the signal that made the stop descriptor readable.
    fn note_stop(&mut self) {
        if let Some(Ok(Some(info))) = self.stop.as_ref().map(SignalFd::read_signal) {
            // Any of the caller's signals: the number names one of them.
            self.stopped = Signal::try_from(info.ssi_signo as i32)
                .ok()
                .or(Some(Signal::SIGTERM));
        }
    }

    /// Starts what can start, waits (at most until the nearest deadline) for the
    /// running items' output and exits, and returns the jobs that ended. With `also`,
    /// returns early when that descriptor (the caller's input) becomes readable too,
    /// and says so.
    pub fn step(&mut self, also: Option<BorrowedFd<'_>>) -> io::Result<(Vec<Outcome>, bool)> {
        self.start_queued();
        let busy = self.slots.iter().any(|s| s.running.is_some());
        if !busy && (also.is_none() || !self.done.is_empty()) {
            return Ok((std::mem::take(&mut self.done), false));
        }
        let now = Instant::now();
        let timeout = self
            .slots
            .iter()
            .filter_map(|s| s.running.as_ref().and_then(Running::deadline))
            .min()
            .map(|d| d.saturating_duration_since(now));
        let mut also_ready = false;
        {
            let mut fds = Vec::new();
            let mut owners = Vec::new();
            if let Some(fd) = also {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
            }
            if let Some(stop) = &self.stop {
                fds.push(PollFd::new(stop.as_fd(), PollFlags::POLLIN));
            }
            for (i, slot) in self.slots.iter().enumerate() {
                if let Some(r) = &slot.running {
                    for (what, fd) in r.poll_fds() {
                        fds.push(PollFd::new(fd, PollFlags::POLLIN));
                        owners.push((i, what));
                    }
                }
            }
            // Spare namespaces whose init is confined are armed as soon as it says so,
            // while the items run: an item's start is then one message.
            let first_spare = fds.len();
            let mut spares = Vec::new();
            for (i, slot) in self.slots.iter().enumerate() {
                if let Next::Spare(spare, _) = &slot.next {
                    fds.push(PollFd::new(spare.ready_fd(), PollFlags::POLLIN));
                    spares.push(i);
                }
            }
            let wait = match timeout {
                Some(d) => PollTimeout::try_from(d.as_millis().min(60_000) as i32 + 1)
                    .unwrap_or(PollTimeout::MAX),
                None => PollTimeout::NONE,
            };
            let ready = match poll(&mut fds, wait) {
                Ok(_) => fds
                    .iter()
                    .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                    .collect::<Vec<_>>(),
                Err(nix::errno::Errno::EINTR) => vec![false; fds.len()],
                Err(e) => return Err(e.into()),
            };
            drop(fds);
            let mut offset = usize::from(also.is_some());
            if also.is_some() {
                also_ready = ready[0];
            }
            if self.stop.is_some() {
                if ready[offset] {
                    self.note_stop();
                }
                offset += 1;
            }
            for (k, (slot, what)) in owners.into_iter().enumerate() {
                if ready[k + offset]
                    && let Some(r) = self.slots[slot].running.as_mut()
                {
                    r.ready(what, &self.limits);
                }
            }
            for (k, n) in spares.into_iter().enumerate() {
                if ready[first_spare + k] {
                    self.arm_ready(n);
                }
            }
        }
        if self.stopped.is_some() {
            // Nothing more starts; the caller drops the engine, which ends what runs.
            return Ok((std::mem::take(&mut self.done), false));
        }
        let now = Instant::now();
        for slot in &mut self.slots {
            if let Some(r) = slot.running.as_mut() {
                r.check_deadline(now);
            }
            if let Some(r) = slot.running.as_mut()
                && r.done()
            {
                let evidence = slot.enforcement.evidence();
                self.done.push(r.outcome(&self.limits, evidence));
            }
            if slot.running.as_ref().is_some_and(Running::gone) {
                slot.running = None;
            }
        }
        self.start_queued();
        Ok((std::mem::take(&mut self.done), also_ready))
    }

    /// Arms slot `n`'s spare, whose init said it is ready. An arming that fails leaves
    /// the slot to make its next sandbox when its item comes, as without a spare.
    fn arm_ready(&mut self, n: usize) {
        let slot = &mut self.slots[n];
        if let Next::Spare(spare, exec) = std::mem::replace(&mut slot.next, Next::None) {
            slot.next = match arm(slot, spare, &exec) {
                Ok(armed) => Next::Armed(armed, exec),
                Err(_) => Next::None,
            };
        }
    }

    /// Starts queued jobs while slots are free; a job refused before it needs a slot
    /// (denied, unopenable) ends at once.
    fn start_queued(&mut self) {
        loop {
            let active = self
                .slots
                .iter()
                .filter(|s| s.running.as_ref().is_some_and(Running::active))
                .count();
            if active >= self.jobs {
                return;
            }
            let Some(free) = self.slots.iter().position(|s| s.running.is_none()) else {
                return;
            };
            let Some(job) = self.queue.pop_front() else {
                return;
            };
            let uid = self.slots[free].lease.uid();
            let path = job.input.name().to_vec();
            let file = match self.open(job.input, uid) {
                Ok(f) => f,
                Err((verdict, message)) => {
                    self.done
                        .push(Outcome::refused(job.id, path, verdict, message));
                    continue;
                }
            };
            match self.start(free, job.id, path.clone(), file, &job.program) {
                Ok(running) => self.slots[free].running = Some(running),
                Err(e) => self.done.push(Outcome::refused(
                    job.id,
                    path,
                    Verdict::Error,
                    format!("cannot start the worker: {e}"),
                )),
            }
        }
    }

    /// The job's file: opened under the policy as its client's read request (with the
    /// same checks and audit line as a served request), or the caller's descriptor.
    fn open(&self, input: Input, uid: u32) -> Result<OwnedFd, (Verdict, String)> {
        let path = match input {
            Input::Descriptor { fd, .. } => {
                return match crate::spawn::stdio::handle(fd.as_fd()) {
                    Ok(None) => Ok(fd),
                    Ok(Some(h)) => Err((Verdict::Error, format!("the descriptor is {h}"))),
                    Err(e) => Err((
                        Verdict::Error,
                        format!("cannot look at the descriptor: {e}"),
                    )),
                };
            }
            Input::Path(p) => p,
        };
        // Only to tell `denied` from `error`; `answer` decides again, opens, and writes
        // the audit line a served request gets.
        let denied = matches!(
            self.loaded.policy.decide(self.client, &path, Access::Read),
            Decision::Deny(_)
        );
        let peer = PeerCredentials {
            pid: 0,
            uid,
            gid: uid,
        };
        let mut audit = crate::audit::Batch::default();
        let mut fds = Vec::new();
        let reply = answer(
            &mut audit,
            &self.loaded,
            self.client,
            &peer,
            &[],
            Op::Open(OpenSpec {
                path,
                access: Access::Read,
                flags: 0,
            }),
            1,
            &mut fds,
        );
        let _ = audit.flush();
        match reply {
            ReplyBody::Open(Ok(_)) => fds
                .pop()
                .ok_or_else(|| (Verdict::Error, "no descriptor was opened".to_owned())),
            ReplyBody::Open(Err(e)) if denied => Err((Verdict::Denied, e.message)),
            ReplyBody::Open(Err(e)) => Err((Verdict::Error, e.message)),
            _ => Err((Verdict::Error, "unexpected reply".to_owned())),
        }
    }

    /// Starts the worker of one item in slot `n`: a new PID namespace with its own init,
    /// then the program, its stdin the item's file, its stdout and stderr pipes to us.
    fn start(
        &mut self,
        n: usize,
        id: u64,
        path: Vec<u8>,
        file: OwnedFd,
        program: &[OsString],
    ) -> io::Result<Running> {
        // Checks the command too (not empty, no NUL byte), before anything is made; made
        // once per program (the environment it carries is this process's, which does
        // not change).
        let exec = match &self.exec {
            Some((made_for, exec)) if made_for.as_slice() == program => Arc::clone(exec),
            _ => {
                let exec = Arc::new(Exec::new(
                    program,
                    &[fdbroker_worker::client::ENV_FD, "FDBROKER_SOCKET"],
                )?);
                self.exec = Some((program.to_vec(), Arc::clone(&exec)));
                exec
            }
        };
        // Before the worker starts, so that a file that cannot be made leaves nothing
        // running. Root writes it: whoever else may write the directory could have
        // planted the name (a symlink to /etc/..., a hard link), so the old entry is
        // removed and a new file made with O_EXCL (which follows no symlink), readable
        // by root alone (the output comes from files the policy let only root read).
        let stdout = match &self.stdout_dir {
            Some(dir) => {
                use std::os::unix::fs::OpenOptionsExt as _;
                let file = dir.join(format!("{id}.out"));
                match std::fs::remove_file(&file) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
                Stdout::File(
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                        .open(&file)?,
                    file,
                )
            }
            None => Stdout::Kept(Vec::new()),
        };
        let slot = &mut self.slots[n];
        let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        // The worker armed for this slot while its last item ran (see docs/each.md):
        // confined, holding nothing of any item; or one armed now.
        let armed = match std::mem::replace(&mut slot.next, Next::None) {
            Next::Armed(armed, armed_for) if Arc::ptr_eq(&armed_for, &exec) => armed,
            Next::Spare(spare, for_exec) if Arc::ptr_eq(&for_exec, &exec) => {
                arm(slot, spare, &exec)?
            }
            other => {
                other.end();
                arm(slot, spare(slot)?, &exec)?
            }
        };
        slot.enforcement.rebase();
        let started = Instant::now();
        if let Err(e) = slot.enforcement.join(armed.pid()) {
            armed.end();
            return Err(e);
        }
        let (child, init, exec_report) =
            armed.fire(&path, &[file.as_fd(), out_w.as_fd(), err_w.as_fd()])?;
        // Our copies of the worker's stdin, stdout and stderr.
        drop((file, out_w, err_w));
        // The next item's worker, armed while this one runs. It shares the uid with
        // this item's processes but not their PID namespace: they cannot see it, and it
        // runs no code of theirs (see docs/each.md).
        // Armed later, once its init is ready ([`Engine::arm_ready`]).
        slot.next = spare(slot).map_or(Next::None, |spare| Next::Spare(spare, exec));
        Running::new(
            id,
            path,
            started,
            self.limits.time.map(|t| started + t),
            child,
            init,
            exec_report,
            out_r,
            err_r,
            stdout,
        )
    }
}

impl Drop for Engine {
    /// Kills what still runs, waits for its namespaces to end, removes the cgroups.
    fn drop(&mut self) {
        for slot in &mut self.slots {
            if let Some(r) = slot.running.take() {
                r.abandon();
            }
            std::mem::replace(&mut slot.next, Next::None).end();
            slot.enforcement.remove();
        }
    }
}
