"""Per-bit priors of data-aware SFI: explicit, from bit statistics, or from a pilot campaign."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pytorchfi_deepvigor.campaigns import _run
from pytorchfi_deepvigor.campaigns.faults import FaultEvaluator, FaultPopulation, layer_weight
from pytorchfi_deepvigor.functional.sfi import weight_bit_prior

__all__ = ["Pilot", "PriorSpec", "check_prior", "resolve_priors"]


@dataclass(frozen=True)
class Pilot:
    """A pilot campaign as data-aware prior: ``faults_per_bit`` seeded faults per (layer, bit).

    The prior of a bit is its observed VF, clipped to ``[floor, 0.5]``. The pilot's faults and
    work are counted in the campaign's cost.

    Example:
        >>> Pilot(faults_per_bit=8).floor
        0.0001
    """

    faults_per_bit: int = 16
    floor: float = 1e-4

    def __post_init__(self) -> None:
        n = self.faults_per_bit
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"expected Pilot.faults_per_bit >= 1, got {n!r}")
        if not 0.0 < self.floor <= 0.5:
            raise ValueError(f"expected Pilot.floor in (0, 0.5], got {self.floor!r}")


PriorSpec = Sequence[float] | np.ndarray | torch.Tensor | str | Pilot | None


def check_prior(prior: PriorSpec) -> None:
    """Raise ``ValueError``/``TypeError`` for a prior that is none of the accepted forms."""
    if prior is None or isinstance(prior, Pilot) or prior in ("pilot", "bit-statistics"):
        return
    if isinstance(prior, str):
        raise ValueError(
            "expected prior None, 'bit-statistics', 'pilot', a Pilot or one float per mask of "
            f"the fault model (32 for float32 flips), got {prior!r}"
        )
    try:
        values = np.asarray(prior, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"expected prior as floats (index = bit), got {prior!r}") from exc
    if values.ndim != 1 or values.size == 0:
        raise ValueError(
            "expected a prior of one value per mask of the fault model (32 for float32 "
            f"flips: index = bit, LSB = 0), got shape {values.shape}"
        )
    if not ((values > 0.0) & (values < 1.0)).all():
        raise ValueError(
            f"expected every prior value in (0, 1), got {values.min()}..{values.max()}"
        )


def _values(evaluator: FaultEvaluator, pop: FaultPopulation) -> torch.Tensor:
    """The values whose bit statistics give the default prior of a population."""
    if pop.target == "weights":
        return layer_weight(pop.layer)
    if pop.target == "operands":
        return evaluator.engine.layer_input(pop.layer.layer_num)
    return evaluator.engine.layer_output(pop.layer.layer_num)


def resolve_priors(
    evaluator: FaultEvaluator,
    pops: list[FaultPopulation],
    prior: PriorSpec,
    rng: np.random.Generator,
    *,
    chunks: Mapping[int, int],
    log: _run.RankedLog | None = None,
) -> tuple[list[np.ndarray], _run.Executed]:
    """One vector of priors per population (one value per mask of its fault model: 32 for
    float32 flips), and the pilot's work (empty without a pilot).

    A pilot draws its faults from ``rng`` before the campaign draws its sample.
    """
    none = _run.Executed({})
    if prior is None or (isinstance(prior, str) and prior == "bit-statistics"):
        return [weight_bit_prior(_values(evaluator, p), p.model).numpy() for p in pops], none
    if not (isinstance(prior, Pilot) or (isinstance(prior, str) and prior == "pilot")):
        vector = np.asarray(prior, dtype=np.float64)
        for p in pops:
            if vector.shape != (p.n_strata,):
                raise ValueError(
                    f"the prior has {vector.size} values, but the fault model {p.model} has "
                    f"{p.n_strata} masks: give one value per mask (index = mask, LSB first)"
                )
        return [vector.copy() for _ in pops], none
    pilot = prior if isinstance(prior, Pilot) else Pilot()
    units = []
    for pop in pops:
        ids = []
        for bit in range(pop.n_strata):
            stratum = pop.stratum(bit)
            k = min(pilot.faults_per_bit, len(stratum))
            ids.append(np.sort(rng.choice(len(stratum), k, replace=False)) + stratum.start)
        units.append(_run.WorkUnit(f"pilot-L{pop.layer.layer_num}", pop, np.concatenate(ids)))
    done = _run.execute(evaluator, units, chunks=chunks, log=log, progress=False)
    priors = []
    for unit in units:
        counts = done.counts[unit.key]
        bits = unit.population.decode(unit.ids)[1]
        _, vf = _run.weighted_vf(counts, bits)
        priors.append(np.clip(vf, pilot.floor, 0.5))
    return priors, done
