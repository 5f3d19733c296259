"""The connection to the broker: greet it, ask for files, receive descriptors."""

from __future__ import annotations

import errno
import io
import os
import stat as stat_module
import select
import socket as _socket
import struct
import threading
import time
from array import array
from typing import IO, Any, Iterator, List, Optional, Sequence, Tuple, Union

from . import _wire
from ._wire import (
    MAX_FDS_PER_REPLY,
    MAX_MESSAGE,
    MAX_PATH,
    Access,
    Accepted,
    Connect,
    Connected,
    FileKind,
    FileMeta,
    Kind,
    ListEntry,
    Listing,
    ListReply,
    List_,
    Open,
    OpenMany,
    OpenManyReply,
    OpenReply,
    ProtocolError,
    Refused,
    Reply,
    Request,
    Stat,
    StatMeta,
    StatReply,
    WireError,
)

__version__ = "0.1.0"

#: Where ``fdbroker serve`` listens unless the policy or the caller says otherwise.
DEFAULT_SOCKET = "/run/fdbroker/fdbroker.sock"
#: An inherited, connected socket, as ``fdbroker run`` passes it.
ENV_FD = "FDBROKER_FD"
#: The broker's socket path.
ENV_SOCKET = "FDBROKER_SOCKET"

PathArg = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]


# The control buffer for the most descriptors a reply may carry: one more shows up as
# MSG_CTRUNC.
_CONTROL_LEN = _socket.CMSG_SPACE(MAX_FDS_PER_REPLY * array("i").itemsize)


def _broker_error(code: int, reason: str, path: Optional[PathArg] = None) -> OSError:
    """The OSError subclass Python gives this errno (PermissionError for EACCES,
    FileNotFoundError for ENOENT, ...) carrying the broker's reason and the path."""
    if path is None:
        return OSError(code, reason)
    return OSError(code, reason, os.fspath(path))


def _close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _access_for(flags: int) -> Tuple[Access, int]:
    """The ``open(2)`` flags this client takes and what they become on the wire
    (the same rules as the C library's ``fdb_open``)."""
    create = os.O_CREAT | os.O_EXCL
    extra_bits = os.O_TRUNC | os.O_APPEND
    ignored = os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK | getattr(os, "O_LARGEFILE", 0)
    known = os.O_ACCMODE | os.O_DIRECTORY | create | extra_bits | ignored
    if flags & ~known:
        raise OSError(
            errno.EINVAL,
            f"open flags {flags & ~known:#o} are not supported: the broker takes O_RDONLY, "
            "O_WRONLY, O_RDWR, O_DIRECTORY, O_CREAT|O_EXCL, O_TRUNC and O_APPEND",
        )
    mode = flags & os.O_ACCMODE
    extra = flags & extra_bits
    if flags & os.O_DIRECTORY:
        if mode != os.O_RDONLY or flags & create:
            raise OSError(errno.EINVAL, "O_DIRECTORY goes with O_RDONLY alone")
        return Access.DIRECTORY, extra
    if flags & create == create:
        if mode not in (os.O_RDONLY, os.O_WRONLY):
            raise OSError(
                errno.EINVAL, "the broker creates files write-only: use O_WRONLY|O_CREAT|O_EXCL"
            )
        return Access.CREATE, extra
    if flags & os.O_CREAT:
        raise OSError(
            errno.EINVAL,
            "O_CREAT needs O_EXCL: the broker never opens an existing file for creation",
        )
    if flags & os.O_EXCL:
        raise OSError(errno.EINVAL, "O_EXCL needs O_CREAT")
    if mode == os.O_RDONLY:
        return Access.READ, extra
    if mode == os.O_WRONLY:
        return Access.WRITE, extra
    if mode == os.O_RDWR:
        return Access.READ_WRITE, extra
    raise OSError(errno.EINVAL, f"access mode {mode:#o} is not O_RDONLY, O_WRONLY or O_RDWR")


# mode string of open() -> (open(2) flags, mode for io.open on the descriptor)
def _flags_for_mode(mode: str) -> Tuple[int, str]:
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a str, not {type(mode).__name__}")
    chars = set(mode)
    if len(chars) != len(mode) or chars - set("rwaxbt+") or ("b" in chars and "t" in chars):
        raise ValueError(f"invalid mode: {mode!r}")
    base = chars & set("rwax")
    if len(base) != 1:
        raise ValueError(f"invalid mode: {mode!r}")
    (kind,) = base
    plus = "+" in chars
    if kind == "r":
        flags = os.O_RDWR if plus else os.O_RDONLY
    elif kind == "w":
        # Unlike built-in open(), the file must exist: the broker creates only with "x".
        flags = (os.O_RDWR if plus else os.O_WRONLY) | os.O_TRUNC
    elif kind == "a":
        flags = (os.O_RDWR if plus else os.O_WRONLY) | os.O_APPEND
    else:
        if plus:
            raise ValueError("mode 'x+' is not supported: the broker creates files write-only")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    return flags, mode


def _as_file(fd: int, path: PathArg, mode: str, buffering: int, encoding: Optional[str],
             errors: Optional[str], newline: Optional[str]) -> IO[Any]:
    try:
        f = io.open(fd, mode, buffering, encoding, errors, newline, closefd=True)
    except BaseException:
        os.close(fd)
        raise
    # Name the file by its path, as built-in open() does, rather than by its number.
    raw = getattr(f, "buffer", f)
    raw = getattr(raw, "raw", raw)
    try:
        raw.name = os.fspath(path)
    except (AttributeError, TypeError):
        pass
    return f


class Client:
    """A connection to the fdbroker broker.

    ``socket`` is the broker's socket path, a connected ``AF_UNIX``
    ``SOCK_SEQPACKET`` ``socket.socket`` (the client takes it over), or ``None`` for
    the usual set-up: the inherited connection in ``FDBROKER_FD``, else
    ``FDBROKER_SOCKET``, else ``/run/fdbroker/fdbroker.sock``.

    An inherited connection (``fdbroker run`` passes one to its worker) may be shared
    by every process of the worker's tree, so it is never used for requests directly:
    each client asks the broker over it for a connection of its own, with the same
    identity, and greets that. Any number of clients in any number of processes of one
    ``fdbroker run`` may do so. The inherited descriptor is left as it was (open, and
    inheritable if it was) for the process's own children.

    ``timeout`` bounds each wait for the broker, in seconds, connecting included:
    connecting and the greeting together take at most ``timeout`` (a stopped broker
    whose listen queue is full is ``TimeoutError``, not a hang), then each request at
    most ``timeout``. A connection that timed out is unusable afterwards.

    A client made from a socket path (given, ``FDBROKER_SOCKET`` or the default)
    reconnects once when it finds the broker gone (its server restarted or replaced)
    and retries the request, then carries on; ``fileno()`` stays the same. A request
    that may have been carried out (the broker went away after it was sent) is retried
    only if repeating it changes nothing: an open for create is not, and raises
    ``ConnectionAbortedError`` on the new connection. If reconnecting fails, the
    client is unusable (``ConnectionAbortedError`` saying why, on every later call). A
    client over a socket object or the inherited connection cannot reconnect.

    One client may be shared by threads. Failures are ``OSError`` subclasses with the
    broker's errno, its reason as ``strerror`` and the path as ``filename``
    (``PermissionError``, ``FileNotFoundError``, ...); a lost connection is
    ``ConnectionAbortedError`` and a broker that breaks the protocol
    :class:`fdbroker.ProtocolError`, on that call and every later one.
    """

    def __init__(self, socket: Union[PathArg, _socket.socket, None] = None, *,
                 timeout: Optional[float] = None) -> None:
        self._sock: Optional[_socket.socket] = None
        self._lock = threading.Lock()
        self._next_id = 1
        self._broken: Optional[OSError] = None
        self._accepted = Accepted("", 1)
        self._timeout = timeout
        self._reconnect_to = _reconnect_target(socket)
        deadline = None if timeout is None else time.monotonic() + timeout
        sock = _connect(socket, timeout)
        try:
            sock.settimeout(_left(deadline, timeout))
            self._sock = sock
            try:
                self._accepted = self._greet()
            except _socket.timeout:
                raise TimeoutError(
                    errno.ETIMEDOUT,
                    "the broker did not answer the greeting in time (is it wedged or stopped?)",
                ) from None
            sock.settimeout(timeout)
        except BaseException:
            self._sock = None
            sock.close()
            raise

    # ---- connection ----

    @property
    def client_name(self) -> str:
        """The policy client the broker matched this connection to."""
        return self._accepted.client

    @property
    def max_batch(self) -> int:
        """Most paths the broker takes in one request (``open_many`` splits for you)."""
        return min(max(self._accepted.max_batch, 1), MAX_FDS_PER_REPLY)

    def fileno(self) -> int:
        return self._live().fileno()

    def close(self) -> None:
        """Close the connection. Files opened through it stay open: they are yours."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    @property
    def closed(self) -> bool:
        return self._sock is None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self._sock is None else f"client={self._accepted.client!r}"
        return f"<fdbroker.Client {state}>"

    # ---- opening ----

    def open_fd(self, path: PathArg, flags: int = os.O_RDONLY) -> int:
        """Open ``path`` through the broker like ``os.open``; returns a raw,
        non-inheritable descriptor that is yours to close.

        ``flags``: ``os.O_RDONLY``, ``O_WRONLY``, ``O_RDWR``, ``O_RDONLY | O_DIRECTORY``
        or ``O_WRONLY | O_CREAT | O_EXCL``, with ``O_TRUNC``/``O_APPEND`` for writes;
        ``O_CLOEXEC`` and ``O_NOCTTY`` always apply; ``O_NONBLOCK`` is kept only if
        given; anything else is ``EINVAL``.
        """
        access, extra = _access_for(flags)
        raw = _path_bytes(path)
        if len(raw) > MAX_PATH:
            raise _broker_error(errno.ENAMETOOLONG, f"path is longer than {MAX_PATH} bytes", path)
        body, fds = self._call(Open(raw, access, extra))
        if isinstance(body, OpenReply):
            if isinstance(body.outcome, WireError):
                raise _broker_error(body.outcome.errno, body.outcome.message, path)
            return _hand_over(fds[0], flags)
        if isinstance(body, Refused):
            raise _broker_error(body.error.errno, body.error.message, path)
        _close_all(fds)
        raise self._fail(ProtocolError("reply of the wrong type for an open"))

    def open(self, path: PathArg, mode: str = "rb", buffering: int = -1,
             encoding: Optional[str] = None, errors: Optional[str] = None,
             newline: Optional[str] = None) -> IO[Any]:
        """Open ``path`` through the broker as a file object, like built-in ``open``.

        Modes: ``"rb"``/``"r"`` (read), ``"wb"``/``"w"`` (truncate an **existing**
        file: only ``"x"`` creates), ``"ab"``/``"a"`` (append), ``"xb"``/``"x"``
        (create a new file), and ``"r+"``, ``"w+"``, ``"a+"`` (read-write).
        """
        flags, pymode = _flags_for_mode(mode)
        fd = self.open_fd(path, flags)
        return _as_file(fd, path, pymode, buffering, encoding, errors, newline)

    def open_many_fd(self, paths: Sequence[PathArg], flags: int = os.O_RDONLY, *,
                     errors: str = "raise") -> List[Any]:
        """Open every path with the same ``flags`` (as for :meth:`open_fd`) in as few
        round trips as the broker allows.

        ``errors="raise"``: a list of descriptors, or the first failure raised (every
        descriptor already received is closed first). ``errors="return"``: one entry per
        path, in order, a descriptor or the ``OSError`` for that path.
        """
        if errors not in ("raise", "return"):
            raise ValueError("errors must be 'raise' or 'return'")
        access, extra = _access_for(flags)
        raws = [_path_bytes(p) for p in paths]
        results: List[Any] = [None] * len(raws)
        pending = []
        for i, raw in enumerate(raws):
            if len(raw) > MAX_PATH:
                results[i] = _broker_error(
                    errno.ENAMETOOLONG, f"path is longer than {MAX_PATH} bytes", paths[i]
                )
            else:
                pending.append(i)
        try:
            for start, end in _wire.split_batches([raws[i] for i in pending], self.max_batch):
                chunk = pending[start:end]
                body, fds = self._call(OpenMany(tuple(raws[i] for i in chunk), access, extra))
                if isinstance(body, Refused):
                    for i in chunk:
                        results[i] = _broker_error(body.error.errno, body.error.message, paths[i])
                elif isinstance(body, OpenManyReply) and len(body.outcomes) == len(chunk):
                    it = iter(fds)
                    for i, outcome in zip(chunk, body.outcomes):
                        if isinstance(outcome, FileMeta):
                            results[i] = _hand_over(next(it), flags)
                        else:
                            results[i] = _broker_error(outcome.errno, outcome.message, paths[i])
                else:
                    _close_all(fds)
                    raise self._fail(ProtocolError("batch reply does not match the request"))
                if errors == "raise" and any(isinstance(r, OSError) for r in results):
                    break
        except BaseException:
            _close_all([r for r in results if isinstance(r, int)])
            raise
        if errors == "raise":
            failure = next((r for r in results if isinstance(r, OSError)), None)
            if failure is not None:
                _close_all([r for r in results if isinstance(r, int)])
                raise failure
        return results

    def open_many(self, paths: Sequence[PathArg], mode: str = "rb", *,
                  errors: str = "raise", buffering: int = -1,
                  encoding: Optional[str] = None, newline: Optional[str] = None) -> List[Any]:
        """Open every path in ``mode`` (as for :meth:`open`) in as few round trips as
        the broker allows: a list of file objects, or with ``errors="return"`` file
        objects and ``OSError`` instances, in order."""
        flags, pymode = _flags_for_mode(mode)
        results = self.open_many_fd(paths, flags, errors=errors)
        out: List[Any] = []
        try:
            for i, r in enumerate(results):
                if isinstance(r, int):
                    results[i] = None
                    out.append(_as_file(r, paths[i], pymode, buffering, encoding, None, newline))
                else:
                    out.append(r)
        except BaseException:
            _close_all([r for r in results if isinstance(r, int)])
            for f in out:
                if not isinstance(f, OSError):
                    f.close()
            raise
        return out

    def stat(self, path: PathArg) -> os.stat_result:
        """The metadata of ``path``, like ``os.stat``, answered by the broker under its
        policy without opening anything for you.

        Allowed where the policy grants ``read`` on the path (or ``directory``, for a
        directory); resolved the way an open of the path would be, so it follows
        symlinks only where the rule does. Outside the policy it fails with the same
        ``PermissionError`` an open gets, whether the path exists or not. Holding a
        descriptor already, ``os.fstat`` it instead.
        """
        raw = _path_bytes(path)
        if len(raw) > MAX_PATH:
            raise _broker_error(errno.ENAMETOOLONG, f"path is longer than {MAX_PATH} bytes", path)
        body, fds = self._call(Stat(raw))
        if isinstance(body, StatReply):
            if isinstance(body.result, WireError):
                raise _broker_error(body.result.errno, body.result.message, path)
            return _stat_result(body.result)
        if isinstance(body, Refused):
            raise _broker_error(body.error.errno, body.error.message, path)
        _close_all(fds)
        raise self._fail(ProtocolError("reply of the wrong type for a stat"))

    def scandir(self, path: PathArg) -> "ScandirIterator":
        """List a directory through the broker, like ``os.scandir``: the broker reads
        it (where the policy grants ``directory``) and leaves out every name the policy
        hides (a deny carve-out, a name no rule covers), a page at a time. Entries'
        ``path`` joins ``path`` and the name, so ``client.open(entry.path)`` works."""
        raw = _path_bytes(path)
        if len(raw) > MAX_PATH:
            raise _broker_error(errno.ENAMETOOLONG, f"path is longer than {MAX_PATH} bytes", path)
        entries: List[ListEntry] = []
        start = 0
        while True:
            body, fds = self._call(List_(raw, start))
            if isinstance(body, ListReply) and isinstance(body.result, Listing):
                page = body.result
                # ``next`` is the directory's position after this page: 0 at the end,
                # else past ``start`` (a page may be short, even empty, when the broker
                # read its most entries for one request).
                moved = page.next == 0 or page.next > start
                if not moved:
                    raise self._fail(ProtocolError("a listing page that does not move forward"))
                entries.extend(page.entries)
                if page.next == 0:
                    # In byte order of the names (the broker pages in the directory's),
                    # each once: where positions are name hashes (ext4), a name whose
                    # hash another shares may come again on the next page.
                    entries.sort(key=lambda e: e.name)
                    entries = [e for i, e in enumerate(entries)
                               if i == 0 or e.name != entries[i - 1].name]
                    return ScandirIterator(self, path, entries)
                start = page.next
                continue
            if isinstance(body, ListReply) and isinstance(body.result, WireError):
                raise _broker_error(body.result.errno, body.result.message, path)
            if isinstance(body, Refused):
                raise _broker_error(body.error.errno, body.error.message, path)
            _close_all(fds)
            raise self._fail(ProtocolError("reply of the wrong type for a listing"))

    # ---- the exchange ----

    def _live(self) -> _socket.socket:
        if self._broken is not None:
            raise _again(self._broken)
        sock = self._sock
        if sock is None:
            raise ValueError("the client is closed")
        return sock

    def _fail(self, e: OSError) -> OSError:
        """Mark the connection unusable for every later call, and shut it down so that
        nothing more arrives on it."""
        if self._broken is None:
            self._broken = e
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(_socket.SHUT_RDWR)
            except OSError:
                pass
        return e

    def _reconnect(self) -> None:
        """Connect again to the socket path and greet, on the same descriptor number
        (``dup2`` over the old one); a failure makes the client unusable."""
        where = self._reconnect_to
        sock = self._sock
        if where is None or sock is None:
            raise ValueError("the client cannot reconnect")
        try:
            fresh = _connect(where, self._timeout)
            try:
                fresh.settimeout(self._timeout)
                os.dup2(fresh.fileno(), sock.fileno(), inheritable=False)
            finally:
                fresh.close()
            self._accepted = self._greet()
        except OSError as e:
            shown = os.fsdecode(where)
            raise self._fail(ConnectionAbortedError(
                errno.ECONNABORTED,
                f"the broker closed the connection, and reconnecting to {shown} failed: "
                f"{e.strerror or e}",
            )) from None

    def _send(self, sock: _socket.socket, frame: bytes) -> None:
        _send_message(sock, frame)

    def _recv(self, sock: _socket.socket) -> Tuple[bytes, List[int]]:
        return _recv_message(sock)

    def _greet(self) -> Accepted:
        sock = self._live()
        hello = _wire.encode(
            Kind.HELLO, _wire.Hello(_wire.PROTOCOL_VERSION, f"fdbroker-python {__version__}")
        )
        # A broker that refuses this peer answers at accept time and closes, perhaps
        # before the hello goes out: the send then fails with EPIPE, but the refusal,
        # which says why, is still queued.
        send_error: Optional[OSError] = None
        try:
            self._send(sock, hello)
        except OSError as e:
            send_error = e
        try:
            try:
                data, fds = self._recv(sock)
            except ConnectionResetError:
                # The broker closed with our hello unread: the kernel reports
                # ECONNRESET once, then hands over what was queued.
                data, fds = self._recv(sock)
        except (ConnectionAbortedError, ConnectionResetError):
            if send_error is not None:
                raise send_error from None
            raise
        if fds:
            _close_all(fds)
            raise ProtocolError("the broker's welcome carried descriptors; they were closed")
        welcome = _wire.decode(Kind.WELCOME, data)
        if isinstance(welcome, Refused):
            raise _broker_error(
                welcome.error.errno,
                f"the broker refused this connection: {welcome.error.message}",
            )
        assert isinstance(welcome, Accepted)
        return welcome

    def _call(self, op: Union[Open, OpenMany, Stat]) -> Tuple[Any, List[int]]:
        """Send one request and receive its reply. One exchange at a time per
        connection: the lock makes a shared client safe for threads."""
        with self._lock:
            retried = False
            while True:
                sock = self._live()
                rid = self._next_id
                self._next_id = rid + 1 if rid < 2**64 - 1 else 1
                frame = _wire.encode(Kind.REQUEST, Request(rid, op))
                sent = False
                try:
                    self._send(sock, frame)
                    sent = True
                    data, fds = self._recv(sock)
                    break
                except ProtocolError as e:
                    raise self._fail(e) from None
                except _socket.timeout:
                    raise self._fail(
                        TimeoutError(errno.ETIMEDOUT, "timed out waiting for the broker")
                    ) from None
                except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                    if retried or self._reconnect_to is None:
                        raise self._fail(ConnectionAbortedError(
                            errno.ECONNABORTED, "the broker closed the connection"
                        )) from None
                retried = True
                self._reconnect()
                if sent and not _idempotent(op):
                    raise ConnectionAbortedError(
                        errno.ECONNABORTED,
                        "the broker went away before answering a create, which may or may "
                        "not have happened; reconnected, but not retried",
                    )
            try:
                reply = _wire.decode(Kind.REPLY, data)
                assert isinstance(reply, Reply)
                if reply.id != rid:
                    raise ProtocolError(f"reply for unknown request id {reply.id}")
                expected = reply.descriptor_count()
                if expected != len(fds):
                    raise ProtocolError(
                        f"reply carried {len(fds)} descriptors but its body accounts for "
                        f"{expected}; all were closed"
                    )
            except ProtocolError as e:
                _close_all(fds)
                raise self._fail(e) from None
            return reply.body, fds


def _send_message(sock: _socket.socket, frame: bytes) -> None:
    n = sock.send(frame, _socket.MSG_NOSIGNAL)
    if n != len(frame):
        raise ProtocolError(f"sent {n} of {len(frame)} bytes of a message")


def _recv_message(sock: _socket.socket, flags: int = 0) -> Tuple[bytes, List[int]]:
    """Receive one message and its descriptors, close-on-exec from the start.

    Every descriptor that arrived is owned (and closed on any failure) before
    anything about the message is trusted. ``socket.recv_fds`` would ignore the
    flags, so this calls ``recvmsg`` itself.
    """
    while True:
        try:
            data, ancdata, msg_flags, _ = sock.recvmsg(
                MAX_MESSAGE, _CONTROL_LEN, _socket.MSG_CMSG_CLOEXEC | flags
            )
            break
        except InterruptedError:
            continue
    fds: List[int] = []
    foreign = False
    for level, kind, cdata in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            whole = len(cdata) - len(cdata) % array("i").itemsize
            fds.extend(array("i", cdata[:whole]))
        else:
            foreign = True
    try:
        if msg_flags & _socket.MSG_CTRUNC or foreign or len(fds) > MAX_FDS_PER_REPLY:
            raise ProtocolError(
                "ancillary data was truncated (more descriptors than allowed); "
                "every descriptor that arrived was closed"
            )
        if msg_flags & _socket.MSG_TRUNC:
            raise ProtocolError(
                "message was truncated by the kernel (larger than the receive buffer)"
            )
        if not data:
            raise ConnectionAbortedError(
                errno.ECONNABORTED, "the broker closed the connection"
            )
    except BaseException:
        _close_all(fds)
        raise
    return data, fds


def _stat_result(m: StatMeta) -> os.stat_result:
    """A broker's stat answer as the ``os.stat_result`` ``os.stat`` would give."""
    f = m.file
    ns = {
        "st_atime_ns": m.atime_sec * 10**9 + m.atime_nsec,
        "st_mtime_ns": f.mtime_sec * 10**9 + f.mtime_nsec,
        "st_ctime_ns": m.ctime_sec * 10**9 + m.ctime_nsec,
    }
    extra: dict = {name[:-3]: v / 1e9 for name, v in ns.items()}
    extra.update(ns)
    extra.update(st_blksize=m.blksize, st_blocks=m.blocks, st_rdev=m.rdev)
    return os.stat_result(
        (f.mode, f.ino, f.dev, f.nlink, m.uid, m.gid, f.size,
         m.atime_sec, f.mtime_sec, m.ctime_sec),
        extra,
    )


def _again(e: OSError) -> OSError:
    """The error a connection failed with, again, for a later call."""
    why = f"broker connection is unusable: {e.strerror}"
    if isinstance(e, ProtocolError):
        return ProtocolError(why, e.errno)
    return type(e)(e.errno, why)


def _hand_over(fd: int, flags: int) -> int:
    """The broker opens with O_NONBLOCK so that a FIFO cannot block it; like os.open,
    the caller gets it only if it asked."""
    if not flags & os.O_NONBLOCK:
        try:
            os.set_blocking(fd, True)
        except OSError:
            pass
    return fd


def _path_bytes(path: PathArg) -> bytes:
    return os.fsencode(path)


def _reconnect_target(where: Union[PathArg, _socket.socket, None]) -> Optional[PathArg]:
    """The socket path a client made from ``where`` reconnects to, or ``None`` when it
    cannot (a socket object, or the inherited connection)."""
    if isinstance(where, _socket.socket):
        return None
    if where is None:
        if os.environ.get(ENV_FD) is not None:
            return None
        return os.environ.get(ENV_SOCKET) or DEFAULT_SOCKET
    return os.fspath(where)


def _idempotent(op: Union[Open, OpenMany, Stat]) -> bool:
    """Whether sending ``op`` twice does what sending it once does (not a create)."""
    if isinstance(op, (Open, OpenMany)):
        return op.access != Access.CREATE
    return True


def _connect(where: Union[PathArg, _socket.socket, None],
             timeout: Optional[float]) -> _socket.socket:
    if isinstance(where, _socket.socket):
        return _checked(where)
    if where is None:
        raw = os.environ.get(ENV_FD)
        if raw is not None:
            return _connection_through(_inherited(raw), timeout)
        where = os.environ.get(ENV_SOCKET) or DEFAULT_SOCKET
    path = os.fspath(where)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    shown = os.fsdecode(path)
    try:
        if timeout is not None:
            # connect() to a listener whose queue is full waits for room, for ever.
            # settimeout() cannot bound that: it makes connect() non-blocking, and
            # an AF_UNIX connect then fails at once with EAGAIN. A send timeout can:
            # Linux's AF_UNIX connect waits at most SO_SNDTIMEO, then fails EAGAIN.
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDTIMEO, _timeval(timeout))
        sock.connect(path)
    except BlockingIOError:
        sock.close()
        raise TimeoutError(
            errno.ETIMEDOUT,
            f"cannot connect to the broker at {shown}: its listen queue stayed full "
            f"for {timeout}s (is it wedged or stopped?)",
            path) from None
    except OSError as e:
        sock.close()
        raise type(e)(e.errno, f"cannot connect to the broker at {shown}: {e.strerror}",
                      path) from None
    if timeout is not None:
        # Back to no send timeout: settimeout() bounds every later wait.
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDTIMEO, struct.pack("@ll", 0, 0))
    return sock


def _timeval(seconds: float) -> bytes:
    """A ``struct timeval`` for ``SO_SNDTIMEO``. Zero there means "no timeout", so
    nothing rounds down to it: a ``seconds`` of 0 or less (Python's non-blocking) is one
    microsecond."""
    if seconds <= 0:
        return struct.pack("@ll", 0, 1)
    whole = min(int(seconds), 2**31 - 1)
    micros = int((seconds - int(seconds)) * 1_000_000)
    if whole == 0 and micros == 0:
        micros = 1
    return struct.pack("@ll", whole, micros)


def _left(deadline: Optional[float], timeout: Optional[float]) -> Optional[float]:
    """The time left until ``deadline`` as a socket timeout (``None``: no bound)."""
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(errno.ETIMEDOUT, "the broker did not answer in time")
    return left


def _checked(sock: _socket.socket) -> _socket.socket:
    if sock.family != _socket.AF_UNIX or sock.type != _socket.SOCK_SEQPACKET:
        raise OSError(errno.EPROTOTYPE, "the broker's socket must be AF_UNIX SOCK_SEQPACKET")
    sock.set_inheritable(False)
    return sock


class _Inherited:
    """The inherited connection, adopted once per process and kept for its lifetime:
    every client asks for a connection of its own through it."""

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        # One request at a time from this process; other processes may be asking too.
        self.lock = threading.Lock()


_inherited_lock = threading.Lock()
_inherited_conn: Union[_Inherited, OSError, None] = None


def _reset_after_fork() -> None:
    # A lock another thread held at the fork stays held in the child forever.
    global _inherited_lock
    _inherited_lock = threading.Lock()
    if isinstance(_inherited_conn, _Inherited):
        _inherited_conn.lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


def _inherited(raw: str) -> _Inherited:
    global _inherited_conn
    with _inherited_lock:
        if _inherited_conn is None:
            try:
                _inherited_conn = _Inherited(_adopt_env_fd(raw))
            except OSError as e:
                _inherited_conn = e
        found = _inherited_conn
    if isinstance(found, OSError):
        raise type(found)(found.errno, found.strerror)
    return found


def _adopt_env_fd(raw: str) -> _socket.socket:
    """Wrap the inherited descriptor without changing it: its flags and options are
    shared with every other process that holds it."""
    try:
        n = int(raw.strip())
    except ValueError:
        raise OSError(errno.EBADF, f"{ENV_FD}={raw!r} is not a descriptor number") from None
    if n < 0:
        raise OSError(errno.EBADF, f"{ENV_FD}={n} is negative")
    try:
        # socket() may make the descriptor non-blocking (with a default timeout set);
        # that flag belongs to the shared file, so put it back.
        blocking = os.get_blocking(n)
        sock = _socket.socket(fileno=n)
        if os.get_blocking(n) != blocking:
            os.set_blocking(n, blocking)
    except OSError as e:
        raise OSError(e.errno, f"{ENV_FD}={n} is not a usable socket: {e.strerror}") from None
    if sock.family != _socket.AF_UNIX or sock.type != _socket.SOCK_SEQPACKET:
        sock.detach()
        raise OSError(errno.EPROTOTYPE, f"{ENV_FD}={n} is not an AF_UNIX SOCK_SEQPACKET socket")
    return sock


def _inherited_gone() -> OSError:
    return ConnectionAbortedError(
        errno.ECONNABORTED,
        f"the inherited broker connection ({ENV_FD}) is closed: the broker that started "
        "this worker has gone",
    )


def _wait_readable(sock: _socket.socket, deadline: Optional[float]) -> None:
    """Wait with poll, not a receive timeout: the socket's options are shared."""
    p = select.poll()
    p.register(sock.fileno(), select.POLLIN)
    while True:
        if deadline is None:
            ms = None
        else:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(errno.ETIMEDOUT, "timed out waiting for the broker")
            ms = max(1, int(left * 1000))
        if p.poll(ms):
            return


def _connection_through(shared: _Inherited, timeout: Optional[float]) -> _socket.socket:
    """Ask over the shared, inherited connection for a connection of our own.

    One message each way, without a hello (the broker takes ``Connect`` before it), and
    every reply to it is alike (a new connection with the worker's identity), so
    processes sharing the socket may each take any of them.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    frame = _wire.encode(Kind.REQUEST, Request(0, Connect()))
    with shared.lock:
        sock = shared.sock
        try:
            _send_message(sock, frame)
        except (BrokenPipeError, ConnectionResetError):
            raise _inherited_gone() from None
        while True:
            _wait_readable(sock, deadline)
            try:
                data, fds = _recv_message(sock, _socket.MSG_DONTWAIT)
            except BlockingIOError:
                # Another process took the reply that was there; ours is still coming.
                continue
            except (ConnectionAbortedError, ConnectionResetError):
                raise _inherited_gone() from None
            break
    try:
        reply = _wire.decode(Kind.REPLY, data)
        assert isinstance(reply, Reply)
        if reply.descriptor_count() != len(fds):
            raise ProtocolError(
                f"reply carried {len(fds)} descriptors but its body accounts for "
                f"{reply.descriptor_count()}; all were closed"
            )
        body = reply.body
        if isinstance(body, Refused):
            raise _broker_error(
                body.error.errno,
                f"the broker refused a new connection: {body.error.message}",
            )
        if not isinstance(body, Connected):
            raise ProtocolError("the inherited connection answered a connect with another reply")
        new = _socket.socket(fileno=fds[0])
    except BaseException:
        _close_all(fds)
        raise
    try:
        return _checked(new)
    except BaseException:
        new.close()
        raise


class DirEntry:
    """One entry of :meth:`Client.scandir`, like ``os.DirEntry``; ``path`` is the
    directory's path joined with ``name``.

    The entry's type comes with the broker's listing, so ``is_dir``, ``is_file`` and
    ``is_symlink`` need no system call; what needs more (``stat``, ``inode``, following
    a symlink) asks the broker (:meth:`Client.stat`), under its policy.
    """

    __slots__ = ("_client", "_kind", "name", "path")

    def __init__(self, client: "Client", base: Union[str, bytes], entry: ListEntry) -> None:
        self._client = client
        self._kind = entry.kind
        if isinstance(base, bytes):
            self.name: Union[str, bytes] = bytes(entry.name)
            self.path: Union[str, bytes] = base.rstrip(b"/") + b"/" + entry.name
        else:
            self.name = os.fsdecode(entry.name)
            self.path = base.rstrip("/") + "/" + self.name

    def _followed(self, want: FileKind) -> bool:
        try:
            st = self._client.stat(self.path)
        except OSError:
            return False
        if want == FileKind.DIRECTORY:
            return stat_module.S_ISDIR(st.st_mode)
        return stat_module.S_ISREG(st.st_mode)

    def inode(self) -> int:
        return self.stat(follow_symlinks=False).st_ino

    def is_dir(self, *, follow_symlinks: bool = True) -> bool:
        if follow_symlinks and self._kind == FileKind.SYMLINK:
            return self._followed(FileKind.DIRECTORY)
        return self._kind == FileKind.DIRECTORY

    def is_file(self, *, follow_symlinks: bool = True) -> bool:
        if follow_symlinks and self._kind == FileKind.SYMLINK:
            return self._followed(FileKind.REGULAR)
        return self._kind == FileKind.REGULAR

    def is_symlink(self) -> bool:
        return self._kind == FileKind.SYMLINK

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        """The broker's view of the entry (:meth:`Client.stat`), under its policy."""
        return self._client.stat(self.path)

    def __fspath__(self) -> Union[str, bytes]:
        return self.path


class ScandirIterator:
    """The entries of one directory as the broker listed them (``Op::List``, every page
    received before the first entry is given). A context manager like ``os.scandir``'s
    iterator; it holds no descriptor, so closing it only ends the iteration."""

    def __init__(self, client: "Client", path: PathArg, entries: Sequence[ListEntry]) -> None:
        p = os.fspath(path)
        self._path: Union[str, bytes] = p
        self._client = client
        self._it: Optional[Iterator[ListEntry]] = iter(entries)

    def __iter__(self) -> Iterator[DirEntry]:
        return self

    def __next__(self) -> DirEntry:
        if self._it is None:
            raise StopIteration
        return DirEntry(self._client, self._path, next(self._it))

    def close(self) -> None:
        self._it = None

    def __enter__(self) -> "ScandirIterator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

