//! The byte layouts a stat answer is written in: what the broker saw of a file, as the
//! program's `struct stat` (`stat`, `lstat`, `newfstatat`) or `struct statx` expects it.

use crate::sys::zeroed_bytes;
use fdbroker_shared::wire::StatMeta;

/// `struct stat` as `newfstatat` fills it, from what the broker saw.
pub fn stat_bytes(m: &StatMeta) -> Vec<u8> {
    zeroed_bytes(|st: &mut libc::stat| {
        st.st_dev = m.file.dev as _;
        st.st_ino = m.file.ino as _;
        st.st_mode = m.file.mode as _;
        st.st_nlink = m.file.nlink as _;
        st.st_uid = m.uid;
        st.st_gid = m.gid;
        st.st_rdev = m.rdev as _;
        st.st_size = m.file.size as _;
        st.st_blksize = m.blksize as _;
        st.st_blocks = m.blocks as _;
        st.st_atime = m.atime_sec as _;
        st.st_atime_nsec = i64::from(m.atime_nsec) as _;
        st.st_mtime = m.file.mtime_sec as _;
        st.st_mtime_nsec = i64::from(m.file.mtime_nsec) as _;
        st.st_ctime = m.ctime_sec as _;
        st.st_ctime_nsec = i64::from(m.ctime_nsec) as _;
    })
}

/// `struct statx` with the basic fields (no birth time: the broker does not see it).
pub fn statx_bytes(m: &StatMeta) -> Vec<u8> {
    zeroed_bytes(|st: &mut libc::statx| {
        st.stx_mask = libc::STATX_BASIC_STATS;
        st.stx_blksize = m.blksize as u32;
        st.stx_nlink = m.file.nlink as u32;
        st.stx_uid = m.uid;
        st.stx_gid = m.gid;
        st.stx_mode = m.file.mode as u16;
        st.stx_ino = m.file.ino;
        st.stx_size = m.file.size;
        st.stx_blocks = m.blocks;
        st.stx_atime.tv_sec = m.atime_sec;
        st.stx_atime.tv_nsec = m.atime_nsec;
        st.stx_mtime.tv_sec = m.file.mtime_sec;
        st.stx_mtime.tv_nsec = m.file.mtime_nsec;
        st.stx_ctime.tv_sec = m.ctime_sec;
        st.stx_ctime.tv_nsec = m.ctime_nsec;
        st.stx_rdev_major = libc::major(m.rdev as libc::dev_t);
        st.stx_rdev_minor = libc::minor(m.rdev as libc::dev_t);
        st.stx_dev_major = libc::major(m.file.dev as libc::dev_t);
        st.stx_dev_minor = libc::minor(m.file.dev as libc::dev_t);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fdbroker_shared::wire::{FileKind, FileMeta};

    fn meta() -> StatMeta {
        StatMeta {
            file: FileMeta {
                kind: FileKind::Regular,
                size: 0x1122_3344,
                dev: 0,
                ino: 7,
                mode: 0o100_644,
                nlink: 1,
                mtime_sec: 1,
                mtime_nsec: 2,
            },
            uid: 65534,
            gid: 65534,
            rdev: 0,
            blksize: 4096,
            blocks: 8,
            atime_sec: 3,
            atime_nsec: 4,
            ctime_sec: 5,
            ctime_nsec: 6,
        }
    }

    #[test]
    fn the_layouts_are_the_kernels() {
        let st = stat_bytes(&meta());
        assert_eq!(st.len(), std::mem::size_of::<libc::stat>());
        let sx = statx_bytes(&meta());
        assert_eq!(
            sx.len(),
            256,
            "struct statx is 256 bytes on every architecture"
        );
        // stx_size is at byte 40 of the fixed statx layout.
        assert_eq!(
            u64::from_ne_bytes(sx[40..48].try_into().expect("8 bytes")),
            0x1122_3344
        );
        // The birth time and everything after the basic fields stay zero.
        assert!(sx[0x90..].iter().all(|&b| b == 0));
    }
}
