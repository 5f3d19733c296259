//! Transparent mode's own costs (issue 20), each against a floor of the same run:
//!
//! - **per open, pinned**: `scan-probe opens FILE N 1` (one 4 KiB root-only file opened
//!   and closed N times) as root, then under `fdbroker run --transparent`, everything
//!   (the broker, its supervisor, the program) pinned to one CPU; and under `syd` when
//!   it is installed (`syd -puser` with the probe's directory allowed, unless
//!   `FDBROKER_BENCH_SYD` gives its arguments),
//!   the interception sandbox it is compared with, pinned alike.
//! - **threads**: the same opens from 4 program threads against 1, unpinned: the
//!   supervisor answers calls concurrently, so 4 threads must reach at least 1.5x the
//!   throughput of 1.
//! - **contention**: a scan of root-only files (`scan-probe plain`), transparent over
//!   native, idle and with two CPU-bound neighbours (`sh` busy loops): a busy
//!   scheduler must not multiply the cost of each hop (the busy ratio at most 1.5x the
//!   idle one).
//!
//! Runs interleaved (native, transparent, syd in every repetition), medians of the
//! repetitions; per-repetition ratios.

use crate::affinity;
use crate::scan;
use crate::stats::Sample;
use fdbroker_tests::{fdbroker_bin, sibling_bin};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct Transparent {
    pub opens: usize,
    /// µs per open.
    pub native: Sample,
    pub transparent: Sample,
    pub syd: Option<Sample>,
    /// transparent / syd, per open.
    pub vs_syd: Option<Sample>,
    /// Why there is no syd row, when there is none.
    pub syd_absent: String,
    /// k opens/s, unpinned.
    pub one_thread: Sample,
    pub four_threads: Sample,
    pub threads4_vs_1: Sample,
    pub scan_files: usize,
    /// transparent / native scan time, idle and beside two CPU-bound processes.
    pub scan_idle: Sample,
    pub scan_busy: Sample,
    pub busy_vs_idle: Sample,
}

/// `syd` and the arguments it is run with, when it is on `PATH`. Without
/// `FDBROKER_BENCH_SYD`: its `user` profile (read, stat, exec and Landlock sandboxing on,
/// so every open is decided by syd) with the probe's directory added to what may be read
/// and executed (the profile allows neither outside the system's directories).
fn syd(bins: &Path) -> Option<(PathBuf, Vec<String>)> {
    let path = std::env::var_os("PATH")?;
    let bin = std::env::split_paths(&path)
        .map(|d| d.join("syd"))
        .find(|p| p.is_file())?;
    let args = match std::env::var("FDBROKER_BENCH_SYD") {
        Ok(args) => args.split_whitespace().map(str::to_owned).collect(),
        Err(_) => vec![
            "-puser".to_owned(),
            "-m".to_owned(),
            format!("allow/lock/read+{}", bins.display()),
            "-m".to_owned(),
            format!("allow/exec+{}/***", bins.display()),
        ],
    };
    Some((bin, args))
}

/// `cmd` with its process (and so every thread and child it makes) on `cpu` alone.
fn pinned(cmd: &mut Command, cpu: Option<usize>) -> &mut Command {
    if let Some(cpu) = cpu {
        // SAFETY: the closure makes one system call (sched_setaffinity) in the forked
        // child before exec, allocating nothing and taking no lock.
        unsafe {
            cmd.pre_exec(move || affinity::pin_thread(0, &[cpu]));
        }
    }
    cmd
}

/// Runs `cmd` to its end; its `us=` figure.
fn us_of(cmd: &mut Command) -> f64 {
    us_with(cmd, Stdio::null())
}

/// Runs `cmd` to its end with `stdin`; its `us=` figure.
fn us_with(cmd: &mut Command, stdin: Stdio) -> f64 {
    try_us_with(cmd, stdin).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `cmd` to its end with `stdin`; its `us=` figure, or why there is none.
fn try_us_with(cmd: &mut Command, stdin: Stdio) -> Result<f64, String> {
    let out = cmd
        .stdin(stdin)
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}\n{text}", out.status));
    }
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("us="))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no us= in {text:?}"))
}

/// Two CPU-bound processes, killed when dropped.
struct Neighbours(Vec<Child>);

impl Neighbours {
    fn start() -> Neighbours {
        Neighbours(
            (0..2)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .stdin(Stdio::null())
                        .spawn()
                        .expect("a CPU-bound neighbour")
                })
                .collect(),
        )
    }
}

impl Drop for Neighbours {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn run(opens: usize, scan_files: usize, reps: usize) -> Option<Transparent> {
    if !scan::has_transparent() {
        return None;
    }
    let (t, files, _) = scan::tree(scan_files.max(1));
    let file = files[0].clone();
    let list = t.join("transparent-list.txt");
    let text: String = files.iter().map(|p| format!("{}\n", p.display())).collect();
    std::fs::write(&list, text).expect("the scan list");
    let probe = sibling_bin("scan-probe");
    let bins = probe.parent().expect("the probe's directory");
    let policy = t.file(
        "transparent-policy.toml",
        format!(
            "[sandbox]\nread_only = [\"/usr\", \"/bin\", \"/lib\", \"/lib64\", \"/etc/ld.so.cache\", \"{}\"]\n\
             [[client]]\nname = \"scanner\"\nusers = [\"nobody\"]\n\
             [[client.allow]]\npath = \"{}/\"\naccess = [\"read\", \"directory\"]\n",
            bins.display(),
            t.join("scan").display()
        )
        .as_bytes(),
        0o644,
    );
    let cpu = affinity::allowed().last().copied();
    let under = |prog: &[&str]| {
        let mut c = Command::new(fdbroker_bin());
        c.args(["run", "--transparent", "--policy"])
            .arg(&policy)
            .arg("--")
            .arg(&probe)
            .args(prog);
        c
    };
    let opens_args = |threads: usize| -> Vec<String> {
        vec![
            "opens".to_owned(),
            file.display().to_string(),
            opens.to_string(),
            threads.to_string(),
        ]
    };
    let native = |threads, cpu| us_of(pinned(Command::new(&probe).args(opens_args(threads)), cpu));
    let transparent = |threads, cpu| {
        let args = opens_args(threads);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        us_of(pinned(&mut under(&args), cpu))
    };
    let mut syd = syd(bins);
    let via_syd = |syd: &Option<(PathBuf, Vec<String>)>, cpu| {
        syd.as_ref().map(|(bin, args)| {
            try_us_with(
                pinned(
                    Command::new(bin)
                        .args(args)
                        .arg("--")
                        .arg(&probe)
                        .args(opens_args(1)),
                    cpu,
                ),
                Stdio::null(),
            )
        })
    };
    // The list on standard input, opened here as root: it lies outside the policy.
    let listed = || Stdio::from(std::fs::File::open(&list).expect("the scan list"));
    let scan_native = || us_with(Command::new(&probe).args(["plain", "-"]), listed());
    let scan_transparent = || us_with(&mut under(&["plain", "-"]), listed());

    // Warm the page cache and every binary once.
    let _ = (native(1, cpu), transparent(1, cpu));
    // A syd that cannot run the probe (a profile or version that refuses it) is a row
    // saying so, not a missing benchmark.
    let mut syd_absent = "syd is not installed".to_owned();
    if let Some(Err(e)) = via_syd(&syd, cpu) {
        eprintln!("syd left out: {e}");
        syd_absent = "syd failed to run the probe (see stderr)".to_owned();
        syd = None;
    }
    let mut r = Transparent {
        opens,
        native: Sample::default(),
        transparent: Sample::default(),
        syd: syd.as_ref().map(|_| Sample::default()),
        vs_syd: syd.as_ref().map(|_| Sample::default()),
        syd_absent,
        one_thread: Sample::default(),
        four_threads: Sample::default(),
        threads4_vs_1: Sample::default(),
        scan_files,
        scan_idle: Sample::default(),
        scan_busy: Sample::default(),
        busy_vs_idle: Sample::default(),
    };
    let per_open = |us: f64| us / opens as f64;
    let kops = |us: f64| opens as f64 / us * 1e3;
    for _ in 0..reps {
        r.native.push(per_open(native(1, cpu)));
        let tr = per_open(transparent(1, cpu));
        r.transparent.push(tr);
        if let (Some(s), Some(v), Some(us)) =
            (r.syd.as_mut(), r.vs_syd.as_mut(), via_syd(&syd, cpu))
        {
            let us = us.unwrap_or_else(|e| panic!("syd ran the probe once, then: {e}"));
            s.push(per_open(us));
            v.push(tr / per_open(us));
        }
        let one = transparent(1, None);
        let four = transparent(4, None);
        r.one_thread.push(kops(one));
        r.four_threads.push(kops(four));
        r.threads4_vs_1.push(one / four);
        let idle = scan_transparent() / scan_native();
        let busy = {
            let _neighbours = Neighbours::start();
            scan_transparent() / scan_native()
        };
        r.scan_idle.push(idle);
        r.scan_busy.push(busy);
        r.busy_vs_idle.push(busy / idle);
    }
    drop(t);
    Some(r)
}
