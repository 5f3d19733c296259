//! Where a server reports readiness, status and the watchdog.

use super::control::{self, Up};
use crate::systemd::notify::{Notifier, NotifyState};
use fdbroker_shared::Channel;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where readiness, status and the watchdog go: the service manager itself, or the
/// monitor that started this server (which tells the service manager).
#[derive(Debug)]
pub(super) enum Sink {
    Manager(Notifier),
    Monitor(Channel),
}

/// The service manager this broker reports to.
#[derive(Debug)]
pub(super) struct Manager {
    pub(super) sink: Sink,
    /// `WATCHDOG=1` is due this long after the last one (half the timeout, less a
    /// tick), and when it was last sent.
    pub(super) watchdog: Option<(Duration, Mutex<Instant>)>,
    /// The last `STATUS=` text sent, and when.
    pub(super) last_status: Mutex<(String, Instant)>,
}

impl Manager {
    pub(super) fn send(&self, states: &[NotifyState<'_>]) {
        match &self.sink {
            Sink::Manager(n) => {
                if let Err(e) = n.send(states) {
                    tracing::warn!(socket = %n.socket_name(), error = %e, "cannot notify the service manager");
                }
            }
            Sink::Monitor(ch) => {
                // The monitor says RELOADING and STOPPING itself; it needs to hear
                // only that this server is ready, its status, and that it is alive.
                let status = states.iter().find_map(|s| match s {
                    NotifyState::Status(t) => Some(*t),
                    _ => None,
                });
                let msg = if states.iter().any(|s| matches!(s, NotifyState::Ready)) {
                    Up::Ready {
                        status: status.unwrap_or_default().to_owned(),
                    }
                } else if states.iter().any(|s| matches!(s, NotifyState::Watchdog)) {
                    Up::Alive
                } else if let Some(text) = status {
                    Up::Status {
                        text: text.to_owned(),
                    }
                } else {
                    return;
                };
                if let Err(e) = control::send_up(ch, &msg, None) {
                    tracing::debug!(error = %e, "cannot report to the monitor");
                }
            }
        }
    }
}
