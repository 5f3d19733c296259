//! A real systemd user manager in a private mount and PID namespace, to run the shipped
//! units (tests/tests/systemd.rs) and the packaged ones (tests/tests/package.rs), and the
//! user database it sees: the machine's own, plus the `fdbroker` user made from the
//! package's `sysusers.d` entry by `systemd-sysusers` itself. So the service's uid is
//! whatever this machine gives it (an id already taken by a deployment stays that id; a
//! fresh machine gets a free one), and tests read it from the database, never assume it.

use crate::{run_with_timeout, show, text};
use nix::unistd::Pid;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const SYSTEMCTL: &str = "/usr/bin/systemctl";
pub const USER_MANAGER: &str = "/lib/systemd/systemd";
pub const UNSHARE: &str = "/usr/bin/unshare";
pub const NSENTER: &str = "/usr/bin/nsenter";
pub const SYSUSERS: &str = "/usr/bin/systemd-sysusers";

/// Fail, with what to do about it, when a prerequisite is missing.
pub fn require(tool: &str, package: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the systemd tests run as root (they start real service managers)"
    );
    assert!(
        Path::new(tool).exists(),
        "{tool} is missing: install the Debian package `{package}` (scripts/test.sh does)"
    );
}

/// `/etc/passwd` and `/etc/group` for a namespace, and the `fdbroker` user's ids in them.
pub struct UserDatabase {
    pub passwd: PathBuf,
    pub group: PathBuf,
    pub uid: u32,
    pub gid: u32,
}

impl UserDatabase {
    /// The machine's users and groups under `root/etc`, with `systemd-sysusers --root`
    /// applying `sysusers_conf` (the package's entry) on top.
    pub fn with_sysusers(root: &Path, sysusers_conf: &Path) -> UserDatabase {
        require(SYSUSERS, "systemd");
        let etc = root.join("etc");
        fs::create_dir_all(&etc).unwrap();
        for name in ["passwd", "group", "shadow", "gshadow"] {
            let host = Path::new("/etc").join(name);
            if host.exists() {
                fs::copy(&host, etc.join(name)).unwrap();
            }
        }
        let out = run_with_timeout(
            Command::new(SYSUSERS)
                .arg("--root")
                .arg(root)
                .arg(sysusers_conf),
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "systemd-sysusers: {}", show(&out));
        let passwd = etc.join("passwd");
        let group = etc.join("group");
        let uid = id_of(&passwd, "fdbroker", 2);
        let gid = id_of(&group, "fdbroker", 2);
        UserDatabase {
            passwd,
            group,
            uid,
            gid,
        }
    }
}

/// Where [`install_user_units`] points the units.
pub struct UnitPaths<'a> {
    /// The directory holding `fdbroker.socket` and `fdbroker.service` as shipped.
    pub units: &'a Path,
    pub bin: &'a Path,
    pub policy: &'a Path,
    pub socket: &'a Path,
    /// The service's stderr (appended).
    pub log: &'a Path,
    /// `SocketGroup=` instead of the shipped one.
    pub socket_group: Option<&'a str>,
}

/// The units unchanged in `root/config/systemd/user` (where [`UserManager::start`] has
/// the manager look), and drop-ins for the test's paths, as an operator would write
/// with `systemctl edit`: the hardening stays exactly as shipped.
pub fn install_user_units(root: &Path, p: &UnitPaths<'_>) {
    let user_units = root.join("config/systemd/user");
    fs::create_dir_all(user_units.join("fdbroker.socket.d")).unwrap();
    fs::create_dir_all(user_units.join("fdbroker.service.d")).unwrap();
    for unit in ["fdbroker.socket", "fdbroker.service"] {
        fs::copy(p.units.join(unit), user_units.join(unit)).unwrap();
    }
    let group = p
        .socket_group
        .map(|g| format!("SocketGroup={g}\n"))
        .unwrap_or_default();
    fs::write(
        user_units.join("fdbroker.socket.d/test.conf"),
        format!(
            "[Socket]\nListenSequentialPacket=\nListenSequentialPacket={}\n{group}",
            p.socket.display()
        ),
    )
    .unwrap();
    let (bin_s, policy_s) = (p.bin.display(), p.policy.display());
    fs::write(
        user_units.join("fdbroker.service.d/test.conf"),
        format!(
            "[Service]\n\
             ExecStartPre=\nExecStartPre={bin_s} serve --check --policy {policy_s}\n\
             ExecStart=\nExecStart={bin_s} serve --policy {policy_s}\n\
             ExecReload=\nExecReload={bin_s} reload --policy {policy_s} $MAINPID\n\
             # PrivateTmp= hides the host's /tmp, where the test lives.\n\
             BindReadOnlyPaths={}\n\
             StandardError=append:{}\n\
             Environment=FDBROKER_LOG=debug\n",
            root.display(),
            p.log.display()
        ),
    )
    .unwrap();
}

/// Field `field` (counted from 0) of the entry `name` in a passwd or group file.
fn id_of(file: &Path, name: &str, field: usize) -> u32 {
    let text = fs::read_to_string(file).unwrap();
    text.lines()
        .find(|l| l.split(':').next() == Some(name))
        .and_then(|l| l.split(':').nth(field))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {}:\n{text}", file.display()))
}

/// A systemd user manager in its own mount and PID namespaces (with `/run/systemd`
/// a fresh tmpfs, so it believes it runs on a systemd system). When the test ends,
/// however it ends, the namespace dies with everything in it: the manager's parent,
/// `unshare`, gets SIGKILL when the test's thread exits, and `--kill-child` passes it
/// on to the namespace's first process.
pub struct UserManager {
    unshare: Option<Child>,
    /// The namespace's PID 1 (a shell waiting on the manager), as the host sees it.
    init: Pid,
    runtime: PathBuf,
    log: PathBuf,
}

impl UserManager {
    /// A manager whose namespace sees `users` as its `/etc/passwd` and `/etc/group`.
    pub fn start(root: &Path, users: &UserDatabase) -> UserManager {
        for (tool, package) in [
            (USER_MANAGER, "systemd"),
            (SYSTEMCTL, "systemd"),
            (UNSHARE, "util-linux"),
            (NSENTER, "util-linux"),
        ] {
            require(tool, package);
        }
        let runtime = root.join("runtime");
        let config = root.join("config");
        fs::create_dir_all(&runtime).unwrap();
        // Searchable by the broker's own user: the manager's notify socket is in here
        // (a system manager's, /run/systemd/notify, is reachable by every service).
        fs::set_permissions(&runtime, fs::Permissions::from_mode(0o711)).unwrap();
        fs::create_dir_all(config.join("systemd/user")).unwrap();
        fs::create_dir_all("/run/systemd").unwrap();
        let (passwd, group) = (&users.passwd, &users.group);
        let log = root.join("manager.log");
        let mut cmd = Command::new(UNSHARE);
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",
            "sh",
            "-c",
        ])
        .arg(format!(
            "mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system && \
             mount --bind {passwd} /etc/passwd && mount --bind {group} /etc/group && \
             {USER_MANAGER} --user & wait",
            passwd = passwd.display(),
            group = group.display(),
        ))
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("XDG_CONFIG_HOME", &config)
        .env("SYSTEMD_LOG_LEVEL", "info")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&log).unwrap())
        .stderr(fs::File::create(&log).unwrap());
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let mut unshare = cmd.spawn().unwrap();
        let pid = unshare.id();
        let children = format!("/proc/{pid}/task/{pid}/children");
        let mut init = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        while init.is_none() {
            if let Some(s) = unshare.try_wait().unwrap() {
                panic!(
                    "unshare exited with {s}: {}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "unshare started no namespace");
            init = fs::read_to_string(&children)
                .ok()
                .and_then(|s| s.split_whitespace().next().map(str::to_owned))
                .and_then(|s| s.parse().ok())
                .map(Pid::from_raw);
            std::thread::sleep(Duration::from_millis(10));
        }
        let manager = UserManager {
            unshare: Some(unshare),
            init: init.unwrap(),
            runtime,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = manager.systemctl_quiet(&["is-system-running"]);
            let state = text(&out.stdout).trim().to_owned();
            if state == "running" || state == "degraded" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the user manager did not come up (last state {state:?}):\n{}",
                manager.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // A user manager's notify socket is its user's alone (0755); the broker runs as
        // a user of its own and must reach it, as every service reaches a system
        // manager's (/run/systemd/notify is 0777).
        let notify = manager.runtime.join("systemd/notify");
        fs::set_permissions(&notify, fs::Permissions::from_mode(0o777)).unwrap();
        manager
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `systemctl --user ARGS` inside the namespace.
    pub fn systemctl_quiet(&self, args: &[&str]) -> Output {
        run_with_timeout(
            Command::new(NSENTER)
                .arg("--target")
                .arg(self.init.to_string())
                .args(["--mount", "--pid", SYSTEMCTL, "--user", "--no-pager"])
                .args(args)
                .env("XDG_RUNTIME_DIR", &self.runtime),
            Duration::from_secs(120),
        )
    }

    /// Like [`UserManager::systemctl_quiet`], asserting success.
    pub fn systemctl(&self, args: &[&str]) -> String {
        let out = self.systemctl_quiet(args);
        assert!(
            out.status.success(),
            "systemctl --user {}: {}\nmanager log:\n{}",
            args.join(" "),
            show(&out),
            self.log()
        );
        text(&out.stdout)
    }

    pub fn property(&self, unit: &str, name: &str) -> String {
        self.systemctl(&["show", "--value", "-p", name, unit])
            .trim()
            .to_owned()
    }

    /// Run `cmd` inside the namespace (to read its /proc).
    pub fn inside(&self, cmd: &[&str]) -> String {
        let out = run_with_timeout(
            Command::new(NSENTER)
                .arg("--target")
                .arg(self.init.to_string())
                .args(["--mount", "--pid"])
                .args(cmd),
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "{cmd:?}: {}", show(&out));
        text(&out.stdout)
    }
}

impl Drop for UserManager {
    fn drop(&mut self) {
        let Some(mut unshare) = self.unshare.take() else {
            return;
        };
        // Gracefully first, so units are stopped and their private /tmp removed...
        let _ = Command::new(NSENTER)
            .arg("--target")
            .arg(self.init.to_string())
            .args(["--mount", "--pid", SYSTEMCTL, "--user", "exit"])
            .env("XDG_RUNTIME_DIR", &self.runtime)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .and_then(|mut c| c.wait());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = unshare.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // ...then for certain: the namespace dies with its first process.
        let _ = unshare.kill();
        let _ = unshare.wait();
    }
}
