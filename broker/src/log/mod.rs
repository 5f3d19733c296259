//! Log output: one line per event on stderr.
//!
//! When `JOURNAL_STREAM` names the device and inode of stderr, systemd connected it to
//! the journal: every line then starts with its syslog priority (`<3>` error, `<4>`
//! warning, `<6>` info, `<7>` debug; `sd-daemon(3)`), which journald strips and
//! records as `PRIORITY=`, and timestamps are left to the journal. A line never
//! contains a newline of its own: one that a message would carry is written as `\n`,
//! so a hostile file name can neither forge a line nor split one in the journal.
//!
//! Lines are written by [`sink`], which never panics and never blocks for long,
//! whatever happens to stderr.

pub mod file;
pub mod sink;

use std::fmt;
use std::os::fd::AsFd;
use tracing::{Dispatch, Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `key=value` text for people and journald.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// How the subscriber [`init`] installs writes lines: what a hand-made line must match to
/// land in the same stream (the audit line, `crate::audit::line`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    pub format: LogFormat,
    /// stderr is the journal: `<6>` prefix, no timestamp in text lines.
    pub journal: bool,
}

/// Install the process-wide subscriber. `FDBROKER_LOG` (an `EnvFilter` directive such as
/// `info` or `fdbroker::audit=off`) overrides the default level `info`.
///
/// Returns the style of its lines when ours is now the global subscriber; `None` when
/// one was already installed (an embedding program or a test did it), whose format this
/// module does not know.
pub fn init(format: LogFormat) -> Option<Style> {
    sink::install();
    let journal = stderr_is_journal();
    if journal {
        // Audit entries with fields of their own (`journalctl FDBROKER_RESULT=denied`);
        // without the native socket they stay lines on the journal's stream.
        let path = std::env::var_os(ENV_JOURNAL_SOCKET)
            .filter(|p| !p.is_empty())
            .map_or_else(|| sink::JOURNAL_SOCKET.into(), std::path::PathBuf::from);
        if let Err(e) = sink::install_journal(&path) {
            NATIVE_UNAVAILABLE.get_or_init(|| format!("{}: {e}", path.display()));
        }
    }
    init_style(format, journal)
}

/// The journal's native socket to use instead of `/run/systemd/journal/socket` (a test,
/// or a journald listening elsewhere).
pub const ENV_JOURNAL_SOCKET: &str = "FDBROKER_JOURNAL_SOCKET";

/// Why the journal's native socket could not be used, for one line once logging runs.
static NATIVE_UNAVAILABLE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Say (once, at debug) that audit entries go to the journal's stream without fields of
/// their own, if that is so.
pub fn report_journal() {
    if let Some(why) = NATIVE_UNAVAILABLE.get() {
        tracing::debug!("journal native socket unavailable, audit lines go to stderr: {why}");
    }
}

/// [`init`], with every line going to `file` (`fdbroker run --log-file`, a file opened
/// for appending) instead of stderr: never the journal's format there. `Err` when the
/// log destination was decided already.
pub fn init_to_file(
    format: LogFormat,
    file: std::os::fd::OwnedFd,
) -> Result<Option<Style>, std::io::Error> {
    sink::install_file(file).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "the log destination was chosen before --log-file could be",
        )
    })?;
    Ok(init_style(format, false))
}

fn init_style(format: LogFormat, journal: bool) -> Option<Style> {
    let filter = EnvFilter::try_from_env("FDBROKER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Already installed: keep theirs.
    dispatch(format, journal, filter, sink::Sink)
        .try_init()
        .ok()
        .map(|()| Style { format, journal })
}

/// The subscriber `init` installs, writing to `writer` (tests compare its lines with
/// `audit_line`'s).
pub(crate) fn dispatch<W>(
    format: LogFormat,
    journal: bool,
    filter: EnvFilter,
    writer: W,
) -> Dispatch
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // A failed write is counted by `sink`; reporting it would be a second write
        // (`eprintln!`) to the destination that just failed, which panics.
        .log_internal_errors(false)
        .with_writer(writer)
        .with_ansi(false);
    let text = format::format().with_ansi(false).with_target(true);
    let json = format::format().json().flatten_event(true);
    match (format, journal) {
        (LogFormat::Text, false) => {
            Dispatch::new(builder.event_format(Line::new(text, false)).finish())
        }
        (LogFormat::Text, true) => Dispatch::new(
            builder
                .event_format(Line::new(text.without_time(), true))
                .finish(),
        ),
        (LogFormat::Json, journal) => Dispatch::new(
            builder
                .json()
                .event_format(Line::new(json, journal))
                .finish(),
        ),
    }
}

/// Does `JOURNAL_STREAM` (`DEVICE:INODE`) describe our stderr? systemd sets it for
/// the service's stdout/stderr stream; a redirection in between makes it stale, which
/// the device and inode check catches.
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    match nix::sys::stat::fstat(std::io::stderr().as_fd()) {
        Ok(st) => st.st_dev == dev && st.st_ino == ino,
        Err(_) => false,
    }
}

/// `msg` as the line stderr gets for a fatal error: `fdbroker: msg`, with the `<3>`
/// prefix when stderr is the journal (for errors before, or outside, the subscriber).
pub fn fatal_line(msg: &dyn fmt::Display) -> String {
    let prefix = if stderr_is_journal() { "<3>" } else { "" };
    let text = msg.to_string().replace('\n', "\\n");
    format!("{prefix}fdbroker: {text}")
}

/// Write [`fatal_line`] of `msg` to stderr, never panicking (`eprintln!` panics when
/// stderr fails, turning a clean failure exit into a crash with status 101).
pub fn fatal(msg: &dyn fmt::Display) {
    sink::eprint_line(&fatal_line(msg));
}

/// Write `line` and a newline to stderr as `eprintln!` does (waiting for the reader),
/// but never panicking: for the operator's commands (`fdbroker cat`, `policy`,
/// `reload`), whose reader is a person or a script that will read. The daemons use
/// [`sink`], which never waits long.
pub fn say(line: &str) {
    use std::io::Write as _;
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(line.as_bytes());
    let _ = err.write_all(b"\n");
}

/// The syslog priority of a level (`syslog(3)`: LOG_ERR, LOG_WARNING, LOG_INFO,
/// LOG_DEBUG).
pub fn syslog_priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Wraps an event formatter: formats the event, keeps it on one line, and adds the
/// priority prefix when writing to the journal.
struct Line<F> {
    inner: F,
    journal: bool,
}

impl<F> Line<F> {
    fn new(inner: F, journal: bool) -> Line<F> {
        Line { inner, journal }
    }
}

impl<S, N, F> FormatEvent<S, N> for Line<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let mut body = line.strip_suffix('\n').unwrap_or(&line);
        if self.journal {
            write!(writer, "<{}>", syslog_priority(event.metadata().level()))?;
            // The level is padded for alignment; the journal has no use for the blank.
            body = body.trim_start();
        }
        let mut rest = body;
        while let Some(at) = rest.find(['\n', '\r']) {
            writer.write_str(&rest[..at])?;
            writer.write_str(if rest.as_bytes()[at] == b'\n' {
                "\\n"
            } else {
                "\\r"
            })?;
            rest = &rest[at + 1..];
        }
        writer.write_str(rest)?;
        writer.write_char('\n')
    }
}

#[cfg(test)]
mod tests {
    use super::syslog_priority;
    use tracing::Level;

    #[test]
    fn priorities_follow_syslog() {
        assert_eq!(syslog_priority(&Level::ERROR), 3);
        assert_eq!(syslog_priority(&Level::WARN), 4);
        assert_eq!(syslog_priority(&Level::INFO), 6);
        assert_eq!(syslog_priority(&Level::DEBUG), 7);
    }
}
