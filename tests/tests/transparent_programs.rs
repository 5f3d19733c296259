//! Real, unmodified programs under `fdbroker run --transparent`, one behaviour class
//! each, compared with the same program run as root on the same root-only tree: the
//! standard devices, what the policy refused (said at exit, `--fail-on-denial`), the
//! metadata calls programs make on every file, and opens with odd flags.
#![allow(clippy::unwrap_used)]

use fdbroker_tests::transparent::{
    as_root, run, s, same_as_root, transparent, transparent_with, tree_policy,
};
use fdbroker_tests::{TempDir, text};
use std::path::{Path, PathBuf};

/// The shared carved tree (`fdbroker_tests::transparent::carved_tree`), named for this
/// file; `extra` goes into `[sandbox]`.
fn fixture(extra: &str) -> (TempDir, PathBuf) {
    fdbroker_tests::transparent::carved_tree("transparent-programs", extra)
}

/// `/dev/null`, `/dev/zero`, `/dev/urandom` and `/dev/full` behave as for root, with no
/// device rule in the policy; `/dev/tty` is the kernel's "no terminal", not a Landlock
/// refusal; and `perl` and `git`, which open `/dev/null` at start-up, just run.
#[test]
fn transparent_standard_devices_are_there_by_default() {
    let (t, policy) = fixture("");
    let a = t.join("tree/a.txt");
    let script = "echo gone > /dev/null && cat /dev/null && head -c 4 /dev/zero | od -An -tx1 \
                  && head -c 16 /dev/urandom | wc -c \
                  && (echo x > /dev/full 2>/dev/null || echo full)";
    same_as_root(&policy, &["sh", "-c", script]);
    same_as_root(
        &policy,
        &[
            "perl",
            "-e",
            "open(my $n, '>', '/dev/null') or die \"null: $!\"; print $n 'x'; \
             open(my $f, '<', $ARGV[0]) or die \"$!\"; print <$f>;",
            s(&a),
        ],
    );
    if Path::new("/usr/bin/git").exists() || Path::new("/usr/local/bin/git").exists() {
        // From `/`: no repository to discover, and no worktree of this one.
        let git = format!("cd / && git hash-object {} && git --version", s(&a));
        same_as_root(&policy, &["sh", "-c", &git]);
    }
    // No controlling terminal in the sandbox (it leaves the session): ENXIO, the
    // kernel's own answer, rather than EACCES.
    let out = run(transparent(
        &policy,
        &[
            "/usr/bin/python3",
            "-c",
            "import os\ntry:\n os.open('/dev/tty', os.O_RDWR)\nexcept OSError as e:\n print(e.errno)",
        ],
    ));
    assert_eq!(
        text(&out.stdout).trim(),
        libc::ENXIO.to_string(),
        "{}",
        text(&out.stderr)
    );
}

/// The EICAR test string, split so that no scanner flags this source file.
fn eicar() -> Vec<u8> {
    let mut v = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$".to_vec();
    v.extend_from_slice(b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*");
    v
}

/// A scanner under a carve-out holding an infected file: the run says what the policy
/// refused, at exit, with the path; `--fail-on-denial` and `[sandbox] fail_on_denial`
/// make an otherwise clean exit fail; and without a refusal nothing is said.
#[test]
fn transparent_a_denial_is_never_a_clean_run() {
    let (t, policy) = fixture("");
    t.file("tree/carve/eicar.com", &eicar(), 0o600);
    let sig: String = eicar()[..32].iter().map(|b| format!("{b:02x}")).collect();
    let db = t.file(
        "tree/test.ndb",
        format!("FdbrokerEicar:0:*:{sig}\n").as_bytes(),
        0o600,
    );
    let tree = t.join("tree");
    let carve = t.join("tree/carve");
    let clamscan = Path::new("/usr/bin/clamscan").exists();
    let scan: Vec<&str> = if clamscan {
        vec![
            "/usr/bin/clamscan",
            "--no-summary",
            "-d",
            s(&db),
            "-r",
            s(&tree),
        ]
    } else {
        eprintln!("clamscan is not installed (scripts/test.sh installs clamav); using find");
        vec!["find", s(&tree), "-type", "f"]
    };
    // As root the infected file is found.
    if clamscan {
        let root = run(as_root(&scan));
        assert_eq!(root.status.code(), Some(1), "{}", text(&root.stderr));
        assert!(text(&root.stdout).contains("eicar.com: FdbrokerEicar"));
    }
    let confined = run(transparent(&policy, &scan));
    let err = text(&confined.stderr);
    assert!(!text(&confined.stdout).contains("eicar.com"), "{err}");
    let said = format!("\"{}\"", carve.display());
    assert!(
        err.contains("fdbroker run: the policy refused") && err.contains(&said),
        "the refusal is said at exit, with the path: {err}"
    );
    // The program's status is kept unless asked otherwise...
    let plain = confined.status.code();
    assert_eq!(plain, Some(0), "{err}");
    // ...and with --fail-on-denial a clean exit fails.
    let failing = run(transparent_with(&policy, &["--fail-on-denial"], &scan));
    assert_eq!(failing.status.code(), Some(1), "{}", text(&failing.stderr));
    // Named directly, the carve-out is a scan error, as an unreadable directory is.
    if clamscan {
        let direct = [
            "/usr/bin/clamscan",
            "--no-summary",
            "-d",
            s(&db),
            "-r",
            s(&carve),
        ];
        let out = run(transparent(&policy, &direct));
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains(s(&carve)) || text(&out.stderr).contains(s(&carve)));
    }
    // A direct request for the carved-out file is refused, counted and failed too.
    let secret = t.join("tree/carve/secret.txt");
    let (_t2, set) = fixture("fail_on_denial = true");
    let secret2 = _t2.join("tree/carve/secret.txt");
    let out = run(transparent(
        &set,
        &["sh", "-c", &format!("cat {} ; exit 0", s(&secret2))],
    ));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("refused 1 request"),
        "{}",
        text(&out.stderr)
    );
    drop(secret);
    // Nothing refused: nothing said, the status is the program's.
    let a = t.join("tree/a.txt");
    let clean = run(transparent_with(
        &policy,
        &["--fail-on-denial"],
        &["cat", s(&a)],
    ));
    assert!(clean.status.success(), "{}", text(&clean.stderr));
    assert!(
        !text(&clean.stderr).contains("refused"),
        "{}",
        text(&clean.stderr)
    );
}

/// The metadata calls programs make on every file answer as they do for root: extended
/// attributes (none on this tree: `ENODATA`, an empty list), `statfs`, `stat` and
/// `ls -l` without numeric ids, and `flock(1)`'s `O_RDONLY|O_CREAT` of an existing file
/// is a read. File handles and inotify are refused with the kernel's errnos for "not
/// supported here" and "no more watches", never `EACCES`.
#[test]
fn transparent_metadata_calls_answer_as_for_root() {
    let (t, policy) = fixture("");
    let a = t.join("tree/a.txt");
    let sub = t.join("tree/sub");
    let xattrs = format!(
        r#"
import errno, os
for p in [{a:?}, {sub:?}]:
    print(p, os.listxattr(p), os.listxattr(p, follow_symlinks=False))
    for name in ["user.fdbroker", "security.selinux", "system.posix_acl_access"]:
        try:
            os.getxattr(p, name)
        except OSError as e:
            print(name, errno.errorcode[e.errno])
"#,
        a = s(&a),
        sub = s(&sub)
    );
    same_as_root(&policy, &["/usr/bin/python3", "-c", &xattrs]);
    same_as_root(
        &policy,
        &["stat", "-f", "-c", "%n %T %s %S %l", s(&a), s(&sub)],
    );
    // Numeric ids: /etc/passwd is not in this sandbox.
    same_as_root(&policy, &["ls", "-ln", "--time-style=+%s", s(&sub)]);
    same_as_root(&policy, &["flock", s(&a), "cat", s(&a)]);
    // The kernel's own "not supported" and "no more watches", as a program sees them on
    // a filesystem without handles or past its watch limit.
    let refusals = format!(
        r#"
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(128)
ctypes.c_uint.from_buffer(buf).value = 120
mount = ctypes.c_int()
rc = libc.name_to_handle_at(-100, {a:?}.encode(), buf, ctypes.byref(mount), 0)
print("handle", rc, ctypes.get_errno())
fd = libc.inotify_init1(0)
rc = libc.inotify_add_watch(fd, {a:?}.encode(), 2)
print("watch", rc, ctypes.get_errno())
"#,
        a = s(&a)
    );
    let out = run(transparent(&policy, &["/usr/bin/python3", "-c", &refusals]));
    assert_eq!(
        text(&out.stdout),
        format!(
            "handle -1 {}\nwatch -1 {}\n",
            libc::EOPNOTSUPP,
            libc::ENOSPC
        ),
        "{}",
        text(&out.stderr)
    );
}

/// Several threads answer the program's calls (a pool sharing one pipelined broker
/// connection), so one program thread's call never waits behind another's: the
/// supervisor (the namespace init's child, the program's parent) has more than its
/// signal-handling thread, and a program whose threads all read at once gets every
/// file right.
#[test]
fn transparent_calls_are_answered_by_a_pool_of_threads() {
    use std::io::BufRead;
    let (t, policy) = fixture("");
    let mut cmd = transparent(&policy, &["sh", "-c", "echo ready; exec sleep 60"]);
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    // The supervisor is the child of `fdbroker run` that the program is a child of
    // (beside it: the namespace's init and the scratch remover, without children).
    let supervisors: Vec<u32> = fdbroker_tests::children_of(child.id())
        .into_iter()
        .filter(|&p| !fdbroker_tests::children_of(p).is_empty())
        .collect();
    let threads: Vec<usize> = supervisors
        .iter()
        .map(|p| {
            std::fs::read_dir(format!("/proc/{p}/task"))
                .unwrap()
                .count()
        })
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(threads.len(), 1, "one supervisor: {supervisors:?}");
    assert!(
        threads[0] >= 3,
        "signals and at least two answering threads: {threads:?}"
    );
    // Eight threads reading two files at once all read what root reads.
    let a = t.join("tree/a.txt");
    let b = t.join("tree/sub/b.txt");
    let threaded = format!(
        r#"
import threading
out = [None] * 8
def read(i):
    out[i] = b"".join(open(p, "rb").read() for p in [{a:?}, {b:?}] * 50)
ts = [threading.Thread(target=read, args=(i,)) for i in range(8)]
[t.start() for t in ts]
[t.join() for t in ts]
print(len(set(out)), len(out[0]))
"#,
        a = s(&a),
        b = s(&b)
    );
    same_as_root(&policy, &["/usr/bin/python3", "-c", &threaded]);
}

/// The working directory: `cd` (the shell's `chdir`) and `fchdir` on a descriptor the
/// broker passed enter root-only served directories; relative paths, `getcwd` (`pwd`),
/// a forked and exec'd child (`find -execdir`, Python's `subprocess`) and another
/// thread all see the directory entered, as for root. It grants nothing: from there,
/// the carve-out and what lies outside the policy stay refused.
#[test]
fn transparent_working_directory_is_kept_for_served_directories() {
    let (t, policy) = fixture("");
    t.file("outside.txt", b"not in the policy\n", 0o600);
    let tree = t.join("tree");
    let sub = t.join("tree/sub");
    let shell = format!(
        "cd {sub} && cat b.txt ../a.txt && /bin/pwd && ls && cd .. && ls -d sub && /bin/pwd",
        sub = s(&sub)
    );
    same_as_root(&policy, &["sh", "-c", &shell]);
    same_as_root(
        &policy,
        &[
            "find",
            s(&tree),
            "-name",
            "*.txt",
            "-not",
            "-path",
            "*carve*",
            "-execdir",
            "cat",
            "{}",
            ";",
        ],
    );
    let python = format!(
        r#"
import os, subprocess, threading
fd = os.open({sub:?}, os.O_RDONLY | os.O_DIRECTORY)
os.fchdir(fd)
print(os.getcwd(), open("b.txt").read().strip())
print(subprocess.run(["cat", "b.txt"], capture_output=True).stdout)
print(subprocess.run(["sh", "-c", "/bin/pwd; cat ../a.txt"], capture_output=True).stdout)
out = []
th = threading.Thread(target=lambda: out.append(open("b.txt").read()))
th.start(); th.join()
print(out)
pid = os.fork()
if pid == 0:
    os.write(1, open("b.txt", "rb").read())
    os._exit(0)
os.waitpid(pid, 0)
os.chdir("/")
print(os.getcwd(), os.path.exists("b.txt"))
"#,
        sub = s(&sub)
    );
    same_as_root(&policy, &["/usr/bin/python3", "-c", &python]);
    // `git -C` into a root-only repository: it changes directory, then reads .git.
    let repo = t.join("tree/repo");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(&repo)
            .env("HOME", "/nonexistent")
            .output()
    };
    std::fs::create_dir_all(&repo).unwrap();
    if git(&["init", "-q"]).is_ok_and(|o| o.status.success()) {
        std::fs::write(repo.join("f"), b"tracked\n").unwrap();
        let committed = git(&["add", "f"]).unwrap().status.success()
            && git(&[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-qm",
                "first",
            ])
            .unwrap()
            .status
            .success();
        assert!(committed);
        std::process::Command::new("chmod")
            .args(["-R", "go-rwx"])
            .arg(&repo)
            .status()
            .unwrap();
        let log = format!(
            "HOME=/nonexistent git -c safe.directory='*' -C {} log --format=%s -- f",
            s(&repo)
        );
        same_as_root(&policy, &["sh", "-c", &log]);
    }
    // Nothing more than the policy: the carve-out cannot be entered, and from a kept
    // directory neither it nor what lies outside the policy can be read.
    let probe = format!(
        "cd {sub} || exit 9; cat ../carve/secret.txt; cat ../../outside.txt; \
         cd ../carve && echo entered; cd {carve} && echo entered; exit 0",
        sub = s(&sub),
        carve = s(&t.join("tree/carve"))
    );
    let out = run(transparent(&policy, &["sh", "-c", &probe]));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stdout.contains("carved") && !stdout.contains("not in the policy"),
        "{stdout}"
    );
    assert!(!stdout.contains("entered"), "{stdout}");
    assert_eq!(stderr.matches("Permission denied").count(), 2, "{stderr}");
    assert_eq!(stderr.matches("can't cd").count(), 2, "{stderr}");
}

/// Symbolic links inside a served tree are described, not followed: with the default
/// `symlinks = "none"`, `ls -lR`, `find`, `stat`, `readlink`, `du` and `os.walk` with
/// `lstat` print what root prints about the links themselves (a relative one, a
/// dangling one, one to a directory, one out of the tree), while following one stays
/// refused. Under `symlinks = "beneath"` a link is followed: `lstat` describes the
/// target and `readlink -f` ends at the link's own path.
#[test]
fn transparent_symbolic_links_are_described_not_followed() {
    let t = TempDir::new("transparent-links");
    t.file("tree/sub/b.txt", b"bravo bravo\n", 0o600);
    t.file("tree/sub/deeper/c.txt", b"charlie\n", 0o600);
    t.file("tree/follow/target.txt", b"followed\n", 0o600);
    for d in ["tree", "tree/sub", "tree/sub/deeper", "tree/follow"] {
        t.dir(d, 0o700);
    }
    let link = |target: &str, at: &str| std::os::unix::fs::symlink(target, t.join(at)).unwrap();
    link("b.txt", "tree/sub/rel");
    link("missing.txt", "tree/sub/dangling");
    link("deeper", "tree/sub/dirlink");
    link("/etc/hostname", "tree/sub/out");
    link("target.txt", "tree/follow/link");
    let policy = tree_policy(
        &t,
        "",
        &format!(
            "  [[client.allow]]\n  path = \"{}/tree/follow/\"\n  access = [\"read\"]\n  symlinks = \"beneath\"\n",
            t.path().display()
        ),
    );
    let sub = t.join("tree/sub");
    let sub = s(&sub);
    same_as_root(&policy, &["ls", "-lRn", "--time-style=+%s", sub]);
    // Not a word about any entry on stderr (ls reports a failed lgetxattr there).
    let ls = run(transparent(&policy, &["ls", "-lRn", sub]));
    assert!(!text(&ls.stderr).contains("ls:"), "{}", text(&ls.stderr));
    same_as_root(&policy, &["find", sub, "-printf", "%p %y %l %s\\n"]);
    same_as_root(
        &policy,
        &[
            "stat",
            "-c",
            "%n %F %s %h %N",
            &format!("{sub}/rel"),
            &format!("{sub}/dangling"),
            &format!("{sub}/out"),
        ],
    );
    same_as_root(
        &policy,
        &[
            "readlink",
            &format!("{sub}/rel"),
            &format!("{sub}/dirlink"),
            &format!("{sub}/out"),
        ],
    );
    same_as_root(&policy, &["readlink", "-f", &format!("{sub}/rel")]);
    same_as_root(&policy, &["du", "-a", "--apparent-size", "-b", sub]);
    // `grep -r` opens each entry with `O_NOFOLLOW` and skips a link on `ELOOP`.
    same_as_root(&policy, &["grep", "-rn", "bravo", sub]);
    let nofollow = format!(
        r#"
import os
for name in ["rel", "dangling", "dirlink", "b.txt"]:
    for flags in [os.O_RDONLY | os.O_NOFOLLOW, os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY]:
        try:
            os.close(os.open(os.path.join({sub:?}, name), flags))
            print(name, flags, "opened")
        except OSError as e:
            print(name, flags, e.errno)
"#
    );
    same_as_root(&policy, &["/usr/bin/python3", "-c", &nofollow]);
    let walk = format!(
        r#"
import os
for d, dirs, files in os.walk({sub:?}):
    dirs.sort()
    for f in sorted(files + dirs):
        p = os.path.join(d, f)
        st = os.lstat(p)
        print(p, oct(st.st_mode), st.st_size, os.path.islink(p), os.readlink(p) if os.path.islink(p) else "")
"#
    );
    same_as_root(&policy, &["/usr/bin/python3", "-c", &walk]);
    // Following a link is the rule's to allow: refused under "none".
    let out = run(transparent(&policy, &["cat", &format!("{sub}/rel")]));
    assert!(!out.status.success());
    assert!(!text(&out.stdout).contains("bravo"));
    // "beneath": followed, so lstat describes the target, readlink -f stays put.
    let followed = t.join("tree/follow/link");
    let followed = s(&followed);
    let out = run(transparent(
        &policy,
        &[
            "sh",
            "-c",
            &format!("cat {followed}; stat -c '%F %s' {followed}; readlink -f {followed}"),
        ],
    ));
    assert_eq!(
        text(&out.stdout),
        format!("followed\nregular file 9\n{followed}\n"),
        "{}",
        text(&out.stderr)
    );
}

/// A FIFO, a socket and a device node in a served tree are described as the kernel
/// describes them to root (`ls -l`, `find`, `du`, `stat`, `test -p`), though the rule does
/// not allow opening devices: describing one opens nothing. Opening one stays refused,
/// and promptly (an open of the FIFO as root would wait for a writer).
#[test]
fn transparent_special_files_are_described_as_for_root() {
    let t = TempDir::new("transparent-special");
    t.file("tree/sub/plain.txt", b"plain\n", 0o600);
    for d in ["tree", "tree/sub"] {
        t.dir(d, 0o700);
    }
    let mode = nix::sys::stat::Mode::from_bits_truncate(0o600);
    nix::unistd::mkfifo(&t.join("tree/sub/fifo"), mode).unwrap();
    nix::sys::stat::mknod(
        &t.join("tree/sub/null"),
        nix::sys::stat::SFlag::S_IFCHR,
        mode,
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(t.join("tree/sub/sock")).unwrap();
    let policy = tree_policy(&t, "", "");
    let sub = t.join("tree/sub");
    let sub = s(&sub);
    let at = |name: &str| format!("{sub}/{name}");
    same_as_root(&policy, &["ls", "-lRn", "--time-style=+%s", sub]);
    same_as_root(&policy, &["find", sub, "-printf", "%p %y %m %s\\n"]);
    same_as_root(&policy, &["du", "-a", "--apparent-size", "-b", sub]);
    same_as_root(
        &policy,
        &[
            "stat",
            "-c",
            "%n %F %a %t:%T",
            &at("fifo"),
            &at("null"),
            &at("sock"),
        ],
    );
    same_as_root(
        &policy,
        &[
            "sh",
            "-c",
            &format!(
                "test -p {f} && test -c {n} && test -S {k} && echo typed",
                f = at("fifo"),
                n = at("null"),
                k = at("sock")
            ),
        ],
    );
    // Killed at the hang bound if the open blocked, which fails the asserts below.
    let out = fdbroker_tests::run_with_timeout(
        &mut transparent(&policy, &["cat", &at("fifo")]),
        fdbroker_tests::wait::HANG,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );
}

/// `..` above a served directory is described as for root: `ls -la` of the tree's top
/// (its `..` entry), `stat DIR/..`, and `ls -la` in a kept working directory there.
/// The kernel would have to search the root-only directory to get there, which the
/// sandbox user may not.
#[test]
fn transparent_dot_dot_above_a_served_directory_is_described_as_for_root() {
    // No carve-out in this tree: a listing would leave it out, where root's shows it.
    let t = TempDir::new("transparent-dotdot");
    t.file("tree/a.txt", b"alpha\n", 0o600);
    t.file("tree/sub/b.txt", b"bravo\n", 0o600);
    for d in ["tree", "tree/sub"] {
        t.dir(d, 0o700);
    }
    let policy = tree_policy(&t, "", "");
    let tree = t.join("tree");
    let tree = s(&tree);
    same_as_root(&policy, &["ls", "-lan", "--time-style=+%s", tree]);
    let quiet = run(transparent(&policy, &["ls", "-la", tree]));
    assert!(quiet.status.success(), "{}", text(&quiet.stderr));
    assert!(
        !text(&quiet.stderr).contains("ls:"),
        "{}",
        text(&quiet.stderr)
    );
    same_as_root(
        &policy,
        &[
            "stat",
            "-c",
            "%n %F %i %a",
            &format!("{tree}/.."),
            &format!("{tree}/sub/../.."),
        ],
    );
    same_as_root(
        &policy,
        &[
            "sh",
            "-c",
            &format!("cd {tree} && ls -lan --time-style=+%s && stat -c '%F %i' .."),
        ],
    );
    // Nothing above the tree is opened or listed for the program: a listing of `..`
    // is the sandbox's to refuse, as before.
    let out = run(transparent(&policy, &["ls", &format!("{tree}/..")]));
    assert!(!out.status.success(), "{}", text(&out.stdout));
}

/// `..` above a served directory is described as the program would see that ancestor by
/// its own name, never as the supervisor sees it: an ancestor that is a link into
/// `/proc/self` (here planted by the owner of a glob rule's static root, which may be
/// anyone: only what is above it must be root's) names the supervisor's process and its
/// descriptors to the supervisor's own stat, and the program's own process to the
/// program's. As root, and for the program by the ancestor's name, the lookup goes
/// through the program's own `/proc/self`, which holds no `x.txt`.
#[test]
fn transparent_dot_dot_above_a_served_directory_never_describes_the_supervisor() {
    let t = TempDir::new("transparent-dotdot-self");
    t.file("g/d/x.txt", b"x\n", 0o644);
    t.dir("g", 0o755);
    std::os::unix::fs::symlink("/proc/self", t.join("g/self")).unwrap();
    std::os::unix::fs::symlink("/proc/self/fd", t.join("g/fd")).unwrap();
    let g = t.join("g");
    let policy = tree_policy(
        &t,
        "",
        &format!(
            "  [[client.allow]]\n  path = \"{}/**/x.txt\"\n  access = [\"read\"]\n",
            g.display()
        ),
    );
    let script = format!(
        r#"
import os
def seen(p, follow=True):
    try:
        st = os.stat(p, follow_symlinks=follow)
        return "ok %d %d" % (st.st_dev, st.st_ino)
    except OSError as e:
        return "errno %d" % e.errno
g = {g:?}
print("self", seen(g + "/self/x.txt/.."), seen(g + "/self/x.txt/..", False))
for n in range(0, 64):
    via = seen(g + "/fd/%d/x.txt/.." % n)
    if via.startswith("ok") and via != seen(g + "/fd/%d" % n):
        print("the supervisor's descriptor", n, via)
"#,
        g = s(&g)
    );
    same_as_root(&policy, &["/usr/bin/python3", "-c", &script]);
}

/// A stat of a path of many `..` components costs the supervisor a walk, not a read of
/// `/proc` per component: 100 stats of a path of 1,364 `..` (what fits in `PATH_MAX`)
/// take microseconds each for the kernel as root, and must not take tens of
/// milliseconds each of the supervisor's time (every one of its answering threads is
/// then busy with one program thread's calls).
#[test]
fn transparent_many_dot_dots_cost_a_walk() {
    let (_t, policy) = fixture("");
    let script = r#"
import os, time
p = "../" * 1364 + "x"
t = time.monotonic()
for _ in range(100):
    try:
        os.stat(p)
    except OSError:
        pass
print("slow" if time.monotonic() - t > 1.5 else "quick")
"#;
    same_as_root(&policy, &["/usr/bin/python3", "-c", script]);
}

/// `lstat` of `DIR/..` describes the directory the kernel finds, never a link: the last
/// component is `..`, which the kernel never treats as a link, so where the cleaned
/// parent is a (root's) symbolic link, `ls -la DIR` shows `..` as the directory it leads
/// to, as root's does, not as a link.
#[test]
fn transparent_dot_dot_above_a_served_directory_is_no_link() {
    let t = TempDir::new("transparent-dotdot-link");
    t.file("real/tree/a.txt", b"alpha\n", 0o600);
    t.dir("real/tree", 0o700);
    t.dir("real", 0o755);
    std::os::unix::fs::symlink("real", t.join("link")).unwrap();
    let tree = t.join("link/tree");
    let policy = tree_policy(
        &t,
        "",
        &format!(
            "  [[client.allow]]\n  path = \"{}/\"\n  access = [\"read\", \"directory\"]\n",
            tree.display()
        ),
    );
    let tree = s(&tree);
    same_as_root(
        &policy,
        &[
            "stat",
            "-c",
            "%n %F %i",
            &format!("{tree}/.."),
            &format!("{tree}/../."),
        ],
    );
    let lstat = format!(
        r#"
import os
for p in [{tree:?} + "/..", {tree:?} + "/../", {tree:?} + "/../."]:
    st = os.lstat(p)
    print(p, oct(st.st_mode), st.st_ino)
"#
    );
    same_as_root(&policy, &["/usr/bin/python3", "-c", &lstat]);
    same_as_root(&policy, &["ls", "-lan", "--time-style=+%s", tree]);
}

/// The program's own files in its scratch directory take `chmod`, `fchmod` and
/// `utimensat` as for root: `tar x`, `cp -a`, `shutil.copytree` and `touch -d` work and
/// keep modes and times. Never a set-id or a file's execute bit (dropped), and nothing
/// outside the scratch directory changes (`EPERM`, the kernel's word for a file the
/// caller does not own).
#[test]
fn transparent_scratch_files_take_chmod_and_times() {
    let (t, policy) = fixture("");
    let script = r#"
cd "$TMPDIR" && mkdir src && echo hi > src/a && chmod 640 src/a && mkdir src/d && chmod 750 src/d \
&& touch -d @1000000000 src/a && touch -d @1000000001 src/d && tar czf a.tgz src && mkdir x && tar xzf a.tgz -C x \
&& cp -a x/src y && python3 -c 'import shutil; shutil.copytree("x", "z")' \
&& stat -c '%n %a %Y' x/src/a x/src/d y/a y/d z/src/a z/src/d \
&& python3 -c 'import os; fd = os.open("src/a", os.O_RDONLY); os.fchmod(fd, 0o600); os.utime(fd, (5, 7))' \
&& stat -c '%n %a %X %Y' src/a
"#;
    let root_tmp = TempDir::new("transparent-scratch-root");
    let root = run({
        let mut c = as_root(&["sh", "-c", script]);
        c.env("TMPDIR", root_tmp.path());
        c
    });
    assert!(root.status.success(), "{}", text(&root.stderr));
    let confined = run(transparent(&policy, &["sh", "-c", script]));
    assert!(confined.status.success(), "{}", text(&confined.stderr));
    assert_eq!(text(&confined.stdout), text(&root.stdout));
    assert!(
        text(&root.stdout).contains("x/src/a 640 1000000000"),
        "{}",
        text(&root.stdout)
    );
    // Never set-id, never a file's execute bits; nothing outside the scratch directory.
    let a = t.join("tree/a.txt");
    let limits = format!(
        "cd \"$TMPDIR\" && echo x > f && chmod 4755 f && mkdir d && chmod 2755 d && stat -c '%a' f d; \
         chmod 600 {a} || echo refused; touch {a} || echo refused; ln -s f l && chmod 600 l || echo refused",
        a = s(&a)
    );
    let out = run(transparent(&policy, &["sh", "-c", &limits]));
    assert_eq!(
        text(&out.stdout),
        "644\n755\nrefused\nrefused\nrefused\n",
        "{}",
        text(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&a).unwrap().permissions().mode() & 0o7777,
        0o600
    );
}

/// `fstat` on a descriptor (glibc's `newfstatat(fd, "", AT_EMPTY_PATH)`, and `statx`
/// alike) costs no round trip to the supervisor: it is answered while the supervisor is
/// stopped, and answers about the file the broker passed.
#[test]
fn transparent_fstat_of_a_descriptor_never_reaches_the_supervisor() {
    use std::io::{BufRead, Write};
    let (t, policy) = fixture("");
    let a = t.join("tree/a.txt");
    let script = format!(
        r#"
import os, sys
fd = os.open({a:?}, os.O_RDONLY)
print("ready", flush=True)
sys.stdin.readline()
print("done", os.fstat(fd).st_size, os.stat(fd).st_size, flush=True)
"#,
        a = s(&a)
    );
    let mut child = transparent(&policy, &["/usr/bin/python3", "-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    let supervisor = fdbroker_tests::children_of(child.id())
        .into_iter()
        .find(|&p| !fdbroker_tests::children_of(p).is_empty())
        .expect("the supervisor");
    let pid = nix::unistd::Pid::from_raw(supervisor as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        let _ = tx.send(line);
    });
    let got = rx.recv_timeout(std::time::Duration::from_secs(60));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let _ = child.wait();
    assert_eq!(
        got.as_deref(),
        Ok("done 6 6\n"),
        "fstat waited for the supervisor"
    );
}

/// Repeated identical decisions in one run cost one audit line and a count: a program
/// that stats the same file twenty times leaves the first decision's line and one
/// `repeated=19` line for the rest; a different decision keeps its own line.
#[test]
fn transparent_repeated_decisions_are_written_once_and_counted() {
    let (t, policy) = fixture("");
    let a = t.join("tree/a.txt");
    let b = t.join("tree/sub/b.txt");
    let script = format!(
        "for i in $(seq 20); do stat -c %s {a} > /dev/null; done; stat -c %s {b}",
        a = s(&a),
        b = s(&b)
    );
    let out = run(transparent(&policy, &["sh", "-c", &script]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = text(&out.stderr);
    let about = |p: &Path| format!("path=\"{}\"", p.display());
    let lines = |p: &Path, what: &str| {
        log.lines()
            .filter(|l| l.contains(&about(p)) && l.contains(what))
            .count()
    };
    assert_eq!(lines(&a, "ino="), 1, "{log}");
    // The broker's timer may tick between two stats: then the repeats are told in
    // more than one line; together they are the nineteen.
    let repeats: u64 = log
        .lines()
        .filter(|l| l.contains(&about(&a)))
        .filter_map(|l| l.split("repeated=").nth(1))
        .filter_map(|n| n.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(repeats, 19, "{log}");
    assert_eq!(lines(&b, "ino="), 1, "{log}");
    assert_eq!(lines(&b, "repeated="), 0, "{log}");
}

/// `O_DIRECTORY` with a write mode is the kernel's refusal on a served path as for root:
/// `ENOTDIR` on a regular file (which is neither opened nor truncated), `EISDIR` on a
/// directory, `EINVAL` with `O_CREAT` on a missing name (which is not created). A
/// program that asks `O_DIRECTORY` is told the name is no directory before it writes.
#[test]
fn transparent_o_directory_with_a_write_mode_opens_no_file() {
    let t = TempDir::new("transparent-wdir");
    t.file("tree/w/w.txt", b"keep me\n", 0o600);
    for d in ["tree", "tree/w"] {
        t.dir(d, 0o700);
    }
    let w = t.join("tree/w");
    let policy = tree_policy(
        &t,
        "",
        &format!(
            "  [[client.allow]]\n  path = \"{}/\"\n  access = [\"read\", \"write\", \"create\", \"directory\"]\n",
            w.display()
        ),
    );
    let script = format!(
        r#"
import os
w = {w:?}
for name in ["w.txt", ".", "new"]:
    for flags in [os.O_WRONLY, os.O_WRONLY | os.O_TRUNC, os.O_RDWR, os.O_WRONLY | os.O_APPEND,
                  os.O_WRONLY | os.O_CREAT, os.O_RDWR | os.O_CREAT | os.O_EXCL]:
        try:
            os.close(os.open(os.path.join(w, name), flags | os.O_DIRECTORY, 0o600))
            print(name, flags, "opened")
        except OSError as e:
            print(name, flags, e.errno)
print(open(os.path.join(w, "w.txt")).read(), os.path.exists(os.path.join(w, "new")))
"#,
        w = s(&w)
    );
    same_as_root(&policy, &["/usr/bin/python3", "-c", &script]);
}
