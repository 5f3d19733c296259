//! Log output: one line per event on stderr.

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `key=value` text for people and journald.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Install the process-wide subscriber. `FDBROKER_LOG` (an `EnvFilter` directive such as
/// `info` or `fdbroker::audit=off`) overrides the default level `info`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("FDBROKER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let result = match format {
        LogFormat::Text => builder.with_target(true).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // Already installed (an embedding program or a test did it): keep theirs.
    let _ = result;
}
