"""A pytest plugin for the differential run: what each upstream test did, not just whether it passed.

Loaded with ``-p upstream_recorder`` into both runs of PyTorchFI 0.6.0's test suite (plain and
with ``DeepVigorFI``). It changes no outcome. Per test it records:

* the outcome (``passed``, ``failed``, ``skipped``, ``error``), and for a failure the exception
  type and the line of the test file it came through;
* the test function's local variables when it returns or raises, and the attributes its
  ``setup_class`` left on the class: numbers, strings and lists of them as they are, tensors as
  shape, dtype and a SHA-256 of their bytes (so corrupted outputs are compared bit for bit),
  everything else (models, injectors) left out;
* digests of Python's ``random`` state and torch's CPU RNG state after the test (the error
  models draw their faults from ``random``).

So that both runs draw the same numbers, Python's ``random`` is seeded once when the session
starts (torch's generator starts from its fixed default seed anyway): several upstream tests
draw faults without seeding, which makes their faults differ from run to run, not between
injectors.

The records go to the JSON file named by ``$PFI_UPSTREAM_RECORD`` when the session ends.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from pathlib import Path
from typing import Any

import pytest

RECORD_ENV = "PFI_UPSTREAM_RECORD"
_records: dict[str, dict[str, Any]] = {}


SESSION_SEED = 0


def pytest_configure(config: pytest.Config) -> None:
    random.seed(SESSION_SEED)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def summary(value: Any, depth: int = 0) -> Any:
    """A JSON-able, comparable stand-in for ``value``, or ``None`` to leave it out."""
    import torch

    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return repr(value)  # exact, and NaN compares equal to NaN
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        return {"shape": list(t.shape), "dtype": str(t.dtype), "sha256": _digest(data)}
    if isinstance(value, (list, tuple)) and depth < 3:
        items = [summary(v, depth + 1) for v in value]
        return [
            "<object>" if s is None and v is not None else s
            for s, v in zip(items, value, strict=True)
        ]
    return None


def _namespace(names: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for name, value in names.items():
        if name.startswith("__"):
            continue
        s = summary(value)
        if s is not None:
            out[prefix + name] = s
    return out


def _rng_digests() -> dict[str, str]:
    import torch

    return {
        "random": _digest(repr(random.getstate()).encode()),
        "torch": _digest(torch.random.get_rng_state().numpy().tobytes()),
    }


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    function = getattr(item, "obj", None)
    code = getattr(getattr(function, "__func__", function), "__code__", None)
    seen: dict[str, Any] = {}

    def local(frame: Any, event: str, arg: Any) -> Any:
        if event == "return":  # also when the frame is left by an exception
            seen.update(frame.f_locals)
        return local

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        return local if event == "call" and frame.f_code is code else None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        yield
    finally:
        sys.settrace(previous)
        entry = _records.setdefault(item.nodeid, {})
        owner = seen.pop("self", None)
        values = _namespace(seen)
        if owner is not None:
            values.update(_namespace(dict(vars(type(owner))), "class."))
            values.update(_namespace(dict(vars(owner)), "self."))
        entry["values"] = values
        entry["rng"] = _rng_digests()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    entry = _records.setdefault(item.nodeid, {})
    if report.when == "call" or report.outcome != "passed":
        entry["outcome"] = (
            report.outcome if report.when == "call" else ("skipped" if report.skipped else "error")
        )
    if call.excinfo is not None and report.failed:
        lines = [e.lineno + 1 for e in call.excinfo.traceback if Path(e.path) == Path(item.path)]
        entry["exception"] = call.excinfo.typename
        entry["test_line"] = lines[-1] if lines else None
        entry["message"] = str(call.excinfo.value)[:300]


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        _records[report.nodeid] = {
            "outcome": "collect-error",
            "message": str(report.longrepr)[:2000],
        }


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get(RECORD_ENV)
    if path:
        Path(path).write_text(json.dumps(_records, indent=1, sort_keys=True))
