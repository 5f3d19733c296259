//! The PID namespace's init (`init_main`): pid 1 of the worker's namespace, forked by
//! the spawn broker before the worker, runs as the sandbox user under the worker's
//! sandbox with no path granted, and only reaps orphans until the broker lets it go.
//!
//! The spawn-mode worker's PID namespace: nothing the worker starts outlives it.
//!
//! A worker can fork a child that leaves its session (`setsid`) and keeps running after
//! the worker and `fdbroker run` have exited, still holding the terminal it inherited:
//! it could print a fake password prompt there and read what the user types next. So the
//! worker runs in a PID namespace of its own, and when it exits the namespace ends: the
//! kernel kills every process left in it once the namespace's init exits, and reports
//! init's exit to its parent only after they are all gone.
//!
//! # The shape
//!
//! ```text
//! fdbroker run (broker, outside)
//!  ├─ init     pid 1 in the namespace: ours, no exec, sandboxed like the worker
//!  └─ worker   pid 2 in the namespace: the command, the broker's own child
//!      └─ ...  whatever it starts; orphans are re-parented to init, which reaps them
//! ```
//!
//! The worker is not pid 1: a namespace's init ignores every signal it has no handler
//! for (from inside, and from outside except `SIGKILL`/`SIGSTOP`), which would break
//! forwarding `SIGTERM` to a program that expects the default action. It stays the
//! broker's child, so its exit status (128+N for signal N), the 126/127 of a command that
//! cannot be started or found, the signals forwarded to it and the pid in audit lines
//! are all what they were without a namespace.
//!
//! # Creating it without losing threads
//!
//! `unshare(CLONE_NEWPID)` makes the caller's *later* children members of a new
//! namespace (the first becomes its init), and while the caller's children would be
//! born in another namespace than its own, the kernel refuses it new threads (`clone`
//! with `CLONE_THREAD` fails with `EINVAL`). So the broker, still root and
//! single-threaded, unshares, forks init, starts the worker, then re-enters its own
//! namespace with `setns` (always allowed into the caller's own namespace), and only
//! then starts threads. Both children come from `fork`, so the C library's view of
//! them stays consistent (a raw `clone` would leave its cached thread id stale).
//!
//! # Its own System V IPC too
//!
//! The namespace's processes also share an IPC namespace of their own (`CLONE_NEWIPC`,
//! unshared with the PID namespace, which the broker leaves again the same way): System
//! V shared memory, message queues, semaphores and POSIX message queues made in the
//! sandbox are invisible outside it and destroyed with its last process. Otherwise they
//! would outlive the run as its uid, and a transient uid is handed to later runs
//! ([`crate::spawn::identity`]): a worker could leave data for whichever sandbox gets
//! its uid next, or pick up what an earlier one left.
//!
//! # Ending it
//!
//! Init holds one end of a socketpair (its *lifeline*); the broker holds the other and
//! closes it once it has reaped the worker. Init sees the end close, exits, and the
//! kernel takes the namespace down. The lifeline also closes when the broker dies,
//! however it dies, so a dead broker leaves nothing of the worker's tree either; and
//! since the worker's copy of the broker's end is close-on-exec, this also covers a
//! broker that dies before the worker set its parent-death signal.

use fdbroker_shared::{Channel, RecvError};
use fdbroker_worker::sandbox::PreparedSandbox;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};
use std::io::{self, Write as _};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::process::{Child, Command};

/// Init's first message on its lifeline: confined and serving.
const READY: u8 = 1;
/// Or: it could not get there; the errno follows (4 bytes, little-endian).
const FAILED: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// The namespace or its init could not be set up; nothing was started.
    #[error("cannot {op} for the worker's PID namespace: {source}")]
    Setup {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// The worker could not be started; the namespace was ended.
    #[error(transparent)]
    Spawn(io::Error),
}

fn setup(op: &'static str) -> impl FnOnce(io::Error) -> NamespaceError {
    move |source| NamespaceError::Setup { op, source }
}

/// The namespace's init, seen from the broker.
#[derive(Debug)]
pub struct Init {
    pid: Pid,
    /// The broker's end; closing it ends the namespace.
    lifeline: Channel,
}

impl Init {
    /// Init's pid (in the broker's namespace).
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Ends the namespace and waits until every process in it is gone: closes the
    /// lifeline, so init exits and the kernel kills the rest, then reaps init.
    ///
    /// The kernel finishes init's exit only once every process of the namespace has
    /// been reaped, and some are the broker's to reap: the worker, and anything the
    /// worker made a child of the broker (`clone(CLONE_PARENT)`; the sandbox refuses it,
    /// but a worker run without one may not). So every child is reaped here, whatever
    /// it is, until init is: waiting for init alone could wait for ever.
    pub fn end(self) -> io::Result<()> {
        let Init { pid, lifeline } = self;
        drop(lifeline);
        loop {
            match waitpid(None, Some(WaitPidFlag::__WALL)) {
                Err(Errno::EINTR) => continue,
                Ok(status) if status.pid() == Some(pid) => return Ok(()),
                Ok(_) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Ends the namespace without waiting: closes the lifeline and returns init's pid,
    /// for a caller that reaps all its children in one place (`fdbroker each`, whose
    /// namespaces end side by side). The namespace is gone once that pid is reaped.
    pub fn release(self) -> Pid {
        let Init { pid, lifeline } = self;
        drop(lifeline);
        pid
    }

    /// Ends a namespace no worker was started in, waiting for its init alone: the
    /// other children of the caller (`fdbroker each`'s other items) are not its to reap.
    fn end_alone(self) {
        let pid = self.release();
        while let Err(Errno::EINTR) = waitpid(pid, Some(WaitPidFlag::__WALL)) {}
    }

    /// Waits for init's first message.
    fn ready(&self) -> Result<(), NamespaceError> {
        let mut msg = [0u8; 8];
        let failure = match self.lifeline.recv(&mut msg) {
            Ok(1) if msg[0] == READY => return Ok(()),
            Ok(5) if msg[0] == FAILED => {
                io::Error::from_raw_os_error(i32::from_le_bytes([msg[1], msg[2], msg[3], msg[4]]))
            }
            Ok(_) => io::Error::new(io::ErrorKind::InvalidData, "unexpected message from init"),
            Err(RecvError::Io(e)) => e,
            Err(RecvError::Protocol(_)) => io::Error::other("init exited before it was ready"),
        };
        Err(setup("confine the init")(failure))
    }
}

/// Starts `worker` (its `pre_exec` confines it) as the second process of a new PID
/// namespace whose init runs confined by `init_sandbox`. Init keeps `hold` open (and
/// never uses it) until the namespace ends: the lock of a transient uid
/// ([`crate::spawn::identity::Lease`]), so that the uid stays taken while anything of
/// the namespace may still run, even after the broker died.
///
/// Call while single-threaded (checked) and privileged (`CAP_SYS_ADMIN`).
pub fn spawn(
    worker: &mut Command,
    init_sandbox: PreparedSandbox,
    hold: Option<BorrowedFd<'_>>,
) -> Result<(Child, Init), NamespaceError> {
    let threads = std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count());
    if threads != 1 {
        return Err(setup("fork")(io::Error::other(format!(
            "the broker must be single-threaded, but has {threads} threads"
        ))));
    }
    let own = std::fs::File::open("/proc/self/ns/pid").map_err(setup("open /proc/self/ns/pid"))?;
    let own_ipc =
        std::fs::File::open("/proc/self/ns/ipc").map_err(setup("open /proc/self/ns/ipc"))?;
    unshare(CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWIPC)
        .map_err(|e| setup("unshare")(e.into()))?;
    let started = start(worker, init_sandbox, hold.map(|fd| fd.as_raw_fd()));
    // Children born here again, whatever happened above: only then may threads start.
    // The broker itself uses no System V IPC, but goes back to its own namespace too.
    let back = setns(&own, CloneFlags::CLONE_NEWPID)
        .and_then(|()| setns(&own_ipc, CloneFlags::CLONE_NEWIPC));
    if let Err(e) = back {
        if let Ok((mut child, init)) = started {
            let _ = child.kill();
            let _ = child.wait();
            let _ = init.end();
        }
        return Err(setup("re-enter the broker's own PID and IPC namespaces")(
            e.into(),
        ));
    }
    started
}

/// In the new namespace: init first (it becomes pid 1), then the worker.
fn start(
    worker: &mut Command,
    init_sandbox: PreparedSandbox,
    hold: Option<RawFd>,
) -> Result<(Child, Init), NamespaceError> {
    let init = start_init(init_sandbox, hold)?;
    match worker.spawn() {
        Ok(child) => Ok((child, init)),
        Err(e) => {
            let _ = init.end();
            Err(NamespaceError::Spawn(e))
        }
    }
}

/// A namespace started ahead of its worker, its init confined and ready (`fdbroker
/// each` keeps one per slot, made while the slot's current item runs, so that an
/// item's start is only its worker's): [`Spare::spawn`] later forks the worker into it.
#[derive(Debug)]
pub struct Spare {
    init: Init,
    pid_ns: std::fs::File,
}

/// Starts a [`Spare`]: [`spawn`] without the worker. Same conditions. Its init makes
/// the IPC namespace itself and confines itself in parallel with whatever the caller
/// does next (in `fdbroker each`: the slot's current item); its READY is read only in
/// [`Spare::spawn`], before anything else is born in the namespace.
pub fn spare(
    init_sandbox: PreparedSandbox,
    hold: Option<BorrowedFd<'_>>,
) -> Result<Spare, NamespaceError> {
    within_new_namespaces(
        || {
            let init = fork_init(init_sandbox, hold.map(|fd| fd.as_raw_fd()), true)?;
            match std::fs::File::open(format!("/proc/{}/ns/pid", init.pid())) {
                Ok(pid_ns) => Ok(Spare { init, pid_ns }),
                Err(e) => {
                    init.end_alone();
                    Err(setup("open the new PID namespace")(e))
                }
            }
        },
        None,
        CloneFlags::CLONE_NEWPID,
    )
}

impl Spare {
    /// Readable once init has said it is confined (or failed): [`Spare::arm`] and
    /// [`Spare::spawn`] then do not wait for it.
    pub fn ready_fd(&self) -> BorrowedFd<'_> {
        self.init.lifeline.as_fd()
    }

    /// Starts `worker` as the second process of this namespace (single-threaded, as
    /// [`spawn`]); the namespace ends when the worker cannot start.
    pub fn spawn(self, worker: &mut Command) -> Result<(Child, Init), NamespaceError> {
        let Spare { init, pid_ns } = self;
        // Confined, in its own IPC namespace, and serving: only now may the worker come.
        let ipc_ns = init.ready().and_then(|()| {
            std::fs::File::open(format!("/proc/{}/ns/ipc", init.pid()))
                .map_err(setup("open the new IPC namespace"))
        });
        let ipc_ns = match ipc_ns {
            Ok(ns) => ns,
            Err(e) => {
                init.end_alone();
                return Err(e);
            }
        };
        let started = within_new_namespaces(
            || match worker.spawn() {
                Ok(child) => Ok(child),
                Err(e) => Err(NamespaceError::Spawn(e)),
            },
            Some((&pid_ns, &ipc_ns)),
            CloneFlags::empty(),
        );
        match started {
            Ok(child) => Ok((child, init)),
            Err(e) => {
                init.end_alone();
                Err(e)
            }
        }
    }

    /// Ends the namespace unused and waits for its init.
    pub fn end(self) {
        self.init.end_alone();
    }

    /// Forks the namespace's second process now, before its item is known: `body` runs
    /// in it (it confines itself, then waits on the trigger for what the item brings;
    /// [`crate::spawn::worker::armed_main`]) and its return value is its exit status.
    /// Same conditions as [`spawn`]; the namespace ends when the fork fails.
    #[allow(unsafe_code)] // the fork of the armed worker
    pub fn arm(self, body: impl FnOnce(&Channel) -> i32) -> Result<Armed, NamespaceError> {
        let Spare { init, pid_ns } = self;
        let ipc_ns = init.ready().and_then(|()| {
            std::fs::File::open(format!("/proc/{}/ns/ipc", init.pid()))
                .map_err(setup("open the new IPC namespace"))
        });
        let ipc_ns = match ipc_ns {
            Ok(ns) => ns,
            Err(e) => {
                init.end_alone();
                return Err(e);
            }
        };
        let (trigger, theirs) = match Channel::pair() {
            Ok(pair) => pair,
            Err(e) => {
                init.end_alone();
                return Err(setup("make the worker's trigger")(e));
            }
        };
        let forked = within_new_namespaces(
            || {
                // SAFETY: the process is single-threaded (checked by
                // `within_new_namespaces`), so the child is a complete copy with no lock
                // held by a thread that does not exist in it; it runs only `body` and
                // then `_exit`s, never returning into the caller's code.
                match unsafe { nix::unistd::fork() } {
                    Ok(ForkResult::Child) => {
                        // Our copy of the caller's end: the worker must see it close.
                        // Closed by number; the value owning it is never dropped here.
                        let _ = nix::unistd::close(trigger.as_raw_fd());
                        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            body(&theirs)
                        }))
                        .unwrap_or(126);
                        crate::sys::exit_now(code)
                    }
                    Ok(ForkResult::Parent { child }) => Ok(child),
                    Err(e) => Err(NamespaceError::Spawn(e.into())),
                }
            },
            Some((&pid_ns, &ipc_ns)),
            CloneFlags::empty(),
        );
        drop(theirs);
        match forked {
            Ok(pid) => Ok(Armed { init, pid, trigger }),
            Err(e) => {
                init.end_alone();
                Err(e)
            }
        }
    }
}

/// A worker forked into its namespace and confined ahead of its item (`fdbroker each`):
/// it holds nothing of any item and waits on its trigger, so that an item's start is
/// one message: [`Armed::fire`] sends it the item's descriptors, and it execs.
#[derive(Debug)]
pub struct Armed {
    init: Init,
    pid: Pid,
    trigger: Channel,
}

impl Armed {
    /// The worker's pid (in the caller's namespace).
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Hands the worker its item: `item` (its name) and `fds` (its stdin, stdout and
    /// stderr). The worker and the namespace's init are then the caller's to reap, as
    /// [`Spare::spawn`]'s, and the trigger is returned: the worker's end closes at its
    /// `exec`, or it says there why it could not exec ([`exec_failure`]). When the
    /// worker is gone already (it could not confine itself), both are ended here and
    /// the error says so.
    pub fn fire(self, item: &[u8], fds: &[BorrowedFd<'_>; 3]) -> io::Result<(Pid, Init, Channel)> {
        let Armed { init, pid, trigger } = self;
        let sent = if item.len() > crate::spawn::worker::MAX_ITEM_NAME {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the item's name is too long",
            ))
        } else {
            trigger.send_with_fds(item, fds)
        };
        match sent {
            Ok(()) => Ok((pid, init, trigger)),
            Err(e) => {
                end_armed(pid, init);
                Err(io::Error::new(
                    e.kind(),
                    format!(
                        "the worker prepared for this item is gone (it could not confine itself?): {e}"
                    ),
                ))
            }
        }
    }

    /// Ends an armed worker never given an item, and its namespace, and waits for both.
    pub fn end(self) {
        let Armed { init, pid, trigger } = self;
        drop(trigger);
        end_armed(pid, init);
    }
}

/// What a reaped armed worker said on its trigger before it exited: why its program
/// could not be executed, or `None` (it executed it; its end closed at the `exec`).
/// Never waits: the worker, the one holder of its end, is gone.
pub fn exec_failure(trigger: &Channel) -> Option<String> {
    let _ = nix::fcntl::fcntl(
        trigger.as_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    let mut said = [0u8; 1024];
    match trigger.recv(&mut said) {
        Ok(n) => Some(String::from_utf8_lossy(&said[..n]).into_owned()),
        Err(_) => None,
    }
}

/// Kills and reaps `pid`, then ends `init`'s namespace.
fn end_armed(pid: Pid, init: Init) {
    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
    while let Err(Errno::EINTR) = waitpid(pid, Some(WaitPidFlag::__WALL)) {}
    init.end_alone();
}

/// Runs `f` with this process's children born in other namespaces — new ones made by
/// `unshare(flags)`, or the spare's `into` (PID, IPC) entered with `setns` — then goes
/// back to its own PID and IPC namespaces.
fn within_new_namespaces<T>(
    f: impl FnOnce() -> Result<T, NamespaceError>,
    into: Option<(&std::fs::File, &std::fs::File)>,
    flags: CloneFlags,
) -> Result<T, NamespaceError> {
    let threads = std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count());
    if threads != 1 {
        return Err(setup("fork")(io::Error::other(format!(
            "the broker must be single-threaded, but has {threads} threads"
        ))));
    }
    let (own, own_ipc) = own_namespaces()?;
    match into {
        None => unshare(flags).map_err(|e| setup("unshare")(e.into()))?,
        Some((pid, ipc)) => setns(pid, CloneFlags::CLONE_NEWPID)
            .and_then(|()| setns(ipc, CloneFlags::CLONE_NEWIPC))
            .map_err(|e| setup("enter the spare namespaces")(e.into()))?,
    }
    let done = f();
    let back = setns(own, CloneFlags::CLONE_NEWPID)
        .and_then(|()| setns(own_ipc, CloneFlags::CLONE_NEWIPC));
    if let Err(e) = back {
        // Children would be born in the wrong namespace from here: fail loudly; what
        // `f` made is dropped (a namespace's end closes with its lifeline).
        drop(done);
        return Err(setup("re-enter the broker's own PID and IPC namespaces")(
            e.into(),
        ));
    }
    done
}

/// This process's own PID and IPC namespaces, opened once: `fdbroker each` enters other
/// namespaces and comes back twice per item, and its own never change (it always comes
/// back to them). Close-on-exec, and closed in every child that does not exec.
fn own_namespaces() -> Result<&'static (std::fs::File, std::fs::File), NamespaceError> {
    static OWN: std::sync::OnceLock<(std::fs::File, std::fs::File)> = std::sync::OnceLock::new();
    if let Some(own) = OWN.get() {
        return Ok(own);
    }
    let pid = std::fs::File::open("/proc/self/ns/pid").map_err(setup("open /proc/self/ns/pid"))?;
    let ipc = std::fs::File::open("/proc/self/ns/ipc").map_err(setup("open /proc/self/ns/ipc"))?;
    Ok(OWN.get_or_init(|| (pid, ipc)))
}

/// Forks the namespace's init (pid 1 of the namespace the caller's next child is born
/// in) and waits until it is confined and serving.
fn start_init(init_sandbox: PreparedSandbox, hold: Option<RawFd>) -> Result<Init, NamespaceError> {
    let init = fork_init(init_sandbox, hold, false)?;
    if let Err(e) = init.ready() {
        init.end_alone();
        return Err(e);
    }
    Ok(init)
}

/// [`start_init`] without the wait: the caller reads [`Init::ready`] before it starts
/// anything in the namespace.
#[allow(unsafe_code)] // the fork of init
/// With `own_ipc`, init unshares its IPC namespace itself, before it confines itself
/// (the caller unshared only the PID namespace).
fn fork_init(
    init_sandbox: PreparedSandbox,
    hold: Option<RawFd>,
    own_ipc: bool,
) -> Result<Init, NamespaceError> {
    let (lifeline, init_end) = Channel::pair().map_err(setup("make the init's lifeline"))?;
    // SAFETY: the process is single-threaded (checked by `spawn`), so the child is a
    // complete copy with no lock held by a thread that does not exist in it; it runs
    // only `init_main`, which never returns.
    match unsafe { nix::unistd::fork() }.map_err(|e| setup("fork the init")(e.into()))? {
        ForkResult::Child => init_main(&init_end, init_sandbox, hold, own_ipc),
        ForkResult::Parent { child } => {
            drop(init_end);
            drop(init_sandbox);
            let init = Init {
                pid: child,
                lifeline,
            };
            Ok(init)
        }
    }
}

/// Init's whole life; exits, never returns into the broker's code.
fn init_main(
    lifeline: &Channel,
    sandbox: PreparedSandbox,
    hold: Option<RawFd>,
    own_ipc: bool,
) -> ! {
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        serve_as_init(lifeline, sandbox, hold, own_ipc)
    }));
    let code = match run {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            let errno = e.raw_os_error().unwrap_or(libc::EIO).to_le_bytes();
            let _ = lifeline.send(&[FAILED, errno[0], errno[1], errno[2], errno[3]]);
            // Never `eprintln!`: it panics when stderr fails.
            let _ = writeln!(
                std::io::stderr(),
                "fdbroker: the worker's namespace init: {e}"
            );
            1
        }
        Err(_) => 1,
    };
    crate::sys::exit_now(code)
}

/// Close every descriptor init inherited but its `lifeline` and `hold`.
#[allow(unsafe_code)] // closing what it inherited
fn close_inherited(lifeline: &Channel, hold: Option<RawFd>) -> io::Result<()> {
    let own = lifeline.as_raw_fd();
    let keep = [own, hold.unwrap_or(own)];
    // SAFETY: init is a forked copy of the broker that never returns to the broker's
    // code: it serves until the lifeline closes and then `_exit`s, so no value owning a
    // closed descriptor is used or dropped again.
    unsafe { crate::sys::close_all_but(&keep) }
}

/// Confines init, then reaps every child the namespace gives it until the lifeline
/// closes.
fn serve_as_init(
    lifeline: &Channel,
    sandbox: PreparedSandbox,
    hold: Option<RawFd>,
    own_ipc: bool,
) -> io::Result<()> {
    // Out of the terminal's session, as the worker is: keys typed there signal only
    // `fdbroker run`.
    nix::unistd::setsid()?;
    if own_ipc {
        // Still root. The worker joins it (`setns`) once this process said READY.
        unshare(CloneFlags::CLONE_NEWIPC)?;
    }
    sandbox.apply()?;
    // The kernel clears the parent-death signal when the ids change, so only now. A
    // broker that died before this point closed the lifeline: seen below.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    // Not dumpable, whatever `fs.suid_dumpable` says (the kernel turns dumping off at the
    // change of ids only when it is 0): init never execs, so this lasts, and no process
    // of the sandbox's uid may read its memory or take its descriptors (the worker's
    // seccomp filter and Landlock domain refuse that too). The worker cannot be kept so:
    // its `execve` makes it dumpable again; its own uid is what protects it.
    nix::sys::prctl::set_dumpable(false)?;
    // Init is a copy of the broker and holds copies of all its descriptors; it must hold
    // none of them (above all the broker's end of the lifeline, or it would never see
    // that end close), but the transient uid's lock it holds for the namespace.
    close_inherited(lifeline, hold)?;
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    chld.thread_block()?;
    let children = SignalFd::with_flags(&chld, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
    lifeline.send(&[READY])?;
    loop {
        let mut fds = [
            PollFd::new(lifeline.as_fd(), PollFlags::POLLIN),
            PollFd::new(children.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        // The broker closed its end or died (or, against protocol, wrote): done.
        if fds[0].revents().is_some_and(|r| !r.is_empty()) {
            return Ok(());
        }
        while let Ok(Some(_)) = children.read_signal() {}
        // Orphans of the worker's tree; the worker itself is the broker's child.
        while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
    }
}
