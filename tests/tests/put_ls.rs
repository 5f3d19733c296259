//! `fdbroker put` and `fdbroker ls` (issue 23, part 2): the writing and listing siblings
//! of `fdbroker cat`, run as nobody against a real broker, with `cat`'s exit codes.
#![allow(clippy::unwrap_used)]

use fdbroker_tests::{Broker, TempDir, fdbroker_bin, nobody_uid, run_with_input, show, text};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const POLICY: &str = "[broker]\nsocket_mode = \"0666\"\n\
    [[client]]\nname = \"t\"\nusers = [{nobody}]\n\
    [[client.allow]]\npath = \"{dir}/out/\"\naccess = [\"create\", \"write\", \"directory\"]\n\
    [[client.allow]]\npath = \"{dir}/drop/\"\naccess = [\"create\"]\n\
    [[client.allow]]\npath = \"{dir}/spool/\"\naccess = [\"read\", \"directory\"]\n\
    [[client.deny]]\npath = \"{dir}/spool/keys/\"\n";

fn tree() -> TempDir {
    let t = TempDir::new("putls");
    t.dir("out", 0o755);
    t.dir("drop", 0o755);
    t.file("drop/old", b"old\n", 0o644);
    t.file("spool/a.bin", b"a", 0o644);
    t.file("spool/b.bin", b"b", 0o644);
    t.file("spool/keys/secret", b"k", 0o600);
    t.dir("spool/sub", 0o755);
    t
}

/// `fdbroker ARGS...` as nobody with `input` on stdin.
fn as_nobody(socket: &Path, args: &[&str], paths: &[&Path], input: &[u8]) -> Output {
    let mut cmd = Command::new(fdbroker_bin());
    cmd.arg(args[0])
        .arg("--socket")
        .arg(socket)
        .args(&args[1..])
        .args(paths);
    let uid = nobody_uid();
    cmd.uid(uid).gid(fdbroker_tests::nobody_gid());
    run_with_input(&mut cmd, Some(input.to_vec()), Duration::from_secs(60))
}

/// `put` creates a new file where `create` is granted, rewrites an existing one where
/// `write` is, says "exists" (not "denied") where only `create` is and the file is
/// there, and is denied outside the policy: exit 0 for the first two, 1 for the rest,
/// each failure one `fdbroker: PATH: reason` line.
#[test]
fn put_creates_or_rewrites_by_the_grant_and_exits_like_cat() {
    let t = tree();
    let b = Broker::start(&t, POLICY);
    let new = t.join("out/report.txt");
    let out = as_nobody(&b.socket, &["put"], &[&new], b"clean\n");
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(std::fs::read(&new).unwrap(), b"clean\n");

    let out = as_nobody(&b.socket, &["put"], &[&new], b"v2\n");
    assert!(out.status.success(), "rewrite: {}", show(&out));
    assert_eq!(
        std::fs::read(&new).unwrap(),
        b"v2\n",
        "truncated, not appended"
    );

    let old = t.join("drop/old");
    let out = as_nobody(&b.socket, &["put"], &[&old], b"x");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!("fdbroker: {}: ", old.display())) && err.contains("exists"),
        "{err}"
    );
    assert_eq!(std::fs::read(&old).unwrap(), b"old\n", "left alone");

    let outside = t.join("spool/new.txt");
    let out = as_nobody(&b.socket, &["put"], &[&outside], b"x");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(text(&out.stderr).contains("denied"), "{}", show(&out));
    assert!(!outside.exists());

    // A broker that is not there: exit 1 with the reason, as cat.
    let gone = t.join("nothing.sock");
    let out = as_nobody(&gone, &["put"], &[&new], b"x");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).starts_with("fdbroker: "),
        "{}",
        show(&out)
    );
}

/// `ls` prints what the broker lists, in byte order, directories with `/`, leaving out
/// the deny carve-out; several directories get `DIR:` headers; a directory without a
/// `directory` grant fails that one (exit 1) and the others are still listed.
#[test]
fn ls_lists_through_the_broker_hiding_carve_outs_and_exits_like_cat() {
    let t = tree();
    let b = Broker::start(&t, POLICY);
    let spool = t.join("spool");
    let out = as_nobody(&b.socket, &["ls"], &[&spool], b"");
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(text(&out.stdout), "a.bin\nb.bin\nsub/\n");

    let outdir = t.join("out");
    let drop = t.join("drop");
    let out = as_nobody(&b.socket, &["ls"], &[&spool, &drop, &outdir], b"");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(
        text(&out.stdout),
        format!(
            "{}:\na.bin\nb.bin\nsub/\n\n{}:\n",
            spool.display(),
            outdir.display()
        )
    );
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!("fdbroker: {}: ", drop.display())) && err.contains("denied"),
        "{err}"
    );
}

/// A connection the socket's permissions refuse says which group would let the client
/// in, from `fdbroker cat` (the Rust client's error): the socket `0660` of group `adm`,
/// then the directory above it `0750` of group `adm` with the socket open to all. The
/// group is found from the files, not assumed.
#[test]
fn a_connection_refused_by_permissions_names_the_group_that_may_connect() {
    use std::os::unix::fs::{PermissionsExt, chown};
    let t = tree();
    let policy = POLICY.replace(
        "socket_mode = \"0666\"",
        "socket_mode = \"0660\"\nsocket_group = \"adm\"",
    );
    let b = Broker::start(&t, &policy);
    let file = t.join("spool/a.bin");
    let out = as_nobody(&b.socket, &["cat"], &[&file], b"");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("Permission denied")
            && err.contains(&format!("the socket {}", b.socket.display()))
            && err.contains("group adm")
            && err.contains("members of group adm may connect"),
        "{err}"
    );

    // The socket open to everyone, its directory closed but to group adm.
    std::fs::set_permissions(&b.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let dir = b.socket.parent().unwrap();
    let adm_gid = nix::unistd::Group::from_name("adm")
        .unwrap()
        .expect("group adm (base-passwd)")
        .gid
        .as_raw();
    chown(dir, None, Some(adm_gid)).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    let out = as_nobody(&b.socket, &["cat"], &[&file], b"");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("the directory {} ", dir.display()))
            && err.contains("members of group adm may connect"),
        "{err}"
    );
    // And once it is open again, the same command works: the refusal was the reason.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = as_nobody(&b.socket, &["cat"], &[&file], b"");
    assert!(out.status.success(), "{}", show(&out));
}
