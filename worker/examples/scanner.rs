//! A small scanning service of the kind fdbroker is for.
//!
//! It loads its signatures (byte patterns matched with one Aho-Corasick automaton, and
//! SHA-256 hashes of known-bad files) through the broker, locks itself down, then reads
//! file paths from stdin, fetches them from the broker in batches with `open_many`, and
//! prints one line per file: `path: clean`, `path: FOUND name`, or `path: ERROR reason`.
//!
//! ```text
//! fdbroker run --policy policy/examples/scanner.toml -- \
//!     target/release/examples/scanner --signatures /var/tmp/fdbroker-scan/signatures.txt \
//!     < list.txt
//! ```
//!
//! Under `fdbroker run` the worker is already confined before it starts; with
//! `--lockdown` it also applies the sandbox itself after loading its signatures (the
//! pattern for a service started some other way: initialise, then lock down).
//!
//! Signature file, one per line (`#` starts a comment):
//! `NAME text TEXT`, `NAME hex 4D5A90`, or `NAME sha256 <64 hex digits>`.

use aho_corasick::AhoCorasick;
use fdbroker_worker::Client;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{self, BufRead, Read, Write};
use std::process::ExitCode;

/// Files fetched per broker round trip.
const BATCH: usize = 32;
/// Bytes per read while scanning; a match may straddle reads, so the scanner keeps
/// the longest pattern's length minus one of overlap.
const CHUNK: usize = 64 * 1024;

struct Signatures {
    names: Vec<String>,
    matcher: Option<AhoCorasick>,
    longest: usize,
    hashes: HashMap<[u8; 32], String>,
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("scanner: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<ExitCode, String> {
    let mut args = std::env::args().skip(1);
    let mut signatures = None;
    let mut lockdown = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--signatures" => signatures = args.next(),
            "--lockdown" => lockdown = true,
            "-h" | "--help" => {
                println!("usage: scanner --signatures FILE [--lockdown] < paths");
                return Ok(ExitCode::SUCCESS);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let sig_path = signatures.ok_or("--signatures FILE is required")?;
    let broker = Client::from_env().map_err(|e| format!("cannot reach the broker: {e}"))?;
    let sigs = load_signatures(&broker, &sig_path)?;
    if lockdown {
        let report = fdbroker_worker::sandbox::Sandbox::new()
            .apply()
            .map_err(|e| format!("cannot lock down: {e}"))?;
        eprintln!("scanner: {report}");
    }
    eprintln!(
        "scanner: {} patterns, {} hashes loaded",
        sigs.names.len(),
        sigs.hashes.len()
    );

    let stdin = io::stdin().lock();
    let mut out = io::stdout().lock();
    let mut batch: Vec<String> = Vec::with_capacity(BATCH);
    let mut found = false;
    for line in stdin.lines() {
        let line = line.map_err(|e| format!("reading stdin: {e}"))?;
        let path = line.trim();
        if path.is_empty() {
            continue;
        }
        batch.push(path.to_owned());
        if batch.len() == BATCH {
            found |= scan_batch(&broker, &sigs, &batch, &mut out)?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        found |= scan_batch(&broker, &sigs, &batch, &mut out)?;
    }
    out.flush().map_err(|e| format!("stdout: {e}"))?;
    // Like other scanners: 1 when something was found.
    Ok(if found {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn scan_batch(
    broker: &Client,
    sigs: &Signatures,
    paths: &[String],
    out: &mut impl Write,
) -> Result<bool, String> {
    let files = broker
        .open_many(paths)
        .map_err(|e| format!("broker connection failed: {e}"))?;
    let mut found = false;
    for (path, file) in paths.iter().zip(files) {
        let verdict = match file.and_then(|f| scan(sigs, f)) {
            Ok(None) => "clean".to_owned(),
            Ok(Some(name)) => {
                found = true;
                format!("FOUND {name}")
            }
            Err(e) => format!("ERROR {e}"),
        };
        writeln!(out, "{path}: {verdict}").map_err(|e| format!("stdout: {e}"))?;
    }
    Ok(found)
}

/// Stream the file once: patterns across chunk boundaries, and the whole-file hash.
fn scan(sigs: &Signatures, mut file: std::fs::File) -> io::Result<Option<String>> {
    let keep = sigs.longest.saturating_sub(1);
    let mut window: Vec<u8> = Vec::with_capacity(CHUNK + keep);
    let mut chunk = vec![0u8; CHUNK];
    let mut hasher = Sha256::new();
    let mut hit = None;
    loop {
        let n = file.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        hasher.update(&chunk[..n]);
        if hit.is_none() {
            window.extend_from_slice(&chunk[..n]);
            if let Some(m) = sigs.matcher.as_ref().and_then(|ac| ac.find(&window)) {
                hit = Some(sigs.names[m.pattern().as_usize()].clone());
            }
            let drop_len = window.len().saturating_sub(keep);
            window.drain(..drop_len);
        }
    }
    let digest: [u8; 32] = hasher.finalize().into();
    Ok(hit.or_else(|| sigs.hashes.get(&digest).cloned()))
}

fn load_signatures(broker: &Client, path: &str) -> Result<Signatures, String> {
    let mut text = String::new();
    broker
        .open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| format!("cannot load signatures {path}: {e}"))?;
    let mut names = Vec::new();
    let mut patterns: Vec<Vec<u8>> = Vec::new();
    let mut hashes = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| format!("{path}:{}: {why}", n + 1);
        let mut parts = line.splitn(3, ' ');
        let (Some(name), Some(kind), Some(value)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected NAME KIND VALUE"));
        };
        match kind {
            "text" => {
                names.push(name.to_owned());
                patterns.push(value.as_bytes().to_vec());
            }
            "hex" => {
                names.push(name.to_owned());
                patterns.push(hex(value).ok_or_else(|| bad("bad hex pattern"))?);
            }
            "sha256" => {
                let digest: [u8; 32] = hex(value)
                    .and_then(|v| v.try_into().ok())
                    .ok_or_else(|| bad("a sha256 needs 64 hex digits"))?;
                hashes.insert(digest, name.to_owned());
            }
            other => return Err(bad(&format!("unknown kind {other:?}"))),
        }
    }
    if patterns.iter().any(|p| p.is_empty()) {
        return Err(format!("{path}: empty pattern"));
    }
    let longest = patterns.iter().map(Vec::len).max().unwrap_or(0);
    let matcher = if patterns.is_empty() {
        None
    } else {
        Some(AhoCorasick::new(&patterns).map_err(|e| format!("{path}: {e}"))?)
    };
    Ok(Signatures {
        names,
        matcher,
        longest,
        hashes,
    })
}

fn hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
