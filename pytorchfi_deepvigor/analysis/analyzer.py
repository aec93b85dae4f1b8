"""The public verb of the DeepVigor+ analysis: :class:`DeepVigorAnalyzer`.

It runs the method of ``spec/method.md`` on any ``nn.Module`` classifier: for every analysed
Conv2d/Linear layer, the weights analysis (one target per output channel) and/or the activations
analysis (one target per output neuron, operand fault model), complete or on a stratified
sample, and returns one :class:`~pytorchfi_deepvigor.results.VulnerabilityResult` holding the
per-channel (and per-neuron) VFs, LVFs, MVFs, the total MVF of Eq. 15 (when both targets were
analysed), the VV ranges per target and image, the EDMs on request, the drawn sites, the seed,
the options and the cost (batched forwards, image-evaluations, backwards, wall time).

The images' golden top-1 is the reference: labels are never used. The user's model is never
changed (the engine runs it in eval mode under ``no_grad``; the zero-gradient skip asks
``torch.autograd.grad`` for the gradient of the layer output only).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from pytorchfi_deepvigor import distributed
from pytorchfi_deepvigor._guard import check_layers
from pytorchfi_deepvigor.analysis import _sharded
from pytorchfi_deepvigor.analysis.activations import analyze_activations, analyze_stored
from pytorchfi_deepvigor.analysis.probing import margin_gradient, output_gradient
from pytorchfi_deepvigor.analysis.rays import searched_by_rays, uses_first_order
from pytorchfi_deepvigor.analysis.sampling import check_ratio, draw_sites
from pytorchfi_deepvigor.analysis.weights import AGGREGATES, analyze_weights
from pytorchfi_deepvigor.bits import (
    DEFAULT_FAULT_MODEL,
    AnyFaultModel,
    QuantizedFlip,
    parse_fault_model,
)
from pytorchfi_deepvigor.catalogue import unsupported_layers
from pytorchfi_deepvigor.coverage import weight_coverage
from pytorchfi_deepvigor.engine import SimulationEngine
from pytorchfi_deepvigor.functional.edm import SEARCHES, candidate_grid, grid_summary
from pytorchfi_deepvigor.quantized import bind_words, network_words
from pytorchfi_deepvigor.results import Cost, LayerResult, RankCost, VulnerabilityResult

__all__ = ["DeepVigorAnalyzer", "ANALYSIS_TARGETS"]

ANALYSIS_TARGETS = ("activations", "weights", "both", "stored")


def _check_flag(value: object, name: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"expected {name} as a bool, got {value!r}")


class DeepVigorAnalyzer:
    """DeepVigor+ vulnerability analysis of a CNN on an analysis batch.

    Args:
        model: the classifier (an ``nn.Module`` in float32, float16 or bfloat16), or a ready
            :class:`~pytorchfi_deepvigor.engine.SimulationEngine` (then ``images`` must be omitted).
        images: the analysis batch ``(I, C, H, W)`` or ``(I, F)``, in the model's format.
        device: where to compute (default: the model's device).
        max_batch: cap on batch elements per forward (default: the engine's memory budget).
        model_name: recorded in the result.

    Example:
        >>> torch.manual_seed(0); net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
        <torch._C.Generator object at ...>
        >>> result = DeepVigorAnalyzer(net, torch.randn(4, 1, 4, 4)).analyze(target="weights")
        >>> [(x.layer_num, x.target, len(x.cvf)) for x in result.layers]
        [(0, 'weights', 2), (1, 'weights', 3)]
        >>> 0.0 <= result.mvf_weights <= 1.0
        True
    """

    def __init__(
        self,
        model: nn.Module | SimulationEngine,
        images: Tensor | None = None,
        *,
        device: str | torch.device | None = None,
        max_batch: int | None = None,
        model_name: str = "",
    ) -> None:
        if isinstance(model, SimulationEngine):
            if images is not None:
                raise ValueError("pass either an engine, or a model with images, not both")
            self.engine = model
        elif isinstance(model, nn.Module):
            if images is None:
                raise ValueError("expected images (the analysis batch) with a model")
            self.engine = SimulationEngine(model, images, device=device, max_batch=max_batch)
        else:
            raise TypeError(
                f"expected an nn.Module or a SimulationEngine, got {type(model).__name__}"
            )
        self.model_name = model_name

    def _layers(self, layers: Iterable[int] | None) -> list[int]:
        return check_layers(layers, self.engine)  # the one check of layers, as in the campaigns

    def analyze(
        self,
        target: str = "both",
        layers: Iterable[int] | None = None,
        sampling: float | None = None,
        search: str = "fine",
        aggregate: str = "equivalent",
        seed: int = 0,
        skip_zero_gradient: bool = False,
        keep_edm: bool = False,
        progress: bool = False,
        fault_model: str | AnyFaultModel = DEFAULT_FAULT_MODEL,
    ) -> VulnerabilityResult:
        """Run the analysis.

        Args:
            target: ``"activations"`` (operands), ``"weights"``, ``"both"`` (the two of Eq. 15)
                or ``"stored"`` (the layers' output values themselves, PyTorchFI's neuron faults).
            layers: layer numbers (PyTorchFI's numbering) to analyse; ``None`` for all.
            sampling: channel ratio in ``(0, 1]`` for a stratified sample, ``None`` for complete.
            search: the VV search: ``"fine"`` (default: four candidates per octave over the
                whole float range, every finite bin probed, non-monotone criticality detected
                and scanned), ``"extended"`` (the paper grid plus a few large powers of two) or
                ``"paper"`` (``2^-10 .. 2^10``, errors beyond assumed critical: the paper).
            aggregate: how a weight fault's pattern becomes channel-wide errors:
                ``"equivalent"`` (default: the constant of the pattern's mean; filters on at
                most 3 input channels, and 1x1 filters on at most 8, searched along their own
                patterns; channels-last Linears on signed tokens judged by the pattern's signed
                parts over the tokens the network reads), ``"gradient"`` (the
                first-order equivalent, one backward per layer), ``"position"`` (the paper: one
                error per position), ``"fault"`` (the largest positional error) or ``"rays"``
                (every convolution and token-wise Linear searched along its weights' own
                patterns: the most accurate, at a few probes per weight and image, e.g. a
                ViT's attention projections, whose mean pattern moves every key alike and which
                softmax then ignores). ``search="paper", aggregate="position"`` is
                the paper's method.
            seed: seed of the site draw (recorded in the result).
            skip_zero_gradient: skip targets whose margin-loss gradient is zero on every image.
            keep_edm: keep every target's EDMs in the result (memory: targets x images x 2K+1).
            progress: show a tqdm progress bar over layers.
            fault_model: the faults whose VF is derived, by name
                (:func:`~pytorchfi_deepvigor.bits.parse_fault_model`: ``"flip"`` (default),
                ``"stuck-at"``, ``"mbu2"``, ``"mbu3"``, each optionally restricted to some bits,
                e.g. ``"flip:exponent"``) or a ``AnyFaultModel``; the words are the model's own
                format (a float16 model's weights and activations are 16-bit words, and the
                network after the layer runs in float16).

        Returns:
            The :class:`~pytorchfi_deepvigor.results.VulnerabilityResult`.

        Raises:
            ValueError / TypeError: for an invalid option, before any work is done.
        """
        if target not in ANALYSIS_TARGETS:
            raise ValueError(f"expected target in {ANALYSIS_TARGETS}, got {target!r}")
        if search not in SEARCHES:
            raise ValueError(f"expected search in {list(SEARCHES)}, got {search!r}")
        if aggregate not in AGGREGATES:
            raise ValueError(f"expected aggregate in {list(AGGREGATES)}, got {aggregate!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"expected seed as a non-negative int, got {seed!r}")
        check_ratio(sampling)
        words = network_words(
            parse_fault_model(fault_model, self.engine.dtype), self.engine.quantized
        )
        if isinstance(words, QuantizedFlip) and target != "stored":
            raise ValueError(
                f"{words.name} is PyTorchFI's neuron fault model (a quantised copy of a layer's "
                f"output flipped): analyse it with target='stored', not {target!r}"
            )
        for flag, name in (
            (skip_zero_gradient, "skip_zero_gradient"),
            (keep_edm, "keep_edm"),
            (progress, "progress"),
        ):
            _check_flag(flag, name)
        nums = self._layers(layers)
        if self.engine.quantized and (skip_zero_gradient or aggregate == "gradient"):
            raise ValueError(
                "the model is an int8 network (torch.ao quantized): its kernels have no "
                "gradient; analyse it without skip_zero_gradient and aggregate='gradient'"
            )
        for n in nums:  # a fault model the layer's words cannot take: refused before any work
            info = self.engine.catalogue[n]
            for kind in ("operands", "weights") if target == "both" else (target,):
                bind_words(words, info.module, kind, info.name)
        # a layer whose forward is not the plain product of its weight: outside the fault model
        skipped = [
            self.engine.catalogue[n] for n in nums if self.engine.catalogue[n].weight_transform
        ]
        nums = [n for n in nums if not self.engine.catalogue[n].weight_transform]
        grid = candidate_grid(search)
        sites = draw_sites(self.engine.catalogue, sampling, seed)
        kinds = ("activations", "weights") if target == "both" else (target,)
        ranges: dict[int, float] = {}  # pytorchfi-int8: the range each layer was bound to

        start_stats, start_time = self.engine.stats.snapshot(), time.perf_counter()
        # work items (layer, targets); under torchrun this rank's cost-balanced share of them
        world = distributed.detect()
        items = _sharded.plan(nums, kinds, skip_zero_gradient=skip_zero_gradient)
        mine = _sharded.mine(self.engine, items, sites, world, grid.numel())
        # every layer's golden values in one pass of the network
        self.engine.prepare(list(dict.fromkeys(num for num, _ in mine)))
        results: list[LayerResult] = []
        backwards = faults = 0
        todo: Iterable[_sharded.Item] = mine
        if progress:
            from tqdm.auto import tqdm

            where = "" if world is None else f" ({world.describe()}, {len(mine)}/{len(items)})"
            todo = tqdm(mine, desc=f"DeepVigor+ layer targets{where}", unit="item")
        for num, item_kinds in todo:
            info = self.engine.catalogue[num]
            grad, n_back = None, 0
            layer_stats, layer_time = self.engine.stats.snapshot(), time.perf_counter()
            if skip_zero_gradient:
                grad, n_back = output_gradient(self.engine, num)
                backwards += n_back
            for kind in item_kinds:
                if kind in ("stored", "activations"):  # the neuron targets
                    layer_words = bind_words(words, info.module, kind, info.name)
                    if isinstance(words, QuantizedFlip):  # bound here to record the range
                        peak = float(self.engine.layer_output(num).abs().max())
                        layer_words = words.bound(peak, num)
                        assert layer_words.max_value is not None
                        ranges[num] = layer_words.max_value
                    analyse = analyze_stored if kind == "stored" else analyze_activations
                    layer, n_faults = analyse(
                        self.engine,
                        info,
                        sites[num],
                        grid,
                        grad=grad,
                        keep_edm=keep_edm,
                        faults=layer_words,
                    )
                else:
                    margin = None
                    rays = searched_by_rays(info, aggregate)
                    if (aggregate == "gradient" and not rays) or (rays and uses_first_order(info)):
                        margin, n_more = margin_gradient(self.engine, num)
                        n_back += n_more
                        backwards += n_more
                    layer, n_faults = analyze_weights(
                        self.engine,
                        info,
                        sites[num],
                        grid,
                        aggregate=aggregate,
                        grad=grad,
                        margin_grad=margin,
                        keep_edm=keep_edm,
                        faults=bind_words(words, info.module, "weights", info.name),
                    )
                spent = self.engine.stats - layer_stats
                layer_cost = Cost(
                    batched_forwards=spent.batched_forwards,
                    image_evaluations=spent.image_evaluations,
                    backwards=n_back,  # the gradient serves both targets: counted with the first
                    faults=n_faults,
                    wall_time_s=time.perf_counter() - layer_time,
                )
                results.append(dataclasses.replace(layer, cost=layer_cost))
                faults += n_faults
                n_back = 0
                layer_stats, layer_time = self.engine.stats.snapshot(), time.perf_counter()
        work = self.engine.stats - start_stats
        cost = Cost(
            batched_forwards=work.batched_forwards,
            image_evaluations=work.image_evaluations,
            backwards=backwards,
            faults=faults,
            wall_time_s=time.perf_counter() - start_time,
        )
        ranks: tuple[RankCost, ...] = ()
        if world is not None:  # every rank's items, merged in the one-process order
            results, cost, ranks = _sharded.gather(
                world, self.engine, items, results, len(mine), cost, start_time
            )
        options = {
            "target": target,
            "layers": nums,
            "sampling": sampling,
            "search": search,
            **grid_summary(search),
            "aggregate": aggregate,
            "skip_zero_gradient": skip_zero_gradient,
            "first_probe": 1.0,
            "fault_model": words.name,
            "number_format": words.format,
        }
        if ranges:
            options["fault_ranges"] = {str(n): m for n, m in ranges.items()}
        result = VulnerabilityResult.from_layers(
            "deepvigor",
            results,
            options=options,
            seed=seed,
            cost=cost,
            n_images=self.engine.num_images,
            model_name=self.model_name,
            unsupported=[
                *unsupported_layers(self.engine.model),
                *(f"{i.name} ({type(i.module).__name__}: {i.weight_transform})" for i in skipped),
            ],
            coverage=weight_coverage(self.engine.model, self.engine.catalogue, analysis=True),
        )
        return dataclasses.replace(result, ranks=ranks) if ranks else result
