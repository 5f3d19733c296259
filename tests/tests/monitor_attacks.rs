//! Attacks on the monitor and its servers from the independent review: a compromised
//! server forging a worker's connection for its successor, and a forged reload request
//! naming another process for the monitor's answer. Each failed on the code it was
//! written against.
#![allow(clippy::unwrap_used)]

use fdbroker_tests::{Broker, TempDir, fdbroker_bin, run_with_timeout, sibling_bin, text};
use std::process::Command;
use std::time::Duration;

/// A compromised server can make its successor serve a connection as whoever created
/// the listener (the first server, or systemd under socket activation: uid 0): it
/// connects to its own listener (socket + connect are in its seccomp allowlist, and
/// Landlock does not cover connecting to a pathname socket), hands the *client* end
/// over as a worker's connection, keeps the accepted end and speaks on it. The only
/// check, "the peer is not the predecessor's pid", does not see it: the client end's
/// `SO_PEERCRED` names the process that called `listen`. The successor must take only
/// accepted ends of its own listeners (their local address is the listener's).
#[test]
fn successor_refuses_a_handed_over_client_end_of_its_own_listener() {
    let tree = TempDir::new("review-handover");
    let secret = tree.file("secret/key", b"root only", 0o600);
    let policy = tree.file(
        "policy.toml",
        format!(
            "[[client]]\nname = \"root-tools\"\nusers = [0]\n  [[client.allow]]\n  path = \"{}\"\n  access = [\"read\"]\n\n[[client]]\nname = \"workers\"\nusers = [{}]\n  [[client.allow]]\n  path = \"{}/pub/\"\n  access = [\"read\"]\n",
            secret.display(),
            fdbroker_tests::nobody_uid(),
            tree.path().display()
        )
        .as_bytes(),
        0o644,
    );
    tree.dir("pub", 0o755);
    let out = run_with_timeout(
        Command::new(sibling_bin("monitor-attack"))
            .arg("forged-handover")
            .arg(fdbroker_bin())
            .arg(&policy)
            .arg(tree.join("attack.sock"))
            .arg(&secret),
        Duration::from_secs(60),
    );
    let stdout = text(&out.stdout);
    // The attack's own verdict line (the server's status line it echoes may count
    // grants too).
    assert!(
        !stdout.lines().any(|l| l.starts_with("granted:")),
        "the successor served a forged connection as uid 0:\n{stdout}\n{}",
        text(&out.stderr)
    );
}

/// `si_pid` of a queued signal is whatever the sender wrote (`rt_sigqueueinfo`), so a
/// process that may signal the monitor could have it answer any process the monitor may
/// signal; a stale pid (a `fdbroker reload` that gave up) is the same. The answer used
/// to be `SIGUSR1` (default action: terminate); it is now `SIGURG` (default: ignore),
/// sent through a pidfd taken when the request came.
#[test]
fn monitor_does_not_kill_the_pid_a_forged_reload_request_names() {
    let tree = TempDir::new("mon-forged-reload");
    tree.dir("pub", 0o755);
    let broker = Broker::start(
        &tree,
        "[[client]]\nname = \"t\"\nusers = [0]\n  [[client.allow]]\n  path = \"{dir}/pub/\"\n  access = [\"read\"]\n",
    );
    let out = run_with_timeout(
        Command::new(sibling_bin("monitor-attack"))
            .arg("forged-reload-answer")
            .arg(broker.monitor_pid().to_string()),
        Duration::from_secs(60),
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("victim alive"),
        "the monitor signalled the forged pid:\n{stdout}\n{}",
        text(&out.stderr)
    );
}

/// The root of the forged-connection attack: a confined server makes no new
/// connection (no socket(2), no connect(2)), even to its own listener.
#[test]
fn a_confined_server_cannot_connect_to_anything() {
    let t = TempDir::new("mon-connect");
    t.dir("ro", 0o755);
    let b = Broker::start(
        &t,
        "[[client]]\nname = \"t\"\nusers = [0]\n[[client.allow]]\npath = \"{dir}/ro/\"\n",
    );
    let out = run_with_timeout(
        Command::new(sibling_bin("monitor-attack"))
            .arg("confined-connect")
            .arg(&b.policy)
            .arg(&b.socket),
        Duration::from_secs(20),
    );
    let text = text(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.trim(), "socket EPERM", "{text}");
}
