"""Zoo accuracy: every zoo model trained on the digits at its validation width.

For each zoo architecture at ``DEFAULT_WIDTHS[name]`` (VGG-11/VGG-16/ResNet-18/ResNet-34 at
1/8, MobileNetV2 at 1/4), input 1x32x32, its default epochs, and each seed of ``--seeds``:
train with :func:`pytorchfi_deepvigor.zoo.train_model` (one torch thread, no cache, so the
time is this machine's) and record the test accuracy on the 899 digits test images, the
parameters and the training time (wall clock and CPU seconds). Targets: VGG-11 (the demo
model) >= 95 % within 120 s, every other model >= 90 %. The 1-minute load average at the start of each run is recorded
because other jobs may share the CPU.

Writes ``zoo_accuracy.csv`` to ``--out`` (default ``validation/results``) and prints a table.

Run: ``python validation/zoo_accuracy.py`` (about 5-10 minutes on 2 CPU cores);
``--quick``: width 1/32, one epoch, seed 0 (the test suite's smoke run; targets not checked).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from pytorchfi_deepvigor.zoo import DEFAULT_WIDTHS, list_models, train_model

RESULTS = Path(__file__).resolve().parent / "results"
DEMO_MODEL, DEMO_ACCURACY, DEMO_SECONDS = "vgg11", 0.95, 120.0
ZOO_ACCURACY = 0.90
COLUMNS = (
    "model", "width", "seed", "epochs", "input_size", "in_channels", "parameters",
    "test_accuracy", "train_time_s", "train_cpu_s", "target_accuracy", "target_time_s", "passed",
    "num_threads", "load_avg_1m", "cpu", "torch",
)  # fmt: skip


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux) or platform, with the core count."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cores)"


def run(names: Sequence[str], seeds: Sequence[int], quick: bool) -> list[dict[str, object]]:
    """Train every model for every seed; one row each."""
    rows: list[dict[str, object]] = []
    cpu = cpu_name()
    for name in names:
        for seed in seeds:
            width = 1 / 32 if quick else DEFAULT_WIDTHS[name]
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            model, record = train_model(name, width=width, seed=seed, epochs=1 if quick else None)
            target = DEMO_ACCURACY if name == DEMO_MODEL else ZOO_ACCURACY
            seconds = DEMO_SECONDS if name == DEMO_MODEL else float("nan")
            passed = record.test_accuracy >= target and not record.train_time_s > seconds
            rows.append({
                "model": name, "width": f"{width:g}", "seed": seed,
                "epochs": record.config.epochs, "input_size": record.config.input_size,
                "in_channels": record.config.in_channels, "parameters": record.num_parameters,
                "test_accuracy": f"{record.test_accuracy:.4f}",
                "train_time_s": f"{record.train_time_s:.1f}",
                "train_cpu_s": f"{record.train_cpu_s:.1f}", "target_accuracy": target,
                "target_time_s": "" if seconds != seconds else seconds, "passed": passed,
                "num_threads": record.config.num_threads, "load_avg_1m": f"{load:.2f}",
                "cpu": cpu, "torch": record.versions["torch"],
            })  # fmt: skip
            verdict = "quick" if quick else ("ok" if passed else "BELOW TARGET")
            print(
                f"{name:12s} w={width:<7g} seed={seed} acc={record.test_accuracy:.4f} "
                f"params={record.num_parameters:>7,} time={record.train_time_s:6.1f}s "
                f"cpu={record.train_cpu_s:6.1f}s "
                f"load={load:.1f} {verdict}",
                flush=True,
            )
    return rows


def main(argv: Sequence[str] | None = None) -> list[dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="width 1/32, 1 epoch (smoke run)")
    parser.add_argument("--seeds", type=int, nargs="+", help="training seeds (default 0 1 2)")
    parser.add_argument("--models", nargs="+", choices=list_models(), default=list_models())
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    print(f"zoo accuracy on {cpu_name()}, torch {torch.__version__}", flush=True)
    rows = run(args.models, seeds, args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "zoo_accuracy.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    results = main()
    quick_run = "--quick" in sys.argv
    sys.exit(0 if quick_run or all(row["passed"] for row in results) else 1)
