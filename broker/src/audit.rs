//! One structured line per decision: who, what, which rule, and the result.
//!
//! Paths come from the worker, so they are escaped before they reach the log: a
//! newline or terminal escape in a file name must not forge or hide an audit line.

use crate::audit_line::{self, Fields};
use fdbroker_shared::peer::PeerCredentials;
use fdbroker_shared::wire::Access;
use std::fmt;

/// Where audit events go (a `tracing` target, so operators can route or filter it).
pub const TARGET: &str = "fdbroker::audit";

/// A worker-supplied byte string, printed quoted with everything but printable ASCII
/// escaped as `\xNN` (and `\"`, `\\`).
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        let mut start = 0;
        for (i, &b) in self.0.iter().enumerate() {
            let plain = (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\';
            if plain {
                continue;
            }
            // Runs of plain bytes are ASCII, so from_utf8 cannot fail on them.
            f.write_str(std::str::from_utf8(&self.0[start..i]).unwrap_or(""))?;
            match b {
                b'"' => f.write_str("\\\"")?,
                b'\\' => f.write_str("\\\\")?,
                _ => write!(f, "\\x{b:02x}")?,
            }
            start = i + 1;
        }
        f.write_str(std::str::from_utf8(&self.0[start..]).unwrap_or(""))?;
        f.write_str("\"")
    }
}

/// What a decision was about: an open with an access, or a stat (the metadata of a path,
/// decided like an open for `read` or `directory`). Logged as the access word, or `stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Open(Access),
    Stat,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Open(a) => a.as_str(),
            Action::Stat => "stat",
        }
    }
}

impl From<Access> for Action {
    fn from(a: Access) -> Action {
        Action::Open(a)
    }
}

/// The outcome part of an audit line.
#[derive(Clone, Copy)]
pub enum Verdict<'a> {
    Granted { ino: u64 },
    Denied(&'a dyn fmt::Display),
    Failed(&'a dyn fmt::Display),
}

/// Record one decision: on `audit_line`'s fast path when the broker's own subscriber
/// is installed, otherwise as a `tracing` event (an embedding program's subscriber).
pub fn decision(
    peer: &PeerCredentials,
    client: &str,
    path: &[u8],
    access: impl Into<Action>,
    rule: Option<&dyn fmt::Display>,
    verdict: Verdict<'_>,
) {
    let fields = Fields {
        peer,
        client,
        path,
        access: access.into(),
        rule,
        verdict,
    };
    if !audit_line::record(&fields) {
        via_tracing(&fields);
    }
}

/// The decision as a `tracing` event; `audit_line` writes the same line by hand.
pub(crate) fn via_tracing(f: &Fields<'_>) {
    let Fields {
        peer,
        client,
        path,
        access,
        rule,
        verdict,
    } = *f;
    let rule = rule.map(|r| r.to_string());
    let rule = rule.as_deref().unwrap_or("-");
    match verdict {
        Verdict::Granted { ino } => tracing::info!(
            target: TARGET,
            uid = peer.uid, gid = peer.gid, pid = peer.pid, client,
            path = %Escaped(path), access = access.as_str(), rule,
            result = "granted", ino,
        ),
        Verdict::Denied(why) => tracing::info!(
            target: TARGET,
            uid = peer.uid, gid = peer.gid, pid = peer.pid, client,
            path = %Escaped(path), access = access.as_str(), rule,
            result = "denied", reason = %why,
        ),
        Verdict::Failed(why) => tracing::info!(
            target: TARGET,
            uid = peer.uid, gid = peer.gid, pid = peer.pid, client,
            path = %Escaped(path), access = access.as_str(), rule,
            result = "failed", reason = %why,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::Escaped;

    #[test]
    fn escapes_what_could_forge_a_line() {
        assert_eq!(Escaped(b"/a b").to_string(), "\"/a b\"");
        assert_eq!(
            Escaped(b"/x\nINFO fake\x1b[2J\"\\\xff").to_string(),
            "\"/x\\x0aINFO fake\\x1b[2J\\\"\\\\\\xff\""
        );
    }
}
