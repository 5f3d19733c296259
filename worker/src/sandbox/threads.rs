//! The single-thread precondition.
//!
//! Identity changes through raw system calls, `no_new_privs`, Landlock (before ABI 8's
//! `LANDLOCK_RESTRICT_SELF_TSYNC`) and seccomp without `TSYNC` apply to the calling thread
//! only. glibc does broadcast `setresuid` to every thread, but nothing else here is
//! broadcast, so a second thread would go on with every privilege. Rather than half-sandbox
//! a process, [`Sandbox::apply`](super::Sandbox::apply) refuses to run unless this is the
//! only thread.

use super::error::SandboxError;

const TASKS: &str = "/proc/self/task";

/// Fails with [`SandboxError::Threads`] unless `/proc/self/task` has exactly one entry.
///
/// In a child just forked from a multi-threaded parent this counts the child's single thread,
/// which is what spawn mode relies on.
pub(crate) fn ensure_single() -> Result<(), SandboxError> {
    let mut count = 0usize;
    for entry in std::fs::read_dir(TASKS).map_err(SandboxError::ThreadCount)? {
        entry.map_err(SandboxError::ThreadCount)?;
        count += 1;
    }
    if count == 1 {
        Ok(())
    } else {
        Err(SandboxError::Threads(count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_threads() {
        // The test harness runs tests on worker threads, and this spawns one more for
        // certain, so the count is at least 2.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let extra = std::thread::spawn(move || rx.recv().ok());
        match ensure_single() {
            Err(SandboxError::Threads(n)) => assert!(n >= 2, "{n}"),
            other => panic!("expected Threads, got {other:?}"),
        }
        drop(tx);
        extra.join().ok();
    }
}
