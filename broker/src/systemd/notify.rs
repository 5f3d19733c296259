//! Telling the service manager what the broker is doing: `sd_notify(3)`.
//!
//! `NOTIFY_SOCKET` names a Unix datagram socket, by path or, with a leading `@`, in the
//! abstract namespace; each notification is one datagram of `KEY=VALUE` lines, formatted
//! by the `sd-notify` crate's [`NotifyState`]. The sending socket is made once, at
//! start-up, before the broker confines itself, so a notification later costs one
//! `sendto(2)` and never blocks the event loop for long (a send times out after
//! [`SEND_TIMEOUT`]).
//!
//! <https://www.freedesktop.org/software/systemd/man/sd_notify.html>

pub use sd_notify::NotifyState;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// How long one notification may wait for room in the manager's socket.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest `STATUS=` text sent, in bytes; longer texts are cut at a character boundary.
pub const STATUS_MAX: usize = 240;

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// `NOTIFY_SOCKET` as given, for messages.
    name: OsString,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` asks for, or `None` when it is unset or empty (not
    /// run by a service manager that listens). A value this broker cannot use (a
    /// `vsock:` address, a path too long for a socket address) is an error.
    pub fn from_env() -> io::Result<Option<Notifier>> {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET").filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let bytes = name.as_bytes();
        let addr = match bytes.first() {
            Some(b'/') => SocketAddr::from_pathname(&name)?,
            Some(b'@') => abstract_addr(&bytes[1..])?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "NOTIFY_SOCKET={}: only Unix socket paths and @abstract names are supported",
                        name.to_string_lossy()
                    ),
                ));
            }
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        Ok(Some(Notifier {
            socket,
            addr,
            name,
            watchdog: sd_notify::watchdog_enabled(),
        }))
    }

    /// The watchdog timeout the manager set for this process (`WATCHDOG_USEC`, when
    /// `WATCHDOG_PID` is unset or names this process). `WATCHDOG=1` is due at half of it.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog.filter(|d| !d.is_zero())
    }

    /// Send `states` as one datagram. `STATUS=` texts are made one line and cut to
    /// [`STATUS_MAX`] bytes, so no text can inject another key.
    pub fn send(&self, states: &[NotifyState<'_>]) -> io::Result<()> {
        let mut msg = String::new();
        for state in states {
            // Writing to a String cannot fail.
            let _ = match state {
                NotifyState::Status(text) => writeln!(msg, "STATUS={}", one_line(text, STATUS_MAX)),
                other => writeln!(msg, "{other}"),
            };
        }
        let sent = self.socket.send_to_addr(msg.as_bytes(), &self.addr)?;
        if sent == msg.len() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "notification truncated",
            ))
        }
    }

    /// `NOTIFY_SOCKET` as given.
    pub fn socket_name(&self) -> std::borrow::Cow<'_, str> {
        self.name.to_string_lossy()
    }
}

fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

/// A `STATUS=` text of whole parts: `base`, then each optional part (`(long, short)`:
/// the part as said in full, and the few words said instead when it does not fit) in
/// order, as long as [`STATUS_MAX`] allows. A part is added whole or in its short form,
/// never cut, so the line never ends mid-sentence; the journal has the details.
pub fn status_text(base: &str, parts: &[(String, &str)]) -> String {
    let mut line = one_line(base, STATUS_MAX);
    for (long, short) in parts {
        let long = one_line(long, STATUS_MAX);
        if line.len() + long.len() <= STATUS_MAX {
            line.push_str(&long);
        } else if line.len() + short.len() <= STATUS_MAX {
            line.push_str(short);
        }
    }
    line
}

/// `text` on one line (control characters become spaces) and at most `max` bytes.
pub fn one_line(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn status_parts_are_whole_or_short_never_cut() {
        use super::{STATUS_MAX, status_text};
        let long = format!("; last reload failed: {}", "x y ".repeat(100));
        let s = status_text(
            "serving p.toml: 1 connection",
            &[(long, "; last reload failed (see the journal)")],
        );
        assert_eq!(
            s,
            "serving p.toml: 1 connection; last reload failed (see the journal)"
        );
        let s = status_text("a", &[("; b".into(), "; B"), ("; c".into(), "; C")]);
        assert_eq!(s, "a; b; c");
        let base = "z".repeat(STATUS_MAX - 2);
        assert_eq!(status_text(&base, &[("; bb".into(), "; b")]), base);
    }

    #[test]
    fn status_text_is_one_bounded_line() {
        assert_eq!(one_line("a\nREADY=1\r\tb", 100), "a READY=1  b");
        assert_eq!(one_line("ééé", 5), "éé");
        assert_eq!(one_line("", 5), "");
    }
}
