"""Analyses and draws the validation scripts share, computed once per model and cached.

* :func:`complete` / :func:`sampled`: a DeepVigor+ analysis (extended grid, position EDMs, the
  package defaults) of the context's layers, kept as JSON under ``<cache>/analyses`` so that
  Table IV, Table V, the timings and the figures reuse one run.
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


def pick_within_budget(
    candidates: dict[int, Sequence[tuple[Any, int]]], budget: int, rng: np.random.Generator
) -> dict[int, list[Any]]:
    """Round-robin over layers (seeded order): the j-th candidate of every layer, then j + 1.

    Args:
        candidates: per layer, ``(site, faults)`` in the order drawn.
        budget: total faults allowed; a candidate that does not fit is skipped.
        rng: the generator of the layer order.

    Returns:
        Per layer the sites kept (layers with none are left out).

    Raises:
        ValueError: for a budget below one.
    """
    if budget < 1:
        raise ValueError(f"expected a fault budget >= 1, got {budget}")
    order = [int(n) for n in rng.permutation(sorted(candidates))]
    chosen: dict[int, list[Any]] = {n: [] for n in order}
    spent = 0
    depth = max((len(v) for v in candidates.values()), default=0)
    for j in range(depth):
        for num in order:
            if j < len(candidates[num]):
                site, cost = candidates[num][j]
                if spent + cost <= budget:
                    chosen[num].append(site)
                    spent += cost
    return {n: chosen[n] for n in sorted(chosen) if chosen[n]}
