//! `fdbroker ls DIR...`: the listing sibling of `fdbroker cat` ([`crate::cat`]), run by
//! whoever invokes it, as that user and unconfined, to test a policy's `directory`
//! grants from a shell. The broker lists the directory itself (`Op::List`), so what it
//! prints is what a worker would see: names the policy hides are left out. Same
//! connection and exit codes as `cat`.

use crate::cat::{connect, exit, fail, say_failed};
use fdbroker_worker::FileKind;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A name as `ls` prints it: raw, except that a control byte (a newline, a terminal
/// escape) or a backslash is written `\xNN`, so a worker that names a file cannot add a
/// line to the listing or drive the operator's terminal; one line is one entry.
fn push_name(out: &mut Vec<u8>, name: &[u8]) {
    for &b in name {
        if b < 0x20 || b == 0x7f || b == b'\\' {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        } else {
            out.push(b);
        }
    }
}

/// The `fdbroker ls` process: one name a line (control bytes escaped: [`push_name`]),
/// in byte order, a directory's with a
/// trailing `/` (as `ls -p`); with more than one DIR, each listing under a `DIR:` line
/// and separated by an empty line, as `ls` does. Exit 0 only if every one was listed.
pub fn ls_main(socket: Option<&Path>, dirs: &[PathBuf]) -> ExitCode {
    let client = match connect(socket) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let mut stdout = io::stdout().lock();
    let mut ok = true;
    let mut first = true;
    for dir in dirs {
        let listed = client.read_dir(dir).and_then(|entries| {
            let mut out = Vec::new();
            if dirs.len() > 1 {
                if !first {
                    out.push(b'\n');
                }
                out.extend_from_slice(dir.as_os_str().as_bytes());
                out.extend_from_slice(b":\n");
            }
            for entry in entries {
                let entry = entry?;
                push_name(&mut out, entry.file_name().as_bytes());
                if entry.file_type()? == FileKind::Directory {
                    out.push(b'/');
                }
                out.push(b'\n');
            }
            Ok(out)
        });
        match listed.and_then(|out| stdout.write_all(&out)) {
            Ok(()) => first = false,
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return ExitCode::FAILURE,
            Err(e) => {
                let _ = stdout.flush();
                say_failed(dir, &e);
                ok = false;
            }
        }
    }
    if let Err(e) = stdout.flush() {
        return fail(format!("stdout: {e}"));
    }
    exit(ok)
}
