"""Third-party model code for the tests, taken from the package registry at test time.

``timm()`` returns the ``timm`` module of a pinned, SHA-256-checked wheel (pure Python, imported
from the wheel itself: nothing is installed into the environment), cached under the package's
cache directory after the first download. Without the registry and without a cached wheel the
calling test is skipped with the reason, never passed.
"""

from __future__ import annotations

import hashlib
import importlib
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import pytest

from pytorchfi_deepvigor.zoo.cache import resolve_cache_dir

TIMM_VERSION = "1.0.31"
TIMM_WHEEL = f"timm-{TIMM_VERSION}-py3-none-any.whl"
TIMM_SHA256 = "5bd50f7d0fe6d09bf9285ac2523234a1b7e6bf075c0be3e7aed09139fcb617c7"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_wheel(name: str, version: str, wheel: str, sha256: str) -> Path:
    """The cached wheel, downloaded first if needed; ``pytest.skip`` when it cannot be had."""
    cache = resolve_cache_dir() / "third_party"
    cached = cache / wheel
    if cached.is_file() and _sha256(cached) == sha256:
        return cached
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
        command += ["--retries", "1", "--timeout", "30", "-q", "-d", tmp, f"{name}=={version}"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            pytest.skip(
                f"the package registry could not be reached: `pip download {name}` timed out"
            )
        got = Path(tmp) / wheel
        if done.returncode != 0 or not got.is_file():
            why = (done.stderr.strip().splitlines() or ["no output"])[-1]
            pytest.skip(f"the package registry could not be reached: `pip download {name}`: {why}")
        if _sha256(got) != sha256:
            pytest.fail(f"{wheel} from the registry does not have the pinned SHA-256")
        cache.mkdir(parents=True, exist_ok=True)
        cached.write_bytes(got.read_bytes())
    return cached


def timm() -> ModuleType:
    """timm 1.0.31, imported from its wheel."""
    wheel = fetch_wheel("timm", TIMM_VERSION, TIMM_WHEEL, TIMM_SHA256)
    if str(wheel) not in sys.path:
        sys.path.insert(0, str(wheel))
    module = importlib.import_module("timm")
    assert module.__version__ == TIMM_VERSION, module.__file__
    return module
