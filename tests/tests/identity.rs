//! A uid per sandbox (issue 19, section 4): nothing outside the sandbox can borrow a
//! worker's rights — its descriptors, its memory, its broker connection — even a process
//! of the user the worker used to run as. Real `fdbroker run`s, a real attacker process
//! of another user, real `pidfd_getfd`, `/proc/PID/mem` and `ptrace`.
#![allow(clippy::unwrap_used)]

use fdbroker_tests::{
    TempDir, fdbroker_bin, nobody_gid, nobody_uid, run_with_timeout, sibling_bin, status_field,
    text,
};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// `[sandbox] uid_range`'s documented default, `0x70000000-0x7000ffff`.
const DEFAULT_RANGE: std::ops::RangeInclusive<u32> = 0x7000_0000..=0x7000_ffff;

/// A root-only secret and a spawn-mode policy (default `[sandbox] user`) granting it.
fn fixture() -> (TempDir, PathBuf) {
    let t = TempDir::new("identity");
    t.file("data/secret.txt", b"root only\n", 0o600);
    let bins = fdbroker_bin().parent().unwrap().to_owned();
    let policy = t.file(
        "policy.toml",
        format!(
            r#"
[sandbox]
read_only = ["/usr", "/bin", "/lib", "/lib64", "/etc/ld.so.cache", "{bins}"]

[[client]]
name = "worker"
users = ["nobody"]
  [[client.allow]]
  path = "{dir}/data/"
"#,
            bins = bins.display(),
            dir = t.path().display()
        )
        .as_bytes(),
        0o644,
    );
    (t, policy)
}

/// A worker-probe under `fdbroker run ARGS`, driven line by line; killed on drop.
struct Probe {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Probe {
    fn start(policy: &Path, args: &[&str]) -> Probe {
        let mut child = Command::new(fdbroker_bin())
            .arg("run")
            .arg("--policy")
            .arg(policy)
            .args(args)
            .arg("--")
            .arg(sibling_bin("worker-probe"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let p = Probe {
            child,
            stdin,
            lines,
        };
        let ready = p.line();
        assert!(ready.starts_with("READY "), "{ready}");
        p
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the worker did not answer in time")
    }

    fn ask(&mut self, cmd: &str) -> String {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        self.line()
    }

    /// The worker's uid, as it reports it (`UID real effective`, both the same).
    fn uid(&mut self) -> u32 {
        let answer = self.ask("uid");
        let ids: Vec<&str> = answer.split_whitespace().collect();
        assert_eq!(ids.len(), 3, "{answer}");
        assert_eq!(ids[1], ids[2], "{answer}");
        ids[1].parse().unwrap()
    }

    /// The worker as this test sees it: the broker's child that is pid 2 of its own
    /// PID namespace (pid 1 is the namespace's init).
    fn worker_pid(&self) -> u32 {
        self.in_namespace(2)
    }

    /// The broker's child that is `pid` in its own PID namespace (1: init, 2: worker).
    fn in_namespace(&self, pid: u32) -> u32 {
        let broker = self.child.id().to_string();
        let pid = pid.to_string();
        processes()
            .into_iter()
            .find(|(_, st)| {
                status_field(st, "PPid:") == broker
                    && status_field(st, "NSpid:").split_whitespace().last() == Some(&pid)
            })
            .map(|(pid, _)| pid)
            .expect("the process among the broker's children")
    }
}

impl Drop for Probe {
    /// Ends the run as a worker would, so that `fdbroker run` returns only once its
    /// namespace is gone and its uid free again; killed only if that does not happen.
    /// (A killed broker's namespace dies after it, and its processes hold the uid until
    /// whoever inherits them has reaped them: a next run would skip that uid meanwhile.)
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "exit 0");
        let _ = self.stdin.flush();
        if fdbroker_tests::wait_exit(&mut self.child, Duration::from_secs(30)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Every process with its `/proc/PID/status`.
fn processes() -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap() {
        let Ok(pid) = e.unwrap().file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(st) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            found.push((pid, st));
        }
    }
    found
}

/// The descriptor number of the worker's broker connection (`FDBROKER_FD`).
fn broker_fd_of(pid: u32) -> String {
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    env.split(|b| *b == 0)
        .find_map(|v| v.strip_prefix(b"FDBROKER_FD="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .expect("FDBROKER_FD in the worker's environment")
}

/// The attacker, `spawn-attack steal`, run unsandboxed as `uid:gid`.
fn steal_as(uid: u32, gid: u32, worker: u32, fd: &str, path: &Path) -> String {
    let mut cmd = Command::new(sibling_bin("spawn-attack"));
    cmd.arg("steal").arg(worker.to_string()).arg(fd).arg(path);
    std::os::unix::process::CommandExt::uid(&mut cmd, uid);
    std::os::unix::process::CommandExt::gid(&mut cmd, gid);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// The kernel lets a process of the same uid copy a dumpable process's descriptors,
/// read its memory and trace it, and `execve` makes the worker dumpable again. When the
/// worker ran as `nobody` (shared with other daemons: this project's own tests run
/// `clamd` as `nobody`), any `nobody` process could copy its `FDBROKER_FD` and read
/// every file the run grants. Now the worker runs as a transient uid no other process
/// has, so the same attacker gets nothing, and no process outside the sandbox holds the
/// worker's uid.
#[test]
fn nothing_outside_the_sandbox_can_borrow_the_workers_rights() {
    let (t, policy) = fixture();
    let mut w = Probe::start(&policy, &[]);
    let secret = t.join("data/secret.txt");
    assert_eq!(
        w.ask(&format!("open {}", secret.display())),
        "OK 10 root only"
    );
    let pid = w.worker_pid();
    let fd = broker_fd_of(pid);
    let uid = w.uid();

    // Attacked by the uid the sandbox used to run as, from outside the sandbox.
    let got = steal_as(nobody_uid(), nobody_gid(), pid, &fd, &secret);
    for want in [
        "getfd err EPERM",
        "mem err EACCES",
        "fdlink err EACCES",
        "ptrace err EPERM",
    ] {
        assert!(got.lines().any(|l| l == want), "{want:?} not in:\n{got}");
    }
    assert!(!got.contains("stolen"), "{got}");

    // The worker's uid and gid: transient, from the default range, not nobody's; and
    // the only processes that hold them are in the worker's own PID namespace.
    assert!(DEFAULT_RANGE.contains(&uid), "uid {uid}");
    assert_ne!(uid, nobody_uid());
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert_eq!(
        status_field(&st, "Uid:"),
        format!("{uid}\t{uid}\t{uid}\t{uid}")
    );
    assert_eq!(
        status_field(&st, "Gid:"),
        format!("{uid}\t{uid}\t{uid}\t{uid}")
    );
    assert_eq!(status_field(&st, "Groups:"), "");
    let ns = |p: u32| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    let worker_ns = ns(pid);
    assert!(worker_ns.is_some());
    for (other, ost) in processes() {
        let ids = [status_field(&ost, "Uid:"), status_field(&ost, "Gid:")];
        if ids
            .iter()
            .any(|l| l.split_whitespace().any(|v| v == uid.to_string()))
        {
            assert_eq!(ns(other), worker_ns, "pid {other} holds {uid}:\n{ost}");
        }
    }

    // The uid's lock is held by the broker and by the namespace's init, so the uid stays
    // taken while anything of the sandbox runs, even if the broker is killed.
    let lock = PathBuf::from(format!("/run/fdbroker-uids/{uid}"));
    for holder in [w.child.id(), w.in_namespace(1)] {
        let held = std::fs::read_dir(format!("/proc/{holder}/fd"))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
            .any(|target| target == lock);
        assert!(held, "pid {holder} does not hold {}", lock.display());
    }

    // The worker still works: its client matched by name, its requests served.
    assert_eq!(
        w.ask(&format!("open {}", secret.display())),
        "OK 10 root only"
    );
    writeln!(w.stdin, "exit 0").unwrap();
}

/// Two runs at once get two different transient uids; once a run has ended its uid may
/// be taken again. A named user (`--user nobody`, `[sandbox] user = "nobody"`) stays
/// possible, for an operator who accepts sharing that user's processes.
#[test]
fn concurrent_runs_get_different_uids_and_a_named_user_is_still_possible() {
    let (t, policy) = fixture();
    let mut a = Probe::start(&policy, &[]);
    let mut b = Probe::start(&policy, &[]);
    let (ua, ub) = (a.uid(), b.uid());
    assert_ne!(ua, ub);
    for u in [ua, ub] {
        assert!(DEFAULT_RANGE.contains(&u), "uid {u}");
    }
    let secret = t.join("data/secret.txt");
    for w in [&mut a, &mut b] {
        assert_eq!(
            w.ask(&format!("open {}", secret.display())),
            "OK 10 root only"
        );
    }

    let mut named = Probe::start(&policy, &["--user", "nobody"]);
    assert_eq!(named.uid(), nobody_uid());
    let named_policy = t.file(
        "named.toml",
        std::fs::read_to_string(&policy)
            .unwrap()
            .replace("[sandbox]\n", "[sandbox]\nuser = \"nobody\"\n")
            .as_bytes(),
        0o644,
    );
    let mut named2 = Probe::start(&named_policy, &[]);
    assert_eq!(named2.uid(), nobody_uid());
    // Said, since the property is given up.
    let out = run_with_timeout(
        Command::new(fdbroker_bin())
            .args(["run", "--user", "nobody", "--policy"])
            .arg(&policy)
            .args(["--", "/bin/true"]),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("the sandbox runs as a named user"),
        "{}",
        text(&out.stderr)
    );
    // A small range of its own (no other test uses it): two uids for three runs, the
    // third refused clearly.
    let tiny = t.file(
        "tiny.toml",
        std::fs::read_to_string(&policy)
            .unwrap()
            .replace(
                "[sandbox]\n",
                "[sandbox]\nuid_range = \"1879179264-1879179265\"\n",
            )
            .as_bytes(),
        0o644,
    );
    let mut c = Probe::start(&tiny, &[]);
    let mut d = Probe::start(&tiny, &[]);
    let (uc, ud) = (c.uid(), d.uid());
    assert_ne!(uc, ud);
    let out = run_with_timeout(
        Command::new(fdbroker_bin())
            .args(["run", "--policy"])
            .arg(&tiny)
            .args(["--", "/bin/true"]),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr)
            .contains("no free uid in [sandbox] uid_range = \"1879179264-1879179265\""),
        "{}",
        text(&out.stderr)
    );
    // The end of a run gives its uid back.
    writeln!(c.stdin, "exit 0").unwrap();
    assert!(fdbroker_tests::wait_exit(&mut c.child, Duration::from_secs(20)).is_some());
    let mut e = Probe::start(&tiny, &[]);
    assert_eq!(e.uid(), uc);
    drop((a, b, named, named2, d, e));
}

/// Transparent mode's scratch directory belongs to the transient uid, and the program
/// can write and read there.
#[test]
fn the_scratch_directory_belongs_to_the_transient_uid() {
    let (t, policy) = fixture();
    let out = run_with_timeout(
        Command::new(fdbroker_bin())
            .args(["run", "--transparent", "--policy"])
            .arg(&policy)
            .args([
                "--",
                "/bin/sh",
                "-c",
                "echo written > \"$TMPDIR/f\" && cat \"$TMPDIR/f\" && stat -c '%u %g %a' \"$TMPDIR\" && id -u",
            ]),
        Duration::from_secs(60),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(lines[0], "written");
    let uid: u32 = lines[2].parse().unwrap();
    assert!(DEFAULT_RANGE.contains(&uid), "{stdout}");
    assert_eq!(lines[1], format!("{uid} {uid} 700"));
    drop(t);
}

/// The System V IPC objects (`/proc/sysvipc/{shm,msg,sem}`) owned or made by `uid`,
/// one `KIND ID` each, read from the `uid` and `cuid` columns each table names.
fn ipc_objects_of(uid: u32) -> Vec<String> {
    let mut found = Vec::new();
    for kind in ["shm", "msg", "sem"] {
        let table = std::fs::read_to_string(format!("/proc/sysvipc/{kind}")).unwrap();
        let mut lines = table.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
        let (id, owner, creator) = (1, col("uid"), col("cuid"));
        for l in lines {
            let f: Vec<&str> = l.split_whitespace().collect();
            if [owner, creator].iter().any(|&c| f[c] == uid.to_string()) {
                found.push(format!("{kind} {}", f[id]));
            }
        }
    }
    found
}

/// A transient uid is reused by later runs, so nothing the sandbox leaves behind may
/// outlive it as that uid: System V shared memory, message queues and semaphores live
/// in the sandbox's own IPC namespace, gone with its last process, and nothing of it
/// is visible to (or left for) the processes outside.
#[test]
fn the_sandbox_leaves_no_ipc_objects_behind_for_the_next_holder_of_its_uid() {
    let (_t, policy) = fixture();
    let out = run_with_timeout(
        Command::new(fdbroker_bin())
            .args(["run", "--policy"])
            .arg(&policy)
            .args([
                "--",
                "/bin/sh",
                "-c",
                "id -u; ipcmk -M 4096 && ipcmk -Q && ipcmk -S 1 && ipcs -m | grep -c 4096",
            ]),
        Duration::from_secs(30),
    );
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    // The uid, what ipcmk says it made, and how many 4096-byte segments the sandbox sees.
    assert_eq!(lines.len(), 5, "{stdout}");
    assert_eq!(lines[4], "1", "{stdout}");
    let uid: u32 = lines[0].parse().unwrap();
    let left = ipc_objects_of(uid);
    // Removed here whatever the outcome, so a failure leaves nothing either.
    for obj in &left {
        let (kind, id) = obj.split_once(' ').unwrap();
        let flag = match kind {
            "shm" => "-m",
            "msg" => "-q",
            _ => "-s",
        };
        let _ = Command::new("ipcrm").args([flag, id]).status();
    }
    assert!(left.is_empty(), "left behind as uid {uid}: {left:?}");
}
