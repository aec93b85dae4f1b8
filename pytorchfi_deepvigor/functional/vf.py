"""Step 3 of DeepVigor+: vulnerability factors from EDMs and vulnerability values.

A search result is stored as a *grid index* per (target, image, sign): ``g`` in ``0..K-1``
means the candidate ``grid[g]`` (with the sign of the search) is the smallest-magnitude
critical candidate found; ``g = K`` means none was found (the VV is ``+Inf`` / ``-Inf``).

Per image, the non-critical mass is ``m_i = F(min(delta_plus, c_K)) - F(max(delta_minus, -c_K))``
with ``F`` the fraction of the image's errors strictly below a value: the errors in
``[delta_minus, delta_plus)`` cannot flip the class, the outer bins (beyond ``+-c_K``, the
infinities and NaN) always do, and so does every bin beyond a critical candidate
(see :mod:`pytorchfi_deepvigor.functional.edm` for the bins). Then:

* NVF (neuron) / CVF (channel) ``= 1 - mean_i m_i``;
* activation CVF = mean NVF over the channel's analysed neurons;
* LVF = mean over the analysed channels (weights) or neurons (activations);
* MVF_act / MVF_weight = mean LVF over layers;
* total MVF (the paper's Eq. 15)
  ``= (1/L) sum_l [N_l/(N_l+W_l) LVF_act_l + W_l/(N_l+W_l) LVF_w_l]``.

Example:
    >>> counts = torch.tensor([[1, 0, 2, 0, 1]])  # K = 2: bins <-c2, [-c2,-c1), mid, [c1,c2), >=c2
    >>> float(non_critical_mass(counts, torch.tensor([2]), torch.tensor([2])))  # no critical VV
    0.5
    >>> float(vulnerability_factor(torch.tensor([[0.5, 1.0]])))
    0.25
    >>> total_mvf([0.2, 0.4], [0.1, 0.3], [10, 10], [30, 10])
    0.2375
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pytorchfi_deepvigor.bits import AnyFaultModel
from pytorchfi_deepvigor.functional.edm import bin_lookup

__all__ = [
    "mask_vf",
    "pattern_hits",
    "non_critical_mass",
    "critical_bins_mass",
    "bin_criticality",
    "vulnerability_factor",
    "vv_values",
    "layer_vf",
    "model_vf",
    "total_mvf",
]


def non_critical_mass(counts: Tensor, plus_idx: Tensor, minus_idx: Tensor) -> Tensor:
    """Fraction of each EDM's errors that the VVs say cannot flip the class.

    Args:
        counts: EDM counts ``(..., 2K + 1)``.
        plus_idx: grid index of ``delta_plus`` (``K`` = none), shape ``counts.shape[:-1]``.
        minus_idx: grid index of the magnitude of ``delta_minus`` (``K`` = none), same shape.

    Returns:
        float64 ``m`` of shape ``counts.shape[:-1]`` (0 where an EDM is empty).
    """
    nbins = counts.shape[-1]
    if nbins % 2 != 1 or nbins < 3:
        raise ValueError(f"expected counts with 2K + 1 bins, got {nbins}")
    k = nbins // 2
    if plus_idx.shape != counts.shape[:-1] or minus_idx.shape != counts.shape[:-1]:
        raise ValueError(
            f"expected VV indices of shape {tuple(counts.shape[:-1])}, got "
            f"{tuple(plus_idx.shape)} and {tuple(minus_idx.shape)}"
        )
    cum = counts.to(torch.float64).cumsum(-1)  # cum[b] = errors below edge b
    hi = (k + plus_idx.long().clamp(0, k - 1)).unsqueeze(-1)
    lo = (k - 1 - minus_idx.long().clamp(0, k - 1)).unsqueeze(-1)
    below = torch.gather(cum, -1, hi) - torch.gather(cum, -1, lo)
    total = cum[..., -1:]
    return (below / total.clamp_min(1)).squeeze(-1)


def critical_bins_mass(
    counts: Tensor,
    plus_crit: Tensor,
    minus_crit: Tensor,
    outer_plus: Tensor | None = None,
    outer_minus: Tensor | None = None,
) -> Tensor:
    """Fraction of each EDM's errors in bins that are not critical, bin by bin.

    The general form of :func:`non_critical_mass` for a criticality that need not be monotone
    in the magnitude: ``plus_crit[..., g]`` says whether the bin ``[c_g, c_{g+1})`` is critical,
    ``minus_crit[..., g]`` the bin ``[-c_{g+1}, -c_g)``; the middle bin is never critical, the
    outer bins (beyond ``+-c_K``, NaN) are unless ``outer_plus`` / ``outer_minus`` say otherwise.
    With ``plus_crit[g] = g >= delta_plus`` (likewise for minus) it equals
    :func:`non_critical_mass`.

    Args:
        counts: EDM counts ``(..., 2K + 1)``.
        plus_crit: bool ``(..., K)``.
        minus_crit: bool ``(..., K)``.
        outer_plus: optional bool ``counts.shape[:-1]``: whether the top bin (``e >= c_K``, +Inf,
            NaN) is critical; ``None``: always.
        outer_minus: optional bool, likewise for the bottom bin (``e < -c_K``, -Inf).

    Returns:
        float64 ``m`` of shape ``counts.shape[:-1]`` (0 where an EDM is empty).
    """
    nbins = counts.shape[-1]
    k = nbins // 2
    if nbins % 2 != 1 or plus_crit.shape[-1] != k or minus_crit.shape[-1] != k:
        raise ValueError(
            f"expected counts with 2K + 1 bins and (K,) criticalities, got {nbins} bins, "
            f"{tuple(plus_crit.shape)} and {tuple(minus_crit.shape)}"
        )
    crit = bin_criticality(plus_crit, minus_crit, outer_plus, outer_minus)
    c = counts.to(torch.float64)
    total = c.sum(-1)
    return (c * (~crit)).sum(-1) / total.clamp_min(1)


def bin_criticality(
    plus_crit: Tensor,
    minus_crit: Tensor,
    outer_plus: Tensor | None = None,
    outer_minus: Tensor | None = None,
) -> Tensor:
    """Whether each of the ``2K + 1`` EDM bins is critical (the layout of
    :func:`critical_bins_mass`, whose arguments these are): bool ``(..., 2K + 1)``."""
    k = plus_crit.shape[-1]
    ones = torch.ones_like(plus_crit[..., :1])
    top = ones if outer_plus is None else outer_plus.to(torch.bool).unsqueeze(-1)
    bottom = ones if outer_minus is None else outer_minus.to(torch.bool).unsqueeze(-1)
    return torch.cat(
        [bottom, minus_crit[..., : k - 1].flip(-1), ~ones, plus_crit[..., : k - 1], top], -1
    )


def vulnerability_factor(mass: Tensor) -> Tensor:
    """NVF or CVF ``1 - mean_i m_i`` over the last dimension (images)."""
    return 1.0 - mass.to(torch.float64).mean(dim=-1)


def vv_values(index: Tensor, grid: Tensor, sign: int) -> Tensor:
    """Vulnerability values from grid indices: ``sign * grid[g]``, ``sign * Inf`` for ``g = K``."""
    if sign not in (1, -1):
        raise ValueError(f"expected sign +1 or -1, got {sign}")
    ext = torch.cat([grid.to(torch.float64), torch.tensor([float("inf")], dtype=torch.float64)])
    return sign * ext.to(index.device)[index.long()]


def _as_tensor(values: Sequence[float] | Tensor, name: str) -> Tensor:
    t = torch.as_tensor(values, dtype=torch.float64)
    if t.dim() != 1 or t.numel() == 0:
        raise ValueError(
            f"expected a non-empty 1-D sequence for {name}, got shape {tuple(t.shape)}"
        )
    return t


def layer_vf(target_vfs: Sequence[float] | Tensor) -> float:
    """LVF: mean VF over a layer's analysed channels (weights) or neurons (activations)."""
    return float(_as_tensor(target_vfs, "target_vfs").mean())


def model_vf(layer_vfs: Sequence[float] | Tensor) -> float:
    """MVF_act or MVF_weight: mean LVF over layers."""
    return float(_as_tensor(layer_vfs, "layer_vfs").mean())


def total_mvf(
    lvf_act: Sequence[float] | Tensor,
    lvf_weight: Sequence[float] | Tensor,
    n_activations: Sequence[int] | Tensor,
    n_weights: Sequence[int] | Tensor,
) -> float:
    """Total MVF (the paper's Eq. 15): per layer, LVFs weighted by activation and weight counts.

    Args:
        lvf_act: activation LVF per layer.
        lvf_weight: weight LVF per layer.
        n_activations: ``N_l``, output activations per image of each layer.
        n_weights: ``W_l``, weights of each layer.

    Raises:
        ValueError: when the four sequences differ in length or a layer has no values at all.
    """
    a = _as_tensor(lvf_act, "lvf_act")
    w = _as_tensor(lvf_weight, "lvf_weight")
    n = _as_tensor(n_activations, "n_activations")
    m = _as_tensor(n_weights, "n_weights")
    if not a.shape == w.shape == n.shape == m.shape:
        raise ValueError(
            "expected one value per layer in each argument, got lengths "
            f"{a.numel()}, {w.numel()}, {n.numel()}, {m.numel()}"
        )
    if bool(((n < 0) | (m < 0) | (n + m <= 0)).any()):
        raise ValueError("expected non-negative counts with N_l + W_l > 0 for every layer")
    per_layer = (n * a + m * w) / (n + m)
    return float(per_layer.mean())


def pattern_hits(
    errors: Tensor,
    bins: Tensor,
    grid: Tensor,
    valid: Tensor | None = None,
    nan_critical: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Which errors fall in a critical bin, counted per target and per fault pattern.

    Args:
        errors: float32 ``(T, I, S, P)``: the error of every fault site ``S`` and pattern ``P``
            (a bit, for single-bit models) of ``T`` targets on ``I`` images.
        bins: bool ``(T, I, 2K + 1)``: the bins found (or assumed) critical.
        grid: the ``K`` candidate magnitudes.
        valid: optional bool broadcastable to ``(T, I, S, 1)``: ``False`` marks sites that are
            not fault sites (zero padding): never counted.
        nan_critical: optional bool ``(T, I)``: whether NaN errors are critical (default: as
            the top bin, where NaN errors are binned).

    Returns:
        ``(per_target, per_pattern)``: int64 ``(T,)`` and ``(P,)`` counts of critical
        (image, site, pattern) and (target, image, site) triples.

    Example:
        >>> grid = torch.tensor([1.0, 2.0], dtype=torch.float64)  # bins: <-2, -2, -1, 1, >=2
        >>> bins = torch.tensor([[[True, False, False, False, True]]])
        >>> errors = torch.tensor([[[[0.5, 3.0], [-5.0, 1.5]]]])  # 1 target, 1 image, 2 sites
        >>> [t.tolist() for t in pattern_hits(errors, bins, grid)]
        [[2], [1, 1]]
    """
    n_t, n_i, n_s, n_p = errors.shape
    hit = bin_lookup(errors.reshape(n_t, n_i, n_s * n_p), bins, grid).view(n_t, n_i, n_s, n_p)
    if nan_critical is not None:
        nan = nan_critical.to(errors.device).view(n_t, n_i, 1, 1)
        hit = torch.where(torch.isnan(errors), nan, hit)
    if valid is not None:
        hit &= valid.to(hit.device)
    per = hit.sum(dim=(1, 2))  # (T, P): one pass over the hits
    return per.sum(dim=1), per.sum(dim=0)


def mask_vf(hits: Tensor, faults_per_pattern: int, model: AnyFaultModel) -> tuple[float, ...]:
    """The VF of each mask of a fault model (each bit, for single-bit models; LSB first) from
    critical counts per pattern, ``faults_per_pattern`` (site, image) pairs each; a stuck-at
    mask averages its two levels.

    Example:
        >>> from pytorchfi_deepvigor.bits import parse_fault_model
        >>> mask_vf(torch.tensor([0, 2, 4, 4]), 4, parse_fault_model("stuck-at:30-31"))
        (0.25, 1.0)
    """
    per = hits.double().view(-1, model.multiplicity).mean(dim=1) / max(1, faults_per_pattern)
    return tuple(float(v) for v in per)
