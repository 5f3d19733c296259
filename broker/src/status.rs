//! `fdbroker status [PID | --socket PATH] [--json]`: the requester, run by root or the
//! service's user (the broker refuses anyone else: `SO_PEERCRED`), unconfined and
//! short-lived. It asks the serving server over the broker's own socket (`Op::Status`,
//! before any hello, so it need not be a policy client) and prints its report
//! ([`crate::server::status::Report`]) as text or as the JSON it received.
//!
//! The socket is `--socket`, else the one the process `PID` listens on (its listener
//! taken with `pidfd_getfd` where the caller may, as root may; else from its command line's
//! `--socket`, else its policy's `[broker] socket`), else `FDBROKER_SOCKET`, else the
//! default socket.

use crate::server::status::Report;
use fdbroker_shared::Channel;
use fdbroker_shared::frame::{self, Kind, MAX_MESSAGE};
use fdbroker_shared::wire::{Op, Reply, ReplyBody, Request, Welcome};
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// How long the broker has to answer, unless `FDBROKER_TIMEOUT` says otherwise.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The `fdbroker status` process: exit 0 with the report on stdout, 1 with one
/// `fdbroker: ...` line when there is none.
pub fn status_main(pid: Option<i32>, socket: Option<&Path>, json: bool) -> ExitCode {
    let socket = match (socket, pid) {
        (Some(s), _) => s.to_owned(),
        (None, Some(pid)) => match socket_of(pid) {
            Ok(s) => s,
            Err(e) => return crate::cat::fail(e),
        },
        (None, None) => match std::env::var_os(fdbroker_worker::ENV_SOCKET) {
            Some(s) if !s.is_empty() => PathBuf::from(s),
            _ => PathBuf::from(fdbroker_worker::DEFAULT_SOCKET),
        },
    };
    let text = match ask(&socket) {
        Ok(t) => t,
        Err(e) => return crate::cat::fail(format!("{}: {e}", socket.display())),
    };
    let out = if json {
        text + "\n"
    } else {
        match serde_json::from_str::<Report>(&text) {
            Ok(r) => render(&r),
            Err(e) => return crate::cat::fail(format!("the broker's report is unreadable: {e}")),
        }
    };
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::FAILURE,
        Err(e) => crate::cat::fail(format!("stdout: {e}")),
    }
}

/// Send `Op::Status` on a new connection to `socket` and return the report's JSON.
fn ask(socket: &Path) -> io::Result<String> {
    let timeout = match std::env::var(fdbroker_worker::ENV_TIMEOUT) {
        Ok(v) => v
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(TIMEOUT, Duration::from_secs_f64),
        Err(_) => TIMEOUT,
    };
    let ch = Channel::connect_timeout(socket, timeout)?;
    ch.set_read_timeout(Some(timeout))?;
    ch.set_write_timeout(Some(timeout))?;
    let mut buf = Vec::with_capacity(64);
    frame::encode(
        Kind::Request,
        &Request {
            id: 1,
            op: Op::Status,
        },
        &mut buf,
    )
    .map_err(io::Error::other)?;
    // A broker that refuses this peer at accept time answers and closes, perhaps
    // before the request is sent: the refusal is still there to read.
    let sent = ch.send(&buf);
    buf.resize(MAX_MESSAGE, 0);
    let n = match ch.recv(&mut buf) {
        Ok(n) => n,
        Err(e) => {
            sent?;
            return Err(io::Error::other(e.to_string()));
        }
    };
    let msg = &buf[..n];
    if let Ok(Welcome::Refused(w)) = frame::decode::<Welcome>(Kind::Welcome, msg) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "refused: {} (only root or the broker's own user may ask)",
                w.message
            ),
        ));
    }
    let reply: Reply = frame::decode(Kind::Reply, msg).map_err(io::Error::other)?;
    match reply.body {
        ReplyBody::Status(Ok(text)) => Ok(text),
        ReplyBody::Status(Err(w)) | ReplyBody::Refused(w) => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("refused: {}", w.message),
        )),
        _ => Err(io::Error::other("the broker answered something else")),
    }
}

/// The socket the fdbroker process `pid` serves.
fn socket_of(pid: i32) -> io::Result<PathBuf> {
    let target = nix::unistd::Pid::from_raw(pid);
    crate::daemon::target::monitor(target).map_err(|e| io::Error::other(e.to_string()))?;
    if let Some(s) = listening_socket(pid) {
        return Ok(s);
    }
    let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))?
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let value = |flag: &str| {
        argv.iter()
            .position(|a| a == flag)
            .and_then(|i| argv.get(i + 1).cloned())
            .or_else(|| {
                argv.iter()
                    .find_map(|a| a.strip_prefix(&format!("{flag}=")).map(str::to_owned))
            })
    };
    if let Some(s) = value("--socket") {
        return Ok(PathBuf::from(s));
    }
    if let Some(p) = value("--policy")
        && let Ok(policy) = fdbroker_policy::Policy::load(Path::new(&p))
        && let Some(s) = &policy.broker().socket
    {
        return Ok(s.clone());
    }
    Ok(PathBuf::from(fdbroker_worker::DEFAULT_SOCKET))
}

/// The path of a listening Unix socket among `pid`'s descriptors, where the caller may
/// take them (`pidfd_getfd`: root, in practice): each socket descriptor is duplicated
/// here and asked itself (`SO_ACCEPTCONN`, `getsockname`). Never from the text of
/// `/proc/PID/net/unix`, whose path field the kernel prints raw: anyone's socket path
/// with a newline in it could add a line there naming the broker's listener inode and
/// their own socket.
fn listening_socket(pid: i32) -> Option<PathBuf> {
    use nix::sys::socket::{UnixAddr, getsockname, getsockopt, sockopt};
    use std::os::fd::AsRawFd as _;
    let pidfd = crate::sys::pidfd_open(nix::unistd::Pid::from_raw(pid)).ok()?;
    let fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:["))
        })
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    fds.into_iter().find_map(|fd| {
        let dup = crate::sys::pidfd_getfd(&pidfd, fd).ok()?;
        if !getsockopt(&dup, sockopt::AcceptConn).ok()? {
            return None;
        }
        let addr: UnixAddr = getsockname(dup.as_raw_fd()).ok()?;
        addr.path().map(Path::to_path_buf)
    })
}

/// The report as an operator reads it.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "server:      pid {}, up {} (since {})",
        r.pid,
        uptime(r.uptime_s),
        r.started
    );
    let _ = writeln!(
        out,
        "policy:      {} (loaded {})",
        r.policy
            .file
            .as_deref()
            .unwrap_or("(given by the embedding program)"),
        r.policy.loaded
    );
    match &r.last_reload {
        None => {
            let _ = writeln!(out, "last reload: none");
        }
        Some(l) => {
            let _ = write!(out, "last reload: {} at {}", l.outcome, l.at);
            if let Some(e) = &l.error {
                let _ = write!(out, ": {e}");
            }
            out.push('\n');
        }
    }
    let _ = writeln!(out, "connections: {}", r.connections_total);
    for p in &r.connections {
        let _ = writeln!(
            out,
            "  {:<16} uid {:<6} gid {:<6} pid {}",
            p.client, p.uid, p.gid, p.pid
        );
    }
    if r.connections.len() < r.connections_total {
        let _ = writeln!(
            out,
            "  ... and {} more",
            r.connections_total - r.connections.len()
        );
    }
    let _ = writeln!(out, "clients (since the service started):");
    let _ = writeln!(
        out,
        "  {:<16} {:>11} {:>9} {:>9} {:>9} {:>9}",
        "CLIENT", "CONNECTIONS", "REQUESTS", "GRANTED", "DENIED", "FAILED"
    );
    for c in &r.clients {
        let _ = writeln!(
            out,
            "  {:<16} {:>11} {:>9} {:>9} {:>9} {:>9}",
            c.client, c.connections, c.requests, c.counts.granted, c.counts.denied, c.counts.failed
        );
    }
    if r.clients.len() < r.clients_total {
        let _ = writeln!(out, "  ... and {} more", r.clients_total - r.clients.len());
    }
    let _ = writeln!(out, "rules (since the service started; - is no rule):");
    let _ = writeln!(
        out,
        "  {:<16} {:<40} {:>9} {:>9} {:>9}",
        "CLIENT", "RULE", "GRANTED", "DENIED", "FAILED"
    );
    for rule in &r.rules {
        let _ = writeln!(
            out,
            "  {:<16} {:<40} {:>9} {:>9} {:>9}",
            rule.client, rule.rule, rule.counts.granted, rule.counts.denied, rule.counts.failed
        );
    }
    if r.rules.len() < r.rules_total {
        let _ = writeln!(out, "  ... and {} more", r.rules_total - r.rules.len());
    }
    let _ = write!(out, "in flight:  ");
    if r.in_flight.is_empty() {
        out.push_str(" none");
    }
    for f in &r.in_flight {
        let _ = write!(out, " uid {} {} descriptors;", f.uid, f.descriptors);
    }
    if out.ends_with(';') {
        out.pop();
    }
    out.push('\n');
    out
}

fn uptime(s: u64) -> String {
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{}m", s / 3600, s / 60 % 60),
        s => format!("{}d{}h", s / 86_400, s / 3600 % 24),
    }
}
