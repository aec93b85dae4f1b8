"""SFI sampling: strata and sample sizes, seeded draws, stratified estimates and margins.

Private helpers of :mod:`pytorchfi_deepvigor.campaigns.statistical` (the public names
``Stratum`` and ``SamplingPlan`` are re-exported there).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from pytorchfi_deepvigor.campaigns import _run
from pytorchfi_deepvigor.campaigns.faults import FaultPopulation
from pytorchfi_deepvigor.functional.sfi import (
    MarginExceededWarning,
    sample_size,
    split_proportional,
    stratified_margin,
)
from pytorchfi_deepvigor.results import LayerResult

__all__ = ["SamplingPlan", "Stratum", "draw", "layer_result", "network_estimate", "plan", "vf"]


@dataclass(frozen=True)
class Stratum:
    """One stratum: a layer (``bit`` is ``None``) or a (layer, bit) pair, with its sizes."""

    layer_num: int
    bit: int | None
    population: int
    sample: int
    prior: float


@dataclass(frozen=True)
class SamplingPlan:
    """How many faults an SFI campaign draws from which stratum.

    Example:
        >>> plan = SamplingPlan("layer", (Stratum(0, None, 27_648, 10_389, 0.5),))
        >>> plan.faults, plan.per_layer()
        (10389, {0: 10389})
    """

    variant: str
    strata: tuple[Stratum, ...]

    @property
    def faults(self) -> int:
        return sum(s.sample for s in self.strata)

    def per_layer(self) -> dict[int, int]:
        """Faults drawn per layer."""
        out: dict[int, int] = {}
        for s in self.strata:
            out[s.layer_num] = out.get(s.layer_num, 0) + s.sample
        return out


def plan(
    variant: str,
    pops: list[FaultPopulation],
    priors: list[np.ndarray] | None,
    e: float,
    t: float,
) -> SamplingPlan:
    strata = []
    if variant == "network":
        sizes = [p.size for p in pops]
        split = split_proportional(sample_size(sum(sizes), e, t), sizes)
        strata = [
            Stratum(p.layer.layer_num, None, p.size, n, 0.5)
            for p, n in zip(pops, split, strict=True)
        ]
    elif variant == "layer":
        strata = [
            Stratum(p.layer.layer_num, None, p.size, sample_size(p.size, e, t), 0.5) for p in pops
        ]
    else:
        for i, p in enumerate(pops):
            n_b = len(p.stratum(0))
            for bit in range(p.n_strata):
                prior = 0.5 if priors is None else float(priors[i][bit])
                strata.append(
                    Stratum(p.layer.layer_num, bit, n_b, sample_size(n_b, e, t, prior), prior)
                )
    return SamplingPlan(variant, tuple(strata))


def draw(
    plan: SamplingPlan, pops: list[FaultPopulation], rng: np.random.Generator
) -> tuple[list[_run.WorkUnit], dict[str, np.ndarray]]:
    """Sorted fault ids per layer and each fault's weight N_b / n_b."""
    units, weights = [], {}
    for pop in pops:
        ids, w = [], []
        for s in (s for s in plan.strata if s.layer_num == pop.layer.layer_num):
            offset = 0 if s.bit is None else pop.stratum(s.bit).start
            if s.sample:
                ids.append(np.sort(rng.choice(s.population, s.sample, replace=False)) + offset)
                w.append(np.full(s.sample, s.population / s.sample))
        key = f"L{pop.layer.layer_num}"
        units.append(_run.WorkUnit(key, pop, np.concatenate(ids) if ids else np.zeros(0, np.int64)))
        weights[key] = np.concatenate(w) if w else np.zeros(0)
    return units, weights


def vf(counts: np.ndarray) -> float:
    total = counts.sum()
    return float((counts[:, 2] + counts[:, 3]).sum() / total) if total else 0.0


def layer_result(
    unit: _run.WorkUnit,
    counts: np.ndarray,
    weights: np.ndarray,
    strata: list[Stratum],
    e: float,
    t: float,
    variant: str,
) -> LayerResult:
    pop, info = unit.population, unit.population.layer
    chans, cvf = _run.weighted_vf(counts, pop.channels(unit.ids), weights)
    lvf = float(_run.weighted_vf(counts, np.zeros(len(counts)), weights)[1][0])
    drawn = [s for s in strata if s.sample]
    observed, start = [], 0
    for s in drawn:
        p_hat = vf(counts[start : start + s.sample])
        # data-aware: the prior is an assumption about the data, so it bounds p_b from below
        observed.append(max(p_hat, s.prior) if variant == "data-aware" else p_hat)
        start += s.sample
    margin = stratified_margin(
        [s.population for s in drawn], [s.sample for s in drawn], observed, t
    )
    if margin > e and variant != "network":
        warnings.warn(
            f"layer {info.layer_num} ({info.name}): achieved SFI margin {margin:.4g} exceeds "
            f"e={e} (observed VF {lvf:.4g}; a prior that is too small gives too few samples)",
            MarginExceededWarning,
            stacklevel=3,
        )
    return LayerResult(
        layer_num=info.layer_num,
        name=info.name,
        kind=info.kind,
        target=_run.RESULT_TARGET[pop.target],  # type: ignore[arg-type]
        n_neurons=info.neurons_per_image,
        n_weights=info.n_weights,
        channels=tuple(chans),
        cvf=tuple(cvf),
        lvf=lvf,
        counts=_run.outcome_counts(counts),
        n_faults=len(unit.ids),
        margin=margin,
    )


def network_estimate(layers: list[tuple[int, int, float]], e: float, t: float) -> dict[str, float]:
    """Whole-model VF (population-weighted) and its margin, one stratum as the spec's table says."""
    total = sum(size for size, _, _ in layers)
    drawn = sum(n for _, n, _ in layers)
    vf = sum(size * p for size, _, p in layers) / total
    margin = stratified_margin([total], [drawn], [vf], t)
    if margin > e:
        warnings.warn(
            f"network-wise SFI: achieved margin {margin:.4g} exceeds e={e}",
            MarginExceededWarning,
            stacklevel=3,
        )
    return {"network_vf": vf, "network_margin": margin}
