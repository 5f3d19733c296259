//! The standard character devices every sandbox of `fdbroker run` may open by path:
//! `/dev/null`, `/dev/zero`, `/dev/full`, `/dev/random`, `/dev/urandom` and `/dev/tty`.
//!
//! Almost every program opens one of them at start-up (`git` and `perl` redirect to
//! `/dev/null`, libraries seed from `/dev/urandom`), and none reaches a file: reading
//! them yields nothing, zeros or random bytes, writing them discards (or fails with
//! `ENOSPC`), whatever uid opens them. `/dev/tty` is the caller's controlling
//! terminal, and the worker has none (it leaves the terminal's session with
//! `setsid` before it runs), so opening it fails with the kernel's `ENXIO`, as for
//! any process without a terminal, instead of a Landlock `EACCES`.
//!
//! Each is granted to the Landlock domain as the file it is (read and write, never a
//! directory right, never execute) and only if it is a character device here, so a
//! machine where one is something else (a regular file left by an installer) grants
//! nothing for it.

use fdbroker_worker::sandbox::Sandbox;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// The devices, by path.
pub const STANDARD: [&str; 6] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
];

/// `sandbox` with the standard devices that are character devices on this machine.
pub fn allow_standard(mut sandbox: Sandbox) -> Sandbox {
    for path in STANDARD {
        let is_char_device = std::fs::metadata(Path::new(path))
            .map(|m| m.file_type().is_char_device())
            .unwrap_or(false);
        if is_char_device {
            sandbox = sandbox.allow_read_write(path);
        } else {
            tracing::debug!(
                path,
                "not a character device here; not granted to the sandbox"
            );
        }
    }
    sandbox
}
