//! `Sandbox::apply()` in a worker that a service manager starts as its own unprivileged
//! user holding the broker socket's group (`User=`, `SupplementaryGroups=`, an empty
//! bounding set): it connects through the group, keeps it with `keep_groups()`, and is
//! then confined as usual. Without `keep_groups()` the error names the errno and the
//! way out. Real processes: `setpriv` starts `worker-probe` as `nobody` with the group.
#![allow(clippy::unwrap_used)]

use fdbroker_tests::{Broker, HANG, TempDir, run_with_input, sibling_bin, text};
use nix::unistd::{Gid, Group};
use std::process::Command;

/// A gid no group on this machine has (so nothing else grants it), for the socket.
fn unused_gid() -> u32 {
    (4242..60000)
        .find(|g| Group::from_gid(Gid::from_raw(*g)).ok().flatten().is_none())
        .unwrap()
}

/// `worker-probe ARGS` as nobody, with `groups` as its supplementary groups and no
/// capability in any set, as a systemd unit with `User=nobody` would start it.
fn worker(socket: &std::path::Path, groups: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup"]);
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        cmd.arg(format!("--groups={groups}"));
    }
    cmd.args(["--inh-caps=-all", "--bounding-set=-all", "--"])
        .arg(sibling_bin("worker-probe"))
        .args(args)
        .env("FDBROKER_SOCKET", socket);
    cmd
}

fn broker(t: &TempDir, gid: u32) -> Broker {
    t.file("data/secret.txt", b"root only\n", 0o600);
    Broker::start(
        t,
        &format!(
            "[broker]\nsocket_mode = \"0660\"\nsocket_group = {gid}\n\
             [[client]]\nname = \"w\"\nusers = [\"nobody\"]\n\
             [[client.allow]]\npath = \"{{dir}}/data/\"\n"
        ),
    )
}

/// Runs the worker to its end with `input` on stdin: (exit code, stdout, stderr).
fn run(mut cmd: Command, input: &str) -> (Option<i32>, String, String) {
    let out = run_with_input(&mut cmd, Some(input.as_bytes().to_vec()), HANG);
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn a_worker_started_as_its_own_user_keeps_the_socket_group_and_is_confined() {
    let t = TempDir::new("groups-keep");
    let gid = unused_gid();
    let b = broker(&t, gid);
    let secret = t.join("data/secret.txt");
    let input = format!(
        "groups\nuid\nopen {0}\ndirect {0}\nexit 0\n",
        secret.display()
    );
    let (code, out, err) = run(
        worker(
            &b.socket,
            &gid.to_string(),
            &["--lockdown", "--keep-groups"],
        ),
        &input,
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.starts_with("READY "), "{out}\n{err}");
    assert!(out.contains(&format!("GROUPS {gid}\n")), "{out}");
    assert!(out.contains("OK 10 root only"), "{out}\n{}", b.log());
    // Confined all the same: the file itself is out of reach.
    assert!(out.contains("ERR PermissionDenied 13"), "{out}");
}

#[test]
fn without_keep_groups_the_error_names_the_errno_and_the_option() {
    let t = TempDir::new("groups-drop");
    let gid = unused_gid();
    let b = broker(&t, gid);
    let (code, out, err) = run(worker(&b.socket, &gid.to_string(), &["--lockdown"]), "");
    assert_eq!(code, Some(3), "{out}\n{err}");
    for needed in ["setgroups([])", "EPERM", "Sandbox::keep_groups()"] {
        assert!(err.contains(needed), "{needed:?} not in {err}");
    }
}

#[test]
fn without_the_group_the_worker_cannot_connect() {
    let t = TempDir::new("groups-none");
    let b = broker(&t, unused_gid());
    let (code, _, err) = run(worker(&b.socket, "", &["--lockdown", "--keep-groups"]), "");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.to_lowercase().contains("permission denied"), "{err}");
}

#[test]
fn a_kept_group_zero_is_refused() {
    let t = TempDir::new("groups-root");
    let gid = unused_gid();
    let b = broker(&t, gid);
    let (code, out, err) = run(
        worker(
            &b.socket,
            &format!("0,{gid}"),
            &["--lockdown", "--keep-groups"],
        ),
        "",
    );
    assert_eq!(code, Some(3), "{out}\n{err}");
    assert!(err.contains("supplementary gid 0"), "{err}");
}
