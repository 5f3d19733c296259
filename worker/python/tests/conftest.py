"""Shared fixtures.

The broker tests need a real ``fdbroker serve`` and a prepared tree; the Rust test
``tests/tests/python.rs`` provides both and runs this suite as ``nobody``:

- ``FDBROKER_TEST_SOCKET``: the broker's socket;
- ``FDBROKER_TEST_TREE``: the tree (layout in ``test_client.py``);
- ``FDBROKER_TEST_VECTORS``: ``shared/testdata/vectors.json`` (default: found from
  this file's place in the repository).

Without the first two the broker tests are skipped, which that Rust test refuses.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Dict

import pytest

import fdbroker


def _vectors_path() -> pathlib.Path:
    given = os.environ.get("FDBROKER_TEST_VECTORS")
    if given:
        return pathlib.Path(given)
    return pathlib.Path(__file__).resolve().parents[3] / "shared" / "testdata" / "vectors.json"


@pytest.fixture(scope="session")
def vectors() -> Dict[str, Any]:
    with open(_vectors_path(), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="session")
def tree() -> pathlib.Path:
    t = os.environ.get("FDBROKER_TEST_TREE")
    if not t:
        pytest.skip("FDBROKER_TEST_TREE is not set (tests/tests/python.rs sets it)")
    return pathlib.Path(t)


@pytest.fixture(scope="session")
def socket_path() -> str:
    s = os.environ.get("FDBROKER_TEST_SOCKET")
    if not s:
        pytest.skip("FDBROKER_TEST_SOCKET is not set (tests/tests/python.rs sets it)")
    return s


@pytest.fixture
def client(socket_path: str):
    with fdbroker.Client(socket_path, timeout=30) as c:
        yield c


def open_fds() -> int:
    """How many descriptors this process holds (the suite runs in one thread)."""
    return len(os.listdir("/proc/self/fd"))
