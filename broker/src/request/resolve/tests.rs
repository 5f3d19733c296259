//! `open_beneath` and `stat_beneath` against real files in a temporary tree: each test
//! plants one thing a hostile worker (or a co-conspirator who can write in the tree)
//! could plant, and pins the exact error the broker answers with, so a change to the
//! resolution flags or to the type checks fails here before it reaches a worker.
#![allow(clippy::unwrap_used)]

use super::*;
use nix::fcntl::{OFlag, open};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use std::fs;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

/// A temporary directory with `root/` (the rule's root) and `outside` (a file next to
/// it that no open beneath the root may reach).
struct Tree {
    dir: tempfile::TempDir,
    root: OwnedFd,
}

impl Tree {
    fn new() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("root")).unwrap();
        fs::write(dir.path().join("outside"), b"secret").unwrap();
        fs::write(dir.path().join("root/file"), b"hello").unwrap();
        fs::set_permissions(
            dir.path().join("root/file"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        fs::create_dir(dir.path().join("root/sub")).unwrap();
        // The way the broker holds a root (see `roots`): a path descriptor.
        let root = open(
            &dir.path().join("root"),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        Tree { dir, root }
    }

    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join("root").join(rel)
    }

    fn outside(&self) -> std::path::PathBuf {
        self.dir.path().join("outside")
    }

    fn open(&self, rel: &str, access: Access, rule: &RuleOptions) -> Result<FileMeta, OpenError> {
        open_as(self.root.as_fd(), rel, access, rule, ROOT)
    }
}

/// uid 0 is exempt from the reopen check: tests of other checks use it so that only
/// the check under test can refuse.
const ROOT: Holder<'static> = Holder {
    uid: 0,
    gid: 0,
    groups: &[],
};

/// A holder that is neither the owner (root, who made the files) nor in their group.
/// Only a number compared with the file's owner: no process runs as it.
const STRANGER: Holder<'static> = Holder {
    uid: 4_000_001,
    gid: 4_000_001,
    groups: &[],
};

fn open_as(
    root: BorrowedFd<'_>,
    rel: &str,
    access: Access,
    rule: &RuleOptions,
    holder: Holder<'_>,
) -> Result<FileMeta, OpenError> {
    open_beneath(root, rel.as_bytes(), access, OFlag::empty(), rule, &holder).map(|(_, meta)| meta)
}

fn beneath() -> RuleOptions {
    RuleOptions {
        symlinks: Symlinks::Beneath,
        ..RuleOptions::default()
    }
}

fn with_devices() -> RuleOptions {
    RuleOptions {
        devices: true,
        ..RuleOptions::default()
    }
}

/// Run `f` on another thread and fail (instead of hanging the test run) if it takes
/// longer than a generous bound: an open that blocks never returns at all.
fn promptly<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the open blocked")
}

#[test]
fn a_regular_file_opens_with_exactly_the_granted_access_mode() {
    let t = Tree::new();
    for (access, mode) in [
        (Access::Read, OFlag::O_RDONLY),
        (Access::Write, OFlag::O_WRONLY),
        (Access::ReadWrite, OFlag::O_RDWR),
    ] {
        let (fd, meta) = open_beneath(
            t.root.as_fd(),
            b"file",
            access,
            OFlag::empty(),
            &RuleOptions::default(),
            &ROOT,
        )
        .unwrap();
        assert_eq!(meta.kind, FileKind::Regular);
        assert_eq!(meta.size, 5);
        let fl = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL).unwrap();
        assert_eq!(
            OFlag::from_bits_truncate(fl) & OFlag::O_ACCMODE,
            mode,
            "{access:?}"
        );
    }
}

#[test]
fn a_missing_file_is_the_kernels_enoent() {
    let t = Tree::new();
    let err = t
        .open("nothing", Access::Read, &RuleOptions::default())
        .unwrap_err();
    assert_eq!(err, OpenError::Kernel(Errno::ENOENT));
}

#[test]
fn dot_dot_out_of_the_root_is_an_escape() {
    let t = Tree::new();
    for rel in ["../outside", "sub/../../outside", "sub/../../root/file"] {
        let err = t
            .open(rel, Access::Read, &RuleOptions::default())
            .unwrap_err();
        assert_eq!(err, OpenError::Escape, "{rel}");
        assert_eq!(err.errno(), Errno::EACCES);
    }
    // `..` that stays inside is an ordinary path.
    let meta = t
        .open("sub/../file", Access::Read, &RuleOptions::default())
        .unwrap();
    assert_eq!(meta.kind, FileKind::Regular);
}

#[test]
fn an_absolute_path_is_an_escape() {
    let t = Tree::new();
    let abs = t.outside();
    let err = t
        .open(abs.to_str().unwrap(), Access::Read, &RuleOptions::default())
        .unwrap_err();
    assert_eq!(err, OpenError::Escape);
}

#[test]
fn a_symlink_out_of_the_root_is_refused_under_either_rule() {
    let t = Tree::new();
    symlink("../outside", t.path("up")).unwrap();
    let err = t
        .open("up", Access::Read, &RuleOptions::default())
        .unwrap_err();
    assert_eq!(err, OpenError::Symlink);
    let err = t.open("up", Access::Read, &beneath()).unwrap_err();
    assert_eq!(err, OpenError::Escape);
}

#[test]
fn an_absolute_symlink_is_refused_even_when_it_names_a_file_inside() {
    let t = Tree::new();
    symlink(t.outside(), t.path("abs-out")).unwrap();
    symlink(t.path("file"), t.path("abs-in")).unwrap();
    for name in ["abs-out", "abs-in"] {
        let err = t
            .open(name, Access::Read, &RuleOptions::default())
            .unwrap_err();
        assert_eq!(err, OpenError::Symlink, "{name}");
        let err = t.open(name, Access::Read, &beneath()).unwrap_err();
        assert_eq!(err, OpenError::Escape, "{name}");
    }
}

#[test]
fn a_symlink_inside_the_root_is_followed_only_when_the_rule_allows_it() {
    let t = Tree::new();
    symlink("file", t.path("alias")).unwrap();
    symlink("sub", t.path("subdir-link")).unwrap();
    fs::write(t.path("sub/inner"), b"x").unwrap();

    let err = t
        .open("alias", Access::Read, &RuleOptions::default())
        .unwrap_err();
    assert_eq!(err, OpenError::Symlink);
    assert_eq!(err.errno(), Errno::EACCES);
    // A symlink in a directory part of the path counts too.
    let err = t
        .open("subdir-link/inner", Access::Read, &RuleOptions::default())
        .unwrap_err();
    assert_eq!(err, OpenError::Symlink);

    let meta = t.open("alias", Access::Read, &beneath()).unwrap();
    assert_eq!((meta.kind, meta.size), (FileKind::Regular, 5));
    let meta = t
        .open("subdir-link/inner", Access::Read, &beneath())
        .unwrap();
    assert_eq!(meta.kind, FileKind::Regular);
}

#[test]
fn a_symlink_to_a_magic_link_is_refused() {
    let t = Tree::new();
    let held = fs::File::open(t.outside()).unwrap();
    let magic = format!("/proc/self/fd/{}", held.as_raw_fd());
    symlink(&magic, t.path("magic")).unwrap();
    symlink("/proc/self/root", t.path("proc-root")).unwrap();
    for name in ["magic", "proc-root"] {
        let err = t
            .open(name, Access::Read, &RuleOptions::default())
            .unwrap_err();
        assert_eq!(err, OpenError::Symlink, "{name}");
        let err = t.open(name, Access::Read, &beneath()).unwrap_err();
        assert_eq!(err, OpenError::Escape, "{name}");
    }
}

#[test]
fn magic_links_beneath_the_root_are_never_followed() {
    // A root under which magic links really lie: /proc/self. Even a rule that follows
    // symlinks must not jump through /proc/self/fd/N or /proc/self/root.
    let t = Tree::new();
    let held = fs::File::open(t.outside()).unwrap();
    let proc_self = open(
        Path::new("/proc/self"),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    let fd_link = format!("fd/{}", held.as_raw_fd());
    for rel in [fd_link.as_str(), "root/etc/hostname", "cwd", "exe"] {
        let err = open_as(
            proc_self.as_fd(),
            rel,
            Access::Read,
            &RuleOptions::default(),
            ROOT,
        )
        .unwrap_err();
        assert_eq!(err, OpenError::Symlink, "{rel}");
        let err = open_as(proc_self.as_fd(), rel, Access::Read, &beneath(), ROOT).unwrap_err();
        assert_eq!(err, OpenError::Kernel(Errno::ELOOP), "{rel}");
    }
}

#[test]
fn a_fifo_never_blocks_and_is_refused_unless_the_rule_allows_devices() {
    let t = Tree::new();
    nix::unistd::mkfifo(&t.path("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
    let root = t.root.try_clone().unwrap();
    // No writer: a blocking open for reading would wait for one forever.
    let err = promptly(move || {
        open_as(
            root.as_fd(),
            "fifo",
            Access::Read,
            &RuleOptions::default(),
            ROOT,
        )
    })
    .unwrap_err();
    assert_eq!(err, OpenError::Device(FileKind::Fifo));
    assert_eq!(err.errno(), Errno::EACCES);

    let root = t.root.try_clone().unwrap();
    let meta = promptly(move || open_as(root.as_fd(), "fifo", Access::Read, &with_devices(), ROOT))
        .unwrap();
    assert_eq!(meta.kind, FileKind::Fifo);

    // No reader: a non-blocking open for writing fails at once with ENXIO (fifo(7)).
    let root = t.root.try_clone().unwrap();
    let err = promptly(move || open_as(root.as_fd(), "fifo", Access::Write, &with_devices(), ROOT))
        .unwrap_err();
    assert_eq!(err, OpenError::Kernel(Errno::ENXIO));
}

#[test]
fn a_device_node_is_refused_unless_the_rule_allows_devices() {
    let t = Tree::new();
    // /dev/null's numbers, planted inside the tree (this needs CAP_MKNOD: the tests
    // run as root).
    mknod(
        &t.path("null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        makedev(1, 3),
    )
    .unwrap();
    let err = t
        .open("null", Access::Read, &RuleOptions::default())
        .unwrap_err();
    assert_eq!(err, OpenError::Device(FileKind::CharDevice));
    assert_eq!(err.errno(), Errno::EACCES);
    let err = t
        .open("null", Access::Write, &RuleOptions::default())
        .unwrap_err();
    assert_eq!(err, OpenError::Device(FileKind::CharDevice));
    let meta = t.open("null", Access::Read, &with_devices()).unwrap();
    assert_eq!(meta.kind, FileKind::CharDevice);
}

#[test]
fn a_hard_linked_file_is_refused_unless_the_rule_allows_hard_links() {
    let t = Tree::new();
    // A link to a file outside the root, planted under an allowed name.
    fs::hard_link(t.outside(), t.path("planted")).unwrap();
    let err = t
        .open("planted", Access::Read, &RuleOptions::default())
        .unwrap_err();
    assert_eq!(err, OpenError::Hardlinked(2));
    assert_eq!(err.errno(), Errno::EACCES);
    let rule = RuleOptions {
        hardlinks: true,
        ..RuleOptions::default()
    };
    let meta = t.open("planted", Access::Read, &rule).unwrap();
    assert_eq!((meta.kind, meta.nlink), (FileKind::Regular, 2));
}

#[test]
fn truncation_waits_for_the_checks() {
    // O_TRUNC would empty the planted link's target inside open(2); the broker opens
    // without it and truncates only what it authorized.
    let t = Tree::new();
    fs::hard_link(t.outside(), t.path("planted")).unwrap();
    let extra = check_flags(Access::Write, OPEN_TRUNC).unwrap();
    let err = open_beneath(
        t.root.as_fd(),
        b"planted",
        Access::Write,
        extra,
        &RuleOptions::default(),
        &ROOT,
    )
    .unwrap_err();
    assert_eq!(err, OpenError::Hardlinked(2));
    assert_eq!(fs::read(t.outside()).unwrap(), b"secret");

    let (fd, meta) = open_beneath(
        t.root.as_fd(),
        b"file",
        Access::Write,
        extra,
        &RuleOptions::default(),
        &ROOT,
    )
    .unwrap();
    // Opening alone truncates nothing: the caller truncates once the line is written.
    assert_ne!(meta.size, 0);
    assert_ne!(fs::read(t.path("file")).unwrap(), b"");
    let meta = truncate(&fd, meta).unwrap();
    assert_eq!(meta.size, 0, "the returned metadata is after truncation");
    assert_eq!(fs::read(t.path("file")).unwrap(), b"");
}

#[test]
fn a_directory_is_not_a_file_and_a_file_is_not_a_directory() {
    let t = Tree::new();
    let err = t
        .open("sub", Access::Read, &RuleOptions::default())
        .unwrap_err();
    assert_eq!(err, OpenError::IsDirectory);
    assert_eq!(err.errno(), Errno::EISDIR);
    // The kernel refuses a directory for writing before the type check runs.
    let err = t
        .open("sub", Access::Write, &RuleOptions::default())
        .unwrap_err();
    assert_eq!(err, OpenError::Kernel(Errno::EISDIR));
    let err = t
        .open("file", Access::Directory, &RuleOptions::default())
        .unwrap_err();
    assert_eq!(err, OpenError::Kernel(Errno::ENOTDIR));
    let meta = t
        .open("sub", Access::Directory, &RuleOptions::default())
        .unwrap();
    assert_eq!(meta.kind, FileKind::Directory);
    // An empty relative path is the root itself.
    let meta = t
        .open("", Access::Directory, &RuleOptions::default())
        .unwrap();
    assert_eq!(meta.kind, FileKind::Directory);
    let err = t
        .open("", Access::Read, &RuleOptions::default())
        .unwrap_err();
    assert_eq!(err, OpenError::IsDirectory);
}

#[test]
fn a_mode_wider_than_the_grant_is_refused_for_a_stranger() {
    let t = Tree::new();
    let rule = RuleOptions::default();
    // 0644 owned by whoever runs the tests: the stranger may read it anyway, so a
    // read grant adds nothing a reopen could widen.
    open_as(t.root.as_fd(), "file", Access::Read, &rule, STRANGER).unwrap();
    // A write grant on the same file: through /proc/self/fd the stranger could reopen
    // it for reading.
    let err = open_as(t.root.as_fd(), "file", Access::Write, &rule, STRANGER).unwrap_err();
    assert_eq!(
        err,
        OpenError::WiderReopen {
            mode: 0o644,
            owner: nix::unistd::geteuid().as_raw(),
            group: nix::unistd::getegid().as_raw(),
            uid: STRANGER.uid,
            wider: "reading",
        }
    );
    assert_eq!(err.errno(), Errno::EACCES);

    fs::set_permissions(t.path("file"), fs::Permissions::from_mode(0o646)).unwrap();
    let err = open_as(t.root.as_fd(), "file", Access::Read, &rule, STRANGER).unwrap_err();
    assert!(
        matches!(
            err,
            OpenError::WiderReopen {
                mode: 0o646,
                wider: "writing",
                ..
            }
        ),
        "{err:?}"
    );
    // Read-write grants everything a reopen could.
    open_as(t.root.as_fd(), "file", Access::ReadWrite, &rule, STRANGER).unwrap();
}

#[test]
fn the_reopen_check_counts_owner_group_and_exemptions() {
    let t = Tree::new();
    let rule = RuleOptions::default();
    // r--r----- owned by the holder: the owner may fchmod its descriptor, so it counts
    // as having every access, and a read grant would be a way to write.
    fs::set_permissions(t.path("file"), fs::Permissions::from_mode(0o440)).unwrap();
    nix::unistd::chown(
        &t.path("file"),
        Some(Uid::from_raw(STRANGER.uid)),
        Some(Gid::from_raw(0)),
    )
    .unwrap();
    let err = open_as(t.root.as_fd(), "file", Access::Read, &rule, STRANGER).unwrap_err();
    assert!(
        matches!(
            err,
            OpenError::WiderReopen {
                mode: 0o440,
                wider: "writing",
                ..
            }
        ),
        "{err:?}"
    );
    // uid 0 can open the file itself: exempt.
    open_as(t.root.as_fd(), "file", Access::Read, &rule, ROOT).unwrap();

    // A member of the file's group (here through a supplementary group) gets the
    // group bits (r--): a read grant is exact, a write grant would add reading.
    let member = Holder {
        uid: STRANGER.uid + 1,
        gid: STRANGER.gid + 1,
        groups: &[0],
    };
    open_as(t.root.as_fd(), "file", Access::Read, &rule, member).unwrap();
    let err = open_as(t.root.as_fd(), "file", Access::Write, &rule, member).unwrap_err();
    assert!(
        matches!(
            err,
            OpenError::WiderReopen {
                wider: "reading",
                ..
            }
        ),
        "{err:?}"
    );
    // Anyone else gets the other bits (none): nothing to widen.
    let other = Holder {
        uid: STRANGER.uid + 2,
        gid: STRANGER.gid + 2,
        groups: &[],
    };
    open_as(t.root.as_fd(), "file", Access::Write, &rule, other).unwrap();

    // The rule may waive the check.
    let waived = RuleOptions {
        allow_reopen: true,
        ..RuleOptions::default()
    };
    open_as(t.root.as_fd(), "file", Access::Read, &waived, STRANGER).unwrap();
    // Directories are exempt.
    fs::set_permissions(t.path("sub"), fs::Permissions::from_mode(0o777)).unwrap();
    open_as(t.root.as_fd(), "sub", Access::Directory, &rule, STRANGER).unwrap();
}

#[test]
fn create_makes_a_new_file_with_exactly_the_rules_mode() {
    let t = Tree::new();
    let rule = RuleOptions {
        create_mode: 0o664,
        ..RuleOptions::default()
    };
    let meta = t.open("new", Access::Create, &rule).unwrap();
    assert_eq!(meta.kind, FileKind::Regular);
    // The file on disk, not `meta`: the metadata is taken before the fchmod that
    // undoes the umask.
    assert_eq!(
        fs::metadata(t.path("new")).unwrap().permissions().mode() & 0o7777,
        0o664
    );
    // O_EXCL: never an existing file, and never through a symlink.
    let err = t.open("file", Access::Create, &rule).unwrap_err();
    assert_eq!(err, OpenError::Kernel(Errno::EEXIST));
    symlink("../outside-new", t.path("dangling")).unwrap();
    let err = t.open("dangling", Access::Create, &beneath()).unwrap_err();
    assert_eq!(err, OpenError::Kernel(Errno::EEXIST));
    assert!(!t.dir.path().join("outside-new").exists());
}

#[test]
fn check_flags_allows_only_truncate_and_append_and_only_for_writes() {
    assert_eq!(check_flags(Access::Read, 0), Ok(OFlag::empty()));
    assert_eq!(check_flags(Access::Write, OPEN_TRUNC), Ok(OFlag::O_TRUNC));
    assert_eq!(
        check_flags(Access::ReadWrite, OPEN_APPEND),
        Ok(OFlag::O_APPEND)
    );
    assert_eq!(
        check_flags(Access::Read, OPEN_TRUNC),
        Err(OpenError::FlagsNeedWrite)
    );
    assert_eq!(
        check_flags(Access::Create, OPEN_APPEND),
        Err(OpenError::FlagsNeedWrite)
    );
    let unknown = 1 << 31;
    assert_eq!(
        check_flags(Access::Write, unknown | OPEN_TRUNC),
        Err(OpenError::BadFlags(unknown))
    );
    assert_eq!(OpenError::BadFlags(unknown).errno(), Errno::EINVAL);
}

#[test]
fn stat_resolves_like_an_open_and_never_opens() {
    let t = Tree::new();
    let rule = RuleOptions::default();
    nix::unistd::mkfifo(&t.path("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
    symlink("../outside", t.path("up")).unwrap();
    fs::hard_link(t.outside(), t.path("planted")).unwrap();

    let st = stat_beneath(t.root.as_fd(), b"file", Access::Read, &rule).unwrap();
    assert_eq!((st.file.kind, st.file.size), (FileKind::Regular, 5));
    // Described, never opened (which would block), whatever `devices` says: that is
    // about opening one.
    let root = t.root.try_clone().unwrap();
    let st = promptly(move || {
        stat_beneath(root.as_fd(), b"fifo", Access::Read, &RuleOptions::default())
    })
    .unwrap();
    assert_eq!(
        (st.file.kind, st.file.mode & 0o7777),
        (FileKind::Fifo, 0o644)
    );
    mknod(
        &t.path("null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        makedev(1, 3),
    )
    .unwrap();
    let st = stat_beneath(t.root.as_fd(), b"null", Access::Read, &rule).unwrap();
    assert_eq!(
        (st.file.kind, st.rdev),
        (FileKind::CharDevice, makedev(1, 3))
    );
    // Under a directory grant alone, only directories are described.
    assert_eq!(
        stat_beneath(t.root.as_fd(), b"fifo", Access::Directory, &rule),
        Err(OpenError::NotDirectory)
    );
    assert_eq!(
        stat_beneath(t.root.as_fd(), b"up", Access::Read, &rule),
        Err(OpenError::Symlink)
    );
    assert_eq!(
        stat_beneath(t.root.as_fd(), b"../outside", Access::Read, &rule),
        Err(OpenError::Escape)
    );
    assert_eq!(
        stat_beneath(t.root.as_fd(), b"planted", Access::Read, &rule),
        Err(OpenError::Hardlinked(2))
    );
    // A directory grant describes directories only.
    let st = stat_beneath(t.root.as_fd(), b"sub", Access::Directory, &rule).unwrap();
    assert_eq!(st.file.kind, FileKind::Directory);
    assert_eq!(
        stat_beneath(t.root.as_fd(), b"file", Access::Directory, &rule),
        Err(OpenError::NotDirectory)
    );
}

/// A FIFO (or socket, or device node) with a second name is refused by a stat as a
/// hard-linked file is, where the rule allows neither devices nor hard links: one
/// planted in the tree from outside it or from a carve-out would otherwise describe
/// that file (its owner, mode and times: when it was last written). Where the rule
/// allows opening devices, a stat describes what an open would pass.
#[test]
fn stat_refuses_a_hard_linked_fifo_as_a_hard_linked_file() {
    let t = Tree::new();
    let outside = t.dir.path().join("outside-fifo");
    nix::unistd::mkfifo(&outside, Mode::from_bits_truncate(0o600)).unwrap();
    fs::hard_link(&outside, t.path("planted-fifo")).unwrap();
    let root = t.root.try_clone().unwrap();
    let got = promptly(move || {
        stat_beneath(
            root.as_fd(),
            b"planted-fifo",
            Access::Read,
            &RuleOptions::default(),
        )
    });
    assert_eq!(got, Err(OpenError::Hardlinked(2)));
    let lstat = link_beneath(
        t.root.as_fd(),
        b"planted-fifo",
        Access::Read,
        &RuleOptions::default(),
    );
    assert_eq!(lstat.err(), Some(OpenError::Hardlinked(2)));
    for rule in [
        RuleOptions {
            hardlinks: true,
            ..RuleOptions::default()
        },
        RuleOptions {
            devices: true,
            ..RuleOptions::default()
        },
    ] {
        let st = stat_beneath(t.root.as_fd(), b"planted-fifo", Access::Read, &rule).unwrap();
        assert_eq!((st.file.kind, st.file.nlink), (FileKind::Fifo, 2));
    }
}

#[test]
fn same_filesystem_refuses_to_cross_a_mount() {
    // /proc is a mount of its own beneath /: crossing into it is refused only when the
    // rule asks for one filesystem.
    let slash = open(
        Path::new("/"),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    let rule = RuleOptions {
        same_filesystem: true,
        ..RuleOptions::default()
    };
    let err = open_as(slash.as_fd(), "proc/version", Access::Read, &rule, ROOT).unwrap_err();
    assert_eq!(err, OpenError::CrossDevice);
    let meta = open_as(
        slash.as_fd(),
        "proc/version",
        Access::Read,
        &RuleOptions::default(),
        ROOT,
    )
    .unwrap();
    assert_eq!(meta.kind, FileKind::Regular);
}
