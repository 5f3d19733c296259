//! A small scanning service of the kind fdbroker is for.
//!
//! It loads its signatures (byte patterns matched with one Aho-Corasick automaton, and
//! SHA-256 hashes of known-bad files) through the broker, locks itself down, then scans
//! either the file paths on stdin or, with `--walk DIR`, every regular file beneath a
//! directory the broker lets it list (`Client::walk`). Files are fetched with
//! `Client::open_iter`, which keeps the broker opening the next batch while this one is
//! read and hashed. One line per file: `path: clean`, `path: FOUND name`, or
//! `path: ERROR reason`.
//!
//! ```text
//! fdbroker run --policy policy/examples/scanner.toml -- \
//!     target/release/examples/scanner --signatures /var/tmp/fdbroker-scan/signatures.txt \
//!     < list.txt
//! fdbroker run --policy policy/examples/scanner.toml -- \
//!     target/release/examples/scanner --signatures /var/tmp/fdbroker-scan/signatures.txt \
//!     --walk /var/tmp/fdbroker-scan/samples
//! ```
//!
//! Under `fdbroker run` the worker is already confined before it starts; with
//! `--lockdown` it also applies the sandbox itself after loading its signatures (the
//! pattern for a service started some other way: initialise, then lock down).
//!
//! Signature file, one per line (`#` starts a comment):
//! `NAME text TEXT`, `NAME hex 4D5A90`, or `NAME sha256 <64 hex digits>`.

use aho_corasick::AhoCorasick;
use fdbroker_worker::{Client, FileKind};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
    let mut walk_root: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--signatures" => signatures = args.next(),
            "--walk" => walk_root = args.next().map(PathBuf::from),
            "--lockdown" => lockdown = true,
            "-h" | "--help" => {
                println!("usage: scanner --signatures FILE [--lockdown] [--walk DIR | < paths]");
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

    let mut out = io::stdout().lock();
    let mut found = false;
    let mut verdict = |path: &Path, file: io::Result<std::fs::File>| -> Result<(), String> {
        let line = match file.and_then(|f| scan(&sigs, f)) {
            Ok(None) => "clean".to_owned(),
            Ok(Some(name)) => {
                found = true;
                format!("FOUND {name}")
            }
            Err(e) => format!("ERROR {e}"),
        };
        writeln!(out, "{}: {line}", path.display()).map_err(|e| format!("stdout: {e}"))
    };
    // Either way the files come from `open_iter`: batches of the broker's size, the next
    // one opened by the broker while this one is read and hashed.
    match walk_root {
        Some(root) => {
            // Directories the broker will not list are reported, and the walk goes on.
            let mut unlisted = Vec::new();
            let files = broker.walk(&root).filter_map(|entry| match entry {
                Ok(e) if matches!(e.file_type(), Ok(FileKind::Regular)) => Some(e.path()),
                Ok(_) => None,
                Err(e) => {
                    unlisted.push(e);
                    None
                }
            });
            for (path, file) in broker.open_iter(files) {
                verdict(&path, file)?;
            }
            for e in unlisted {
                eprintln!("scanner: not scanned: {e}");
            }
        }
        None => {
            let paths = io::stdin()
                .lock()
                .lines()
                .map_while(Result::ok)
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty())
                .map(PathBuf::from);
            for (path, file) in broker.open_iter(paths) {
                verdict(&path, file)?;
            }
        }
    }
    out.flush().map_err(|e| format!("stdout: {e}"))?;
    // Like other scanners: 1 when something was found.
    Ok(if found {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
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
