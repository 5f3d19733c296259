//! The Debian packages, as an operator gets them: `packaging/deb/build.sh` builds them
//! (from this test's own build), `dpkg-deb` shows what they hold, `lintian` finds no
//! error, they install into a test root (extracted, then the package's `sysusers.d`
//! entry applied by `systemd-sysusers --root`), the C library's development package
//! compiles and links a program, and the installed units and binary serve under a real
//! systemd manager in a private namespace, as the installed `fdbroker` user.
//!
//! Needs root and Debian's dpkg-dev, lintian and systemd (scripts/test.sh installs
//! them); a missing one fails with what to install.
#![allow(clippy::unwrap_used)]

use fdbroker_tests::manager::{UnitPaths, UserDatabase, UserManager, install_user_units, require};
use fdbroker_tests::{TempDir, fdbroker_bin, repo_root, run_with_timeout, show, text};
use fdbroker_worker::Client;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn run(cmd: &mut Command) -> String {
    let out = run_with_timeout(cmd, Duration::from_secs(600));
    assert!(out.status.success(), "{cmd:?}: {}", show(&out));
    text(&out.stdout)
}

/// The three packages, built once for the whole file.
struct Built {
    _dir: TempDir,
    fdbroker: PathBuf,
    lib: PathBuf,
    dev: PathBuf,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        for (tool, package) in [
            ("/usr/bin/dpkg-deb", "dpkg"),
            ("/usr/bin/dpkg-shlibdeps", "dpkg-dev"),
            ("/usr/bin/lintian", "lintian"),
        ] {
            require(tool, package);
        }
        let dir = TempDir::new("deb");
        // The debug build the tests run, C library included (`cargo test` builds it):
        // where cargo put it, not where the binary under test may have been copied.
        let target = fdbroker_tests::bins::build_dir()
            .parent()
            .unwrap()
            .to_owned();
        let said = run(Command::new("bash")
            .arg(repo_root().join("packaging/deb/build.sh"))
            .args(["--profile", "debug", "--no-build", "--bin"])
            .arg(fdbroker_bin())
            .arg("--target-dir")
            .arg(&target)
            .arg("--out")
            .arg(dir.path()));
        let arch = run(Command::new("dpkg").arg("--print-architecture"))
            .trim()
            .to_owned();
        let deb = |name: &str| dir.join(&format!("{name}_{VERSION}_{arch}.deb"));
        let b = Built {
            fdbroker: deb("fdbroker"),
            lib: deb("libfdbroker-client0"),
            dev: deb("libfdbroker-client-dev"),
            _dir: dir,
        };
        for p in [&b.fdbroker, &b.lib, &b.dev] {
            assert!(
                p.exists(),
                "{} not built; build.sh said:\n{said}",
                p.display()
            );
        }
        b
    })
}

/// Where the packages put the units: what systemd's pkg-config file says, as
/// packaging/deb/build.sh asks it, with the same fallback.
fn unit_dir() -> String {
    Command::new("pkg-config")
        .args(["--variable=systemdsystemunitdir", "systemd"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| text(&o.stdout).trim().to_owned())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/lib/systemd/system".to_owned())
}

fn field(info: &str, name: &str) -> String {
    info.lines()
        .find_map(|l| l.trim_start().strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in\n{info}"))
        .to_owned()
}

/// `dpkg-deb -c` as (path, mode string, link target).
fn contents(deb: &Path) -> Vec<(String, String, Option<String>)> {
    run(Command::new("dpkg-deb").arg("-c").arg(deb))
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = f[5].trim_start_matches('.').to_owned();
            let link = (f.len() > 7 && f[6] == "->").then(|| f[7].to_owned());
            (path, f[0].to_owned(), link)
        })
        .collect()
}

#[test]
fn the_packages_hold_what_an_operator_needs() {
    let b = built();
    let info = run(Command::new("dpkg-deb").arg("-I").arg(&b.fdbroker));
    assert_eq!(field(&info, "Package"), "fdbroker");
    assert_eq!(field(&info, "Version"), VERSION);
    assert!(field(&info, "Depends").contains("libc6"), "{info}");
    let files = contents(&b.fdbroker);
    let has = |path: &str| files.iter().find(|(p, _, _)| p == path);
    let unitdir = unit_dir();
    for path in [
        "/usr/bin/fdbroker".to_owned(),
        format!("{unitdir}/fdbroker.service"),
        format!("{unitdir}/fdbroker.socket"),
        "/usr/lib/sysusers.d/fdbroker.conf".to_owned(),
        "/etc/fdbroker/policy.toml".to_owned(),
        "/usr/share/man/man8/fdbroker.8.gz".to_owned(),
        "/usr/share/man/man5/fdbroker-policy.5.gz".to_owned(),
        "/usr/share/bash-completion/completions/fdbroker".to_owned(),
        "/usr/share/zsh/vendor-completions/_fdbroker".to_owned(),
        "/usr/share/fish/vendor_completions.d/fdbroker.fish".to_owned(),
        "/usr/share/doc/fdbroker/copyright".to_owned(),
        "/usr/share/doc/fdbroker/LICENSE-APACHE".to_owned(),
        "/usr/share/doc/fdbroker/LICENSE-MIT".to_owned(),
        "/usr/share/doc/fdbroker/SECURITY.md".to_owned(),
        "/usr/share/doc/fdbroker/changelog.md.gz".to_owned(),
    ] {
        assert!(has(&path).is_some(), "fdbroker lacks {path}");
    }
    // Every subcommand's page too, as rendered into docs/man/.
    for page in fs::read_dir(repo_root().join("docs/man")).unwrap() {
        let name = page.unwrap().file_name().into_string().unwrap();
        let section = name.rsplit('.').next().unwrap();
        let path = format!("/usr/share/man/man{section}/{name}.gz");
        assert!(has(&path).is_some(), "fdbroker lacks {path}");
    }
    assert_eq!(has("/usr/bin/fdbroker").unwrap().1, "-rwxr-xr-x");
    // The policy is a conffile: an upgrade keeps the operator's edits.
    let conffiles = run(Command::new("dpkg-deb")
        .arg("-I")
        .arg(&b.fdbroker)
        .arg("conffiles"));
    assert_eq!(conffiles.trim(), "/etc/fdbroker/policy.toml");

    // The C library: the real file, its soname link; the development package the
    // linker's link, the static library, the header and the pkg-config file.
    let lib = contents(&b.lib);
    let real = format!("libfdbroker_client.so.{VERSION}");
    assert!(
        lib.iter()
            .any(|(p, m, _)| p.ends_with(&real) && m == "-rw-r--r--"),
        "{lib:?}"
    );
    assert!(
        lib.iter()
            .any(|(p, _, l)| p.ends_with("/libfdbroker_client.so.0")
                && l.as_deref() == Some(real.as_str())),
        "{lib:?}"
    );
    let shlibs = run(Command::new("dpkg-deb").arg("-I").arg(&b.lib).arg("shlibs"));
    assert!(
        shlibs.starts_with("libfdbroker_client 0 libfdbroker-client0"),
        "{shlibs}"
    );
    let dev = contents(&b.dev);
    for end in [
        "/usr/include/fdbroker.h",
        "/libfdbroker_client.a",
        "/pkgconfig/fdbroker-client.pc",
    ] {
        assert!(
            dev.iter().any(|(p, _, _)| p.ends_with(end)),
            "dev lacks {end}: {dev:?}"
        );
    }
    assert!(
        dev.iter()
            .any(|(p, _, l)| p.ends_with("/libfdbroker_client.so")
                && l.as_deref() == Some("libfdbroker_client.so.0")),
        "{dev:?}"
    );
    let info = run(Command::new("dpkg-deb").arg("-I").arg(&b.dev));
    assert_eq!(
        field(&info, "Depends"),
        format!("libfdbroker-client0 (= {VERSION})")
    );
}

#[test]
fn lintian_finds_no_errors() {
    let b = built();
    let out = run_with_timeout(
        Command::new("lintian")
            .args(["--tag-display-limit", "0", "--allow-root"])
            .args([&b.fdbroker, &b.lib, &b.dev]),
        Duration::from_secs(600),
    );
    let said = text(&out.stdout);
    let errors: Vec<&str> = said.lines().filter(|l| l.starts_with("E: ")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", show(&out));
    // Exit 0 or 1 (warnings only, said above); 2 would be lintian itself failing.
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", show(&out));
}

/// The packages extracted into `root` as dpkg would unpack them, and the service's user
/// made from the installed sysusers.d entry.
fn install(root: &Path) -> UserDatabase {
    let b = built();
    let tree = root.join("root");
    for deb in [&b.fdbroker, &b.lib, &b.dev] {
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tree));
    }
    UserDatabase::with_sysusers(&tree, &tree.join("usr/lib/sysusers.d/fdbroker.conf"))
}

#[test]
fn installed_into_a_root_it_runs_and_links() {
    let t = TempDir::new("deb-root");
    let users = install(t.path());
    let tree = t.join("root");
    assert!(
        users.uid != 0 && users.uid < 1000,
        "not a system id: {}",
        users.uid
    );
    let passwd = fs::read_to_string(&users.passwd).unwrap();
    assert!(
        passwd.contains(&format!("fdbroker:x:{0}:{1}:", users.uid, users.gid)),
        "{passwd}"
    );
    // The binary, its version with the commit, and the conffile policy: valid, and
    // denying everything.
    let bin = tree.join("usr/bin/fdbroker");
    let version = run(Command::new(&bin).arg("--version"));
    assert!(
        version.starts_with(&format!("fdbroker {VERSION} (commit ")),
        "{version}"
    );
    let policy = tree.join("etc/fdbroker/policy.toml");
    run(Command::new(&bin).args(["policy", "check"]).arg(&policy));
    let out = run_with_timeout(
        Command::new(&bin)
            .args(["policy", "explain"])
            .arg(&policy)
            .args(["--uid", "0", "/etc/hostname"]),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1), "not denied: {}", show(&out));

    // The development package: a C program compiles and links against it through
    // pkg-config, and needs the soname the runtime package ships.
    let multiarch = run(Command::new("dpkg-architecture").arg("-qDEB_HOST_MULTIARCH"))
        .trim()
        .to_owned();
    let pc_dir = tree.join(format!("usr/lib/{multiarch}/pkgconfig"));
    let flags = run(Command::new("pkg-config")
        .args(["--cflags", "--libs", "fdbroker-client"])
        .env("PKG_CONFIG_PATH", &pc_dir)
        .env("PKG_CONFIG_SYSROOT_DIR", &tree));
    let exe = t.join("scan");
    run(Command::new("cc")
        .arg(repo_root().join("worker/ffi/examples/scan.c"))
        .arg("-o")
        .arg(&exe)
        .args(flags.split_whitespace()));
    let dynamic = run(Command::new("readelf").arg("-d").arg(&exe));
    assert!(dynamic.contains("[libfdbroker_client.so.0]"), "{dynamic}");
}

#[test]
fn the_installed_service_starts_and_denies_everything_until_edited() {
    let t = TempDir::new("deb-sd");
    let root = t.path();
    let users = install(root);
    let tree = root.join("root");
    let unitdir = unit_dir();
    let socket = root.join("fdbroker.sock");
    let log = root.join("broker.log");
    // The installed units, binary and conffile, unchanged; the socket where this test
    // can reach it (SocketGroup= stays the package's `fdbroker`).
    install_user_units(
        root,
        &UnitPaths {
            units: &tree.join(unitdir.trim_start_matches('/')),
            bin: &tree.join("usr/bin/fdbroker"),
            policy: &tree.join("etc/fdbroker/policy.toml"),
            socket: &socket,
            log: &log,
            socket_group: None,
        },
    );
    let m = UserManager::start(root, &users);
    m.systemctl(&["start", "fdbroker.socket"]);
    let meta = fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), users.gid, "SocketGroup=fdbroker");

    let broker_log = || fs::read_to_string(&log).unwrap_or_default();
    let c = fdbroker_worker::Channel::connect(&socket)
        .and_then(Client::over)
        .unwrap_or_else(|e| panic!("{e}\n{}", broker_log()));
    let denied = c.open("/etc/hostname").unwrap_err();
    assert_eq!(denied.kind(), ErrorKind::PermissionDenied, "{denied}");
    assert_eq!(
        m.property("fdbroker.service", "ActiveState"),
        "active",
        "{}",
        broker_log()
    );
    let main_pid = m.property("fdbroker.service", "MainPID");
    let status = m.inside(&["cat", &format!("/proc/{main_pid}/status")]);
    let id = users.uid;
    assert!(
        status.contains(&format!("Uid:\t{id}\t{id}\t{id}\t{id}")),
        "{status}"
    );
    m.systemctl(&["stop", "fdbroker.service", "fdbroker.socket"]);
    assert_eq!(m.property("fdbroker.service", "Result"), "success");
}
