"""The planner: from a result's VFs and a budget to a :class:`HardeningPlan`.

A plan at budget ``B`` adds at most ``B`` of the model's MACs and at most ``B`` of its weight
memory: a TMR channel costs the larger of its two shares (two more copies of its MACs, two more
copies of its weights), an ECC group its check bits' share of the memory, and the costs of a
plan add up to at most ``B``.

``strategy="planner"`` solves a multiple-choice knapsack over the layers
(:mod:`pytorchfi_deepvigor.functional.knapsack`): each layer takes at most one option, an ECC
group (none, ``exponent-msb``, ``exponent``, ``sign-exponent``, ``word``) together with its
``k`` TMR channels of largest gain given that group (a layer's channels cost the same, so its
best ``k`` are its top ``k``); the gain of an option is the drop of Eq. 15's total MVF
(:func:`~pytorchfi_deepvigor.hardening.predict`). Costs are rounded up to 1/4096 of the budget:
the plan fits the budget and no plan within ``B (1 - L/4096)`` (``L`` layers) does better.

The baselines users would otherwise pick, with the same mechanisms and budget: ``first-layers``
(whole layers from the input on), ``weights`` (the layers holding the most weights first),
``random`` (a seeded random order); each protects whole words by ECC layer by layer, then
channels by TMR, while they fit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from torch import nn

from pytorchfi_deepvigor.functional.knapsack import choose, grid_costs
from pytorchfi_deepvigor.hardening.plan import (
    ECC_GROUPS,
    FORMAT_BITS,
    Channels,
    HardeningPlan,
    LayerProtection,
    _pair,
    bit_share,
    channel_counts,
    channel_vfs,
    check_result,
    ecc_bits,
    hamming_check_bits,
    layer_costs,
    number_format,
    predict,
    resolve_name,
)
from pytorchfi_deepvigor.hardening.protect import plain_layer
from pytorchfi_deepvigor.results import VulnerabilityResult

__all__ = ["MECHANISMS", "STRATEGIES", "curve", "harden", "overheads"]

MECHANISMS = ("tmr", "ecc")
STRATEGIES = ("planner", "first-layers", "weights", "random")


def _check(budget: float, mechanisms: Iterable[str], strategy: str) -> tuple[str, ...]:
    if isinstance(budget, bool) or not isinstance(budget, int | float | np.floating):
        raise TypeError(f"expected budget as a number (0.1 = 10%), got {type(budget).__name__}")
    if not 0 <= budget <= 2:
        raise ValueError(
            f"expected budget as a fraction of overhead in [0, 2] (0.1 = 10%), got {budget!r}"
        )
    if isinstance(mechanisms, str):
        mechanisms = [m.strip() for m in mechanisms.split(",") if m.strip()]
    mechs = tuple(dict.fromkeys(mechanisms))
    bad = [m for m in mechs if m not in MECHANISMS]
    if bad or not mechs:
        raise ValueError(
            f"unknown mechanisms {bad or mechs}: expected some of {', '.join(MECHANISMS)} (range "
            "restriction is planned by analysing the clamped model: see restrict_ranges)"
        )
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    return mechs


def overheads(
    result: VulnerabilityResult, protections: Mapping[int, LayerProtection], channels: Channels
) -> tuple[float, float]:
    """Extra MACs and extra weight memory of a protection, as fractions of the model's."""
    costs = layer_costs(result, channels)
    width = FORMAT_BITS[number_format(result)][0]
    macs = sum(c.macs_per_channel * c.channels for c in costs.values())
    bits = sum(c.n_weights for c in costs.values()) * width
    extra_macs = extra_bits = 0
    for num, prot in protections.items():
        c = costs[num]
        k = len(prot.tmr_channels)
        extra_macs += 2 * k * c.macs_per_channel
        extra_bits += 2 * k * c.weights_per_channel * width
        if prot.ecc_bits:
            extra_bits += hamming_check_bits(len(prot.ecc_bits)) * c.n_weights
    return extra_macs / macs if macs else 0.0, extra_bits / bits if bits else 0.0


def _weights(result: VulnerabilityResult) -> dict[int, tuple[float, float]]:
    """Per layer, the factors of its operand and weight LVFs in Eq. 15's total MVF."""
    pairs = _pair(result)
    n = len(pairs)
    return {
        num: (
            act.n_neurons / (act.n_neurons + wts.n_weights) / n,
            wts.n_weights / (act.n_neurons + wts.n_weights) / n,
        )
        for num, (act, wts) in pairs.items()
    }


@dataclass(frozen=True)
class _Costs:
    """A layer's unit costs as fractions of the model's resources."""

    tmr: float  # one triplicated channel: max(its share of extra MACs, of extra memory)
    tmr_macs: float
    tmr_memory: float
    ecc: dict[tuple[int, ...], float]  # check bits of each ECC group, share of memory


def _unit_costs(result: VulnerabilityResult, channels: Channels, fmt: str) -> dict[int, _Costs]:
    costs = layer_costs(result, channels)
    width = FORMAT_BITS[fmt][0]
    macs = sum(c.macs_per_channel * c.channels for c in costs.values())
    bits = sum(c.n_weights for c in costs.values()) * width
    out = {}
    for num, c in costs.items():
        tmr_macs = 2 * c.macs_per_channel / macs
        tmr_memory = 2 * c.weights_per_channel * width / bits
        ecc = {
            ecc_bits(g, fmt): hamming_check_bits(len(ecc_bits(g, fmt))) * c.n_weights / bits
            for g in ECC_GROUPS
        }
        out[num] = _Costs(max(tmr_macs, tmr_memory), tmr_macs, tmr_memory, ecc)
    return out


def _tmr_gains(
    result: VulnerabilityResult, num: int, bits: tuple[int, ...], channels: Channels
) -> np.ndarray:
    """Each channel's drop of the total MVF when it is triplicated, the layer's ECC ``bits``
    given."""
    act, wts = _pair(result)[num]
    fa, fw = _weights(result)[num]
    c = channels[num]
    share = bit_share(wts, bits)
    return (fa * channel_vfs(act, c) + fw * channel_vfs(wts, c) * (1 - share)) / c


def _ecc_gain(result: VulnerabilityResult, num: int, bits: tuple[int, ...]) -> float:
    _, wts = _pair(result)[num]
    return _weights(result)[num][1] * wts.lvf * bit_share(wts, bits)


Choice = tuple[tuple[int, ...], tuple[int, ...]]  # (ECC bits, TMR channels) of one layer


def _optimum(
    result: VulnerabilityResult,
    mechs: tuple[str, ...],
    budget: float,
    channels: Channels,
    units: Mapping[int, _Costs],
    no_tmr: frozenset[int] = frozenset(),
) -> dict[int, Choice]:
    """Per layer the (ECC group, top-k TMR channels) of largest total gain within the budget:
    a multiple-choice knapsack over the layers, exact for the grid-rounded costs."""
    nums = list(units)
    groups: list[list[tuple[Choice, float, float]]] = []
    for n in nums:
        bit_sets = [()] + (list(units[n].ecc) if "ecc" in mechs else [])
        options: list[tuple[Choice, float, float]] = []
        for bits in bit_sets:
            ecc_cost = units[n].ecc.get(bits, 0.0) if bits else 0.0
            ecc_gain = _ecc_gain(result, n, bits) if bits else 0.0
            if bits:
                options.append(((bits, ()), ecc_cost, ecc_gain))
            if "tmr" not in mechs or n in no_tmr:
                continue
            gains = _tmr_gains(result, n, bits, channels)
            order = np.argsort(-gains, kind="stable")
            cumulative = np.cumsum(gains[order])
            for k in range(1, channels[n] + 1):
                cost = ecc_cost + k * units[n].tmr
                if cost > budget:
                    break
                chosen = tuple(int(c) for c in order[:k])
                options.append(((bits, chosen), cost, ecc_gain + float(cumulative[k - 1])))
        groups.append(options)
    flat = np.array([cost for options in groups for _, cost, _ in options])
    grid, capacity = grid_costs(flat, budget)
    packed, at = [], 0
    for options in groups:
        k = len(options)
        packed.append((grid[at : at + k], np.array([g for *_, g in options])))
        at += k
    picks = choose(packed, capacity)
    return {n: groups[i][j][0] for i, (n, j) in enumerate(zip(nums, picks, strict=True)) if j >= 0}


def _baseline(
    result: VulnerabilityResult,
    mechs: tuple[str, ...],
    budget: float,
    strategy: str,
    rng: np.random.Generator,
    channels: Channels,
    units: Mapping[int, _Costs],
    fmt: str,
    no_tmr: frozenset[int] = frozenset(),
) -> dict[int, Choice]:
    """Whole-word ECC of layers, then TMR of channels, in the baseline's order, while they fit."""
    order = _layer_order(result, strategy, rng, channels)
    word = ecc_bits("word", fmt)
    left = budget
    ecc: dict[int, tuple[int, ...]] = {}
    if "ecc" in mechs:
        for n in order:
            if units[n].ecc[word] <= left:
                ecc[n], left = word, left - units[n].ecc[word]
    tmr: dict[int, list[int]] = {}
    if "tmr" in mechs:
        if strategy == "random":
            items = [(n, c) for n in order for c in range(channels[n])]
            sequence = [items[i] for i in rng.permutation(len(items))]
        else:
            sequence = [(n, c) for n in order for c in range(channels[n])]
        for n, c in (item for item in sequence if item[0] not in no_tmr):
            if units[n].tmr <= left:
                tmr.setdefault(n, []).append(c)
                left -= units[n].tmr
    return {n: (ecc.get(n, ()), tuple(tmr.get(n, ()))) for n in set(ecc) | set(tmr)}


def _not_triplicable(result: VulnerabilityResult, model: nn.Module | None) -> list[int]:
    """Layers of ``model`` whose forward TMR's replicas cannot reproduce (left to ECC)."""
    if model is None:
        return []
    out = []
    for num, (_, wts) in _pair(result).items():
        module = model.get_submodule(resolve_name(model, wts.name))
        if plain_layer(module):
            out.append(num)
    return out


def _layer_order(
    result: VulnerabilityResult, strategy: str, rng: np.random.Generator, channels: Channels
) -> list[int]:
    costs = layer_costs(result, channels)
    nums = list(costs)
    if strategy == "first-layers":
        return nums
    if strategy == "weights":
        return sorted(nums, key=lambda n: (-costs[n].n_weights, n))
    return [nums[i] for i in rng.permutation(len(nums))]


def harden(
    result: VulnerabilityResult,
    budget: float,
    mechanisms: Iterable[str] | str = MECHANISMS,
    *,
    strategy: str = "planner",
    seed: int = 0,
    ranges: Mapping[int, tuple[Iterable[float], Iterable[float]]] | None = None,
    model: nn.Module | None = None,
) -> HardeningPlan:
    """Choose what to protect within ``budget`` to minimise the total MVF (paper Eq. 15).

    Args:
        result: an analysis (or exhaustive FI) of both targets, every channel (``sampling=None``),
            single bit flips; where ``ranges`` is given, of the model clamped to them
            (:func:`~pytorchfi_deepvigor.hardening.restrict_ranges`).
        budget: the overhead allowed, a fraction (0.1 = 10%): the plan adds at most ``budget``
            of the model's MACs and at most ``budget`` of its weight memory (see the module doc).
        mechanisms: ``"tmr"``, ``"ecc"`` or both (a list, or a comma-separated string).
        strategy: ``"planner"`` (the optimum, see the module doc) or a baseline:
            ``"first-layers"``, ``"weights"``, ``"random"``.
        seed: the seed of the ``random`` baseline (recorded in the plan).
        ranges: the clamp bounds per layer number (``(low, high)`` per channel) the result's model
            was analysed with; recorded in the plan, applied by :func:`apply`.
        model: the model the result was computed on: it gives every layer's channel count
            (needed where the result analysed only some channels of a layer; the others take the
            layer's LVF, the sample's estimate), and layers whose forward is not the plain
            product (TMR's replicas could not reproduce it) get no TMR.

    Returns:
        A :class:`HardeningPlan` with its overheads and predicted MVFs.

    Example:
        >>> import torch; from torch import nn; from pytorchfi_deepvigor import DeepVigorAnalyzer
        >>> torch.manual_seed(0); net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
        <torch._C.Generator object at ...>
        >>> result = DeepVigorAnalyzer(net, torch.randn(8, 1, 6, 6)).analyze(target="both")
        >>> plan = harden(result, budget=0.3)
        >>> plan.predicted["total"] < plan.baseline["total"], plan.overhead_macs <= 0.3
        (True, True)
    """
    mechs = _check(budget, mechanisms, strategy)
    if not isinstance(result, VulnerabilityResult):
        raise TypeError(f"expected a VulnerabilityResult, got {type(result).__name__}")
    channels = channel_counts(result, model)
    check_result(result, channels)
    fmt = number_format(result)
    if fmt not in FORMAT_BITS:
        raise ValueError(
            f"the planner has no word layout for {fmt!r}: expected one of {sorted(FORMAT_BITS)}"
        )
    costs = layer_costs(result, channels)
    units = _unit_costs(result, channels, fmt)
    rng = np.random.default_rng(seed)
    no_tmr = frozenset(_not_triplicable(result, model))
    if strategy == "planner":
        picked = _optimum(result, mechs, budget, channels, units, no_tmr)
    else:
        picked = _baseline(result, mechs, budget, strategy, rng, channels, units, fmt, no_tmr)
    ecc = {n: bits for n, (bits, _) in picked.items() if bits}
    tmr = {n: chans for n, (_, chans) in picked.items() if chans}
    bounds = {
        int(k): (tuple(map(float, lo)), tuple(map(float, hi)))
        for k, (lo, hi) in (ranges or {}).items()
    }
    unknown = sorted(set(bounds) - set(costs))
    if unknown:
        raise ValueError(f"ranges for layers {unknown} that the result does not hold")
    protections = {}
    for n, c in costs.items():
        prot = LayerProtection(n, c.name, tmr.get(n, ()), ecc.get(n, ()), n in bounds)
        if not prot.empty:
            protections[n] = prot
    base = predict(result, {}, channels)
    pred = predict(result, protections, channels)
    macs, memory = overheads(result, protections, channels)
    return HardeningPlan(
        strategy=strategy,
        budget=float(budget),
        mechanisms=mechs + (("clamp",) if bounds else ()),
        layers=tuple(protections.values()),
        overhead_macs=macs,
        overhead_memory=memory,
        baseline={
            "total": base.mvf_total,
            "activations": base.mvf_activations,
            "weights": base.mvf_weights,
        },
        predicted={
            "total": pred.mvf_total,
            "activations": pred.mvf_activations,
            "weights": pred.mvf_weights,
        },
        number_format=fmt,
        ranges=bounds,
        options={
            "seed": seed,
            "method": result.method,
            "model_name": result.model_name,
            "layers": list(costs),
            "channels": {str(n): c for n, c in channels.items()},
            "predicted_layers": {
                str(n): [pred.lvf_activations[n], pred.lvf_weights[n]] for n in costs
            },
        },
    )


def curve(
    result: VulnerabilityResult,
    budgets: Iterable[float] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5),
    mechanisms: Iterable[Iterable[str] | str] = (("tmr",), ("ecc",), ("tmr", "ecc")),
    strategies: Iterable[str] = STRATEGIES,
    *,
    seed: int = 0,
    ranges: Mapping[int, tuple[Iterable[float], Iterable[float]]] | None = None,
    model: nn.Module | None = None,
) -> list[dict[str, object]]:
    """The predicted total MVF against the overhead: one row per (strategy, mechanisms, budget).

    Example:
        >>> import torch; from torch import nn; from pytorchfi_deepvigor import DeepVigorAnalyzer
        >>> torch.manual_seed(0); net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
        <torch._C.Generator object at ...>
        >>> result = DeepVigorAnalyzer(net, torch.randn(8, 1, 6, 6)).analyze(target="both")
        >>> rows = curve(result, budgets=(0.1, 0.5), mechanisms=["tmr"], strategies=["planner"])
        >>> [r["budget"] for r in rows], rows[0]["predicted_mvf"] >= rows[1]["predicted_mvf"]
        ([0.1, 0.5], True)
    """
    rows: list[dict[str, object]] = []
    for strategy in strategies:
        for mechs in mechanisms:
            for budget in budgets:
                plan = harden(
                    result, budget, mechs, strategy=strategy, seed=seed, ranges=ranges, model=model
                )
                rows.append(
                    {
                        "strategy": strategy,
                        "mechanisms": "+".join(m for m in plan.mechanisms if m != "clamp"),
                        "budget": float(budget),
                        "overhead_macs": plan.overhead_macs,
                        "overhead_memory": plan.overhead_memory,
                        "baseline_mvf": plan.baseline["total"],
                        "predicted_mvf": plan.predicted["total"],
                        "reduction": plan.reduction,
                    }
                )
    return rows
