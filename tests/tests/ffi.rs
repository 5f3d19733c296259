//! The C library (`worker/ffi`, `libfdbroker_client`) against a real broker: its
//! documented install command, the example `scan.c` compiled with the system `cc`
//! (shared and static) and run as `nobody` on a root-only tree, and its functions
//! called directly for what a C caller can get wrong (NULL pointers, flags) and for
//! what the library promises (errno and reason from the broker, descriptors that are
//! the caller's and close-on-exec, one client shared by threads).
#![allow(clippy::unwrap_used)]

use fdbroker_client::{fdb_close, fdb_connect, fdb_last_error, fdb_open, fdb_open_many};
use fdbroker_tests::{
    Broker, TempDir, fdbroker_bin, repo_root, run_as_nobody, run_with_timeout, text,
};
use std::ffi::{CStr, CString, c_char, c_int};
use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const POLICY: &str = r#"
[broker]
socket_mode = "0666"

[[client]]
name = "c-tests"
users = [0, {nobody}]

  [[client.allow]]
  path = "{dir}/in/"
  access = ["read", "directory"]

  [[client.deny]]
  path = "{dir}/in/keys/"

  [[client.allow]]
  path = "{dir}/out/"
  access = ["read", "write", "create"]
"#;

/// A root-only tree and a broker serving it: see [`tree`].
fn fixture() -> (TempDir, Broker) {
    let t = tree();
    let b = Broker::start(&t, POLICY);
    (t, b)
}

/// A root-only tree: `in/` (0700) with files at three depths and a denied `keys/`,
/// and a writable `out/`.
fn tree() -> TempDir {
    let t = TempDir::new("ffi");
    t.dir("in", 0o700);
    t.file("in/a.txt", b"alpha\n", 0o600);
    t.file("in/empty", b"", 0o600);
    t.file("in/sub/b.bin", &[0u8, 1, 2, 255], 0o600);
    t.file("in/sub/deeper/c.txt", &vec![b'c'; 200_000], 0o600);
    t.file("in/keys/private.pem", b"KEY", 0o600);
    t.dir("in/sub", 0o700);
    t.dir("in/sub/deeper", 0o700);
    t.file("out/existing.log", b"0123456789", 0o600);
    t
}

/// Where cargo put this build's `libfdbroker_client.{so,a}`: beside the test's
/// `deps/` directory (they are built because this package depends on the crate).
fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap();
    if dir.ends_with("deps") {
        dir = dir.parent().unwrap();
    }
    dir.to_owned()
}

/// The library installed into a fresh prefix with the documented command, and the
/// example compiled against it with `cc` and `pkg-config`, both dynamically and
/// statically linked, in a directory `nobody` can read (removed on drop).
struct Installed {
    prefix: TempDir,
    scan_shared: PathBuf,
    scan_static: PathBuf,
}

fn install() -> Installed {
    let prefix = TempDir::new("ffi-prefix");
    let build = build_dir();
    let profile = build.file_name().unwrap().to_str().unwrap().to_owned();
    let target = build.parent().unwrap();
    let out = run_with_timeout(
        Command::new("bash")
            .arg(repo_root().join("worker/ffi/install.sh"))
            .arg("--no-build")
            .arg("--profile")
            .arg(&profile)
            .arg("--target-dir")
            .arg(target)
            .arg("--prefix")
            .arg(prefix.path()),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "install.sh: {}", text(&out.stderr));
    let pc_path = prefix.join("lib/pkgconfig");
    let pkg_config = |args: &[&str]| -> Vec<String> {
        let out = run_with_timeout(
            Command::new("pkg-config")
                .env("PKG_CONFIG_PATH", &pc_path)
                .args(args)
                .arg("fdbroker-client"),
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "pkg-config: {}", text(&out.stderr));
        text(&out.stdout)
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    let source = repo_root().join("worker/ffi/examples/scan.c");
    let compile = |output: &Path, link: Vec<String>| {
        let out = run_with_timeout(
            Command::new("cc")
                .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-o"])
                .arg(output)
                .arg(&source)
                .args(pkg_config(&["--cflags"]))
                .args(link),
            Duration::from_secs(120),
        );
        assert!(out.status.success(), "cc: {}", text(&out.stderr));
    };
    let scan_shared = prefix.join("scan-shared");
    compile(&scan_shared, pkg_config(&["--libs"]));
    // The static library by name, then what pkg-config --static adds for it.
    let scan_static = prefix.join("scan-static");
    let mut link = vec![
        prefix
            .join("lib/libfdbroker_client.a")
            .to_str()
            .unwrap()
            .to_owned(),
    ];
    link.extend(
        pkg_config(&["--static", "--libs"])
            .into_iter()
            .filter(|a| a != "-lfdbroker_client"),
    );
    compile(&scan_static, link);
    Installed {
        prefix,
        scan_shared,
        scan_static,
    }
}

/// 64-bit FNV-1a, as `scan.c` computes it.
fn fnv1a(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(String::from).collect();
    v.sort();
    v
}

#[test]
fn install_lays_out_header_libraries_and_pkg_config() {
    let i = install();
    let lib = i.prefix.join("lib");
    assert!(i.prefix.join("include/fdbroker.h").is_file());
    assert!(lib.join("libfdbroker_client.a").is_file());
    let so = std::fs::read_link(lib.join("libfdbroker_client.so")).unwrap();
    assert_eq!(so, Path::new("libfdbroker_client.so.0"));
    assert!(lib.join("libfdbroker_client.so.0").is_file());
    // The program names the soname, so an incompatible library can sit beside it.
    let out = run_with_timeout(
        Command::new("readelf").arg("-d").arg(&i.scan_shared),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "readelf: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("[libfdbroker_client.so.0]"),
        "{}",
        text(&out.stdout)
    );
    let pc = std::fs::read_to_string(lib.join("pkgconfig/fdbroker-client.pc")).unwrap();
    assert!(
        pc.contains(&format!("prefix={}", i.prefix.path().display())),
        "{pc}"
    );
    assert!(!pc.contains("@PREFIX@"), "an unfilled placeholder: {pc}");
}

#[test]
fn scan_example_hashes_a_root_only_tree_as_nobody() {
    let (t, b) = fixture();
    let i = install();
    let root = t.join("in");
    // Directly, nobody cannot even list the tree.
    let direct = run_as_nobody(Command::new("/bin/ls").arg(&root));
    assert!(!direct.status.success(), "nobody could list {root:?}");
    let expected: Vec<String> = sorted_lines(
        &[
            ("in/a.txt", b"alpha\n".to_vec()),
            ("in/empty", vec![]),
            ("in/sub/b.bin", vec![0u8, 1, 2, 255]),
            ("in/sub/deeper/c.txt", vec![b'c'; 200_000]),
        ]
        .iter()
        .map(|(p, data)| format!("{}  {}\n", fnv1a(data), t.join(p).display()))
        .collect::<String>(),
    );
    for scan in [&i.scan_shared, &i.scan_static] {
        let out = run_as_nobody(
            Command::new(scan)
                .env("LD_LIBRARY_PATH", i.prefix.join("lib"))
                .arg("-s")
                .arg(&b.socket)
                .arg(&root),
        );
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(
            sorted_lines(&stdout),
            expected,
            "{scan:?}\nstderr: {stderr}"
        );
        // The carve-out is left out of the broker's listing (fdb_read_dir), as if it
        // did not exist: not scanned, not even named, and no failure.
        assert_eq!(out.status.code(), Some(0), "{scan:?}: {stderr}");
        assert!(
            !stderr.contains("keys") && !stdout.contains("keys"),
            "{stderr}"
        );
    }
    // Without -s the library finds the broker through FDBROKER_SOCKET.
    let out = run_as_nobody(
        Command::new(&i.scan_shared)
            .env("LD_LIBRARY_PATH", i.prefix.join("lib"))
            .env("FDBROKER_SOCKET", &b.socket)
            .arg(t.join("in/sub")),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(sorted_lines(&text(&out.stdout)).len(), 2);
}

/// Under `fdbroker run` the library finds the broker through the inherited connection
/// (`FDBROKER_FD`), which every process of the worker's tree shares: a shell runs the
/// example twice, statically and dynamically linked, and each gets its own connection.
#[test]
fn scan_example_runs_twice_in_one_fdbroker_run() {
    let t = tree();
    let i = install();
    let policy = fdbroker_tests::run_policy(&t, "c-run", i.prefix.path());
    let script = format!(
        "{} {} && LD_LIBRARY_PATH={} {} {}",
        i.scan_static.display(),
        t.join("in/sub/deeper").display(),
        i.prefix.join("lib").display(),
        i.scan_shared.display(),
        t.join("in/sub").display()
    );
    let out = run_with_timeout(
        Command::new(fdbroker_bin())
            .arg("run")
            .arg("--policy")
            .arg(&policy)
            .args(["--", "/bin/sh", "-c", &script])
            .env_remove("FDBROKER_SOCKET"),
        Duration::from_secs(120),
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let c = format!(
        "{}  {}",
        fnv1a(&vec![b'c'; 200_000]),
        t.join("in/sub/deeper/c.txt").display()
    );
    let b = format!(
        "{}  {}",
        fnv1a(&[0u8, 1, 2, 255]),
        t.join("in/sub/b.bin").display()
    );
    let mut second = vec![b, c.clone()];
    second.sort();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some(c.as_str()),
        "{stdout}\n{stderr}"
    );
    assert_eq!(
        sorted_lines(&lines[1..].join("\n")),
        second,
        "{stdout}\n{stderr}"
    );
}

#[test]
fn scan_example_reports_a_missing_broker() {
    let i = install();
    let dir = TempDir::new("ffi-nobroker");
    let sock = dir.join("none.sock");
    let out = run_as_nobody(
        Command::new(&i.scan_shared)
            .env("LD_LIBRARY_PATH", i.prefix.join("lib"))
            .arg("-s")
            .arg(&sock)
            .arg("/"),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cannot connect to the broker") && stderr.contains("(ENOENT)"),
        "{stderr}"
    );
}

// ---- The functions, called directly ----

fn cstring(p: &Path) -> CString {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn errno() -> c_int {
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

fn last_error() -> String {
    let p = fdb_last_error();
    assert!(!p.is_null(), "no last error");
    // SAFETY: fdb_last_error returns NULL or a NUL-terminated string valid until the
    // next call on this thread.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// A connected client, closed on drop.
struct Conn(*mut fdbroker_client::fdb_client);

// SAFETY: the library's client is thread-safe (Client is Send + Sync); these tests
// share it between threads exactly as a C program would.
unsafe impl Send for Conn {}
// SAFETY: as above.
unsafe impl Sync for Conn {}

impl Conn {
    fn new(b: &Broker) -> Conn {
        let path = cstring(&b.socket);
        // SAFETY: a NUL-terminated string.
        let c = unsafe { fdb_connect(path.as_ptr()) };
        assert!(!c.is_null(), "fdb_connect: {}", last_error());
        Conn(c)
    }

    fn open(&self, path: &Path, flags: c_int) -> Result<OwnedFd, (c_int, String)> {
        let path = cstring(path);
        // SAFETY: a live client and a NUL-terminated string.
        let fd = unsafe { fdb_open(self.0, path.as_ptr(), flags) };
        if fd < 0 {
            return Err((errno(), last_error()));
        }
        // SAFETY: fdb_open returns a new descriptor that belongs to the caller.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // SAFETY: the client from fdb_connect, used by no one after this.
        unsafe { fdb_close(self.0) };
    }
}

fn read_fd(fd: OwnedFd) -> Vec<u8> {
    let mut v = Vec::new();
    File::from(fd).read_to_end(&mut v).unwrap();
    v
}

fn fd_flags(fd: &OwnedFd) -> (nix::fcntl::FdFlag, nix::fcntl::OFlag) {
    use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
    (
        FdFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFD).unwrap()),
        OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL).unwrap()),
    )
}

#[test]
fn errno_and_reason_come_from_the_broker() {
    let (t, b) = fixture();
    let c = Conn::new(&b);
    let (e, why) = c
        .open(&t.join("in/keys/private.pem"), libc::O_RDONLY)
        .unwrap_err();
    assert_eq!(e, libc::EACCES);
    assert!(
        why.contains("private.pem") && why.contains("permission denied by the broker's policy"),
        "{why}"
    );
    let (e, why) = c.open(&t.join("in/missing"), libc::O_RDONLY).unwrap_err();
    assert_eq!(e, libc::ENOENT, "{why}");
    let (e, _) = c.open(&t.join("in/sub"), libc::O_RDONLY).unwrap_err();
    assert_eq!(e, libc::EISDIR);
    let (e, _) = c
        .open(&t.join("in/a.txt"), libc::O_RDONLY | libc::O_DIRECTORY)
        .unwrap_err();
    assert_eq!(e, libc::ENOTDIR);
    let (e, why) = c
        .open(Path::new("relative/path"), libc::O_RDONLY)
        .unwrap_err();
    assert_eq!(e, libc::EINVAL, "{why}");
    // Flags open(2) has but the broker does not are refused here, before any request.
    for flags in [
        libc::O_RDONLY | libc::O_NOFOLLOW,
        libc::O_PATH,
        libc::O_WRONLY | libc::O_CREAT,
        libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
    ] {
        let (e, why) = c.open(&t.join("out/x"), flags).unwrap_err();
        assert_eq!(e, libc::EINVAL, "{flags:#o}: {why}");
    }
    // Truncate with read-only access: the broker's refusal, with its reason.
    let (e, why) = c
        .open(&t.join("in/a.txt"), libc::O_RDONLY | libc::O_TRUNC)
        .unwrap_err();
    assert_eq!(e, libc::EINVAL);
    assert!(why.contains("truncate"), "{why}");
    // And the connection is still good.
    assert_eq!(
        read_fd(c.open(&t.join("in/a.txt"), libc::O_RDONLY).unwrap()),
        b"alpha\n"
    );
}

#[test]
fn descriptors_mirror_open_and_belong_to_the_caller() {
    use nix::fcntl::{FdFlag, OFlag};
    let (t, b) = fixture();
    let c = Conn::new(&b);
    let fd = c.open(&t.join("in/a.txt"), libc::O_RDONLY).unwrap();
    let (fdf, fl) = fd_flags(&fd);
    assert!(fdf.contains(FdFlag::FD_CLOEXEC));
    assert!(
        !fl.contains(OFlag::O_NONBLOCK),
        "O_NONBLOCK not asked for: {fl:?}"
    );
    assert_eq!(fl & OFlag::O_ACCMODE, OFlag::O_RDONLY);
    // Asked for, it stays.
    let fd = c
        .open(&t.join("in/a.txt"), libc::O_RDONLY | libc::O_NONBLOCK)
        .unwrap();
    assert!(fd_flags(&fd).1.contains(OFlag::O_NONBLOCK));
    // The client's lifetime does not limit the descriptor's.
    let kept = c.open(&t.join("in/a.txt"), libc::O_RDONLY).unwrap();
    drop(c);
    assert_eq!(read_fd(kept), b"alpha\n");

    // Write, truncate, append and create, with their access modes.
    let c = Conn::new(&b);
    let out = t.join("out/existing.log");
    let fd = c.open(&out, libc::O_WRONLY | libc::O_APPEND).unwrap();
    assert_eq!(fd_flags(&fd).1 & OFlag::O_ACCMODE, OFlag::O_WRONLY);
    assert!(fd_flags(&fd).1.contains(OFlag::O_APPEND));
    nix::unistd::write(&fd, b"++").unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), b"0123456789++");
    let fd = c.open(&out, libc::O_RDWR | libc::O_TRUNC).unwrap();
    assert_eq!(fd_flags(&fd).1 & OFlag::O_ACCMODE, OFlag::O_RDWR);
    assert_eq!(std::fs::read(&out).unwrap(), b"");
    let new = t.join("out/new.txt");
    let fd = c
        .open(&new, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL)
        .unwrap();
    nix::unistd::write(&fd, b"made").unwrap();
    assert_eq!(std::fs::read(&new).unwrap(), b"made");
    let (e, _) = c
        .open(&new, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL)
        .unwrap_err();
    assert_eq!(e, libc::EEXIST);
    // A directory for fdopendir-style listing.
    let dir = c
        .open(&t.join("in/sub"), libc::O_RDONLY | libc::O_DIRECTORY)
        .unwrap();
    let mut names: Vec<String> = nix::dir::Dir::from_fd(dir)
        .unwrap()
        .iter()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    assert_eq!(names, ["b.bin", "deeper"]);
    // Not for a directory with a deny carve-out beneath it: its descriptor would show
    // the carve-out.
    let (e, why) = c
        .open(&t.join("in"), libc::O_RDONLY | libc::O_DIRECTORY)
        .unwrap_err();
    assert_eq!(e, libc::EACCES, "{why}");
}

#[test]
fn open_many_answers_per_path_and_splits_long_lists() {
    let (t, b) = fixture();
    let c = Conn::new(&b);
    // 300 paths: more than one batch (128) of the broker's.
    let kinds = [
        t.join("in/a.txt"),
        t.join("in/keys/private.pem"),
        t.join("in/missing"),
    ];
    let paths: Vec<CString> = (0..300).map(|i| cstring(&kinds[i % 3])).collect();
    let ptrs: Vec<*const c_char> = paths.iter().map(|p| p.as_ptr()).collect();
    let mut fds = vec![-2; 300];
    let mut errnos = vec![-2; 300];
    // SAFETY: 300 paths, 300 writable ints each.
    let n = unsafe {
        fdb_open_many(
            c.0,
            ptrs.as_ptr(),
            300,
            libc::O_RDONLY,
            fds.as_mut_ptr(),
            errnos.as_mut_ptr(),
        )
    };
    assert_eq!(n, 100);
    assert!(
        last_error().contains("200 of 300 paths failed"),
        "{}",
        last_error()
    );
    for i in 0..300 {
        match i % 3 {
            0 => {
                assert_eq!(errnos[i], 0);
                // SAFETY: a descriptor fdb_open_many handed to us.
                let fd = unsafe { OwnedFd::from_raw_fd(fds[i]) };
                assert_eq!(read_fd(fd), b"alpha\n");
            }
            1 => assert_eq!((fds[i], errnos[i]), (-1, libc::EACCES)),
            _ => assert_eq!((fds[i], errnos[i]), (-1, libc::ENOENT)),
        }
    }
    // n = 0 needs no arrays at all.
    // SAFETY: n is 0, so no pointer is read.
    let n = unsafe {
        fdb_open_many(
            c.0,
            std::ptr::null(),
            0,
            libc::O_RDONLY,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    assert_eq!(n, 0);
}

#[test]
fn null_pointers_and_bad_arguments_fail_cleanly() {
    let (t, b) = fixture();
    let c = Conn::new(&b);
    let good = cstring(&t.join("in/a.txt"));
    // SAFETY: NULLs are what is being tested; the rest are valid.
    unsafe {
        assert_eq!(fdb_open(std::ptr::null_mut(), good.as_ptr(), 0), -1);
        assert_eq!(errno(), libc::EFAULT);
        assert!(last_error().contains("client is NULL"));
        assert_eq!(fdb_open(c.0, std::ptr::null(), 0), -1);
        assert_eq!(errno(), libc::EFAULT);
        assert!(last_error().contains("path is NULL"));
        fdb_close(std::ptr::null_mut());
    }
    // A NULL among the paths fails the whole request before anything is opened, and
    // leaves every output in its documented state.
    let ptrs = [good.as_ptr(), std::ptr::null(), good.as_ptr()];
    let mut fds = [7; 3];
    let mut errnos = [7; 3];
    // SAFETY: 3 paths (one NULL, as tested), 3 writable ints each.
    let n = unsafe {
        fdb_open_many(
            c.0,
            ptrs.as_ptr(),
            3,
            0,
            fds.as_mut_ptr(),
            errnos.as_mut_ptr(),
        )
    };
    assert_eq!((n, errno()), (-1, libc::EFAULT));
    assert!(
        last_error().contains("paths[1] is NULL"),
        "{}",
        last_error()
    );
    assert_eq!(fds, [-1; 3]);
    assert_eq!(errnos, [libc::EFAULT; 3]);
    // NULL output arrays and bad flags.
    // SAFETY: as above.
    unsafe {
        let ok = [good.as_ptr()];
        let mut e = [0];
        assert_eq!(
            fdb_open_many(c.0, ok.as_ptr(), 1, 0, std::ptr::null_mut(), e.as_mut_ptr()),
            -1
        );
        assert_eq!(errno(), libc::EFAULT);
        let mut f = [0];
        assert_eq!(
            fdb_open_many(
                c.0,
                ok.as_ptr(),
                1,
                libc::O_PATH,
                f.as_mut_ptr(),
                e.as_mut_ptr()
            ),
            -1
        );
        assert_eq!((errno(), f[0], e[0]), (libc::EINVAL, -1, libc::EINVAL));
    }
    // A missing broker: NULL and the errno of connect(2).
    let missing = cstring(&t.join("no.sock"));
    // SAFETY: a NUL-terminated string.
    let nc = unsafe { fdb_connect(missing.as_ptr()) };
    assert!(nc.is_null());
    assert_eq!(errno(), libc::ENOENT);
    assert!(last_error().contains("no.sock"), "{}", last_error());
}

#[test]
fn one_client_serves_many_threads() {
    let (t, b) = fixture();
    let c = Conn::new(&b);
    let files = [
        (t.join("in/a.txt"), b"alpha\n".to_vec()),
        (t.join("in/sub/b.bin"), vec![0u8, 1, 2, 255]),
        (t.join("in/sub/deeper/c.txt"), vec![b'c'; 200_000]),
    ];
    std::thread::scope(|s| {
        for n in 0..8 {
            let (c, files, t) = (&c, &files, &t);
            s.spawn(move || {
                for i in 0..40 {
                    let (path, want) = &files[(n + i) % files.len()];
                    let fd = c.open(path, libc::O_RDONLY).unwrap();
                    assert_eq!(&read_fd(fd), want);
                    // Errors are per thread: this thread's refusal, not another's.
                    let (e, why) = c.open(&t.join("in/keys/private.pem"), 0).unwrap_err();
                    assert_eq!(e, libc::EACCES);
                    assert!(why.contains("private.pem"), "{why}");
                }
            });
        }
    });
}
