"""fdbroker: open files through the fdbroker broker and get their descriptors.

A process that may not open files itself (it runs as ``nobody``, in a sandbox) asks
the broker, which decides by its policy, opens the file, and passes the descriptor
over a Unix socket::

    import fdbroker

    with fdbroker.Client() as c:            # FDBROKER_FD, FDBROKER_SOCKET, default socket
        with c.open("/var/spool/quarantine/sample.bin") as f:   # like built-in open()
            data = f.read()
        fd = c.open_fd("/var/spool/quarantine/a.bin", os.O_RDONLY)   # like os.open()
        files = c.open_many(paths)                               # one round trip per batch
        for entry in c.scandir("/var/spool/quarantine"):         # like os.scandir()
            ...

Failures are the usual ``OSError`` subclasses (``PermissionError`` outside the
policy, ``FileNotFoundError``, ...) with the broker's errno, its reason and the path.
Pure Python (3.9+), no dependencies; the protocol is ``shared/PROTOCOL.md`` in the
fdbroker repository.
"""

from ._client import (
    DEFAULT_SOCKET,
    ENV_FD,
    ENV_SOCKET,
    Client,
    DirEntry,
    ScandirIterator,
    __version__,
)
from ._wire import Access, FileKind, FileMeta, ProtocolError

__all__ = [
    "Access",
    "Client",
    "DEFAULT_SOCKET",
    "DirEntry",
    "ENV_FD",
    "ENV_SOCKET",
    "FileKind",
    "FileMeta",
    "ProtocolError",
    "ScandirIterator",
    "__version__",
]
