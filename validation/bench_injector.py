"""Benchmark: the same weight faults through plain PyTorchFI and through this package.

For a CIFAR-style ResNet-18 (torchvision's, full width, 3x3 stem, no max-pool, 32x32 inputs,
random seeded weights) and a seeded random batch of images, the same single-bit weight faults
(``--faults`` of them, spread evenly over five layers from the first convolution to the
classifier, weight and bit drawn with ``--seed``) run three ways:

* **plain PyTorchFI 0.6.0**: ``declare_weight_fi`` per fault (a deep copy of the model with the
  faulty weight) and a full forward of the batch;
* **DeepVigorFI in place**: ``with fi.weight_fault(layer, index, bit=b): model(images)`` (flip one
  weight in the live model, full forward, restore the exact bits);
* **DeepVigorFI engine**: ``fi.engine(images, max_batch=100)`` and the campaigns'
  ``FaultEvaluator``: each fault as its exact output delta ``(w' - w) * x`` on channel ``k``, the
  faults of one layer in one batched call, only the network after the layer recomputed.

The in-place path removes the deep copy but still runs the whole network, so at batch 100 (where
one forward costs far more than the copy) it cannot be much faster than plain PyTorchFI; the
engine also skips the network before the faulted layer.

The engine's per-fault time includes the layer's golden prefix, computed once per layer; the
default of 150 faults (30 per layer) amortises it as a campaign would (thousands per layer).
The first layer's faults recompute the whole network, so there the engine cannot beat a full
forward by much; the mean over the five layers is bounded by it.

Engine outcomes may differ from plain PyTorchFI's between masked and SDC only: its suffix runs
on other batch compositions and, on the CPU, channels-last (rounding differs from the plain
forward by ~1e-6 of the largest logit, measured), so a fault whose logit change sits near the
1e-5 masked tolerance can land on either side; critical/DUE must agree.

Faults are timed alternately (layer by layer) so that machine noise hits every method alike.
Outcomes (masked / SDC / critical / DUE per image) are compared fault for fault and image for
image (every mismatch is listed); plain and in-place logits must be bit-identical. Writes ``bench_injector.csv`` (one row per batch
size and fault) and ``bench_injector.md`` (summary with speed-ups) to ``--out``.

Run: ``python validation/bench_injector.py`` (a few minutes on 2 CPU cores);
``--quick``: a tiny model and 2 faults (the test suite's smoke run).
"""

from __future__ import annotations

import argparse
import csv
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchvision
from pytorchfi import core
from torch import nn

from pytorchfi_deepvigor.campaigns.faults import FaultEvaluator, FaultPopulation
from pytorchfi_deepvigor.engine import Outcome, classify
from pytorchfi_deepvigor.error_models import WeightBitFlip
from pytorchfi_deepvigor.injector import DeepVigorFI

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("plain", "inplace", "engine")
TARGETS = {100: 2.0, 10: 5.0}


def cifar_resnet18(seed: int) -> nn.Module:
    """torchvision's ResNet-18 in CIFAR form (3x3 stem, stride 1, no max-pool), 10 classes."""
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=10)
    model.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model.eval()


def tiny_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    ).eval()  # fmt: skip


@dataclass
class Fault:
    layer: int
    flat: int
    bit: int
    times: dict[str, float] = field(default_factory=dict)
    codes: dict[str, torch.Tensor] = field(default_factory=dict)
    logits_equal: bool = False


def draw_faults(fi: DeepVigorFI, n: int, n_layers: int, rng: np.random.Generator) -> list[Fault]:
    """``n`` (weight, bit) faults, round-robin over ``n_layers`` evenly spaced layers."""
    last = fi.get_total_layers() - 1
    layers = sorted({int(round(v)) for v in np.linspace(0, last, min(n_layers, last + 1))})
    faults = []
    for i in range(n):
        info = fi.layer(layers[i % len(layers)])
        faults.append(
            Fault(info.layer_num, int(rng.integers(info.n_weights)), int(rng.integers(32)))
        )
    return sorted(faults, key=lambda f: f.layer)


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run_batch(
    model: nn.Module, images: torch.Tensor, faults: list[Fault], chunk: int
) -> tuple[dict[str, float], dict[int, float]]:
    """Run every fault three ways; return each method's one-off setup time and, per layer, the
    share of the network's multiply-accumulates that the engine recomputes after it."""
    shape = list(images.shape[1:])
    setup = {}
    pfi, setup["plain"] = _timed(
        lambda: core.fault_injection(model, len(images), shape, [nn.Conv2d, nn.Linear])
    )
    fi, setup["inplace"] = _timed(
        lambda: DeepVigorFI(model, len(images), shape, [nn.Conv2d, nn.Linear])
    )
    engine, setup["engine"] = _timed(lambda: fi.engine(images, max_batch=chunk))
    evaluator = FaultEvaluator(engine)
    total_flops = (
        engine.suffix_flops_per_image(0) + 2 * fi.layer(0).neurons_per_image * fi.layer(0).fan_in
    )
    shares = {}
    for layer in sorted({f.layer for f in faults}):
        group = [f for f in faults if f.layer == layer]
        info = fi.layer(layer)
        shares[layer] = engine.suffix_flops_per_image(layer) / total_flops
        for f in group:
            index = tuple(int(i) for i in np.unravel_index(f.flat, info.weight_shape))
            dims = [[i] for i in index] + [[None]] * (4 - len(index))

            def plain(f=f, dims=dims, layer=layer):
                bad = pfi.declare_weight_fi(
                    layer_num=[layer], k=dims[0], dim1=dims[1], dim2=dims[2], dim3=dims[3],
                    function=WeightBitFlip(f.bit),
                )  # fmt: skip
                with torch.no_grad():
                    return bad(images)

            def inplace(f=f, layer=layer):
                with fi.weight_fault(layer, f.flat, bit=f.bit), torch.no_grad():
                    return model(images)

            plain_logits, f.times["plain"] = _timed(plain)
            inplace_logits, f.times["inplace"] = _timed(inplace)
            f.codes["plain"] = classify(plain_logits, engine.golden_logits)
            f.codes["inplace"] = classify(inplace_logits, engine.golden_logits)
            f.logits_equal = torch.equal(
                plain_logits.view(torch.int32), inplace_logits.view(torch.int32)
            )

        population = FaultPopulation(info, "weights", "flip", np.array([f.flat for f in group]))
        ids = np.array([f.bit for f in group]) * population.n_sites + np.arange(len(group))

        def batched(population=population, ids=ids, layer=layer):
            image_idx, perturbation = evaluator.perturbation(population, ids)
            return engine.outcomes(layer, image_idx, perturbation)

        codes, seconds = _timed(batched)
        for i, f in enumerate(group):
            f.codes["engine"] = codes.view(len(group), len(images))[i]
            f.times["engine"] = seconds / len(group)
    return setup, shares


def _critical(codes: torch.Tensor) -> torch.Tensor:
    return codes >= Outcome.CRITICAL


def _mismatches(f: Fault, method: str) -> str:
    """Images whose outcome differs from plain PyTorchFI's, as ``image:PLAIN>METHOD``."""
    a, b = f.codes["plain"], f.codes[method]
    return " ".join(
        f"{i}:{Outcome(int(a[i])).name}>{Outcome(int(b[i])).name}"
        for i in torch.nonzero(a != b).flatten().tolist()
    )


def summarise(batch: int, setup: dict[str, float], faults: list[Fault]) -> list[dict[str, object]]:
    rows = []
    plain_mean = statistics.fmean(f.times["plain"] for f in faults)
    plain_total = setup["plain"] + sum(f.times["plain"] for f in faults)
    for m in METHODS:
        times = [f.times[m] for f in faults]
        total = setup[m] + sum(times)
        agree = sum(bool(torch.equal(f.codes[m], f.codes["plain"])) for f in faults)
        crit = sum(
            bool(torch.equal(_critical(f.codes[m]), _critical(f.codes["plain"]))) for f in faults
        )
        rows.append({
            "batch": batch, "method": m, "setup_s": setup[m], "mean_ms": 1e3 * statistics.fmean(times),
            "median_ms": 1e3 * statistics.median(times), "total_s": total,
            "speedup": plain_mean / statistics.fmean(times), "speedup_total": plain_total / total,
            "agree": f"{agree}/{len(faults)}", "critical_agree": f"{crit}/{len(faults)}",
        })  # fmt: skip
    return rows


def per_layer(batch: int, faults: list[Fault], shares: dict[int, float]) -> list[str]:
    lines = []
    for layer, share in shares.items():
        group = [f for f in faults if f.layer == layer]
        mean = {m: statistics.fmean(f.times[m] for f in group) for m in METHODS}
        lines.append(
            f"| {batch} | {layer} | {len(group)} | {100 * share:.0f}% | {1e3 * mean['plain']:.0f} "
            f"| {1e3 * mean['inplace']:.0f} | {1e3 * mean['engine']:.0f} "
            f"| {mean['plain'] / mean['inplace']:.2f}x | {mean['plain'] / mean['engine']:.2f}x |"
        )
    return lines


def write(out: Path, per_fault: list[dict[str, object]], summary: list[dict[str, object]],
          layer_lines: list[str], meta: str) -> None:  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "bench_injector.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(per_fault[0]))
        writer.writeheader()
        writer.writerows(per_fault)
    lines = ["# Weight faults: plain PyTorchFI vs DeepVigorFI", "", meta, ""]
    lines += [
        "| batch | method | setup s | per fault ms (mean) | median ms | total s | speed-up per fault "
        "| speed-up incl. setup | outcomes agree with plain | critical/DUE agree |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in summary:
        lines.append(
            f"| {r['batch']} | {r['method']} | {r['setup_s']:.2f} | {r['mean_ms']:.1f} | {r['median_ms']:.1f} "
            f"| {r['total_s']:.1f} | {r['speedup']:.2f}x | {r['speedup_total']:.2f}x | {r['agree']} "
            f"| {r['critical_agree']} |"
        )
    lines += [
        "",
        "Per layer (mean ms per fault; suffix = share of the multiply-accumulates the engine "
        "recomputes after the layer):",
        "",
        "| batch | layer | faults | suffix | plain ms | in-place ms | engine ms | in-place speed-up "
        "| engine speed-up |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += layer_lines + [""]
    for batch, target in TARGETS.items():
        got = {r["method"]: r["speedup"] for r in summary if r["batch"] == batch}
        if got:
            verdict = ", ".join(
                f"{m} {v:.2f}x ({'met' if v >= target else 'NOT met'})"
                for m, v in got.items()
                if m != "plain"
            )
            lines.append(f"- target at batch {batch}: >= {target:g}x per fault; {verdict}")
    mismatched = [r for r in per_fault if r["engine_mismatches"] or r["inplace_mismatches"]]
    lines += [
        "",
        f"Outcome mismatches with plain PyTorchFI (image:PLAIN>OTHER): {len(mismatched)} faults",
        "",
    ]
    lines += [
        f"- batch {r['batch']}, fault {r['fault']} (layer {r['layer']}, bit {r['bit']}): "
        f"in-place [{r['inplace_mismatches']}] engine [{r['engine_mismatches']}]"
        for r in mismatched
    ]
    (out / "bench_injector.md").write_text("\n".join(lines) + "\n")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> list[dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, 2 faults (smoke run)")
    parser.add_argument("--faults", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batches", type=int, nargs="+", default=[100, 10])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        model, shape, n_faults, batches = tiny_net(args.seed), [3, 8, 8], 2, [4, 2]
    else:
        model, shape, n_faults, batches = (
            cifar_resnet18(args.seed),
            [3, 32, 32],
            args.faults,
            args.batches,
        )
    gen = torch.Generator().manual_seed(args.seed)
    images = torch.randn(max(batches), *shape, generator=gen)
    rng = np.random.default_rng(args.seed)
    faults = draw_faults(DeepVigorFI(model, 1, shape, [nn.Conv2d, nn.Linear]), n_faults, 5, rng)
    root = logging.getLogger()
    handlers = root.handlers[:]  # PyTorchFI 0.6.0 calls logging.basicConfig
    per_fault, summary, layer_lines = [], [], []
    try:
        for batch in batches:
            for f in faults:
                f.times, f.codes = {}, {}
            setup, shares = run_batch(model, images[:batch], faults, max(batches))
            summary += summarise(batch, setup, faults)
            layer_lines += per_layer(batch, faults, shares)
            fi = DeepVigorFI(model, 1, shape, [nn.Conv2d, nn.Linear])
            for n, f in enumerate(faults):
                info = fi.layer(f.layer)
                counts = torch.bincount(f.codes["plain"].long(), minlength=4).tolist()
                per_fault.append({
                    "batch": batch, "fault": n, "layer": f.layer, "layer_name": info.name,
                    "weight_index": "(" + ",".join(map(str, np.unravel_index(f.flat, info.weight_shape))) + ")",
                    "bit": f.bit, **{f"{m}_ms": round(1e3 * f.times[m], 3) for m in METHODS},
                    "masked/sdc/critical/due": "/".join(map(str, counts)),
                    "inplace_mismatches": _mismatches(f, "inplace"),
                    "engine_mismatches": _mismatches(f, "engine"),
                    "logits_bit_identical": f.logits_equal,
                })  # fmt: skip
    finally:
        root.handlers = handlers
    params = sum(p.numel() for p in model.parameters())
    meta = (
        f"Model: {'tiny test net' if args.quick else 'CIFAR-style ResNet-18'} ({params:,} parameters), "
        f"input {shape}, {n_faults} single-bit weight faults over layers "
        f"{sorted({f.layer for f in faults})} (seed {args.seed}). CPU, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}. The engine runs at most {max(batches)} batch elements per forward "
        "(max_batch, the plain forward's largest batch); its per-fault time includes computing the "
        "layer's golden prefix once per layer (shared by that layer's faults). Times are wall-clock "
        "on a shared machine, methods interleaved layer by layer: compare ratios."
    )
    write(args.out, per_fault, summary, layer_lines, meta)
    return summary


if __name__ == "__main__":
    for row in main(sys.argv[1:]):
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
