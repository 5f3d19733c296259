//! The file `fdbroker run --log-file PATH` logs to, opened by the spawn broker as root
//! before it confines itself (Landlock checks opens, not writes to an open file).

use std::fs::OpenOptions;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// `path` opened for appending, created `0600` if missing. A symbolic link as the last
/// component is refused (`O_NOFOLLOW`), and so is anything but a regular file (a FIFO
/// is opened non-blocking so it cannot hang the broker, then refused), so a log path in
/// a directory someone else can write cannot redirect root's writes.
pub fn open_append(path: &Path) -> io::Result<OwnedFd> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(OwnedFd::from(file))
}
