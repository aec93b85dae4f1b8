"""The analysis as work items, for :mod:`pytorchfi_deepvigor.distributed`.

A work item is one layer and the targets computed together: ``(layer, ("weights",))`` and
``(layer, ("activations",))`` apart, or both in one item with the zero-gradient skip (the
gradient serves both). Its estimated cost is targets x images x probes x (the FLOPs of the
layer and of every catalogued layer after it): the suffix forwards of the search dominate the
analysis, and each target (a channel for the weights, a neuron for the activations) costs one
suffix forward per image and probe. A bisection over ``m`` candidates probes about
``log2(m + 1)`` of them, and a target's candidates are its distinct single-fault errors, at
most the grid's size: 32 bit flips for a neuron, ``32 x fan-in`` for a channel (``32 x`` the
kernel of one input channel for each ray of a ray-searched layer,
:func:`~pytorchfi_deepvigor.analysis.rays.uses_rays`). Without the probe count, a weight
channel's item was estimated at half its measured time relative to a neuron's, and the two
ranks' loads of a ResNet-18 analysis differed by 20%.

Example:
    >>> plan([0, 1], ("activations", "weights"), skip_zero_gradient=False)
    [(0, ('activations',)), (0, ('weights',)), (1, ('activations',)), (1, ('weights',))]
    >>> plan([0, 1], ("activations", "weights"), skip_zero_gradient=True)
    [(0, ('activations', 'weights')), (1, ('activations', 'weights'))]
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

from pytorchfi_deepvigor import distributed
from pytorchfi_deepvigor.analysis.rays import ray_count, uses_rays
from pytorchfi_deepvigor.analysis.sampling import LayerSites
from pytorchfi_deepvigor.engine import SimulationEngine
from pytorchfi_deepvigor.results import Cost, LayerResult, RankCost

__all__ = ["Item", "gather", "mine", "plan"]

logger = logging.getLogger(__name__)

Item = tuple[int, tuple[str, ...]]


def plan(nums: Sequence[int], kinds: tuple[str, ...], *, skip_zero_gradient: bool) -> list[Item]:
    """Every rank's list of work items, in the one-process order."""
    if skip_zero_gradient:
        return [(num, kinds) for num in nums]
    return [(num, (kind,)) for num in nums for kind in kinds]


def cost(
    engine: SimulationEngine, item: Item, sites: Sequence[LayerSites], grid_size: int
) -> float:
    """Estimated cost of one item (see the module docstring)."""
    num, kinds = item
    info = engine.layer(num)
    per_probe = engine.suffix_flops_per_image(num) + 2.0 * info.neurons_per_image * info.fan_in
    s = sites[num]
    total = 0.0
    for kind in kinds:
        if kind in ("activations", "stored"):
            total += s.channels.size * s.position_matrix().shape[1] * _probes(32, grid_size)
        elif uses_rays(info):
            rays = ray_count(info)
            total += s.channels.size * rays * _probes(32 * info.fan_in // rays, grid_size)
        else:
            total += s.channels.size * _probes(32 * info.fan_in, grid_size)
    return total * engine.num_images * per_probe


def _probes(errors: int, grid_size: int) -> float:
    """Probes of a bisection over the candidates of ``errors`` distinct errors on a grid."""
    return math.log2(min(errors, grid_size) + 1)


def mine(
    engine: SimulationEngine,
    items: list[Item],
    sites: Sequence[LayerSites],
    world: distributed.World | None,
    grid_size: int,
) -> list[Item]:
    """The items this rank computes: all of them in one process."""
    if world is None:
        return items
    distributed.connect(world)
    costs = [cost(engine, item, sites, grid_size) for item in items]
    picked = distributed.share(costs, size=world.size, rank=world.rank)
    total = sum(costs) or 1.0
    logger.info(
        "%s: %d of %d analysis items, %.1f%% of the estimated cost",
        world.describe(),
        len(picked),
        len(items),
        100.0 * sum(costs[i] for i in picked) / total,
    )
    return [items[i] for i in picked]


def gather(
    world: distributed.World,
    engine: SimulationEngine,
    items: list[Item],
    done: list[LayerResult],
    n_mine: int,
    spent: Cost,
    started: float,
) -> tuple[list[LayerResult], Cost, tuple[RankCost, ...]]:
    """Every rank's layer results in the one-process order, the total cost and the per-rank
    record (``spent``: this rank's work; the total's wall time is this rank's, waiting included).
    """
    record = distributed.rank_cost(world, engine.device, spent, n_mine)
    parts = distributed.all_gather((record, done), world)
    order = {(num, kind): i for i, (num, kinds) in enumerate(items) for kind in kinds}
    layers = sorted(
        (layer for _, part in parts for layer in part),
        key=lambda x: order[(x.layer_num, x.target)],
    )
    total = Cost()
    for r, _ in parts:
        total = total + r.cost
    total = Cost(
        batched_forwards=total.batched_forwards,
        image_evaluations=total.image_evaluations,
        backwards=total.backwards,
        faults=total.faults,
        wall_time_s=time.perf_counter() - started,
    )
    return layers, total, tuple(r for r, _ in parts)
