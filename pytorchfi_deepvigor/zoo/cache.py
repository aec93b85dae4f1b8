"""The checkpoint cache: where it lives, atomic writes, and reads that detect damage.

The cache directory is, in order of precedence: an explicit ``cache_dir`` argument, the
environment variable ``PYTORCHFI_DEEPVIGOR_CACHE``, ``$XDG_CACHE_HOME/pytorchfi_deepvigor``,
``~/.cache/pytorchfi_deepvigor``. A file is written to a temporary file in the same folder and
moved into place with ``os.replace``, so a reader never sees half a file and two processes
writing the same checkpoint leave one whole copy. Each file carries a SHA-256 digest of its
weights; a file that does not load, has another format or does not match its digest is
reported as damaged (and retrained by the caller).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pytorchfi_deepvigor.zoo.config import canonical_config

__all__ = [
    "CACHE_ENV_VAR",
    "CHECKPOINT_FORMAT",
    "DamagedCacheFile",
    "resolve_cache_dir",
    "state_dict_digest",
    "atomic_torch_save",
    "read_cache_file",
    "short_error",
    "torch_file_problem",
]

CACHE_ENV_VAR = "PYTORCHFI_DEEPVIGOR_CACHE"
CHECKPOINT_FORMAT = "pytorchfi_deepvigor.zoo.checkpoint/1"


class DamagedCacheFile(Exception):
    """A cache file exists but is partial, corrupt or of another format."""


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory (it is not created here).

    Args:
        cache_dir: An explicit directory; wins over the environment.

    Returns:
        ``cache_dir``, else ``$PYTORCHFI_DEEPVIGOR_CACHE``, else
        ``$XDG_CACHE_HOME/pytorchfi_deepvigor``, else ``~/.cache/pytorchfi_deepvigor``.

    Example:
        >>> resolve_cache_dir("/tmp/zoo-cache").as_posix()
        '/tmp/zoo-cache'
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "pytorchfi_deepvigor"


def state_dict_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of a state dict, in key order.

    Example:
        >>> len(state_dict_digest({"w": torch.zeros(2)}))
        64
    """
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def atomic_torch_save(payload: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then ``os.replace`` it into place.

    Args:
        payload: What to save.
        path: The final file; its folder is created if needed.

    Returns:
        The final path.

    Raises:
        OSError: If the folder cannot be created or written (no temporary file is left).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(payload, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return path


def torch_file_problem(path: str | os.PathLike[str]) -> str | None:
    """Why a file cannot be a ``torch.save`` file, from its first bytes (``None``: it may be one).

    ``torch.save`` writes a zip archive (the legacy format: a pickle), so anything else (a text
    file, random bytes) is told apart before ``torch.load`` answers with a long message.

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile(suffix=".pt") as f:
        ...     _ = f.write(b"hello"); f.flush()
        ...     torch_file_problem(f.name)
        'it is not a torch.save file (neither a zip archive nor a pickle)'
    """
    with open(path, "rb") as stream:
        head = stream.read(4)
    if not head:
        return "it is empty"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return None
    return "it is not a torch.save file (neither a zip archive nor a pickle)"


def short_error(error: BaseException, limit: int = 160) -> str:
    """An exception as one short line: its type and the first line of its message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_cache_file(path: Path, expected_config: Mapping[str, Any]) -> dict[str, Any]:
    """Load a zoo checkpoint written by the cache and check it is whole and the right one.

    Args:
        path: The cache file (it must exist).
        expected_config: The training configuration the file must hold.

    Returns:
        The payload: ``format``, ``config``, ``record``, ``state_dict``, ``digest``.

    Raises:
        DamagedCacheFile: If the file does not load, has another format or configuration,
            or its weights do not match their digest.
    """
    problem = torch_file_problem(path)
    if problem is not None:
        raise DamagedCacheFile(f"{path} does not load: {problem}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a truncated or foreign file
        raise DamagedCacheFile(f"{path} does not load: {short_error(error)}") from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise DamagedCacheFile(f"{path} is not a {CHECKPOINT_FORMAT} file")
    stored = payload.get("config")
    if not isinstance(stored, dict) or canonical_config(stored) != canonical_config(
        dict(expected_config)
    ):
        raise DamagedCacheFile(f"{path} holds another configuration: {payload.get('config')}")
    state_dict = payload.get("state_dict")
    if not isinstance(state_dict, dict) or state_dict_digest(state_dict) != payload.get("digest"):
        raise DamagedCacheFile(f"{path}: the weights do not match their digest")
    if not isinstance(payload.get("record"), dict):
        raise DamagedCacheFile(f"{path} has no training record")
    return payload
