//! What fdbroker costs on top of the system calls it cannot avoid (issue 6).
//!
//! One program, one run, every comparison against a floor measured in the same run:
//!
//! - **floor**: a minimal broker on the raw syscalls (see `floor.rs`), a separate
//!   process doing blocking `recv → open → sendmsg → close`; one descriptor per round
//!   trip, and 32 per message.
//! - **fdbroker**: `Client::open` and `Client::open_many` (32 paths) against a real
//!   `fdbroker serve` process with a 50-rule policy, audit lines on (default `info`
//!   level, to a file), as deployed. A second broker with the audit target switched off
//!   is measured as a diagnostic (it shows what the audit line costs).
//! - **secure floor**: the floor doing the broker's mandatory work inside its
//!   confinement (see `floor.rs`), and the same under Landlock alone, seccomp alone
//!   and neither, to split the confinement tax; and Landlock's cost per open against
//!   the depth of the file below `/`.
//! - **spawn**: fork + exec of `/bin/cat FILE` per file (the `sudo cat` way, minus sudo).
//! - **policy**: `Policy::decide` in-process at 10 and 10,000 generated rules.
//! - **memory**: broker `VmRSS` idle and with 1,000 idle connections; 10,000 held.
//! - **concurrency**: `Client::open` throughput with 1, 4 and 16 threads, one
//!   connection each.
//! - **each**: `fdbroker each -- sha256sum` per item against `xargs -n1 sha256sum`
//!   as root on the same small files (`each.rs`).
//!
//! Timed quantities are repeated, interleaved (floor, fdbroker, ... in every
//! repetition, so load from other processes hits both sides alike), and reported as
//! medians with their min..max. Ratios are medians of the per-repetition ratios.
//!
//! `cargo bench -p fdbroker-tests --bench broker` (add `-- --quick` for a CI smoke run
//! of a few seconds; `FDBROKER_BENCH_QUICK=1` does the same). The last line printed is
//! the `summary:` line.

mod affinity;
mod each;
mod floor;
mod policy;
mod scan;
mod server;
mod stats;
mod transparent;

use fdbroker_tests::TempDir;
use server::Server;
use stats::Sample;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Descriptors per batched request.
const BATCH: usize = 32;
/// Rules in the policy the measured broker serves.
const BROKER_RULES: usize = 50;
/// Size of every fixture file.
const FILE_SIZE: usize = 4096;
/// The spawn baseline's helper: a small program that opens the file and prints it.
const HELPER: &str = "/bin/cat";

struct Plan {
    quick: bool,
    reps: usize,
    warmup: usize,
    single_iters: usize,
    batch_msgs: usize,
    spawn_iters: usize,
    decide_iters: usize,
    conc_reps: usize,
    conc_ops: usize,
    idle_small: usize,
    idle_big: usize,
    scan_files: usize,
    scan_reps: usize,
    /// Opens per measurement of transparent mode's per-open cost and thread scaling,
    /// and the files of its contention scan.
    transparent_opens: usize,
    transparent_scan_files: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                reps: 5,
                warmup: 100,
                single_iters: 400,
                batch_msgs: 25,
                spawn_iters: 20,
                decide_iters: 100_000,
                conc_reps: 3,
                conc_ops: 2_400,
                idle_small: 1_000,
                idle_big: 10_000,
                scan_files: 300,
                scan_reps: 2,
                transparent_opens: 2_000,
                transparent_scan_files: 200,
            }
        } else {
            Plan {
                quick,
                reps: 9,
                warmup: 500,
                single_iters: 2_000,
                batch_msgs: 120,
                spawn_iters: 100,
                decide_iters: 1_000_000,
                conc_reps: 5,
                conc_ops: 16_000,
                idle_small: 1_000,
                idle_big: 10_000,
                scan_files: 10_000,
                scan_reps: 5,
                transparent_opens: 20_000,
                transparent_scan_files: 2_000,
            }
        }
    }
}

/// The benchmark: each table section measured by a named function, in the order the
/// rows are printed. The order of the measurements matters twice: the latency rows
/// interleave every floor and broker in each repetition (load from other processes
/// hits all sides alike), and everything after them runs unpinned.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == floor::SERVER_ARG) {
        floor::serve_main(&args[i + 1..]);
    }
    if args.first().is_some_and(|a| a == DRIVE_ARG) {
        drive(&args[1..]);
        return;
    }
    if args.first().is_some_and(|a| a == DRIVE_FLOOR_ARG) {
        drive_floor(&args[1..]);
        return;
    }
    let plan = plan_from(&args);
    let started = Instant::now();
    let load_before = loadavg();
    let fx = Fixture::new(&plan);
    let mut rows = Table::default();

    let mut lat = latency(&fx, &plan);
    // After the floors are gone, on the CPU the same-CPU rows used.
    let depth_rows = landlock_depth(&fx.tree, &fx.content, &plan, lat.last);
    // Everything from here on runs unpinned (and its children inherit the mask).
    assert_eq!(
        affinity::allowed(),
        lat.cpus,
        "the benchmark thread is still pinned"
    );
    round_trip_rows(&mut rows, &lat);
    batch_rows(&mut rows, &lat);
    secure_rows(&mut rows, &lat);
    landlock_rows(&mut rows, &depth_rows);
    spawn_rows(&mut rows, &lat);
    let d_ratio = policy_rows(&mut rows, &plan);
    let t_ratio = concurrency_rows(&mut rows, &lat, &fx, &plan);
    // The brokers of the latency rows stop before the scan and memory brokers start.
    drop(std::mem::take(&mut lat.variants));
    let sc = scan_rows(&mut rows, &plan);
    let tr = transparent_rows(&mut rows, &plan);
    each_rows(&mut rows, &plan);
    let mem = memory_rows(&mut rows, &fx, &plan);
    drop(fx);
    let load_after = loadavg();

    print_header(&plan, started, &load_before, &load_after, &lat);
    rows.print();
    println!();
    let s = Summary {
        roundtrip_ratio: lat.layouts[0].rt_ratio.median(),
        batch_ratio: lat.layouts[0].batch_ratio.median(),
        secure_roundtrip_ratio: lat.layouts[0].secure.rt_ratio.median(),
        secure_batch_ratio: lat.layouts[0].secure.batch_ratio.median(),
        scan_slowdown: sc.scan_slowdown.median(),
        transparent_slowdown: sc.transparent_slowdown.as_ref().map(Sample::median),
        spawn_speedup: lat.spawn_ratio.median(),
        policy_10k_ratio: d_ratio.median(),
        conn_kib: mem.per_conn_small,
        threads16_vs_1: t_ratio.median(),
        transparent_threads4_vs_1: tr.as_ref().map(|t| t.threads4_vs_1.median()),
        transparent_busy_vs_idle: tr.as_ref().map(|t| t.busy_vs_idle.median()),
        transparent_vs_syd: tr
            .as_ref()
            .and_then(|t| t.vs_syd.as_ref().map(Sample::median)),
        no_syd: tr
            .as_ref()
            .map_or_else(|| NO_TRANSPARENT.to_owned(), |t| t.syd_absent.clone()),
    };
    print_targets(&s, &mem);
}

/// The plan the arguments ask for (`--quick` or `FDBROKER_BENCH_QUICK`), with fewer
/// idle connections if the descriptor limit cannot be raised far enough.
fn plan_from(args: &[String]) -> Plan {
    let quick = args.iter().any(|a| a == "--quick")
        || std::env::var_os("FDBROKER_BENCH_QUICK").is_some_and(|v| !v.is_empty() && v != "0");
    for a in args {
        // cargo bench adds `--bench`; anything else (a libtest filter) means nothing here.
        if !matches!(a.as_str(), "--quick" | "--bench") {
            eprintln!("note: ignoring argument {a:?}");
        }
    }
    let mut plan = Plan::new(quick);
    let nofile = raise_nofile(plan.idle_big as u64 + 2_000);
    if (nofile as usize) < plan.idle_big + 200 {
        eprintln!("note: RLIMIT_NOFILE is {nofile}; holding fewer idle connections");
        plan.idle_big = (nofile as usize).saturating_sub(200).max(plan.idle_small);
    }
    plan
}

/// The files every method opens, the directories the 50-rule policy names (so the
/// broker opens all its roots, as in production), and that policy.
struct Fixture {
    tree: TempDir,
    content: Vec<u8>,
    files: Vec<PathBuf>,
    base: String,
    broker_table: String,
    policy_text: String,
}

impl Fixture {
    fn new(plan: &Plan) -> Fixture {
        let tree = TempDir::new("bench");
        for t in 0..BROKER_RULES / 10 {
            for d in policy::tenant_dirs(t) {
                tree.dir(&d, 0o755);
            }
        }
        let content: Vec<u8> = (0..FILE_SIZE).map(|i| (i % 251) as u8).collect();
        let files: Vec<PathBuf> = (0..64)
            .map(|i| tree.file(&format!("t00000/spool/in/f{i:04}.bin"), &content, 0o600))
            .collect();
        let base = tree
            .path()
            .to_str()
            .expect("temp dir path is UTF-8")
            .to_owned();
        let broker_table = format!(
            "max_connections = {n}\nmax_connections_per_uid = {n}\nidle_timeout = 0\n",
            n = plan.idle_big + 100
        );
        let policy_text = policy::policy_text(BROKER_RULES, &base, &broker_table);
        Fixture {
            tree,
            content,
            files,
            base,
            broker_table,
            policy_text,
        }
    }
}

/// The latency measurements: floors, fdbroker (as deployed, and diagnostic variants)
/// and spawn, per placement.
struct Latency {
    layouts: Vec<Layout>,
    variants: Vec<Variant>,
    split: Vec<SplitFloor>,
    spawn: Sample,
    spawn_ratio: Sample,
    /// Every CPU the benchmark may use, and the one the same-CPU rows ran on.
    cpus: Vec<usize>,
    last: usize,
}

/// Measure every latency row, interleaved: in each repetition, each placement, the
/// floors and the brokers one after another. Returns with everything unpinned and the
/// floors stopped; the brokers live on for the concurrency rows.
fn latency(fx: &Fixture, plan: &Plan) -> Latency {
    let tree = &fx.tree;
    let files = &fx.files;
    let policy_text = &fx.policy_text;
    let broker_table = &fx.broker_table;
    let base = fx.base.as_str();
    let mut fl = floor::Floor::start();
    // The secure floor serves the same policy's roots, with the broker's confinement.
    let secure_policy = tree.file("secure-floor.toml", policy_text.as_bytes(), 0o644);
    let mut sfl = floor::Floor::start_secure(&secure_policy, &tree.join("secure-floor.log"));
    // The same secure floor under part of the confinement, to split the tax.
    let mut split: Vec<SplitFloor> = floor::Confinement::ALL[1..]
        .iter()
        .map(|&how| SplitFloor {
            how,
            single: Sample::default(),
            batch: Sample::default(),
        })
        .collect();
    let mut split_floors: Vec<floor::Floor> = split
        .iter()
        .map(|sp| {
            let log = tree.join(&format!("secure-floor-{}.log", sp.how.arg()));
            floor::Floor::start_confined(&secure_policy, &log, sp.how)
        })
        .collect();
    let unconfined_text = policy::policy_text(
        BROKER_RULES,
        base,
        &format!("{broker_table}confine = false\n"),
    );
    let audit_off = Some("info,fdbroker::audit=off");
    // The first is what the targets are about; the others attribute its overhead.
    let variants: Vec<Variant> = [
        ("as deployed", policy_text, None),
        ("diagnostic: audit log off", policy_text, audit_off),
        ("diagnostic: confine = false", &unconfined_text, None),
        (
            "diagnostic: audit off + confine = false",
            &unconfined_text,
            audit_off,
        ),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (label, text, log))| {
        let server = Server::start(&format!("bench-broker{i}"), text, log);
        let client = server.client();
        Variant {
            label,
            server,
            client,
            single: Default::default(),
            batch: Default::default(),
        }
    })
    .collect();
    let one = &files[0];
    let one_bytes = one.as_os_str().as_bytes().to_vec();
    let batch = &files[..BATCH];
    let joined: Vec<u8> = batch
        .iter()
        .map(|p| p.as_os_str().as_bytes())
        .collect::<Vec<_>>()
        .join(&0u8);

    let fdb_open = |c: &fdbroker_worker::Client| {
        let f = c
            .open(one)
            .expect("fdbroker: Client::open of a granted file");
        drop(f);
    };
    let fdb_many = |c: &fdbroker_worker::Client| {
        let got = c.open_many(batch).expect("fdbroker: open_many");
        assert_eq!(got.len(), BATCH, "fdbroker: open_many result count");
        for r in got {
            drop(r.expect("fdbroker: open_many of a granted file"));
        }
    };
    let spawn_one = || {
        let out = Command::new(HELPER)
            .arg(one)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .expect("spawning the helper");
        assert!(out.status.success(), "{HELPER} failed: {}", out.status);
        assert_eq!(
            out.stdout.len(),
            FILE_SIZE,
            "{HELPER} printed the wrong size"
        );
    };

    // Placements (see affinity.rs): everything on one CPU (the summary's numbers: the
    // CPU cost of a round trip, free of wake-up interrupts), then the client on one CPU
    // and every server on another (the latency a cross-CPU wake-up adds, both sides).
    let cpus = affinity::allowed();
    let last = *cpus.last().expect("at least one CPU");
    let mut layouts = vec![Layout {
        name: "same CPU",
        servers: vec![last],
        client: vec![last],
        floor1: Sample::default(),
        floor32: Sample::default(),
        rt_ratio: Sample::default(),
        batch_ratio: Sample::default(),
        secure: SecureRows::default(),
    }];
    if cpus.len() >= 2 {
        layouts.push(Layout {
            name: "client and broker on different CPUs",
            servers: vec![cpus[0]],
            client: vec![last],
            floor1: Sample::default(),
            floor32: Sample::default(),
            rt_ratio: Sample::default(),
            batch_ratio: Sample::default(),
            secure: SecureRows::default(),
        });
    }
    let place = |layout: &Layout,
                 floor: &floor::Floor,
                 secure: &floor::Floor,
                 split: &[floor::Floor],
                 variants: &[Variant]| {
        affinity::pin_process(floor.pid(), &layout.servers);
        affinity::pin_process(secure.pid(), &layout.servers);
        for f in split {
            affinity::pin_process(f.pid(), &layout.servers);
        }
        for v in variants {
            affinity::pin_process(v.server.pid(), &layout.servers);
        }
        affinity::pin_thread(0, &layout.client).expect("pinning the benchmark thread");
    };

    place(&layouts[0], &fl, &sfl, &split_floors, &variants);
    for _ in 0..plan.warmup {
        assert_eq!(fl.round_trip(&one_bytes), 1);
        assert_eq!(sfl.round_trip(&one_bytes), 1);
        for f in &mut split_floors {
            assert_eq!(f.round_trip(&one_bytes), 1);
        }
        for v in &variants {
            fdb_open(&v.client);
        }
    }
    for _ in 0..plan.warmup / 20 + 1 {
        assert_eq!(fl.round_trip(&joined), BATCH);
        assert_eq!(sfl.round_trip(&joined), BATCH);
        for f in &mut split_floors {
            assert_eq!(f.round_trip(&joined), BATCH);
        }
        for v in &variants {
            fdb_many(&v.client);
        }
        spawn_one();
    }

    let mut spawn = Sample::default();
    let mut spawn_ratio = Sample::default();
    let mut variants = variants;
    for _ in 0..plan.reps {
        for (li, layout) in layouts.iter_mut().enumerate() {
            place(layout, &fl, &sfl, &split_floors, &variants);
            // Diagnostics only where the summary's numbers come from.
            let measured = if li == 0 { variants.len() } else { 1 };
            let f1 = per_op_us(plan.single_iters, 1, || {
                assert_eq!(fl.round_trip(&one_bytes), 1)
            });
            let s1 = per_op_us(plan.single_iters, 1, || {
                assert_eq!(sfl.round_trip(&one_bytes), 1)
            });
            if li == 0 {
                for (sp, f) in split.iter_mut().zip(&mut split_floors) {
                    let t = per_op_us(plan.single_iters, 1, || {
                        assert_eq!(f.round_trip(&one_bytes), 1)
                    });
                    sp.single.push(t);
                }
            }
            for v in &mut variants[..measured] {
                let t = per_op_us(plan.single_iters, 1, || fdb_open(&v.client));
                v.single[li].push(t);
            }
            let f32_ = per_op_us(plan.batch_msgs, BATCH, || {
                assert_eq!(fl.round_trip(&joined), BATCH)
            });
            let s32 = per_op_us(plan.batch_msgs, BATCH, || {
                assert_eq!(sfl.round_trip(&joined), BATCH)
            });
            if li == 0 {
                for (sp, f) in split.iter_mut().zip(&mut split_floors) {
                    let t = per_op_us(plan.batch_msgs, BATCH, || {
                        assert_eq!(f.round_trip(&joined), BATCH)
                    });
                    sp.batch.push(t);
                }
            }
            for v in &mut variants[..measured] {
                let t = per_op_us(plan.batch_msgs, BATCH, || fdb_many(&v.client));
                v.batch[li].push(t);
            }
            let (b1, b32) = (variants[0].single[li].last(), variants[0].batch[li].last());
            layout.floor1.push(f1);
            layout.floor32.push(f32_);
            layout.rt_ratio.push(b1 / f1);
            layout.batch_ratio.push(b32 / f32_);
            let sec = &mut layout.secure;
            sec.floor1.push(s1);
            sec.floor32.push(s32);
            sec.rt_ratio.push(b1 / s1);
            sec.batch_ratio.push(b32 / s32);
            sec.tax1.push(s1 / f1);
            sec.tax32.push(s32 / f32_);
            if li == 0 {
                let sp = per_op_us(plan.spawn_iters, 1, spawn_one);
                spawn.push(sp);
                spawn_ratio.push(sp / b1);
            }
        }
    }
    // The rest runs where the scheduler puts it.
    affinity::pin_thread(0, &cpus).expect("unpinning the benchmark thread");
    for v in &variants {
        affinity::pin_process(v.server.pid(), &cpus);
    }
    drop(fl);
    drop(sfl);
    drop(split_floors);
    Latency {
        layouts,
        variants,
        split,
        spawn,
        spawn_ratio,
        cpus,
        last,
    }
}

/// One descriptor per round trip: floor, fdbroker (and its diagnostics), ratio; per
/// placement.
fn round_trip_rows(rows: &mut Table, lat: &Latency) {
    for (li, l) in lat.layouts.iter().enumerate() {
        rows.sample(
            "floor",
            &format!("open + pass round trip, 1 fd, {}", l.name),
            &l.floor1,
            "µs",
        );
        for (i, v) in lat.variants.iter().enumerate() {
            let what = match i {
                0 => format!(
                    "Client::open round trip, {BROKER_RULES} rules, {}, {}",
                    v.label, l.name
                ),
                _ if li == 0 => format!("  {}", v.label),
                _ => continue,
            };
            rows.sample("fdbroker", &what, &v.single[li], "µs");
        }
        rows.sample(
            "ratio",
            &format!("fdbroker / floor, round trip, {}", l.name),
            &l.rt_ratio,
            "×",
        );
    }
}

/// 32 descriptors per message: floor, fdbroker (and its diagnostics), ratio; per
/// placement.
fn batch_rows(rows: &mut Table, lat: &Latency) {
    for (li, l) in lat.layouts.iter().enumerate() {
        rows.sample(
            "floor",
            &format!("per descriptor, 32 per message, {}", l.name),
            &l.floor32,
            "µs",
        );
        for (i, v) in lat.variants.iter().enumerate() {
            let what = match i {
                0 => format!(
                    "open_many per descriptor, 32 per request, {}, {}",
                    v.label, l.name
                ),
                _ if li == 0 => format!("  {}", v.label),
                _ => continue,
            };
            rows.sample("fdbroker", &what, &v.batch[li], "µs");
        }
        rows.sample(
            "ratio",
            &format!("fdbroker / floor, per descriptor in batches, {}", l.name),
            &l.batch_ratio,
            "×",
        );
    }
}

/// The secure floor, fdbroker against it, and the confinement tax split by mechanism;
/// per placement.
fn secure_rows(rows: &mut Table, lat: &Latency) {
    for (li, l) in lat.layouts.iter().enumerate() {
        let sec = &l.secure;
        rows.sample(
            "secure",
            &format!("secure floor: open + pass round trip, 1 fd, {}", l.name),
            &sec.floor1,
            "µs",
        );
        rows.sample(
            "ratio",
            &format!("fdbroker / secure floor, round trip, {}", l.name),
            &sec.rt_ratio,
            "×",
        );
        rows.sample(
            "ratio",
            &format!(
                "confinement tax: secure / bare floor, round trip, {}",
                l.name
            ),
            &sec.tax1,
            "×",
        );
        if li == 0 {
            split_rows(rows, &lat.split, &l.floor1, |sp| &sp.single);
        }
        rows.sample(
            "secure",
            &format!("secure floor: per descriptor, 32 per message, {}", l.name),
            &sec.floor32,
            "µs",
        );
        rows.sample(
            "ratio",
            &format!(
                "fdbroker / secure floor, per descriptor in batches, {}",
                l.name
            ),
            &sec.batch_ratio,
            "×",
        );
        rows.sample(
            "ratio",
            &format!("confinement tax: secure / bare floor, batches, {}", l.name),
            &sec.tax32,
            "×",
        );
        if li == 0 {
            split_rows(rows, &lat.split, &l.floor32, |sp| &sp.batch);
        }
    }
}

/// Landlock's cost per open against the file's depth (measured by [`landlock_depth`]).
fn landlock_rows(rows: &mut Table, depth_rows: &[(String, Sample)]) {
    for (what, sample) in depth_rows {
        rows.sample("landlock", what, sample, "µs");
    }
}

/// fork + exec per file, and against fdbroker's round trip.
fn spawn_rows(rows: &mut Table, lat: &Latency) {
    rows.sample(
        "spawn",
        &format!("fork + exec `{HELPER} FILE`, per file"),
        &lat.spawn,
        "µs",
    );
    rows.sample(
        "ratio",
        "spawn / fdbroker round trip",
        &lat.spawn_ratio,
        "×",
    );
}

/// `Policy::decide` in-process at 10 and 10,000 rules; the ratio, for the summary.
fn policy_rows(rows: &mut Table, plan: &Plan) -> Sample {
    let p10 = policy::PolicyBench::new(10);
    let p10k = policy::PolicyBench::new(10_000);
    let (mut d10, mut d10k, mut d_ratio) =
        (Sample::default(), Sample::default(), Sample::default());
    p10.time(plan.decide_iters / 10);
    p10k.time(plan.decide_iters / 10);
    for _ in 0..plan.reps {
        let a = p10.time(plan.decide_iters);
        let b = p10k.time(plan.decide_iters);
        d10.push(a);
        d10k.push(b);
        d_ratio.push(b / a);
    }
    rows.sample(
        "policy",
        &format!(
            "decide, {} rules ({}% of queries allowed)",
            p10.rules,
            p10.allowed * 100 / 4096
        ),
        &d10,
        "ns",
    );
    rows.sample(
        "policy",
        &format!(
            "decide, {} rules ({}% of queries allowed)",
            p10k.rules,
            p10k.allowed * 100 / 4096
        ),
        &d10k,
        "ns",
    );
    rows.sample("ratio", "decide at 10,000 rules / at 10", &d_ratio, "×");
    d_ratio
}

/// `Client::open` throughput with 1, 4 and 16 threads against the as-deployed broker;
/// the 16-to-1 ratio, for the summary.
fn concurrency_rows(rows: &mut Table, lat: &Latency, fx: &Fixture, plan: &Plan) -> Sample {
    // Unpinned, as deployed. One thread's rate depends on where the scheduler puts it
    // (see affinity.rs), so it is also measured with client and broker pinned to one
    // CPU, and the ratio is taken against the faster of the two: the strict baseline.
    let (cpus, last, files) = (&lat.cpus, lat.last, &fx.files);
    let thread_counts = [1usize, 4, 16];
    let mut tput: Vec<Sample> = vec![Sample::default(); thread_counts.len()];
    let mut one_pinned = Sample::default();
    let mut t_ratio = Sample::default();
    let conc_server = &lat.variants[0].server;
    for _ in 0..plan.conc_reps {
        affinity::pin_process(conc_server.pid(), &[last]);
        let pinned = throughput(conc_server, files, 1, plan.conc_ops, Some(last));
        affinity::pin_process(conc_server.pid(), cpus);
        one_pinned.push(pinned);
        let mut this = [0.0; 3];
        for (i, &n) in thread_counts.iter().enumerate() {
            this[i] = throughput(conc_server, files, n, plan.conc_ops, None);
            tput[i].push(this[i]);
        }
        t_ratio.push(this[2] / this[0].max(pinned));
    }
    for (i, &n) in thread_counts.iter().enumerate() {
        let what = format!(
            "Client::open, {n} thread{}, one connection each",
            if n == 1 { "" } else { "s" }
        );
        rows.sample("concurrency", &what, &tput[i].scaled(1e-3), "k opens/s");
        if i == 0 {
            rows.sample(
                "concurrency",
                "  1 thread, client and broker pinned to one CPU",
                &one_pinned.scaled(1e-3),
                "k opens/s",
            );
        }
    }
    rows.sample(
        "ratio",
        "throughput 16 threads / 1 thread (the faster 1-thread layout)",
        &t_ratio,
        "×",
    );
    t_ratio
}

/// The scan: what a scanning user feels (see `scan.rs`).
fn scan_rows(rows: &mut Table, plan: &Plan) -> scan::Scan {
    let sc = scan::run(plan.scan_files, plan.scan_reps);
    let mib = sc.bytes as f64 / (1 << 20) as f64;
    let tree_desc = format!("{} root-only files, {mib:.0} MiB", sc.files);
    rows.sample(
        "scan",
        &format!("(a) baseline: root, plain opens, {tree_desc}"),
        &sc.baseline,
        "ms",
    );
    rows.sample(
        "scan",
        "(b) nobody through the broker, Client::open_iter",
        &sc.broker,
        "ms",
    );
    if let Some(t) = &sc.transparent {
        rows.sample(
            "scan",
            "(c) nobody under fdbroker run --transparent, plain opens",
            t,
            "ms",
        );
    }
    rows.sample(
        "scan",
        "(d) a privileged helper started per file (fork + exec)",
        &sc.spawn,
        "ms",
    );
    rows.sample("ratio", "scan_slowdown: (b) / (a)", &sc.scan_slowdown, "×");
    if let Some(t) = &sc.transparent_slowdown {
        rows.sample("ratio", "transparent_slowdown: (c) / (a)", t, "×");
    }
    rows.sample("ratio", "(d) / (b)", &sc.spawn_vs_broker, "×");
    sc
}

/// Transparent mode's per-open cost, thread scaling and behaviour under contention
/// (see `transparent.rs`); nothing when this build has no transparent mode.
fn transparent_rows(rows: &mut Table, plan: &Plan) -> Option<transparent::Transparent> {
    let t = transparent::run(
        plan.transparent_opens,
        plan.transparent_scan_files,
        plan.reps,
    )?;
    let s = "transparent";
    let n = t.opens;
    rows.sample(
        s,
        &format!("per open, root, plain opens ({n} of one 4 KiB file), one CPU"),
        &t.native,
        "µs",
    );
    rows.sample(
        s,
        "per open, nobody under fdbroker run --transparent, one CPU",
        &t.transparent,
        "µs",
    );
    if let (Some(syd), Some(v)) = (&t.syd, &t.vs_syd) {
        rows.sample(s, "per open, under syd, one CPU", syd, "µs");
        rows.sample("ratio", "transparent per open / syd per open", v, "×");
    } else {
        rows.text(s, "per open, under syd", "n/a", &t.syd_absent);
    }
    rows.sample(
        s,
        "transparent, 1 program thread, unpinned",
        &t.one_thread,
        "k opens/s",
    );
    rows.sample(
        s,
        "transparent, 4 program threads, unpinned",
        &t.four_threads,
        "k opens/s",
    );
    rows.sample(
        "ratio",
        "transparent throughput 4 threads / 1 thread",
        &t.threads4_vs_1,
        "×",
    );
    let files = t.scan_files;
    rows.sample(
        s,
        &format!("scan of {files} files, transparent / root, idle"),
        &t.scan_idle,
        "×",
    );
    rows.sample(
        s,
        &format!("scan of {files} files, transparent / root, two CPU-bound neighbours"),
        &t.scan_busy,
        "×",
    );
    rows.sample(
        "ratio",
        "transparent scan ratio, busy / idle",
        &t.busy_vs_idle,
        "×",
    );
    Some(t)
}

/// `fdbroker each -- sha256sum` per item against `xargs -n1 sha256sum` (see `each.rs`).
fn each_rows(rows: &mut Table, plan: &Plan) {
    let files = if plan.quick { 100 } else { 1000 };
    let e = each::run(files, plan.scan_reps);
    rows.sample(
        "each",
        &format!(
            "xargs -n1 sha256sum as root, per item ({} small files)",
            e.files
        ),
        &e.xargs_us,
        "µs",
    );
    rows.sample(
        "each",
        "fdbroker each -j 1 -- sha256sum, per item (a fresh sandbox each)",
        &e.each_us,
        "µs",
    );
    rows.sample(
        "ratio",
        "each_vs_xargs: each / xargs -n1 (target <= 2)",
        &e.ratio,
        "×",
    );
}

/// A fresh broker's memory, idle and with many idle connections (see [`memory`]).
fn memory_rows(rows: &mut Table, fx: &Fixture, plan: &Plan) -> Memory {
    let mem = memory(&fx.policy_text, &fx.files[0], plan);
    rows.value(
        "memory",
        "broker VmRSS, idle (after one request)",
        mem.idle_kib as f64,
        "KiB",
    );
    rows.value(
        "memory",
        &format!("broker VmRSS, {} idle connections", plan.idle_small),
        mem.small_kib as f64,
        "KiB",
    );
    rows.value(
        "memory",
        "extra per idle connection (at 1,000)",
        mem.per_conn_small,
        "KiB",
    );
    rows.value(
        "memory",
        &format!("broker VmRSS, {} idle connections", mem.big),
        mem.big_kib as f64,
        "KiB",
    );
    rows.value(
        "memory",
        &format!("extra per idle connection (at {})", mem.big),
        mem.per_conn_big,
        "KiB",
    );
    rows.text(
        "memory",
        &format!("{} idle connections held", mem.big),
        if mem.held { "yes" } else { "NO" },
        &format!("{} broker fds", mem.broker_fds),
    );
    mem
}

/// What ran, where, under which load: the lines above the table.
fn print_header(plan: &Plan, started: Instant, load_before: &str, load_after: &str, lat: &Latency) {
    let (cpus, last) = (&lat.cpus, lat.last);
    println!();
    println!(
        "fdbroker benchmark (issue 6), {} mode, {} repetitions, {:.1} s",
        if plan.quick { "quick" } else { "full" },
        plan.reps,
        started.elapsed().as_secs_f64()
    );
    println!("host: {}", host());
    println!("load average: {load_before} at start, {load_after} at end");
    let busy = |l: &str| {
        l.split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| v > 0.5)
    };
    if busy(load_before) || busy(load_after) {
        println!(
            "note: other processes were using the CPUs; the pinned latency ratios hold up, \
             spawn and concurrency numbers suffer most"
        );
    }
    println!(
        "floor: separate process, one thread, blocking recv -> open(O_RDONLY|O_CLOEXEC) -> sendmsg(SCM_RIGHTS) -> close"
    );
    println!(
        "fdbroker: `fdbroker serve` process, default threads, {BROKER_RULES}-rule policy, audit lines (info) to a file"
    );
    println!(
        "latency rows: every side pinned (sched_setaffinity), all on CPU {last}, then the client on CPU {last} and the servers on CPU {}; the summary uses the same-CPU rows",
        cpus[0]
    );
    println!(
        "files: {FILE_SIZE} B each on {}; policy mix: {}",
        fs_type(),
        policy::MIX
    );
    println!();
}

/// A ratio to two decimals, or `n/a`.
fn na(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_owned(), |t| format!("{t:.2}"))
}

/// Each target met or missed, then the `summary:` line (the last line printed).
fn print_targets(s: &Summary, mem: &Memory) {
    let check = |name: &str, v: f64, ok: bool, target: &str| {
        println!(
            "target {name:<17} {target:<7} {v:>8.2}  {}",
            if ok { "met" } else { "MISSED" }
        );
    };
    check(
        "roundtrip_ratio",
        s.roundtrip_ratio,
        s.roundtrip_ratio <= 1.25,
        "<= 1.25",
    );
    check(
        "batch_ratio",
        s.batch_ratio,
        s.batch_ratio <= 1.25,
        "<= 1.25",
    );
    check(
        "secure_roundtrip_ratio",
        s.secure_roundtrip_ratio,
        s.secure_roundtrip_ratio <= 1.15,
        "<= 1.15",
    );
    check(
        "secure_batch_ratio",
        s.secure_batch_ratio,
        s.secure_batch_ratio <= 1.15,
        "<= 1.15",
    );
    check(
        "scan_slowdown",
        s.scan_slowdown,
        s.scan_slowdown <= 1.10,
        "<= 1.10",
    );
    let optional =
        |name: &str, v: Option<f64>, ok: fn(f64) -> bool, target: &str, why: &str| match v {
            Some(v) => check(name, v, ok(v), target),
            None => println!("target {name:<17} {target:<7}      n/a  ({why})"),
        };
    optional(
        "transparent_slowdown",
        s.transparent_slowdown,
        |t| t <= 1.5,
        "<= 1.5",
        NO_TRANSPARENT,
    );
    optional(
        "transparent_threads4_vs_1",
        s.transparent_threads4_vs_1,
        |t| t >= 1.5,
        ">= 1.5",
        NO_TRANSPARENT,
    );
    optional(
        "transparent_busy_vs_idle",
        s.transparent_busy_vs_idle,
        |t| t <= 1.5,
        "<= 1.5",
        NO_TRANSPARENT,
    );
    optional(
        "transparent_vs_syd",
        s.transparent_vs_syd,
        |t| t <= 1.0,
        "<= 1.0",
        &s.no_syd,
    );
    check(
        "spawn_speedup",
        s.spawn_speedup,
        s.spawn_speedup >= 50.0,
        ">= 50",
    );
    check(
        "policy_10k_ratio",
        s.policy_10k_ratio,
        s.policy_10k_ratio <= 2.0,
        "<= 2",
    );
    check("conn_kib", s.conn_kib, s.conn_kib <= 64.0, "<= 64");
    check(
        "threads16_vs_1",
        s.threads16_vs_1,
        s.threads16_vs_1 >= 1.5,
        ">= 1.5",
    );
    println!(
        "target {:<17} {:<7} {:>8}  {}",
        "idle_10k_held",
        "10000",
        mem.big,
        if mem.held && mem.big >= 10_000 {
            "met"
        } else {
            "MISSED"
        }
    );
    println!(
        "summary: roundtrip_ratio={:.2} batch_ratio={:.2} secure_roundtrip_ratio={:.2} secure_batch_ratio={:.2} scan_slowdown={:.2} transparent_slowdown={} spawn_speedup={:.1} policy_10k_ratio={:.2} conn_kib={:.2} threads16_vs_1={:.2} transparent_threads4_vs_1={} transparent_busy_vs_idle={} transparent_vs_syd={}",
        s.roundtrip_ratio,
        s.batch_ratio,
        s.secure_roundtrip_ratio,
        s.secure_batch_ratio,
        s.scan_slowdown,
        na(s.transparent_slowdown),
        s.spawn_speedup,
        s.policy_10k_ratio,
        s.conn_kib,
        s.threads16_vs_1,
        na(s.transparent_threads4_vs_1),
        na(s.transparent_busy_vs_idle),
        na(s.transparent_vs_syd),
    );
}

/// `--drive SOCKET N BATCH PATH...`: send N requests (`Client::open` of the first path
/// when BATCH is 1, else `open_many` of the first BATCH paths) and exit. For profiling
/// a broker under `strace -c`, `perf stat -e 'syscalls:*'` or `perf record` (see the
/// README). Prints the time per request and the CPU time the serving process (the
/// connection's peer) spent per request, from `/proc/PID/task/*/schedstat`.
const DRIVE_ARG: &str = "--drive";

fn drive(args: &[String]) {
    let usage = "usage: --drive SOCKET N BATCH PATH...";
    let [socket, n, batch, paths @ ..] = args else {
        panic!("{usage}");
    };
    let n: usize = n.parse().expect(usage);
    let batch: usize = batch.parse().expect(usage);
    assert!(batch >= 1 && paths.len() >= batch, "{usage}");
    let client = fdbroker_worker::Client::connect(socket).expect("connecting to the broker");
    let server = nix::sys::socket::getsockopt(&client, nix::sys::socket::sockopt::PeerCredentials)
        .expect("SO_PEERCRED of the broker connection")
        .pid();
    let cpu = cpu_ns(server as u32);
    let start = Instant::now();
    for _ in 0..n {
        if batch == 1 {
            drop(client.open(&paths[0]).expect("open"));
        } else {
            for r in client.open_many(&paths[..batch]).expect("open_many") {
                drop(r.expect("open_many item"));
            }
        }
    }
    report_drive(n, batch, start, server as u32, cpu);
}

/// `--drive-floor [--secure POLICY AUDIT] N BATCH PATH...`: start a floor server (bare,
/// or the secure floor serving POLICY's roots with its audit lines to AUDIT) and drive
/// it as `--drive` drives a broker. The server's pid goes to standard error and the
/// drive starts a second later, for `perf record -p`.
const DRIVE_FLOOR_ARG: &str = "--drive-floor";

fn drive_floor(args: &[String]) {
    let usage = "usage: --drive-floor [--secure POLICY AUDIT] N BATCH PATH...";
    let (mut fl, rest) = match args {
        [flag, policy, audit, rest @ ..] if flag == floor::SECURE_ARG => (
            floor::Floor::start_secure(policy.as_ref(), audit.as_ref()),
            rest,
        ),
        rest => (floor::Floor::start(), rest),
    };
    let [n, batch, paths @ ..] = rest else {
        panic!("{usage}");
    };
    let n: usize = n.parse().expect(usage);
    let batch: usize = batch.parse().expect(usage);
    assert!(batch >= 1 && paths.len() >= batch, "{usage}");
    let request = paths[..batch].join("\0").into_bytes();
    // Started, confined and answering before the clock starts.
    assert_eq!(fl.round_trip(&request), batch);
    eprintln!("floor server pid {}", fl.pid());
    std::thread::sleep(Duration::from_secs(1));
    let cpu = cpu_ns(fl.pid());
    let start = Instant::now();
    for _ in 0..n {
        assert_eq!(fl.round_trip(&request), batch);
    }
    report_drive(n, batch, start, fl.pid(), cpu);
}

fn report_drive(n: usize, batch: usize, start: Instant, server: u32, cpu_before: u64) {
    let per = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    let cpu = cpu_ns(server).saturating_sub(cpu_before) as f64 / 1e3 / n as f64;
    eprintln!(
        "{n} requests of {batch}: {per:.2} µs per request, server CPU {cpu:.2} µs per request ({:.3} per descriptor)",
        cpu / batch as f64
    );
}

/// CPU time of every thread of `pid` so far, in nanoseconds (`schedstat`).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| {
            let t = t.ok()?;
            let s = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            s.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

/// Depths (directories) of the Landlock series.
const DEPTHS: [usize; 4] = [1, 4, 8, 16];

/// What Landlock adds to one open as the file lies deeper: two secure floors serving
/// the same roots, one under the broker's Landlock domain alone and one unconfined,
/// both pinned with the client to `cpu`, each opening one file 32 times per message;
/// the row is the per-repetition difference per open. Two series: the root (a rule of
/// the domain) deeper and deeper below `/` with the file in it, and the file deeper and
/// deeper below one shallow root. Landlock checks an open by walking from the file up
/// the dentry chain until a rule grants the access, so the second series is the one
/// that should grow.
fn landlock_depth(
    tree: &TempDir,
    content: &[u8],
    plan: &Plan,
    cpu: usize,
) -> Vec<(String, Sample)> {
    let chain = |n: usize| "/d".repeat(n);
    // (label, root relative to the tree, file relative to the tree)
    let mut cases: Vec<(String, String, String)> = Vec::new();
    let depth_of = |p: &std::path::Path| p.components().count() - 1;
    for d in DEPTHS {
        let root = format!("ld{d:02}{}", chain(d - 1));
        let abs = depth_of(&tree.join(&root));
        cases.push((
            format!("Landlock per open, root {abs} directories below / (file in it)"),
            root.clone(),
            format!("{root}/f.bin"),
        ));
    }
    let shallow = "lf".to_owned();
    for d in DEPTHS {
        cases.push((
            format!(
                "Landlock per open, file {d} directories below its root ({} below /)",
                depth_of(&tree.join(&shallow))
            ),
            shallow.clone(),
            format!("{shallow}{}/f.bin", chain(d)),
        ));
    }
    let mut policy = String::from("[broker]\n\n[[client]]\nname = \"scanner\"\nusers = [0]\n");
    let mut roots: Vec<&str> = cases.iter().map(|(_, r, _)| r.as_str()).collect();
    roots.dedup();
    for root in roots {
        tree.dir(root, 0o755);
        policy.push_str(&format!(
            "  [[client.allow]]\n  path = \"{}/\"\n  access = [\"read\"]\n",
            tree.join(root).display()
        ));
    }
    let requests: Vec<Vec<u8>> = cases
        .iter()
        .map(|(_, _, file)| {
            let path = tree.file(file, content, 0o600);
            vec![path.as_os_str().as_bytes(); BATCH].join(&0u8)
        })
        .collect();
    let policy_path = tree.file("landlock-depth.toml", policy.as_bytes(), 0o644);
    let mut landlock = floor::Floor::start_confined(
        &policy_path,
        &tree.join("landlock-depth-landlock.log"),
        floor::Confinement::LandlockOnly,
    );
    let mut open = floor::Floor::start_confined(
        &policy_path,
        &tree.join("landlock-depth-none.log"),
        floor::Confinement::Neither,
    );
    affinity::pin_process(landlock.pid(), &[cpu]);
    affinity::pin_process(open.pid(), &[cpu]);
    // Given back at the end: what follows (concurrency, the scan) runs unpinned, and
    // the processes it starts inherit this thread's mask.
    let allowed = affinity::allowed();
    affinity::pin_thread(0, &[cpu]).expect("pinning the benchmark thread");
    for req in &requests {
        for _ in 0..plan.warmup / 20 + 1 {
            assert_eq!(landlock.round_trip(req), BATCH);
            assert_eq!(open.round_trip(req), BATCH);
        }
    }
    let mut samples = vec![Sample::default(); cases.len()];
    for rep in 0..plan.reps {
        for (req, sample) in requests.iter().zip(&mut samples) {
            let time = |f: &mut floor::Floor| {
                per_op_us(plan.batch_msgs, BATCH, || {
                    assert_eq!(f.round_trip(req), BATCH)
                })
            };
            // Alternate which goes first, so drift hits both alike.
            let (with, without) = if rep % 2 == 0 {
                let w = time(&mut landlock);
                (w, time(&mut open))
            } else {
                let o = time(&mut open);
                (time(&mut landlock), o)
            };
            sample.push(with - without);
        }
    }
    affinity::pin_thread(0, &allowed).expect("unpinning the benchmark thread");
    cases
        .into_iter()
        .map(|(label, _, _)| label)
        .zip(samples)
        .collect()
}

/// The secure floor under part of the broker's confinement, measured where the
/// summary's numbers come from (same CPU).
struct SplitFloor {
    how: floor::Confinement,
    single: Sample,
    batch: Sample,
}

/// The rows that split the confinement tax: each partly confined secure floor, then
/// the mandatory work alone (unconfined secure / bare floor) and what Landlock and
/// seccomp each add to it (partly confined / unconfined secure floor).
fn split_rows(
    rows: &mut Table,
    split: &[SplitFloor],
    bare: &Sample,
    which: impl Fn(&SplitFloor) -> &Sample,
) {
    let Some(none) = split
        .iter()
        .find(|sp| sp.how == floor::Confinement::Neither)
    else {
        return;
    };
    for sp in split {
        rows.sample(
            "secure",
            &format!("  secure floor, {}", sp.how.label()),
            which(sp),
            "µs",
        );
    }
    rows.sample(
        "ratio",
        "  mandatory work: unconfined secure / bare floor",
        &Sample::ratio(which(none), bare),
        "×",
    );
    for sp in split
        .iter()
        .filter(|sp| sp.how != floor::Confinement::Neither)
    {
        rows.sample(
            "ratio",
            &format!("  {} / unconfined secure floor", sp.how.label()),
            &Sample::ratio(which(sp), which(none)),
            "×",
        );
    }
}

/// One `fdbroker serve` configuration and its measurements.
struct Variant {
    label: &'static str,
    server: Server,
    client: fdbroker_worker::Client,
    /// Per layout (index into the layouts).
    single: [Sample; 2],
    batch: [Sample; 2],
}

/// Where the two sides of the latency measurements run.
struct Layout {
    name: &'static str,
    servers: Vec<usize>,
    client: Vec<usize>,
    floor1: Sample,
    floor32: Sample,
    rt_ratio: Sample,
    batch_ratio: Sample,
    secure: SecureRows,
}

/// The secure floor's rows for one placement.
#[derive(Default)]
struct SecureRows {
    floor1: Sample,
    floor32: Sample,
    /// fdbroker / secure floor.
    rt_ratio: Sample,
    batch_ratio: Sample,
    /// secure floor / bare floor: what confinement and the mandatory checks cost.
    tax1: Sample,
    tax32: Sample,
}

/// Why a transparent-mode figure is `n/a`.
const NO_TRANSPARENT: &str = "no transparent mode in this build";

struct Summary {
    roundtrip_ratio: f64,
    batch_ratio: f64,
    secure_roundtrip_ratio: f64,
    secure_batch_ratio: f64,
    scan_slowdown: f64,
    /// `None` when this build has no transparent mode.
    transparent_slowdown: Option<f64>,
    /// Transparent mode's 4-thread over 1-thread throughput, its scan ratio beside two
    /// CPU-bound processes over idle, and its per-open cost over syd's (`None` without
    /// transparent mode, or without syd).
    transparent_threads4_vs_1: Option<f64>,
    transparent_busy_vs_idle: Option<f64>,
    transparent_vs_syd: Option<f64>,
    /// Why `transparent_vs_syd` is `None`.
    no_syd: String,
    spawn_speedup: f64,
    policy_10k_ratio: f64,
    conn_kib: f64,
    threads16_vs_1: f64,
}

/// Run `f` `iters` times; microseconds per item, with `per_call` items per call.
fn per_op_us(iters: usize, per_call: usize, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_secs_f64() * 1e6 / (iters * per_call) as f64
}

/// Opens per second with `threads` threads, each on its own connection, `ops` in all.
fn throughput(
    server: &Server,
    files: &[PathBuf],
    threads: usize,
    ops: usize,
    pin: Option<usize>,
) -> f64 {
    let per = ops.div_ceil(threads);
    let clients: Vec<fdbroker_worker::Client> = (0..threads).map(|_| server.client()).collect();
    let barrier = Barrier::new(threads + 1);
    let elapsed = std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let path = &files[i % files.len()];
                let barrier = &barrier;
                s.spawn(move || {
                    if let Some(cpu) = pin {
                        affinity::pin_thread(0, &[cpu]).expect("pinning a client thread");
                    }
                    barrier.wait();
                    for _ in 0..per {
                        drop(c.open(path).expect("fdbroker: concurrent Client::open"));
                    }
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for h in handles {
            h.join().expect("a client thread panicked");
        }
        start.elapsed()
    });
    (per * threads) as f64 / elapsed.as_secs_f64()
}

struct Memory {
    idle_kib: u64,
    small_kib: u64,
    big_kib: u64,
    big: usize,
    per_conn_small: f64,
    per_conn_big: f64,
    held: bool,
    broker_fds: usize,
}

/// A fresh broker: RSS after one request, with `idle_small` and then `idle_big` idle
/// (greeted) connections; then check the first, last and a new connection are served.
fn memory(policy_text: &str, file: &std::path::Path, plan: &Plan) -> Memory {
    let settle = Duration::from_millis(if plan.quick { 100 } else { 300 });
    let mem = Server::start("bench-mem", policy_text, None);
    {
        // One request so each event-loop thread's buffers exist before the baseline.
        let c = mem.client();
        for _ in 0..8 {
            drop(c.open(file).expect("memory broker: open"));
        }
    }
    std::thread::sleep(settle);
    let idle_kib = mem.rss_kib();
    let mut conns = Vec::with_capacity(plan.idle_big);
    let deadline = Instant::now() + Duration::from_secs(120);
    while conns.len() < plan.idle_small {
        conns.push(server::idle_connection(&mem.socket));
    }
    std::thread::sleep(settle);
    let small_kib = mem.rss_kib();
    while conns.len() < plan.idle_big {
        assert!(
            Instant::now() < deadline,
            "opening {} idle connections took over 120 s",
            plan.idle_big
        );
        conns.push(server::idle_connection(&mem.socket));
    }
    std::thread::sleep(settle);
    let big_kib = mem.rss_kib();
    let broker_fds = mem.fd_count();
    let path = file.as_os_str().as_bytes();
    let first = server::open_on(&conns[0], path);
    let last = conns.last().is_some_and(|c| server::open_on(c, path));
    let fresh = mem.client().open(file).is_ok();
    let big = conns.len();
    drop(conns);
    Memory {
        idle_kib,
        small_kib,
        big_kib,
        big,
        per_conn_small: (small_kib as f64 - idle_kib as f64) / plan.idle_small as f64,
        per_conn_big: (big_kib as f64 - idle_kib as f64) / big as f64,
        held: first && last && fresh && broker_fds >= big,
        broker_fds,
    }
}

/// Raise RLIMIT_NOFILE (inherited by the brokers this process starts) to at least
/// `want` if possible; returns the soft limit now in force.
fn raise_nofile(want: u64) -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_max < want {
            let up = libc::rlimit {
                rlim_cur: want,
                rlim_max: want,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &up) == 0 {
                return want;
            }
        }
        let soft = libc::rlimit {
            rlim_cur: r.rlim_max,
            rlim_max: r.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &soft) == 0 {
            return r.rlim_max;
        }
    }
    r.rlim_cur
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn host() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |k| k / 1024.0 / 1024.0);
    format!(
        "{cpus} CPUs ({model}), {mem_gib:.0} GiB, Linux {}",
        kernel.trim()
    )
}

/// The temp directory and the type of the filesystem holding it (longest matching
/// mount point in /proc/self/mounts).
fn fs_type() -> String {
    let dir = std::env::temp_dir();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let fstype = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, point, ty) = (f.next()?, f.next()?, f.next()?);
            dir.starts_with(point).then_some((point.len(), ty))
        })
        .max_by_key(|&(len, _)| len)
        .map_or("?", |(_, ty)| ty);
    format!("{} ({fstype})", dir.display())
}

/// The human table, printed as Markdown so it can go into the README as is.
#[derive(Default)]
struct Table {
    rows: Vec<[String; 6]>,
}

impl Table {
    fn sample(&mut self, section: &str, what: &str, s: &Sample, unit: &str) {
        self.rows.push([
            section.into(),
            what.into(),
            num(s.median()),
            format!("{}..{}", num(s.min()), num(s.max())),
            unit.into(),
            format!("±{:.0}%", s.spread_pct() / 2.0),
        ]);
    }

    fn value(&mut self, section: &str, what: &str, v: f64, unit: &str) {
        self.rows.push([
            section.into(),
            what.into(),
            num(v),
            String::new(),
            unit.into(),
            String::new(),
        ]);
    }

    fn text(&mut self, section: &str, what: &str, v: &str, note: &str) {
        self.rows.push([
            section.into(),
            what.into(),
            v.into(),
            note.into(),
            String::new(),
            String::new(),
        ]);
    }

    fn print(&self) {
        let head = [
            "section",
            "measurement",
            "median",
            "min..max",
            "unit",
            "spread",
        ];
        let mut w = head.map(|h| h.chars().count());
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let line = |cells: [&str; 6]| {
            let mut s = String::from("|");
            for (i, c) in cells.iter().enumerate() {
                let pad = w[i] - c.chars().count();
                if i >= 2 && i != 4 {
                    s.push_str(&format!(" {}{c} |", " ".repeat(pad)));
                } else {
                    s.push_str(&format!(" {c}{} |", " ".repeat(pad)));
                }
            }
            println!("{s}");
        };
        line(head);
        let dashes: Vec<String> = w.iter().map(|&n| "-".repeat(n)).collect();
        line([
            &dashes[0], &dashes[1], &dashes[2], &dashes[3], &dashes[4], &dashes[5],
        ]);
        for r in &self.rows {
            line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]);
        }
    }
}

fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
