//! What an intercepted call asks, decoded from the registers the notification carries.
//!
//! Only what the broker can answer becomes a [`Call`]; anything else (an `openat2` with
//! `resolve` flags) is `None`, which the supervisor answers by letting the kernel run
//! the call as the program made it. A stat with `AT_EMPTY_PATH` is a [`Call`] too: the
//! flag only means "the descriptor itself" when the path is empty, which the supervisor
//! sees once it has read the path (an empty one goes to the kernel); with a path, it is
//! an ordinary stat of that path, which the broker answers.

use crate::memory::read_memory;
use crate::uapi::{
    self, SYS_FACCESSAT2, SYS_FCHMODAT2, SYS_GETXATTRAT, SYS_LISTXATTRAT, SYS_OPENAT2,
};

/// What an intercepted call asks, decoded from its registers.
pub enum Call {
    Open {
        dirfd: i32,
        path: u64,
        flags: i32,
    },
    Stat {
        dirfd: i32,
        path: u64,
        flags: i32,
        buf: u64,
        statx: bool,
    },
    Access {
        dirfd: i32,
        path: u64,
        mode: i32,
    },
    /// `readlink`: the target of a symbolic link the broker describes, written into
    /// `buf` (at most `size` bytes, no terminator, as the kernel writes it).
    Readlink {
        dirfd: i32,
        path: u64,
        buf: u64,
        size: u64,
    },
    /// `getxattr`, `lgetxattr`, `getxattrat` (`list`: the `listxattr` calls): the
    /// broker shows no extended attributes, so a served path has none.
    Xattr {
        dirfd: i32,
        path: u64,
        list: bool,
        /// `false` for `lgetxattr`, `llistxattr` and `AT_SYMLINK_NOFOLLOW`: about a
        /// link itself.
        follow: bool,
    },
    /// `statfs`: the filesystem a served path is on, written as `struct statfs`.
    Statfs {
        path: u64,
        buf: u64,
    },
    /// `inotify_add_watch`: the program's inotify instance cannot watch what it cannot
    /// read, and the supervisor cannot add a watch to it.
    Watch {
        path: u64,
    },
    /// `chdir`: into a served directory, kept by the supervisor (`cwd.rs`).
    Chdir {
        path: u64,
    },
    /// `fchdir` and `getcwd` name no path: answered apart (`answer.rs`).
    Fchdir {
        fd: i32,
    },
    Getcwd {
        buf: u64,
        size: u64,
    },
    /// `fchmod`, `fchmodat`, `fchmodat2`, `utimensat`: answered by the supervisor on
    /// the program's own scratch files alone (`scratch.rs`), never left to the kernel.
    /// `path` 0 means the descriptor itself (`fchmod`, `futimens`); so does an empty
    /// path with `AT_EMPTY_PATH`, which the supervisor sees once it has read it.
    Metadata {
        dirfd: i32,
        path: u64,
        flags: i32,
        change: Change,
    },
}

/// What a [`Call::Metadata`] changes.
#[derive(Clone, Copy)]
pub enum Change {
    Mode(u32),
    /// The address of the two `struct timespec`s, 0 for "both now".
    Times(u64),
}

impl Call {
    /// The directory descriptor and the address of the path the call names.
    pub fn path(&self) -> (i32, u64) {
        match self {
            Call::Open { dirfd, path, .. }
            | Call::Stat { dirfd, path, .. }
            | Call::Access { dirfd, path, .. }
            | Call::Readlink { dirfd, path, .. }
            | Call::Xattr { dirfd, path, .. } => (*dirfd, *path),
            Call::Statfs { path, .. } | Call::Watch { path } | Call::Chdir { path } => {
                (libc::AT_FDCWD, *path)
            }
            // No path: never asked (answered before a path is read).
            Call::Fchdir { .. } | Call::Getcwd { .. } => (libc::AT_FDCWD, 0),
            Call::Metadata { dirfd, path, .. } => (*dirfd, *path),
        }
    }
}

/// The call notification data `d` describes, made by thread `tid` (whose memory holds
/// `openat2`'s `struct open_how`).
pub fn decode(tid: i32, d: &uapi::Data) -> Option<Call> {
    let a = d.args;
    // The kernel reads these arguments as `int`: the low 32 bits.
    let int = |v: u64| v as u32 as i32;
    let nr = i64::from(d.nr);
    #[cfg(target_arch = "x86_64")]
    {
        let cwd = libc::AT_FDCWD;
        match nr {
            libc::SYS_open => {
                return Some(Call::Open {
                    dirfd: cwd,
                    path: a[0],
                    flags: int(a[1]),
                });
            }
            libc::SYS_creat => {
                return Some(Call::Open {
                    dirfd: cwd,
                    path: a[0],
                    flags: libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC,
                });
            }
            libc::SYS_stat | libc::SYS_lstat => {
                let flags = if nr == libc::SYS_lstat {
                    libc::AT_SYMLINK_NOFOLLOW
                } else {
                    0
                };
                return Some(Call::Stat {
                    dirfd: cwd,
                    path: a[0],
                    flags,
                    buf: a[1],
                    statx: false,
                });
            }
            libc::SYS_chmod => {
                return Some(Call::Metadata {
                    dirfd: cwd,
                    path: a[0],
                    flags: 0,
                    change: Change::Mode(a[1] as u32),
                });
            }
            libc::SYS_readlink => {
                return Some(Call::Readlink {
                    dirfd: cwd,
                    path: a[0],
                    buf: a[1],
                    size: u64::from(a[2] as u32),
                });
            }
            libc::SYS_access => {
                return Some(Call::Access {
                    dirfd: cwd,
                    path: a[0],
                    mode: int(a[1]),
                });
            }
            _ => {}
        }
    }
    match nr {
        libc::SYS_openat => Some(Call::Open {
            dirfd: int(a[0]),
            path: a[1],
            flags: int(a[2]),
        }),
        SYS_OPENAT2 => {
            // struct open_how { u64 flags; u64 mode; u64 resolve; }
            if a[3] < 24 {
                return None;
            }
            let mut how = [0u8; 24];
            read_memory(tid, a[2], &mut how).ok()?;
            let flags = u64::from_ne_bytes(how[0..8].try_into().ok()?);
            let resolve = u64::from_ne_bytes(how[16..24].try_into().ok()?);
            if resolve != 0 {
                return None;
            }
            Some(Call::Open {
                dirfd: int(a[0]),
                path: a[1],
                flags: i32::try_from(flags).ok()?,
            })
        }
        libc::SYS_newfstatat => {
            let flags = int(a[3]);
            Some(Call::Stat {
                dirfd: int(a[0]),
                path: a[1],
                flags,
                buf: a[2],
                statx: false,
            })
        }
        libc::SYS_statx => {
            let flags = int(a[2]);
            Some(Call::Stat {
                dirfd: int(a[0]),
                path: a[1],
                flags,
                buf: a[4],
                statx: true,
            })
        }
        libc::SYS_readlinkat => Some(Call::Readlink {
            dirfd: int(a[0]),
            path: a[1],
            buf: a[2],
            size: u64::from(a[3] as u32),
        }),
        libc::SYS_faccessat | SYS_FACCESSAT2 => Some(Call::Access {
            dirfd: int(a[0]),
            path: a[1],
            mode: int(a[2]),
        }),
        libc::SYS_getxattr | libc::SYS_lgetxattr | libc::SYS_listxattr | libc::SYS_llistxattr => {
            Some(Call::Xattr {
                dirfd: libc::AT_FDCWD,
                path: a[0],
                list: nr == libc::SYS_listxattr || nr == libc::SYS_llistxattr,
                follow: nr == libc::SYS_getxattr || nr == libc::SYS_listxattr,
            })
        }
        SYS_GETXATTRAT | SYS_LISTXATTRAT => Some(Call::Xattr {
            dirfd: int(a[0]),
            path: a[1],
            list: nr == SYS_LISTXATTRAT,
            follow: int(a[2]) & libc::AT_SYMLINK_NOFOLLOW == 0,
        }),
        libc::SYS_statfs => Some(Call::Statfs {
            path: a[0],
            buf: a[1],
        }),
        libc::SYS_inotify_add_watch => Some(Call::Watch { path: a[1] }),
        libc::SYS_chdir => Some(Call::Chdir { path: a[0] }),
        libc::SYS_fchmod => Some(Call::Metadata {
            dirfd: int(a[0]),
            path: 0,
            flags: 0,
            change: Change::Mode(a[1] as u32),
        }),
        libc::SYS_fchmodat => Some(Call::Metadata {
            dirfd: int(a[0]),
            path: a[1],
            flags: 0,
            change: Change::Mode(a[2] as u32),
        }),
        SYS_FCHMODAT2 => Some(Call::Metadata {
            dirfd: int(a[0]),
            path: a[1],
            flags: int(a[3]),
            change: Change::Mode(a[2] as u32),
        }),
        libc::SYS_utimensat => Some(Call::Metadata {
            dirfd: int(a[0]),
            path: a[1],
            flags: int(a[3]),
            change: Change::Times(a[2]),
        }),
        libc::SYS_fchdir => Some(Call::Fchdir { fd: int(a[0]) }),
        libc::SYS_getcwd => Some(Call::Getcwd {
            buf: a[0],
            size: a[1],
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(nr: i64, args: [u64; 6]) -> uapi::Data {
        uapi::Data {
            nr: nr as i32,
            args,
            ..Default::default()
        }
    }

    #[test]
    fn openat_reads_its_arguments_as_ints() {
        let d = data(
            libc::SYS_openat,
            [u64::from(u32::MAX) - 99, 0x1000, 0o2, 0, 0, 0],
        );
        let Some(Call::Open { dirfd, path, flags }) = decode(0, &d) else {
            panic!("an openat is an open");
        };
        assert_eq!((dirfd, path, flags), (libc::AT_FDCWD, 0x1000, libc::O_RDWR));
    }

    #[test]
    fn a_stat_with_at_empty_path_is_still_a_stat_of_its_path() {
        // Whether the path is empty is for the supervisor to see once it has read it.
        let empty = libc::AT_EMPTY_PATH as u64;
        assert!(matches!(
            decode(
                0,
                &data(libc::SYS_newfstatat, [3, 0x1000, 0x2000, empty, 0, 0])
            ),
            Some(Call::Stat {
                buf: 0x2000,
                statx: false,
                ..
            })
        ));
        assert!(matches!(
            decode(0, &data(libc::SYS_statx, [3, 0x1000, empty, 0, 0x2000, 0])),
            Some(Call::Stat {
                buf: 0x2000,
                statx: true,
                ..
            })
        ));
        assert!(matches!(
            decode(0, &data(SYS_FACCESSAT2, [3, 0x1000, 0, empty, 0, 0])),
            Some(Call::Access { .. })
        ));
        let Some(Call::Stat { buf, statx, .. }) =
            decode(0, &data(libc::SYS_statx, [3, 0x1000, 0, 0, 0x2000, 0]))
        else {
            panic!("a statx of a path is a stat");
        };
        assert_eq!((buf, statx), (0x2000, true));
    }

    #[test]
    fn openat2_with_resolve_flags_is_left_to_the_kernel() {
        // struct open_how { flags, mode, resolve }, in this process's memory.
        let how: [u64; 3] = [libc::O_RDONLY as u64, 0, 0x08];
        let tid = nix::unistd::gettid().as_raw();
        let d = data(SYS_OPENAT2, [3, 0x1000, how.as_ptr() as u64, 24, 0, 0]);
        assert!(decode(tid, &d).is_none());
        let plain: [u64; 3] = [libc::O_WRONLY as u64, 0, 0];
        let d = data(SYS_OPENAT2, [3, 0x1000, plain.as_ptr() as u64, 24, 0, 0]);
        assert!(matches!(
            decode(tid, &d),
            Some(Call::Open {
                flags: libc::O_WRONLY,
                ..
            })
        ));
        // A size too small for the structure is not read at all.
        let d = data(SYS_OPENAT2, [3, 0x1000, plain.as_ptr() as u64, 8, 0, 0]);
        assert!(decode(tid, &d).is_none());
    }

    #[test]
    fn other_calls_are_not_decoded() {
        assert!(decode(0, &data(libc::SYS_getpid, [0; 6])).is_none());
    }
}
