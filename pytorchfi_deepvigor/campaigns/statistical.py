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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pytorchfi_deepvigor import distributed
from pytorchfi_deepvigor._guard import check_positive_int
from pytorchfi_deepvigor.bits import AnyFaultModel
from pytorchfi_deepvigor.campaigns import _run, _sampling
from pytorchfi_deepvigor.campaigns._priors import Pilot, PriorSpec, check_prior, resolve_priors
from pytorchfi_deepvigor.campaigns._sampling import SamplingPlan, Stratum
from pytorchfi_deepvigor.campaigns.faults import (
    FaultEvaluator,
    FaultPopulation,
    operand_sites,
)
from pytorchfi_deepvigor.catalogue import LayerInfo
from pytorchfi_deepvigor.coverage import weight_coverage
from pytorchfi_deepvigor.engine import SimulationEngine
from pytorchfi_deepvigor.results import Cost, VulnerabilityResult

__all__ = ["VARIANTS", "Pilot", "SamplingPlan", "StatisticalCampaign", "Stratum"]

VARIANTS: tuple[str, ...] = ("network", "layer", "data-unaware", "data-aware")


class StatisticalCampaign:
    """Network-wise, layer-wise, data-unaware or data-aware SFI on a simulation engine.

    Args:
        engine: the engine holding the model and the analysis batch.
        faults_per_chunk: faults per engine call and per progress record (default: per layer,
            about one engine batch of faults x images, cache-sized on a CPU).

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
        self.faults_per_chunk = check_positive_int(faults_per_chunk, "faults_per_chunk")
        self._evaluator = FaultEvaluator(engine)

    # ---------------------------------------------------------------------- planning
    def _populations(
        self, target: str, fault_model: str | AnyFaultModel, layers: Sequence[int] | None
    ) -> list[FaultPopulation]:
        model = _run.check_fault_model(fault_model, self.engine.dtype, self.engine.quantized)
        out = []
        for num in _run.check_layers(self.engine, layers):
            info = self.engine.layer(num)
            bound = _run.layer_fault_model(model, self.engine, num, target)
            out.append(FaultPopulation(info, target, bound, _all_sites(info, target)))  # type: ignore[arg-type]
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
        fault_model: str | AnyFaultModel = "flip",
        seed: int = 0,
    ) -> SamplingPlan:
        """The strata and sample sizes :meth:`run` would use (a pilot prior runs its pilot)."""
        args = _check(variant, target, e, t, prior, fault_model, seed, self.engine)
        pops = self._populations(args.target, fault_model, layers)
        rng = np.random.default_rng(args.seed)
        priors = None
        if variant == "data-aware":
            priors, _ = resolve_priors(
                self._evaluator,
                pops,
                prior,
                rng,
                chunks=_run.chunk_sizes(
                    self.engine, [p.layer.layer_num for p in pops], self.faults_per_chunk
                ),
            )
        return _sampling.plan(variant, pops, priors, e, t)

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
        fault_model: str | AnyFaultModel = "flip",
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
                faults), one value per mask of the fault model (32 for float32 flips: index = bit,
                LSB = 0), ``"pilot"`` or a :class:`Pilot`.
            fault_model: the fault model's name or a ``FaultModel``, as in
                :meth:`ExhaustiveCampaign.run`; strata are its masks (the bits of a single-bit
                model).
            seed: seed of every draw (pilot and sample).
            progress_dir: directory of the progress file; a rerun continues from it.
            progress: show a tqdm progress bar.

        Returns:
            A ``VulnerabilityResult`` (method ``"sfi-<variant>"``) with per-layer margins.
        """
        started = time.perf_counter()
        args = _check(variant, target, e, t, prior, fault_model, seed, self.engine)
        pops = self._populations(args.target, fault_model, layers)
        nums = [p.layer.layer_num for p in pops]
        chunks = _run.chunk_sizes(self.engine, nums, self.faults_per_chunk)
        options = {
            **dataclasses.asdict(args),
            "prior": _prior_option(prior),
            "layers": nums,
            "faults_per_chunk": {str(n): c for n, c in chunks.items()},
        }
        rng = np.random.default_rng(args.seed)
        log = _run.open_log(progress_dir, f"sfi-{variant}-{args.target}", self.engine, options)
        try:
            priors, pilot = None, _run.Executed({})
            if variant == "data-aware":
                priors, pilot = resolve_priors(
                    self._evaluator, pops, prior, rng, chunks=chunks, log=log
                )
            plan = _sampling.plan(variant, pops, priors, e, t)
            units, weights = _sampling.draw(plan, pops, rng)
            done = _run.execute(self._evaluator, units, chunks=chunks, log=log, progress=progress)
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
            layer = _sampling.layer_result(unit, counts, weights[unit.key], strata, e, t, variant)
            num = unit.population.layer.layer_num
            work = done.work.get(unit.key, Cost()) + pilot.work.get(f"pilot-L{num}", Cost())
            layers_out.append(dataclasses.replace(layer, cost=work))
            network.append((unit.population.size, len(unit.ids), _sampling.vf(counts)))
        if variant == "network":
            options.update(_sampling.network_estimate(network, e, t), unsampled_layers=unsampled)
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
        result = VulnerabilityResult.from_layers(
            f"sfi-{variant}",  # type: ignore[arg-type]
            layers_out,
            options=options,
            seed=args.seed,
            cost=cost,
            n_images=self.engine.num_images,
            model_name=type(self.engine.model).__name__,
            coverage=weight_coverage(self.engine.model, self.engine.catalogue),
        )
        ranks = distributed.merge_rank_costs(pilot.ranks, done.ranks)
        return dataclasses.replace(result, ranks=ranks) if ranks else result


@dataclass(frozen=True)
class _Args:
    variant: str
    target: str
    e: float
    t: float
    fault_model: str
    number_format: str
    seed: int


def _check(
    variant: str,
    target: str,
    e: float,
    t: float,
    prior: PriorSpec,
    fault_model: str | AnyFaultModel,
    seed: int,
    engine: SimulationEngine,
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
    model = _run.check_fault_model(fault_model, engine.dtype, engine.quantized)
    if prior is not None and not isinstance(prior, str | Pilot):
        given = np.asarray(prior, dtype=np.float64).size
        if given != len(model.masks):
            raise ValueError(
                f"expected a prior of {len(model.masks)} values, one per mask of the fault "
                f"model {model} (index = bit, LSB = 0, for single-bit models), got {given}"
            )
    return _Args(
        variant=variant,
        target=_run.check_target(target),
        e=float(e),
        t=float(t),
        fault_model=model.name,
        number_format=model.format,
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
