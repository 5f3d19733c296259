//! A policy root is opened by a checked walk from `/`: only root may steer it. A root
//! below a directory someone else can write could be redirected (renamed away and
//! replaced by a symlink to `/`) before the next start, and every rule would then
//! apply to the wrong tree.
#![allow(clippy::unwrap_used)]

use fdbroker_tests::{Broker, TempDir, nobody_gid, nobody_uid};
use nix::sys::signal::Signal;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{chown, lchown, symlink};

fn policy(root: &str) -> String {
    format!(
        "[[client]]\nname = \"root\"\nusers = [0]\n\
         [[client.allow]]\npath = \"{{dir}}/{root}/\"\n"
    )
}

fn read(mut f: std::fs::File) -> String {
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    s
}

#[test]
fn a_root_redirected_by_another_user_is_refused() {
    let t = TempDir::new("roots-swap");
    t.file("home/inbox/mail", b"mail", 0o644);
    t.file("secret", b"root only", 0o600);
    // `home` belongs to nobody, who moves the inbox away and leaves a symlink to the
    // top of the tree in its place.
    chown(t.join("home"), Some(nobody_uid()), Some(nobody_gid())).unwrap();
    std::fs::rename(t.join("home/inbox"), t.join("home/inbox.old")).unwrap();
    symlink(t.path(), t.join("home/inbox")).unwrap();
    lchown(t.join("home/inbox"), Some(nobody_uid()), Some(nobody_gid())).unwrap();

    let b = Broker::start(&t, &policy("home/inbox"));
    let c = b.client();
    let e = c.open(t.join("home/inbox/secret")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    let log = b.log();
    assert!(
        log.contains("not owned by root") && log.contains("refusing it"),
        "{log}"
    );
}

#[test]
fn a_root_below_a_directory_others_can_write_is_refused() {
    let t = TempDir::new("roots-writable");
    t.file("shared/inbox/mail", b"mail", 0o644);
    std::fs::set_permissions(
        t.join("shared"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let b = Broker::start(&t, &policy("shared/inbox"));
    let e = b.client().open(t.join("shared/inbox/mail")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(
        b.log().contains("writable by its group or others"),
        "{}",
        b.log()
    );
}

#[test]
fn roots_reached_through_roots_own_symlinks_and_sticky_directories_are_served() {
    let t = TempDir::new("roots-ok");
    t.file("real/mail", b"mail", 0o644);
    // Root's own symlink (like /var/run -> /run), a relative one.
    symlink("real", t.join("alias")).unwrap();
    // A sticky, world-writable directory (like /tmp) above a root-owned root.
    t.file("sticky/spool/mail", b"spooled", 0o644);
    std::fs::set_permissions(
        t.join("sticky"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    // The root itself may belong to anyone: what is beneath it is the workers' side.
    chown(
        t.join("sticky/spool"),
        Some(nobody_uid()),
        Some(nobody_gid()),
    )
    .unwrap();
    let b = Broker::start(
        &t,
        "[[client]]\nname = \"root\"\nusers = [0]\n\
         [[client.allow]]\npath = \"{dir}/alias/\"\n\
         [[client.allow]]\npath = \"{dir}/sticky/spool/\"\n",
    );
    let c = b.client();
    assert_eq!(read(c.open(t.join("alias/mail")).unwrap()), "mail");
    assert_eq!(
        read(c.open(t.join("sticky/spool/mail")).unwrap()),
        "spooled"
    );
    assert!(!b.log().contains("refusing it"), "{}", b.log());
    // Reloaded by the confined broker, which walks the roots again under its own
    // seccomp filter and Landlock domain.
    b.signal(Signal::SIGHUP);
    b.wait_log("policy reloaded", 1);
    assert_eq!(read(c.open(t.join("alias/mail")).unwrap()), "mail");
    assert_eq!(
        read(c.open(t.join("sticky/spool/mail")).unwrap()),
        "spooled"
    );
    assert!(!b.log().contains("cannot be opened"), "{}", b.log());
}
