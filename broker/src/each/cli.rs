//! Not a process: the limit flags `fdbroker run` and `fdbroker each` share, in the
//! words of the policy's `[sandbox]` table (`--time-limit` is `time_limit`).

use clap::Args;
use fdbroker_policy::Limits;
use fdbroker_policy::limits as parse;
use std::time::Duration;

/// The sandbox's limits; each one unset here comes from the policy's `[sandbox]` table.
#[derive(Args, Debug, Clone, Default)]
pub struct LimitArgs {
    /// Wall-clock limit (e.g. 30s): then the sandbox's whole PID namespace is killed.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    pub time_limit: Option<Duration>,
    /// CPU time of each process (RLIMIT_CPU; e.g. 10s).
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    pub cpu_limit: Option<Duration>,
    /// Memory of the whole sandbox (a memory cgroup where delegated; RLIMIT_DATA
    /// otherwise; e.g. 512M).
    #[arg(long, value_name = "SIZE", value_parser = parse::size)]
    pub memory_limit: Option<u64>,
    /// Processes and threads (a pids cgroup where delegated, and RLIMIT_NPROC of the
    /// sandbox's own uid).
    #[arg(long, value_name = "N", value_parser = parse::count)]
    pub pids_limit: Option<u64>,
    /// The largest file the worker may write (RLIMIT_FSIZE; e.g. 10M).
    #[arg(long, value_name = "SIZE", value_parser = parse::size)]
    pub file_size_limit: Option<u64>,
    /// Descriptors per process (RLIMIT_NOFILE).
    #[arg(long, value_name = "N", value_parser = parse::count)]
    pub nofile_limit: Option<u64>,
    /// Bytes the worker may write to its stdout; the sandbox is killed at the first
    /// byte past it.
    #[arg(long, value_name = "SIZE", value_parser = parse::size)]
    pub output_limit: Option<u64>,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            time: self.time_limit,
            cpu: self.cpu_limit,
            memory: self.memory_limit,
            pids: self.pids_limit,
            file_size: self.file_size_limit,
            nofile: self.nofile_limit,
            output: self.output_limit,
        }
    }
}
