//! Operator actions that must not be dangerous (issue 19, section 6): `fdbroker reload`
//! given the wrong pid, a client command against a stopped broker, an oversized policy,
//! and one uid's never-reading worker next to another uid's. Real processes, real
//! signals.
#![allow(clippy::unwrap_used)]

use fdbroker_tests::{
    Broker, TempDir, fdbroker_bin, nobody_uid, read_text, run_with_timeout, show, text,
};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

fn policy() -> String {
    "[broker]\nsocket_mode = \"0666\"\n\
     [[client]]\nname = \"t\"\nusers = [0, {nobody}]\n\
     [[client.allow]]\npath = \"{dir}/a/\"\n"
        .to_owned()
}

/// `fdbroker reload --timeout 5 PID`.
fn reload(pid: i32) -> Output {
    reload_within(pid, 5)
}

/// `fdbroker reload --timeout SECS PID`.
fn reload_within(pid: i32, secs: u64) -> Output {
    run_with_timeout(
        Command::new(fdbroker_bin())
            .args(["reload", "--timeout", &secs.to_string()])
            .arg(pid.to_string()),
        Duration::from_secs(secs + 30),
    )
}

fn spawn(program: &str, args: &[&str]) -> Child {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// `fdbroker reload` given a `sleep`, a shell or a server instead of the monitor refuses
/// with a clear message and exits non-zero, and none of them is signalled: each is still
/// running after the command has returned (before the check, SIGHUP killed the first two
/// at once and the command then waited its whole timeout for an answer).
#[test]
fn reload_refuses_a_process_that_is_not_a_monitor_without_signalling_it() {
    let mut sleeper = spawn("sleep", &["600"]);
    let mut shell = spawn("sh", &["-c", "sleep 600; exit 0"]);
    for (child, what) in [(&mut sleeper, "sleep"), (&mut shell, "sh")] {
        let out = reload(child.id() as i32);
        assert!(!out.status.success(), "{what}: {}", show(&out));
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!(
                "process {} is not an fdbroker monitor",
                child.id()
            )) && err.contains(what)
                && err.contains("not signalling it"),
            "{what}: {}",
            show(&out)
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "{what} was signalled: {}",
            show(&out)
        );
    }
    kill(sleeper);
    kill(shell);

    // A server of a running broker: named as the broker, but the monitor is what reloads.
    let t = TempDir::new("operator-reload");
    t.file("a/f", b"A", 0o600);
    let b = Broker::start(&t, &policy());
    let server = b.pid();
    let out = reload(server);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        text(&out.stderr).contains(&format!(
            "process {server} is a server of the fdbroker monitor {}",
            b.monitor_pid()
        )),
        "{}",
        show(&out)
    );
    assert_eq!(b.pid(), server, "the server was not replaced");
    assert!(!b.log().contains("reloading"), "{}", b.log());
    assert_eq!(read_text(b.client().open(t.join("a/f")).unwrap()), "A");

    // A pid with no process behind it.
    let gone = spawn("true", &[]);
    let pid = gone.id() as i32;
    kill(gone);
    let out = reload(pid);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        text(&out.stderr).contains(&format!("no process {pid} to reload")),
        "{}",
        show(&out)
    );

    // And the monitor itself still reloads.
    let out = reload(b.monitor_pid());
    assert!(out.status.success(), "{}", show(&out));
    assert_ne!(b.pid(), server, "a reload replaces the server");
}

/// A name is no proof (issue 19, finding F5): `nobody` copies a shell to a file named
/// `fdbroker` and runs `fdbroker serve` with it. Root's `fdbroker reload` sees an
/// executable that `nobody` could have put there (its own file, in its own directory or
/// in root's) and refuses without signalling it, so it neither dies of the SIGHUP nor is
/// handed root's real uid to signal back.
#[test]
fn reload_refuses_a_copy_merely_named_fdbroker() {
    use std::os::unix::fs::{PermissionsExt, chown};
    let t = TempDir::new("operator-fake");
    let nobody = nobody_uid();
    let gid = fdbroker_tests::nobody_gid();
    let own_dir = t.dir("nobodys", 0o755);
    chown(&own_dir, Some(nobody), Some(gid)).unwrap();
    let roots_dir = t.dir("roots", 0o755);
    for dir in [&own_dir, &roots_dir] {
        let fake = dir.join("fdbroker");
        std::fs::copy("/bin/sh", &fake).unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        chown(&fake, Some(nobody), Some(gid)).unwrap();
        // `fdbroker serve` runs the script `serve`: a shell that SIGHUP would end.
        std::fs::write(dir.join("serve"), "while :; do sleep 1; done\n").unwrap();
        let mut child = Command::new("setpriv")
            .arg(format!("--reuid={nobody}"))
            .arg(format!("--regid={gid}"))
            .arg("--clear-groups")
            .arg(&fake)
            .arg("serve")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        // Checked only once it is the copy (not `setpriv` still), as the attacker's is.
        fdbroker_tests::wait_until(
            Duration::from_secs(30),
            || format!("{} never ran", fake.display()),
            || {
                std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.ends_with("fdbroker\0serve\0"))
            },
        );
        let out = reload(pid as i32);
        assert!(!out.status.success(), "{}: {}", fake.display(), show(&out));
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("process {pid} is not an fdbroker monitor"))
                && err.contains("not signalling it"),
            "{}: {}",
            fake.display(),
            show(&out)
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "{} was signalled: {}",
            fake.display(),
            show(&out)
        );
        kill(child);
    }
}

/// The monitor's own user (systemd's `ExecReload=` runs as `User=`) cannot see the
/// executable of the monitor, which is not dumpable; the command line and task name
/// identify it, and the reload goes through.
#[test]
fn reload_as_the_monitors_own_user_still_identifies_it() {
    let t = TempDir::new("operator-reload-user");
    t.file("a/f", b"A", 0o644);
    let b = Broker::start_as(&t, &policy(), 994, "");
    let server = b.pid();
    let out = run_with_timeout(
        Command::new("setpriv")
            .args(["--reuid=994", "--regid=994", "--clear-groups"])
            .arg(fdbroker_bin())
            .args(["reload", "--timeout", "20"])
            .arg(b.monitor_pid().to_string()),
        Duration::from_secs(40),
    );
    assert!(out.status.success(), "{}\n{}", show(&out), b.log());
    assert_ne!(b.pid(), server, "a reload replaces the server");
}

/// Connections queued to `socket` until its listen queue is full (the connect that
/// would wait is refused at once: non-blocking).
fn fill_listen_queue(socket: &std::path::Path) -> Vec<std::os::fd::OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket as sock};
    use std::os::fd::AsRawFd;
    let addr = UnixAddr::new(socket).unwrap();
    let mut queued = Vec::new();
    loop {
        let fd = sock(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) => queued.push(fd),
            Err(nix::errno::Errno::EAGAIN) => return queued,
            Err(e) => panic!("connect: {e} after {} queued", queued.len()),
        }
        assert!(queued.len() < 15_000, "the listen queue never filled");
    }
}

/// Whether every thread of `pid` is stopped (state `T` in `/proc/PID/task/*/stat`).
fn all_threads_stopped(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.filter_map(Result::ok).all(|t| {
        std::fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
            stat.rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next())
                .is_some_and(|state| state == "T")
        })
    })
}

/// A stopped broker (SIGSTOP to its server): `fdbroker cat --socket` and the C
/// library's `fdb_connect(path)` under `FDBROKER_TIMEOUT`, and the Python
/// `Client(timeout=...)`, give up with a timeout instead
/// of hanging, first with room in the listen queue (the greeting is never answered),
/// then with the queue full (connect() itself would wait). Once continued, the broker
/// serves them again.
#[test]
fn every_client_timeout_bounds_connecting_to_a_stopped_broker() {
    let t = TempDir::new("operator-stopped");
    t.file("a/f", b"A", 0o644);
    let b = Broker::start(&t, &policy());
    let server = nix::unistd::Pid::from_raw(b.pid());
    let cat = || {
        run_with_timeout(
            Command::new(fdbroker_bin())
                .env("FDBROKER_TIMEOUT", "1")
                .arg("cat")
                .arg("--socket")
                .arg(&b.socket)
                .arg(t.join("a/f")),
            Duration::from_secs(60),
        )
    };
    let python = || {
        let src = fdbroker_tests::repo_root().join("worker/python/src");
        run_with_timeout(
            Command::new("/usr/bin/python3")
                .env("PYTHONPATH", src)
                .arg("-c")
                .arg(
                    "import sys, fdbroker\n\
                     try:\n    fdbroker.Client(sys.argv[1], timeout=1)\n\
                     except TimeoutError as e:\n    print('timeout:', e); sys.exit(3)\n\
                     print('connected')",
                )
                .arg(&b.socket),
            Duration::from_secs(60),
        )
    };
    // The C library, through Python's ctypes: fdb_connect(path) under FDBROKER_TIMEOUT.
    let c_library = || {
        // This build's library: cargo writes it to deps/ (beside this test), and copies
        // it up one level only when the library's own package is built.
        let lib = std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .join("libfdbroker_client.so");
        run_with_timeout(
            Command::new("/usr/bin/python3")
                .env("FDBROKER_TIMEOUT", "1")
                .arg("-c")
                .arg(
                    "import ctypes, os, sys\n\
                     lib = ctypes.CDLL(sys.argv[1], use_errno=True)\n\
                     lib.fdb_connect.restype = ctypes.c_void_p\n\
                     lib.fdb_last_error.restype = ctypes.c_char_p\n\
                     c = lib.fdb_connect(sys.argv[2].encode())\n\
                     if c:\n    print('connected'); sys.exit(0)\n\
                     print(os.strerror(ctypes.get_errno()), lib.fdb_last_error().decode())\n\
                     sys.exit(3)",
                )
                .arg(lib)
                .arg(&b.socket),
            Duration::from_secs(60),
        )
    };
    nix::sys::signal::kill(server, nix::sys::signal::Signal::SIGSTOP).unwrap();
    // Stopped once every thread is (a thread running on another CPU stops a little
    // later, and could still answer a greeting meanwhile).
    fdbroker_tests::wait_until(
        Duration::from_secs(20),
        || format!("server {server} did not stop"),
        || all_threads_stopped(server.as_raw()),
    );
    let stopped = cat();
    let py_stopped = python();
    let c_stopped = c_library();
    let queued = fill_listen_queue(&b.socket);
    let full = cat();
    let py_full = python();
    let c_full = c_library();
    drop(queued);
    nix::sys::signal::kill(server, nix::sys::signal::Signal::SIGCONT).unwrap();
    for (out, what) in [(&stopped, "stopped"), (&full, "full queue")] {
        assert!(!out.status.success(), "cat, {what}: {}", show(out));
        assert!(
            text(&out.stderr).contains("in time")
                || text(&out.stderr).contains("did not take the connection"),
            "cat, {what}: {}",
            show(out)
        );
    }
    assert_eq!(py_stopped.status.code(), Some(3), "{}", show(&py_stopped));
    assert!(
        text(&py_stopped.stdout).contains("did not answer the greeting"),
        "{}",
        show(&py_stopped)
    );
    assert_eq!(py_full.status.code(), Some(3), "{}", show(&py_full));
    assert!(
        text(&py_full.stdout).contains("listen queue stayed full"),
        "{}",
        show(&py_full)
    );
    for (out, what) in [(&c_stopped, "stopped"), (&c_full, "full queue")] {
        assert_eq!(out.status.code(), Some(3), "C, {what}: {}", show(out));
        assert!(
            text(&out.stdout).starts_with("Connection timed out"),
            "C, {what}: {}",
            show(out)
        );
    }
    // Continued, it serves again.
    let out = cat();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(text(&out.stdout), "A");
}

/// `policy` plus `n` deny rules beneath the allowed tree (no roots to open, all legal).
fn policy_with_denies(n: usize) -> String {
    let mut text = policy();
    for i in 0..n {
        text.push_str(&format!("[[client.deny]]\npath = \"{{dir}}/a/x{i}\"\n"));
    }
    text
}

/// A policy file over the size limit or with more rules than the limit is refused by
/// `policy check`, by `serve --check` and by `reload --policy`, each naming the file
/// and saying which limit; the broker serving keeps its policy. Real files.
#[test]
fn an_oversized_policy_is_refused_with_its_file_and_the_limit() {
    let t = TempDir::new("operator-limits");
    t.file("a/f", b"A", 0o644);
    let b = Broker::start(&t, &policy());
    let big = t.join("big.toml");
    let mut body = policy().replace("{dir}", t.path().to_str().unwrap());
    body = body.replace("{nobody}", &nobody_uid().to_string());
    let pad = usize::try_from(fdbroker_policy::MAX_POLICY_BYTES).unwrap() + 1 - body.len() - 2;
    body.push_str(&format!("#{}\n", "x".repeat(pad)));
    std::fs::write(&big, &body).unwrap();
    let many = t.join("many.toml");
    let rules = policy_with_denies(fdbroker_policy::MAX_RULES)
        .replace("{dir}", t.path().to_str().unwrap())
        .replace("{nobody}", &nobody_uid().to_string());
    std::fs::write(&many, rules).unwrap();
    for (file, why) in [(&big, "too large"), (&many, "too many rules")] {
        let shown = file.to_str().unwrap();
        for args in [
            vec!["policy", "check", shown],
            vec!["serve", "--check", "--policy", shown],
            vec!["reload", "--policy", shown, &b.monitor_pid().to_string()],
        ] {
            let out = run_with_timeout(
                Command::new(fdbroker_bin()).args(&args),
                Duration::from_secs(60),
            );
            assert!(!out.status.success(), "{args:?}: {}", show(&out));
            let err = text(&out.stderr);
            assert!(
                err.contains(shown) && err.contains(why),
                "{args:?}: {}",
                show(&out)
            );
        }
    }
    assert!(!b.log().contains("reloading"), "{}", b.log());
    assert_eq!(read_text(b.client().open(t.join("a/f")).unwrap()), "A");
}

/// A reload to a big but legal policy (the most rules allowed) does not pause serving:
/// the new server parses it while the old one still answers. Requests on a connection
/// to the old server are answered while the reload is under way and a second server
/// exists (observed on at least one of a few reloads), and none fails.
#[test]
fn a_reload_of_a_large_policy_keeps_serving_while_it_loads() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let t = TempDir::new("operator-large");
    t.file("a/f", b"A", 0o644);
    let b = Broker::start(&t, &policy());
    b.rewrite_policy(&t, &policy_with_denies(fdbroker_policy::MAX_RULES - 1));
    let monitor = b.monitor_pid();
    let servers = move || {
        std::fs::read_to_string(format!("/proc/{monitor}/task/{monitor}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .count()
    };
    let c = b.client();
    c.set_timeout(Some(Duration::from_secs(20))).unwrap();
    let file = t.join("a/f");
    let during = Arc::new(AtomicU64::new(0));
    let reloading = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let asker = {
        let (during, reloading, stop) = (during.clone(), reloading.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let before = reloading.load(Ordering::SeqCst) && servers() == 2;
                match c.open(&file) {
                    Ok(f) => {
                        assert_eq!(read_text(f), "A");
                        // Asked and answered while the reload was under way (not yet
                        // answered) with the new server started.
                        if before && reloading.load(Ordering::SeqCst) && servers() == 2 {
                            during.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        })
    };
    for _ in 0..5 {
        reloading.store(true, Ordering::SeqCst);
        let out = reload_within(monitor, 120);
        reloading.store(false, Ordering::SeqCst);
        assert!(out.status.success(), "{}\n{}", show(&out), b.log());
        if during.load(Ordering::SeqCst) > 0 {
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let failures = asker.join().unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    assert!(
        during.load(Ordering::SeqCst) > 0,
        "no request was answered while a new server loaded the policy"
    );
}

/// The budget of descriptors in flight is per uid (docs/security.md): at a descriptor
/// limit of 4,096 a uid's workers together may have 512 passed and not yet received.
/// A worker (root here, over a few connections) that asks for batches and never reads
/// holds exactly that and is then not read from; another uid (nobody) is served every time, unaffected; another
/// worker of the hog's own uid shares its budget, so its request waits (a timeout is
/// `TimedOut`, nothing worse) until the hog is gone, and is then served.
#[test]
fn a_worker_that_never_reads_holds_its_uids_budget_and_no_other_uids() {
    use fdbroker_tests::{cat_as_nobody, many_frame, raw_session};
    let t = TempDir::new("operator-budget");
    for i in 0..128 {
        t.file(&format!("a/f{i:03}"), format!("{i}\n").as_bytes(), 0o644);
    }
    // A broker user of its own: only this broker's descriptors count against its limit.
    let b = Broker::start_as(&t, &policy(), 996, "ulimit -n 4096");
    let batch: Vec<Vec<u8>> = (0..128)
        .map(|i| {
            use std::os::unix::ffi::OsStrExt;
            t.join(&format!("a/f{i:03}"))
                .as_os_str()
                .as_bytes()
                .to_vec()
        })
        .collect();
    // The hog: a few connections of one uid, each asking for full batches until its
    // socket takes no more, never reading a reply.
    let mut hog = Vec::new();
    for _ in 0..24 {
        let ch = raw_session(&b.socket, "hog");
        ch.set_nonblocking(true).unwrap();
        for id in 0..64 {
            match ch.send(&many_frame(id, batch.clone())) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        hog.push(ch);
    }
    // Held back once the broker stops reading from it.
    b.wait_log(
        "not reading from a worker until its descriptors are received",
        1,
    );
    // Another uid is served, again and again.
    for i in 0..5 {
        let f = t.join(&format!("a/f{i:03}"));
        let out = cat_as_nobody(&b.socket, &[&f]);
        assert!(out.status.success(), "{}\n{}", show(&out), b.log());
        assert_eq!(text(&out.stdout), format!("{i}\n"));
    }
    // What held it back: its uid's budget, exactly as documented.
    assert!(
        b.log().contains(
            "this uid's workers have 512 descriptors passed but not yet received (at most 512)"
        ),
        "{}",
        b.log()
    );
    // The hog's own uid: connected and greeted, but its request waits.
    let sibling =
        fdbroker_worker::Client::connect_timeout(&b.socket, Duration::from_secs(2)).unwrap();
    let first = t.join("a/f000");
    let e = sibling.open(&first).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
    // Once the hog is gone, its uid is served again.
    drop(hog);
    sibling.set_timeout(Some(Duration::from_secs(20))).unwrap();
    let served = fdbroker_tests::eventually(Duration::from_secs(30), || {
        sibling.open(&first).is_ok_and(|f| read_text(f) == "0\n")
    });
    assert!(served, "{}", b.log());
}

/// Where `/proc` hides the target from the caller (`hidepid=invisible`, as the shipped
/// unit's `ProtectProc=invisible` does) and nothing shows it belongs to the caller's own
/// service (here no cgroup filesystem at all), `fdbroker reload` refuses it unsignalled:
/// a non-dumpable process of the caller's own uid, which the caller could signal but
/// not inspect, survives.
#[test]
fn reload_refuses_a_hidden_process_it_cannot_place_in_its_service() {
    let uid = "993";
    let mut target = Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            "import ctypes, sys, time\nctypes.CDLL(None).prctl(4, 0, 0, 0, 0)\nprint('ready', flush=True)\ntime.sleep(600)",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = target.id();
    // Not dumpable any more (then only CAP_SYS_PTRACE may look at it). Told by the
    // program itself: between setpriv's change of uid and its exec of python the
    // process is non-dumpable too, and the exec makes it dumpable again.
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(target.stdout.take().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready, "ready\n", "the target did not start");
    assert!(is_non_dumpable(pid), "{pid} is dumpable");
    let out = run_with_timeout(
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(
                "mount -t proc -o hidepid=invisible proc /proc && \
                 mount -t tmpfs tmpfs /sys/fs/cgroup && \
                 exec setpriv --reuid=\"$2\" --regid=\"$2\" --clear-groups \
                   --inh-caps=-all --bounding-set=-all \"$0\" reload --timeout 5 \"$1\"",
            )
            .arg(fdbroker_bin())
            .arg(pid.to_string())
            .arg(uid),
        Duration::from_secs(60),
    );
    let alive = target.try_wait().unwrap().is_none();
    kill(target);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        text(&out.stderr).contains(&format!(
            "process {pid} is not an fdbroker monitor (hidden from this caller by /proc"
        )),
        "{}",
        show(&out)
    );
    assert!(alive, "the hidden process was signalled: {}", show(&out));
}

/// Whether `pid` runs as a user other than root and has made itself non-dumpable:
/// `/proc/PID/*` then belongs to root (see proc(5)) although the process does not.
fn is_non_dumpable(pid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let not_root = std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .is_some_and(|ids| ids.split_whitespace().all(|id| id != "0"))
    });
    not_root && std::fs::metadata(format!("/proc/{pid}/environ")).is_ok_and(|m| m.uid() == 0)
}
