//! Whether the event loop makes progress: each thread marks when it takes an event and
//! when it is done with it, and the timer feeds the watchdog only while no thread has
//! been on one event longer than the watchdog allows.
//!
//! A timer that fires proves only that one thread is free. A thread wedged in a system
//! call (a write into a stalled pipe, an open on a dead network filesystem) leaves its
//! connections unserved while the others go on feeding `WATCHDOG=1`, so the service
//! manager would never notice; with this, it does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The threads' marks. A mark is the time the thread took its event, in milliseconds
/// since `epoch` plus one; 0 while it waits for one.
#[derive(Debug)]
pub(super) struct Progress {
    epoch: Instant,
    marks: Mutex<Vec<Arc<AtomicU64>>>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            epoch: Instant::now(),
            marks: Mutex::new(Vec::new()),
        }
    }
}

/// One thread's mark.
#[derive(Debug)]
pub(super) struct Mark {
    epoch: Instant,
    at: Arc<AtomicU64>,
}

impl Mark {
    /// The thread took an event.
    pub(super) fn busy(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.at.store(ms + 1, Ordering::Release);
    }

    /// The thread is done with it and waits again.
    pub(super) fn idle(&self) {
        self.at.store(0, Ordering::Release);
    }
}

impl Progress {
    /// A mark for the calling thread, counted from now on.
    pub(super) fn mark(&self) -> Mark {
        let at = Arc::new(AtomicU64::new(0));
        super::lock(&self.marks).push(Arc::clone(&at));
        Mark {
            epoch: self.epoch,
            at,
        }
    }

    /// How long the thread longest on one event has been on it; `None` when every
    /// thread waits. The caller's own thread is busy with the timer: a few milliseconds.
    pub(super) fn longest_busy(&self) -> Option<Duration> {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        super::lock(&self.marks)
            .iter()
            .map(|m| m.load(Ordering::Acquire))
            .filter(|&at| at != 0)
            .map(|at| Duration::from_millis(now.saturating_sub(at - 1)))
            .max()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::Progress;
    use std::sync::Arc;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A thread that stays on its event is seen, from another thread, for as long as it
    /// stays; once it is done, nothing is.
    #[test]
    fn a_thread_that_stays_on_one_event_is_seen() {
        let progress = Arc::new(Progress::default());
        assert_eq!(progress.longest_busy(), None);
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (busy_tx, busy_rx) = mpsc::channel::<()>();
        let p = Arc::clone(&progress);
        let worker = std::thread::spawn(move || {
            let mark = p.mark();
            mark.busy();
            busy_tx.send(()).unwrap();
            // Wedged until released.
            release_rx.recv().unwrap();
            mark.idle();
        });
        busy_rx.recv().unwrap();
        let first = progress.longest_busy().expect("the worker is busy");
        std::thread::sleep(Duration::from_millis(50));
        let later = progress.longest_busy().expect("still busy");
        assert!(
            later >= first + Duration::from_millis(50),
            "{first:?} {later:?}"
        );
        release_tx.send(()).unwrap();
        worker.join().unwrap();
        assert_eq!(progress.longest_busy(), None);
    }
}
