//! Where every log line goes: stderr, written so that no failure of it can panic a
//! process or hold up its event loop for more than [`WAIT`].
//!
//! `tracing-subscriber`'s writer (`std::io::stderr`) blocks while a pipe is full, and
//! when a write fails the fmt layer reports it with `eprintln!`, a second write to the
//! same failing stderr, which panics (`failed printing to stderr`): a full disk or a
//! reader that exited made one log event kill the thread that logged it. Every process
//! of the broker writes its lines here instead ([`Sink`] is the subscriber's writer,
//! and the audit batch calls [`write_line`]), and this module:
//!
//! - never panics, and never hands the subscriber an error to report: a line that
//!   cannot be written is dropped and counted ([`Health::lost`], [`Health::lost_audit`]);
//!   only the audit batch hears of it ([`write_line`]'s `Err`), for `audit_failure`;
//! - never blocks for long: a pipe, FIFO or terminal is written through a descriptor of
//!   its own opened `O_NONBLOCK` (`/proc/self/fd/2`: a new open file description, so
//!   the flag does not change the stream other processes share), a socket (the
//!   journal's stream) with `MSG_DONTWAIT`; while the destination works a full one is
//!   waited for at most [`WAIT`] per line, and once it has failed not at all, so a
//!   stalled reader costs one system call per line;
//! - remembers when writing started failing, and why, until a line gets through again;
//!   [`take_change`] tells the one reporter of the process (the server's timer) so it
//!   can log both and say so in `STATUS=`.
//!
//! A regular file is written through stderr itself: its offset and `O_APPEND` are
//! shared with whoever opened it, and a full disk answers `ENOSPC` without blocking.

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::MsgFlags;
use nix::sys::stat::{Mode, SFlag};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, TryLockError};
use std::time::{Duration, Instant};

/// The longest one line waits for room while the destination works: long enough for a
/// reader that is merely slow, short against a request's round trip under load.
pub const WAIT: Duration = Duration::from_millis(20);

/// How stderr is written.
#[derive(Debug)]
enum Route {
    /// Through a non-blocking descriptor of our own for the same pipe, FIFO or tty.
    Own(OwnedFd),
    /// A socket: `send(MSG_DONTWAIT | MSG_NOSIGNAL)` on stderr.
    Socket,
    /// A regular file or anything that cannot be reopened: `write(2)` on stderr.
    Stderr,
    /// The file `fdbroker run --log-file` opened (a regular file, appended to):
    /// `write(2)` on it, so the broker's lines never mix with the worker's stderr.
    File(OwnedFd),
}

/// The process's log destination: made once, by [`install`] (or on first use).
#[derive(Debug)]
struct Destination {
    route: Route,
    /// Serializes writers, so one line never lands inside another, and holds the
    /// failure state the writes update. Taken within [`WAIT`] or not at all: a writer
    /// stuck in `write(2)` (a regular file on a frozen or hung filesystem, which no
    /// flag makes non-blocking) holds up only its own thread, whose lack of progress the
    /// watchdog then reports; the others drop their lines, counted.
    state: Mutex<State>,
    /// `State::failing`, readable without waiting for a writer: for `STATUS=`.
    failing: Mutex<Option<(Instant, Errno)>>,
}

#[derive(Debug, Default)]
struct State {
    /// Since when lines have been failing, and the last error; `None` while they go
    /// through.
    failing: Option<(Instant, Errno)>,
    /// A line was cut short (the reader stalled mid-line): the next one starts on a
    /// line of its own.
    torn: bool,
    /// Lines lost in the current (or last, until reported) episode.
    episode_lost: u64,
    episode_lost_audit: u64,
    /// What [`take_change`] last reported: whether writing was failing.
    reported_failing: bool,
    /// Which of the two ways out failed last time it was tried: the stream (stderr or
    /// the `--log-file`) and the journal's native socket. An episode ends only when
    /// neither does: a line the stream takes says nothing of a journal that is gone.
    stream_bad: bool,
    journal_bad: bool,
    /// An episode that ended and was not reported yet: how long it lasted, the error,
    /// and what it lost.
    ended: Option<Ended>,
}

#[derive(Clone, Copy, Debug)]
struct Ended {
    lasted: Duration,
    error: Errno,
    lost: u64,
    lost_audit: u64,
}

/// Lines lost since the process started.
static LOST: AtomicU64 = AtomicU64::new(0);
static LOST_AUDIT: AtomicU64 = AtomicU64::new(0);
/// Lines lost because another writer held the destination past [`WAIT`], not yet
/// counted in the episode (the next writer to get it does).
static LOCKED_OUT: AtomicU64 = AtomicU64::new(0);
static LOCKED_OUT_AUDIT: AtomicU64 = AtomicU64::new(0);

/// Whether `Destination::failing` holds a failure: lets a successful write skip its
/// lock.
static MARKED_FAILING: AtomicBool = AtomicBool::new(false);

static DESTINATION: OnceLock<Destination> = OnceLock::new();

/// Decide how stderr is written: called by `log::init` before anything is logged, while
/// the process can still open `/proc/self/fd/2` (a server confines itself later).
pub fn install() {
    let _ = destination();
}

/// Write every line to `file` instead of stderr (`fdbroker run --log-file`): called by
/// `log::init_to_file` before anything is logged. `Err(file)` when the destination was
/// decided already (something logged first), which the caller reports.
pub fn install_file(file: OwnedFd) -> Result<(), OwnedFd> {
    let mut file = Some(file);
    // The closure runs only if no destination was decided yet, and then takes the file.
    DESTINATION.get_or_init(|| Destination {
        route: file.take().map_or(Route::Stderr, Route::File),
        state: Mutex::new(State::default()),
        failing: Mutex::new(None),
    });
    file.map_or(Ok(()), Err)
}

fn destination() -> &'static Destination {
    DESTINATION.get_or_init(|| Destination {
        route: route(),
        state: Mutex::new(State::default()),
        failing: Mutex::new(None),
    })
}

fn route() -> Route {
    let Ok(st) = nix::sys::stat::fstat(io::stderr().as_fd()) else {
        return Route::Stderr;
    };
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    if kind == SFlag::S_IFSOCK {
        return Route::Socket;
    }
    if kind == SFlag::S_IFREG {
        return Route::Stderr;
    }
    // A pipe, FIFO or terminal: a description of our own, non-blocking. A pipe whose
    // reader has gone cannot be opened (ENXIO); stderr itself then fails with EPIPE
    // without blocking, as there is nobody left to wait for.
    match nix::fcntl::open(
        "/proc/self/fd/2",
        OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Route::Own(fd),
        Err(_) => Route::Stderr,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `m`, if it can be had within `wait`: a few yields first (a writer holds it for one
/// system call), then short sleeps.
fn lock_within<T>(m: &Mutex<T>, wait: Duration) -> Option<MutexGuard<'_, T>> {
    // The clock is read only once the lock is contended.
    let mut deadline = None;
    let mut spins = 0u32;
    loop {
        match m.try_lock() {
            Ok(g) => return Some(g),
            Err(TryLockError::Poisoned(p)) => return Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => {}
        }
        if spins < 64 {
            spins += 1;
            std::thread::yield_now();
            continue;
        }
        let now = Instant::now();
        if now >= *deadline.get_or_insert(now + wait) {
            return None;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Count `count` lines of `kind` lost.
fn count_lost(count: u64, kind: Kind) {
    LOST.fetch_add(count, Ordering::Relaxed);
    if kind == Kind::Audit {
        LOST_AUDIT.fetch_add(count, Ordering::Relaxed);
    }
}

/// What kind of line is written: audit lines are counted apart, since losing them is
/// what `audit_failure` decides about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Log,
    Audit,
}

/// Write `lines` (whole lines, newline included; `count` of them) at once. `Ok` when all
/// of it was written; otherwise the lines are counted lost and the error says why.
pub fn write_line(bytes: &[u8], count: u64, kind: Kind) -> Result<(), Errno> {
    if bytes.is_empty() {
        return Ok(());
    }
    write_with(count, kind, Way::Stream, |dest, state, deadline| {
        let result = if state.torn {
            match dest.write_all(b"\n", deadline) {
                Written::All => {
                    state.torn = false;
                    dest.write_all(bytes, deadline)
                }
                other => other,
            }
        } else {
            dest.write_all(bytes, deadline)
        };
        // A line cut short (the reader stalled mid-line): the next one starts on a
        // line of its own.
        if matches!(result, Written::Part(_)) {
            state.torn = true;
        }
        result
    })
}

/// The journal's native socket (`systemd.journal-fields(7)`, the protocol of
/// `sd_journal_sendv(3)`): a datagram socket made once, before the process confines
/// itself, non-blocking, and the address every entry is sent to (not connected: a
/// journald that restarts binds a new socket there, which the next entry reaches).
static JOURNAL: OnceLock<(OwnedFd, nix::sys::socket::UnixAddr)> = OnceLock::new();

/// Where journald takes native entries.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Send audit entries to the journal's native socket at `path` from now on
/// ([`write_entries`]). Called by `log::init` when stderr is the journal; an error (no
/// journald there) leaves the lines on stderr.
pub fn install_journal(path: &Path) -> io::Result<()> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, socket};
    let fd = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    // Only a socket there is a journal (a missing one leaves the lines on stderr).
    let st = nix::sys::stat::stat(path)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a socket"));
    }
    JOURNAL
        .set((fd, UnixAddr::new(path)?))
        .map_err(|_| io::Error::new(io::ErrorKind::AlreadyExists, "journal already set"))
}

/// Whether audit entries go to the journal's native socket.
pub fn journal_installed() -> bool {
    JOURNAL.get().is_some()
}

/// Send native journal entries: `buf[ends[i-1]..ends[i]]` is entry `i`, one datagram
/// each. Bounded and counted as [`write_line`] is (the same destination state: a
/// journal that does not take entries is the log failing, for `audit_failure`).
pub fn write_entries(buf: &[u8], ends: &[usize], kind: Kind) -> Result<(), Errno> {
    let Some((journal, addr)) = JOURNAL.get() else {
        return Err(Errno::ENOTCONN);
    };
    if ends.is_empty() {
        return Ok(());
    }
    write_with(ends.len() as u64, kind, Way::Journal, |_, _, deadline| {
        let mut start = 0;
        let mut sent_some = false;
        for &end in ends {
            let entry = &buf[start.min(end)..end.min(buf.len())];
            start = end;
            loop {
                match nix::sys::socket::sendto(
                    journal.as_raw_fd(),
                    entry,
                    addr,
                    MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                ) {
                    Ok(_) => break,
                    Err(Errno::EINTR) => {}
                    Err(Errno::EAGAIN) => {
                        let left = deadline.left();
                        if left.is_zero() || !writable(journal.as_fd(), left) {
                            return part_or_nothing(sent_some, Errno::EAGAIN);
                        }
                    }
                    Err(e) => return part_or_nothing(sent_some, e),
                }
            }
            sent_some = true;
        }
        Written::All
    })
}

fn part_or_nothing(some: bool, e: Errno) -> Written {
    if some {
        Written::Part(e)
    } else {
        Written::Nothing(e)
    }
}

/// One write of `count` lines of `kind` by `op`, under the destination's lock (taken
/// within [`WAIT`] or the lines are lost), with the failure state kept and the lines
/// counted lost when `op` does not write them all.
/// Which way out a write takes (see `State::stream_bad`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    Stream,
    Journal,
}

fn write_with(
    count: u64,
    kind: Kind,
    way: Way,
    op: impl FnOnce(&Destination, &mut State, &mut Deadline) -> Written,
) -> Result<(), Errno> {
    let dest = destination();
    let Some(mut state) = lock_within(&dest.state, WAIT) else {
        // Another writer is stuck in its write: this line is lost.
        count_lost(count, kind);
        LOCKED_OUT.fetch_add(count, Ordering::Relaxed);
        if kind == Kind::Audit {
            LOCKED_OUT_AUDIT.fetch_add(count, Ordering::Relaxed);
        }
        let mut failing = lock(&dest.failing);
        if failing.is_none() {
            *failing = Some((Instant::now(), Errno::EAGAIN));
        }
        MARKED_FAILING.store(true, Ordering::Release);
        return Err(Errno::EAGAIN);
    };
    let locked_out = LOCKED_OUT.swap(0, Ordering::Relaxed);
    if locked_out > 0 {
        if state.failing.is_none() {
            state.failing = Some((Instant::now(), Errno::EAGAIN));
        }
        state.episode_lost += locked_out;
        state.episode_lost_audit += LOCKED_OUT_AUDIT.swap(0, Ordering::Relaxed);
    }
    let wait = if state.failing.is_some() {
        Duration::ZERO
    } else {
        WAIT
    };
    // The clock is read only if the destination makes us wait.
    let mut deadline = Deadline { wait, at: None };
    let result = op(dest, &mut state, &mut deadline);
    let bad = !matches!(result, Written::All);
    match way {
        Way::Stream => state.stream_bad = bad,
        Way::Journal => state.journal_bad = bad,
    }
    match result {
        // The other way out still fails: the episode goes on.
        Written::All if state.stream_bad || state.journal_bad => Ok(()),
        Written::All => {
            if let Some((since, error)) = state.failing.take() {
                state.ended = Some(Ended {
                    lasted: since.elapsed(),
                    error,
                    lost: state.episode_lost,
                    lost_audit: state.episode_lost_audit,
                });
                state.episode_lost = 0;
                state.episode_lost_audit = 0;
            }
            // Also when only a writer locked out had marked it failing.
            if MARKED_FAILING.load(Ordering::Acquire) {
                let mut failing = lock(&dest.failing);
                *failing = None;
                MARKED_FAILING.store(false, Ordering::Release);
            }
            Ok(())
        }
        Written::Part(e) | Written::Nothing(e) => {
            match &mut state.failing {
                Some((_, last)) => *last = e,
                None => state.failing = Some((Instant::now(), e)),
            }
            let mut failing = lock(&dest.failing);
            *failing = state.failing;
            MARKED_FAILING.store(true, Ordering::Release);
            drop(failing);
            state.episode_lost += count;
            if kind == Kind::Audit {
                state.episode_lost_audit += count;
            }
            count_lost(count, kind);
            Err(e)
        }
    }
}

/// How long a write may wait for room, from the first time it has to.
#[derive(Clone, Copy, Debug)]
struct Deadline {
    wait: Duration,
    at: Option<Instant>,
}

impl Deadline {
    /// What is left of the wait (zero once it has passed).
    fn left(&mut self) -> Duration {
        let now = Instant::now();
        let at = *self.at.get_or_insert(now + self.wait);
        at.saturating_duration_since(now)
    }
}

/// How a write ended.
#[derive(Clone, Copy, Debug)]
enum Written {
    All,
    /// Some bytes went out, then the error (or the deadline: `EAGAIN`).
    Part(Errno),
    Nothing(Errno),
}

impl Destination {
    /// Write all of `bytes`, waiting for room until `deadline` at most.
    fn write_all(&self, mut bytes: &[u8], deadline: &mut Deadline) -> Written {
        let stderr = io::stderr();
        let fd = match &self.route {
            Route::Own(fd) => fd.as_fd(),
            Route::File(fd) => fd.as_fd(),
            // A closed fd 2 only makes the writes fail (EBADF).
            Route::Socket | Route::Stderr => stderr.as_fd(),
        };
        let mut wrote_some = false;
        let fail = |wrote: bool, e| {
            if wrote {
                Written::Part(e)
            } else {
                Written::Nothing(e)
            }
        };
        while !bytes.is_empty() {
            let n = match self.route {
                Route::Socket => nix::sys::socket::send(
                    fd.as_raw_fd(),
                    bytes,
                    MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                ),
                Route::Own(_) | Route::Stderr | Route::File(_) => nix::unistd::write(fd, bytes),
            };
            match n {
                Ok(0) => return fail(wrote_some, Errno::EIO),
                Ok(n) => {
                    wrote_some = true;
                    bytes = &bytes[n.min(bytes.len())..];
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    let left = deadline.left();
                    if left.is_zero() || !writable(fd, left) {
                        return fail(wrote_some, Errno::EAGAIN);
                    }
                }
                Err(e) => return fail(wrote_some, e),
            }
        }
        Written::All
    }
}

/// Wait up to `left` for `fd` to take more bytes.
fn writable(fd: BorrowedFd<'_>, left: Duration) -> bool {
    let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
    matches!(nix::poll::poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0)
}

/// The state of the log destination, for `STATUS=` and the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// Since when writing has failed, and the last error; `None` while it works.
    pub failing: Option<(Instant, Errno)>,
    /// Lines lost since the process started, and how many of them were audit lines.
    pub lost: u64,
    pub lost_audit: u64,
}

/// Now.
pub fn health() -> Health {
    let failing = DESTINATION.get().and_then(|d| *lock(&d.failing));
    Health {
        failing,
        lost: LOST.load(Ordering::Relaxed),
        lost_audit: LOST_AUDIT.load(Ordering::Relaxed),
    }
}

/// A change of the destination's state since the last call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Writing started failing with this error.
    Failing { error: Errno },
    /// Writing works again: it failed for `lasted` (last with `error`), losing `lost`
    /// lines, `lost_audit` of them audit lines.
    Resumed {
        lasted: Duration,
        error: Errno,
        lost: u64,
        lost_audit: u64,
    },
}

/// What changed since the last call: for the one reporter of a process (a server's
/// timer), which logs it and updates `STATUS=`. An episode that began and ended between
/// two calls is reported as resumed. Never waits for a writer: a change seen while one
/// writes is reported at the next call.
pub fn take_change() -> Option<Change> {
    let dest = DESTINATION.get()?;
    let mut state = match dest.state.try_lock() {
        Ok(g) => g,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        Err(TryLockError::WouldBlock) => return None,
    };
    if let Some(e) = state.ended.take() {
        state.reported_failing = false;
        return Some(Change::Resumed {
            lasted: e.lasted,
            error: e.error,
            lost: e.lost,
            lost_audit: e.lost_audit,
        });
    }
    match state.failing {
        Some((_, error)) if !state.reported_failing => {
            state.reported_failing = true;
            Some(Change::Failing { error })
        }
        _ => None,
    }
}

/// The subscriber's writer: each `write` the fmt layer makes is one whole line, which
/// goes to [`write_line`]; a failure is counted there and never reported back (the fmt
/// layer would report it with a second write to the same stderr).
#[derive(Clone, Copy, Debug, Default)]
pub struct Sink;

impl io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let lines = buf.iter().filter(|&&b| b == b'\n').count().max(1) as u64;
        let _ = write_line(buf, lines, Kind::Log);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Sink {
    type Writer = Sink;

    fn make_writer(&'a self) -> Sink {
        Sink
    }
}

/// Write `line` and a newline, as `eprintln!` would, but never panicking: for messages
/// written before, or outside, the subscriber (a fatal error on the way out).
pub fn eprint_line(line: &str) {
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    let _ = write_line(&bytes, 1, Kind::Log);
}

/// A message the person who ran the command must see, such as why a run could not
/// start: to the log destination as [`eprint_line`] does, and to stderr as well when the
/// log goes to a `--log-file`, which nobody may be reading.
pub fn eprint_user_line(line: &str) {
    eprint_line(line);
    if matches!(destination().route, Route::File(_)) {
        print_for_user(line, USER_WAIT);
    }
}

/// How long a line for the person who ran the command may wait for stderr to take it:
/// far longer than a log line's wait, since a program sharing that stderr may have left
/// it full (or non-blocking) on purpose, and this line is what the operator must not
/// miss; bounded all the same, so a reader that never reads cannot hold the exit up.
pub const USER_WAIT: Duration = Duration::from_secs(10);

/// Writes `line` and a newline to stderr itself (not the log destination), waiting for
/// room up to `wait`. Each `write(2)` is at most a pipe's atomic size and made only once
/// `poll` says there is room for it, so it cannot block whether or not stderr is
/// non-blocking.
pub fn print_for_user(line: &str, wait: Duration) {
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    let stderr = std::io::stderr();
    let fd = stderr.as_fd();
    let until = Instant::now() + wait;
    let mut at = 0;
    while at < bytes.len() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
        match nix::poll::poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_)
                if fds[0]
                    .revents()
                    .is_some_and(|r| r.contains(PollFlags::POLLOUT)) => {}
            _ => return,
        }
        let end = bytes.len().min(at + libc::PIPE_BUF);
        match nix::unistd::write(fd, &bytes[at..end]) {
            Ok(n) => at += n,
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::{Deadline, lock_within};
    use std::sync::{Arc, Barrier, Mutex};
    use std::time::{Duration, Instant};

    /// A lock another thread holds is given up after the wait, not waited for; a free
    /// one, or one released in time, is taken.
    #[test]
    fn the_destination_is_taken_within_the_wait_or_not_at_all() {
        let m = Arc::new(Mutex::new(0u32));
        assert!(lock_within(&m, Duration::from_millis(1)).is_some());
        let (held, release) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
        let holder = {
            let (m, held, release) = (Arc::clone(&m), Arc::clone(&held), Arc::clone(&release));
            std::thread::spawn(move || {
                let _g = m.lock().unwrap();
                held.wait();
                release.wait();
            })
        };
        held.wait();
        let start = Instant::now();
        assert!(lock_within(&m, Duration::from_millis(30)).is_none());
        // Gave up no earlier than asked (the upper side is the machine's business).
        assert!(start.elapsed() >= Duration::from_millis(30));
        release.wait();
        holder.join().unwrap();
        assert!(lock_within(&m, Duration::from_millis(1)).is_some());
    }

    /// The wait starts when it is first asked about, and runs out.
    #[test]
    fn a_deadline_counts_from_its_first_use() {
        let mut d = Deadline {
            wait: Duration::from_millis(20),
            at: None,
        };
        std::thread::sleep(Duration::from_millis(30));
        assert!(!d.left().is_zero());
        std::thread::sleep(Duration::from_millis(30));
        assert!(d.left().is_zero());
    }
}
