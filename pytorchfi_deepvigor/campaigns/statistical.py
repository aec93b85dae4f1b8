"""Statistical fault injection (SFI): Leveugle sample sizes, network/layer/bit strata.

| variant | strata | prior p |
| --- | --- | --- |
| ``"network"`` | the model (``n`` split across layers in proportion to ``N_l``) | 0.5 |
| ``"layer"`` | each layer | 0.5 |
| ``"data-unaware"`` | each (layer, bit) | 0.5 |
| ``"data-aware"`` | each (layer, bit) | a per-bit prior |

Faults are drawn without replacement from ``numpy.random.default_rng(seed)`` and evaluated by
the same per-fault evaluation as exhaustive FI. Each fault counts with its inverse inclusion
probability ``N_b / n_b``, so a layer's LVF is the stratified estimate ``sum_b N_b p_b / N_l``
and a channel's CVF the same ratio over the channel's sampled faults. Each LVF carries its
achieved margin (the stratified formula of the spec with the observed per-stratum VF); a
``MarginExceededWarning`` is raised where the margin the variant promises exceeds ``e``
(per layer; the whole model for ``"network"``, whose estimate and margin are in
``result.options["network_vf"]`` and ``["network_margin"]``).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pytorchfi_deepvigor.campaigns import _run
from pytorchfi_deepvigor.campaigns._priors import Pilot, PriorSpec, check_prior, resolve_priors
from pytorchfi_deepvigor.campaigns.faults import (
    BITS,
    FaultEvaluator,
    FaultPopulation,
    chunk_size,
    operand_sites,
)
from pytorchfi_deepvigor.catalogue import LayerInfo
from pytorchfi_deepvigor.engine import SimulationEngine
from pytorchfi_deepvigor.functional.sfi import (
    MarginExceededWarning,
    sample_size,
    split_proportional,
    stratified_margin,
)
from pytorchfi_deepvigor.results import Cost, LayerResult, VulnerabilityResult

__all__ = ["VARIANTS", "Pilot", "SamplingPlan", "StatisticalCampaign", "Stratum"]

VARIANTS: tuple[str, ...] = ("network", "layer", "data-unaware", "data-aware")


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


class StatisticalCampaign:
    """Network-wise, layer-wise, data-unaware or data-aware SFI on a simulation engine.

    Args:
        engine: the engine holding the model and the analysis batch.
        faults_per_chunk: faults per engine call and per progress record.

    Example:
        >>> import torch
        >>> torch.manual_seed(0); net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        <torch._C.Generator object at ...>
        >>> sfi = StatisticalCampaign(SimulationEngine(net, torch.randn(2, 1, 2, 2)))
        >>> sfi.plan("layer", e=0.05).per_layer()  # 12 weights x 32 bits = 384 faults
        {0: 244}
        >>> sfi.run("layer", e=0.05).layers[0].n_faults
        244
    """

    def __init__(self, engine: SimulationEngine, *, faults_per_chunk: int | None = None) -> None:
        self.engine = _run.check_engine(engine)
        if faults_per_chunk is not None and (
            isinstance(faults_per_chunk, bool)
            or not isinstance(faults_per_chunk, int)
            or faults_per_chunk < 1
        ):
            raise ValueError(f"expected faults_per_chunk >= 1, got {faults_per_chunk!r}")
        self.faults_per_chunk = faults_per_chunk or chunk_size(engine)
        self._evaluator = FaultEvaluator(engine)

    # ---------------------------------------------------------------------- planning
    def _populations(
        self, target: str, fault_model: str, layers: Sequence[int] | None
    ) -> list[FaultPopulation]:
        out = []
        for num in _run.check_layers(self.engine, layers):
            info = self.engine.layer(num)
            out.append(FaultPopulation(info, target, fault_model, _all_sites(info, target)))  # type: ignore[arg-type]
        return out

    def plan(
        self,
        variant: str = "layer",
        *,
        target: str = "weights",
        layers: Sequence[int] | None = None,
        e: float = 0.01,
        t: float = 2.58,
        prior: PriorSpec = None,
        fault_model: str = "flip",
        seed: int = 0,
    ) -> SamplingPlan:
        """The strata and sample sizes :meth:`run` would use (a pilot prior runs its pilot)."""
        args = _check(variant, target, e, t, prior, fault_model, seed)
        pops = self._populations(args.target, args.fault_model, layers)
        rng = np.random.default_rng(args.seed)
        priors = None
        if variant == "data-aware":
            priors, _ = resolve_priors(
                self._evaluator, pops, prior, rng, chunk=self.faults_per_chunk
            )
        return _plan(variant, pops, priors, e, t)

    # -------------------------------------------------------------------------- run
    def run(
        self,
        variant: str = "layer",
        *,
        target: str = "weights",
        layers: Sequence[int] | None = None,
        e: float = 0.01,
        t: float = 2.58,
        prior: PriorSpec = None,
        fault_model: str = "flip",
        seed: int = 0,
        progress_dir: str | Path | None = None,
        progress: bool = False,
    ) -> VulnerabilityResult:
        """Run the campaign.

        Args:
            variant: ``"network"``, ``"layer"``, ``"data-unaware"`` or ``"data-aware"``.
            target: ``"weights"``, ``"operands"`` (alias ``"activations"``) or ``"stored"``.
            layers: catalogue layer numbers (default: every layer).
            e: requested error margin, in (0, 1).
            t: confidence quantile (2.58: 99%).
            prior: data-aware only: ``None``/``"bit-statistics"`` (from the bit statistics of
                the layer's weights, or its golden input/output values for operand/stored
                faults), a 32-vector (index = bit, LSB = 0), ``"pilot"`` or a :class:`Pilot`.
            fault_model: ``"flip"`` or ``"stuck-at"`` (stuck-at-0 and stuck-at-1).
            seed: seed of every draw (pilot and sample).
            progress_dir: directory of the progress file; a rerun continues from it.
            progress: show a tqdm progress bar.

        Returns:
            A ``VulnerabilityResult`` (method ``"sfi-<variant>"``) with per-layer margins.
        """
        started = time.perf_counter()
        args = _check(variant, target, e, t, prior, fault_model, seed)
        pops = self._populations(args.target, args.fault_model, layers)
        options = {
            **dataclasses.asdict(args),
            "prior": _prior_option(prior),
            "layers": [p.layer.layer_num for p in pops],
            "faults_per_chunk": self.faults_per_chunk,
        }
        rng = np.random.default_rng(args.seed)
        log = _run.open_log(progress_dir, f"sfi-{variant}-{args.target}", self.engine, options)
        try:
            priors, pilot = None, _run.Executed({})
            if variant == "data-aware":
                priors, pilot = resolve_priors(
                    self._evaluator, pops, prior, rng, chunk=self.faults_per_chunk, log=log
                )
            plan = _plan(variant, pops, priors, e, t)
            units, weights = _draw(plan, pops, rng)
            done = _run.execute(
                self._evaluator, units, chunk=self.faults_per_chunk, log=log, progress=progress
            )
        finally:
            if log is not None:
                log.close()
        layers_out, network, unsampled = [], [], []
        for unit in units:
            counts = done.counts[unit.key]
            if not len(counts):  # network-wise: a layer too small to get a fault
                unsampled.append(unit.population.layer.layer_num)
                continue
            strata = [s for s in plan.strata if s.layer_num == unit.population.layer.layer_num]
            layers_out.append(_layer_result(unit, counts, weights[unit.key], strata, e, t, variant))
            network.append((unit.population.size, len(unit.ids), _vf(counts)))
        if variant == "network":
            options.update(_network_estimate(network, e, t), unsampled_layers=unsampled)
        if priors is not None:
            options["priors"] = {
                str(p.layer.layer_num): list(map(float, priors[i])) for i, p in enumerate(pops)
            }
        cost = Cost(
            batched_forwards=done.forwards + pilot.forwards,
            image_evaluations=done.evaluations + pilot.evaluations,
            faults=plan.faults + sum(len(c) for c in pilot.counts.values()),
            wall_time_s=time.perf_counter() - started,
        )
        return VulnerabilityResult.from_layers(
            f"sfi-{variant}",  # type: ignore[arg-type]
            layers_out,
            options=options,
            seed=args.seed,
            cost=cost,
            n_images=self.engine.num_images,
            model_name=type(self.engine.model).__name__,
        )


@dataclass(frozen=True)
class _Args:
    variant: str
    target: str
    e: float
    t: float
    fault_model: str
    seed: int


def _check(
    variant: str, target: str, e: float, t: float, prior: PriorSpec, fault_model: str, seed: int
) -> _Args:
    if variant not in VARIANTS:
        raise ValueError(f"expected variant in {VARIANTS}, got {variant!r}")
    if isinstance(e, bool) or not isinstance(e, int | float) or not 0.0 < e < 1.0:
        raise ValueError(f"expected margin e in (0, 1), got {e!r}")
    if isinstance(t, bool) or not isinstance(t, int | float) or not 0.0 < t < float("inf"):
        raise ValueError(f"expected confidence quantile t > 0 (2.58 for 99%), got {t!r}")
    if prior is not None and variant != "data-aware":
        raise ValueError(f"prior only applies to variant='data-aware', not {variant!r}")
    check_prior(prior)
    return _Args(
        variant=variant,
        target=_run.check_target(target),
        e=float(e),
        t=float(t),
        fault_model=_run.check_fault_model(fault_model),
        seed=_run.check_seed(seed),
    )


def _prior_option(prior: PriorSpec) -> object:
    if prior is None or isinstance(prior, str):
        return prior
    if isinstance(prior, Pilot):
        return {"faults_per_bit": prior.faults_per_bit, "floor": prior.floor}
    return [float(p) for p in prior]


def _all_sites(info: LayerInfo, target: str) -> np.ndarray:
    if target == "weights":
        return np.arange(info.n_weights)
    if target == "stored":
        return np.arange(info.neurons_per_image)
    return operand_sites(info, np.arange(info.neurons_per_image))


def _plan(
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
            for bit in range(BITS):
                prior = 0.5 if priors is None else float(priors[i][bit])
                strata.append(
                    Stratum(p.layer.layer_num, bit, n_b, sample_size(n_b, e, t, prior), prior)
                )
    return SamplingPlan(variant, tuple(strata))


def _draw(
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


def _vf(counts: np.ndarray) -> float:
    total = counts.sum()
    return float((counts[:, 2] + counts[:, 3]).sum() / total) if total else 0.0


def _layer_result(
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
        p_hat = _vf(counts[start : start + s.sample])
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


def _network_estimate(layers: list[tuple[int, int, float]], e: float, t: float) -> dict[str, float]:
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
