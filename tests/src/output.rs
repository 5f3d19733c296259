//! What a child printed and what a broker answered, as text a test can assert on.

use fdbroker_worker::BrokerError;
use std::process::Output;

/// A child's stdout or stderr as text (lossy: a test asserts on what it can read).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A child's exit status and both its streams, for a failure message.
pub fn show(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The errno inside a broker error.
pub fn errno_of(e: &std::io::Error) -> i32 {
    e.get_ref()
        .and_then(|i| i.downcast_ref::<BrokerError>())
        .map(|b| b.errno)
        .unwrap_or_else(|| panic!("not a broker error: {e:?}"))
}

/// The value of `key` (e.g. `"Uid:"`) in a `/proc/PID/status` text, trimmed.
pub fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key).map(str::trim))
        .unwrap_or_else(|| panic!("{key} missing in:\n{status}"))
}
