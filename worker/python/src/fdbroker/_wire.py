"""The fdbroker wire protocol, version 1, in pure Python.

Every byte is specified in ``shared/PROTOCOL.md`` and pinned by the golden vectors in
``shared/testdata/vectors.json``, which this package's tests check this codec
against. Frames are a 12-byte header and a body in bincode 2's fixed-width,
little-endian encoding: integers at full width, lengths as ``u64``, enum variants as
a ``u32`` tag, structs as their fields in order.

Decoding treats the bytes as hostile: every length is checked against what is left of
the body before anything is taken, lists are capped before their elements are read,
strings must be UTF-8, unknown tags and trailing bytes are refused. Every refusal is a
:class:`ProtocolError`.
"""

from __future__ import annotations

import enum
import errno as _errno
import os
import struct
from dataclasses import dataclass
from typing import List, Sequence, Tuple, Union

MAGIC = b"FDBK"
PROTOCOL_VERSION = 1
HEADER_LEN = 12
#: Largest frame either side sends or accepts, header included.
MAX_MESSAGE = 64 * 1024
#: Most descriptors one reply may carry.
MAX_FDS_PER_REPLY = 128
#: Most paths one ``OpenMany`` may carry, and outcomes its reply may.
MAX_BATCH = 128
#: Most entries one ``List`` reply page holds.
MAX_LIST_ENTRIES = 512
#: Longest request path in bytes (``PATH_MAX`` less the NUL).
MAX_PATH = 4095
#: The extra open flags a request may carry (the machine's own values, as in Rust).
OPEN_TRUNC = os.O_TRUNC
OPEN_APPEND = os.O_APPEND


class ProtocolError(OSError):
    """The peer broke the protocol; the connection it came on is unusable.

    ``errno`` is ``EPROTO``, or ``EPROTONOSUPPORT`` for a version mismatch.
    """

    def __init__(self, message: str, code: int = _errno.EPROTO) -> None:
        super().__init__(code, message)


class Kind(enum.IntEnum):
    HELLO = 1
    WELCOME = 2
    REQUEST = 3
    REPLY = 4


class Access(enum.IntEnum):
    """How the broker opens a file; tags as on the wire."""

    READ = 0
    WRITE = 1
    READ_WRITE = 2
    CREATE = 3
    DIRECTORY = 4


class FileKind(enum.IntEnum):
    REGULAR = 0
    DIRECTORY = 1
    CHAR_DEVICE = 2
    BLOCK_DEVICE = 3
    FIFO = 4
    SOCKET = 5
    SYMLINK = 6


@dataclass(frozen=True)
class Hello:
    version: int
    agent: str


@dataclass(frozen=True)
class Accepted:
    """``Welcome::Accepted``: the connection is served."""

    client: str
    max_batch: int


@dataclass(frozen=True)
class WireError:
    errno: int
    message: str


@dataclass(frozen=True)
class Refused:
    """``Welcome::Refused`` or ``ReplyBody::Refused``: refused as a whole."""

    error: WireError


@dataclass(frozen=True)
class Open:
    """``Op::Open``: open one file."""

    path: bytes
    access: Access
    flags: int = 0


@dataclass(frozen=True)
class OpenMany:
    """``Op::OpenMany``: open several files with one access."""

    paths: Tuple[bytes, ...]
    access: Access
    flags: int = 0


@dataclass(frozen=True)
class Stat:
    """``Op::Stat``: the metadata of one path, under the policy; no descriptor."""

    path: bytes


@dataclass(frozen=True)
class Connect:
    """``Op::Connect``: a new connection with this one's identity (one descriptor).
    Accepted before the hello, on an inherited connection shared by several
    processes."""


@dataclass(frozen=True)
class List_:
    """``Op::List``: one page of a directory's entries, from entry ``start`` on, with
    what the policy hides left out; no descriptor."""

    path: bytes
    start: int = 0


@dataclass(frozen=True)
class Link:
    """``Op::Link``: a :class:`Stat` that does not follow the last component (what
    ``lstat(2)`` and ``readlink(2)`` ask); no descriptor."""

    path: bytes


Operation = Union[Open, OpenMany, Stat, Connect, List_, Link]


@dataclass(frozen=True)
class Request:
    id: int
    op: Operation


@dataclass(frozen=True)
class FileMeta:
    """What the broker saw when it ``fstat``-ed the descriptor it passed."""

    kind: FileKind
    size: int
    dev: int
    ino: int
    mode: int
    nlink: int
    mtime_sec: int
    mtime_nsec: int


#: The result for one path: metadata (a descriptor came with it) or an error.
Outcome = Union[FileMeta, WireError]


@dataclass(frozen=True)
class StatMeta:
    """What the broker saw when it ``fstat``-ed a path for :class:`Stat`: a whole
    :class:`FileMeta` and the rest of ``struct stat``."""

    file: FileMeta
    uid: int
    gid: int
    rdev: int
    blksize: int
    blocks: int
    atime_sec: int
    atime_nsec: int
    ctime_sec: int
    ctime_nsec: int


@dataclass(frozen=True)
class OpenReply:
    """``ReplyBody::Open``."""

    outcome: Outcome


@dataclass(frozen=True)
class OpenManyReply:
    """``ReplyBody::OpenMany``: one outcome per requested path, in order."""

    outcomes: Tuple[Outcome, ...]


@dataclass(frozen=True)
class StatReply:
    """``ReplyBody::Stat``: the metadata, or why not; never with a descriptor."""

    result: Union[StatMeta, WireError]


@dataclass(frozen=True)
class Connected:
    """``ReplyBody::Connected``: exactly one descriptor, the new connection."""


@dataclass(frozen=True)
class ListEntry:
    """One entry of a :class:`Listing`: its name and type (not following a link)."""

    name: bytes
    kind: FileKind


@dataclass(frozen=True)
class Listing:
    """One page of a listing; ``next`` is the next page's ``start``, 0 after the last."""

    entries: Tuple[ListEntry, ...]
    next: int


@dataclass(frozen=True)
class ListReply:
    """``ReplyBody::List``: a page, or why not; never with a descriptor."""

    result: Union[Listing, WireError]


@dataclass(frozen=True)
class LinkMeta:
    """A path described without following its last component: a symbolic link's own
    metadata and its target, or for anything else what a stat gives and no target."""

    meta: StatMeta
    target: bytes


@dataclass(frozen=True)
class LinkReply:
    """``ReplyBody::Link``: the description, or why not; never with a descriptor."""

    result: Union[LinkMeta, WireError]


ReplyBody = Union[OpenReply, OpenManyReply, Refused, StatReply, Connected, ListReply, LinkReply]


@dataclass(frozen=True)
class Reply:
    id: int
    body: ReplyBody

    def descriptor_count(self) -> int:
        """How many descriptors must travel with this reply."""
        body = self.body
        if isinstance(body, OpenReply):
            return int(isinstance(body.outcome, FileMeta))
        if isinstance(body, OpenManyReply):
            return sum(isinstance(o, FileMeta) for o in body.outcomes)
        if isinstance(body, Connected):
            return 1
        return 0


Welcome = Union[Accepted, Refused]
Message = Union[Hello, Accepted, Refused, Request, Reply]


# ---- encoding ----


class _Writer:
    __slots__ = ("out",)

    def __init__(self) -> None:
        self.out = bytearray()

    def _pack(self, fmt: str, v: int) -> None:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"expected an int, got {v!r}")
        try:
            self.out += struct.pack(fmt, v)
        except struct.error:
            raise ValueError(f"{v} does not fit the field") from None

    def u16(self, v: int) -> None:
        self._pack("<H", v)

    def u32(self, v: int) -> None:
        self._pack("<I", v)

    def u64(self, v: int) -> None:
        self._pack("<Q", v)

    def i32(self, v: int) -> None:
        self._pack("<i", v)

    def i64(self, v: int) -> None:
        self._pack("<q", v)

    def raw(self, b: bytes) -> None:
        self.u64(len(b))
        self.out += b

    def string(self, s: str) -> None:
        self.raw(s.encode("utf-8"))


def _write_error(w: _Writer, e: WireError) -> None:
    w.i32(e.errno)
    w.string(e.message)


def _write_meta(w: _Writer, m: FileMeta) -> None:
    w.u32(FileKind(m.kind))
    w.u64(m.size)
    w.u64(m.dev)
    w.u64(m.ino)
    w.u32(m.mode)
    w.u64(m.nlink)
    w.i64(m.mtime_sec)
    w.u32(m.mtime_nsec)


def _write_stat_meta(w: _Writer, m: StatMeta) -> None:
    _write_meta(w, m.file)
    w.u32(m.uid)
    w.u32(m.gid)
    w.u64(m.rdev)
    w.u64(m.blksize)
    w.u64(m.blocks)
    w.i64(m.atime_sec)
    w.u32(m.atime_nsec)
    w.i64(m.ctime_sec)
    w.u32(m.ctime_nsec)


def _write_outcome(w: _Writer, o: Outcome) -> None:
    if isinstance(o, FileMeta):
        w.u32(0)
        _write_meta(w, o)
    elif isinstance(o, WireError):
        w.u32(1)
        _write_error(w, o)
    else:
        raise TypeError(f"not an outcome: {o!r}")


def _body(kind: Kind, msg: Message) -> bytes:
    w = _Writer()
    if kind == Kind.HELLO and isinstance(msg, Hello):
        w.u16(msg.version)
        w.string(msg.agent)
    elif kind == Kind.WELCOME and isinstance(msg, Accepted):
        w.u32(0)
        w.string(msg.client)
        w.u32(msg.max_batch)
    elif kind == Kind.WELCOME and isinstance(msg, Refused):
        w.u32(1)
        _write_error(w, msg.error)
    elif kind == Kind.REQUEST and isinstance(msg, Request):
        w.u64(msg.id)
        op = msg.op
        if isinstance(op, Open):
            w.u32(0)
            w.raw(bytes(op.path))
            w.u32(Access(op.access))
            w.u32(op.flags)
        elif isinstance(op, OpenMany):
            if len(op.paths) > MAX_BATCH:
                raise ValueError(f"a batch holds at most {MAX_BATCH} paths")
            w.u32(1)
            w.u64(len(op.paths))
            for p in op.paths:
                w.raw(bytes(p))
            w.u32(Access(op.access))
            w.u32(op.flags)
        elif isinstance(op, Stat):
            w.u32(2)
            w.raw(bytes(op.path))
        elif isinstance(op, Connect):
            w.u32(3)
        elif isinstance(op, List_):
            w.u32(4)
            w.raw(bytes(op.path))
            w.u64(op.start)
        elif isinstance(op, Link):
            w.u32(5)
            w.raw(bytes(op.path))
        else:
            raise TypeError(f"not an operation: {op!r}")
    elif kind == Kind.REPLY and isinstance(msg, Reply):
        w.u64(msg.id)
        body = msg.body
        if isinstance(body, OpenReply):
            w.u32(0)
            _write_outcome(w, body.outcome)
        elif isinstance(body, OpenManyReply):
            if len(body.outcomes) > MAX_BATCH:
                raise ValueError(f"a batch reply holds at most {MAX_BATCH} outcomes")
            w.u32(1)
            w.u64(len(body.outcomes))
            for o in body.outcomes:
                _write_outcome(w, o)
        elif isinstance(body, Refused):
            w.u32(2)
            _write_error(w, body.error)
        elif isinstance(body, StatReply):
            w.u32(3)
            if isinstance(body.result, StatMeta):
                w.u32(0)
                _write_stat_meta(w, body.result)
            elif isinstance(body.result, WireError):
                w.u32(1)
                _write_error(w, body.result)
            else:
                raise TypeError(f"not a stat result: {body.result!r}")
        elif isinstance(body, Connected):
            w.u32(4)
        elif isinstance(body, ListReply):
            w.u32(5)
            if isinstance(body.result, Listing):
                if len(body.result.entries) > MAX_LIST_ENTRIES:
                    raise ValueError(f"a listing page holds at most {MAX_LIST_ENTRIES} entries")
                w.u32(0)
                w.u64(len(body.result.entries))
                for e in body.result.entries:
                    w.raw(bytes(e.name))
                    w.u32(FileKind(e.kind))
                w.u64(body.result.next)
            elif isinstance(body.result, WireError):
                w.u32(1)
                _write_error(w, body.result)
            else:
                raise TypeError(f"not a listing result: {body.result!r}")
        elif isinstance(body, LinkReply):
            w.u32(6)
            if isinstance(body.result, LinkMeta):
                w.u32(0)
                _write_stat_meta(w, body.result.meta)
                w.raw(bytes(body.result.target))
            elif isinstance(body.result, WireError):
                w.u32(1)
                _write_error(w, body.result)
            else:
                raise TypeError(f"not a link result: {body.result!r}")
        else:
            raise TypeError(f"not a reply body: {body!r}")
    else:
        raise TypeError(f"a {type(msg).__name__} is not a {kind.name} message")
    return bytes(w.out)


def encode(kind: Kind, msg: Message) -> bytes:
    """One whole frame for ``msg``. ``ValueError`` if it would exceed the cap."""
    body = _body(kind, msg)
    if HEADER_LEN + len(body) > MAX_MESSAGE:
        raise ValueError(f"message of {HEADER_LEN + len(body)} bytes exceeds {MAX_MESSAGE}")
    return struct.pack("<4sHHI", MAGIC, PROTOCOL_VERSION, kind, len(body)) + body


# ---- decoding ----


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = memoryview(buf)
        self.pos = 0

    def left(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int) -> bytes:
        if n > self.left():
            raise ProtocolError(
                f"undecodable message body: {n} bytes wanted, {self.left()} left"
            )
        b = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return b

    def _unpack(self, fmt: str, size: int) -> int:
        (v,) = struct.unpack(fmt, self.take(size))
        return int(v)

    def u16(self) -> int:
        return self._unpack("<H", 2)

    def u32(self) -> int:
        return self._unpack("<I", 4)

    def u64(self) -> int:
        return self._unpack("<Q", 8)

    def i32(self) -> int:
        return self._unpack("<i", 4)

    def i64(self) -> int:
        return self._unpack("<q", 8)

    def raw(self) -> bytes:
        return self.take(self.u64())

    def string(self) -> str:
        try:
            return self.raw().decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("undecodable message body: a string is not UTF-8") from None

    def tag(self, what: str, count: int) -> int:
        t = self.u32()
        if t >= count:
            raise ProtocolError(f"undecodable message body: unknown {what} tag {t}")
        return t

    def list_len(self, limit: int = MAX_BATCH) -> int:
        n = self.u64()
        if n > limit:
            raise ProtocolError(
                f"undecodable message body: list of {n} elements exceeds the "
                f"protocol's limit of {limit}"
            )
        return n


def _read_error(r: _Reader) -> WireError:
    code = r.i32()
    return WireError(code, r.string())


def _read_meta(r: _Reader) -> FileMeta:
    return FileMeta(
        kind=FileKind(r.tag("FileKind", len(FileKind))),
        size=r.u64(),
        dev=r.u64(),
        ino=r.u64(),
        mode=r.u32(),
        nlink=r.u64(),
        mtime_sec=r.i64(),
        mtime_nsec=r.u32(),
    )


def _read_outcome(r: _Reader) -> Outcome:
    if r.tag("Result", 2) == 1:
        return _read_error(r)
    return _read_meta(r)


def _read_stat(r: _Reader) -> Union[StatMeta, WireError]:
    if r.tag("Result", 2) == 1:
        return _read_error(r)
    return _read_stat_meta(r)


def _read_link(r: _Reader) -> Union[LinkMeta, WireError]:
    if r.tag("Result", 2) == 1:
        return _read_error(r)
    meta = _read_stat_meta(r)
    return LinkMeta(meta, r.raw())


def _read_stat_meta(r: _Reader) -> StatMeta:
    return StatMeta(
        file=_read_meta(r),
        uid=r.u32(),
        gid=r.u32(),
        rdev=r.u64(),
        blksize=r.u64(),
        blocks=r.u64(),
        atime_sec=r.i64(),
        atime_nsec=r.u32(),
        ctime_sec=r.i64(),
        ctime_nsec=r.u32(),
    )


def _read_listing(r: _Reader) -> Union[Listing, WireError]:
    if r.tag("Result", 2) == 1:
        return _read_error(r)
    entries = []
    for _ in range(r.list_len(MAX_LIST_ENTRIES)):
        name = r.raw()
        entries.append(ListEntry(name, FileKind(r.tag("FileKind", len(FileKind)))))
    return Listing(tuple(entries), r.u64())


def _read_body(kind: Kind, r: _Reader) -> Message:
    if kind == Kind.HELLO:
        version = r.u16()
        return Hello(version, r.string())
    if kind == Kind.WELCOME:
        if r.tag("Welcome", 2) == 0:
            client = r.string()
            return Accepted(client, r.u32())
        return Refused(_read_error(r))
    if kind == Kind.REQUEST:
        rid = r.u64()
        op = r.tag("Op", 6)
        if op == 0:
            path = r.raw()
            access = Access(r.tag("Access", len(Access)))
            return Request(rid, Open(path, access, r.u32()))
        if op == 1:
            paths = tuple(r.raw() for _ in range(r.list_len()))
            access = Access(r.tag("Access", len(Access)))
            return Request(rid, OpenMany(paths, access, r.u32()))
        if op == 2:
            return Request(rid, Stat(r.raw()))
        if op == 4:
            path = r.raw()
            return Request(rid, List_(path, r.u64()))
        if op == 5:
            return Request(rid, Link(r.raw()))
        return Request(rid, Connect())
    rid = r.u64()
    t = r.tag("ReplyBody", 7)
    if t == 0:
        return Reply(rid, OpenReply(_read_outcome(r)))
    if t == 1:
        return Reply(rid, OpenManyReply(tuple(_read_outcome(r) for _ in range(r.list_len()))))
    if t == 2:
        return Reply(rid, Refused(_read_error(r)))
    if t == 3:
        return Reply(rid, StatReply(_read_stat(r)))
    if t == 5:
        return Reply(rid, ListReply(_read_listing(r)))
    if t == 6:
        return Reply(rid, LinkReply(_read_link(r)))
    return Reply(rid, Connected())


def header(data: bytes) -> Tuple[int, Kind, int]:
    """Check a frame's header against the bytes that arrived, in the order the
    specification gives; returns (version, kind, body length)."""
    if len(data) > MAX_MESSAGE:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the {MAX_MESSAGE}-byte cap")
    if len(data) < HEADER_LEN:
        raise ProtocolError(f"message of {len(data)} bytes is shorter than the frame header")
    magic, version, raw_kind, declared = struct.unpack_from("<4sHHI", data)
    if magic != MAGIC:
        raise ProtocolError("message does not start with the fdbroker magic")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version mismatch: peer speaks version {version}, "
            f"this side speaks version {PROTOCOL_VERSION}",
            _errno.EPROTONOSUPPORT,
        )
    try:
        kind = Kind(raw_kind)
    except ValueError:
        raise ProtocolError(f"unknown message kind {raw_kind}") from None
    if declared != len(data) - HEADER_LEN:
        raise ProtocolError(
            f"header declares a {declared}-byte body but {len(data) - HEADER_LEN} bytes arrived"
        )
    return version, kind, declared


def decode(expected: Kind, data: bytes) -> Message:
    """Decode one frame of the expected kind; the body must be consumed exactly."""
    _, kind, _ = header(data)
    if kind != expected:
        raise ProtocolError(f"expected a {expected.name} message, got {kind.name}")
    r = _Reader(bytes(data[HEADER_LEN:]))
    msg = _read_body(kind, r)
    if r.left():
        raise ProtocolError(f"message body has {r.left()} trailing bytes")
    return msg


def open_many_size(paths: Sequence[bytes]) -> int:
    """The exact size of an ``OpenMany`` request frame for ``paths``."""
    return HEADER_LEN + 8 + 4 + 8 + sum(8 + len(p) for p in paths) + 4 + 4


def split_batches(paths: Sequence[bytes], max_batch: int) -> List[Tuple[int, int]]:
    """Split ``paths`` into (start, end) ranges of at most ``max_batch`` paths whose
    request frames fit the cap; a path too long for any frame gets a range of its own
    (and is refused when encoded)."""
    ranges = []
    start = 0
    while start < len(paths):
        size = open_many_size(())
        end = start
        while end < len(paths) and end - start < max_batch:
            cost = 8 + len(paths[end])
            if end > start and size + cost > MAX_MESSAGE:
                break
            size += cost
            end += 1
        ranges.append((start, end))
        start = end
    return ranges
