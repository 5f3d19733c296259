//! `libfdbroker_client`: the fdbroker client for C, and for anything that calls C.
//!
//! The Rust client ([`fdbroker_worker::Client`]) behind an API that mirrors `open(2)`,
//! so that porting a C scanner is a one-line change per call: `open(path, flags)`
//! becomes `fdb_open(client, path, flags)` and returns a descriptor the same way, or
//! `-1` with `errno` set to what the broker said. The header, `include/fdbroker.h`, is
//! generated from this file by cbindgen (`build.rs`); the doc comments on the exported
//! items are its documentation.
//!
//! Every exported function keeps four rules, because a C caller has no way to recover
//! from their breach:
//! - **No panic crosses the boundary.** Unwinding into C is undefined behaviour, so
//!   each body runs under `catch_unwind`; a panic becomes an ordinary failure (`EIO`).
//! - **Every pointer is checked** for NULL before it is used, and sizes against what
//!   a slice may span; a bad argument is `EFAULT` or `EINVAL`, never a crash.
//! - **Failures set `errno` last**, after anything that could clobber it, and keep
//!   their text for [`fdb_last_error`] in a per-thread slot.
//! - **Descriptors handed out are the caller's**: nothing here keeps a copy, and they
//!   are close-on-exec from the moment they arrive.
//!
//! A client is the Rust `Client`, which is `Send + Sync`, so one `fdb_client *` may be
//! used from many threads at once.

use fdbroker_worker::{Access, BrokerError, Client};
use std::any::Any;
use std::cell::RefCell;
use std::ffi::{CStr, CString, OsStr, c_char, c_int};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, IntoRawFd};
use std::os::unix::ffi::OsStrExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

/// A connection to the broker. Opaque: create it with `fdb_connect`, use it from any
/// number of threads, and free it with `fdb_close` once no thread uses it any more.
#[allow(non_camel_case_types)]
pub struct fdb_client {
    client: Client,
}

/// Connect to the broker.
///
/// `socket_path` is the broker's socket; NULL chooses the way a worker is usually set
/// up: the inherited connection in `FDBROKER_FD` (set by `fdbroker run`), else the
/// socket named by `FDBROKER_SOCKET`, else `/run/fdbroker/fdbroker.sock`.
/// `FDBROKER_TIMEOUT` (seconds), when set, bounds connecting, the greeting and then each
/// reply, with a path as without one: a stopped broker is `ETIMEDOUT`, not a hang.
///
/// An inherited connection is shared by every process of the worker's tree, so it is
/// never used for requests: each `fdb_connect(NULL)` asks the broker over it for a
/// connection of its own with the same identity. Any number of clients, in any number
/// of processes of one `fdbroker run`, may be made this way; the inherited descriptor
/// is left open (and inheritable, if it was) for the process's own children.
///
/// A lost broker: a client made from a socket path (given, `FDBROKER_SOCKET` or the
/// default) that finds its connection ended (the broker's server was restarted or
/// replaced) reconnects once, on the same descriptor number, and retries the request;
/// a request that may have been carried out already is retried only if repeating it
/// changes nothing (not an `O_CREAT` open, which then fails with `ECONNABORTED`). If
/// reconnecting fails, the call fails with `ECONNABORTED` and the next call tries
/// again. A client over the inherited connection never reconnects (its broker is the
/// process that started the worker): every call fails with `ECONNABORTED`.
///
/// Returns a client, or NULL with `errno` set (`ENOENT`, `ECONNREFUSED`, `EACCES` when
/// the broker's policy has no client for this user, `EAGAIN` when the broker is at a
/// connection limit, ...) and `fdb_last_error()` saying why.
///
/// # Safety
/// `socket_path` is NULL or points to a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fdb_connect(socket_path: *const c_char) -> *mut fdb_client {
    guarded(std::ptr::null_mut(), || {
        // SAFETY: the caller passes NULL or a NUL-terminated string.
        let client = match unsafe { c_str(socket_path) } {
            None => Client::from_env(),
            Some(path) => Client::connect_timeout_from_env(path_of(path)),
        }
        .map_err(|e| Failure::io(&e, String::new()))?;
        Ok(Box::into_raw(Box::new(fdb_client { client })))
    })
}

/// Open `path` through the broker, like `open(2)`.
///
/// `flags` is one of `O_RDONLY`, `O_WRONLY`, `O_RDWR`, `O_RDONLY | O_DIRECTORY`
/// (a directory, e.g. for `fdopendir`, where the broker passes one: not for a directory
/// whose descriptor would show what the policy hides; list those with `fdb_read_dir`), or `O_WRONLY | O_CREAT | O_EXCL` (a new file,
/// created with the policy rule's mode; `O_CREAT | O_EXCL` alone means the same, as
/// the broker creates files write-only), with `O_TRUNC` and/or `O_APPEND` for
/// `O_WRONLY` and `O_RDWR`. `O_CLOEXEC` and `O_NOCTTY` are accepted and always in
/// effect; `O_NONBLOCK` is kept only if given. Any other flag (`O_CREAT` without
/// `O_EXCL`, `O_PATH`, `O_NOFOLLOW`, ...) fails with `EINVAL`. `path` must be
/// absolute.
///
/// Returns a new close-on-exec descriptor, which belongs to the caller (close it with
/// `close(2)`), or -1 with `errno` set as the broker said (`EACCES` outside the policy,
/// `ENOENT`, `EISDIR`, ...; `ECONNABORTED` once the connection is lost) and
/// `fdb_last_error()` giving the path and the broker's reason.
///
/// # Safety
/// `client` is NULL or a live client from `fdb_connect`; `path` is NULL or points to a
/// NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fdb_open(
    client: *mut fdb_client,
    path: *const c_char,
    flags: c_int,
) -> c_int {
    guarded(-1, || {
        // SAFETY: the caller passes NULL or a live client from fdb_connect.
        let client = unsafe { client_ref(client) }.ok_or_else(|| Failure::null("client"))?;
        // SAFETY: the caller passes NULL or a NUL-terminated string.
        let path = unsafe { c_str(path) }.ok_or_else(|| Failure::null("path"))?;
        let path = path_of(path);
        let (access, extra) = access_for(flags)?;
        let opened = client
            .client
            .open_detailed(path, access, extra)
            .map_err(|e| Failure::io(&e, format!("{}: ", path.display())))?;
        Ok(hand_over(opened.file, flags))
    })
}

/// Open `n` paths with the same `flags` (as for `fdb_open`) in as few round trips as
/// the broker allows.
///
/// For each `i < n`, `fds[i]` receives a descriptor (the caller's, close-on-exec) and
/// `errnos[i]` 0, or `fds[i]` is -1 and `errnos[i]` the broker's errno for that path.
/// Returns how many paths were opened; when some failed, `fdb_last_error()` describes
/// the first of them and `errno` is left alone. Returns -1 with `errno` set if the
/// request itself failed (a NULL pointer, bad flags, the connection lost); then no
/// descriptor was handed out and every `fds[i]` is -1 and every `errnos[i]` that errno.
///
/// # Safety
/// `client` is NULL or a live client; `paths` is NULL or points to `n` pointers, each
/// NULL or a NUL-terminated string; `fds` and `errnos` are NULL or point to `n`
/// writable ints each.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fdb_open_many(
    client: *mut fdb_client,
    paths: *const *const c_char,
    n: usize,
    flags: c_int,
    fds: *mut c_int,
    errnos: *mut c_int,
) -> c_int {
    // The output arrays are checked (and filled with the failure) outside the guarded
    // part, so that every way of failing leaves them in the documented state.
    // SAFETY: the caller passes NULL or `n` writable ints for each.
    let outputs = unsafe { (slice_mut(fds, n), slice_mut(errnos, n)) };
    let (Some(fds), Some(errnos)) = outputs else {
        let which = if fds.is_null() { "fds" } else { "errnos" };
        return guarded(-1, || Err(Failure::null(which)));
    };
    // How many paths were opened, and how many entries of `fds` were written.
    let (mut count, mut written) = (0, 0);
    let result = guarded(-1, || {
        // SAFETY: the caller passes NULL or a live client from fdb_connect.
        let client = unsafe { client_ref(client) }.ok_or_else(|| Failure::null("client"))?;
        // SAFETY: the caller passes NULL or `n` pointers.
        let paths = unsafe { slice(paths, n) }.ok_or_else(|| Failure::null("paths"))?;
        let paths = paths
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                // SAFETY: the caller passes NULL or a NUL-terminated string per element.
                unsafe { c_str(p) }
                    .map(path_of)
                    .ok_or_else(|| Failure::null(&format!("paths[{i}]")))
            })
            .collect::<Result<Vec<&Path>, Failure>>()?;
        let (access, extra) = access_for(flags)?;
        let results = client
            .client
            .open_many_detailed(&paths, access, extra)
            .map_err(|e| Failure::io(&e, String::new()))?;
        let mut first_failure = None;
        for (i, r) in results.into_iter().enumerate() {
            written = i + 1;
            match r {
                Ok(opened) => {
                    fds[i] = hand_over(opened.file, flags);
                    errnos[i] = 0;
                    count += 1;
                }
                Err(e) => {
                    fds[i] = -1;
                    errnos[i] = errno_of(&e);
                    first_failure.get_or_insert_with(|| {
                        Failure::io(&e, format!("{}: ", paths[i].display()))
                    });
                }
            }
        }
        if let Some(f) = first_failure {
            let failed = n - count;
            remember(&format!(
                "{failed} of {n} paths failed; the first: {}",
                f.text
            ));
        }
        Ok(c_int::try_from(count).unwrap_or(c_int::MAX))
    });
    if result < 0 {
        // Nothing was handed out: a failure after some descriptors were placed (a
        // panic) closes them, so "-1" always means "no descriptor is yours".
        let errno = nix::errno::Errno::last_raw();
        for (i, fd) in fds.iter_mut().enumerate() {
            if i < written && *fd >= 0 {
                close_raw(*fd);
            }
            *fd = -1;
        }
        errnos.iter_mut().for_each(|e| *e = errno);
        nix::errno::Errno::set_raw(errno);
    }
    result
}

/// The callback `fdb_read_dir` calls once per entry: `ctx` as given, the entry's name
/// (NUL-terminated, valid for the call only) and its type as a `d_type` value
/// (`DT_REG`, `DT_DIR`, `DT_LNK`, `DT_FIFO`, `DT_SOCK`, `DT_CHR`, `DT_BLK`), not
/// following a symbolic link. Return 0 to go on, anything else to stop.
#[allow(non_camel_case_types)]
pub type fdb_dir_entry_fn = Option<
    unsafe extern "C" fn(ctx: *mut std::ffi::c_void, name: *const c_char, kind: c_int) -> c_int,
>;

/// List the directory `path` through the broker, like `readdir(3)` without a
/// descriptor: the broker reads it (where the policy grants `directory`) and leaves out
/// `.`, `..` and every name the policy hides (a deny carve-out, a name no rule covers),
/// so a hidden name looks exactly like one that does not exist. `callback` is called
/// once per entry, in byte order of the names, after the whole listing has arrived.
///
/// This is how to list a directory the broker will not pass a descriptor for: it passes
/// none for a directory whose descriptor would show the worker what the policy hides
/// (`fdb_open` with `O_DIRECTORY` fails there with `EACCES`).
///
/// Returns 0 once every entry was given (or the callback stopped early: then the
/// callback's nonzero value), or -1 with `errno` set as the broker said (`EACCES`,
/// `ENOENT`, `ENOTDIR`, ...) and `fdb_last_error()` giving the path and the reason.
///
/// # Safety
/// `client` is NULL or a live client; `path` is NULL or points to a NUL-terminated
/// string; `callback` is NULL or a function as described, which `ctx` suits.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fdb_read_dir(
    client: *mut fdb_client,
    path: *const c_char,
    callback: fdb_dir_entry_fn,
    ctx: *mut std::ffi::c_void,
) -> c_int {
    guarded(-1, || {
        // SAFETY: the caller passes NULL or a live client from fdb_connect.
        let client = unsafe { client_ref(client) }.ok_or_else(|| Failure::null("client"))?;
        // SAFETY: the caller passes NULL or a NUL-terminated string.
        let path = unsafe { c_str(path) }.ok_or_else(|| Failure::null("path"))?;
        let callback = callback.ok_or_else(|| Failure::null("callback"))?;
        let path = path_of(path);
        let entries = client
            .client
            .read_dir(path)
            .map_err(|e| Failure::io(&e, format!("{}: ", path.display())))?;
        for entry in entries {
            let entry = entry.map_err(|e| Failure::io(&e, format!("{}: ", path.display())))?;
            // A file name holds no NUL byte.
            let Ok(name) = CString::new(entry.file_name().as_bytes()) else {
                continue;
            };
            let kind = entry.file_type().map_or(libc::DT_UNKNOWN, d_type);
            // SAFETY: the caller's callback, with its own `ctx` and a name valid for
            // the call.
            let stop = unsafe { callback(ctx, name.as_ptr(), c_int::from(kind)) };
            if stop != 0 {
                return Ok(stop);
            }
        }
        Ok(0)
    })
}

/// The `d_type` value of a file type.
fn d_type(kind: fdbroker_worker::FileKind) -> u8 {
    use fdbroker_worker::FileKind;
    match kind {
        FileKind::Regular => libc::DT_REG,
        FileKind::Directory => libc::DT_DIR,
        FileKind::Symlink => libc::DT_LNK,
        FileKind::Fifo => libc::DT_FIFO,
        FileKind::Socket => libc::DT_SOCK,
        FileKind::CharDevice => libc::DT_CHR,
        FileKind::BlockDevice => libc::DT_BLK,
    }
}

/// This thread's last failure in words: the path and the broker's reason, or why the
/// call was refused. NULL if no call of this library has failed on this thread. The
/// string stays valid until the next call of this library on this thread.
#[unsafe(no_mangle)]
pub extern "C" fn fdb_last_error() -> *const c_char {
    LAST_ERROR
        .try_with(|slot| match slot.try_borrow() {
            Ok(s) => s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            Err(_) => std::ptr::null(),
        })
        .unwrap_or(std::ptr::null())
}

/// Close the connection and free the client. NULL is ignored. No other thread may be
/// using the client, and it must not be used afterwards. Descriptors opened through it
/// stay open: they are the caller's.
///
/// # Safety
/// `client` is NULL or a live client from `fdb_connect`, not used after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fdb_close(client: *mut fdb_client) {
    // SAFETY: the caller passes NULL or a client from fdb_connect it no longer uses.
    let owned = unsafe { take_client(client) };
    guarded((), || {
        drop(owned);
        Ok(())
    });
}

/// A failure to report: the errno for the caller and the text for `fdb_last_error`.
struct Failure {
    errno: c_int,
    text: String,
}

impl Failure {
    fn null(what: &str) -> Failure {
        Failure {
            errno: libc::EFAULT,
            text: format!("{what} is NULL"),
        }
    }

    fn invalid(text: String) -> Failure {
        Failure {
            errno: libc::EINVAL,
            text,
        }
    }

    /// `prefix` (e.g. the path and ": ") followed by the error's own words, which for
    /// a refusal are the broker's reason.
    fn io(e: &io::Error, prefix: String) -> Failure {
        Failure {
            errno: errno_of(e),
            text: format!("{prefix}{e}"),
        }
    }

    fn report(&self) {
        remember(&self.text);
        nix::errno::Errno::set_raw(self.errno);
    }
}

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

/// Keep `text` as this thread's last failure. A NUL inside (a hostile broker's reason
/// may hold one) is shown as `\0` rather than cutting the text short.
fn remember(text: &str) {
    let text = CString::new(text.replace('\0', "\\0")).unwrap_or_default();
    // Fails only while the thread is being torn down; then there is no one to tell.
    let _ = LAST_ERROR.try_with(|slot| {
        if let Ok(mut s) = slot.try_borrow_mut() {
            *s = Some(text);
        }
    });
}

/// Run `body`, turning its failure or its panic into `errno`, the thread's last
/// error, and `on_failure`.
fn guarded<T>(on_failure: T, body: impl FnOnce() -> Result<T, Failure>) -> T {
    let outcome = panic::catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        Err(Failure {
            errno: libc::EIO,
            text: format!(
                "internal error in libfdbroker_client: {}",
                panic_text(&*payload)
            ),
        })
    });
    match outcome {
        Ok(v) => v,
        Err(f) => {
            // Reporting formats and allocates: keep a panic there on this side too.
            if panic::catch_unwind(|| f.report()).is_err() {
                nix::errno::Errno::set_raw(libc::EIO);
            }
            on_failure
        }
    }
}

fn panic_text(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic")
}

/// The `open(2)` flags this library accepts, and what they become on the wire.
fn access_for(flags: c_int) -> Result<(Access, u32), Failure> {
    const CREATE: c_int = libc::O_CREAT | libc::O_EXCL;
    const EXTRA: c_int = libc::O_TRUNC | libc::O_APPEND;
    // Always in effect (O_CLOEXEC, O_NOCTTY) or handled here (O_NONBLOCK); O_LARGEFILE
    // is implied on 64-bit and some toolchains add it on their own.
    const IGNORED: c_int = libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_LARGEFILE;
    let known = libc::O_ACCMODE | libc::O_DIRECTORY | CREATE | EXTRA | IGNORED;
    if flags & !known != 0 {
        return Err(Failure::invalid(format!(
            "open flags {:#o} are not supported: the broker takes O_RDONLY, O_WRONLY, \
             O_RDWR, O_DIRECTORY, O_CREAT|O_EXCL, O_TRUNC and O_APPEND",
            flags & !known
        )));
    }
    let mode = flags & libc::O_ACCMODE;
    let extra = (flags & EXTRA) as u32;
    let access = match (mode, flags & libc::O_DIRECTORY != 0, flags & CREATE) {
        (libc::O_RDONLY, true, 0) => Access::Directory,
        (_, true, _) => {
            return Err(Failure::invalid(
                "O_DIRECTORY goes with O_RDONLY alone".to_owned(),
            ));
        }
        (libc::O_RDONLY | libc::O_WRONLY, false, CREATE) => Access::Create,
        (_, false, CREATE) => {
            return Err(Failure::invalid(
                "the broker creates files write-only: use O_WRONLY|O_CREAT|O_EXCL".to_owned(),
            ));
        }
        (_, false, libc::O_CREAT) => {
            return Err(Failure::invalid(
                "O_CREAT needs O_EXCL: the broker never opens an existing file for creation"
                    .to_owned(),
            ));
        }
        (_, false, libc::O_EXCL) => {
            return Err(Failure::invalid("O_EXCL needs O_CREAT".to_owned()));
        }
        (libc::O_RDONLY, false, _) => Access::Read,
        (libc::O_WRONLY, false, _) => Access::Write,
        (libc::O_RDWR, false, _) => Access::ReadWrite,
        _ => {
            return Err(Failure::invalid(format!(
                "access mode {mode:#o} is not O_RDONLY, O_WRONLY or O_RDWR"
            )));
        }
    };
    Ok((access, extra))
}

/// Give a received file to the caller as a raw descriptor. The broker opens with
/// `O_NONBLOCK` (so a FIFO cannot block it); as with `open(2)`, the caller gets it only
/// if it asked for it.
fn hand_over(file: File, flags: c_int) -> c_int {
    if flags & libc::O_NONBLOCK == 0 {
        clear_nonblock(&file);
    }
    file.into_raw_fd()
}

fn clear_nonblock(file: &File) {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    if let Ok(bits) = fcntl(file.as_fd(), FcntlArg::F_GETFL) {
        let fl = OFlag::from_bits_retain(bits);
        if fl.contains(OFlag::O_NONBLOCK) {
            let _ = fcntl(
                file.as_fd(),
                FcntlArg::F_SETFL(fl.difference(OFlag::O_NONBLOCK)),
            );
        }
    }
}

/// The errno a C caller should see for `e`: the broker's own for its refusals, the
/// system's where there is one, else the closest to the error's kind.
fn errno_of(e: &io::Error) -> c_int {
    if let Some(b) = e.get_ref().and_then(|i| i.downcast_ref::<BrokerError>()) {
        return b.errno;
    }
    if let Some(n) = e.raw_os_error() {
        return n;
    }
    use io::ErrorKind as K;
    match e.kind() {
        K::NotFound => libc::ENOENT,
        K::PermissionDenied => libc::EACCES,
        K::ConnectionRefused => libc::ECONNREFUSED,
        K::ConnectionReset => libc::ECONNRESET,
        // The broker went away, or the connection broke and is unusable.
        K::ConnectionAborted => libc::ECONNABORTED,
        K::NotConnected => libc::ENOTCONN,
        K::BrokenPipe => libc::EPIPE,
        K::AlreadyExists => libc::EEXIST,
        K::WouldBlock => libc::EAGAIN,
        K::InvalidInput => libc::EINVAL,
        K::InvalidFilename => libc::ENAMETOOLONG,
        // The broker broke the protocol.
        K::InvalidData => libc::EPROTO,
        K::TimedOut => libc::ETIMEDOUT,
        K::Interrupted => libc::EINTR,
        // Another protocol version.
        K::Unsupported => libc::EPROTONOSUPPORT,
        K::OutOfMemory => libc::ENOMEM,
        K::QuotaExceeded => libc::ETOOMANYREFS,
        K::NotADirectory => libc::ENOTDIR,
        K::IsADirectory => libc::EISDIR,
        _ => libc::EIO,
    }
}

/// Close a descriptor this library created and never handed out.
fn close_raw(fd: c_int) {
    // SAFETY: `fd` was received for this call and not yet returned to the caller, so
    // this is its only owner.
    drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
}

fn path_of(s: &CStr) -> &Path {
    Path::new(OsStr::from_bytes(s.to_bytes()))
}

/// # Safety
/// `p` is NULL or points to a NUL-terminated string that outlives `'a`.
unsafe fn c_str<'a>(p: *const c_char) -> Option<&'a CStr> {
    // SAFETY: checked for NULL; the caller vouches for the rest.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) })
}

/// # Safety
/// `p` is NULL or a pointer from `fdb_connect` not yet passed to `fdb_close`.
unsafe fn client_ref<'a>(p: *mut fdb_client) -> Option<&'a fdb_client> {
    // SAFETY: checked for NULL; a live client is a valid Box allocation, and only
    // shared references to it are ever made (Client is Sync).
    unsafe { p.cast_const().as_ref() }
}

/// # Safety
/// `p` is NULL or a pointer from `fdb_connect` that no one uses any more.
unsafe fn take_client(p: *mut fdb_client) -> Option<Box<fdb_client>> {
    // SAFETY: checked for NULL; the pointer came from Box::into_raw in fdb_connect and
    // the caller gives up every use of it.
    (!p.is_null()).then(|| unsafe { Box::from_raw(p) })
}

/// `n` elements at `p`, or None for NULL (an empty slice for `n == 0`, whatever `p`)
/// or a length no allocation could have.
///
/// # Safety
/// `p` is NULL or points to `n` initialised elements that outlive `'a`.
unsafe fn slice<'a, T>(p: *const T, n: usize) -> Option<&'a [T]> {
    if n == 0 {
        return Some(&[]);
    }
    if p.is_null() || n > isize::MAX as usize / std::mem::size_of::<T>().max(1) {
        return None;
    }
    // SAFETY: non-NULL, the span fits isize, and the caller vouches for the rest.
    Some(unsafe { std::slice::from_raw_parts(p, n) })
}

/// Like [`slice`], writable.
///
/// # Safety
/// `p` is NULL or points to `n` writable elements that outlive `'a`, aliased by
/// nothing else for that time.
unsafe fn slice_mut<'a, T>(p: *mut T, n: usize) -> Option<&'a mut [T]> {
    if n == 0 {
        return Some(&mut []);
    }
    if p.is_null() || n > isize::MAX as usize / std::mem::size_of::<T>().max(1) {
        return None;
    }
    // SAFETY: non-NULL, the span fits isize, and the caller vouches for the rest.
    Some(unsafe { std::slice::from_raw_parts_mut(p, n) })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn open_flags_map_like_open_2() {
        use libc::*;
        let ok = |f| access_for(f).ok();
        assert_eq!(ok(O_RDONLY), Some((Access::Read, 0)));
        assert_eq!(ok(O_RDONLY | O_CLOEXEC), Some((Access::Read, 0)));
        assert_eq!(ok(O_WRONLY), Some((Access::Write, 0)));
        assert_eq!(
            ok(O_WRONLY | O_TRUNC),
            Some((Access::Write, O_TRUNC as u32))
        );
        assert_eq!(
            ok(O_RDWR | O_APPEND),
            Some((Access::ReadWrite, O_APPEND as u32))
        );
        assert_eq!(ok(O_RDONLY | O_DIRECTORY), Some((Access::Directory, 0)));
        assert_eq!(ok(O_WRONLY | O_CREAT | O_EXCL), Some((Access::Create, 0)));
        assert_eq!(ok(O_CREAT | O_EXCL), Some((Access::Create, 0)));
        // Truncate with read is the broker's to refuse, with its reason.
        assert_eq!(ok(O_RDONLY | O_TRUNC), Some((Access::Read, O_TRUNC as u32)));
        for bad in [
            O_WRONLY | O_CREAT,
            O_RDWR | O_CREAT | O_EXCL,
            O_EXCL,
            O_WRONLY | O_DIRECTORY,
            O_DIRECTORY | O_CREAT | O_EXCL,
            O_PATH,
            O_NOFOLLOW,
            O_TMPFILE,
            O_SYNC,
            O_ACCMODE,
        ] {
            let e = access_for(bad).err().unwrap();
            assert_eq!(e.errno, EINVAL, "{bad:#o}: {}", e.text);
        }
    }

    /// The committed header is what cbindgen makes of this file now (build.rs puts
    /// that in OUT_DIR): an API change without a new header fails here.
    #[test]
    fn header_is_current() {
        let generated = include_str!(concat!(env!("OUT_DIR"), "/fdbroker.h"));
        let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/fdbroker.h");
        if std::env::var_os("FDBROKER_WRITE_HEADER").is_some() {
            std::fs::write(&committed, generated).unwrap();
            return;
        }
        let text = std::fs::read_to_string(&committed).unwrap_or_default();
        assert!(
            text == generated,
            "{} is missing or stale: regenerate it with \
             FDBROKER_WRITE_HEADER=1 cargo test -p fdbroker-ffi header_is_current",
            committed.display()
        );
    }

    #[test]
    fn a_panic_is_a_failure_not_an_unwind() {
        let r = guarded(-7, || -> Result<i32, Failure> { panic!("boom") });
        assert_eq!(r, -7);
        assert_eq!(nix::errno::Errno::last_raw(), libc::EIO);
        // SAFETY: fdb_last_error returns NULL or a NUL-terminated string.
        let text = unsafe { c_str(fdb_last_error()) }.unwrap();
        assert!(text.to_str().unwrap().contains("boom"), "{text:?}");
    }

    #[test]
    fn a_nul_in_a_reason_does_not_cut_it_short() {
        remember("before\0after");
        // SAFETY: as above.
        let text = unsafe { c_str(fdb_last_error()) }.unwrap();
        assert_eq!(text.to_str().unwrap(), "before\\0after");
    }
}
