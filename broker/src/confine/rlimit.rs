//! The broker's descriptor limit.
//!
//! Descriptors the broker has sent but a worker has not yet read count against the
//! sender's `RLIMIT_NOFILE`, per user, unless it holds `CAP_SYS_RESOURCE` — which the
//! confined broker does not keep. With the usual soft limit of 1024, a couple of
//! workers that never read their replies could pin enough descriptors in flight that
//! every other worker's open fails with `ETOOMANYREFS`. So the broker raises its soft
//! limit to the hard limit at start (the hard limit is the operator's: systemd's
//! `LimitNOFILE=`), and each connection may hold only a few unread replies
//! (see `conn::REPLY_QUEUE_BYTES`).

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Raise the soft `RLIMIT_NOFILE` to the hard limit; returns the limit now in force.
pub fn raise_nofile() -> nix::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard)
}
