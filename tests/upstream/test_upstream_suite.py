"""PyTorchFI 0.6.0's own test suite, run on plain PyTorchFI and on DeepVigorFI (the differential run).

At test time the pytorchfi 0.6.0 sdist is fetched from the package registry with
``pip download`` (checked against its SHA-256, cached under the package's cache directory, never
committed) and its ``test/`` folder is extracted twice:

* **plain**: as shipped;
* **plugin**: the import lines swapped, nothing else: ``from pytorchfi.core import
  fault_injection`` becomes ``from pytorchfi_deepvigor import DeepVigorFI as fault_injection``,
  and ``single_bit_flip_func`` (which PyTorchFI derives from its own injector) comes from
  ``pytorchfi_deepvigor.error_models``. PyTorchFI's error-model functions are used as they are.

Both get the same offline changes (``offline.py``, as their ``conftest.py``: generated CIFAR-10
images, seeded random AlexNet weights, ``DataLoader`` iterators' ``.next()``) and the same
recorder (``recorder.py``), and run as two pytest subprocesses side by side.

What must hold: the same tests are collected; every test that passes on plain passes on the
plugin, except :data:`DELIBERATE` (each a deliberate fix, listed in the README); and every test
ends the same way on both (outcome, and for a failure the exception type and the line of the
test file), having computed the same values (locals and class attributes: corrupted outputs
bit for bit) and left Python's and torch's RNGs in the same state. With random stand-in weights
some upstream tests fail on plain too (they pin ImageNet labels); they must fail identically.

Without the registry (and no cached sdist) the test is skipped with the reason, never passed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from third_party import fetch

HERE = Path(__file__).parent
VERSION = "0.6.0"
SDIST = f"pytorchfi-{VERSION}.tar.gz"
SDIST_SHA256 = "82d34c73db6935e5e09c38d3d77b8e4b7aeefd0d5a2f94f8a26c253dcb3fee90"

#: nodeid -> why the plugin deliberately differs there. None of PyTorchFI 0.6.0's own tests
#: needs an exception: the deliberate fixes (README, "Deliberate differences") are all in
#: behaviour these tests do not reach.
DELIBERATE: dict[str, str] = {}

#: The import swap of the plugin run: file -> [(PyTorchFI's line(s), DeepVigorFI's)].
_INJECTOR = "from pytorchfi.core import fault_injection"
_SWAPS: dict[str, list[tuple[str, str]]] = {
    name: [
        (f"{_INJECTOR} as pfi_core\n", "from pytorchfi_deepvigor import DeepVigorFI as pfi_core\n")
    ]
    for name in [
        "test_get_funcs.py",
        "test_init.py",
        "test_neuron_fi.py",
        "test_weight_fi.py",
        "test_weight_error_models.py",
    ]
}
_SWAPS.update(
    {
        name: [
            (f"{_INJECTOR}\n", "from pytorchfi_deepvigor import DeepVigorFI as fault_injection\n")
        ]
        for name in ["test_example_client.py", "test_layers.py"]
    }
)
_SWAPS["test_neuron_error_models.py"] = [
    (f"{_INJECTOR} as pfi_core\n", "from pytorchfi_deepvigor import DeepVigorFI as pfi_core\n"),
    (
        "from pytorchfi.neuron_error_models import (\n    single_bit_flip_func,\n",
        "from pytorchfi_deepvigor.error_models import single_bit_flip_func\n"
        "from pytorchfi.neuron_error_models import (\n",
    ),
]


def fetch_sdist() -> Path:
    """The cached sdist, downloaded first if needed; ``pytest.skip`` when it cannot be had."""
    return fetch("pytorchfi", VERSION, SDIST, SDIST_SHA256, sdist=True, folder="upstream")


def extract_tests(sdist: Path, into: Path) -> Path:
    """The sdist's ``test/`` folder, copied to ``into/test``."""
    prefix = f"pytorchfi-{VERSION}/test/"
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.isfile()]
        for m in members:
            target = into / "test" / m.name[len(prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(m)
            assert source is not None
            target.write_bytes(source.read())
    assert (into / "test" / "__init__.py").is_file(), f"no test/ folder in {sdist}"
    return into / "test"


def swap_imports(test_dir: Path) -> None:
    """Point the suite at DeepVigorFI: the import lines of :data:`_SWAPS`, nothing else."""
    for name, swaps in _SWAPS.items():
        path = test_dir / name
        text = path.read_text()
        for old, new in swaps:
            assert text.count(old) == 1, f"{name}: expected the line {old!r} once"
            text = text.replace(old, new)
        path.write_text(text)
    for path in test_dir.glob("*.py"):
        assert "pytorchfi.core" not in path.read_text(), f"{path.name} still imports pytorchfi.core"


def prepare(run_dir: Path, sdist: Path, plugin: bool) -> None:
    test_dir = extract_tests(sdist, run_dir)
    if plugin:
        swap_imports(test_dir)
    shutil.copyfile(HERE / "offline.py", test_dir / "conftest.py")
    shutil.copyfile(HERE / "recorder.py", run_dir / "upstream_recorder.py")
    (run_dir / "pytest.ini").write_text("[pytest]\n")  # not this repository's configuration


def start(run_dir: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(run_dir), "OMP_NUM_THREADS": "1"}
    env["PFI_UPSTREAM_RECORD"] = str(run_dir / "record.json")
    env.pop("PYTEST_ADDOPTS", None)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "upstream_recorder"]
    command += [
        "-p",
        "no:cacheprovider",
        "--timeout",
        "600",
        "-W",
        "ignore::DeprecationWarning",
        "test",
    ]
    return subprocess.Popen(
        command, cwd=run_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(proc: subprocess.Popen[str], run_dir: Path, what: str) -> dict[str, dict[str, Any]]:
    output, _ = proc.communicate(timeout=900)
    assert proc.returncode in (0, 1), (
        f"the {what} run did not complete (exit {proc.returncode}):\n{output[-4000:]}"
    )
    records = json.loads((run_dir / "record.json").read_text())
    bad = {k: v["message"] for k, v in records.items() if v.get("outcome") == "collect-error"}
    assert not bad, f"the {what} run could not collect: {bad}"
    return records


def fingerprint(record: dict[str, Any]) -> dict[str, Any]:
    """How a test ended and what it computed: equal on both runs unless the behaviour differs."""
    keys = ("outcome", "exception", "test_line", "values", "rng")
    return {k: record.get(k) for k in keys}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, dict[str, Any]]]:
    sdist = fetch_sdist()
    dirs = {what: tmp_path_factory.mktemp(what) for what in ("plain", "plugin")}
    for what, run_dir in dirs.items():
        prepare(run_dir, sdist, plugin=what == "plugin")
    procs = {what: start(run_dir) for what, run_dir in dirs.items()}
    return {what: finish(proc, dirs[what], what) for what, proc in procs.items()}


def _outcomes(records: dict[str, dict[str, Any]], outcome: str) -> set[str]:
    return {k for k, v in records.items() if v.get("outcome") == outcome}


@pytest.mark.slow
def test_every_upstream_test_that_passes_on_pytorchfi_passes_on_deepvigorfi(runs):
    plain, plugin = runs["plain"], runs["plugin"]
    assert set(plain) == set(plugin), "the two runs collected different tests"
    assert len(plain) == 57 and len(_outcomes(plain, "passed")) >= 40, (
        f"the plain run is not PyTorchFI 0.6.0's suite as measured: "
        f"{ {o: len(_outcomes(plain, o)) for o in ('passed', 'failed', 'skipped', 'error')} }"
    )
    lost = sorted(_outcomes(plain, "passed") - _outcomes(plugin, "passed") - set(DELIBERATE))
    detail = {k: (plugin[k].get("outcome"), plugin[k].get("message")) for k in lost}
    assert not lost, f"pass on PyTorchFI 0.6.0, not on DeepVigorFI: {detail}"
    stale = sorted(k for k in DELIBERATE if plugin.get(k, {}).get("outcome") == "passed")
    assert not stale, f"listed as deliberate differences but pass: {stale}"


def _differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """What differs between two fingerprints: the keys, and the names of differing values."""
    keys = [k for k in a if a[k] != b[k]]
    va, vb = a["values"] or {}, b["values"] or {}
    return {"differs in": keys, "values": sorted(n for n in {*va, *vb} if va.get(n) != vb.get(n))}


@pytest.mark.slow
def test_every_upstream_test_ends_and_computes_the_same_on_both(runs):
    plain, plugin = runs["plain"], runs["plugin"]
    differ = {}
    for nodeid in sorted(set(plain) - set(DELIBERATE)):
        a, b = fingerprint(plain[nodeid]), fingerprint(plugin.get(nodeid, {}))
        if a != b:
            differ[nodeid] = {**_differences(a, b), "plugin": plugin[nodeid].get("message")}
    assert not differ, f"PyTorchFI 0.6.0 and DeepVigorFI differ: {json.dumps(differ, indent=1)}"
    compared = [v for v in plain.values() if v.get("values")]
    assert len(compared) >= 45, "too few tests recorded values: is the recorder loaded?"
