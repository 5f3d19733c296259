//! Confines itself exactly as the broker does, then reports which signals it may
//! still send (for tests/tests/confine.rs):
//!
//! ```text
//! confine-probe POLICY TARGET_PID [WORKER_PID]
//! ```
//! prints `dumpable true|false`, `make-dumpable ok|ERRNO`, `self ok|ERRNO`, then one
//! `target WAY ok|ERRNO` line for each way of signalling TARGET_PID (signal 0, so none is
//! delivered, except `sigio`, below) and, given one, `worker ok|ERRNO`: `kill(PID, 0)`.
//!
//! The ways: `kill`, `tkill`, `tgkill`, `sigqueue` (`rt_sigqueueinfo`), `tgsigqueue`
//! (`rt_tgsigqueueinfo`), `pidfd` (`pidfd_send_signal` on a pidfd opened before
//! confining), `setown` and `setown-ex` (`fcntl` `F_SETOWN`/`F_SETOWN_EX`, which make the
//! kernel send `SIGIO` to the owner whenever the descriptor becomes ready; the
//! permission check for that looks only at the uid of whoever set the owner). If
//! `setown` succeeds, the probe also makes a pipe ready, which delivers `SIGIO` to the
//! target: the test can see whether it survived. Last, `thread ok|failed` (starting a
//! thread) and `fork ok|ERRNO` (starting a process).
#![allow(clippy::unwrap_used)]

use fdbroker::Loaded;
use fdbroker_policy::Policy;
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use std::os::fd::AsRawFd;
use std::path::Path;

fn report(what: &str, rc: libc::c_long) {
    if rc == 0 {
        println!("{what} ok");
    } else {
        println!("{what} {:?}", Errno::last());
    }
}

fn probe(what: &str, pid: i32) {
    match kill(Pid::from_raw(pid), None) {
        Ok(()) => println!("{what} ok"),
        Err(e) => println!("{what} {e:?}"),
    }
}

/// `F_SETOWN_EX` and `F_OWNER_PID` from the kernel's `include/uapi/asm-generic/fcntl.h`
/// (the same on x86_64 and aarch64; the `libc` crate lacks them).
const F_SETOWN_EX: libc::c_int = 15;
const F_OWNER_PID: libc::c_int = 1;

/// A `siginfo_t` as `sigqueue(3)` fills it: `si_code` `SI_QUEUE`, the rest zero.
fn queued_info() -> [i32; 32] {
    let mut info = [0i32; 32];
    info[2] = libc::SI_QUEUE;
    info
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let policy = Policy::load(Path::new(&args[1])).unwrap();
    let target: i32 = args[2].parse().unwrap();
    let worker: Option<i32> = args.get(3).map(|w| w.parse().unwrap());
    let loaded = Loaded::new(policy, 1);
    // Opened before confining, as a compromised broker would find them.
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, target, 0) };
    assert!(pidfd >= 0, "{}", std::io::Error::last_os_error());
    let (ready, writer) = nix::unistd::pipe().unwrap();
    fdbroker::confine::confine(&loaded.policy, &loaded.roots, None, None, worker).unwrap();
    println!("dumpable {}", nix::sys::prctl::get_dumpable().unwrap());
    match nix::sys::prctl::set_dumpable(true) {
        Ok(()) => println!("make-dumpable ok"),
        Err(e) => println!("make-dumpable {e:?}"),
    }
    probe("self", nix::unistd::getpid().as_raw());
    let info = queued_info();
    let owner = [F_OWNER_PID, target];
    // SAFETY: each call passes integers, or a pointer to a live buffer of the size the
    // kernel reads (`siginfo_t` is 128 bytes; `f_owner_ex` two ints); a refused or
    // failing call changes nothing.
    let ways: [(&str, libc::c_long); 8] = unsafe {
        [
            ("kill", libc::syscall(libc::SYS_kill, target, 0)),
            ("tkill", libc::syscall(libc::SYS_tkill, target, 0)),
            ("tgkill", libc::syscall(libc::SYS_tgkill, target, target, 0)),
            (
                "sigqueue",
                libc::syscall(libc::SYS_rt_sigqueueinfo, target, 0, info.as_ptr()),
            ),
            (
                "tgsigqueue",
                libc::syscall(
                    libc::SYS_rt_tgsigqueueinfo,
                    target,
                    target,
                    0,
                    info.as_ptr(),
                ),
            ),
            (
                "pidfd",
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    pidfd,
                    0,
                    std::ptr::null::<u8>(),
                    0,
                ),
            ),
            (
                "setown-ex",
                libc::syscall(
                    libc::SYS_fcntl,
                    ready.as_raw_fd(),
                    F_SETOWN_EX,
                    owner.as_ptr(),
                ),
            ),
            (
                "setown",
                libc::syscall(libc::SYS_fcntl, ready.as_raw_fd(), libc::F_SETOWN, target),
            ),
        ]
    };
    let mut owned = false;
    for (way, rc) in ways {
        report(&format!("target {way}"), rc);
        owned |= way.starts_with("setown") && rc == 0;
    }
    if owned {
        // O_ASYNC, then make the pipe readable: SIGIO goes to the owner.
        let flags = nix::fcntl::fcntl(&ready, nix::fcntl::FcntlArg::F_GETFL).unwrap();
        let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_ASYNC;
        nix::fcntl::fcntl(&ready, nix::fcntl::FcntlArg::F_SETFL(flags)).unwrap();
        nix::unistd::write(&writer, b"x").unwrap();
    }
    if let Some(w) = worker {
        probe("worker", w);
    }
    match std::thread::spawn(|| 7).join() {
        Ok(7) => println!("thread ok"),
        _ => println!("thread failed"),
    }
    // SAFETY: the child only exits at once; the probe's other thread has finished
    // (joined above), so nothing can be left locked in the child.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            // SAFETY: _exit is async-signal-safe and ends the child here.
            unsafe { libc::_exit(0) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            let _ = nix::sys::wait::waitpid(child, None);
            println!("fork ok");
        }
        Err(e) => println!("fork {e:?}"),
    }
}
