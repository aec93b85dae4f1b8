"""Smoke run of validation/zoo_accuracy.py (the full run's CSV is committed)."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "validation" / "zoo_accuracy.py"


def test_quick_run_writes_one_row_per_model_and_seed(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    spec = importlib.util.spec_from_file_location("zoo_accuracy", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--quick", "--models", "vgg11", "--seeds", "0", "1", "--out", str(tmp_path)])
    with open(tmp_path / "zoo_accuracy.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["model"], r["seed"], r["epochs"]) for r in rows] == [
        ("vgg11", "0", "1"),
        ("vgg11", "1", "1"),
    ]
    assert all(int(r["parameters"]) > 0 and float(r["train_time_s"]) > 0 for r in rows)
    assert rows[0]["test_accuracy"] != rows[1]["test_accuracy"]  # the seed changes the weights
    assert "wrote" in capsys.readouterr().out
