"""An OS-level lock on a folder, so two runs never write the same output or progress at once.

:class:`FolderLock` takes an exclusive ``fcntl.flock`` on ``<folder>/.pytorchfi-deepvigor.lock``
and writes who holds it (process id, host, command, start time) into that file. The operating
system drops the lock when the holder exits, also after ``kill -9``: a lock file left behind is
never stale, and the next run simply takes it. A second run that finds the lock held raises
:class:`FolderInUse` naming the holder.

Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with FolderLock(d, "progress_dir"):
    ...         try:
    ...             FolderLock(d, "progress_dir").acquire()
    ...         except FolderInUse as exc:
    ...             print(str(exc).split(" by ")[0].endswith("is in use"))
    True
"""

from __future__ import annotations

import json
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locking
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "FolderInUse", "FolderLock"]

LOCK_NAME = ".pytorchfi-deepvigor.lock"


class FolderInUse(OSError):
    """Another live process holds the lock on the folder (the message names it)."""


class FolderLock:
    """Exclusive lock on ``folder`` (created if needed) until :meth:`release` or the block ends.

    Args:
        folder: the folder to lock.
        what: how the folder is named in the error, e.g. ``"--out"`` or ``"progress_dir"``.
    """

    def __init__(self, folder: str | Path, what: str = "folder") -> None:
        self.folder = Path(folder)
        self.what = what
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.folder / LOCK_NAME

    def acquire(self) -> FolderLock:
        """Take the lock, or raise :class:`FolderInUse` naming the process that holds it."""
        if self._fd is not None or fcntl is None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _describe(os.read(fd, 4096))
            os.close(fd)
            raise FolderInUse(
                f"{self.what} {self.folder} is in use by {holder}: wait for that run to finish, "
                f"stop it, or choose another {self.what}"
            ) from None
        os.ftruncate(fd, 0)
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join(sys.argv) or "python",
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        os.write(fd, (json.dumps(info) + "\n").encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the lock file stays; it is not stale without a live holder)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __del__(self) -> None:  # an unreleased lock goes with its object
        self.release()

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _describe(data: bytes) -> str:
    try:
        info = json.loads(data)
        return (
            f"process {info['pid']} on {info['host']} ({info['command']!r}, "
            f"started {info['started']})"
        )
    except (ValueError, KeyError, TypeError):
        return "another process (which is starting up)"
