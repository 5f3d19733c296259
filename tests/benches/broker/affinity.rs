//! CPU placement for the latency measurements.
//!
//! On a small VM a round trip's time depends less on the code than on where the
//! scheduler puts the two sides: when the client and the broker sit on the same CPU a
//! wake-up is a context switch; on different CPUs it is an inter-processor interrupt to
//! an idle virtual CPU, which here costs some 20 µs each way. Left to the scheduler,
//! a run measures whichever placement it happened to choose. So the latency section
//! pins every side explicitly (the bench thread, the floor process, every thread of
//! each broker) and measures both placements.

use std::io;

/// The CPUs this process may run on.
pub fn allowed() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Restrict one thread (`tid`, 0 for the calling thread) to `cpus`.
pub fn pin_thread(tid: i32, cpus: &[usize]) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET only writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Restrict every thread of process `pid` to `cpus`.
pub fn pin_process(pid: u32, cpus: &[usize]) {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|e| panic!("listing the threads of {pid}: {e}"));
    for t in tasks {
        let tid: i32 = t
            .expect("reading /proc/PID/task")
            .file_name()
            .to_str()
            .and_then(|s| s.parse().ok())
            .expect("a thread id in /proc/PID/task");
        match pin_thread(tid, cpus) {
            Ok(()) => {}
            // A thread that exited between the listing and now.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => panic!("setting the CPU affinity of thread {tid} of {pid}: {e}"),
        }
    }
}
