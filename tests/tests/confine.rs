//! The broker confines itself after start-up: narrowed capabilities, no_new_privs,
//! Landlock over its roots, a seccomp allowlist. (Reloads that need more are served by
//! a new server: `reload.rs`.)
#![allow(clippy::unwrap_used)]

use fdbroker_tests::{Broker, TempDir, status_field, text};
use fdbroker_worker::Access;
use std::time::Duration;

const DAC_OVERRIDE: u64 = 1 << 1;
const DAC_READ_SEARCH: u64 = 1 << 2;

/// The broker's `/proc` status once it is serving: the socket accepts connections
/// before the broker confines itself, and "serving" is logged after.
fn status(b: &Broker) -> String {
    b.wait_log("serving", 1);
    std::fs::read_to_string(format!("/proc/{}/status", b.pid())).unwrap()
}

fn mask(status: &str, key: &str) -> u64 {
    let v = status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("{key} missing"))
        .trim();
    u64::from_str_radix(v, 16).unwrap()
}

fn policy(extra: &str) -> String {
    format!(
        "[[client]]\nname = \"t\"\nusers = [0]\n[[client.allow]]\npath = \"{{dir}}/ro/\"\n{extra}"
    )
}

#[test]
fn a_read_only_broker_keeps_only_dac_read_search() {
    let t = TempDir::new("confine-ro");
    t.file("ro/f", b"x", 0o600);
    let b = Broker::start(&t, &policy(""));
    let st = status(&b);
    for key in ["CapEff:", "CapPrm:", "CapBnd:"] {
        assert_eq!(mask(&st, key), DAC_READ_SEARCH, "{key}\n{st}");
    }
    assert_eq!(mask(&st, "CapInh:"), 0);
    assert_eq!(mask(&st, "CapAmb:"), 0);
    assert_eq!(status_field(&st, "NoNewPrivs:"), "1");
    assert_eq!(status_field(&st, "Seccomp:"), "2");
    let log = b.log();
    assert!(
        log.contains("capabilities kept [CAP_DAC_READ_SEARCH]"),
        "{log}"
    );
    assert!(log.contains("landlock fully enforced"), "{log}");
    // And it serves, confined.
    let c = b.client();
    assert!(c.open(t.join("ro/f")).is_ok());
}

#[test]
fn a_broker_that_grants_writes_also_keeps_dac_override() {
    let t = TempDir::new("confine-rw");
    t.file("rw/f", b"x", 0o600);
    t.dir("ro", 0o755);
    let b = Broker::start(
        &t,
        &policy(
            "[[client.allow]]\npath = \"{dir}/rw/\"\naccess = [\"read\", \"write\", \"create\"]\n",
        ),
    );
    let st = status(&b);
    assert_eq!(mask(&st, "CapEff:"), DAC_READ_SEARCH | DAC_OVERRIDE, "{st}");
    assert_eq!(mask(&st, "CapBnd:"), DAC_READ_SEARCH | DAC_OVERRIDE, "{st}");
    let c = b.client();
    let _f = c.open_with(t.join("rw/new"), Access::Create).unwrap();
    assert!(t.join("rw/new").exists());
    let _w = c.open_with(t.join("rw/f"), Access::Write).unwrap();
}

#[test]
fn confine_false_runs_unconfined_and_says_so() {
    let t = TempDir::new("confine-off");
    t.dir("ro", 0o755);
    let b = Broker::start(&t, &format!("[broker]\nconfine = false\n{}", policy("")));
    let st = status(&b);
    // Everything the monitor passes on stays (a confined server keeps only
    // CAP_DAC_READ_SEARCH for this policy); the only filter is the monitor's.
    assert_ne!(mask(&st, "CapEff:") & !DAC_READ_SEARCH, 0, "{st}");
    assert_eq!(status_field(&st, "Seccomp_filters:"), "1", "{st}");
    assert!(b.log().contains("RUNNING UNCONFINED"));
}

/// Root without `CAP_KILL` may still signal every process running as root (same
/// uid), and the spawn-mode broker keeps `CAP_KILL` to signal its worker, which may
/// signal anyone: so the seccomp filter limits signals to the broker itself and, in
/// spawn mode, its worker, by every call that sends one (and `F_SETOWN`, which has the
/// kernel send `SIGIO` later). The probe confines itself with the broker's own code.
#[test]
fn the_confined_broker_may_signal_only_itself_and_its_worker() {
    let t = TempDir::new("confine-kill");
    t.file("ro/f", b"x", 0o600);
    let policy = t.file(
        "policy.toml",
        format!(
            "[[client]]\nname = \"c\"\nusers = [0]\n[[client.allow]]\npath = \"{}/ro/\"\n",
            t.path().display()
        )
        .as_bytes(),
        0o644,
    );
    let sleeper = |uid: Option<u32>| {
        let mut cmd = std::process::Command::new("sleep");
        if let Some(uid) = uid {
            std::os::unix::process::CommandExt::uid(&mut cmd, uid);
        }
        cmd.arg("30").spawn().unwrap()
    };
    let mut worker = sleeper(None);
    let w = worker.id().to_string();
    let probe = fdbroker_tests::sibling_bin("confine-probe");
    let denied = [
        "kill",
        "tkill",
        "tgkill",
        "sigqueue",
        "tgsigqueue",
        "pidfd",
        "setown-ex",
        "setown",
    ]
    .map(|way| format!("target {way} EPERM\n"))
    .concat();
    // A root process (same uid) and one of nobody (only CAP_KILL could reach it).
    for uid in [None, Some(fdbroker_tests::nobody_uid())] {
        let mut other = sleeper(uid);
        let o = other.id().to_string();
        let serve = fdbroker_tests::run_with_timeout(
            std::process::Command::new(&probe).arg(&policy).arg(&o),
            Duration::from_secs(20),
        );
        let spawn = fdbroker_tests::run_with_timeout(
            std::process::Command::new(&probe)
                .arg(&policy)
                .arg(&o)
                .arg(&w),
            Duration::from_secs(20),
        );
        // Give a SIGIO that got through time to arrive.
        std::thread::sleep(Duration::from_millis(100));
        let survived = other.try_wait().unwrap().is_none();
        let _ = other.kill();
        let _ = other.wait();
        let text = |out: &std::process::Output| text(&out.stdout);
        assert!(serve.status.success(), "{:?}", serve);
        assert_eq!(
            text(&serve),
            // Threads start (clone3 fails with ENOSYS, and the C library falls back to
            // a clone with CLONE_THREAD); a process does not.
            format!(
                "dumpable false\nmake-dumpable EPERM\nself ok\n{denied}thread ok\nfork EPERM\n"
            ),
            "uid {uid:?}"
        );
        assert!(spawn.status.success(), "{:?}", spawn);
        assert_eq!(
            text(&spawn),
            format!(
                "dumpable false\nmake-dumpable EPERM\nself ok\n{denied}worker ok\nthread ok\nfork EPERM\n"
            ),
            "uid {uid:?}"
        );
        assert!(survived, "the target (uid {uid:?}) was killed");
    }
    let _ = worker.kill();
    let _ = worker.wait();
}

/// The monitor (`fdbroker serve` itself) uses no capability: it holds, permitted but
/// not effective, only what a server may need, with no_new_privs and its own seccomp
/// filter; it parses no policy and serves no worker.
#[test]
fn the_monitor_holds_only_what_its_servers_may_need_and_uses_none() {
    const CHOWN: u64 = 1 << 0;
    const SETPCAP: u64 = 1 << 8;
    let t = TempDir::new("confine-monitor");
    t.dir("ro", 0o755);
    let b = Broker::start(&t, &policy(""));
    b.wait_log("serving", 1);
    let st = std::fs::read_to_string(format!("/proc/{}/status", b.monitor_pid())).unwrap();
    let servers = DAC_READ_SEARCH | DAC_OVERRIDE | CHOWN | SETPCAP;
    assert_eq!(mask(&st, "CapEff:"), 0, "{st}");
    assert_eq!(mask(&st, "CapPrm:"), servers, "{st}");
    assert_eq!(mask(&st, "CapBnd:"), servers, "{st}");
    assert_eq!(mask(&st, "CapAmb:"), 0, "{st}");
    assert_eq!(status_field(&st, "NoNewPrivs:"), "1");
    assert_eq!(status_field(&st, "Seccomp:"), "2");
    // Its server then narrows itself to this read-only policy.
    assert_eq!(mask(&status(&b), "CapEff:"), DAC_READ_SEARCH);
}
