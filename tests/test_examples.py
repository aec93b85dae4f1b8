"""Smoke runs of the example scripts in their ``--quick`` form, each as a subprocess."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One zoo cache for the examples (VGG-11 at width 1/16, one epoch, trained once)."""
    return tmp_path_factory.mktemp("cache")


def run(script: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--quick", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_each_example_opens_with_its_question(script):
    first = (EXAMPLES / script).read_text().splitlines()[:3]
    assert first[0] == "# %% [markdown]" and first[1].startswith("# # ") and first[1].endswith("?")


def test_pytorchfi_to_deepvigor(cache):
    out = run("pytorchfi_to_deepvigor.py", "--cache-dir", str(cache))
    rows = {
        line[:3]: line.split() for line in out.splitlines() if line[:3] in ("1. ", "2. ", "3a.")
    }
    cvfs = {key: row[-3] for key, row in rows.items()}
    assert len(cvfs) == 3 and len(set(cvfs.values())) == 1  # the three FI runs agree exactly
    assert "288 faults x 8 images" in out and "3b. DeepVigorAnalyzer" in out


def test_teaching_error_vs_cost(cache, tmp_path):
    out = run("teaching_error_vs_cost.py", "--cache-dir", str(cache), "--out", str(tmp_path))
    assert "wrote" in out
    with (tmp_path / "error_vs_cost.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    methods = [r["method"] for r in rows]
    assert methods[0] == "exhaustive FI" and float(rows[0]["lvf_error"]) == 0.0
    for name in ("SFI network", "SFI layer", "SFI data-unaware", "SFI data-aware", "DeepVigor+"):
        assert methods.count(name) == 2
    assert all(float(r["simulations"]) > 0 for r in rows)
    assert (tmp_path / "error_vs_cost.png").read_bytes()[:4] == b"\x89PNG"


def test_own_model_local_data(tmp_path):
    out = run("own_model_local_data.py", "--out", str(tmp_path))
    assert "from 3 classes" in out and "torchvision:resnet18" in out
    assert "model left unchanged: True" in out
    assert (tmp_path / "result.json").exists() and (tmp_path / "lvf.png").exists()


def test_protect_what_matters(cache):
    out = run("protect_what_matters.py", "--cache-dir", str(cache))
    assert "planner plan at 10%" in out and "predicted MVF" in out
    for strategy in ("planner", "first-layers", "weights", "random"):
        assert f"\n{strategy} " in out
    assert "SFI" in out and "the promise" in out and "clean top-1 kept on 100.00%" in out


def test_int8_network(cache):
    pytest.importorskip("torch.ao.quantization.quantize_fx", reason="no torch.ao.quantization")
    out = run("int8_network.py", "--cache-dir", str(cache))
    assert "fault model int8, words int8" in out and "MAE" in out and "bit VF" in out
    assert "model left unchanged: True" in out
