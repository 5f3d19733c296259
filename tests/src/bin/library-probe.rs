//! A real program using the worker library the way its documentation says, for the
//! library tests: one command per run, one line of output per result.
//!
//! ```text
//! library-probe [--order SOCKET] COMMAND ARGS...
//!   --order SOCKET  started as root: Sandbox::drop_privileges (nobody), then
//!                   Client::connect(SOCKET), then Sandbox::apply; otherwise
//!                   Client::from_env
//!   stat PATH...    -> `STAT <path> <kind> <len> <uid> <gid> <mode octal>` or ERR
//!   walk ROOT       -> `ENTRY <path> <kind>` per entry, ERR for what cannot be listed
//!   scan ROOT       -> walk + open_iter: `FILE <path> <bytes>` or ERR per file
//!   cat PATH...     -> `CAT <path> <contents>` or ERR
//!   uid             -> `UID <real> <effective>`
//!   peek DIR NAME...-> opens DIR with `directory` access (or `ERR DIR ...`), then per
//!                      NAME `fstatat(2)` (no follow) and `readlinkat(2)` through that
//!                      descriptor, as a hostile worker would: `PEEK <name> <size>
//!                      <mode octal> <uid>` or `PEEK <name> ERRNO <n>`, then
//!                      `LINK <name> <target>` or `LINK <name> ERRNO <n>`
//!   repl            -> reads `cat PATH` / `stat PATH` lines from stdin, answers each as
//!                      above (after `READY` once connected): for acting between requests
//! ERR lines: `ERR <path> <ErrorKind> <errno or -> <message>`.
//! ```
//! `tracing` events go to stderr (the reconnect notice, say).

use fdbroker_worker::{BrokerError, Client, FileKind, sandbox::Sandbox};
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .init();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let client = if args.first().map(String::as_str) == Some("--order") {
        if args.len() < 2 {
            eprintln!("library-probe: --order needs a socket");
            return ExitCode::from(2);
        }
        let socket = args.remove(1);
        args.remove(0);
        let sandbox = Sandbox::new();
        if let Err(e) = sandbox.drop_privileges() {
            eprintln!("library-probe: drop_privileges: {e}");
            return ExitCode::from(3);
        }
        let client = match Client::connect(&socket) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("library-probe: connect: {e}");
                return ExitCode::from(2);
            }
        };
        if let Err(e) = sandbox.apply() {
            eprintln!("library-probe: apply: {e}");
            return ExitCode::from(3);
        }
        client
    } else {
        match Client::from_env() {
            Ok(c) => c,
            Err(e) => {
                println!("ERR - {:?} {} {e}", e.kind(), errno(&e));
                eprintln!("library-probe: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("library-probe: no command");
        return ExitCode::from(2);
    };
    let mut out = std::io::stdout().lock();
    match cmd.as_str() {
        "stat" => {
            for p in rest {
                let line = match client.metadata(p) {
                    Ok(m) => format!(
                        "STAT {p} {} {} {} {} {:o}",
                        kind(m.file_type()),
                        m.len(),
                        m.uid(),
                        m.gid(),
                        m.mode()
                    ),
                    Err(e) => err_line(p, &e),
                };
                let _ = writeln!(out, "{line}");
            }
        }
        "walk" => {
            for entry in client.walk(rest.first().map_or("/", String::as_str)) {
                let line = match entry {
                    Ok(e) => format!(
                        "ENTRY {} {}",
                        e.path().display(),
                        e.file_type().map_or("?", kind)
                    ),
                    Err(e) => err_line("-", &e),
                };
                let _ = writeln!(out, "{line}");
            }
        }
        "scan" => {
            let files = client
                .walk(rest.first().map_or("/", String::as_str))
                .filter_map(Result::ok)
                .filter(|e| matches!(e.file_type(), Ok(FileKind::Regular)))
                .map(|e| e.path());
            for (path, file) in client.open_iter(files) {
                let mut bytes = Vec::new();
                let line = match file.and_then(|mut f| f.read_to_end(&mut bytes)) {
                    Ok(n) => format!("FILE {} {n}", path.display()),
                    Err(e) => err_line(&path.display().to_string(), &e),
                };
                let _ = writeln!(out, "{line}");
            }
        }
        "cat" => {
            for p in rest {
                let mut text = String::new();
                let line = match client
                    .open(Path::new(p))
                    .and_then(|mut f| f.read_to_string(&mut text))
                {
                    Ok(_) => format!("CAT {p} {}", text.trim_end()),
                    Err(e) => err_line(p, &e),
                };
                let _ = writeln!(out, "{line}");
            }
        }
        "repl" => {
            let _ = writeln!(out, "READY");
            let _ = out.flush();
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                let reply = match line.split_once(' ') {
                    Some(("cat", p)) => {
                        let mut text = String::new();
                        match client
                            .open(Path::new(p))
                            .and_then(|mut f| f.read_to_string(&mut text))
                        {
                            Ok(_) => format!("CAT {p} {}", text.trim_end()),
                            Err(e) => err_line(p, &e),
                        }
                    }
                    Some(("stat", p)) => match client.metadata(p) {
                        Ok(m) => format!("STAT {p} {} {}", kind(m.file_type()), m.len()),
                        Err(e) => err_line(p, &e),
                    },
                    _ => format!("?? {line}"),
                };
                let _ = writeln!(out, "{reply}");
                let _ = out.flush();
            }
        }
        "peek" => {
            let Some((dir, names)) = rest.split_first() else {
                eprintln!("library-probe: peek needs a directory");
                return ExitCode::from(2);
            };
            let fd = match client.open_with(dir, fdbroker_worker::Access::Directory) {
                Ok(f) => std::os::fd::OwnedFd::from(f),
                Err(e) => {
                    let _ = writeln!(out, "{}", err_line(dir, &e));
                    return ExitCode::SUCCESS;
                }
            };
            for name in names {
                let flags = nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW;
                let line = match nix::sys::stat::fstatat(&fd, name.as_str(), flags) {
                    Ok(st) => format!("PEEK {name} {} {:o} {}", st.st_size, st.st_mode, st.st_uid),
                    Err(e) => format!("PEEK {name} ERRNO {}", e as i32),
                };
                let _ = writeln!(out, "{line}");
                let line = match nix::fcntl::readlinkat(&fd, name.as_str()) {
                    Ok(t) => format!("LINK {name} {}", t.to_string_lossy()),
                    Err(e) => format!("LINK {name} ERRNO {}", e as i32),
                };
                let _ = writeln!(out, "{line}");
            }
        }
        "uid" => {
            let _ = writeln!(
                out,
                "UID {} {}",
                nix::unistd::getuid(),
                nix::unistd::geteuid()
            );
        }
        other => {
            eprintln!("library-probe: unknown command {other}");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

fn kind(k: FileKind) -> &'static str {
    match k {
        FileKind::Regular => "file",
        FileKind::Directory => "dir",
        FileKind::Symlink => "symlink",
        FileKind::Fifo => "fifo",
        FileKind::Socket => "socket",
        FileKind::CharDevice => "chardev",
        FileKind::BlockDevice => "blockdev",
    }
}

fn errno(e: &std::io::Error) -> String {
    e.get_ref()
        .and_then(|i| i.downcast_ref::<BrokerError>())
        .map(|b| b.errno)
        .or_else(|| e.raw_os_error())
        .map_or_else(|| "-".to_owned(), |n| n.to_string())
}

fn err_line(path: &str, e: &std::io::Error) -> String {
    format!("ERR {path} {:?} {} {e}", e.kind(), errno(e))
}
