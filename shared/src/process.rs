//! Process-level system calls both sides make (the broker's children before they exec
//! or exit, the transparent supervisor): one copy each, wrapped safe.
//!
//! The raw calls are in this crate's `sys`; this module is their public face.

pub use crate::sys::{cloexec_all_but, close_all_but, close_range, exit_now, pidfd_open};

/// Ask the scheduler to run the calling thread soon after it wakes (the shortest slice
/// EEVDF allows, 0.1 ms) and for the threads it starts afterwards, which inherit it.
///
/// For threads that relay a request another process waits on (a spawn broker's serving
/// threads, the transparent supervisor's answering threads): on a busy machine a woken
/// relay otherwise waits for a CPU-bound neighbour's whole slice (~3 ms) at every hop,
/// and an open makes four. A shorter slice moves its virtual deadline earlier, so the
/// kernel preempts for it on wake-up; it gets no larger share of the CPU (that is the
/// weight, the nice value, which stays as it was). Unprivileged. Before Linux 6.12 the
/// kernel ignores the request, which costs nothing; an error is returned only for the
/// caller to ignore: scheduling never decides anything.
pub fn prefer_short_slices() -> std::io::Result<()> {
    /// The kernel clamps a requested slice to at least 0.1 ms.
    const SHORTEST_NS: u64 = 100_000;
    let nice = crate::sys::own_nice()?;
    crate::sys::set_fair_slice(nice, SHORTEST_NS)
}
