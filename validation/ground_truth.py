"""Ground truth: the package's fault injection and probes against the oracle, fault for fault.

The oracle (``tests/oracle.py``) is independent of the package: it writes the fault into the
user's model (the weight in place, restored bit for bit; a stored value, or one neuron
recomputed by the layer's own forward from a flipped operand, by a forward hook) and runs the
model's own forward. For every model of ``tests/oracle_models.py`` (the norms model also in
channels-last memory and on the hook path; GroupNorm, BatchNorm,
InstanceNorm, LayerNorm, SiLU/GELU/ReLU6/LeakyReLU/PReLU/Hardswish, pooling, residual adds,
depthwise and dilated convolutions, channels-last Linears, attention, a weight-standardising
convolution, a dead head, optional forward arguments, same-padding inside forward, a GroupNorm
after a permute, in-place ops into other tensors and views, reflect/circular padding) and
timm's BiT/NFNet layers when the wheel is cached (``make test`` caches it), for every
catalogued layer:

* weights: every bit of every weight of one channel (flips), and bits 30, 29, 31 stuck at 0 and
  1 on the same weights (+-Inf, NaN, 2^64..2^128);
* operands: every bit of every operand of a border and an interior neuron of one channel;
* stored: every bit of the first 16 values of one channel, flips and stuck-at;
* probes: the analysis' perturbations (an error at one neuron, a constant over one channel)
  for errors 1 .. 2^127, 3.4e38, +-Inf and NaN, both signs.

Each (fault, image) pair's outcome must be the oracle's: "mismatches" counts faults whose
critical images differ; "masked/SDC" faults that differ only in masked vs non-critical SDC (the
logits' float rounding around the masking tolerance, 1e-5 of the largest golden logit).

Writes ``validation/results/ground_truth.csv``. Run: ``python validation/ground_truth.py``
(about 5 minutes on one core). ``--zoo``: the zoo's architectures instead (sampled faults,
``ground_truth_zoo.csv``, about a minute): the engine on the models of Table III.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from oracle import Fault, Oracle  # noqa: E402
from oracle_models import ORACLE_MODELS, oracle_images  # noqa: E402

from pytorchfi_deepvigor.campaigns.faults import (  # noqa: E402
    FaultEvaluator,
    FaultPopulation,
    check_geometry,
    operand_sites,
)
from pytorchfi_deepvigor.engine import Outcome, SimulationEngine, classify  # noqa: E402
from pytorchfi_deepvigor.perturbations import ChannelAdd, NeuronAdd  # noqa: E402

RESULTS = HERE / "results"
FIELDS = [
    "model", "layer", "kind", "target", "fault_model", "faults", "pairs", "critical",
    "mismatches", "masked_sdc", "seconds",
]  # fmt: skip
EXTREMES = [
    s * v
    for v in (1.0, 2.0**10, 2.0**32, 2.0**64, 2.0**76, 2.0**80, 2.0**100, 2.0**127, 3.4e38)
    for s in (1.0, -1.0)
] + [math.inf, -math.inf, math.nan]


def _known_geometry(info: Any) -> bool:
    try:
        check_geometry(info)
    except ValueError:
        return False
    return True


def _populations(info: Any) -> list[tuple[str, FaultPopulation, list[int]]]:
    k = info.out_channels // 2
    weights = k * info.fan_in + np.arange(info.fan_in)
    per = info.neurons_per_channel
    c = info.out_channels - 1
    neurons = np.array(sorted({c * per, c * per + per // 2 + int(math.isqrt(per)) // 2}))
    stored = np.arange(min(per, 16))
    every = list(range(32))
    high = [30, 29, 31]
    out = [
        ("flip", FaultPopulation(info, "weights", "flip", weights), every),
        ("stuck-at", FaultPopulation(info, "weights", "stuck-at", weights), high),
        ("flip", FaultPopulation(info, "stored", "flip", stored), every),
        ("stuck-at", FaultPopulation(info, "stored", "stuck-at", stored), high),
    ]
    if _known_geometry(info):  # else it pads inside its forward: operands refused, the reason
        sites = operand_sites(info, neurons)
        out.insert(2, ("flip", FaultPopulation(info, "operands", "flip", sites), every))
    return out


def _row_of(
    pop: FaultPopulation, bits: list[int], engine: SimulationEngine, oracle: Oracle
) -> dict[str, Any]:
    start = time.perf_counter()
    evaluator = FaultEvaluator(engine)
    ids = np.concatenate([list(pop.stratum(b)) for b in bits])
    num = pop.layer.layer_num
    mismatches = masked_sdc = critical = 0
    for chunk in np.array_split(ids, max(1, len(ids) // 64)):
        image_idx, pert = evaluator.perturbation(pop, chunk)
        codes = engine.outcomes(num, image_idx, pert).view(len(chunk), -1).cpu()
        site, bit, value = pop.decode(chunk)
        for row, (s, b, v) in enumerate(zip(site, bit, value, strict=True)):
            where = pop.sites[s]
            place = tuple(int(a) for a in where) if where.ndim else int(where)
            logits = oracle.logits(Fault(pop.target, pop.layer.name, place, int(b), int(v)))
            want_crit = oracle.critical_of(logits).cpu()  # the oracle's own judgement
            ref = classify(logits, engine.golden_logits).cpu()  # masked vs SDC only
            got_crit = codes[row] >= int(Outcome.CRITICAL)
            critical += int(want_crit.sum())
            if not torch.equal(got_crit, want_crit):
                mismatches += 1
            elif not torch.equal(codes[row], ref):
                masked_sdc += 1
    return {
        "model": "", "layer": pop.layer.name, "kind": pop.layer.kind, "target": pop.target,
        "fault_model": pop.fault_model, "faults": len(ids), "pairs": len(ids) * engine.num_images,
        "critical": critical, "mismatches": mismatches, "masked_sdc": masked_sdc,
        "seconds": round(time.perf_counter() - start, 1),
    }  # fmt: skip


def _probe_row(info: Any, engine: SimulationEngine, oracle: Oracle) -> dict[str, Any]:
    start = time.perf_counter()
    n = engine.num_images
    idx, z = torch.arange(n), torch.zeros(n, dtype=torch.long)
    per = info.neurons_per_channel
    c, p = info.out_channels // 3, per // 2
    width = info.output_shape[2] if len(info.output_shape) == 3 else 1
    mismatches = critical = 0
    for e in EXTREMES:
        full = torch.full((n,), e)
        pairs = [
            (NeuronAdd(z + c, z + p // width, z + p % width, full), oracle.neuron_add(info.name, c, p, e)),
            (ChannelAdd(z + c, full), oracle.channel_add(info.name, c, e)),
        ]  # fmt: skip
        for pert, want in pairs:
            got = engine.critical(info.layer_num, idx, pert)
            critical += int(want.sum())
            mismatches += int(not torch.equal(got.cpu(), want.cpu()))
    return {
        "model": "", "layer": info.name, "kind": info.kind, "target": "probes",
        "fault_model": "neuron/channel error", "faults": 2 * len(EXTREMES),
        "pairs": 2 * len(EXTREMES) * n, "critical": critical, "mismatches": mismatches,
        "masked_sdc": "", "seconds": round(time.perf_counter() - start, 1),
    }  # fmt: skip


def _timm_model() -> tuple[torch.nn.Module, torch.Tensor] | None:
    """The BiT/NFNet-like model of ``tests/test_ground_truth_timm.py`` when the timm wheel is
    cached (the tests download it)."""
    from third_party import TIMM_WHEEL

    from pytorchfi_deepvigor.zoo.cache import resolve_cache_dir

    wheel = resolve_cache_dir() / "third_party" / TIMM_WHEEL
    if not wheel.is_file():
        return None
    sys.path.insert(0, str(wheel))
    import timm
    from test_ground_truth_timm import BitLike

    torch.manual_seed(0)
    model = BitLike(timm.layers).eval()
    with torch.no_grad():
        model.stem.weight.view(-1)[0] = 1.0
        model.conv.weight.view(-1)[1] = 1.5
    return model, oracle_images()


def models() -> dict[str, tuple[torch.nn.Module, torch.Tensor, dict[str, Any]]]:
    """Name -> (model, images, engine options): the oracle models, the norms model in
    channels-last memory and on the hook path, timm's layers when cached."""
    out = {name: (build(), oracle_images(), {}) for name, build in sorted(ORACLE_MODELS.items())}
    cl = ORACLE_MODELS["norms"]().to(memory_format=torch.channels_last)
    out["norms-channels-last"] = (
        cl,
        oracle_images().contiguous(memory_format=torch.channels_last),
        {},
    )
    out["norms-hooks"] = (ORACLE_MODELS["norms"](), oracle_images(), {"use_fx": False})
    bit = _timm_model()
    if bit is not None:
        out["timm_bit_nfnet_layers"] = (*bit, {})
    return out


def run(out: Path) -> list[dict[str, Any]]:
    torch.set_num_threads(1)
    rows = []
    for name, (model, images, options) in models().items():
        engine = SimulationEngine(model, images, **options)
        oracle = Oracle(model, images, view=engine.model)
        for info in engine.catalogue:
            for _, pop, bits in _populations(info):
                rows.append({**_row_of(pop, bits, engine, oracle), "model": name})
                print(
                    f"{name} {info.name} {pop.target} {pop.fault_model}: {rows[-1]['faults']} "
                    f"faults, {rows[-1]['mismatches']} mismatches",
                    flush=True,
                )
            rows.append({**_probe_row(info, engine, oracle), "model": name})
        write(rows, out)
    return rows


ZOO = (
    ("vit", 1 / 4),
    ("convnext", 1 / 8),
    ("mobilenetv2", 1 / 4),
    ("resnet18", 1 / 8),
    ("vgg11", 1 / 8),
)


def zoo_rows(seed: int = 0) -> list[dict[str, Any]]:
    """The zoo's architectures at the validation widths (random seeded weights, 16 digits):
    on six layers each, 3 seeded sites per target with bits 22, 26, 28-31 flipped and bits 30,
    29 stuck at 0 and 1, against the oracle."""
    from pytorchfi_deepvigor import zoo

    rng = np.random.default_rng(seed)
    images = zoo.analysis_batch(16).images
    rows = []
    for name, width in ZOO:
        torch.manual_seed(seed)
        model = zoo.build_model(name, width=width, num_classes=10, in_channels=1, input_size=32)
        model = model.eval()
        engine = SimulationEngine(model, images)
        oracle = Oracle(model, images, view=engine.model)
        nums = sorted(set(np.linspace(0, len(engine.catalogue) - 1, 6).astype(int).tolist()))
        for num in nums:
            info = engine.layer(num)
            for target in ("weights", "operands", "stored"):
                if target == "operands":
                    neurons = rng.choice(info.neurons_per_image, 2, replace=False)
                    every = operand_sites(info, neurons)
                    sites = every[rng.choice(len(every), 3, replace=False)]
                else:
                    n = info.n_weights if target == "weights" else info.neurons_per_image
                    sites = rng.choice(n, 3, replace=False)
                for fault_model, bits in (
                    ("flip", [22, 26, 28, 29, 30, 31]),
                    ("stuck-at", [30, 29]),
                ):
                    pop = FaultPopulation(info, target, fault_model, sites)
                    rows.append({**_row_of(pop, bits, engine, oracle), "model": f"zoo {name}"})
        print(
            f"zoo {name}: {sum(int(r['mismatches']) for r in rows)} mismatches so far", flush=True
        )
    return rows


def write(rows: list[dict[str, Any]], out: Path, name: str = "ground_truth.csv") -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / name, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--zoo", action="store_true", help="only the zoo's architectures")
    args = parser.parse_args(argv)
    if args.zoo:
        torch.set_num_threads(1)
        rows = zoo_rows()
        write(rows, args.out, "ground_truth_zoo.csv")
        bad = sum(int(r["mismatches"]) for r in rows)
        print(f"wrote {args.out / 'ground_truth_zoo.csv'}: {bad} mismatches", flush=True)
        return 1 if bad else 0
    rows = run(args.out)
    bad = sum(int(r["mismatches"]) for r in rows)
    print(f"wrote {args.out / 'ground_truth.csv'}: {len(rows)} rows, {bad} mismatches", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
