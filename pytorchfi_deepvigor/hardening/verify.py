"""Whether a plan keeps its promise: the protected model measured by the analysis and by FI.

The protected model (:func:`~pytorchfi_deepvigor.hardening.apply`) is analysed again and
injected with data-aware statistical FI (its margin at the chosen confidence), on the same
fault sites as the user's model: TMR's voters and the clamps are in the model, so FI sees them
exactly as the user's forward computes them. ECC changes memory, not the computation: a flip of
a covered bit is corrected before the weight is read, so FI draws the weight faults of an ECC
layer from its uncovered bits and counts the covered ones masked (the layer's VF is the
uncovered VF times the uncovered share of the bits); the analysis removes the covered bits from
its bit map the same way. In the analysis, a layer's triplicated channels are a stratum of VF 0
(every fault of theirs is out-voted: ``tests/test_hardening.py`` checks it against the oracle)
and its other channels are estimated by those the analysis drew among them.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pytorchfi_deepvigor._guard import check_images, eval_mode
from pytorchfi_deepvigor.analysis import DeepVigorAnalyzer
from pytorchfi_deepvigor.campaigns import StatisticalCampaign
from pytorchfi_deepvigor.engine import SimulationEngine
from pytorchfi_deepvigor.functional.vf import total_mvf
from pytorchfi_deepvigor.hardening.apply import apply
from pytorchfi_deepvigor.hardening.plan import FORMAT_BITS, HardeningPlan
from pytorchfi_deepvigor.results import Cost, LayerResult, VulnerabilityResult

__all__ = ["Verification", "verify"]


@dataclass(frozen=True)
class Verification:
    """The protected model's MVFs: predicted, analysed, and measured by SFI with its margin.

    ``layers`` holds one row per layer: the predicted, analysed and SFI LVFs of both targets
    (and the SFI margins). ``held``: the SFI total MVF is within ``sfi_margin`` of the
    prediction, or below it (``None`` without SFI). ``agreement``: the share of held-out images
    whose top-1 the protected model keeps (``None`` without held-out images).
    """

    predicted: dict[str, float]
    analysis: dict[str, float] | None
    sfi: dict[str, float] | None
    sfi_margin: float | None
    held: bool | None
    agreement: float | None
    layers: tuple[dict[str, Any], ...] = ()
    cost: dict[str, Cost] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"predicted MVF {self.predicted['total']:.4%}"]
        if self.analysis is not None:
            parts.append(f"analysis {self.analysis['total']:.4%}")
        if self.sfi is not None and self.sfi_margin is not None:
            verdict = "held" if self.held else "NOT held"
            parts.append(f"SFI {self.sfi['total']:.4%} +- {self.sfi_margin:.4%} ({verdict})")
        if self.agreement is not None:
            parts.append(f"clean top-1 kept on {self.agreement:.2%} of held-out images")
        return ", ".join(parts)


def _uncovered(plan: HardeningPlan, num: int) -> tuple[int, ...]:
    width = FORMAT_BITS[plan.number_format][0]
    prot = plan.protections.get(num)
    covered = set(prot.ecc_bits) if prot else set()
    return tuple(b for b in range(width) if b not in covered)


def _agreement(model: nn.Module, protected: nn.Module, images: Tensor) -> float:
    with eval_mode(model), eval_mode(protected), torch.no_grad():
        a = model(images).argmax(1)
        b = protected(images).argmax(1)
    return float((a == b).float().mean())


def verify(
    plan: HardeningPlan,
    model: nn.Module,
    images: Tensor,
    *,
    sfi: bool = True,
    analysis: bool = True,
    e: float = 0.01,
    t: float = 2.58,
    seed: int = 0,
    sampling: float | None = None,
    holdout: Tensor | None = None,
    reference: VulnerabilityResult | None = None,
    progress: bool = False,
) -> Verification:
    """Measure the protected model: the analysis and data-aware SFI on ``images``.

    Args:
        plan: the plan (made on an analysis of ``model``, or of ``model`` clamped as the plan's
            ranges say, on the same images).
        model: the user's model (left unchanged; the plan protects a copy).
        images: the analysis batch the plan's result was computed on.
        sfi: run data-aware SFI on the protected model (margin ``e`` at quantile ``t``).
        analysis: analyse the protected model.
        seed: the seed of the SFI draw and of the analysis' site draw.
        sampling: the analysis' channel ratio (``None``: every channel).
        holdout: images not used for the plan: the share whose top-1 the protection keeps.
        reference: SFI (or exhaustive FI) of both targets of the user's model on ``images``: the
            layers and targets the plan leaves as they are take their VFs from it instead of a
            new campaign (TMR and ECC change no fault outside the layer and target they protect:
            a voter or a corrected word passes a fault-free input's errors on unchanged), and
            only the protected ones are injected. Not with clamps, which change every fault's
            path.
        progress: progress bars.

    Raises:
        ValueError: a ``reference`` with a plan that clamps, or one lacking a layer or target.
    """
    if reference is not None:
        _check_reference(reference, plan, len(images), t)
    if holdout is not None:
        holdout = check_images(holdout, next((p.dtype for p in model.parameters()), torch.float32))
    protected = apply(plan, model)
    engine = SimulationEngine(protected, images)
    nums = [int(n) for n in plan.options.get("layers", [])] or [
        i.layer_num for i in engine.catalogue
    ]
    width = FORMAT_BITS[plan.number_format][0]
    costs: dict[str, Cost] = {}
    rows: dict[int, dict[str, Any]] = {n: {"layer_num": n} for n in nums}
    sizes = {
        i.layer_num: (int(math.prod(i.output_shape)), int(math.prod(i.weight_shape)))
        for i in engine.catalogue
    }
    pred_layers = plan.options.get("predicted_layers", {})
    for n in nums:
        rows[n]["name"] = engine.layer(n).name
        if str(n) in pred_layers:
            rows[n]["predicted_activations"], rows[n]["predicted_weights"] = pred_layers[str(n)]

    def total(act: dict[int, float], wts: dict[int, float]) -> dict[str, float]:
        a, w = [act[n] for n in nums], [wts[n] for n in nums]
        return {
            "total": float(
                total_mvf(a, w, [sizes[n][0] for n in nums], [sizes[n][1] for n in nums])
            ),
            "activations": float(sum(a) / len(a)),
            "weights": float(sum(w) / len(w)),
        }

    analysed = None
    if analysis:
        started = time.perf_counter()
        result = DeepVigorAnalyzer(engine).analyze(
            target="both", layers=nums, sampling=sampling, seed=seed, progress=progress
        )
        an_act: dict[int, float] = {}
        an_wts: dict[int, float] = {}
        for layer in result.layers:
            lvf = _stratified_lvf(plan, layer)
            if layer.target == "activations":
                an_act[layer.layer_num] = lvf
                continue
            keep = _uncovered(plan, layer.layer_num)
            if len(keep) < width and layer.bit_vf is not None and sum(layer.bit_vf) > 0:
                lvf *= sum(layer.bit_vf[b] for b in keep) / sum(layer.bit_vf)
            an_wts[layer.layer_num] = lvf
        for n in nums:
            rows[n]["analysis_activations"], rows[n]["analysis_weights"] = an_act[n], an_wts[n]
        analysed = total(an_act, an_wts)
        costs["analysis"] = _with_time(result.cost, started)
    measured = margin = held = None
    if sfi:
        started = time.perf_counter()
        campaign = StatisticalCampaign(engine)
        act: dict[int, float] = {}
        act_m: dict[int, float] = {}
        wts: dict[int, float] = {}
        wts_m: dict[int, float] = {}  # the SFI's, per layer
        measure_act, measure_w = list(nums), list(nums)
        if reference is not None:
            prots = plan.protections
            measure_act = [n for n in nums if n in prots and prots[n].tmr_channels]
            measure_w = [
                n for n in nums if n in prots and (prots[n].tmr_channels or prots[n].ecc_bits)
            ]
            for target, kept, vfs, margins in (
                ("activations", measure_act, act, act_m),
                ("weights", measure_w, wts, wts_m),
            ):
                for n in nums:
                    if n in kept:
                        continue
                    try:
                        layer = reference.layer(n, target)  # type: ignore[arg-type]
                    except KeyError:
                        raise ValueError(
                            f"the reference has no {target} result for layer {n}: run SFI of "
                            "both targets of every layer on the user's model"
                        ) from None
                    vfs[n], margins[n] = layer.lvf, layer.margin or 0.0
                    rows[n][f"sfi_{target}_from"] = "reference"
        spent = Cost()
        if measure_act:
            act_r = campaign.run(
                "data-aware", target="operands", layers=measure_act, e=e, t=t, seed=seed,
                progress=progress,
            )  # fmt: skip
            spent = spent + act_r.cost
            act.update({x.layer_num: x.lvf for x in act_r.layers})
            act_m.update({x.layer_num: x.margin or 0.0 for x in act_r.layers})
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for n in measure_w:
            groups[_uncovered(plan, n)].append(n)
        for keep, members in groups.items():
            if not keep:
                for n in members:
                    wts[n], wts_m[n] = 0.0, 0.0
                continue
            model_name = "flip" if len(keep) == width else "flip:" + ",".join(map(str, keep))
            res = campaign.run(
                "data-aware",
                target="weights",
                layers=members,
                e=e,
                t=t,
                seed=seed,
                fault_model=model_name,
                progress=progress,
            )
            spent = spent + res.cost
            share = len(keep) / width
            for x in res.layers:
                wts[x.layer_num] = x.lvf * share
                wts_m[x.layer_num] = (x.margin or 0.0) * share
        for n in nums:
            rows[n].update(
                sfi_activations=act[n],
                sfi_activations_margin=act_m[n],
                sfi_weights=wts[n],
                sfi_weights_margin=wts_m[n],
            )
        measured = total(act, wts)
        count = len(nums)
        squares = 0.0
        for n in nums:
            fa = sizes[n][0] / (sizes[n][0] + sizes[n][1]) / count
            fw = sizes[n][1] / (sizes[n][0] + sizes[n][1]) / count
            squares += (fa * act_m[n]) ** 2 + (fw * wts_m[n]) ** 2
        margin = math.sqrt(squares)
        held = measured["total"] <= plan.predicted["total"] + margin
        costs["sfi"] = _with_time(spent, started)
    agreement = _agreement(model, protected, holdout) if holdout is not None else None
    return Verification(
        predicted=dict(plan.predicted),
        analysis=analysed,
        sfi=measured,
        sfi_margin=margin,
        held=held,
        agreement=agreement,
        layers=tuple(rows[n] for n in nums),
        cost=costs,
    )


def _stratified_lvf(plan: HardeningPlan, layer: LayerResult) -> float:
    """A layer's LVF from the analysis of the protected copy: its triplicated channels are a
    stratum of VF 0 (every one of their faults is out-voted, tested against the oracle), the
    others are estimated by the channels analysed among them (all of them without sampling)."""
    count = int(plan.options.get("channels", {}).get(str(layer.layer_num), len(layer.channels)))
    prot = plan.protections.get(layer.layer_num)
    tmr = set(prot.tmr_channels) if prot else set()
    rest = [v for c, v in zip(layer.channels, layer.cvf, strict=True) if c not in tmr]
    if not rest or count <= len(tmr):
        return 0.0 if count <= len(tmr) else layer.lvf
    return float(np.mean(rest)) * (count - len(tmr)) / count


def _check_reference(
    reference: VulnerabilityResult, plan: HardeningPlan, n_images: int, t: float
) -> None:
    """Refuse a reference that is not FI of the user's model under the plan's faults."""
    if plan.ranges:
        raise ValueError(
            "a plan that clamps changes the path of every fault: verify it without reference"
        )
    if not isinstance(reference, VulnerabilityResult):
        raise TypeError(
            f"expected the reference as a VulnerabilityResult, got {type(reference).__name__}"
        )
    if reference.method == "deepvigor" or reference.method == "sfi-network":
        raise ValueError(
            f"the reference is a {reference.method!r} result: give exhaustive FI or layer-wise SFI "
            "(data-aware, data-unaware, layer) of both targets of the user's model"
        )
    model = str(reference.options.get("fault_model", "flip"))
    fmt = str(reference.options.get("number_format", plan.number_format))
    if model != "flip" or fmt != plan.number_format:
        raise ValueError(
            f"the reference injected {model!r} faults in {fmt}: the plan is for single bit "
            f"flips in {plan.number_format}"
        )
    if reference.n_images and reference.n_images != n_images:
        raise ValueError(
            f"the reference ran on {reference.n_images} images, the verification on {n_images}: "
            "give FI of the same images"
        )
    quantile = reference.options.get("t")
    if quantile is not None and abs(float(quantile) - t) > 1e-9:
        raise ValueError(
            f"the reference's margins are at t={quantile}, the verification's at t={t}"
        )


def _with_time(cost: Cost, started: float) -> Cost:
    return Cost(
        cost.batched_forwards,
        cost.image_evaluations,
        cost.backwards,
        cost.faults,
        time.perf_counter() - started,
    )
