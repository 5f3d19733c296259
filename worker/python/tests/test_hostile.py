"""The client against a broker that lies: a fake broker on a real SOCK_SEQPACKET
socketpair, sending what a compromised or buggy broker could. Descriptors that arrive
with a bad message must all be closed (checked by the end-of-file of a pipe whose
write ends were the descriptors sent), and the connection must be unusable after."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
import threading
import warnings
from typing import Callable, List

import pytest

import fdbroker
from fdbroker import _wire
from fdbroker._wire import (
    Accepted,
    Connect,
    Connected,
    FileKind,
    FileMeta,
    Kind,
    OpenManyReply,
    OpenReply,
    Refused,
    Reply,
    StatReply,
    WireError,
)

META = FileMeta(FileKind.REGULAR, 5, 1, 2, 0o100600, 1, 0, 0)


def welcome_frame() -> bytes:
    return _wire.encode(Kind.WELCOME, Accepted("fake", 128))


def send(sock: socket.socket, frame: bytes, fds: List[int] = ()) -> None:
    if fds:
        sock.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))])
    else:
        sock.send(frame)


class FakeBroker:
    """Greets (or not) and answers the first request with ``answer(request_id)``."""

    def __init__(self, answer: Callable[[socket.socket, int], None], greet: bytes = b"") -> None:
        self.client_end, self.server = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.greet = greet or welcome_frame()
        self.answer = answer
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        s = self.server
        hello = s.recv(_wire.MAX_MESSAGE)
        assert _wire.decode(Kind.HELLO, hello).agent.startswith("fdbroker-python")
        send(s, self.greet)
        try:
            req = _wire.decode(Kind.REQUEST, s.recv(_wire.MAX_MESSAGE))
        except (OSError, _wire.ProtocolError):
            return
        self.answer(s, req.id)

    def close(self) -> None:
        self.thread.join(10)
        self.server.close()


def pipe_with_writers(n: int):
    """A pipe's read end (non-blocking) and n duplicates of its write end."""
    r, w = os.pipe()
    writers = [os.dup(w) for _ in range(n)]
    os.close(w)
    fcntl.fcntl(r, fcntl.F_SETFL, os.O_NONBLOCK)
    return r, writers


def assert_no_writer_left(r: int) -> None:
    """EOF on the read end: no write end survives anywhere in this process."""
    try:
        assert os.read(r, 1) == b"", "the pipe has data?"
    except BlockingIOError:
        pytest.fail("a descriptor that arrived with a bad message was not closed")
    finally:
        os.close(r)


def exchange(answer, open_path="/x"):
    """Connect to a fake broker answering with ``answer``; return the error the open
    raised and the client."""
    fake = FakeBroker(answer)
    c = fdbroker.Client(fake.client_end, timeout=10)
    try:
        with pytest.raises(OSError) as e:
            c.open_fd(open_path)
        return e.value, c
    finally:
        fake.close()


def test_more_descriptors_than_the_protocol_allows_are_all_closed():
    r, writers = pipe_with_writers(_wire.MAX_FDS_PER_REPLY + 5)

    def answer(s, rid):
        frame = _wire.encode(Kind.REPLY, Reply(rid, OpenReply(META)))
        send(s, frame, writers)
        for w in writers:
            os.close(w)

    with warnings.catch_warnings():
        # CPython warns about the control data the kernel had to cut short.
        warnings.simplefilter("ignore", RuntimeWarning)
        err, c = exchange(answer)
    assert isinstance(err, fdbroker.ProtocolError), err
    assert "truncated" in str(err)
    assert_no_writer_left(r)
    # And the connection is unusable from then on.
    with pytest.raises(fdbroker.ProtocolError, match="unusable"):
        c.open_fd("/x")
    c.close()


def test_descriptors_the_body_does_not_account_for_are_all_closed():
    r, writers = pipe_with_writers(3)

    def answer(s, rid):
        # A refusal passes no descriptor; this one comes with three.
        frame = _wire.encode(Kind.REPLY, Reply(rid, OpenReply(WireError(13, "no"))))
        send(s, frame, writers)
        for w in writers:
            os.close(w)

    err, c = exchange(answer)
    assert isinstance(err, fdbroker.ProtocolError) and "accounts for 0" in str(err), err
    assert_no_writer_left(r)
    c.close()


def test_too_few_descriptors_for_a_batch_are_closed_too():
    r, writers = pipe_with_writers(1)

    def answer(s, rid):
        frame = _wire.encode(Kind.REPLY, Reply(rid, OpenManyReply((META, META))))
        send(s, frame, writers)
        os.close(writers[0])

    fake = FakeBroker(answer)
    c = fdbroker.Client(fake.client_end, timeout=10)
    with pytest.raises(fdbroker.ProtocolError):
        c.open_many_fd(["/a", "/b"], errors="return")
    fake.close()
    assert_no_writer_left(r)
    c.close()


def test_a_truncated_message_closes_its_descriptors():
    r, writers = pipe_with_writers(1)

    def answer(s, rid):
        send(s, b"\0" * (_wire.MAX_MESSAGE + 100), writers)
        os.close(writers[0])

    err, c = exchange(answer)
    assert isinstance(err, fdbroker.ProtocolError) and "truncated" in str(err), err
    assert_no_writer_left(r)
    c.close()


def test_a_reply_for_another_request_is_a_violation():
    r, writers = pipe_with_writers(1)

    def answer(s, rid):
        send(s, _wire.encode(Kind.REPLY, Reply(rid + 1, OpenReply(META))), writers)
        os.close(writers[0])

    err, c = exchange(answer)
    assert isinstance(err, fdbroker.ProtocolError) and "unknown request id" in str(err), err
    assert_no_writer_left(r)
    c.close()


def test_an_undecodable_reply_closes_its_descriptors():
    r, writers = pipe_with_writers(1)

    def answer(s, rid):
        good = _wire.encode(Kind.REPLY, Reply(rid, OpenReply(META)))
        send(s, good + b"\0", writers)  # length mismatch
        os.close(writers[0])

    err, c = exchange(answer)
    assert isinstance(err, fdbroker.ProtocolError), err
    assert_no_writer_left(r)
    c.close()


def test_descriptors_arrive_non_inheritable_and_blocking():
    r, w = os.pipe()

    def answer(s, rid):
        os.set_blocking(w, False)
        send(s, _wire.encode(Kind.REPLY, Reply(rid, OpenReply(META))), [w])
        os.close(w)

    fake = FakeBroker(answer)
    with fdbroker.Client(fake.client_end, timeout=10) as c:
        fd = c.open_fd("/x", os.O_WRONLY)
    fake.close()
    try:
        assert not os.get_inheritable(fd)
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert os.get_blocking(fd), "O_NONBLOCK was not asked for"
        os.write(fd, b"!")
        assert os.read(r, 1) == b"!"
    finally:
        os.close(fd)
        os.close(r)


def test_a_refused_welcome_is_the_errno_and_reason():
    fake = FakeBroker(lambda s, rid: None, greet=_wire.encode(
        Kind.WELCOME, Refused(WireError(errno.EACCES, "no client matches uid 65534"))))
    with pytest.raises(PermissionError) as e:
        fdbroker.Client(fake.client_end, timeout=10)
    assert e.value.errno == errno.EACCES
    assert "no client matches uid 65534" in e.value.strerror
    fake.close()


def test_another_protocol_version_is_named():
    frame = bytearray(welcome_frame())
    frame[4:6] = struct.pack("<H", 2)
    fake = FakeBroker(lambda s, rid: None, greet=bytes(frame))
    with pytest.raises(fdbroker.ProtocolError) as e:
        fdbroker.Client(fake.client_end, timeout=10)
    assert e.value.errno == errno.EPROTONOSUPPORT
    assert "version 2" in str(e.value)
    fake.close()


def test_a_vanished_broker_is_connection_aborted():
    def answer(s, rid):
        s.shutdown(socket.SHUT_RDWR)

    err, c = exchange(answer)
    assert isinstance(err, ConnectionAbortedError), err
    with pytest.raises(ConnectionAbortedError, match="unusable"):
        c.open_fd("/x")
    c.close()


def test_a_welcome_with_descriptors_is_refused_and_they_are_closed():
    r, writers = pipe_with_writers(2)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)

    def serve():
        b.recv(_wire.MAX_MESSAGE)
        send(b, welcome_frame(), writers)
        for w in writers:
            os.close(w)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    with pytest.raises(fdbroker.ProtocolError):
        fdbroker.Client(a, timeout=10)
    t.join(10)
    b.close()
    assert_no_writer_left(r)


def test_only_seqpacket_unix_sockets_are_taken():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with pytest.raises(OSError) as e:
        fdbroker.Client(a)
    assert e.value.errno == errno.EPROTOTYPE
    a.close()
    b.close()


# ---- the inherited connection (FDBROKER_FD) ----


class SharedConnection:
    """A fake of the connection ``fdbroker run`` hands down: the library must send a
    ``Connect`` on it first, with no hello, and greet whatever connection comes back.
    ``answer(sock, request)`` replies."""

    def __init__(self, monkeypatch, answer) -> None:
        ours, self.server = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # The library adopts the number once per process and owns it from then on.
        monkeypatch.setattr(fdbroker._client, "_inherited_conn", None)
        monkeypatch.setenv(fdbroker.ENV_FD, str(ours.detach()))
        self.first = None
        self.answer = answer
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        try:
            data = self.server.recv(_wire.MAX_MESSAGE)
        except OSError:
            return
        self.first = data
        if data:
            self.answer(self.server, _wire.decode(Kind.REQUEST, data))

    def close(self) -> None:
        self.thread.join(10)
        self.server.close()


def test_an_inherited_connection_is_asked_for_one_and_never_greeted(monkeypatch):
    fakes = []

    def answer(s, req):
        assert isinstance(req.op, Connect)

        def serve(sock, rid):
            send(sock, _wire.encode(Kind.REPLY, Reply(rid, StatReply(WireError(2, "gone")))))

        fake = FakeBroker(serve)
        fakes.append(fake)
        send(s, _wire.encode(Kind.REPLY, Reply(req.id, Connected())), [fake.client_end.fileno()])
        fake.client_end.close()

    shared = SharedConnection(monkeypatch, answer)
    with fdbroker.Client(timeout=10) as c:
        assert c.client_name == "fake"
        with pytest.raises(FileNotFoundError):
            c.stat("/x")
    shared.close()
    for f in fakes:
        f.close()
    first = _wire.decode(Kind.REQUEST, shared.first)
    assert isinstance(first.op, Connect), "the shared connection was greeted or used"


def test_a_connect_answered_with_extra_descriptors_closes_them_all(monkeypatch):
    r, writers = pipe_with_writers(3)

    def answer(s, req):
        send(s, _wire.encode(Kind.REPLY, Reply(req.id, Connected())), writers)
        for w in writers:
            os.close(w)

    shared = SharedConnection(monkeypatch, answer)
    with pytest.raises(fdbroker.ProtocolError, match="accounts for 1"):
        fdbroker.Client(timeout=10)
    shared.close()
    assert_no_writer_left(r)


def test_a_connect_answered_with_another_reply_closes_its_descriptor(monkeypatch):
    r, writers = pipe_with_writers(1)

    def answer(s, req):
        send(s, _wire.encode(Kind.REPLY, Reply(req.id, OpenReply(META))), writers)
        os.close(writers[0])

    shared = SharedConnection(monkeypatch, answer)
    with pytest.raises(fdbroker.ProtocolError, match="another reply"):
        fdbroker.Client(timeout=10)
    shared.close()
    assert_no_writer_left(r)


def test_a_refused_connect_is_the_errno_and_reason(monkeypatch):
    def answer(s, req):
        send(s, _wire.encode(Kind.REPLY, Reply(req.id, Refused(WireError(
            errno.EAGAIN, "uid 65534 is at its limit of 1024 connections")))))

    shared = SharedConnection(monkeypatch, answer)
    with pytest.raises(BlockingIOError) as e:
        fdbroker.Client(timeout=10)
    assert e.value.errno == errno.EAGAIN
    assert "at its limit" in e.value.strerror
    shared.close()


def test_a_silent_inherited_connection_times_out(monkeypatch):
    shared = SharedConnection(monkeypatch, lambda s, req: None)
    with pytest.raises(TimeoutError):
        fdbroker.Client(timeout=0.5)
    shared.close()


def test_a_closed_inherited_connection_names_it(monkeypatch):
    shared = SharedConnection(monkeypatch, lambda s, req: s.shutdown(socket.SHUT_RDWR))
    with pytest.raises(ConnectionAbortedError) as e:
        fdbroker.Client(timeout=10)
    assert fdbroker.ENV_FD in e.value.strerror
    shared.close()


def test_an_inherited_descriptor_that_is_no_socket_is_refused(monkeypatch):
    r, w = os.pipe()
    os.close(w)
    monkeypatch.setattr(fdbroker._client, "_inherited_conn", None)
    monkeypatch.setenv(fdbroker.ENV_FD, str(r))
    with pytest.raises(OSError) as e:
        fdbroker.Client(timeout=10)
    assert e.value.errno == errno.ENOTSOCK
    assert fdbroker.ENV_FD in e.value.strerror
    os.close(r)


class RestartingBroker:
    """A fake broker on a socket path that vanishes after reading the first request
    (as a killed server does), then answers every request on the next connection with
    a pipe's read end."""

    def __init__(self, path: str) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(path)
        self.listener.listen(4)
        self.requests: List[object] = []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        for n in range(2):
            s, _ = self.listener.accept()
            with s:
                s.recv(_wire.MAX_MESSAGE)
                send(s, welcome_frame())
                while True:
                    data = s.recv(_wire.MAX_MESSAGE)
                    if not data:
                        break
                    req = _wire.decode(Kind.REQUEST, data)
                    self.requests.append(req.op)
                    if n == 0:
                        s.shutdown(socket.SHUT_RDWR)
                        break
                    r, w = os.pipe()
                    send(s, _wire.encode(Kind.REPLY, Reply(req.id, OpenReply(META))), [r])
                    os.close(r)
                    os.close(w)

    def close(self) -> None:
        self.listener.close()


def test_a_client_made_from_a_path_reconnects_once_and_retries(tmp_path):
    fake = RestartingBroker(str(tmp_path / "broker.sock"))
    c = fdbroker.Client(str(tmp_path / "broker.sock"), timeout=10)
    fileno = c.fileno()
    fd = c.open_fd("/x")
    os.close(fd)
    assert c.fileno() == fileno, "the descriptor number survives the reconnect"
    assert len(fake.requests) == 2, "sent once, retried once on the new connection"
    c.close()
    fake.close()


def test_a_create_the_broker_may_have_done_is_not_retried(tmp_path):
    fake = RestartingBroker(str(tmp_path / "broker.sock"))
    c = fdbroker.Client(str(tmp_path / "broker.sock"), timeout=10)
    with pytest.raises(ConnectionAbortedError, match="not retried"):
        c.open_fd("/x", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    assert len(fake.requests) == 1
    # Reconnected all the same: the next request is served.
    os.close(c.open_fd("/y"))
    assert len(fake.requests) == 2
    c.close()
    fake.close()


def _bounded(call: Callable[[], object], limit: float = 60.0) -> BaseException:
    """Run ``call`` in a thread and return what it raised; fail (not hang) if it is
    still running after ``limit`` seconds or returned."""
    raised: List[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            raised.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(limit)
    assert not t.is_alive(), f"still blocked after {limit}s"
    assert raised, "returned instead of raising"
    return raised[0]


def test_a_full_listen_queue_times_out_connecting(tmp_path):
    """A broker stopped (SIGSTOP) long enough fills its listen queue; a blocking
    connect() would then wait for room for ever. ``timeout`` bounds it."""
    path = str(tmp_path / "full.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(0)
    queued: List[socket.socket] = []
    try:
        # Fill the queue: connect without blocking until the kernel says it is full.
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            s.setblocking(False)
            try:
                s.connect(path)
            except BlockingIOError:
                s.close()
                break
            queued.append(s)
            assert len(queued) < 100_000, "the listen queue never filled"
        e = _bounded(lambda: fdbroker.Client(path, timeout=0.5))
        assert isinstance(e, TimeoutError), repr(e)
        assert "listen queue stayed full" in str(e), str(e)
    finally:
        for s in queued:
            s.close()
        listener.close()


def test_a_listener_that_never_accepts_times_out_greeting(tmp_path):
    """Room in the queue but nobody accepting (a stopped broker): the greeting times
    out within ``timeout``."""
    path = str(tmp_path / "stopped.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(8)
    try:
        e = _bounded(lambda: fdbroker.Client(path, timeout=0.5))
        assert isinstance(e, TimeoutError), repr(e)
        assert "did not answer the greeting" in str(e), str(e)
    finally:
        listener.close()
