//! Waiting for a condition with a deadline, never for a fixed time.

use std::time::{Duration, Instant};

/// How long a test waits for something that must happen (a line, an exit, a process
/// gone) before calling it a hang. Only a bound against a suite that never ends, never a
/// claim about speed: a healthy run gets there as soon as the event happens, so it
/// costs nothing, and it is long enough that no load on a shared CI machine reaches it.
/// (A test that waits to see that something does *not* happen uses its own short
/// window: a slow machine can only make it pass, never fail.) Speed is measured in the
/// benchmark, against a floor in the same run.
pub const HANG: Duration = Duration::from_secs(180);

/// Wait until `f` holds, or `limit` passes; whether it held.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait until `f` holds; if `limit` passes first, panic with what `what` says then (it
/// is asked only on failure, so it may read a log).
pub fn wait_until(limit: Duration, what: impl Fn() -> String, f: impl FnMut() -> bool) {
    if !eventually(limit, f) {
        panic!("timed out after {limit:?}: {}", what());
    }
}
