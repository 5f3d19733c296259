//! The program's own files in its scratch directory (`TMPDIR`): `chmod` and
//! `utimensat` on them, which `tar x`, `unzip`, `cp -a` and `shutil.copytree` make on
//! every file they write.
//!
//! The program's ordinary sandbox refuses those calls outright (they change files it can
//! reach, often descriptors the broker passed); in transparent mode they are left to its
//! notification filter instead, so every one reaches the supervisor, which makes the
//! change itself, and only where all of this holds:
//!
//! - the file is found beneath the scratch directory from a descriptor of it opened
//!   before the program ran, with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//!   RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)` and `O_PATH | O_NOFOLLOW`: no `..`, no
//!   link, no other filesystem on the way, and a link at the end is refused, not
//!   followed;
//! - it is owned by the sandbox's uid (this run's alone, so: made by this program);
//! - it is a regular file or a directory;
//! - a descriptor the program names (`fchmod`, `futimens`) is the same file (device and
//!   inode) as the one found that way from the path `/proc` shows for it;
//! - for a mode, it is not the scratch directory itself, whose mode (0700) keeps everything
//!   beneath it private to the run (`chmod` of it is `EPERM`);
//!
//! and the mode set never has a set-user-id, set-group-id or sticky bit, nor, on a
//! regular file, an execute bit: those are dropped from what the program asked (a
//! program's own scratch files are never made executable; `TMPDIR` is never
//! executable in its Landlock domain either). Anything else is `EPERM`, the kernel's
//! answer to a caller that does not own the file. The change is made through
//! `/proc/self/fd/N` of the `O_PATH` descriptor found, so nothing is looked up by name
//! again after the checks.

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{FchmodatFlags, Mode, UtimensatFlags, fchmodat, fstat, utimensat};
use nix::sys::time::TimeSpec;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The scratch directory, held open for the run.
pub struct Scratch {
    dir: Option<OwnedFd>,
    path: Vec<u8>,
    uid: u32,
}

/// Bits a mode may keep: on a directory read, write and search for everyone; on a file
/// read and write. Never set-id or sticky.
fn allowed_mode(mode: u32, directory: bool) -> u32 {
    if directory {
        mode & 0o777
    } else {
        mode & 0o666
    }
}

impl Scratch {
    /// The scratch directory at `path` (empty: none, every change refused).
    pub fn open(path: &Path) -> Scratch {
        let dir = (!path.as_os_str().is_empty())
            .then(|| {
                nix::fcntl::open(
                    path,
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .ok()
            })
            .flatten();
        Scratch {
            dir,
            path: path.as_os_str().as_bytes().to_vec(),
            uid: nix::unistd::getuid().as_raw(),
        }
    }

    /// The program's own file at the absolute `path`, beneath the scratch directory.
    fn own(&self, path: &[u8]) -> Result<(OwnedFd, nix::sys::stat::FileStat), i32> {
        let dir = self.dir.as_ref().ok_or(libc::EPERM)?;
        let rest = path.strip_prefix(self.path.as_slice()).ok_or(libc::EPERM)?;
        let rel: &[u8] = match rest {
            b"" => b".",
            [b'/', rel @ ..] if !rel.is_empty() => rel,
            _ => return Err(libc::EPERM),
        };
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS
                    | ResolveFlag::RESOLVE_NO_XDEV,
            );
        let fd = openat2(dir, std::ffi::OsStr::from_bytes(rel), how).map_err(|e| match e {
            nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR => e as i32,
            _ => libc::EPERM,
        })?;
        let st = fstat(&fd).map_err(|e| e as i32)?;
        let kind = st.st_mode & libc::S_IFMT;
        if st.st_uid != self.uid || (kind != libc::S_IFREG && kind != libc::S_IFDIR) {
            return Err(libc::EPERM);
        }
        Ok((fd, st))
    }

    /// The program's own file that its descriptor `fd` (of thread `host_tid`, a `/proc`
    /// number) names, found again from the path `/proc` shows for it.
    fn own_fd(&self, host_tid: i32, fd: i32) -> Result<(OwnedFd, nix::sys::stat::FileStat), i32> {
        if fd < 0 {
            return Err(libc::EBADF);
        }
        let link = PathBuf::from(format!("/proc/{host_tid}/fd/{fd}"));
        let theirs = std::fs::metadata(&link).map_err(|_| libc::EBADF)?;
        let path = std::fs::read_link(&link).map_err(|_| libc::EBADF)?;
        let (found, st) = self.own(path.as_os_str().as_bytes())?;
        use std::os::unix::fs::MetadataExt;
        if (theirs.dev(), theirs.ino()) != (st.st_dev, st.st_ino) {
            return Err(libc::EPERM);
        }
        Ok((found, st))
    }

    /// The file a mode or time call names: by absolute path, or by the program's
    /// descriptor.
    fn target(&self, target: &Target) -> Result<(OwnedFd, nix::sys::stat::FileStat), i32> {
        match target {
            Target::Path(path) => self.own(path),
            Target::Fd { host_tid, fd } => self.own_fd(*host_tid, *fd),
        }
    }

    /// `chmod` of the program's own file, with the bits it may have; 0 or an errno.
    pub fn chmod(&self, target: &Target, mode: u32) -> Result<(), i32> {
        let (fd, st) = self.target(target)?;
        // The scratch directory itself stays 0700: it is what keeps everything beneath
        // it private to this run (a wider mode would let every local user read what the
        // program writes there, and plant files in it).
        let root = self
            .dir
            .as_ref()
            .map(fstat)
            .transpose()
            .map_err(|e| e as i32)?;
        if root.is_some_and(|r| (r.st_dev, r.st_ino) == (st.st_dev, st.st_ino)) {
            return Err(libc::EPERM);
        }
        let directory = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let mode = Mode::from_bits_truncate(allowed_mode(mode, directory) as libc::mode_t);
        fchmodat(
            nix::fcntl::AT_FDCWD,
            proc_self(&fd).as_path(),
            mode,
            FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| e as i32)
    }

    /// `utimensat` of the program's own file: `times` as the call gave them (access,
    /// modification; `None` for both now).
    pub fn set_times(&self, target: &Target, times: Option<[TimeSpec; 2]>) -> Result<(), i32> {
        let (fd, _) = self.target(target)?;
        let [atime, mtime] = times.unwrap_or([TimeSpec::UTIME_NOW, TimeSpec::UTIME_NOW]);
        utimensat(
            nix::fcntl::AT_FDCWD,
            proc_self(&fd).as_path(),
            &atime,
            &mtime,
            UtimensatFlags::FollowSymlink,
        )
        .map_err(|e| e as i32)
    }
}

/// What a mode or time call names.
pub enum Target {
    /// An absolute path, as the program named it (made absolute, `.` and `..` removed).
    Path(Vec<u8>),
    /// The program's descriptor `fd` in thread `host_tid`.
    Fd { host_tid: i32, fd: i32 },
}

/// `/proc/self/fd/N` of one of this process's descriptors: the file itself, whatever
/// its path has become.
fn proc_self(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mode_never_keeps_set_id_sticky_or_a_files_execute_bits() {
        assert_eq!(allowed_mode(0o4755, false), 0o644);
        assert_eq!(allowed_mode(0o2775, true), 0o775);
        assert_eq!(allowed_mode(0o1777, true), 0o777);
        assert_eq!(allowed_mode(0o600, false), 0o600);
    }

    #[test]
    fn only_own_files_beneath_the_scratch_directory_are_changed() {
        let base =
            std::env::temp_dir().join(format!("fdbroker-scratch-test-{}", std::process::id()));
        std::fs::create_dir_all(base.join("d")).expect("a scratch directory");
        std::fs::write(base.join("d/f"), b"x").expect("a file");
        std::os::unix::fs::symlink("d/f", base.join("l")).expect("a link");
        let scratch = Scratch::open(&base);
        let path = |rel: &str| {
            let mut p = base.as_os_str().as_bytes().to_vec();
            p.extend_from_slice(rel.as_bytes());
            Target::Path(p)
        };
        let mode = |rel: &str| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::symlink_metadata(base.join(rel))
                .expect("there")
                .permissions()
                .mode()
                & 0o7777
        };
        // The scratch directory itself keeps its mode.
        assert_eq!(scratch.chmod(&path(""), 0o777), Err(libc::EPERM));
        scratch.chmod(&path("/d/f"), 0o4755).expect("its own file");
        assert_eq!(mode("d/f"), 0o644);
        scratch
            .chmod(&path("/d"), 0o2750)
            .expect("its own directory");
        assert_eq!(mode("d"), 0o750);
        // A link is refused, not followed; so is anything outside, or a prefix look-alike.
        assert_eq!(scratch.chmod(&path("/l"), 0o600), Err(libc::EPERM));
        assert_eq!(
            scratch.chmod(&Target::Path(b"/etc/passwd".to_vec()), 0o600),
            Err(libc::EPERM)
        );
        assert_eq!(scratch.chmod(&path("-other/x"), 0o600), Err(libc::EPERM));
        assert_eq!(scratch.chmod(&path("/d/../../x"), 0o600), Err(libc::EPERM));
        assert_eq!(scratch.chmod(&path("/missing"), 0o600), Err(libc::ENOENT));
        scratch
            .set_times(
                &path("/d/f"),
                Some([TimeSpec::new(1, 0), TimeSpec::new(2, 0)]),
            )
            .expect("its own file");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(base.join("d/f")).expect("there").mtime(),
            2
        );
        // A descriptor is the file /proc shows for it.
        let f = std::fs::File::open(base.join("d/f")).expect("open");
        let me = nix::unistd::gettid().as_raw();
        let by_fd = Target::Fd {
            host_tid: me,
            fd: f.as_raw_fd(),
        };
        scratch
            .chmod(&by_fd, 0o600)
            .expect("its own file, by descriptor");
        assert_eq!(mode("d/f"), 0o600);
        let outside = std::fs::File::open("/etc/hostname").expect("open");
        let by_fd = Target::Fd {
            host_tid: me,
            fd: outside.as_raw_fd(),
        };
        assert_eq!(scratch.chmod(&by_fd, 0o600), Err(libc::EPERM));
        let _ = std::fs::remove_dir_all(&base);
    }
}
