"""Exhaustive fault injection: every fault of the chosen sites, on every image.

* ``target="weights"``: every bit of every weight of the chosen output channels (the paper's
  Table III validation: a seeded random ``channel_ratio`` of the channels of every layer);
  CVF = fraction of critical (fault, image) pairs of the channel, LVF = mean CVF.
* ``target="operands"``: every bit of every operand (padding excluded) of the chosen neurons;
  NVF per neuron, CVF = mean NVF of the channel's neurons, LVF = mean NVF of the layer.
* ``target="stored"``: every bit of every stored output value of the chosen channels.

DUEs count as critical. Results are :class:`~pytorchfi_deepvigor.results.VulnerabilityResult`
with ``method="exhaustive"``; operand faults are reported under the ``"activations"`` target so
they line up with the activation analysis in :func:`~pytorchfi_deepvigor.results.compare`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pytorchfi_deepvigor._guard import check_positive_int
from pytorchfi_deepvigor.bits import AnyFaultModel
from pytorchfi_deepvigor.campaigns import _run
from pytorchfi_deepvigor.campaigns.faults import (
    FaultEvaluator,
    FaultPopulation,
    operand_sites,
)
from pytorchfi_deepvigor.catalogue import LayerInfo
from pytorchfi_deepvigor.coverage import weight_coverage
from pytorchfi_deepvigor.engine import SimulationEngine
from pytorchfi_deepvigor.results import Cost, LayerResult, VulnerabilityResult

__all__ = ["ExhaustiveCampaign"]

Channels = Sequence[int] | Mapping[int, Sequence[int]] | None
Neurons = Mapping[int, Sequence[Sequence[int]]] | str | None


class ExhaustiveCampaign:
    """Exhaustive weight, operand or stored-activation FI on a simulation engine.

    Args:
        engine: the engine holding the model and the analysis batch.
        faults_per_chunk: faults per engine call and per progress record (default: per layer,
            about one engine batch of faults x images, cache-sized on a CPU).

    Example:
        >>> import torch
        >>> torch.manual_seed(0); net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        <torch._C.Generator object at ...>
        >>> engine = SimulationEngine(net, torch.randn(2, 1, 2, 2))
        >>> result = ExhaustiveCampaign(engine).run("weights", channels=[0])
        >>> result.layers[0].n_faults, result.layers[0].counts.total  # 4 weights x 32 bits, 2 images
        (128, 256)
    """

    def __init__(self, engine: SimulationEngine, *, faults_per_chunk: int | None = None) -> None:
        self.engine = _run.check_engine(engine)
        self.faults_per_chunk = check_positive_int(faults_per_chunk, "faults_per_chunk")
        self._evaluator = FaultEvaluator(engine)

    def run(
        self,
        target: str = "weights",
        *,
        layers: Sequence[int] | None = None,
        channels: Channels = None,
        channel_ratio: float | None = None,
        neurons: Neurons = None,
        fault_model: str | AnyFaultModel = "flip",
        seed: int = 0,
        progress_dir: str | Path | None = None,
        progress: bool = False,
    ) -> VulnerabilityResult:
        """Run the campaign.

        Args:
            target: ``"weights"``, ``"operands"`` (alias ``"activations"``) or ``"stored"``.
            layers: catalogue layer numbers (default: the layers a ``channels`` or ``neurons``
                mapping names, else every layer).
            channels: channels to analyse, one list for every layer or ``{layer: [channels]}``.
            channel_ratio: instead of ``channels``, draw ``ceil(ratio * C_out)`` channels per
                layer without replacement (the paper: 0.15). Default: every channel.
            neurons: operands only: ``{layer: [(c, h, w), ...]}`` (``h = w = 0`` for Linear), or
                ``"all"``; default: ``max(1, floor(log2(H * W)))`` seeded neurons per channel.
            fault_model: the fault model's name (:func:`~pytorchfi_deepvigor.bits.parse_fault_model`:
                ``"flip"``, ``"stuck-at"``, ``"mbu2"``, ``"mbu3"``, optionally with bits, e.g.
                ``"flip:exponent"``) or a ``FaultModel``; faults hit words of the model's
                own float format (16-bit words in a float16 or bfloat16 model).
            seed: seed of every random draw (channels, neurons).
            progress_dir: directory of the progress file; a rerun with the same arguments
                continues from it.
            progress: show a tqdm progress bar.

        Returns:
            A ``VulnerabilityResult`` (method ``"exhaustive"``).

        Raises:
            ValueError, TypeError: for invalid arguments, or a progress file of another campaign.
        """
        started = time.perf_counter()
        target = _run.check_target(target)
        model = _run.check_fault_model(fault_model, self.engine.dtype, self.engine.quantized)
        seed = _run.check_seed(seed)
        if layers is None:  # a {layer: ...} mapping names the layers it covers
            given = neurons if isinstance(neurons, Mapping) else channels
            layers = sorted(given) if isinstance(given, Mapping) else None
        layer_nums = _run.check_layers(self.engine, layers)
        if channels is not None and channel_ratio is not None:
            raise ValueError("give either channels or channel_ratio, not both")
        if channel_ratio is not None and (
            isinstance(channel_ratio, bool) or not 0.0 < float(channel_ratio) <= 1.0
        ):
            raise ValueError(f"expected channel_ratio in (0, 1], got {channel_ratio}")
        if neurons is not None and target != "operands":
            raise ValueError(f"neurons only apply to target='operands', not {target!r}")
        rng = np.random.default_rng(seed)
        units, picks = [], {}
        bound: dict[int, AnyFaultModel] = {}
        for num in layer_nums:
            info = self.engine.layer(num)
            chans = _channels(info, channels, channel_ratio, rng)
            sites, picked = _sites(info, target, chans, neurons, rng)
            bound[num] = _run.layer_fault_model(model, self.engine, num, target)
            population = FaultPopulation(info, target, bound[num], sites)  # type: ignore[arg-type]
            units.append(_run.WorkUnit(f"L{num}", population, np.arange(population.size)))
            picks[num] = (chans, picked)
        chunks = _run.chunk_sizes(self.engine, layer_nums, self.faults_per_chunk)
        options = {
            "target": target,
            **_run.fault_model_options(bound or {0: model}),
            "layers": layer_nums,
            "channel_ratio": channel_ratio,
            "channels": {str(n): [int(c) for c in p[0]] for n, p in picks.items()},
            "neurons": None
            if target != "operands"
            else {str(n): [list(map(int, x)) for x in p[1]] for n, p in picks.items()},
            "faults_per_chunk": {str(n): c for n, c in chunks.items()},
        }
        log = _run.open_log(
            progress_dir, f"exhaustive-{target}", self.engine, {**options, "seed": seed}
        )
        try:
            done = _run.execute(self._evaluator, units, chunks=chunks, log=log, progress=progress)
        finally:
            if log is not None:
                log.close()
        results = [
            dataclasses.replace(
                _layer_result(u, done.counts[u.key], picks[int(u.key[1:])][1]),
                cost=done.work.get(u.key, Cost()),
            )
            for u in units
        ]
        cost = Cost(
            batched_forwards=done.forwards,
            image_evaluations=done.evaluations,
            faults=sum(len(u.ids) for u in units),
            wall_time_s=time.perf_counter() - started,
        )
        result = VulnerabilityResult.from_layers(
            "exhaustive",
            results,
            options=options,
            seed=seed,
            cost=cost,
            n_images=self.engine.num_images,
            model_name=type(self.engine.model).__name__,
            coverage=weight_coverage(self.engine.model, self.engine.catalogue),
        )
        return dataclasses.replace(result, ranks=done.ranks) if done.ranks else result


def _channels(
    info: LayerInfo, channels: Channels, ratio: float | None, rng: np.random.Generator
) -> list[int]:
    n = info.out_channels
    if ratio is not None:
        return sorted(
            int(c) for c in rng.choice(n, _run.ceil_ratio(float(ratio), n), replace=False)
        )
    if channels is None:
        return list(range(n))
    chosen = channels.get(info.layer_num) if isinstance(channels, Mapping) else channels
    if chosen is None:
        raise ValueError(f"channels gives no channel list for layer {info.layer_num}")
    if isinstance(chosen, int | str) or not isinstance(chosen, Sequence) or not chosen:
        raise TypeError(f"expected a non-empty list of channel indices, got {chosen!r}")
    for c in chosen:
        if isinstance(c, bool) or not isinstance(c, int | np.integer) or not 0 <= c < n:
            raise ValueError(f"channel {c!r} out of range for layer {info.layer_num} (0..{n - 1})")
    return sorted(set(int(c) for c in chosen))


def _sites(
    info: LayerInfo, target: str, chans: list[int], neurons: Neurons, rng: np.random.Generator
) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Site array and, for operands, the (c, h, w) neurons it covers."""
    per_channel = info.neurons_per_channel
    c = np.asarray(chans, dtype=np.int64)
    if target == "weights":
        return (c[:, None] * info.fan_in + np.arange(info.fan_in)).reshape(-1), []
    if target == "stored":
        return (c[:, None] * per_channel + np.arange(per_channel)).reshape(-1), []
    width = info.output_shape[2] if len(info.output_shape) == 3 else 1
    if neurons == "all":
        flat = (c[:, None] * per_channel + np.arange(per_channel)).reshape(-1)
    elif neurons is None:
        k = max(1, int(math.floor(math.log2(per_channel)))) if per_channel > 1 else 1
        flat = np.concatenate(
            [ch * per_channel + np.sort(rng.choice(per_channel, k, replace=False)) for ch in chans]
        )
    elif isinstance(neurons, Mapping):
        flat = _neuron_list(info, neurons.get(info.layer_num), width)
    else:
        raise TypeError(
            f"expected neurons as None, 'all' or {{layer: [(c, h, w)]}}, got {neurons!r}"
        )
    picked = [(int(n // per_channel), int(n % per_channel // width), int(n % width)) for n in flat]
    return operand_sites(info, flat), picked


def _neuron_list(info: LayerInfo, given: Sequence[Sequence[int]] | None, width: int) -> np.ndarray:
    if not given:
        raise ValueError(f"neurons gives no (c, h, w) list for layer {info.layer_num}")
    shape = (*info.output_shape, 1, 1)[:3]  # neuron layout: (C, H, W), (F, T, 1), (F, 1, 1)
    flat = []
    for neuron in given:
        if len(neuron) != 3 or not all(0 <= int(i) < s for i, s in zip(neuron, shape, strict=True)):
            raise ValueError(
                f"neuron {tuple(neuron)} out of range for layer {info.layer_num} of shape {shape}"
            )
        c, h, w = (int(i) for i in neuron)
        flat.append(c * info.neurons_per_channel + h * width + w)
    return np.unique(np.asarray(flat, dtype=np.int64))


def _layer_result(
    unit: _run.WorkUnit, counts: np.ndarray, neurons: list[tuple[int, int, int]]
) -> LayerResult:
    pop, info = unit.population, unit.population.layer
    nvf: tuple[float, ...] | None = None
    kept: tuple[tuple[int, int, int], ...] | None = None
    if pop.target != "operands":
        chans, cvf = _run.weighted_vf(counts, pop.channels(unit.ids))
        lvf = float(cvf.mean())
    else:
        flat, per_neuron = _run.weighted_vf(counts, pop.sites[pop.decode(unit.ids)[0], 0])
        chans, inverse = np.unique(flat // info.neurons_per_channel, return_inverse=True)
        cvf = np.bincount(inverse, weights=per_neuron) / np.bincount(inverse)
        lvf = float(per_neuron.mean())
        by_flat = dict(zip(flat.tolist(), per_neuron.tolist(), strict=True))
        width = info.output_shape[2] if len(info.output_shape) == 3 else 1
        key = {n: n[0] * info.neurons_per_channel + n[1] * width + n[2] for n in neurons}
        # a neuron that reads only padding has no operand fault site: it is not listed
        kept = tuple(n for n in neurons if key[n] in by_flat)
        nvf = tuple(by_flat[key[n]] for n in kept)
    masks, per_mask = _run.weighted_vf(counts, pop.decode(unit.ids)[1])
    bit_vf = None
    if len(masks) == pop.n_strata:  # every mask of the fault model injected
        bit_vf = tuple(float(v) for v in per_mask)
    return LayerResult(
        layer_num=info.layer_num,
        name=info.name,
        kind=info.kind,
        target=_run.RESULT_TARGET[pop.target],  # type: ignore[arg-type]
        n_neurons=info.neurons_per_image,
        n_weights=info.n_weights,
        channels=tuple(int(c) for c in chans),
        cvf=tuple(float(v) for v in cvf),
        lvf=lvf,
        neurons=kept,
        nvf=nvf,
        counts=_run.outcome_counts(counts),
        n_faults=len(unit.ids),
        bit_vf=bit_vf,
    )
