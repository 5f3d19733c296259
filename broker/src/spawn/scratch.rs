//! The scratch remover: a process of its own that runs as root, unconfined but deaf to
//! every signal except `SIGKILL` and out of the terminal's session, started by the spawn
//! broker ([`Scratch::create`]) while still single-threaded; it waits for the broker to
//! exit and removes transparent mode's scratch directory (`remover_main`).
//!
//! The program's private scratch directory (its `TMPDIR`): made by the broker, owned by
//! the sandbox user, mode 0700, the only place the sandbox may write; removed after the
//! run by a small process that waits for the broker to exit (the confined broker itself
//! may no longer remove anything there).

use nix::errno::Errno;
use nix::sys::signal::SigSet;
use nix::unistd::ForkResult;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

/// The program's private scratch directory (see the module documentation).
#[derive(Debug)]
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    /// Makes the directory in the broker's temporary directory (`$TMPDIR` or `/tmp`)
    /// under a fresh name, and starts its remover. Call while single-threaded.
    pub fn create(uid: u32, gid: u32) -> io::Result<Scratch> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        let mut last = None;
        for attempt in 0..16u32 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let path = base.join(format!(
                "fdbroker-run.{}.{:08x}{attempt}",
                std::process::id(),
                nanos
            ));
            // mkdir never follows or reuses what exists: a name someone planted fails.
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    let dir = nix::fcntl::open(
                        &path,
                        nix::fcntl::OFlag::O_DIRECTORY
                            | nix::fcntl::OFlag::O_NOFOLLOW
                            | nix::fcntl::OFlag::O_CLOEXEC,
                        nix::sys::stat::Mode::empty(),
                    )?;
                    nix::unistd::fchown(
                        &dir,
                        Some(nix::unistd::Uid::from_raw(uid)),
                        Some(nix::unistd::Gid::from_raw(gid)),
                    )?;
                    let remove = path.clone();
                    after_broker_exits(move || {
                        let _ = std::fs::remove_dir_all(&remove);
                    })?;
                    return Ok(Scratch { path });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)))
    }
}

/// Forks the remover: it holds only the read end of a pipe whose write end the
/// broker keeps (close-on-exec) until it exits, however it exits; then it runs
/// `remove` (the scratch directory: `remove_dir_all` does not follow symbolic links;
/// the sandbox's cgroups, [`crate::spawn::limits`]) and exits.
#[allow(unsafe_code)] // the fork of the remover
pub(crate) fn after_broker_exits(remove: impl FnOnce()) -> io::Result<()> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: the broker is single-threaded here (spawn mode has started no thread),
    // so the child is a complete copy with no lock held by a missing thread; it runs
    // only `remover_main`, which never returns.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Child => {
            drop(write);
            remover_main(&read, remove)
        }
        ForkResult::Parent { .. } => {
            drop(read);
            // Held until the broker exits: never closed on purpose.
            std::mem::forget(write);
            Ok(())
        }
    }
}

/// The remover's whole life: wait for end of file on `lifeline`, `remove`, exit.
#[allow(unsafe_code)] // closing what it inherited
fn remover_main(lifeline: &OwnedFd, remove: impl FnOnce()) -> ! {
    // Out of the terminal's session and deaf to every signal but SIGKILL: a
    // Ctrl-C meant for `fdbroker run` must not leave the directory behind.
    let _ = nix::unistd::setsid();
    let _ = SigSet::all().thread_block();
    let keep = lifeline.as_raw_fd();
    // SAFETY: a forked child that only reads `lifeline` and then `_exit`s: no value
    // owning a closed descriptor is used or dropped again.
    let _ =
        unsafe { crate::sys::close_range(0, u32::try_from(keep).unwrap_or(0).saturating_sub(1)) };
    // SAFETY: as above.
    let _ = unsafe { crate::sys::close_all_but(&[keep]) };
    let mut buf = [0u8; 1];
    // Nothing is ever written: wait for end of file (or an error).
    while let Err(Errno::EINTR) | Ok(1..) = nix::unistd::read(lifeline, &mut buf) {}
    remove();
    crate::sys::exit_now(0)
}
