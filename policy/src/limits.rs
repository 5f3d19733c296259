//! What one sandbox may use: the limits `fdbroker run` and `fdbroker each` take on the
//! command line (`--time-limit 30s`, `--memory-limit 512M`, ...) and in the policy's
//! `[sandbox]` table (`time_limit = "30s"`, ...). Only the values and their spelling
//! live here, shared by the policy file and the command line so that both accept the
//! same words; the broker enforces them (`fdbroker::spawn::limits`).
//!
//! Sizes are binary: `512M` is 512 MiB, `1G` 1 GiB, `4096` bytes (`512MB` and `512MiB`
//! are accepted too, and mean the same, as `ulimit` and container runtimes read them).
//! Durations are `humantime`'s: `30s`, `1m 30s`, `250ms`. A limit of zero is refused: it
//! would only ever mean "fail at once".

use std::time::Duration;

/// Every limit a sandbox can have; `None` is unlimited (what the kernel and the caller
/// already impose).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Wall clock from the start of the worker; then its whole PID namespace is killed.
    pub time: Option<Duration>,
    /// CPU time of each process of the sandbox (`RLIMIT_CPU`).
    pub cpu: Option<Duration>,
    /// Bytes of memory of the whole sandbox (a memory cgroup; `RLIMIT_DATA` without one).
    pub memory: Option<u64>,
    /// Processes and threads of the sandbox (a pids cgroup, and `RLIMIT_NPROC` of its uid).
    pub pids: Option<u64>,
    /// The largest file the worker may write (`RLIMIT_FSIZE`).
    pub file_size: Option<u64>,
    /// Descriptors per process (`RLIMIT_NOFILE`).
    pub nofile: Option<u64>,
    /// Bytes the worker may write to its standard output.
    pub output: Option<u64>,
}

impl Limits {
    /// Each limit from `self`, else from `fallback` (the command line over the policy).
    #[must_use]
    pub fn or(self, fallback: &Limits) -> Limits {
        Limits {
            time: self.time.or(fallback.time),
            cpu: self.cpu.or(fallback.cpu),
            memory: self.memory.or(fallback.memory),
            pids: self.pids.or(fallback.pids),
            file_size: self.file_size.or(fallback.file_size),
            nofile: self.nofile.or(fallback.nofile),
            output: self.output.or(fallback.output),
        }
    }

    /// No limit set at all.
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }
}

/// Why a limit's value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    #[error("not a size such as 4096, 64K, 512M or 2G")]
    Size,
    #[error("not a duration such as 250ms, 30s or 1m 30s")]
    Duration,
    #[error("a limit must be more than zero")]
    Zero,
    #[error("too large")]
    TooLarge,
}

/// A size in bytes: `4096`, `64K`, `512M`, `2G` (binary multiples).
pub fn size(text: &str) -> Result<u64, LimitError> {
    let n = parse_size::Config::new()
        .with_binary()
        .parse_size(text.trim())
        .map_err(|e| match e {
            parse_size::Error::PosOverflow => LimitError::TooLarge,
            _ => LimitError::Size,
        })?;
    if n == 0 { Err(LimitError::Zero) } else { Ok(n) }
}

/// A duration: `250ms`, `30s`, `1m 30s`.
pub fn duration(text: &str) -> Result<Duration, LimitError> {
    let d = humantime::parse_duration(text.trim()).map_err(|_| LimitError::Duration)?;
    if d.is_zero() {
        Err(LimitError::Zero)
    } else if d > Duration::from_secs(u64::from(u32::MAX)) {
        Err(LimitError::TooLarge)
    } else {
        Ok(d)
    }
}

/// [`duration`] in whole milliseconds (at least 1).
pub fn duration_ms(text: &str) -> Result<u64, LimitError> {
    let d = duration(text)?;
    Ok(u64::try_from(d.as_millis()).map_or(u64::MAX, |ms| ms.max(1)))
}

/// A count (`--pids-limit 64`): a positive whole number.
pub fn count(text: &str) -> Result<u64, LimitError> {
    match text.trim().parse::<u64>() {
        Ok(0) => Err(LimitError::Zero),
        Ok(n) => Ok(n),
        Err(_) => Err(LimitError::Size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_binary_and_never_zero() {
        assert_eq!(size("4096"), Ok(4096));
        assert_eq!(size("64K"), Ok(64 << 10));
        assert_eq!(size("512M"), Ok(512 << 20));
        assert_eq!(size("512MiB"), Ok(512 << 20));
        assert_eq!(size("2G"), Ok(2 << 30));
        assert_eq!(size("0"), Err(LimitError::Zero));
        assert_eq!(size("lots"), Err(LimitError::Size));
        assert_eq!(size("-1"), Err(LimitError::Size));
        assert_eq!(size("99999999999999999999999"), Err(LimitError::TooLarge));
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration_ms("250ms"), Ok(250));
        assert_eq!(duration("0s"), Err(LimitError::Zero));
        assert_eq!(duration("soon"), Err(LimitError::Duration));
        assert_eq!(duration("30"), Err(LimitError::Duration));
    }

    #[test]
    fn the_command_line_wins_limit_by_limit() {
        let policy = Limits {
            time: Some(Duration::from_secs(30)),
            memory: Some(1 << 30),
            ..Limits::default()
        };
        let cli = Limits {
            memory: Some(1 << 20),
            ..Limits::default()
        };
        let both = cli.or(&policy);
        assert_eq!(both.time, Some(Duration::from_secs(30)));
        assert_eq!(both.memory, Some(1 << 20));
        assert!(Limits::default().is_empty());
        assert!(!both.is_empty());
    }
}
