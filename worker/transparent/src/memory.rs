//! The program's memory and its view of paths: reading the path a call names (once),
//! making it absolute as the program's thread sees it, and writing results back.
//!
//! Reading and writing another process's memory is what the supervisor's sandbox lets
//! it do (`process_vm_readv`/`process_vm_writev`, refused to the program) and what the
//! kernel allows only because the supervisor is the program's ancestor, with its uid
//! and a parent Landlock domain (see the crate documentation).

use nix::sys::uio::{RemoteIoVec, process_vm_readv, process_vm_writev};
use nix::unistd::Pid;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStringExt;

/// Reads `buf.len()` bytes at `addr` in thread `tid`'s memory.
pub fn read_memory(tid: i32, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
    let remote = RemoteIoVec {
        base: addr as usize,
        len: buf.len(),
    };
    // The kernel checks the remote side against the other process's mappings.
    Ok(process_vm_readv(
        Pid::from_raw(tid),
        &mut [IoSliceMut::new(buf)],
        &[remote],
    )?)
}

/// Writes `bytes` at `addr` in thread `tid`'s memory, all or an error.
pub fn write_memory(tid: i32, addr: u64, bytes: &[u8]) -> io::Result<()> {
    let remote = RemoteIoVec {
        base: addr as usize,
        len: bytes.len(),
    };
    let n = process_vm_writev(Pid::from_raw(tid), &[IoSlice::new(bytes)], &[remote])?;
    if n != bytes.len() {
        return Err(io::Error::from_raw_os_error(libc::EFAULT));
    }
    Ok(())
}

/// The NUL-terminated path at `addr`, read once, in pieces that never cross a page
/// boundary (a path may end just before an unmapped page). Errors are errnos for the
/// program, as the kernel's own reading gives them: the terminator must be within the
/// first `PATH_MAX` bytes (a path of at most 4095), else `ENAMETOOLONG`, and no byte
/// past those `PATH_MAX` is read.
pub fn read_path(tid: i32, addr: u64) -> Result<Vec<u8>, i32> {
    const PAGE: u64 = 4096;
    let max = libc::PATH_MAX as usize;
    let mut out = Vec::new();
    let mut at = addr;
    // Most paths end within the first read.
    let mut buf = [0u8; 512];
    while out.len() < max {
        let chunk = (PAGE - at % PAGE) as usize;
        let want = chunk.min(max - out.len()).min(buf.len());
        let n = read_memory(tid, at, &mut buf[..want]).map_err(|_| libc::EFAULT)?;
        if n == 0 {
            return Err(libc::EFAULT);
        }
        if let Some(end) = buf[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..end]);
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
        at = at.checked_add(n as u64).ok_or(libc::EFAULT)?;
    }
    Err(libc::ENAMETOOLONG)
}

/// `path` made absolute against `dirfd` (or the working directory) of thread `tid`, with
/// `.` and `..` removed lexically; `None` where that cannot be known (the sandbox then
/// decides). `real_base` maps a directory's path as `/proc` shows it to the one to
/// resolve against (a stand-in listing's real directory, `listing.rs`), before `..` is
/// removed, so `..` from a stand-in is the real directory's parent.
///
/// `/proc` shows pids of the broker's namespace, while the notification names the
/// thread in the supervisor's: a thread pidfd's `fdinfo` translates.
///
/// `cwd` is the working directory the supervisor keeps for the thread's process
/// (`cwd.rs`), used for `AT_FDCWD` in place of the kernel's.
pub fn absolute(
    tid: i32,
    dirfd: i32,
    path: &[u8],
    cwd: Option<&[u8]>,
    real_base: &dyn Fn(&[u8]) -> Option<Vec<u8>>,
) -> Option<Vec<u8>> {
    let mut full = if path.first() == Some(&b'/') {
        path.to_vec()
    } else if let (libc::AT_FDCWD, Some(cwd)) = (dirfd, cwd) {
        let mut base = cwd.to_vec();
        base.push(b'/');
        base.extend_from_slice(path);
        base
    } else {
        let host = host_tid(tid)?;
        let link = if dirfd == libc::AT_FDCWD {
            format!("/proc/{host}/cwd")
        } else if dirfd >= 0 {
            format!("/proc/{host}/fd/{dirfd}")
        } else {
            return None;
        };
        let base = std::fs::read_link(link).ok()?;
        let base = base.into_os_string().into_vec();
        if base.first() != Some(&b'/') {
            return None;
        }
        let mut base = real_base(&base).unwrap_or(base);
        base.push(b'/');
        base.extend_from_slice(path);
        base
    };
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in full.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let mut clean = Vec::with_capacity(full.len());
    for p in parts {
        clean.push(b'/');
        clean.extend_from_slice(p);
    }
    if clean.is_empty() {
        clean.push(b'/');
    }
    full.clear();
    Some(clean)
}

/// Thread `tid` of this pid namespace, as `/proc` (the broker's namespace) numbers it.
pub fn host_tid(tid: i32) -> Option<i32> {
    let pidfd = crate::sys::pidfd_open_thread(tid).ok()?;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd())).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse::<i32>().ok())
        .filter(|&p| p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> i32 {
        nix::unistd::gettid().as_raw()
    }

    #[test]
    fn a_path_is_read_up_to_its_terminator() {
        let text = b"/srv/data/one.txt\0trailing";
        let got = read_path(me(), text.as_ptr() as u64).expect("readable");
        assert_eq!(got, b"/srv/data/one.txt");
    }

    #[test]
    fn a_path_without_terminator_in_path_max_is_too_long() {
        let long = vec![b'a'; libc::PATH_MAX as usize + 10];
        assert_eq!(
            read_path(me(), long.as_ptr() as u64),
            Err(libc::ENAMETOOLONG)
        );
        let mut just = vec![b'a'; libc::PATH_MAX as usize];
        just[libc::PATH_MAX as usize - 1] = 0;
        assert_eq!(
            read_path(me(), just.as_ptr() as u64).map(|p| p.len()),
            Ok(libc::PATH_MAX as usize - 1)
        );
    }

    #[test]
    fn an_unmapped_address_is_efault() {
        assert_eq!(read_path(me(), 8), Err(libc::EFAULT));
    }

    #[test]
    fn results_are_written_back() {
        let mut target = [0u8; 4];
        write_memory(me(), target.as_mut_ptr() as u64, b"abcd").expect("writable");
        assert_eq!(std::hint::black_box(&target), b"abcd");
    }

    #[test]
    fn absolute_paths_lose_dots_lexically() {
        let clean = |p: &[u8]| absolute(me(), libc::AT_FDCWD, p, None, &|_| None);
        assert_eq!(clean(b"/a/./b/../c").as_deref(), Some(&b"/a/c"[..]));
        assert_eq!(clean(b"/..").as_deref(), Some(&b"/"[..]));
        assert_eq!(clean(b"//a//b/").as_deref(), Some(&b"/a/b"[..]));
    }

    #[test]
    fn relative_paths_start_at_the_threads_directory() {
        let cwd = std::env::current_dir()
            .expect("cwd")
            .into_os_string()
            .into_vec();
        let mut want = cwd.clone();
        want.extend_from_slice(b"/x");
        let got = absolute(me(), libc::AT_FDCWD, b"sub/../x", None, &|_| None);
        assert_eq!(got, Some(want));
        // The supervisor's working directory, where it keeps one, is the base.
        let kept = absolute(me(), libc::AT_FDCWD, b"b/../c", Some(b"/srv/in"), &|_| None);
        assert_eq!(kept.as_deref(), Some(&b"/srv/in/c"[..]));
        // A negative descriptor other than AT_FDCWD names nothing.
        assert_eq!(absolute(me(), -5, b"x", None, &|_| None), None);
    }
}
