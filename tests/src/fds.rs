//! Descriptors: what a test received, what it names, and how many a process holds.

use std::fs;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// A file's whole content (what a passed descriptor lets its holder read).
pub fn read_all(mut f: fs::File) -> Vec<u8> {
    let mut v = Vec::new();
    f.read_to_end(&mut v).unwrap();
    v
}

/// `(st_dev, st_ino)` of an open descriptor.
pub fn dev_ino(fd: &impl AsFd) -> (u64, u64) {
    let st = nix::sys::stat::fstat(fd).unwrap();
    (st.st_dev, st.st_ino)
}

/// `(st_dev, st_ino)` of a path itself (not following a final symlink), to compare
/// with what a descriptor names.
pub fn path_dev_ino(p: &Path) -> (u64, u64) {
    let st = nix::sys::stat::lstat(p).unwrap();
    (st.st_dev, st.st_ino)
}

/// Descriptors a process holds.
pub fn fd_count_of(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// A process's descriptor count once it has stopped changing (a broker may still be
/// closing a connection it just saw end, such as the harness's readiness probe).
pub fn settled_fd_count(pid: i32) -> usize {
    let mut last = fd_count_of(pid);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = fd_count_of(pid);
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// A file's whole content as text.
pub fn read_text(mut f: fs::File) -> String {
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    s
}
