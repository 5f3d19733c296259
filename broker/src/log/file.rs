//! The file `fdbroker run --log-file PATH` logs to, opened by the spawn broker as root
//! before it confines itself (Landlock checks opens, not writes to an open file).

use std::fs::OpenOptions;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// `path` opened for appending, created `0600` if missing. A symbolic link as the last
/// component is refused (`O_NOFOLLOW`), and so is anything but a regular file (a FIFO
/// is opened non-blocking so it cannot hang the broker, then refused), so a log path in
/// a directory someone else can write cannot redirect root's writes. Nor can it receive
/// them: in a sticky directory others may write (`/tmp`), a file owned by neither this
/// process's user nor the directory's owner was planted there by someone else, and is
/// refused, as the kernel's `fs.protected_regular` would (it may be off), and so is a
/// file with other names there (a hard link to a file elsewhere).
pub fn open_append(path: &Path) -> io::Result<OwnedFd> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = std::fs::metadata(parent)?;
    let open_to_others = dir.mode() & 0o022 != 0;
    let sticky = dir.mode() & 0o1000 != 0;
    let me = nix::unistd::geteuid().as_raw();
    if (sticky || open_to_others) && meta.uid() != me && meta.uid() != dir.uid() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "owned by uid {}, in a directory others may write: not written to",
                meta.uid()
            ),
        ));
    }
    // A file of other names there may be anyone's file linked in (`fs.protected_hardlinks`
    // may be off): root's `/etc/shadow`, say.
    if (sticky || open_to_others) && meta.nlink() > 1 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "a file with other names (hard links), in a directory others may write: not \
             written to",
        ));
    }
    Ok(OwnedFd::from(file))
}
