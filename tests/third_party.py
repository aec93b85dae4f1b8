"""Third-party model code for the tests and the validation scripts, taken from the package
registry when first needed.

``timm()`` returns the ``timm`` module of a pinned, SHA-256-checked wheel (pure Python, imported
from the wheel itself: nothing is installed into the environment), cached under the package's
cache directory after the first download. Without the registry and without a cached wheel the
calling test is skipped with the reason, never passed.

The validation scripts (``validation/coverage.py --timm``) use the same wheel through
:func:`import_timm` and :func:`download`, which raise :class:`Unavailable` with the reason
instead of skipping (they need no pytest).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from pytorchfi_deepvigor.zoo.cache import resolve_cache_dir

TIMM_VERSION = "1.0.31"
TIMM_WHEEL = f"timm-{TIMM_VERSION}-py3-none-any.whl"
TIMM_SHA256 = "5bd50f7d0fe6d09bf9285ac2523234a1b7e6bf075c0be3e7aed09139fcb617c7"


class Unavailable(RuntimeError):
    """A pinned distribution file could not be had (the registry could not be reached and no
    cached copy exists); the message says why."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def download(
    name: str,
    version: str,
    filename: str,
    sha256: str,
    *,
    sdist: bool = False,
    folder: str = "third_party",
) -> Path:
    """A pinned distribution file (a wheel, or the sdist) from the registry, cached under the
    package's cache directory (``folder``) and checked against ``sha256``; raises
    :class:`Unavailable` with the reason when it cannot be had."""
    cache = resolve_cache_dir() / folder
    cached = cache / filename
    if cached.is_file() and _sha256(cached) == sha256:
        return cached
    with tempfile.TemporaryDirectory() as tmp:
        kind = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
        command = [sys.executable, "-m", "pip", "download", *kind, "--no-deps"]
        command += ["--retries", "1", "--timeout", "30", "-q", "-d", tmp, f"{name}=={version}"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            raise Unavailable(
                f"the package registry could not be reached: `pip download` of {name} {version} timed out"
            ) from None
        got = Path(tmp) / filename
        if done.returncode != 0 or not got.is_file():
            why = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise Unavailable(
                f"the package registry could not be reached: `pip download` of {name} {version} failed: {why}"
            )
        digest = _sha256(got)
        assert digest == sha256, f"{filename} has SHA-256 {digest}, expected {sha256}"
        cache.mkdir(parents=True, exist_ok=True)
        part = cache / f".{filename}.{os.getpid()}.part"
        shutil.copyfile(got, part)
        os.replace(part, cached)  # atomic: a concurrent run sees the whole file or none
    return cached


def fetch(
    name: str,
    version: str,
    filename: str,
    sha256: str,
    *,
    sdist: bool = False,
    folder: str = "third_party",
) -> Path:
    """:func:`download` for a test: ``pytest.skip`` with the reason when the file cannot be
    had."""
    try:
        return download(name, version, filename, sha256, sdist=sdist, folder=folder)
    except Unavailable as exc:
        import pytest

        pytest.skip(str(exc))


def import_timm() -> ModuleType:
    """timm 1.0.31, imported from its wheel; raises :class:`Unavailable` when the wheel cannot
    be had."""
    wheel = download("timm", TIMM_VERSION, TIMM_WHEEL, TIMM_SHA256)
    if str(wheel) not in sys.path:
        sys.path.insert(0, str(wheel))
    module = importlib.import_module("timm")
    assert module.__version__ == TIMM_VERSION, module.__file__
    return module


def timm() -> ModuleType:
    """timm 1.0.31, imported from its wheel (for a test: skipped with the reason when the wheel
    cannot be had)."""
    fetch("timm", TIMM_VERSION, TIMM_WHEEL, TIMM_SHA256)
    return import_timm()
