//! Findings of the independent review r23b of branch i23b (issue 23, part 2 and two
//! bullets of part 3). Each test fails on the branch as reviewed and names its finding.
#![allow(clippy::unwrap_used)]

use fdbroker_tests::{
    TempDir, fdbroker_bin, nobody_gid, nobody_uid, repo_root, run_policy, run_with_timeout, show,
    text,
};
use std::os::unix::fs::chown;
use std::process::Command;
use std::time::Duration;

/// F1: `fdbroker run --log-file PATH` in a sticky, world-writable directory (`/tmp`)
/// appends root's log and audit lines to a file another user planted there first (a
/// regular file they own: `O_NOFOLLOW` and the type check do not catch it). On a machine
/// without `fs.protected_regular` (this one), the planter then reads every audit line
/// (paths of the worker's files) and may truncate or fill it at will. The broker must
/// refuse a log file that neither it nor the directory's owner owns in such a
/// directory, as the kernel's `protected_regular` does for `O_CREAT`.
#[test]
fn f1_run_log_file_refuses_a_file_another_user_planted_in_a_sticky_directory() {
    use std::os::unix::fs::PermissionsExt;
    let t = TempDir::new("r23b-logplant");
    t.file("in/a.txt", b"hello\n", 0o644);
    let bins = fdbroker_bin().parent().unwrap().to_owned();
    let policy = run_policy(&t, "worker", &bins);
    let tmp = t.dir("tmp", 0o755);
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    // Planted by nobody before root runs the command.
    let log = tmp.join("broker.log");
    std::fs::write(&log, b"").unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
    chown(&log, Some(nobody_uid()), Some(nobody_gid())).unwrap();
    let script = format!("\"$0\" cat {}", t.join("in/a.txt").display());
    let out = run_with_timeout(
        Command::new(fdbroker_bin())
            .current_dir("/")
            .args(["run", "--log-file"])
            .arg(&log)
            .arg("--policy")
            .arg(&policy)
            .args(["--", "/bin/sh", "-c", &script])
            .arg(fdbroker_bin()),
        Duration::from_secs(120),
    );
    let planted = std::fs::read_to_string(&log).unwrap();
    assert!(
        planted.is_empty(),
        "root's audit lines went to a file nobody planted and owns: {planted}"
    );
    assert_eq!(out.status.code(), Some(126), "{}", show(&out));
    assert!(text(&out.stderr).contains("--log-file"), "{}", show(&out));
}

/// F2: `fdbroker policy check --unit UNIT` reads UNIT and every `UNIT.d/*.conf` beside it
/// with an unbounded, blocking `read_to_string`: a FIFO there (or a link to `/dev/zero`,
/// not tried here) hangs the check (or exhausts memory). Drop-ins beside a unit given
/// by path live wherever the operator copied it, `/tmp` included. A unit file or
/// drop-in that is not a regular file, or is huge, must be an error or skipped, fast.
#[test]
fn f2_policy_check_does_not_hang_on_a_fifo_unit_or_drop_in() {
    let t = TempDir::new("r23b-unitfifo");
    t.dir("in", 0o755);
    let p = t.file(
        "p.toml",
        format!(
            "[[client]]\nname = \"t\"\nusers = [65534]\n[[client.allow]]\npath = \"{}/in/\"\n",
            t.path().display()
        )
        .as_bytes(),
        0o644,
    );
    let units = t.dir("units", 0o755);
    let unit = units.join("fdbroker.service");
    std::fs::copy(repo_root().join("broker/systemd/fdbroker.service"), &unit).unwrap();
    let dropins = t.dir("units/fdbroker.service.d", 0o755);
    nix::unistd::mkfifo(
        &dropins.join("zz-hostile.conf"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let check = |unit: &std::path::Path| {
        let mut child = Command::new(fdbroker_bin())
            .args(["policy", "check"])
            .arg(&p)
            .arg("--unit")
            .arg(unit)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return Some(s);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert!(
        check(&unit).is_some(),
        "policy check hangs on a FIFO drop-in beside the unit"
    );
    let fifo_unit = units.join("fifo.service");
    nix::unistd::mkfifo(&fifo_unit, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let status = check(&fifo_unit).expect("policy check hangs on a FIFO given as --unit");
    assert!(!status.success(), "a FIFO is no unit");
}

/// Start a broker whose stderr is `log` and "the journal" (`JOURNAL_STREAM` names it), its
/// native entries going to `jpath`.
fn journal_broker(
    t: &TempDir,
    log: &std::path::Path,
    jpath: &std::path::Path,
) -> fdbroker_tests::Broker {
    use std::os::unix::fs::MetadataExt;
    std::fs::write(log, b"").unwrap();
    let m = std::fs::metadata(log).unwrap();
    let stream = format!("{}:{}", m.dev(), m.ino());
    fdbroker_tests::Broker::start_logging_to(
        t,
        "[broker]\nsocket_mode = \"0666\"\n[[client]]\nname = \"ops\"\nusers = [0]\n\
         [[client.allow]]\npath = \"{dir}/in/\"\n",
        std::process::Stdio::from(std::fs::OpenOptions::new().append(true).open(log).unwrap()),
        &[
            ("JOURNAL_STREAM", stream.as_str()),
            ("FDBROKER_JOURNAL_SOCKET", jpath.to_str().unwrap()),
        ],
    )
}

/// F3: the journal's native socket and the journal's stream (stderr) share one failure
/// state in `log::sink`. With journald's native socket gone but stderr still taking
/// lines, the audit entry fails ("log writes fail"), then that very error line, written
/// to stderr, succeeds and ends the episode: the broker logs "log writes resumed" while
/// no audit entry can be recorded, `STATUS=`/`status` stop saying the log fails, the
/// lost count restarts, and each episode's first audit write waits again. The
/// journal's failure must last until an entry gets through to the journal.
#[test]
fn f3_journal_gone_is_not_reported_resumed_by_a_line_on_stderr() {
    let t = TempDir::new("r23b-journal");
    t.file("in/a.bin", b"a", 0o644);
    let jdir = TempDir::new("r23b-journal-sock");
    let jpath = jdir.join("socket");
    let sock = std::os::unix::net::UnixDatagram::bind(&jpath).unwrap();
    let log = t.join("stderr.log");
    let b = journal_broker(&t, &log, &jpath);
    let c = b.client();
    c.open(t.join("in/a.bin")).unwrap();
    drop(sock);
    std::fs::remove_file(&jpath).unwrap();
    // journald is gone for good: every request is refused (audit_failure = "refuse").
    for _ in 0..10 {
        assert!(c.open(t.join("in/a.bin")).is_err());
        std::thread::sleep(Duration::from_millis(150));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("log writes fail"), "{text}");
    assert!(
        !text.contains("log writes resumed"),
        "no audit entry was recorded since the journal went away, yet: {text}"
    );
    drop(b);
}

/// Held up (no finding): a journal that takes no more entries (its queue full, never
/// read) neither hangs nor crashes the broker: every request is answered within a
/// bounded time (refused, as `audit_failure = "refuse"` says), and the broker costs
/// little CPU meanwhile.
#[test]
fn r23b_a_full_journal_neither_hangs_nor_spins_the_broker() {
    let t = TempDir::new("r23b-jfull");
    t.file("in/a.bin", b"a", 0o644);
    let jdir = TempDir::new("r23b-jfull-sock");
    let jpath = jdir.join("socket");
    let _sock = std::os::unix::net::UnixDatagram::bind(&jpath).unwrap();
    let log = t.join("stderr.log");
    let b = journal_broker(&t, &log, &jpath);
    let c = b.client();
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", b.pid())).unwrap();
        let f: Vec<u64> = stat
            .rsplit_once(") ")
            .unwrap()
            .1
            .split(' ')
            .skip(11)
            .take(2)
            .map(|x| x.parse().unwrap())
            .collect();
        f[0] + f[1]
    };
    let before = cpu();
    let start = std::time::Instant::now();
    let mut refused = 0;
    for _ in 0..200 {
        let t0 = std::time::Instant::now();
        if c.open(t.join("in/a.bin")).is_err() {
            refused += 1;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "a request waited {:?}",
            t0.elapsed()
        );
    }
    let ticks = cpu() - before;
    assert!(refused >= 150, "{refused} refused");
    eprintln!(
        "200 requests in {:?}, {ticks} ticks of CPU",
        start.elapsed()
    );
    assert!(ticks < 200, "{ticks} clock ticks of CPU for 200 requests");
}

/// F4: the status report is one message (at most 64 KiB), but its `clients` list is not
/// bounded (every client of the policy, plus those only the counts remember) and the
/// bounds on `connections` (256) and `rules` (256, each naming the policy's full path)
/// add up to more than fits on their own. Past the cap the broker answers `E2BIG`, so
/// a large policy (here 700 clients), or a worker that opens 256 connections and hits
/// its client's rules under a long policy path, leaves the operator with no `status`
/// at all. The report must be cut to fit (and say so), never refused.
#[test]
fn f4_status_of_a_broker_with_a_large_policy_still_answers() {
    let t = TempDir::new("r23b-bigstatus");
    t.dir("in", 0o755);
    let mut policy = String::from("[broker]\nsocket_mode = \"0600\"\n");
    for i in 0..700 {
        policy.push_str(&format!(
            "[[client]]\nname = \"client-{i:04}\"\nusers = [{}]\n[[client.allow]]\npath = \"{{dir}}/in/\"\n",
            200_000 + i
        ));
    }
    let b = fdbroker_tests::Broker::start(&t, &policy);
    let out = run_with_timeout(
        Command::new(fdbroker_bin())
            .args(["status", "--json", "--socket"])
            .arg(&b.socket),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", show(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["clients"].as_array().is_some_and(|c| !c.is_empty()),
        "{v}"
    );
}

/// Held up (no finding): `fdbroker put` through a create+write grant cannot be turned
/// on a FIFO (no hang: the broker opens non-blocking and refuses the type), a symbolic
/// link to a file outside the grant (not followed: the target is untouched), or a hard
/// link to one (the broker refuses a regular file with other names, or at least leaves
/// the target as it was).
#[test]
fn r23b_put_is_not_turned_on_fifos_or_links() {
    use std::os::unix::process::CommandExt;
    let t = TempDir::new("r23b-put");
    t.dir("out", 0o777);
    t.file("secret.txt", b"keep\n", 0o666);
    let b = fdbroker_tests::Broker::start(
        &t,
        "[broker]\nsocket_mode = \"0666\"\n[[client]]\nname = \"t\"\nusers = [{nobody}]\n\
         [[client.allow]]\npath = \"{dir}/out/\"\naccess = [\"create\", \"write\", \"directory\"]\n",
    );
    nix::unistd::mkfifo(
        &t.join("out/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o666),
    )
    .unwrap();
    std::os::unix::fs::symlink(t.join("secret.txt"), t.join("out/sym")).unwrap();
    let hard = std::fs::hard_link(t.join("secret.txt"), t.join("out/hard")).is_ok();
    for name in ["fifo", "sym", "hard"] {
        let mut cmd = Command::new(fdbroker_bin());
        cmd.args(["put", "--socket"])
            .arg(&b.socket)
            .arg(t.join("out").join(name))
            .uid(nobody_uid())
            .gid(nobody_gid());
        let out = fdbroker_tests::run_with_input(
            &mut cmd,
            Some(b"evil\n".to_vec()),
            Duration::from_secs(30),
        );
        if name != "hard" {
            assert_eq!(out.status.code(), Some(1), "{name}: {}", show(&out));
        }
        assert_eq!(
            std::fs::read(t.join("secret.txt")).unwrap(),
            b"keep\n",
            "{name} (hard link made: {hard}): {}",
            show(&out)
        );
    }
}

/// F5: `fdbroker ls` prints each name raw, one a line. A worker with a create grant in
/// a directory makes a file named `x\nsecret.key` (or one holding terminal escapes): the
/// operator's listing then shows an entry `secret.key` that does not exist (or runs escape
/// sequences in their terminal). Control bytes in a name must be escaped, so one line
/// is one entry.
#[test]
fn f5_ls_does_not_print_a_line_a_worker_forged_with_a_file_name() {
    use std::os::unix::process::CommandExt;
    let t = TempDir::new("r23b-ls");
    t.dir("out", 0o777);
    t.file("out/real.txt", b"r", 0o644);
    let b = fdbroker_tests::Broker::start(
        &t,
        "[broker]\nsocket_mode = \"0666\"\n[[client]]\nname = \"t\"\nusers = [0, {nobody}]\n\
         [[client.allow]]\npath = \"{dir}/out/\"\naccess = [\"read\", \"create\", \"directory\"]\n",
    );
    let mut cmd = Command::new(fdbroker_bin());
    cmd.args(["put", "--socket"])
        .arg(&b.socket)
        .arg(t.join("out/x\nsecret.key"))
        .uid(nobody_uid())
        .gid(nobody_gid());
    let out = fdbroker_tests::run_with_input(&mut cmd, Some(b"".to_vec()), Duration::from_secs(30));
    assert!(out.status.success(), "{}", show(&out));
    let out = run_with_timeout(
        Command::new(fdbroker_bin())
            .args(["ls", "--socket"])
            .arg(&b.socket)
            .arg(t.join("out")),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", show(&out));
    let listing = text(&out.stdout);
    assert_eq!(
        listing.lines().count(),
        2,
        "two entries, two lines: {listing:?}"
    );
    assert!(
        !listing.lines().any(|l| l == "secret.key"),
        "a forged entry: {listing:?}"
    );
}

/// Held up (no finding): a worker (nobody, a client of the policy) cannot get the status
/// report: not before its hello (EACCES), not after it (EOPNOTSUPP), and not on a
/// connection the broker made for it (`Op::Connect`, a socketpair whose `SO_PEERCRED`
/// would name the broker itself: the new connection carries the worker's identity).
#[test]
fn r23b_a_worker_gets_no_status_by_any_connection() {
    use fdbroker_shared::Channel;
    use fdbroker_shared::wire::{Op, ReplyBody, Request};
    use fdbroker_tests::frames::{hello_frame, recv_reply, request_frame};
    let t = TempDir::new("r23b-status");
    t.dir("in", 0o755);
    let b = fdbroker_tests::Broker::start(
        &t,
        "[broker]\nsocket_mode = \"0666\"\n[[client]]\nname = \"w\"\nusers = [{nobody}]\n\
         [[client.allow]]\npath = \"{dir}/in/\"\n",
    );
    let socket = b.socket.clone();
    let (uid, gid) = (nobody_uid(), nobody_gid());
    std::thread::spawn(move || {
        // This thread alone becomes nobody: the raw system calls change only its
        // credentials, which the broker reads at connect time.
        // SAFETY: setgroups, setresgid and setresuid take plain integers (and a null
        // list of length 0); no memory is shared with Rust code.
        unsafe {
            assert_eq!(
                libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<u32>()),
                0
            );
            assert_eq!(libc::syscall(libc::SYS_setresgid, gid, gid, gid), 0);
            assert_eq!(libc::syscall(libc::SYS_setresuid, uid, uid, uid), 0);
        }
        let status = |ch: &Channel, id: u64| {
            ch.send(&request_frame(&Request { id, op: Op::Status }))
                .unwrap();
            let (reply, fds) = recv_reply(ch);
            assert!(fds.is_empty());
            match reply.body {
                ReplyBody::Status(Err(e)) => e.errno,
                other => panic!("a worker got {other:?}"),
            }
        };
        let ch = Channel::connect(&socket).unwrap();
        ch.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(status(&ch, 1), libc::EACCES);
        ch.send(&hello_frame()).unwrap();
        let mut rx = vec![0; 65536];
        ch.recv(&mut rx).unwrap();
        assert_eq!(status(&ch, 2), libc::EOPNOTSUPP);
        ch.send(&request_frame(&Request {
            id: 3,
            op: Op::Connect,
        }))
        .unwrap();
        let (_, mut fds) = recv_reply(&ch);
        let fresh = Channel::wrap(fds.pop().expect("a new connection"));
        fresh
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(status(&fresh, 4), libc::EACCES);
    })
    .join()
    .unwrap();
}

/// Held up (no finding), and the case `status.rs` says it covers but does not: a uid
/// the policy does not name gets no report either (refused at accept).
#[test]
fn r23b_a_uid_outside_the_policy_gets_no_status() {
    use std::os::unix::process::CommandExt;
    let t = TempDir::new("r23b-status2");
    t.dir("in", 0o755);
    let b = fdbroker_tests::Broker::start(
        &t,
        "[broker]\nsocket_mode = \"0666\"\n[[client]]\nname = \"w\"\nusers = [{nobody}]\n\
         [[client.allow]]\npath = \"{dir}/in/\"\n",
    );
    // Refused at accept, with its request perhaps already sent: the broker empties the
    // connection before closing it, so the refusal is what is read, never the
    // ECONNRESET a close with unread messages makes the kernel report first. Asked
    // again and again, as the race is won or lost by the scheduler.
    for _ in 0..20 {
        let mut cmd = Command::new(fdbroker_bin());
        cmd.args(["status", "--json", "--socket"])
            .arg(&b.socket)
            .uid(54321)
            .gid(54321);
        let out = run_with_timeout(&mut cmd, Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        assert!(out.stdout.is_empty(), "{}", show(&out));
        assert!(text(&out.stderr).contains("refused"), "{}", show(&out));
    }
}

/// F1b: the same with a hard link instead of a planted file: where `fs.protected_hardlinks`
/// is off, anyone may link a root-owned file (`/etc/shadow`) into `/tmp`, and root's
/// `--log-file /tmp/x.log` then appends to it (it is root's own file, a regular one, no
/// symbolic link). A log file with other names, in a directory others may write, must
/// be refused. (Here root makes the link, as the attacker could with the sysctl off.)
#[test]
fn f1b_run_log_file_refuses_a_hard_link_in_a_directory_others_may_write() {
    use std::os::unix::fs::PermissionsExt;
    let t = TempDir::new("r23b-loglink");
    t.file("in/a.txt", b"hello\n", 0o644);
    let bins = fdbroker_bin().parent().unwrap().to_owned();
    let policy = run_policy(&t, "worker", &bins);
    let precious = t.file("precious", b"root:secret\n", 0o600);
    let tmp = t.dir("tmp", 0o755);
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let log = tmp.join("broker.log");
    std::fs::hard_link(&precious, &log).unwrap();
    let out = run_with_timeout(
        Command::new(fdbroker_bin())
            .current_dir("/")
            .args(["run", "--log-file"])
            .arg(&log)
            .arg("--policy")
            .arg(&policy)
            .args(["--", "/bin/true"]),
        Duration::from_secs(120),
    );
    assert_eq!(
        std::fs::read(&precious).unwrap(),
        b"root:secret\n",
        "root's log went into a hard-linked file: {}",
        show(&out)
    );
    assert_eq!(out.status.code(), Some(126), "{}", show(&out));
}

/// F6: `fdbroker status PID` finds the socket in `/proc/PID/net/unix`, a text table
/// whose last field, a socket's path, the kernel prints raw. Any local user binds sockets
/// whose path holds a newline and a forged line (`...: 00000002 00000000 00010000 0005 01
/// INODE /their/socket`) naming the broker's listener inode, which the table shows to
/// everyone; with enough of them one sorts before the real line, and root's
/// `fdbroker status PID` connects to their socket and prints whatever report it answers
/// (no denials, no connections). The socket must be found from the listener itself
/// (`pidfd_getfd` + `getsockname`), never from the table's text.
#[test]
fn f6_status_by_pid_is_not_redirected_by_a_forged_line_in_proc_net_unix() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixListener;
    let t = TempDir::new("r23b-netunix");
    t.dir("in", 0o755);
    let b = fdbroker_tests::Broker::start(
        &t,
        "[broker]\nsocket_mode = \"0666\"\n[[client]]\nname = \"w\"\nusers = [{nobody}]\n\
         [[client.allow]]\npath = \"{dir}/in/\"\n",
    );
    let monitor = b.monitor_pid();
    let socket = b.socket.to_str().unwrap().to_owned();
    let table = std::fs::read_to_string("/proc/net/unix").unwrap();
    let inode = table
        .lines()
        .find(|l| {
            l.ends_with(&format!(" {socket}")) && l.split_whitespace().nth(3) == Some("00010000")
        })
        .and_then(|l| l.split_whitespace().nth(6))
        .unwrap()
        .to_owned();
    // A short directory: a socket's path has at most 107 bytes.
    let e = std::path::PathBuf::from(format!("/tmp/r6-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&e);
    std::fs::create_dir(&e).unwrap();
    std::fs::set_permissions(&e, std::fs::Permissions::from_mode(0o777)).unwrap();
    let evil = e.join("e.sock");
    let (uid, gid) = (nobody_uid(), nobody_gid());
    let (evil2, e2, inode2) = (evil.clone(), e.clone(), inode.clone());
    // The attacker: nobody, in a thread of its own credentials.
    let (listener, fakes) = std::thread::spawn(move || {
        // SAFETY: setgroups, setresgid and setresuid take plain integers (and a null
        // list of length 0); no memory is shared with Rust code.
        unsafe {
            assert_eq!(
                libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<u32>()),
                0
            );
            assert_eq!(libc::syscall(libc::SYS_setresgid, gid, gid, gid), 0);
            assert_eq!(libc::syscall(libc::SYS_setresuid, uid, uid, uid), 0);
        }
        let listener = UnixListener::bind(&evil2).unwrap();
        listener.set_nonblocking(true).unwrap();
        let mut fakes = Vec::new();
        for i in 0..900 {
            let name = format!(
                "{}/r{i}\n0: 2 0 00010000 5 1 {inode2} {}",
                e2.display(),
                evil2.display()
            );
            let path = std::path::PathBuf::from(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            fakes.push(UnixListener::bind(&path).unwrap());
        }
        (listener, fakes)
    })
    .join()
    .unwrap();
    let lines: Vec<usize> = std::fs::read_to_string("/proc/net/unix")
        .unwrap()
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(&format!(" {inode} ")))
        .map(|(i, _)| i)
        .take(3)
        .collect();
    eprintln!("lines naming the listener's inode: {lines:?}");
    let out = run_with_timeout(
        Command::new(fdbroker_bin())
            .arg("status")
            .arg(monitor.to_string()),
        Duration::from_secs(60),
    );
    drop(fakes);
    let reached = listener.accept().is_ok();
    let _ = std::fs::remove_dir_all(&e);
    assert!(
        !reached,
        "root's `fdbroker status {monitor}` connected to nobody's socket: {}",
        show(&out)
    );
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        text(&out.stdout).contains(&format!("policy:      {}", b.policy.display())),
        "{}",
        show(&out)
    );
}
