//! The scanner of the benchmark's scan (tests/benches/broker/scan.rs): reads every file
//! of a list completely and hashes it with SHA-256, one thread, and prints how long
//! that took (process start-up excluded) and what it read.
//!
//! ```text
//! LIST is a file of paths, one a line, or `-` for standard input.
//!
//! scan-probe plain LIST     open each path itself (as root: the baseline; under
//!                           `fdbroker run --transparent`: through the broker unseen)
//! scan-probe broker LIST    through the broker with Client::open_iter (FDBROKER_SOCKET
//!                           or FDBROKER_FD): the next batch in flight while hashing
//! scan-probe one FILE       hash one file (the per-file helper started by fork+exec)
//! scan-probe opens FILE N THREADS
//!                           THREADS threads open and close FILE N times in all (the
//!                           benchmark's per-open cost and thread scaling)
//! ```
//! prints `us=MICROSECONDS bytes=N files=N digest=HEX` (digest: of all the digests), or
//! for `opens`, `us=MICROSECONDS opens=N threads=N`.
#![allow(clippy::unwrap_used)]

use sha2::{Digest, Sha256};
use std::io::Read;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(arg)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: scan-probe plain|broker LIST | one FILE | opens FILE N THREADS");
        return ExitCode::from(2);
    };
    if mode == "opens" {
        let count = |i: usize| args.get(i).and_then(|v| v.parse::<usize>().ok());
        let (Some(n), Some(threads)) = (count(3), count(4)) else {
            eprintln!("usage: scan-probe opens FILE N THREADS");
            return ExitCode::from(2);
        };
        return opens(arg, n, threads.max(1));
    }
    let paths: Vec<String> = if mode == "one" {
        vec![arg.clone()]
    } else {
        let text = if arg == "-" {
            std::io::read_to_string(std::io::stdin()).unwrap()
        } else {
            std::fs::read_to_string(arg).unwrap()
        };
        text.lines().map(str::to_owned).collect()
    };
    let mut buf = vec![0u8; 256 * 1024];
    let mut all = Sha256::new();
    let mut bytes = 0u64;
    let mut files = 0u64;
    let mut hash = |mut f: std::fs::File| {
        let mut h = Sha256::new();
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            bytes += n as u64;
        }
        all.update(h.finalize());
        files += 1;
    };
    let start = Instant::now();
    match mode.as_str() {
        "plain" | "one" => {
            for p in &paths {
                hash(std::fs::File::open(p).unwrap());
            }
        }
        "broker" => {
            let client = fdbroker_worker::Client::from_env().unwrap();
            for (p, r) in client.open_iter(&paths) {
                hash(r.unwrap_or_else(|e| panic!("{p}: {e}")));
            }
        }
        other => {
            eprintln!("scan-probe: unknown mode {other}");
            return ExitCode::from(2);
        }
    }
    let us = start.elapsed().as_micros();
    let digest: String = all.finalize().iter().map(|b| format!("{b:02x}")).collect();
    println!("us={us} bytes={bytes} files={files} digest={digest}");
    ExitCode::SUCCESS
}

/// `opens FILE N THREADS`: `THREADS` threads together open (and close) `FILE` `N`
/// times, as plain `open(2)`s; prints the wall time of the whole and the opens.
fn opens(path: &str, n: usize, threads: usize) -> ExitCode {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let share = n / threads + usize::from(t < n % threads);
            s.spawn(move || {
                for _ in 0..share {
                    drop(std::fs::File::open(path).unwrap());
                }
            });
        }
    });
    let us = start.elapsed().as_micros();
    println!("us={us} opens={n} threads={threads}");
    ExitCode::SUCCESS
}
