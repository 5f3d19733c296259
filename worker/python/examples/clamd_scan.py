#!/usr/bin/env python3
"""Scan files with ClamAV's clamd, which never opens them: fdbroker does.

The original clamd pattern is a scanner that runs unprivileged and scans descriptors
passed to it. Here the broker opens each file (by its policy, with its audit line) and
this script hands the descriptor on to clamd with its FILDES command, so neither this
process nor clamd needs any access to the files.

    clamd_scan.py [--broker SOCKET] --clamd SOCKET PATH...

A PATH that is a directory is scanned whole: the broker lists it (the policy must grant
``directory`` on it) and the script recurses, so a root-only spool needs no shell glob,
which the unprivileged user's shell could not expand there:

    clamd_scan.py --clamd /run/clamav/clamd.ctl /var/spool/quarantine/

Prints one line per file: ``PATH: OK``, ``PATH: SIGNATURE FOUND``, or
``PATH: ERROR reason``. Exit status: 0 all clean, 1 something found, 2 an error (like
clamdscan). One descriptor travels per FILDES message; all of them over one clamd
connection in an IDSESSION.

Without --broker, the broker is found as usual (FDBROKER_FD, FDBROKER_SOCKET, then
/run/fdbroker/fdbroker.sock). clamd must listen on a local (Unix) socket: descriptors
cannot cross TCP.
"""

from __future__ import annotations

import argparse
import os
import socket
import stat as stat_module
import sys
from typing import Iterator, List, Tuple

import fdbroker


class Clamd:
    """One clamd session (``zIDSESSION`` ... ``zEND``) over its local socket.

    clamd reads a command, then expects the descriptor in the next message, carrying
    one byte of data and the descriptor as SCM_RIGHTS (as clamdscan sends it). In a
    session each reply starts with the request's number, ``N: fd[M]: ...``, and ends
    with a NUL.
    """

    def __init__(self, path: str, timeout: float = 60.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.sock.sendall(b"zIDSESSION\0")
        self.pending = b""
        self.count = 0

    def scan_fd(self, fd: int) -> str:
        """Scan one open descriptor; returns clamd's verdict (``OK``,
        ``NAME FOUND``, or ``... ERROR``)."""
        self.sock.sendall(b"zFILDES\0")
        socket.send_fds(self.sock, [b"\0"], [fd])
        self.count += 1
        number, verdict = self._reply()
        if number != self.count:
            raise RuntimeError(f"clamd answered request {number}, expected {self.count}")
        # "fd[12]: Eicar-Signature FOUND" -> "Eicar-Signature FOUND"
        _, _, verdict = verdict.partition(": ")
        return verdict

    def _reply(self) -> Tuple[int, str]:
        while b"\0" not in self.pending:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("clamd closed the session")
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\0")
        text = line.decode("utf-8", "replace")
        number, _, rest = text.partition(": ")
        try:
            return int(number), rest
        except ValueError:
            raise RuntimeError(f"clamd: {text}") from None

    def close(self) -> None:
        try:
            self.sock.sendall(b"zEND\0")
        except OSError:
            pass
        self.sock.close()


# Paths per request to the broker: bounds the descriptors held at once.
BATCH = 128


def files(broker: fdbroker.Client, paths: List[str], failed: List[str]) -> Iterator[str]:
    """Each path, with every directory among them replaced by the files beneath it, as
    the broker lists them (names the policy hides are left out by the broker). A path
    the broker will not stat is given as is, so its open reports the reason."""
    for path in paths:
        # The broker takes paths without a trailing slash (`q/` names the directory q).
        path = path.rstrip("/") or "/"
        try:
            is_dir = stat_module.S_ISDIR(broker.stat(path).st_mode)
        except OSError:
            is_dir = False
        if not is_dir:
            yield path
            continue
        pending = [path]
        while pending:
            directory = pending.pop()
            try:
                entries = sorted(broker.scandir(directory), key=lambda e: e.name)
            except OSError as e:
                print(f"{directory}: ERROR {e.strerror}", flush=True)
                failed.append(directory)
                continue
            subdirs = []
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    yield entry.path
            pending.extend(reversed(subdirs))


def scan(broker: fdbroker.Client, clamd: Clamd, paths: List[str]) -> int:
    status = 0
    batch: List[str] = []
    failed: List[str] = []
    for path in files(broker, paths, failed):
        batch.append(path)
        if len(batch) == BATCH:
            status = max(status, scan_batch(broker, clamd, batch))
            batch = []
    if batch:
        status = max(status, scan_batch(broker, clamd, batch))
    return 2 if failed else status


def scan_batch(broker: fdbroker.Client, clamd: Clamd, paths: List[str]) -> int:
    status = 0
    # One round trip to the broker for many paths; each descriptor is closed as soon
    # as clamd has answered for it.
    results = broker.open_many_fd(paths, os.O_RDONLY, errors="return")
    try:
        for i, (path, r) in enumerate(zip(paths, results)):
            if isinstance(r, OSError):
                print(f"{path}: ERROR {r.strerror}", flush=True)
                status = max(status, 2)
                continue
            verdict = clamd.scan_fd(r)
            os.close(r)
            results[i] = None
            print(f"{path}: {verdict}", flush=True)
            if verdict.endswith("FOUND"):
                status = max(status, 1)
            elif verdict != "OK":
                status = 2
    finally:
        for r in results:
            if isinstance(r, int):
                os.close(r)
    return status


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--broker", help="the broker's socket (default: as fdbroker.Client finds it)")
    ap.add_argument("--clamd", required=True, help="clamd's LocalSocket")
    ap.add_argument("paths", nargs="+")
    args = ap.parse_args(argv)
    try:
        broker = fdbroker.Client(args.broker, timeout=60)
    except OSError as e:
        print(f"clamd_scan: {e}", file=sys.stderr)
        return 2
    with broker:
        clamd = Clamd(args.clamd)
        try:
            return scan(broker, clamd, args.paths)
        finally:
            clamd.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
