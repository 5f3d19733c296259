//! The worker's pre-exec: runs in the child the spawn broker forks for the command
//! (root, single-threaded, not yet confined), between `fork` and `exec`, and confines it
//! into the worker (the sandbox user, the prepared sandbox) or, in transparent mode,
//! turns it into the supervisor ([`fdbroker_transparent::supervisor_main`]).
//!
//! Only system calls on values the broker prepared before it forked: the child of a
//! single-threaded parent may not allocate or take locks a missing thread could hold.

use crate::spawn::limits::InChild;
use fdbroker_worker::sandbox::PreparedSandbox;
use nix::sys::signal::{SigSet, Signal};
use std::io::{self, Write as _};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// What the forked child becomes.
pub(crate) enum Becomes {
    /// The command itself, confined by this sandbox.
    Worker(PreparedSandbox),
    /// Transparent mode's supervisor, which confines itself and forks the command as
    /// its program.
    Supervisor(Box<fdbroker_transparent::Prepared>),
}

/// Makes [`worker_pre_exec`] the hook `cmd` runs in its child before `exec`. The hook
/// owns `worker_end` (the broker connection; `fdbroker each`'s workers have none) until
/// then; the parent's copy goes when `cmd` is dropped. `limits` are applied around the
/// sandbox: the cgroups joined before it (writing `cgroup.procs` takes root), the rlimits
/// after it (lowering them needs no privilege).
#[allow(unsafe_code)] // the worker's pre-exec hook
pub(crate) fn set_pre_exec(
    cmd: &mut Command,
    worker_end: Option<OwnedFd>,
    becomes: Becomes,
    limits: InChild,
) {
    let mut becomes = Some(becomes);
    let in_child =
        move || -> io::Result<()> { worker_pre_exec(worker_end.as_ref(), becomes.take(), &limits) };
    // SAFETY: `pre_exec` runs in the forked child before exec. The parent is
    // single-threaded here (`pidns::spawn` checks it and no thread has been started),
    // so no lock can be held by a thread that does not exist in the child; the closure
    // makes system calls on values prepared in the parent.
    unsafe {
        cmd.pre_exec(in_child);
    }
}

/// Runs in the forked child: only system calls on prepared values.
fn worker_pre_exec(
    worker_end: Option<&OwnedFd>,
    becomes: Option<Becomes>,
    limits: &InChild,
) -> io::Result<()> {
    // The worker inherits stdin, stdout, stderr (checked in the parent to be no
    // directory or `O_PATH` handle) and this descriptor (its number is in
    // FDBROKER_FD), nothing else: whatever `fdbroker run` was started with above
    // stderr (a directory beneath a deny carve-out, a shell's stray pipe) would be a
    // handle past the policy. Marked close-on-exec rather than closed, so the values
    // that own them (the prepared sandbox, `Command`'s exec-error pipe) stay valid
    // until the exec; in transparent mode the program, forked from here, execs too.
    match worker_end {
        Some(end) => {
            crate::sys::cloexec_all_but(&[end.as_raw_fd()])?;
            nix::fcntl::fcntl(
                end.as_fd(),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )?;
        }
        None => crate::sys::cloexec_all_but(&[])?,
    }
    SigSet::empty().thread_set_mask()?;
    // A session of its own, so no controlling terminal: stdin, stdout and stderr may
    // still be the terminal `fdbroker run` was started from, but pushing input into a
    // terminal that is not the caller's controlling terminal (TIOCSTI) needs
    // CAP_SYS_ADMIN, so the worker cannot type commands for the shell that reads there
    // after it (the sandbox's seccomp filter refuses TIOCSTI too). Keyboard signals
    // (Ctrl-C, Ctrl-\) now reach only `fdbroker run`, which forwards them. The child of
    // `fork` is never a process-group leader, so this cannot fail with EPERM.
    nix::unistd::setsid()?;
    // Still root: the cgroups' `cgroup.procs` were opened by root.
    limits.join_cgroups()?;
    let prepared = match becomes {
        Some(Becomes::Worker(prepared)) => prepared,
        // Returns only in the program, confined; the supervisor never returns.
        Some(Becomes::Supervisor(transparent)) => {
            limits.set_rlimits()?;
            return fdbroker_transparent::supervisor_main(*transparent);
        }
        None => return Err(io::Error::other("sandbox already used")),
    };
    if let Err(e) = prepared.apply() {
        // Only the errno crosses back to the parent; say why here.
        // Never `eprintln!`: it panics when stderr fails.
        let _ = writeln!(
            std::io::stderr(),
            "fdbroker: cannot confine the worker: {e}"
        );
        return Err(e.into());
    }
    // Last: the rlimits are the program's (see `InChild::set_rlimits`); lowering them
    // needs no privilege, and the sandbox's seccomp filter allows it.
    limits.set_rlimits()?;
    // Never outlive the broker. Set only now: the kernel clears the parent-death
    // signal whenever the effective uid or gid changes, which the sandbox just did. A
    // broker that died before this point is not missed: its end of the namespace
    // init's lifeline closes once this process execs (close-on-exec), and the init
    // then takes the namespace down, this process with it (see `crate::spawn::pidns`).
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    Ok(())
}

/// The program an armed worker runs ([`armed_main`]), prepared in the parent: the
/// paths `execvp` would try, the arguments, and the environment but the item's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Exec {
    name: std::ffi::OsString,
    candidates: Vec<std::ffi::CString>,
    argv: Vec<std::ffi::CString>,
    env: Vec<std::ffi::CString>,
}

impl Exec {
    /// `program` (name and arguments) with this process's environment less `removed`.
    /// A name without a slash is looked up in `PATH` as `execvp` does: each directory
    /// tried in turn, by the worker itself, with its own rights.
    pub(crate) fn new(program: &[std::ffi::OsString], removed: &[&str]) -> io::Result<Exec> {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let bad = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{what} holds a NUL byte"),
            )
        };
        let c = |s: &std::ffi::OsStr, what: &str| CString::new(s.as_bytes()).map_err(|_| bad(what));
        let Some(name) = program.first() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no command given",
            ));
        };
        let argv = program
            .iter()
            .map(|a| c(a, "an argument"))
            .collect::<io::Result<Vec<_>>>()?;
        let candidates = if name.as_bytes().contains(&b'/') {
            vec![c(name, "the command")?]
        } else {
            let path =
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
            std::env::split_paths(&path)
                .map(|dir| {
                    let dir = if dir.as_os_str().is_empty() {
                        ".".into()
                    } else {
                        dir
                    };
                    c(dir.join(name).as_os_str(), "PATH")
                })
                .collect::<io::Result<Vec<_>>>()?
        };
        let env = std::env::vars_os()
            .filter(|(k, _)| !removed.iter().any(|r| k == r) && k != ITEM)
            .map(|(k, v)| {
                let mut kv = std::os::unix::ffi::OsStringExt::into_vec(k);
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                CString::new(kv).map_err(|_| bad("the environment"))
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Exec {
            name: name.clone(),
            candidates,
            argv,
            env,
        })
    }
}

/// The longest item name an armed worker takes ([`crate::spawn::pidns::Armed::fire`]
/// refuses longer ones): far more than a path may have.
pub(crate) const MAX_ITEM_NAME: usize = 64 * 1024;

/// The variable that tells the worker its item's name.
const ITEM: &str = "FDBROKER_ITEM";

/// An armed worker's whole life, in the child [`crate::spawn::pidns::Spare::arm`]
/// forked: confines itself exactly as [`worker_pre_exec`] confines a worker (the
/// sandbox; the rlimits last before the exec; the parent joins it to the cgroups when
/// its item comes), makes itself undumpable while it waits (no process of its uid may read it
/// or take its descriptors), then waits on `trigger` for its item: the name and three
/// descriptors (stdin, stdout, stderr). It then puts them in place and execs the
/// program, whose `execve` closes everything else (all close-on-exec). Returns the exit
/// status when it cannot: 0 when its trigger closed unused, 126 or 127 as a shell.
pub(crate) fn armed_main(
    trigger: &fdbroker_shared::Channel,
    prepared: PreparedSandbox,
    limits: &InChild,
    exec: &Exec,
) -> i32 {
    if let Err(e) = confine_armed(prepared) {
        let _ = writeln!(
            std::io::stderr(),
            "fdbroker: cannot confine the worker: {e}"
        );
        return 126;
    }
    // Hold nothing of the parent's while waiting, above all not its ends of other
    // namespaces' lifelines (which must close for those to end) nor their uids' locks,
    // nor its stdin, stdout and stderr. From here on, why it cannot start is said on the
    // trigger, which the parent reads once this process is reaped.
    if close_inherited(trigger).is_err() {
        return 126;
    }
    let say = |why: String| {
        let _ = trigger.send(why.as_bytes());
        126
    };
    let mut item = vec![0u8; MAX_ITEM_NAME];
    let fds = match trigger.recv_with_fds(&mut item, 3) {
        Ok((n, fds)) if fds.len() == 3 => {
            item.truncate(n);
            fds
        }
        // Closed unused: the run ended, or the slot's next item runs another program.
        Err(fdbroker_shared::RecvError::Protocol(fdbroker_shared::ProtocolError::Closed)) => {
            return 0;
        }
        other => {
            let why = other
                .err()
                .map_or_else(|| "not three descriptors".to_owned(), |e| e.to_string());
            return say(format!("the worker's item did not arrive whole: {why}"));
        }
    };
    if let Err(e) = put_in_place(fds) {
        return say(format!(
            "cannot put its stdin, stdout and stderr in place: {e}"
        ));
    }
    let mut env = exec.env.clone();
    let mut kv = format!("{ITEM}=").into_bytes();
    kv.extend_from_slice(&item);
    match std::ffi::CString::new(kv) {
        Ok(kv) => env.push(kv),
        Err(_) => return say("the item's name holds a NUL byte".to_owned()),
    }
    // Last before the exec, as in `worker_pre_exec` (see `InChild::set_rlimits`): the
    // limits are the program's. The cgroups were joined by the parent with the item.
    if let Err(e) = limits.set_rlimits() {
        return say(format!("cannot set the limits: {e}"));
    }
    let mut error = nix::errno::Errno::ENOENT;
    for path in &exec.candidates {
        let Err(e) = nix::unistd::execve(path, &exec.argv, &env);
        match e {
            nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR => {}
            nix::errno::Errno::EACCES => error = e,
            other => {
                error = other;
                break;
            }
        }
    }
    // Said on the trigger, which the parent reads once this process is reaped: the
    // item's verdict is then `error` with this message, as for a command `fdbroker
    // run` cannot start.
    let why = format!(
        "cannot run {}: {}",
        exec.name.to_string_lossy(),
        io::Error::from(error)
    );
    let _ = trigger.send(why.as_bytes());
    if error == nix::errno::Errno::ENOENT {
        127
    } else {
        126
    }
}

/// Closes every descriptor but `trigger`'s, stdin, stdout and stderr included (the
/// item brings its own; until they come, 0, 1 and 2 are free, and the item's land
/// there or above: [`put_in_place`] moves them from copies above 2).
#[allow(unsafe_code)] // closing what it inherited
fn close_inherited(trigger: &fdbroker_shared::Channel) -> io::Result<()> {
    // SAFETY: the armed worker is a forked copy of the broker that never returns to the
    // broker's code: it execs or `_exit`s, so no value owning a closed descriptor is
    // used or dropped again (the sandbox that held some was used up above). `close_all_but`
    // leaves 0, 1 and 2, closed here by number; nothing owns them as values here. (The
    // trigger itself is one of them when the parent runs with one of them closed.)
    unsafe { crate::sys::close_all_but(&[trigger.as_raw_fd()]) }?;
    for fd in (0..3).filter(|&fd| fd != trigger.as_raw_fd()) {
        match nix::unistd::close(fd) {
            Ok(()) | Err(nix::errno::Errno::EBADF) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Everything of [`worker_pre_exec`] before the item: the same steps in the same order.
#[allow(unsafe_code)] // resetting SIGPIPE
fn confine_armed(prepared: PreparedSandbox) -> io::Result<()> {
    crate::sys::cloexec_all_but(&[])?;
    SigSet::empty().thread_set_mask()?;
    // The broker ignores SIGPIPE; the program starts with the default, as a program
    // started by `Command` does.
    // SAFETY: setting a signal's disposition to its default installs no handler.
    unsafe {
        nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl)?;
    }
    nix::unistd::setsid()?;
    nix::unistd::chdir("/")?;
    prepared.apply().map_err(io::Error::from)?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    nix::sys::prctl::set_dumpable(false)?;
    Ok(())
}

/// Moves the item's stdin, stdout and stderr onto 0, 1 and 2 (from copies above 2,
/// so that none is overwritten by another's move), inherited by the program: `dup2`
/// clears close-on-exec on the new descriptor; the copies close at exec.
fn put_in_place(fds: Vec<OwnedFd>) -> io::Result<()> {
    let high = fds
        .iter()
        .map(OwnedFd::try_clone)
        .collect::<io::Result<Vec<_>>>()?;
    drop(fds);
    let [stdin, stdout, stderr] = <[OwnedFd; 3]>::try_from(high)
        .map_err(|_| io::Error::other("three descriptors expected"))?;
    nix::unistd::dup2_stdin(&stdin)?;
    nix::unistd::dup2_stdout(&stdout)?;
    nix::unistd::dup2_stderr(&stderr)?;
    Ok(())
}
