//! Waiting for a condition with a deadline, never for a fixed time.

use std::time::{Duration, Instant};

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
