//! Log lines a peer can cause at will (refused connections, protocol violations),
//! capped per time window so a flood of them cannot fill the disk or bury the audit
//! trail. The first lines of each window are written; the rest are counted and the
//! count is reported with the next line that is written.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one window lasts.
const WINDOW: Duration = Duration::from_secs(10);
/// Lines written per window.
const LINES: u32 = 20;

#[derive(Debug)]
pub struct Throttle {
    state: Mutex<Window>,
    lines: u32,
}

#[derive(Debug)]
struct Window {
    started: Option<Instant>,
    written: u32,
    suppressed: u64,
}

impl Throttle {
    pub const fn new() -> Throttle {
        Throttle::with_lines(LINES)
    }

    /// One line per window: for a condition that, once it happens, happens to every
    /// request until it clears (a burst), where one line says all there is to say.
    pub const fn once_per_window() -> Throttle {
        Throttle::with_lines(1)
    }

    const fn with_lines(lines: u32) -> Throttle {
        Throttle {
            state: Mutex::new(Window {
                started: None,
                written: 0,
                suppressed: 0,
            }),
            lines,
        }
    }

    /// May a line be written now? `Some(n)`: yes, and `n` earlier lines were
    /// suppressed since the last one written (say so in this one).
    pub fn admit(&self) -> Option<u64> {
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if w.started.is_none_or(|t| now.duration_since(t) >= WINDOW) {
            w.started = Some(now);
            w.written = 0;
        }
        if w.written >= self.lines {
            w.suppressed += 1;
            return None;
        }
        w.written += 1;
        Some(std::mem::take(&mut w.suppressed))
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_and_counted() {
        let t = Throttle::new();
        for _ in 0..LINES {
            assert_eq!(t.admit(), Some(0));
        }
        for _ in 0..5 {
            assert_eq!(t.admit(), None);
        }
        // A new window reports what the last one held back.
        t.state.lock().unwrap_or_else(|p| p.into_inner()).started =
            Instant::now().checked_sub(WINDOW);
        assert_eq!(t.admit(), Some(5));
        assert_eq!(t.admit(), Some(0));
    }
}
