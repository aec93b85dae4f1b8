"""Analyses and draws the validation scripts share, computed once per model and cached.

* :func:`complete` / :func:`sampled`: a DeepVigor+ analysis (extended grid, position EDMs, the
  package defaults) of the context's layers, kept as JSON under ``<cache>/analyses`` so that
  Table IV, Table V, the timings and the figures reuse one run.
* :func:`fi_cost_seconds`: an estimate of an FI site's seconds on one core, for the model sets
  whose budget is in seconds (the zoo's default widths, Fashion-MNIST, the transformers).
* :func:`pick_within_budget`: which FI sites fit a fault budget. The paper injects into a
  seeded random 15% of the channels of every layer; on this CPU that is more faults than an hour
  holds, so the drawn channels are taken round-robin over the layers (in a seeded order) while
  the budget allows. Every choice is seeded and written next to the results.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from pytorchfi_deepvigor.analysis.analyzer import DeepVigorAnalyzer
from pytorchfi_deepvigor.results import LayerResult, VulnerabilityResult
from validation.common import Context, ModelSpec, write_text

__all__ = [
    "RATIOS",
    "complete",
    "draw_channels",
    "fi_cost_seconds",
    "layer_map",
    "pick_within_budget",
    "sampled",
]

RATIOS = (0.05, 0.10, 0.15, 0.20)


def _cached(ctx: Context, name: str, run: Any) -> VulnerabilityResult:
    path = ctx.cache_dir / "analyses" / f"{name}.json"
    if path.exists() and not ctx.force:
        return VulnerabilityResult.from_json(path)
    result = run()
    write_text(path, result.to_json() + "\n")
    return result


def complete(ctx: Context, spec: ModelSpec, target: str) -> VulnerabilityResult:
    """Complete analysis (every channel and neuron) of ``target`` on the analysis batch."""
    name = f"{spec.tag}-n{ctx.n_images}-{target}-complete"

    def run() -> VulnerabilityResult:
        started = time.perf_counter()
        analyzer = DeepVigorAnalyzer(ctx.engine(spec), model_name=spec.key)
        result = analyzer.analyze(target=target, layers=ctx.layers(spec), progress=True)
        print(
            f"complete {target} analysis of {spec.label}: {time.perf_counter() - started:.0f} s",
            flush=True,
        )
        return result

    return _cached(ctx, name, run)


def sampled(
    ctx: Context, spec: ModelSpec, target: str, ratio: float, seed: int, batch: int = 0
) -> VulnerabilityResult:
    """Sampled analysis of ``target`` at channel ratio ``ratio`` with ``seed`` on batch ``batch``."""
    name = f"{spec.tag}-n{ctx.n_images}-b{batch}-{target}-r{ratio:g}-s{seed}"

    def run() -> VulnerabilityResult:
        analyzer = DeepVigorAnalyzer(ctx.engine(spec, batch), model_name=spec.key)
        return analyzer.analyze(target=target, layers=ctx.layers(spec), sampling=ratio, seed=seed)

    return _cached(ctx, name, run)


def layer_map(result: VulnerabilityResult, target: str) -> dict[int, LayerResult]:
    """The layers of one target by layer number."""
    return {x.layer_num: x for x in result.layers if x.target == target}


def draw_channels(n_channels: int, ratio: float, rng: np.random.Generator) -> list[int]:
    """``ceil(ratio * n)`` channels without replacement, in the order drawn."""
    n = max(1, min(n_channels, math.ceil(round(ratio * n_channels, 9))))
    return [int(c) for c in rng.choice(n_channels, n, replace=False)]


#: The cost model of :func:`fi_cost_seconds`, calibrated on VGG-11 at width 1/8 (one channel of
#: layers 0, 3, 6 and 8, 100 images, one thread of the shared 2-core CPU): a fixed cost per
#: fault and the suffix's FLOPs at an effective rate (weight faults perturb a whole channel;
#: an operand fault one neuron, which the engine's early exit often masks).
FI_COST = {"weights": (2e-3, 8e9), "operands": (1.5e-3, 40e9)}


def fi_cost_seconds(engine: Any, layer_num: int, faults: int, target: str) -> float:
    """Estimated seconds of ``faults`` FI faults in a layer, on one core, for the engine's batch.

    Args:
        engine: the simulation engine (model and analysis batch).
        layer_num: the layer.
        faults: number of faults.
        target: ``"weights"`` or ``"operands"``.
    """
    per_fault, rate = FI_COST[target]
    flops = engine.suffix_flops_per_image(layer_num) * engine.num_images
    return faults * (per_fault * engine.num_images / 100 + flops / rate)


def pick_within_budget(
    candidates: dict[int, Sequence[tuple[Any, float]]],
    budget: float,
    rng: np.random.Generator,
    *,
    cheapest_first: bool = False,
) -> dict[int, list[Any]]:
    """Round-robin over layers (seeded order): the j-th candidate of every layer, then j + 1.

    Args:
        candidates: per layer, ``(site, cost)`` in the order drawn (cost: faults, or
            estimated seconds).
        budget: total cost allowed; a candidate that does not fit is skipped.
        rng: the generator of the layer order.
        cheapest_first: order the layers by the cost of their first candidate instead (ties
            in the seeded order), so that as many layers as possible get a site.

    Returns:
        Per layer the sites kept (layers with none are left out).

    Raises:
        ValueError: for a budget below one.
    """
    if budget < 1:
        raise ValueError(f"expected a fault budget >= 1, got {budget}")
    order = [int(n) for n in rng.permutation(sorted(candidates))]
    if cheapest_first:
        first = {n: candidates[n][0][1] if candidates[n] else math.inf for n in order}
        order = sorted(order, key=lambda n: first[n])
    chosen: dict[int, list[Any]] = {n: [] for n in order}
    spent = 0.0
    depth = max((len(v) for v in candidates.values()), default=0)
    for j in range(depth):
        for num in order:
            if j < len(candidates[num]):
                site, cost = candidates[num][j]
                if spent + cost <= budget:
                    chosen[num].append(site)
                    spent += cost
    return {n: chosen[n] for n in sorted(chosen) if chosen[n]}
