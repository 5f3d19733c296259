"""The codec against the golden vectors the Rust tests produce
(``shared/testdata/vectors.json``): every valid value encodes to exactly its frame and
every frame decodes to exactly its value; every invalid frame is refused."""

from __future__ import annotations

import struct
from typing import Any, Dict, List

import pytest

from fdbroker import _wire
from fdbroker._wire import (
    Access,
    Accepted,
    Connect,
    Connected,
    FileKind,
    FileMeta,
    Hello,
    Kind,
    Link,
    LinkMeta,
    LinkReply,
    List_,
    ListEntry,
    Listing,
    ListReply,
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

_ACCESS = {
    "Read": Access.READ,
    "Write": Access.WRITE,
    "ReadWrite": Access.READ_WRITE,
    "Create": Access.CREATE,
    "Directory": Access.DIRECTORY,
}
_KINDS = {
    "Regular": FileKind.REGULAR,
    "Directory": FileKind.DIRECTORY,
    "CharDevice": FileKind.CHAR_DEVICE,
    "BlockDevice": FileKind.BLOCK_DEVICE,
    "Fifo": FileKind.FIFO,
    "Socket": FileKind.SOCKET,
    "Symlink": FileKind.SYMLINK,
}


def _variant(v: Dict[str, Any]):
    assert isinstance(v, dict) and len(v) == 1, v
    return next(iter(v.items()))


def _error(v: Dict[str, Any]) -> WireError:
    return WireError(v["errno"], v["message"])


def _meta(inner: Dict[str, Any]) -> FileMeta:
    return FileMeta(
        kind=_KINDS[inner["kind"]],
        size=inner["size"],
        dev=inner["dev"],
        ino=inner["ino"],
        mode=inner["mode"],
        nlink=inner["nlink"],
        mtime_sec=inner["mtime_sec"],
        mtime_nsec=inner["mtime_nsec"],
    )


def _outcome(v: Dict[str, Any]):
    name, inner = _variant(v)
    if name == "Err":
        return _error(inner)
    assert name == "Ok"
    return _meta(inner)


def _stat(v: Dict[str, Any]):
    name, inner = _variant(v)
    if name == "Err":
        return _error(inner)
    assert name == "Ok"
    return StatMeta(
        file=_meta(inner["file"]),
        **{k: inner[k] for k in (
            "uid", "gid", "rdev", "blksize", "blocks",
            "atime_sec", "atime_nsec", "ctime_sec", "ctime_nsec",
        )},
    )


def from_json(kind: str, v: Any):
    """serde's externally tagged JSON (as the vectors hold it) to this package's
    message objects."""
    if kind == "Hello":
        return Hello(v["version"], v["agent"])
    if kind == "Welcome":
        name, inner = _variant(v)
        if name == "Accepted":
            return Accepted(inner["client"], inner["max_batch"])
        assert name == "Refused"
        return Refused(_error(inner))
    if kind == "Request":
        if v["op"] == "Connect":
            return Request(v["id"], Connect())
        name, inner = _variant(v["op"])
        if name == "Open":
            op = Open(bytes(inner["path"]), _ACCESS[inner["access"]], inner["flags"])
        elif name == "Stat":
            op = Stat(bytes(inner["path"]))
        elif name == "List":
            op = List_(bytes(inner["path"]), inner["start"])
        elif name == "Link":
            op = Link(bytes(inner["path"]))
        else:
            assert name == "OpenMany"
            op = OpenMany(
                tuple(bytes(p) for p in inner["paths"]), _ACCESS[inner["access"]], inner["flags"]
            )
        return Request(v["id"], op)
    assert kind == "Reply"
    if v["body"] == "Connected":
        return Reply(v["id"], Connected())
    name, inner = _variant(v["body"])
    if name == "Open":
        body = OpenReply(_outcome(inner))
    elif name == "OpenMany":
        body = OpenManyReply(tuple(_outcome(o) for o in inner))
    elif name == "Stat":
        body = StatReply(_stat(inner))
    elif name == "List":
        if "Err" in inner:
            body = ListReply(_error(inner["Err"]))
        else:
            page = inner["Ok"]
            body = ListReply(
                Listing(
                    tuple(
                        ListEntry(bytes(e["name"]), _KINDS[e["kind"]])
                        for e in page["entries"]
                    ),
                    page["next"],
                )
            )
    elif name == "Link":
        if "Err" in inner:
            body = LinkReply(_error(inner["Err"]))
        else:
            link = inner["Ok"]
            meta = _stat({"Ok": link["meta"]})
            body = LinkReply(LinkMeta(meta, bytes(link["target"])))
    else:
        assert name == "Refused"
        body = Refused(_error(inner))
    return Reply(v["id"], body)


def _operator_only(v: Dict[str, Any]) -> bool:
    """``Op::Status`` and its reply are the operator's (``fdbroker status``), which no
    worker sends: this client does not speak them."""
    value = v["value"]
    return value.get("op") == "Status" or (
        isinstance(value.get("body"), dict) and "Status" in value["body"]
    )


def _valid(vectors) -> List[Dict[str, Any]]:
    return [v for v in vectors["valid"] if not _operator_only(v)]


def test_the_vectors_are_this_protocol(vectors):
    assert vectors["protocol_version"] == _wire.PROTOCOL_VERSION
    assert vectors["max_message"] == _wire.MAX_MESSAGE
    assert vectors["max_batch"] == _wire.MAX_BATCH
    assert len(vectors["valid"]) >= 20 and len(vectors["invalid"]) >= 10


def test_every_value_encodes_to_its_frame(vectors):
    for v in _valid(vectors):
        msg = from_json(v["kind"], v["value"])
        got = _wire.encode(Kind[v["kind"].upper()], msg).hex()
        assert got == v["frame"], v["name"]


def test_every_frame_decodes_to_its_value(vectors):
    for v in _valid(vectors):
        kind = Kind[v["kind"].upper()]
        msg = _wire.decode(kind, bytes.fromhex(v["frame"]))
        assert msg == from_json(v["kind"], v["value"]), v["name"]


def test_every_invalid_frame_is_refused(vectors):
    for v in vectors["invalid"]:
        kind = Kind[v["kind"].upper()]
        with pytest.raises(ProtocolError) as e:
            _wire.decode(kind, bytes.fromhex(v["frame"]))
        if v["error"] == "Version":
            assert e.value.errno == 93, v["name"]  # EPROTONOSUPPORT


def test_reply_descriptor_counts(vectors):
    counts = {
        v["name"]: _wire.decode(Kind.REPLY, bytes.fromhex(v["frame"])).descriptor_count()
        for v in _valid(vectors)
        if v["kind"] == "Reply"
    }
    assert counts["reply-open-ok"] == 1
    assert counts["reply-open-denied"] == 0
    assert counts["reply-open-many"] == 2
    assert counts["reply-open-many-kinds"] == 7
    assert counts["reply-refused"] == 0
    assert counts["reply-stat-ok"] == 0
    assert counts["reply-stat-denied"] == 0
    assert counts["reply-connected"] == 1
    assert counts["reply-connect-refused"] == 0


def test_every_operation_and_reply_has_a_vector(vectors):
    """A message type this codec knows but no vector exercises would be unchecked."""
    seen = set()
    for v in _valid(vectors):
        msg = _wire.decode(Kind[v["kind"].upper()], bytes.fromhex(v["frame"]))
        inner = msg.op if isinstance(msg, Request) else msg.body if isinstance(msg, Reply) else msg
        seen.add(type(inner))
        if isinstance(inner, StatReply):
            seen.add((StatReply, type(inner.result)))
    for t in (Open, OpenMany, Stat, Connect, OpenReply, OpenManyReply, Refused, StatReply,
              Connected, Hello, Accepted, (StatReply, StatMeta), (StatReply, WireError)):
        assert t in seen, t


def test_oversized_frames_are_refused_both_ways():
    with pytest.raises(ValueError):
        _wire.encode(Kind.REQUEST, Request(1, Open(b"/" + b"a" * _wire.MAX_MESSAGE, Access.READ)))
    with pytest.raises(ProtocolError):
        _wire.header(b"FDBK" + b"\0" * _wire.MAX_MESSAGE)
    with pytest.raises(ValueError):
        _wire.encode(Kind.REQUEST, Request(1, OpenMany((b"/a",) * 129, Access.READ)))


def test_integers_out_of_range_are_not_encoded():
    for bad in (-1, 2**64):
        with pytest.raises(ValueError):
            _wire.encode(Kind.REQUEST, Request(bad, Open(b"/a", Access.READ)))
    with pytest.raises(ValueError):
        _wire.encode(Kind.REQUEST, Request(1, Open(b"/a", Access.READ, 2**32)))


def test_a_huge_length_is_refused_before_anything_is_taken():
    frame = _wire.encode(Kind.HELLO, Hello(1, "x"))
    body = bytearray(frame[_wire.HEADER_LEN :])
    body[2:10] = struct.pack("<Q", 2**63)
    forged = frame[: _wire.HEADER_LEN] + bytes(body)
    with pytest.raises(ProtocolError):
        _wire.decode(Kind.HELLO, forged)


def test_batches_respect_both_caps():
    short = [b"/d/%d" % i for i in range(300)]
    assert _wire.split_batches(short, 128) == [(0, 128), (128, 256), (256, 300)]
    long = [b"/" + b"x" * 4000 for _ in range(40)]
    ranges = _wire.split_batches(long, 128)
    assert len(ranges) > 1 and ranges[-1][1] == 40
    for start, end in ranges:
        assert _wire.open_many_size(long[start:end]) <= _wire.MAX_MESSAGE
        frame = _wire.encode(Kind.REQUEST, Request(2**64 - 1, OpenMany(tuple(long[start:end]), Access.READ, 2**32 - 1)))
        assert len(frame) == _wire.open_many_size(long[start:end])
    # A path too long for any frame still gets a batch of its own.
    assert _wire.split_batches([b"/" + b"x" * 70000, b"/a"], 128) == [(0, 1), (1, 2)]
