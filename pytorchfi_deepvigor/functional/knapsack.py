"""The multiple-choice knapsack the hardening planner solves (pure maths).

Groups of options, at most one option per group, each option a (cost, gain) with an integer
cost; maximise the total gain with total cost at most ``capacity``. Dynamic programming over
the capacity: exact, ``O(options x capacity)``. Callers with real-valued costs round them up to
a grid (:func:`grid_costs`): every plan found then fits the budget, and is optimal for the
rounded costs.

Example:
    >>> choose([(np.array([2, 3]), np.array([1.0, 1.6])), (np.array([2]), np.array([1.1]))], 4)
    [0, 0]
    >>> choose([(np.array([2, 3]), np.array([1.0, 1.6])), (np.array([2]), np.array([1.1]))], 3)
    [1, -1]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["choose", "grid_costs"]


def choose(groups: Sequence[tuple[np.ndarray, np.ndarray]], capacity: int) -> list[int]:
    """For each group, the index of its chosen option, or -1 for none.

    Args:
        groups: per group, ``(costs, gains)``: non-negative integer costs and real gains.
        capacity: the largest total cost allowed (a non-negative integer).

    Raises:
        ValueError: a negative or non-integer cost or capacity, or costs and gains of
            different lengths.
    """
    if int(capacity) != capacity or capacity < 0:
        raise ValueError(f"expected a non-negative integer capacity, got {capacity!r}")
    capacity = int(capacity)
    best = np.zeros(capacity + 1)  # best[b]: the largest gain of a cost of at most b
    picks = []
    for costs, gains in groups:
        costs = np.asarray(costs)
        gains = np.asarray(gains, dtype=np.float64)
        if costs.shape != gains.shape or costs.ndim != 1:
            raise ValueError(
                f"expected costs and gains of one length, got {costs.shape}, {gains.shape}"
            )
        if costs.size and (costs.min() < 0 or not np.all(costs == np.round(costs))):
            raise ValueError("expected non-negative integer costs (round them up to a grid)")
        new = best.copy()
        pick = np.full(capacity + 1, -1, dtype=np.int64)
        for j, (c, g) in enumerate(zip(costs.astype(np.int64), gains, strict=True)):
            if c > capacity or g <= 0:
                continue
            cand = best[: capacity + 1 - c] + g
            better = cand > new[c:]
            new[c:][better] = cand[better]
            pick[c:][better] = j
        best = new
        picks.append(pick)
    chosen, b = [], capacity
    for (costs, _), pick in zip(reversed(groups), reversed(picks), strict=True):
        j = int(pick[b])
        chosen.append(j)
        if j >= 0:
            b -= int(np.asarray(costs)[j])
    return chosen[::-1]


def grid_costs(costs: np.ndarray, budget: float, cells: int = 4096) -> tuple[np.ndarray, int]:
    """Integer costs and capacity for :func:`choose`: exact when the costs are integers and the
    budget is at most ``cells``; otherwise in units of ``budget / cells``, rounded up (a plan
    then never exceeds the budget).

    Example:
        >>> grid_costs(np.array([3, 5]), 10.0)
        (array([3, 5]), 10)
        >>> grid_costs(np.array([3000.0, 5000.0]), 10000.0, cells=10)
        (array([3, 5]), 10)
    """
    costs = np.asarray(costs, dtype=np.float64)
    if budget < 0 or not math.isfinite(budget):
        raise ValueError(f"expected a finite non-negative budget, got {budget}")
    if budget == 0:  # only what costs nothing fits
        return (costs > 0).astype(np.int64), 0
    integral = bool(np.all(costs == np.round(costs)))
    if integral and budget <= cells:
        return costs.astype(np.int64), int(math.floor(budget))
    unit = budget / cells
    return np.ceil(costs / unit - 1e-9).astype(np.int64), cells
