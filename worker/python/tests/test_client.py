"""The client against a real ``fdbroker serve``, run as ``nobody`` by
``tests/tests/python.rs``, which builds this tree (root-owned) and policy:

    in/            0700   read, directory   (deny: in/keys/)
      a.txt        0600   "alpha\\n"
      b.bin        0600   bytes 0..255
      \\xff.bin     0600   "bytes\\n"        (a name that is not UTF-8)
      sub/c.txt    0600   "c\\n"
      many/fNNN    0600   "fNNN\\n" for NNN in 000..199
      keys/private.pem    (denied by the policy)
    out/           0755   read, write, create
      existing.log 0600   "0123456789"
"""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import sys
import threading

import pytest

import fdbroker

from conftest import open_fds


def test_this_process_cannot_open_the_tree_itself(tree):
    assert os.getuid() != 0, "these tests must run unprivileged"
    with pytest.raises(PermissionError):
        open(tree / "in" / "a.txt", "rb")


def test_open_reads_a_root_only_file(client, tree):
    path = tree / "in" / "a.txt"
    with client.open(path) as f:
        assert f.read() == b"alpha\n"
        assert f.name == str(path)
        assert f.mode == "rb"
    with client.open(str(path), "r") as f:
        assert f.read() == "alpha\n"
    with client.open(os.fsencode(path), "rb", buffering=0) as f:
        assert f.read() == b"alpha\n"
    with client.open(tree / "in" / "b.bin") as f:
        assert f.read() == bytes(range(256))
    with client.open(os.fsencode(tree / "in") + b"/\xff.bin") as f:
        assert f.read() == b"bytes\n"
    assert client.client_name == "python-tests"
    assert client.max_batch == 128


def test_open_fd_is_non_inheritable_blocking_and_read_only(client, tree):
    fd = client.open_fd(tree / "in" / "a.txt")
    try:
        assert not os.get_inheritable(fd)
        fl = fcntl.fcntl(fd, fcntl.F_GETFL)
        assert fl & os.O_ACCMODE == os.O_RDONLY
        assert not fl & os.O_NONBLOCK
        assert os.read(fd, 100) == b"alpha\n"
    finally:
        os.close(fd)
    fd = client.open_fd(tree / "in" / "a.txt", os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
    finally:
        os.close(fd)


def test_errors_are_the_usual_oserror_subclasses(client, tree):
    denied = tree / "in" / "keys" / "private.pem"
    with pytest.raises(PermissionError) as e:
        client.open(denied)
    assert e.value.errno == errno.EACCES
    assert e.value.strerror == "permission denied by the broker's policy"
    assert e.value.filename == str(denied)
    assert str(denied) in str(e.value)

    with pytest.raises(FileNotFoundError) as e:
        client.open(tree / "in" / "missing")
    assert e.value.errno == errno.ENOENT
    with pytest.raises(IsADirectoryError):
        client.open(tree / "in" / "sub")
    with pytest.raises(NotADirectoryError):
        client.open_fd(tree / "in" / "a.txt", os.O_RDONLY | os.O_DIRECTORY)
    # Outside the policy, a missing file looks the same as a present one.
    with pytest.raises(PermissionError):
        client.open("/nonexistent/anywhere")
    with pytest.raises(PermissionError):
        client.open("/etc/hostname")
    # Relative and unclean paths are the broker's EINVAL, not a lookup.
    for bad in ("relative.txt", str(tree / "in" / ".." / "in" / "a.txt")):
        with pytest.raises(OSError) as e:
            client.open(bad)
        assert e.value.errno == errno.EINVAL, bad
    # Flags the broker has no word for are refused here.
    for flags in (os.O_RDONLY | os.O_NOFOLLOW, os.O_WRONLY | os.O_CREAT, os.O_RDWR | os.O_CREAT | os.O_EXCL):
        with pytest.raises(OSError) as e:
            client.open_fd(tree / "out" / "x", flags)
        assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        client.open("/" + "a" * 5000)
    assert e.value.errno == errno.ENAMETOOLONG
    with pytest.raises(ValueError):
        client.open(tree / "in" / "a.txt", "rw")
    # None of this broke the connection.
    with client.open(tree / "in" / "a.txt") as f:
        assert f.read() == b"alpha\n"


def test_open_many_returns_or_raises_and_leaks_nothing(client, tree):
    many = tree / "in" / "many"
    paths = [many / f"f{i:03}" for i in range(200)]  # two batches of the broker's 128
    files = client.open_many(paths)
    try:
        assert [f.read() for f in files] == [f"f{i:03}\n".encode() for i in range(200)]
        assert all(f.name == str(p) for f, p in zip(files, paths))
    finally:
        for f in files:
            f.close()

    mixed = [paths[0], tree / "in" / "keys" / "private.pem", paths[1], tree / "in" / "missing"]
    before = open_fds()
    results = client.open_many(mixed, errors="return")
    assert isinstance(results[1], PermissionError) and results[1].filename == str(mixed[1])
    assert isinstance(results[3], FileNotFoundError)
    assert results[0].read() == b"f000\n" and results[2].read() == b"f001\n"
    results[0].close()
    results[2].close()
    assert open_fds() == before

    # Raising: the first failure, and every descriptor received is closed first,
    # including those of earlier batches.
    failing = paths[:150] + [tree / "in" / "keys" / "private.pem"] + paths[150:]
    before = open_fds()
    with pytest.raises(PermissionError) as e:
        client.open_many(failing)
    assert e.value.filename == str(tree / "in" / "keys" / "private.pem")
    assert open_fds() == before

    fds = client.open_many_fd(paths[:3])
    try:
        assert [os.read(fd, 10) for fd in fds] == [b"f000\n", b"f001\n", b"f002\n"]
    finally:
        for fd in fds:
            os.close(fd)
    assert client.open_many([]) == []


def test_writes_truncate_append_and_create(client, tree):
    log = tree / "out" / "existing.log"
    with client.open(log, "ab") as f:
        f.write(b"++")
    with client.open(log, "r+b") as f:
        assert f.read() == b"0123456789++"
    with client.open(log, "wb") as f:
        f.write(b"new")
    with client.open(log, "rb") as f:
        assert f.read() == b"new"
    with client.open(log, "w") as f:
        f.write("text\n")
    with client.open(log) as f:
        assert f.read() == b"text\n"
    made = tree / "out" / f"made-{os.getpid()}.txt"
    with client.open(made, "xb") as f:
        f.write(b"made")
    with client.open(made) as f:
        assert f.read() == b"made"
    with pytest.raises(FileExistsError):
        client.open(made, "xb")
    # "w" opens an existing file only: the broker never creates without "x".
    with pytest.raises(FileNotFoundError):
        client.open(tree / "out" / "not-there", "wb")
    # Reading is not writing.
    with pytest.raises(PermissionError):
        client.open(tree / "in" / "a.txt", "ab")


def test_scandir_lists_a_directory_it_cannot_read_itself(client, tree):
    with pytest.raises(PermissionError):
        os.listdir(tree / "in")
    with client.scandir(tree / "in") as it:
        entries = {e.name: e for e in it}
    assert set(entries) >= {"a.txt", "b.bin", "sub", "many"}
    # The deny carve-out is left out of the broker's listing, as if it did not exist.
    assert "keys" not in entries
    assert entries["sub"].is_dir() and not entries["sub"].is_file()
    assert entries["a.txt"].is_file() and not entries["a.txt"].is_symlink()
    assert entries["a.txt"].path == str(tree / "in" / "a.txt")
    assert os.fspath(entries["a.txt"]) == entries["a.txt"].path
    # A stat is the broker's, under its policy, after the iterator is closed too.
    assert entries["a.txt"].stat().st_size == client.stat(tree / "in" / "a.txt").st_size > 0

    # Entries are good for opening through the broker, walking the whole tree.
    seen = {}

    def walk(path):
        with client.scandir(path) as it:
            for e in it:
                if e.is_dir():
                    walk(e.path)
                else:
                    with client.open(e.path) as f:
                        seen[e.path] = f.read()

    walk(str(tree / "in"))
    assert seen[str(tree / "in" / "sub" / "c.txt")] == b"c\n"
    assert len([p for p in seen if "/many/" in p]) == 200

    # Bytes in, bytes out (names need not be UTF-8).
    before = open_fds()
    with client.scandir(os.fsencode(tree / "in")) as it:
        names = {e.name for e in it}
        assert b"\xff.bin" in names
    assert open_fds() == before
    with pytest.raises(NotADirectoryError):
        client.scandir(tree / "in" / "a.txt")


def test_one_client_serves_many_threads(client, tree):
    many = tree / "in" / "many"
    failures = []

    def work(n):
        try:
            for i in range(30):
                k = (n * 7 + i) % 200
                with client.open(many / f"f{k:03}") as f:
                    assert f.read() == f"f{k:03}\n".encode()
                with pytest.raises(PermissionError):
                    client.open(tree / "in" / "keys" / "private.pem")
        except BaseException as e:  # reported below, in the main thread
            failures.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures


def test_files_outlive_the_client(socket_path, tree):
    c = fdbroker.Client(socket_path)
    f = c.open(tree / "in" / "a.txt")
    c.close()
    assert c.closed
    assert f.read() == b"alpha\n"
    f.close()
    with pytest.raises(ValueError):
        c.open(tree / "in" / "a.txt")


def test_socket_from_the_environment(socket_path, tree, monkeypatch):
    monkeypatch.delenv(fdbroker.ENV_FD, raising=False)
    monkeypatch.setenv(fdbroker.ENV_SOCKET, socket_path)
    with fdbroker.Client() as c:
        with c.open(tree / "in" / "a.txt") as f:
            assert f.read() == b"alpha\n"
    monkeypatch.setenv(fdbroker.ENV_SOCKET, socket_path + ".missing")
    with pytest.raises(FileNotFoundError) as e:
        fdbroker.Client()
    assert "cannot connect to the broker" in str(e.value)


def test_an_inherited_connection_serves_every_client_and_process(socket_path, tree):
    """FDBROKER_FD, as ``fdbroker run`` sets it, is shared by the worker's whole tree:
    each client, in each process, asks the broker over it for a connection of its own,
    and the inherited descriptor is left for the process's children."""
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(socket_path)
    s.set_inheritable(True)
    path = str(tree / "in" / "a.txt")
    child = (
        "import fdbroker; c = fdbroker.Client(timeout=30); "
        f"print(c.open({path!r}).read().decode().strip(), c.stat({path!r}).st_size)"
    )
    code = f"""
import os, subprocess, sys, fdbroker
fd = int(os.environ["FDBROKER_FD"])
a = fdbroker.Client(timeout=30)
b = fdbroker.Client(timeout=30)
assert fd not in (a.fileno(), b.fileno()) and a.fileno() != b.fileno()
assert os.get_inheritable(fd)
for c in (a, b):
    with c.open({path!r}) as f:
        assert f.read() == b"alpha\\n"
out = subprocess.run([sys.executable, "-c", {child!r}], pass_fds=[fd],
                     capture_output=True, text=True, timeout=60)
assert out.returncode == 0, out.stderr
print("child:", out.stdout.strip())
with a.open({path!r}) as f:
    assert f.read() == b"alpha\\n"
print("ok")
"""
    env = dict(os.environ, FDBROKER_FD=str(s.fileno()))
    env.pop(fdbroker.ENV_SOCKET, None)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, pass_fds=[s.fileno()], capture_output=True,
        text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["child:", "alpha", "6", "ok"]
    # Nobody greeted the shared connection: it still takes a hello.
    from fdbroker import _wire

    s.settimeout(30)
    s.send(_wire.encode(_wire.Kind.HELLO, _wire.Hello(_wire.PROTOCOL_VERSION, "test")))
    welcome = _wire.decode(_wire.Kind.WELCOME, s.recv(_wire.MAX_MESSAGE))
    assert isinstance(welcome, _wire.Accepted), welcome
    s.close()


def test_stat_answers_like_os_stat_under_the_policy(client, tree):
    import stat

    path = tree / "in" / "a.txt"
    st = client.stat(path)
    assert isinstance(st, os.stat_result)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert (st.st_size, st.st_uid, st.st_gid, st.st_nlink) == (6, 0, 0, 1)
    fd = client.open_fd(path)
    try:
        own = os.fstat(fd)
    finally:
        os.close(fd)
    for field in ("st_ino", "st_dev", "st_mode", "st_size", "st_mtime_ns", "st_ctime_ns",
                  "st_blksize", "st_blocks", "st_rdev"):
        assert getattr(st, field) == getattr(own, field), field
    assert st.st_mtime == pytest.approx(own.st_mtime)
    assert stat.S_ISDIR(client.stat(tree / "in" / "sub").st_mode)
    assert stat.S_ISREG(client.stat(os.fsencode(tree / "in") + b"/\xff.bin").st_mode)

    denied = tree / "in" / "keys" / "private.pem"
    with pytest.raises(PermissionError) as e:
        client.stat(denied)
    assert e.value.strerror == "permission denied by the broker's policy"
    assert e.value.filename == str(denied)
    with pytest.raises(FileNotFoundError):
        client.stat(tree / "in" / "missing")
    # Outside the policy a missing path looks like a present one.
    for outside in ("/etc/hostname", "/nonexistent/anywhere"):
        with pytest.raises(PermissionError):
            client.stat(outside)
    with pytest.raises(OSError) as e:
        client.stat("relative")
    assert e.value.errno == errno.EINVAL
    with client.open(path) as f:
        assert f.read() == b"alpha\n"