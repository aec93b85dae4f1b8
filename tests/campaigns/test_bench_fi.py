"""Smoke run of validation/bench_fi.py --quick: it runs, agrees with plain PyTorchFI, writes its CSV."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path


def test_bench_fi_quick(tmp_path: Path) -> None:
    path = Path(__file__).resolve().parents[2] / "validation" / "bench_fi.py"
    spec = importlib.util.spec_from_file_location("bench_fi", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--quick", "--out", str(tmp_path)]) == 0
    with (tmp_path / "bench_fi.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["method"] for r in rows} == {"campaign", "plain-pytorchfi"}
    assert all(float(r["outcome_agreement"]) == 1.0 for r in rows)
    assert all(float(r["fault_images_per_s"]) > 0 for r in rows)
