"""Benchmark: exhaustive weight FI through the campaigns against plain PyTorchFI, same faults.

A small CIFAR-style ResNet (ResNet-20 layout with one block per stage: 16/32/64 channels, 3x3
stem, 32x32 inputs, seeded random weights and BatchNorm statistics) and a seeded batch of
random images. Per analysed conv layer, an exhaustive weight campaign on a seeded
``--channel-ratio`` of its channels (every bit of every weight of each chosen filter) runs:

* **campaign**: ``ExhaustiveCampaign(engine).run("weights", ...)``: each fault as its exact
  output delta ``(w' - w) * x`` on channel k, many faults x images per batched call, only the
  network after the layer recomputed;
* **plain PyTorchFI 0.6.0**: ``declare_weight_fi(value=flipped weight)`` per fault (a deep copy
  of the model) and a full forward of the batch, on a seeded subset of the same faults
  (``--plain-faults`` per layer: it is slow), extrapolated as a throughput.

Each timing is the best of ``--repeats`` rounds, wall clock and process CPU time, with one torch
thread by default (a busy shared machine makes multi-threaded CPU time meaningless).

Throughput is (faults x images) / second. The outcomes (masked / SDC / critical / DUE per image)
of the plain subset are compared with the campaign's per-fault evaluation, fault for fault and
image for image. Writes ``bench_fi.csv`` to ``--out`` (default ``validation/results``).

Run: ``python validation/bench_fi.py`` (a few minutes on 2 CPU cores; the paper's
``--channel-ratio 0.15`` triples the campaign part); ``--quick``: a few
faults on 2 images (the test suite's smoke run).
"""

from __future__ import annotations

import argparse
import csv
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from pytorchfi import core
from torch import nn

from pytorchfi_deepvigor.bits import flip_bit
from pytorchfi_deepvigor.campaigns import ExhaustiveCampaign, FaultEvaluator, FaultPopulation
from pytorchfi_deepvigor.engine import SimulationEngine, classify

RESULTS = Path(__file__).resolve().parent / "results"


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-20's layout with one block per stage (ResNet-8), 10 classes."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = Block(width, width, 1)
        self.layer2 = Block(width, 2 * width, 2)
        self.layer3 = Block(2 * width, 4 * width, 2)
        self.fc = nn.Linear(4 * width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def build(seed: int, width: int) -> nn.Module:
    torch.manual_seed(seed)
    model = CifarResNet(width)
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def plain_pytorchfi(
    model: nn.Module,
    images: torch.Tensor,
    engine: SimulationEngine,
    pop: FaultPopulation,
    ids: np.ndarray,
) -> tuple[float, float, torch.Tensor]:
    """Wall and CPU seconds, and outcome codes ``[F, I]``, of the faults through plain PyTorchFI."""
    fi = core.fault_injection(
        model, images.shape[0], input_shape=list(images.shape[1:]),
        layer_types=[nn.Conv2d, nn.Linear], use_cuda=False,
    )  # fmt: skip
    weight = pop.layer.module.weight.detach()
    codes = []
    start, cpu = time.perf_counter(), time.process_time()
    for site_idx, bit, _ in zip(*pop.decode(ids), strict=True):
        index = np.unravel_index(int(pop.sites[site_idx]), tuple(weight.shape))
        value = float(flip_bit(weight[index], int(bit)))
        corrupted = fi.declare_weight_fi(
            layer_num=[pop.layer.layer_num], k=[int(index[0])], dim1=[int(index[1])],
            dim2=[int(index[2])], dim3=[int(index[3])], value=[value],
        )  # fmt: skip
        with torch.no_grad():
            codes.append(classify(corrupted(images), engine.golden_logits))
    return time.perf_counter() - start, time.process_time() - cpu, torch.stack(codes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few faults on 2 images")
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--channel-ratio", type=float, default=0.05)
    parser.add_argument("--layers", default="0,3,6", help="conv layer numbers to analyse")
    parser.add_argument("--plain-faults", type=int, default=100, help="plain faults per layer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads (1: CPU time stays meaningful on a shared machine)",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="timing rounds (best kept)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.width, args.plain_faults, args.layers = 2, 4, 4, "0,8"
        args.repeats = 1
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        rows = measure(args)
    finally:
        torch.set_num_threads(threads)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench_fi.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")
    return 0 if all(r["outcome_agreement"] == 1.0 for r in rows) else 1


def measure(args: argparse.Namespace) -> list[dict[str, object]]:
    """One campaign row and one plain row per analysed layer."""
    layers = [int(x) for x in args.layers.split(",")]
    model = build(args.seed, args.width)
    images = torch.randn(args.images, 3, 32, 32, generator=torch.Generator().manual_seed(args.seed))
    engine = SimulationEngine(model, images)
    campaign = ExhaustiveCampaign(engine)
    with torch.no_grad():  # warm up torch's kernels so the first timed layer is not penalised
        model(images)
    rows = []
    for num in layers:
        info = engine.layer(num)
        kwargs = {"layers": [num], "channel_ratio": args.channel_ratio, "seed": args.seed}
        if args.quick:
            kwargs = {"layers": [num], "channels": [0]}
        # the campaign's own draw (same seed, same rule), so plain runs the same faults
        n_chans = max(1, math.ceil(round(args.channel_ratio * info.out_channels, 9)))
        rng = np.random.default_rng(args.seed)
        chans = np.sort(rng.choice(info.out_channels, n_chans, replace=False))
        chans = np.array([0]) if args.quick else chans
        pop = FaultPopulation(
            info,
            "weights",
            "flip",
            (chans[:, None] * info.fan_in + np.arange(info.fan_in)).reshape(-1),
        )
        ids = np.sort(np.random.default_rng(args.seed).choice(
            pop.size, min(args.plain_faults, pop.size), replace=False))  # fmt: skip
        # plain in two halves around the campaign, so that machine load hits both alike;
        # each timing is the best of --repeats rounds (the usual defence against a busy machine)
        half, times = len(ids) // 2, {"fast": [], "plain": []}
        for _ in range(args.repeats):
            plain_a = plain_pytorchfi(model, images, engine, pop, ids[:half])
            engine.release()  # the campaign's golden cache is part of its cost
            start, cpu = time.perf_counter(), time.process_time()
            result = campaign.run("weights", **kwargs)
            times["fast"].append((time.perf_counter() - start, time.process_time() - cpu))
            plain_b = plain_pytorchfi(model, images, engine, pop, ids[half:])
            times["plain"].append((plain_a[0] + plain_b[0], plain_a[1] + plain_b[1]))
        fast_s, fast_cpu = (min(t[i] for t in times["fast"]) for i in (0, 1))
        plain_s, plain_cpu = (min(t[i] for t in times["plain"]) for i in (0, 1))
        layer = result.layers[0]
        assert layer.channels == tuple(int(c) for c in chans), "channel draw differs"
        plain_codes = torch.cat([plain_a[2], plain_b[2]])
        image_idx, pert = FaultEvaluator(engine).perturbation(pop, ids)
        fast_codes = engine.outcomes(num, image_idx, pert).view(len(ids), -1)
        agree = float((fast_codes == plain_codes).float().mean())
        common = {
            "model": f"cifar-resnet8-w{args.width}",
            "layer": num,
            "layer_name": info.name,
            "images": args.images,
            "device": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(),
            "repeats": args.repeats,
        }
        n_fast, n_plain = layer.n_faults * args.images, len(ids) * args.images
        tp = {
            "campaign": (n_fast / fast_s, n_fast / fast_cpu),
            "plain": (n_plain / plain_s, n_plain / plain_cpu),
        }
        for method, faults, wall, cpu_s in (
            ("campaign", layer.n_faults, fast_s, fast_cpu),
            ("plain-pytorchfi", len(ids), plain_s, plain_cpu),
        ):
            key = "campaign" if method == "campaign" else "plain"
            rows.append({
                **common, "method": method, "faults": faults,
                "seconds": round(wall, 4), "cpu_seconds": round(cpu_s, 4),
                "fault_images_per_s": round(tp[key][0], 1),
                "fault_images_per_cpu_s": round(tp[key][1], 1),
                "speedup_vs_plain": round(tp[key][0] / tp["plain"][0], 2),
                "speedup_vs_plain_cpu": round(tp[key][1] / tp["plain"][1], 2),
                "outcome_agreement": agree,
            })  # fmt: skip
        print(f"layer {num} ({info.name}): campaign {tp['campaign'][0]:,.0f} fault-images/s over "
              f"{layer.n_faults} faults, plain PyTorchFI {tp['plain'][0]:,.0f} over {len(ids)}: "
              f"x{tp['campaign'][0] / tp['plain'][0]:.1f} wall, "
              f"x{tp['campaign'][1] / tp['plain'][1]:.1f} CPU; outcome agreement {agree:.4f}")  # fmt: skip
    return rows


if __name__ == "__main__":
    sys.exit(main())
