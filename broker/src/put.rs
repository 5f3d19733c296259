//! `fdbroker put PATH < data`: the writing sibling of `fdbroker cat` ([`crate::cat`]), run
//! by whoever invokes it, as that user and unconfined, to test a policy's `create` and
//! `write` grants from a shell. Same connection and exit codes as `cat`.

use crate::cat::{connect, exit, fail, say_failed};
use fdbroker_worker::{Access, Client, OPEN_TRUNC};
use std::fs::File;
use std::io::{self, ErrorKind};
use std::path::Path;
use std::process::ExitCode;

/// The `fdbroker put` process: ask the broker for `path` to write (created if the
/// policy grants `create`, else an existing file truncated if it grants `write`), copy
/// standard input into it. Exit 0 only if every byte was written.
pub fn put_main(socket: Option<&Path>, path: &Path) -> ExitCode {
    let client = match connect(socket) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let result = open_for_writing(&client, path).and_then(|mut file| {
        io::copy(&mut io::stdin().lock(), &mut file)?;
        // The data is the broker's file's now: a write error the kernel reports only
        // at close or sync (a full disk, a network filesystem) is still a failure.
        file.sync_data().or_else(|e| match e.raw_os_error() {
            // Pipes, ttys and some special files cannot be synced: nothing was lost.
            Some(libc::EINVAL | libc::EROFS) => Ok(()),
            _ => Err(e),
        })
    });
    match result {
        Ok(()) => exit(true),
        Err(e) => {
            say_failed(path, &e);
            exit(false)
        }
    }
}

/// `create` first (it never replaces anything), then `write` with truncation on a file
/// that exists or where only `write` is granted. The error reported is the one that
/// says most: "exists" over a denial of the write a create-only rule gets.
fn open_for_writing(client: &Client, path: &Path) -> io::Result<File> {
    let created = match client.open_with(path, Access::Create) {
        Ok(f) => return Ok(f),
        Err(e) => e,
    };
    if !matches!(
        created.kind(),
        ErrorKind::AlreadyExists | ErrorKind::PermissionDenied
    ) {
        return Err(created);
    }
    match client.open_detailed(path, Access::Write, OPEN_TRUNC) {
        Ok(opened) => Ok(opened.file),
        Err(written)
            if created.kind() == ErrorKind::AlreadyExists
                && written.kind() == ErrorKind::PermissionDenied =>
        {
            Err(created)
        }
        Err(written) => Err(written),
    }
}
