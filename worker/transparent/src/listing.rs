//! Listing, for a program, a directory the broker lists itself: a stand-in directory of
//! its visible names.
//!
//! The broker passes no descriptor for a directory whose descriptor would show what the
//! policy hides (a deny carve-out beneath it); it answers a listing instead (`Op::List`),
//! with the hidden names left out. A program only knows `getdents64(2)` on a descriptor,
//! so the supervisor makes one: a fresh directory in the run's scratch directory holding
//! one empty entry per visible name, of the same type (a directory, a symbolic link, a
//! regular file for everything else), and hands the program a descriptor for it. Every
//! path the program then names through that descriptor (`fstatat(fd, name)`,
//! `openat(fd, name)`, `..`) is mapped back to the real directory before the broker is
//! asked (`real_base`), so `ls -l`, `find` and `os.walk` see the real files, under the
//! policy, and the stand-in's own contents never matter. It reveals nothing: its names
//! are the broker's listing, and it lies in the program's own scratch directory, which
//! the program may write anyway.

use fdbroker_worker::{FileKind, ReadDir};
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Mutex;

/// At most this many stand-ins per run: a program that lists more gets `EMFILE`-like
/// refusals (`ENOSPC`) rather than filling its scratch directory without end.
const MAX_STAND_INS: usize = 4096;

/// The stand-in directories made so far, each with the real directory it stands for.
///
/// Shared by the supervisor's answering threads: the list is behind a lock, held for a
/// lookup or while one stand-in is made (rare: once per listed directory).
pub struct StandIns {
    scratch: PathBuf,
    made: Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl StandIns {
    pub fn new(scratch: PathBuf) -> StandIns {
        StandIns {
            scratch,
            made: Mutex::new(Vec::new()),
        }
    }

    /// A stand-in for the real directory `real` holding `entries`, opened for listing.
    pub fn make(&self, real: &[u8], entries: ReadDir) -> io::Result<OwnedFd> {
        let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        if made.len() >= MAX_STAND_INS || self.scratch.as_os_str().is_empty() {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        // A name the program took in its scratch directory, or a stand-in that failed
        // half-way (left in place), is passed over: never a reason to fail every later
        // listing of the run.
        let mut dir = PathBuf::new();
        for attempt in 0..=MAX_STAND_INS {
            dir = self
                .scratch
                .join(format!(".fdbroker-listing.{}.{attempt}", made.len()));
            match fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < MAX_STAND_INS => {}
                Err(e) => return Err(e),
            }
        }
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            // One component, as the broker lists them; anything else is skipped.
            if name.as_bytes().contains(&b'/') || name == "." || name == ".." {
                continue;
            }
            let at = dir.join(name);
            match entry.file_type() {
                Ok(FileKind::Directory) => fs::DirBuilder::new().mode(0o700).create(&at)?,
                Ok(FileKind::Symlink) => std::os::unix::fs::symlink(".", &at)?,
                _ => drop(fs::File::create(&at)?),
            }
        }
        let fd = nix::fcntl::open(
            &dir,
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        made.push((dir.into_os_string().into_vec(), real.to_vec()));
        Ok(fd)
    }

    /// `base` (a working directory or a descriptor's path, as `/proc` shows it) with a
    /// stand-in's path replaced by the real directory's, or `None` if it is in none.
    pub fn real_base(&self, base: &[u8]) -> Option<Vec<u8>> {
        let made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        made.iter().find_map(|(stand_in, real)| {
            let rest = base.strip_prefix(stand_in.as_slice())?;
            if !rest.is_empty() && rest.first() != Some(&b'/') {
                return None;
            }
            let mut out = real.clone();
            out.extend_from_slice(rest);
            Some(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_stand_in_and_what_is_beneath_it_map_to_the_real_directory() {
        let s = StandIns::new(PathBuf::from("/scratch"));
        s.made.lock().expect("not poisoned").push((
            b"/scratch/.fdbroker-listing.0".to_vec(),
            b"/srv/in".to_vec(),
        ));
        let real = |p: &[u8]| s.real_base(p);
        assert_eq!(
            real(b"/scratch/.fdbroker-listing.0").as_deref(),
            Some(&b"/srv/in"[..])
        );
        assert_eq!(
            real(b"/scratch/.fdbroker-listing.0/sub/x").as_deref(),
            Some(&b"/srv/in/sub/x"[..])
        );
        assert_eq!(real(b"/scratch/.fdbroker-listing.01"), None);
        assert_eq!(real(b"/scratch"), None);
        assert_eq!(real(b"/srv/in"), None);
    }
}
