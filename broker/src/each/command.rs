//! `fdbroker each` itself ([`each_main`]): run by the operator as root, single-threaded;
//! reads paths from stdin, feeds them to the [`Engine`], and prints one JSON line per
//! path on stdout, in input order.
//!
//! Input is read only while the engine has room, and at most [`AHEAD`] items past the
//! oldest unprinted one are taken in, so a slow first item bounds memory instead of
//! letting results pile up. A record longer than a path can be is an `error` item,
//! skipped to its separator without being held.

use crate::each::engine::{Config, Engine, Input, Job};
use crate::each::json;
use crate::spawn::limits::Verdict;
use nix::sys::signal::{SigSet, Signal};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{self, Write as _};
use std::os::fd::AsFd;
use std::process::ExitCode;

/// Items taken in beyond the oldest not yet printed, per running slot.
pub const AHEAD: usize = 16;

/// What `fdbroker each` was asked to do.
#[derive(Debug)]
pub struct EachSpec {
    pub config: Config,
    /// `-0`: paths end with NUL instead of newline.
    pub null: bool,
    pub command: Vec<OsString>,
}

/// Exit status: 0 when every item is `ok`, 1 otherwise, 2 when nothing could start,
/// 128 + N when signal N (SIGTERM, SIGINT, SIGHUP) ended the run.
pub fn each_main(spec: EachSpec) -> ExitCode {
    // Blocked before anything is made, so that a signal can no longer kill this process
    // between making a cgroup and removing it: the engine reads them (`stop_on`).
    let mut stop = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        stop.add(s);
    }
    if let Err(e) = stop.thread_block() {
        crate::log::sink::eprint_line(&format!("fdbroker: cannot block signals: {e}"));
        return ExitCode::from(2);
    }
    let mut engine = match Engine::new(&spec.config).and_then(|mut e| {
        e.stop_on(&stop)?;
        // Killed by a signal it cannot read (SIGKILL), this process cannot remove its
        // cgroups: a process that outlives it does, as for `fdbroker run`. Forked while
        // still root, single-threaded. The items die with `each` (their parent-death
        // signal), but not at once: each directory is retried for a few seconds.
        let dirs = e.cgroup_directories();
        if !dirs.is_empty() {
            crate::spawn::scratch::after_broker_exits(move || {
                for dir in &dirs {
                    for _ in 0..50 {
                        crate::spawn::limits::remove_cgroup(dir);
                        if !dir.exists() {
                            break;
                        }
                    }
                }
            })?;
        }
        // Ready: the roots are open, the uids taken, the cgroups made.
        crate::each::confine::confine_each()?;
        Ok(e)
    }) {
        Ok(e) => e,
        Err(e) => {
            crate::log::sink::eprint_line(&format!("fdbroker: {e}"));
            return ExitCode::from(2);
        }
    };
    let bound = spec.config.jobs.max(1) * AHEAD + spec.config.queue;
    let mut records = Records::new(if spec.null { 0 } else { b'\n' });
    let stdin = io::stdin();
    let mut next_id = 0u64;
    let mut next_print = 0u64;
    let mut pending = BTreeMap::new();
    let mut all_ok = true;
    let mut out = io::stdout().lock();
    loop {
        while engine.has_room() && (next_id - next_print) < bound as u64 {
            let Some(record) = records.next() else { break };
            let input = match record {
                Ok(path) => Input::Path(path),
                Err(len) => {
                    let o = crate::each::engine::Outcome {
                        id: next_id,
                        path: Vec::new(),
                        verdict: Verdict::Error,
                        exit_status: None,
                        signal: None,
                        wall_ms: 0,
                        cpu_ms: 0,
                        max_rss_kib: 0,
                        stdout: Vec::new(),
                        stdout_file: None,
                        message: Some(format!(
                            "a path of {len} bytes or more: longer than any path can be"
                        )),
                    };
                    pending.insert(next_id, o);
                    next_id += 1;
                    continue;
                }
            };
            let job = Job {
                id: next_id,
                input,
                program: spec.command.clone(),
            };
            if engine.submit(job).is_err() {
                break;
            }
            next_id += 1;
        }
        let want = !records.eof
            && !records.has_record()
            && engine.has_room()
            && (next_id - next_print) < bound as u64;
        if records.eof && !records.has_record() && engine.is_idle() && pending.is_empty() {
            break;
        }
        let (done, readable) = match engine.step(want.then(|| stdin.as_fd())) {
            Ok(r) => r,
            Err(e) => {
                crate::log::sink::eprint_line(&format!("fdbroker: {e}"));
                return ExitCode::from(2);
            }
        };
        for o in done {
            pending.insert(o.id, o);
        }
        if let Some(signal) = engine.stopped_by() {
            crate::log::sink::eprint_line(&format!(
                "fdbroker: {signal}: ending the running items; the rest were not run"
            ));
            // Kills the items, waits for their namespaces, removes the cgroups.
            drop(engine);
            return ExitCode::from(128 + signal as u8);
        }
        while let Some(o) = pending.remove(&next_print) {
            all_ok &= o.verdict == Verdict::Ok;
            let mut line = json::line(&o);
            line.push('\n');
            if out
                .write_all(line.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
            {
                // Nobody reads the results: stop (the engine's drop ends what runs).
                return ExitCode::from(1);
            }
            next_print += 1;
        }
        if readable && let Err(e) = records.fill(&stdin) {
            crate::log::sink::eprint_line(&format!("fdbroker: cannot read the paths: {e}"));
            records.eof = true;
            all_ok = false;
        }
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Paths split at their separator, each at most a path's length.
struct Records {
    buf: Vec<u8>,
    sep: u8,
    /// Dropping the rest of a record found too long, up to its separator.
    skipping: bool,
    eof: bool,
}

/// A record longer than this cannot be a path.
const MAX_RECORD: usize = fdbroker_policy::MAX_PATH_LEN + 1;

impl Records {
    fn new(sep: u8) -> Records {
        Records {
            buf: Vec::new(),
            sep,
            skipping: false,
            eof: false,
        }
    }

    fn has_record(&self) -> bool {
        self.buf.contains(&self.sep)
            || (self.eof && !self.buf.is_empty())
            || self.buf.len() > MAX_RECORD
    }

    /// Reads what stdin has (it was polled readable).
    fn fill(&mut self, stdin: &io::Stdin) -> io::Result<()> {
        let mut chunk = [0u8; 64 * 1024];
        let n = loop {
            match nix::unistd::read(stdin.as_fd(), &mut chunk) {
                Ok(n) => break n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if n == 0 {
            self.eof = true;
            return Ok(());
        }
        let mut data = &chunk[..n];
        if self.skipping {
            match data.iter().position(|&b| b == self.sep) {
                Some(i) => {
                    self.skipping = false;
                    data = &data[i + 1..];
                }
                None => return Ok(()),
            }
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// The next non-empty record: a path, or `Err(length)` for one too long.
    fn next(&mut self) -> Option<Result<Vec<u8>, usize>> {
        loop {
            match self.buf.iter().position(|&b| b == self.sep) {
                Some(i) if i > MAX_RECORD => {
                    self.buf.drain(..=i);
                    return Some(Err(MAX_RECORD));
                }
                Some(i) => {
                    let rec: Vec<u8> = self.buf.drain(..=i).take(i).collect();
                    if rec.is_empty() {
                        continue;
                    }
                    return Some(Ok(rec));
                }
                None if self.buf.len() > MAX_RECORD => {
                    self.buf.clear();
                    self.skipping = !self.eof;
                    return Some(Err(MAX_RECORD));
                }
                None if self.eof && !self.buf.is_empty() => {
                    return Some(Ok(std::mem::take(&mut self.buf)));
                }
                None => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_split_skip_empties_and_refuse_what_no_path_can_be() {
        let mut r = Records::new(0);
        r.buf = b"/a\n1\0\0/b".to_vec();
        assert_eq!(r.next(), Some(Ok(b"/a\n1".to_vec())));
        assert_eq!(r.next(), None, "an unterminated record waits for more");
        r.eof = true;
        assert_eq!(r.next(), Some(Ok(b"/b".to_vec())));
        let mut r = Records::new(b'\n');
        r.buf = vec![b'x'; MAX_RECORD + 10];
        assert_eq!(r.next(), Some(Err(MAX_RECORD)));
        assert!(r.skipping);
        assert!(r.buf.is_empty());
    }
}
