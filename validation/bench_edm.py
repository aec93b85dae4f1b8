"""Benchmark: DeepVigor+ EDM construction and the cost of the analyses.

Measures, and writes to ``bench_edm.csv`` (one row per metric) under ``--out``:

* **operand EDM**: time to build one neuron's EDM with ``C_in = 64``, a 3x3 kernel (576
  operands x 32 bits) on 100 images (target: at most 10 ms on this CPU; the authors' code takes
  about 7 s), alone and amortised over a batch of 64 neurons, and the same for one channel's
  weight EDM (576 weights x 32 bits x 64 positions x 100 images);
* **weights analysis**: wall time of the complete weights analysis of the default demo model
  (the zoo's VGG-11 at its validation width, trained on the digits, 100 test images), with the
  batched forwards and image-evaluations per channel;
* **activations analysis**: the same per neuron for a sampled activations analysis (channel
  ratio ``--ratio``), to compare with the paper's "about 6 forward simulations per neuron".

Timings are medians (``--repeats``) of wall-clock time and of CPU time (all threads) on the
machine named in the CSV, with the load average at the start; on a machine shared with other
jobs the wall times inflate, the CPU times much less: compare numbers from the same run only.

Run: ``python validation/bench_edm.py`` (a few minutes on 2 CPU cores, trains the demo model on
first use; ``--threads 1`` is much faster on a machine shared with other jobs); ``--quick``: a
narrow untrained VGG, 4 images, one thread (the test suite's smoke run).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from pytorchfi_deepvigor import zoo
from pytorchfi_deepvigor.analysis import DeepVigorAnalyzer
from pytorchfi_deepvigor.functional.edm import candidate_grid, operand_edm, weight_edm

RESULTS = Path(__file__).resolve().parent / "results"
EDM_TARGET_MS = 10.0


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall time and median CPU time (all threads) of ``fn`` in seconds, after a warm-up."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def edm_rows(repeats: int, n_img: int) -> list[dict[str, object]]:
    """Operand and weight EDM build times (C_in = 64, 3x3 kernel)."""
    gen = torch.Generator().manual_seed(0)
    grid = candidate_grid("extended")
    n_ops = 64 * 3 * 3
    rows = []
    for n_tgt in (1, 64):
        x = torch.randn(n_img, n_tgt, n_ops, generator=gen).relu()
        w = torch.randn(n_tgt, n_ops, generator=gen) * 0.05
        wall, cpu = median_time(lambda x=x, w=w: operand_edm(x, w, grid), repeats)
        detail = f"C_in=64, 3x3, {n_img} images, extended grid; target <= {EDM_TARGET_MS} ms"
        for kind, seconds in (("wall", wall), ("cpu", cpu)):
            rows.append(
                {
                    "metric": f"operand_edm_ms_per_neuron_batch{n_tgt}_{kind}",
                    "value": round(1e3 * seconds / n_tgt, 3),
                    "unit": "ms",
                    "detail": detail,
                }
            )
    x = torch.randn(n_img, 1, n_ops, 64, generator=gen).relu()
    w = torch.randn(1, n_ops, generator=gen) * 0.05
    for aggregate in ("position", "fault"):
        wall, cpu = median_time(lambda a=aggregate: weight_edm(x, w, grid, aggregate=a), repeats)
        for kind, seconds in (("wall", wall), ("cpu", cpu)):
            rows.append(
                {
                    "metric": f"weight_edm_ms_per_channel_{aggregate}_{kind}",
                    "value": round(1e3 * seconds, 3),
                    "unit": "ms",
                    "detail": f"576 weights x 32 bits x 64 positions, {n_img} images",
                }
            )
    return rows


def demo_model(quick: bool) -> tuple[nn.Module, torch.Tensor, str]:
    if quick:
        model = zoo.build_model("vgg11", width=1 / 32, in_channels=1).eval()
        return model, zoo.analysis_batch(n=4).images, "vgg11 width 1/32 (untrained)"
    model, record = zoo.get_trained_model("vgg11")
    name = f"vgg11 width 1/8 (digits, test accuracy {record.test_accuracy:.3f})"
    return model, zoo.analysis_batch(n=100).images, name


def analysis_rows(model: nn.Module, images: torch.Tensor, ratio: float) -> list[dict[str, object]]:
    """Complete weights analysis and sampled activations analysis: time and forwards."""
    analyzer = DeepVigorAnalyzer(model, images)
    rows = []
    start, start_cpu = time.perf_counter(), time.process_time()
    weights = analyzer.analyze(target="weights")
    seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    n_ch = sum(len(layer.channels) for layer in weights.layers)
    rows += [
        {"metric": "weights_complete_wall_s", "value": round(seconds, 2), "unit": "s",
         "detail": f"{n_ch} channels, {len(images)} images, MVF_w={weights.mvf_weights:.4f}"},
        {"metric": "weights_complete_cpu_s", "value": round(cpu, 2), "unit": "s",
         "detail": "CPU time of all threads"},
        {"metric": "weights_forwards_per_channel",
         "value": round(weights.cost.batched_forwards / n_ch, 3), "unit": "batched forwards",
         "detail": f"engine max_batch={analyzer.engine.max_batch}"},
        {"metric": "weights_image_evaluations_per_channel",
         "value": round(weights.cost.image_evaluations / n_ch, 2), "unit": "image-evaluations",
         "detail": "divide by the images for full-batch forwards per channel"},
        {"metric": "weights_full_batch_forwards_per_channel",
         "value": round(weights.cost.image_evaluations / n_ch / len(images), 3),
         "unit": "forwards of the analysis batch", "detail": "the paper's 'simulations'"},
    ]  # fmt: skip
    start, start_cpu = time.perf_counter(), time.process_time()
    acts = analyzer.analyze(target="activations", sampling=ratio, seed=0)
    seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    n_neurons = sum(len(layer.neurons) for layer in acts.layers)
    rows += [
        {"metric": "activations_sampled_wall_s", "value": round(seconds, 2), "unit": "s",
         "detail": f"ratio {ratio}, {n_neurons} neurons, MVF_act={acts.mvf_activations:.4f}"},
        {"metric": "activations_sampled_cpu_s", "value": round(cpu, 2), "unit": "s",
         "detail": "CPU time of all threads"},
        {"metric": "activations_forwards_per_neuron",
         "value": round(acts.cost.batched_forwards / n_neurons, 3), "unit": "batched forwards",
         "detail": f"engine max_batch={analyzer.engine.max_batch}"},
        {"metric": "activations_image_evaluations_per_neuron",
         "value": round(acts.cost.image_evaluations / n_neurons, 2), "unit": "image-evaluations",
         "detail": "divide by the images for full-batch forwards per neuron"},
        {"metric": "activations_full_batch_forwards_per_neuron",
         "value": round(acts.cost.image_evaluations / n_neurons / len(images), 3),
         "unit": "forwards of the analysis batch", "detail": "paper: about 6 per neuron"},
    ]  # fmt: skip
    return rows


def main(argv: Sequence[str] | None = None) -> list[dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="narrow untrained model (smoke run)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if args.quick else (args.threads or threads))
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> list[dict[str, object]]:
    load = f", load {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    cpu = platform.processor() or platform.machine()
    machine = f"{cpu}, {torch.get_num_threads()} threads{load}"
    rows = edm_rows(2 if args.quick else args.repeats, 8 if args.quick else 100)
    model, images, name = demo_model(args.quick)
    rows += analysis_rows(model, images, args.ratio)
    for row in rows:
        row.update(model=name, machine=machine, torch=torch.__version__)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench_edm.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        print(f"{row['metric']:45s} {row['value']:>10} {row['unit']}")
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
