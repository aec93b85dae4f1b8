"""Smoke run of validation/bench_edm.py --quick: it runs and writes every metric."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path


def test_bench_edm_quick(tmp_path: Path) -> None:
    path = Path(__file__).resolve().parents[2] / "validation" / "bench_edm.py"
    spec = importlib.util.spec_from_file_location("bench_edm", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--quick", "--out", str(tmp_path)])
    with (tmp_path / "bench_edm.csv").open() as fh:
        rows = {row["metric"]: row for row in csv.DictReader(fh)}
    for metric in (
        "operand_edm_ms_per_neuron_batch1_cpu",
        "weight_edm_ms_per_channel_position_wall",
        "weights_complete_wall_s",
        "weights_full_batch_forwards_per_channel",
        "activations_full_batch_forwards_per_neuron",
    ):
        assert float(rows[metric]["value"]) > 0, metric
