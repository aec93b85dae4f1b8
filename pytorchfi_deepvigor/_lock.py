"""An OS-level lock on a folder, so two runs never write the same output or progress at once.

:class:`FolderLock` takes an exclusive ``fcntl.flock`` on ``<folder>/.pytorchfi-deepvigor.lock``
(or another name ending so, to lock one file's work within the folder) and writes who holds it (process id, host, command, start time) into that file. The operating
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

__all__ = ["LOCK_NAME", "FolderInUse", "FolderLock", "is_lock_file"]

LOCK_NAME = ".pytorchfi-deepvigor.lock"


class FolderInUse(OSError):
    """Another live process holds the lock on the folder (the message names it)."""


class FolderLock:
    """Exclusive lock on ``folder`` (created if needed) until :meth:`release` or the block ends.

    Args:
        folder: the folder to lock.
        what: how the folder is named in the error, e.g. ``"--out"`` or ``"progress_dir"``.
        name: the lock file's name; another name locks something else in the same folder (a
            progress log locks its own file, so two campaigns may share a ``progress_dir``).
            It must end with :data:`LOCK_NAME`.
        label: what the error says is in use (default: ``what`` and the folder).
    """

    def __init__(
        self,
        folder: str | Path,
        what: str = "folder",
        *,
        name: str = LOCK_NAME,
        label: str | None = None,
    ) -> None:
        if not name.endswith(LOCK_NAME):
            raise ValueError(f"expected a lock file name ending with {LOCK_NAME}, got {name!r}")
        self.folder = Path(folder)
        self.what = what
        self.name = name
        self.label = label or f"{what} {self.folder}"
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.folder / self.name

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
                f"{self.label} is in use by {holder}: wait for that run to finish, "
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


def is_lock_file(path: str | Path) -> bool:
    """Whether ``path`` names a lock file of this module.

    Example:
        >>> is_lock_file("out/.pytorchfi-deepvigor.lock"), is_lock_file("out/result.json")
        (True, False)
    """
    return Path(path).name.endswith(LOCK_NAME)


def _describe(data: bytes) -> str:
    try:
        info = json.loads(data)
        return (
            f"process {info['pid']} on {info['host']} ({info['command']!r}, "
            f"started {info['started']})"
        )
    except (ValueError, KeyError, TypeError):
        return "another process (which is starting up)"
