"""The planner: from a result's VFs and a budget to a :class:`HardeningPlan`.

``strategy="planner"`` solves, exactly for the rounded costs, a multiple-choice knapsack
(:mod:`pytorchfi_deepvigor.functional.knapsack`):

1. ECC (memory budget): per layer, at most one ECC group (``exponent-msb``, ``exponent``,
   ``sign-exponent``, ``word``), gain = the drop of Eq. 15's total MVF, cost = check bits.
2. TMR (MAC budget): per layer, the ``k`` channels of largest gain (the channels of a layer cost
   the same, so the best ``k`` of a layer are its top ``k``), gain = the drop of the total MVF
   given the ECC of step 1, cost = two copies of ``k`` channels' MACs.

The baselines users would otherwise pick, with the same mechanisms and budget: ``first-layers``
(whole layers from the input on), ``weights`` (the layers holding the most weights first),
``random`` (channels, or layers for ECC, in a seeded random order).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from torch import nn

from pytorchfi_deepvigor.functional.knapsack import choose, grid_costs
from pytorchfi_deepvigor.hardening.plan import (
    ECC_GROUPS,
    FORMAT_BITS,
    HardeningPlan,
    LayerProtection,
    Channels,
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
)
from pytorchfi_deepvigor.results import VulnerabilityResult

__all__ = ["MECHANISMS", "STRATEGIES", "curve", "harden", "overheads"]

MECHANISMS = ("tmr", "ecc")
STRATEGIES = ("planner", "first-layers", "weights", "random")


def _check(budget: float, mechanisms: Iterable[str], strategy: str) -> tuple[str, ...]:
    if isinstance(budget, bool) or not isinstance(budget, int | float) or not 0 <= budget <= 2:
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


def _ecc_options(
    result: VulnerabilityResult, fmt: str
) -> dict[int, list[tuple[tuple[int, ...], int, float]]]:
    """Per layer: (bits, check bits x weights, gain) of each ECC group."""
    factors = _weights(result)
    out = {}
    for num, (_, wts) in _pair(result).items():
        rows = []
        for group in ECC_GROUPS:
            bits = ecc_bits(group, fmt)
            gain = factors[num][1] * wts.lvf * bit_share(wts, bits)
            rows.append((bits, hamming_check_bits(len(bits)) * wts.n_weights, gain))
        out[num] = rows
    return out


def _tmr_gains(
    result: VulnerabilityResult, ecc: Mapping[int, tuple[int, ...]], channels: Channels
) -> dict[int, np.ndarray]:
    """Per layer, each channel's drop of the total MVF when it is triplicated."""
    factors = _weights(result)
    out = {}
    for num, (act, wts) in _pair(result).items():
        c = channels[num]
        share = bit_share(wts, ecc.get(num, ()))
        fa, fw = factors[num]
        out[num] = (fa * channel_vfs(act, c) + fw * channel_vfs(wts, c) * (1 - share)) / c
    return out


def _plan_ecc(
    result: VulnerabilityResult,
    fmt: str,
    budget_bits: float,
    strategy: str,
    rng: np.random.Generator,
    channels: Channels,
) -> dict[int, tuple[int, ...]]:
    options = _ecc_options(result, fmt)
    nums = list(options)
    if strategy == "planner":
        costs = np.array([cost for n in nums for _, cost, _ in options[n]], dtype=np.float64)
        units, capacity = grid_costs(costs, budget_bits)
        groups, at = [], 0
        for n in nums:
            k = len(options[n])
            groups.append((units[at : at + k], np.array([g for *_, g in options[n]])))
            at += k
        picks = choose(groups, capacity)
        return {n: options[n][j][0] for n, j in zip(nums, picks, strict=True) if j >= 0}
    order = _layer_order(result, strategy, rng, channels)
    chosen, left = {}, budget_bits
    for n in order:  # the baselines protect whole words, layer by layer
        bits, cost, _ = options[n][ECC_GROUPS.index("word")]
        if cost <= left:
            chosen[n], left = bits, left - cost
    return chosen


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


def _plan_tmr(
    result: VulnerabilityResult,
    ecc: Mapping[int, tuple[int, ...]],
    budget_macs: float,
    strategy: str,
    rng: np.random.Generator,
    channels: Channels,
) -> dict[int, tuple[int, ...]]:
    costs = layer_costs(result, channels)
    gains = _tmr_gains(result, ecc, channels)
    nums = list(costs)
    if strategy == "planner":
        order = {n: np.argsort(-gains[n], kind="stable") for n in nums}
        per = np.array([2.0 * costs[n].macs_per_channel for n in nums])
        unit_cost, capacity = grid_costs(per, budget_macs)
        groups = []
        for n, u in zip(nums, unit_cost, strict=True):
            k = np.arange(1, costs[n].channels + 1)
            groups.append((k * u, np.cumsum(gains[n][order[n]])))
        picks = choose(groups, capacity)
        return {
            n: tuple(int(c) for c in order[n][: j + 1])
            for n, j in zip(nums, picks, strict=True)
            if j >= 0
        }
    if strategy == "random":
        items = [(n, c) for n in nums for c in range(costs[n].channels)]
        sequence = [items[i] for i in rng.permutation(len(items))]
    else:
        order = _layer_order(result, strategy, rng, channels)
        sequence = [(n, c) for n in order for c in range(costs[n].channels)]
    chosen: dict[int, list[int]] = {}
    left = budget_macs
    for n, c in sequence:
        cost = 2.0 * costs[n].macs_per_channel
        if cost <= left:
            chosen.setdefault(n, []).append(c)
            left -= cost
    return {n: tuple(v) for n, v in chosen.items()}


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
        budget: the overhead allowed, a fraction: TMR adds at most ``budget`` of the model's MACs,
            ECC at most ``budget`` of its weight memory (0.1 = 10%).
        mechanisms: ``"tmr"``, ``"ecc"`` or both (a list, or a comma-separated string).
        strategy: ``"planner"`` (the optimum, see the module doc) or a baseline:
            ``"first-layers"``, ``"weights"``, ``"random"``.
        seed: the seed of the ``random`` baseline (recorded in the plan).
        ranges: the clamp bounds per layer number (``(low, high)`` per channel) the result's model
            was analysed with; recorded in the plan, applied by :func:`apply`.
        model: the model the result was computed on; needed where the result analysed only some
            channels of a layer (the others take the layer's LVF, the sample's estimate).

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
    width = FORMAT_BITS[fmt][0]
    total_macs = sum(c.macs_per_channel * c.channels for c in costs.values())
    total_bits = sum(c.n_weights for c in costs.values()) * width
    rng = np.random.default_rng(seed)
    ecc = (
        _plan_ecc(result, fmt, budget * total_bits, strategy, rng, channels)
        if "ecc" in mechs
        else {}
    )
    tmr = (
        _plan_tmr(result, ecc, budget * total_macs, strategy, rng, channels)
        if "tmr" in mechs
        else {}
    )
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
