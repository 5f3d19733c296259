//! The scan: what a scanning user feels. A generated tree of root-only files (fixed
//! seed; sizes log-uniform from 1 KiB to 256 KiB; directories 0700, files 0600), each
//! read completely and hashed with SHA-256 by one scanner thread (`scan-probe`):
//!
//! - (a) baseline: as root, plain opens;
//! - (b) as `nobody` through a real `fdbroker serve` with `Client::open_iter` (the
//!   next batch requested while the current one is hashed);
//! - (c) under `fdbroker run --transparent` (as its transient uid), plain opens, when this build
//!   has transparent mode;
//! - (d) a privileged helper started per file (fork + exec of `scan-probe one FILE`).
//!
//! The scanner measures its own loop (start-up excluded) for (a) to (c); (d) is timed
//! from here, start-ups included, since they are its cost. Page cache warm (one
//! untimed pass first), runs interleaved, medians of the repetitions.

use crate::server::Server;
use crate::stats::Sample;
use fdbroker_tests::{TempDir, fdbroker_bin, sibling_bin};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

pub struct Scan {
    pub files: usize,
    pub bytes: u64,
    pub baseline: Sample,
    pub broker: Sample,
    pub transparent: Option<Sample>,
    pub spawn: Sample,
    pub scan_slowdown: Sample,
    pub transparent_slowdown: Option<Sample>,
    pub spawn_vs_broker: Sample,
}

/// Log-uniform sizes from a fixed-seed xorshift generator: the same tree every run.
fn sizes(n: usize) -> Vec<usize> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            let (lo, hi) = (1024f64.ln(), (256.0 * 1024f64).ln());
            (lo + u * (hi - lo)).exp() as usize
        })
        .collect()
}

/// Write the tree: `n` files in directories of 100, root-only.
pub fn tree(n: usize) -> (TempDir, Vec<PathBuf>, u64) {
    use std::os::unix::fs::PermissionsExt;
    let t = TempDir::new("bench-scan");
    let data: Vec<u8> = (0..256 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let mut files = Vec::with_capacity(n);
    let mut total = 0u64;
    for (i, size) in sizes(n).into_iter().enumerate() {
        let p = t.file(
            &format!("scan/d{:03}/f{i:05}", i / 100),
            &data[..size],
            0o600,
        );
        total += size as u64;
        files.push(p);
    }
    for d in std::fs::read_dir(t.join("scan")).expect("the scan tree") {
        let d = d.expect("a scan directory").path();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).expect("0700");
    }
    std::fs::set_permissions(t.join("scan"), std::fs::Permissions::from_mode(0o700)).expect("0700");
    (t, files, total)
}

/// Run the scanner on the list `list` (its standard input); its own measurement, in
/// µs, and what it read.
///
/// Its standard error (for (c), `fdbroker run`'s audit lines) goes to a file, as the
/// broker's of (b) does, and is shown only if it fails: a pipe read here would add a
/// wake-up of this process per line to what is measured.
pub fn probe(cmd: &mut Command, list: &Path) -> (f64, String) {
    let input = std::fs::File::open(list).expect("the scan list");
    let log_path = list.with_extension("stderr.log");
    let log = std::fs::File::create(&log_path).expect("the scan's log file");
    let out = cmd
        .stdin(Stdio::from(input))
        .stderr(Stdio::from(log))
        .output()
        .expect("running scan-probe");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{text}{}",
        out.status,
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    let us = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("us="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no us= in {text:?}"));
    let digest = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("digest="))
        .unwrap_or_default()
        .to_owned();
    (us, digest)
}

fn as_nobody(cmd: &mut Command) -> &mut Command {
    cmd.uid(fdbroker_tests::nobody_uid())
        .gid(fdbroker_tests::nobody_gid())
}

/// Does this `fdbroker run` have transparent mode?
pub fn has_transparent() -> bool {
    Command::new(fdbroker_bin())
        .args(["run", "--help"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--transparent"))
}

pub fn run(n: usize, reps: usize) -> Scan {
    let (t, files, bytes) = tree(n);
    // Given on standard input (opened here, as root): the scanner as nobody could not
    // open it, and inside the sandbox nothing outside the policy is readable.
    let list = t.join("list.txt");
    let text: String = files.iter().map(|p| format!("{}\n", p.display())).collect();
    std::fs::write(&list, text).expect("the scan list");
    let probe_bin = sibling_bin("scan-probe");
    // The sandbox of (c) may run the scanner from where it lies.
    let bins = probe_bin.parent().expect("the scanner's directory");
    // The uid the scan (b) runs as ((c) runs as the run's transient uid).
    let nobody = fdbroker_tests::nobody_uid();
    let policy = format!(
        "[broker]\nsocket_mode = \"0666\"\n\
         [sandbox]\nread_only = [\"/usr\", \"/bin\", \"/lib\", \"/lib64\", \"/etc/ld.so.cache\", \"{}\"]\n\
         [[client]]\nname = \"scanner\"\nusers = [{nobody}]\n\
         [[client.allow]]\npath = \"{}/\"\naccess = [\"read\", \"directory\"]\n",
        bins.display(),
        t.join("scan").display()
    );
    let broker = Server::start("bench-scan-broker", &policy, None);
    let policy_file = t.file("run-policy.toml", policy.as_bytes(), 0o644);
    let transparent = has_transparent();

    let baseline = |list: &Path| probe(Command::new(&probe_bin).args(["plain", "-"]), list);
    let via_broker = || {
        probe(
            as_nobody(&mut Command::new(&probe_bin))
                .args(["broker", "-"])
                .env("FDBROKER_SOCKET", &broker.socket),
            &list,
        )
    };
    let via_transparent = || {
        probe(
            Command::new(fdbroker_bin())
                .args(["run", "--transparent", "--policy"])
                .arg(&policy_file)
                .arg("--")
                .arg(&probe_bin)
                .args(["plain", "-"]),
            &list,
        )
    };
    let per_file = || {
        let start = Instant::now();
        for f in &files {
            let out = Command::new(&probe_bin)
                .arg("one")
                .arg(f)
                .stdin(Stdio::null())
                .output()
                .expect("the per-file helper");
            assert!(out.status.success(), "the per-file helper failed");
        }
        start.elapsed().as_secs_f64() * 1e6
    };

    // Warm the page cache, and check every way reads the same bytes.
    let (_, want) = baseline(&list);
    assert_eq!(via_broker().1, want, "the broker scan read other bytes");
    if transparent {
        assert_eq!(
            via_transparent().1,
            want,
            "the transparent scan read other bytes"
        );
    }
    let mut s = Scan {
        files: n,
        bytes,
        baseline: Sample::default(),
        broker: Sample::default(),
        transparent: transparent.then(Sample::default),
        spawn: Sample::default(),
        scan_slowdown: Sample::default(),
        transparent_slowdown: transparent.then(Sample::default),
        spawn_vs_broker: Sample::default(),
    };
    for _ in 0..reps {
        let a = baseline(&list).0;
        let b = via_broker().0;
        let d = per_file();
        s.baseline.push(a / 1e3);
        s.broker.push(b / 1e3);
        s.spawn.push(d / 1e3);
        s.scan_slowdown.push(b / a);
        s.spawn_vs_broker.push(d / b);
        if let (Some(ts), Some(tr)) = (s.transparent.as_mut(), s.transparent_slowdown.as_mut()) {
            let c = via_transparent().0;
            ts.push(c / 1e3);
            tr.push(c / a);
        }
    }
    drop(broker);
    drop(t);
    s
}
