//! `fdbroker cat`: a one-shot broker client, run by whoever invokes it, as that user and
//! unconfined; the broker decides by its uid like any worker's. For operators checking
//! a policy against a running broker, and for scripts. Its siblings `fdbroker put`
//! ([`crate::put`]) and `fdbroker ls` ([`crate::ls`]) connect the same way and share its
//! exit codes: 0 only if everything asked for was done, 1 otherwise, with one
//! `fdbroker: PATH: reason` line on stderr for each failure.

use fdbroker_worker::Client;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The `fdbroker cat` process: connect (to `socket`, or as `FDBROKER_FD`/`FDBROKER_SOCKET`
/// say), fetch each file, copy it to standard output. Exit 0 only if every file came.
/// `FDBROKER_TIMEOUT` bounds connecting, the greeting and each reply either way, so a
/// stopped or wedged broker is an error, not a hang.
pub fn cat_main(socket: Option<&Path>, files: &[PathBuf]) -> ExitCode {
    let client = match connect(socket) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let mut stdout = std::io::stdout().lock();
    let mut ok = true;
    for path in files {
        let result = client
            .open(path)
            .and_then(|mut f| std::io::copy(&mut f, &mut stdout).map(|_| ()));
        if let Err(e) = result {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return ExitCode::FAILURE;
            }
            let _ = stdout.flush();
            say_failed(path, &e);
            ok = false;
        }
    }
    if let Err(e) = stdout.flush() {
        return fail(format!("stdout: {e}"));
    }
    exit(ok)
}

/// A connection the way every one-shot client makes it: to `socket` when given (with
/// `FDBROKER_TIMEOUT`), else as the environment says.
pub(crate) fn connect(socket: Option<&Path>) -> std::io::Result<Client> {
    match socket {
        Some(s) => Client::connect_timeout_from_env(s),
        None => Client::from_env(),
    }
}

/// `fdbroker: PATH: reason`, the one line a failed path gets.
pub(crate) fn say_failed(path: &Path, e: &std::io::Error) {
    crate::log::say(&format!("fdbroker: {}: {e}", path.display()));
}

/// Exit 0 when everything went, 1 when anything did not.
pub(crate) fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One `fdbroker: msg` line, exit 1.
pub(crate) fn fail(msg: impl std::fmt::Display) -> ExitCode {
    crate::log::say(&format!("fdbroker: {msg}"));
    ExitCode::FAILURE
}
