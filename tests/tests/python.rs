//! The Python package (`worker/python`) end to end: installed with pip into a fresh
//! virtual environment, its pytest suite (the golden vectors, a lying fake broker,
//! and a real broker) run as `nobody`, and the ClamAV example feeding root-only files
//! through the broker to a real `clamd` that also runs as `nobody`.
//!
//! Needs Debian's `python3`, `python3-venv`, `python3-pytest`, `python3-wheel` and
//! `clamav-daemon`, which `scripts/test.sh` installs.
#![allow(clippy::unwrap_used)]

use fdbroker_tests::{
    Broker, TempDir, fdbroker_bin, nobody_gid, nobody_uid, repo_root, run_with_timeout, show,
    stop_child, text,
};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Debian's interpreter: the one `nobody` can run (and python3-pytest's).
const PYTHON: &str = "/usr/bin/python3";

/// Copy a source tree, leaving out what builds and runs leave behind.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    fs::set_permissions(to, fs::Permissions::from_mode(0o755)).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        if name_str == "build" || name_str == "__pycache__" || name_str.ends_with(".egg-info") {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&src, &dst);
        } else {
            fs::copy(&src, &dst).unwrap();
            fs::set_permissions(&dst, fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

/// The package installed the documented way (`pip install ./worker/python`, here
/// offline: no build isolation, no index) into a new virtual environment that sees
/// Debian's pytest, in a directory `nobody` can read. The copy's `src/` is removed
/// afterwards, so what the tests import is what pip installed.
struct Venv {
    dir: TempDir,
    python: PathBuf,
}

impl Venv {
    fn new() -> Venv {
        assert!(
            Path::new(PYTHON).exists(),
            "{PYTHON} is missing: scripts/test.sh installs python3"
        );
        let dir = TempDir::new("py");
        let pkg = dir.join("pkg");
        copy_tree(&repo_root().join("worker/python"), &pkg);
        let venv = dir.join("venv");
        let out = run_with_timeout(
            Command::new(PYTHON)
                .args(["-m", "venv", "--system-site-packages"])
                .arg(&venv),
            Duration::from_secs(120),
        );
        assert!(
            out.status.success(),
            "python3 -m venv (python3-venv installed?): {}",
            show(&out)
        );
        let python = venv.join("bin/python");
        let out = run_with_timeout(
            Command::new(&python)
                .args(["-m", "pip", "install", "--no-build-isolation", "--no-index"])
                .args(["--no-deps", "--disable-pip-version-check", "--quiet"])
                .arg(&pkg)
                .env("PIP_NO_CACHE_DIR", "1"),
            Duration::from_secs(180),
        );
        assert!(out.status.success(), "pip install: {}", show(&out));
        fs::remove_dir_all(pkg.join("src")).unwrap();
        fs::remove_dir_all(pkg.join("build")).ok();
        Venv { dir, python }
    }

    /// Run this environment's python with `args` as `nobody`, with no broker in the
    /// environment unless the caller adds one.
    fn run_as_nobody(&self, args: &[&std::ffi::OsStr], env: &[(&str, &Path)]) -> Output {
        let mut cmd = Command::new(&self.python);
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("HOME", self.dir.path())
            .env_remove("FDBROKER_FD")
            .env_remove("FDBROKER_SOCKET")
            .uid(nobody_uid())
            .gid(nobody_gid());
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_with_timeout(&mut cmd, Duration::from_secs(300))
    }
}

const PYTEST_POLICY: &str = r#"
[broker]
socket_mode = "0666"

[[client]]
name = "python-tests"
users = [{nobody}]

  [[client.allow]]
  path = "{dir}/in/"
  access = ["read", "directory"]

  [[client.deny]]
  path = "{dir}/in/keys/"

  [[client.allow]]
  path = "{dir}/out/"
  access = ["read", "write", "create"]
"#;

/// The tree `worker/python/tests/test_client.py` describes, all root's.
fn pytest_tree() -> TempDir {
    use std::os::unix::ffi::OsStrExt;
    let t = TempDir::new("pytree");
    t.file("in/a.txt", b"alpha\n", 0o600);
    t.file("in/b.bin", &(0..=255u8).collect::<Vec<u8>>(), 0o600);
    t.file("in/sub/c.txt", b"c\n", 0o600);
    for i in 0..200 {
        t.file(
            &format!("in/many/f{i:03}"),
            format!("f{i:03}\n").as_bytes(),
            0o600,
        );
    }
    t.file("in/keys/private.pem", b"KEY", 0o600);
    let odd = t.join("in").join(std::ffi::OsStr::from_bytes(b"\xff.bin"));
    fs::write(&odd, b"bytes\n").unwrap();
    fs::set_permissions(&odd, fs::Permissions::from_mode(0o600)).unwrap();
    for d in ["in", "in/sub", "in/many", "in/keys"] {
        t.dir(d, 0o700);
    }
    t.file("out/existing.log", b"0123456789", 0o600);
    t
}

#[test]
fn python_package_passes_its_tests_as_nobody() {
    let venv = Venv::new();
    let t = pytest_tree();
    let b = Broker::start(&t, PYTEST_POLICY);
    let vectors = venv.dir.join("vectors.json");
    fs::copy(repo_root().join("shared/testdata/vectors.json"), &vectors).unwrap();
    fs::set_permissions(&vectors, fs::Permissions::from_mode(0o644)).unwrap();
    let tests = venv.dir.join("pkg/tests");
    let out = venv.run_as_nobody(
        &[
            "-m".as_ref(),
            "pytest".as_ref(),
            "-p".as_ref(),
            "no:cacheprovider".as_ref(),
            "-v".as_ref(),
            "-rs".as_ref(),
            tests.as_os_str(),
        ],
        &[
            ("FDBROKER_TEST_SOCKET", &b.socket),
            ("FDBROKER_TEST_TREE", t.path()),
            ("FDBROKER_TEST_VECTORS", &vectors),
        ],
    );
    let stdout = text(&out.stdout);
    println!("{stdout}");
    // Exit 0 only when tests ran and all passed (pytest exits 5 when none ran), and
    // nothing may be skipped: a skip here would be a broker test that did not run.
    assert!(out.status.success(), "pytest failed:\n{}", show(&out));
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.contains(" passed"))
        .unwrap_or_else(|| panic!("no pytest summary:\n{}", show(&out)));
    assert!(
        !summary.contains("skipped") && !summary.contains("failed") && !summary.contains("error"),
        "{summary}"
    );
    let passed: usize = summary
        .trim_matches(|c: char| c == '=' || c.is_whitespace())
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(passed >= 30, "only {passed} tests ran: {summary}");
    for file in ["test_wire.py", "test_hostile.py", "test_client.py"] {
        assert!(stdout.contains(file), "{file} did not run");
    }
}

/// Under `fdbroker run` the package finds the broker through the inherited connection
/// (`FDBROKER_FD`), shared by the worker's whole tree: a shell starts Python twice, and
/// each process makes two clients, every one a connection of its own.
#[test]
fn python_workers_share_the_connection_of_fdbroker_run() {
    let venv = Venv::new();
    let t = TempDir::new("pyrun");
    let secret = t.file("in/secret.txt", b"root only\n", 0o600);
    t.dir("in", 0o700);
    let policy = fdbroker_tests::run_policy(&t, "py-run", venv.dir.path());
    let code = format!(
        "import fdbroker\n\
         a, b = fdbroker.Client(timeout=60), fdbroker.Client(timeout=60)\n\
         assert a.fileno() != b.fileno()\n\
         print(a.open({p:?}).read().decode().strip(), b.stat({p:?}).st_size, a.client_name)\n",
        p = secret.to_str().unwrap()
    );
    let python = venv.python.to_str().unwrap();
    let out = run_with_timeout(
        Command::new(fdbroker_bin())
            .arg("run")
            .arg("--policy")
            .arg(&policy)
            .args([
                "--",
                "/bin/sh",
                "-c",
                "\"$0\" -c \"$1\" && \"$0\" -c \"$1\"",
            ])
            .args([python, &code])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env_remove("FDBROKER_SOCKET"),
        Duration::from_secs(180),
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        text(&out.stdout),
        "root only 10 py-run\nroot only 10 py-run\n",
        "{}",
        show(&out)
    );
}

// ---- ClamAV ----

/// A string no real file contains, and a ClamAV body-signature database (`.ndb`:
/// name, target type 0 = any file, offset `*` = anywhere, hex) that matches it.
const MARKER: &[u8] = b"FDBROKER-CLAMAV-TEST-MARKER-5e1f0c";
const SIGNATURE: &str = "Fdbroker.Test.Marker";

fn clamd_bin() -> PathBuf {
    let p = ["/usr/sbin/clamd", "/usr/bin/clamd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    p.expect("clamd is missing: apt-get install clamav-daemon (scripts/test.sh installs it)")
}

/// A real clamd as `nobody` on a local socket, with only the test's signature.
struct Clamd {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    _dir: TempDir,
}

impl Clamd {
    fn start() -> Clamd {
        let dir = TempDir::new("clamd");
        let db = dir.dir("db", 0o755);
        let hex: String = MARKER.iter().map(|b| format!("{b:02x}")).collect();
        let ndb = db.join("fdbroker-test.ndb");
        fs::write(&ndb, format!("{SIGNATURE}:0:*:{hex}\n")).unwrap();
        fs::set_permissions(&ndb, fs::Permissions::from_mode(0o644)).unwrap();
        let run = dir.dir("run", 0o755);
        std::os::unix::fs::chown(&run, Some(nobody_uid()), Some(nobody_gid())).unwrap();
        let socket = run.join("clamd.sock");
        let conf = dir.join("clamd.conf");
        fs::write(
            &conf,
            format!(
                "LocalSocket {}\nDatabaseDirectory {}\nTemporaryDirectory {}\nPidFile {}\n\
                 Foreground yes\nMaxThreads 4\n",
                socket.display(),
                db.display(),
                run.display(),
                run.join("clamd.pid").display()
            ),
        )
        .unwrap();
        fs::set_permissions(&conf, fs::Permissions::from_mode(0o644)).unwrap();
        let log = dir.join("clamd.log");
        let child = Command::new(clamd_bin())
            .arg("-c")
            .arg(&conf)
            .uid(nobody_uid())
            .gid(nobody_gid())
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log).unwrap())
            .stderr(fs::File::create(dir.join("clamd.err")).unwrap())
            .spawn()
            .unwrap();
        let mut c = Clamd {
            child,
            socket,
            log,
            _dir: dir,
        };
        c.wait_ready();
        c
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if self.command(b"zPING\0").is_ok_and(|r| r == "PONG") {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("clamd exited with {status}:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("clamd did not answer PING:\n{}", self.logs());
    }

    /// One command on its own connection; the reply without its NUL.
    fn command(&self, cmd: &[u8]) -> std::io::Result<String> {
        let mut s = UnixStream::connect(&self.socket)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.write_all(cmd)?;
        let mut reply = Vec::new();
        s.read_to_end(&mut reply)?;
        Ok(text(&reply).trim_end_matches('\0').to_owned())
    }

    fn logs(&self) -> String {
        let dir = self.log.parent().unwrap();
        format!(
            "{}{}",
            fs::read_to_string(&self.log).unwrap_or_default(),
            fs::read_to_string(dir.join("clamd.err")).unwrap_or_default()
        )
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

#[test]
fn clamd_scans_root_only_files_through_the_broker() {
    let t = TempDir::new("clamq");
    let infected = t.file(
        "q/infected.bin",
        &[b"junk before ".as_slice(), MARKER, b" and after\n"].concat(),
        0o600,
    );
    let clean = t.file("q/clean.txt", b"nothing to see here\n", 0o600);
    let denied = t.file("q/keys/secret", MARKER, 0o600);
    t.dir("q", 0o700);
    let b = Broker::start(
        &t,
        r#"
[broker]
socket_mode = "0666"

[[client]]
name = "clamd-feeder"
users = [{nobody}]

  [[client.allow]]
  path = "{dir}/q/"
  access = ["read", "directory"]

  [[client.deny]]
  path = "{dir}/q/keys/"
"#,
    );
    let clamd = Clamd::start();
    let venv = Venv::new();
    // clamd itself, as nobody, cannot open the files: only descriptors reach it.
    let direct = clamd
        .command(format!("zSCAN {}\0", infected.display()).as_bytes())
        .unwrap();
    assert!(
        direct.contains("ERROR") && !direct.contains("FOUND"),
        "clamd read a root-only file itself: {direct}"
    );

    let script = venv.dir.join("pkg/examples/clamd_scan.py");
    let scan = |paths: &[&Path]| {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            script.as_os_str(),
            "--broker".as_ref(),
            b.socket.as_os_str(),
            "--clamd".as_ref(),
            clamd.socket.as_os_str(),
        ];
        args.extend(paths.iter().map(|p| p.as_os_str()));
        venv.run_as_nobody(&args, &[])
    };
    let out = scan(&[&infected, &clean]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}\n{}",
        show(&out),
        clamd.logs()
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with(&format!("{}: {SIGNATURE}", infected.display()))
            && lines[0].ends_with(" FOUND"),
        "{stdout}"
    );
    assert_eq!(lines[1], format!("{}: OK", clean.display()));

    // The whole root-only directory, as the docs show it: the broker lists it (nobody's
    // shell could not glob it), the carve-out is not even named, and every file beneath
    // is scanned.
    assert!(fs::read_dir(t.join("q")).is_ok(), "the test runs as root");
    let out = scan(&[&t.join("q/")]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0], format!("{}: OK", clean.display()), "{stdout}");
    assert!(
        lines[1].starts_with(&format!("{}: {SIGNATURE}", infected.display())),
        "{stdout}"
    );
    assert!(!stdout.contains("keys"), "{stdout}");

    // A path the policy refuses is an error line, not a scan, and exit status 2.
    let out = scan(&[&clean, &denied]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("{}: OK", clean.display()))
            && stdout.contains(&format!(
                "{}: ERROR permission denied by the broker's policy",
                denied.display()
            )),
        "{stdout}"
    );
}
