//! Per-item cost of `fdbroker each -- sha256sum` against `xargs -n1 sha256sum` run as
//! root on the same small files (one fork + exec per file, no sandbox): issue 21's
//! target is at most 2x. Both read the same list of paths on stdin, one item at a time
//! (`-j 1`, `xargs -P1`), page cache warm, interleaved repetitions; each side timed
//! from here, start-up included, divided by the number of files.

use crate::stats::Sample;
use fdbroker_tests::{TempDir, fdbroker_bin};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

pub struct Each {
    pub files: usize,
    pub xargs_us: Sample,
    pub each_us: Sample,
    pub ratio: Sample,
}

pub fn run(files: usize, reps: usize) -> Each {
    let t = TempDir::new("bench-each");
    let list: Vec<PathBuf> = (0..files)
        .map(|i| {
            t.file(
                &format!("items/f{i:05}"),
                format!("item {i}\n").as_bytes(),
                0o600,
            )
        })
        .collect();
    let mut input = Vec::new();
    for p in &list {
        input.extend_from_slice(p.as_os_str().as_encoded_bytes());
        input.push(b'\n');
    }
    let policy = t.file(
        "each.toml",
        format!(
            "[[client]]\nname = \"bench\"\nusers = [\"nobody\"]\n  [[client.allow]]\n  path = \"{}/items/\"\n",
            t.path().display()
        )
        .as_bytes(),
        0o644,
    );
    let timed = |cmd: &mut Command| -> f64 {
        let start = Instant::now();
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(&input).expect("write the paths");
        drop(stdin);
        let status = child.wait().expect("wait");
        assert!(status.success(), "{cmd:?}: {status}");
        start.elapsed().as_secs_f64() * 1e6 / files as f64
    };
    let xargs = || {
        let mut c = Command::new("xargs");
        c.args(["-n1", "sha256sum"]);
        c
    };
    let each = || {
        let mut c = Command::new(fdbroker_bin());
        c.arg("each")
            .arg("--policy")
            .arg(&policy)
            .args(["-j", "1", "--", "sha256sum"])
            .env("FDBROKER_LOG", "warn");
        c
    };
    // One untimed pass of each: page cache, uid lock files, dynamic loader.
    timed(&mut xargs());
    timed(&mut each());
    let mut out = Each {
        files,
        xargs_us: Sample::default(),
        each_us: Sample::default(),
        ratio: Sample::default(),
    };
    for _ in 0..reps {
        let x = timed(&mut xargs());
        let e = timed(&mut each());
        out.xargs_us.push(x);
        out.each_us.push(e);
        out.ratio.push(e / x);
    }
    out
}
