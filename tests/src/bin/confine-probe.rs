//! Confines itself exactly as the broker does, then reports which signals it may
//! still send (for tests/tests/confine.rs):
//!
//! ```text
//! confine-probe POLICY TARGET_PID [WORKER_PID]
//! ```
//! prints `dumpable true|false`, `make-dumpable ok|ERRNO`, then `self ok|ERRNO`, `target ok|ERRNO` and, given one, `worker ok|ERRNO`, each
//! the result of `kill(PID, 0)` after confinement; then `thread ok|ERROR` (starting a
//! thread) and `fork ok|ERRNO` (starting a process).
#![allow(clippy::unwrap_used)]

use fdbroker::Loaded;
use fdbroker_policy::Policy;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use std::path::Path;

fn probe(what: &str, pid: i32) {
    match kill(Pid::from_raw(pid), None) {
        Ok(()) => println!("{what} ok"),
        Err(e) => println!("{what} {e:?}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let policy = Policy::load(Path::new(&args[1])).unwrap();
    let target: i32 = args[2].parse().unwrap();
    let worker: Option<i32> = args.get(3).map(|w| w.parse().unwrap());
    let loaded = Loaded::new(policy, 1);
    fdbroker::confine::confine(&loaded, None, None, worker).unwrap();
    println!("dumpable {}", nix::sys::prctl::get_dumpable().unwrap());
    match nix::sys::prctl::set_dumpable(true) {
        Ok(()) => println!("make-dumpable ok"),
        Err(e) => println!("make-dumpable {e:?}"),
    }
    probe("self", nix::unistd::getpid().as_raw());
    probe("target", target);
    if let Some(w) = worker {
        probe("worker", w);
    }
    match std::thread::spawn(|| 7).join() {
        Ok(7) => println!("thread ok"),
        _ => println!("thread failed"),
    }
    // SAFETY: the child only exits at once; the process has one other thread, which has
    // finished (joined above), so nothing can be left locked in the child.
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
