"""Statistical fault injection (SFI) maths: sample sizes, margins, allocations and priors.

Leveugle et al. (DATE 2009) give the number of faults ``n`` to draw without replacement from
a population of ``N`` faults so that the estimated failure probability is within margin ``e``
at confidence quantile ``t``, for a prior failure probability ``p``::

    n = ceil( N / (1 + e^2 (N - 1) / (t^2 p (1 - p))) )

The sample size is computed in exact rational arithmetic on the decimal values of ``e``, ``t``
and ``p`` (``Fraction(repr(x))``), so published sizes come out exactly instead of one off
where the float result lands on an integer.

Ruospo et al. (DATE 2023) stratify by layer (layer-wise), by (layer, bit) with ``p = 0.5``
(data-unaware) or with a per-bit prior (data-aware). A stratified estimate's margin is::

    t * sqrt( sum_b (N_b / N)^2 * p_b (1 - p_b) / n_b * (N_b - n_b) / (N_b - 1) )

Bit indices are LSB = 0 (31 = sign, 30..23 exponent, 22..0 mantissa).

Example:
    >>> sample_size(27_648)  # ResNet-20 layer 0, stuck-at counting
    10389
    >>> split_proportional(5, [10, 30, 60])  # network-wise: n split across layers
    (1, 1, 3)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from fractions import Fraction

import torch
from torch import Tensor

from pytorchfi_deepvigor.bits import DEFAULT_FAULT_MODEL, AnyFaultModel, parse_fault_model

__all__ = [
    "RUOSPO_PRIOR",
    "MarginExceededWarning",
    "fault_population",
    "sample_size",
    "split_proportional",
    "stratified_margin",
    "stratum_sample_sizes",
    "weight_bit_prior",
]

RUOSPO_PRIOR: tuple[float, ...] = (1e-4,) * 23 + (
    3.5e-4,  # bit 23 (exponent LSB)
    5.2e-3,  # bit 24
    2.8e-2,  # bit 25
    3.4e-3,  # bit 26
    4.7e-4,  # bit 27
    4.5e-4,  # bit 28
    4.5e-4,  # bit 29
    0.5,  # bit 30 (exponent MSB)
    2.1e-3,  # bit 31 (sign)
)
"""Per-bit prior (index = bit, LSB = 0) implied by Ruospo et al.'s public sample sizes."""

_CHUNK = 1 << 16


class MarginExceededWarning(UserWarning):
    """An SFI estimate's achieved margin is larger than the requested one."""


def _exact(x: float) -> Fraction:
    return Fraction(repr(float(x)))


def _check_count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected {name} as an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"expected {name} >= {minimum}, got {value}")
    return value


def _check_open_unit(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"expected {name} in (0, 1), got {value}")


def _check_t(t: float) -> None:
    if not t > 0.0 or math.isinf(t):
        raise ValueError(f"expected confidence quantile t > 0 (2.58 for 99%), got {t}")


def fault_population(n_sites: int, *, bits: int = 32, stuck_at: bool = False) -> int:
    """Number of single faults over ``n_sites`` values.

    Args:
        n_sites: number of fault sites (weights, operands or stored values).
        bits: bits per value (32 for float32).
        stuck_at: count stuck-at-0 and stuck-at-1 per bit (x 2) instead of one flip.

    Returns:
        ``n_sites * bits * (2 if stuck_at else 1)``.
    """
    _check_count("n_sites", n_sites, 0)
    _check_count("bits", bits, 1)
    return n_sites * bits * (2 if stuck_at else 1)


def sample_size(N: int, e: float = 0.01, t: float = 2.58, p: float = 0.5) -> int:
    """Leveugle et al.'s sample size for a population of ``N`` faults, rounded up.

    Args:
        N: population size (>= 1).
        e: error margin in (0, 1).
        t: confidence quantile (> 0; 2.58 for 99% confidence).
        p: prior failure probability in (0, 1); 0.5 is the conservative choice.

    Returns:
        The number of faults to draw without replacement, in ``[1, N]``.

    Raises:
        ValueError: for ``N < 1``, or ``e``, ``t``, ``p`` out of range.
    """
    _check_count("population N", N, 1)
    _check_open_unit("margin e", e)
    _check_t(t)
    _check_open_unit("prior p", p)
    fe, ft, fp = _exact(e), _exact(t), _exact(p)
    n = Fraction(N) / (1 + fe * fe * (N - 1) / (ft * ft * fp * (1 - fp)))
    return min(N, math.ceil(n))


def stratum_sample_sizes(
    populations: Sequence[int],
    priors: float | Sequence[float] = 0.5,
    *,
    e: float = 0.01,
    t: float = 2.58,
) -> tuple[int, ...]:
    """Sample size of every stratum (layer-wise, data-unaware or data-aware SFI).

    Args:
        populations: ``N_b`` per stratum.
        priors: one prior for all strata, or one per stratum (e.g. a per-bit prior).
        e: error margin in (0, 1).
        t: confidence quantile.

    Returns:
        ``sample_size(N_b, e, t, p_b)`` per stratum (0 for an empty stratum).
    """
    ps = [priors] * len(populations) if isinstance(priors, int | float) else list(priors)
    if len(ps) != len(populations):
        raise ValueError(f"expected {len(populations)} priors (one per stratum), got {len(ps)}")
    return tuple(
        0 if _check_count("stratum population", n_b, 0) == 0 else sample_size(n_b, e, t, float(p))
        for n_b, p in zip(populations, ps, strict=True)
    )


def split_proportional(n: int, populations: Sequence[int]) -> tuple[int, ...]:
    """Split ``n`` samples across strata in proportion to their sizes (largest remainder).

    Used by network-wise SFI: ``n = sample_size(sum(N_l))`` split across layers. Exact
    integer arithmetic; ties in the remainder go to the earlier stratum.

    Args:
        n: total number of samples, ``0 <= n <= sum(populations)``.
        populations: ``N_l`` per stratum (non-negative, not all zero).

    Returns:
        ``n_l`` per stratum, summing to ``n``, each ``<= N_l``.
    """
    _check_count("n", n, 0)
    sizes = [_check_count("stratum population", n_l, 0) for n_l in populations]
    total = sum(sizes)
    if total == 0:
        raise ValueError("expected at least one non-empty stratum, got total population 0")
    if n > total:
        raise ValueError(f"expected n <= total population {total}, got {n}")
    quotas = [n * n_l // total for n_l in sizes]
    remainders = [n * n_l % total for n_l in sizes]
    order = sorted(range(len(sizes)), key=lambda i: (-remainders[i], i))
    for i in order[: n - sum(quotas)]:
        quotas[i] += 1
    return tuple(quotas)


def stratified_margin(
    N_b: Sequence[int],
    n_b: Sequence[int],
    p_b: Sequence[float],
    t: float = 2.58,
    *,
    e: float | None = None,
) -> float:
    """Achieved margin of a stratified estimate (a single stratum gives plain SFI's margin).

    A stratum drawn completely (``n_b == N_b``) contributes no variance.

    Args:
        N_b: population per stratum (>= 1).
        n_b: faults drawn per stratum, ``1 <= n_b <= N_b``.
        p_b: failure proportion per stratum in [0, 1] (a prior or the observed rate).
        t: confidence quantile.
        e: the requested margin; when given and exceeded, a ``MarginExceededWarning``.

    Returns:
        The margin, in units of probability.
    """
    _check_t(t)
    if not len(N_b) == len(n_b) == len(p_b) or len(N_b) == 0:
        raise ValueError(
            f"expected N_b, n_b, p_b of one non-zero length, got {len(N_b)}, {len(n_b)}, {len(p_b)}"
        )
    total = sum(_check_count("stratum population N_b", x, 1) for x in N_b)
    variance = 0.0
    for size, drawn, p in zip(N_b, n_b, p_b, strict=True):
        _check_count("stratum sample n_b", drawn, 1)
        if drawn > size:
            raise ValueError(f"expected n_b <= N_b in every stratum, got n_b={drawn} > N_b={size}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"expected p_b in [0, 1], got {p}")
        if drawn < size:
            variance += (size / total) ** 2 * p * (1 - p) / drawn * (size - drawn) / (size - 1)
    margin = t * math.sqrt(variance)
    if e is not None and margin > e:
        warnings.warn(
            f"achieved SFI margin {margin:.4g} exceeds the requested e={e} "
            "(a prior that is too small gives too few samples)",
            MarginExceededWarning,
            stacklevel=2,
        )
    return margin


def weight_bit_prior(
    weights: Tensor,
    fault_model: AnyFaultModel | None = None,
    *,
    threshold: float = 1.0,
    floor: float = 1e-4,
) -> Tensor:
    """A data-aware per-bit prior from a layer's weight bit statistics.

    A flip is *dangerous* when it moves a weight by more than ``threshold`` times the layer's
    largest weight magnitude (or to Inf/NaN): it leaves the range the trained layer uses.
    Flips that stay inside that range are taken as masked. Assuming every dangerous flip is
    critical bounds the failure probability from above, and ``p (1 - p)`` grows up to 0.5, so::

        p_b = clip( mean_w 1[|flip_b(w) - w| > threshold * max|w|], floor, 0.5 )

    and the exponent MSB gets 0.5. With typical weights (|w| < 1) this gives the shape of
    Ruospo et al.'s prior: 0.5 for bit 30, ``floor`` for the mantissa and for exponent bits
    that can only shrink a weight, larger values for the sign and for exponent bits that grow
    a weight by 4x-16x.

    Under another fault model the same holds per mask (a bit, or a run of adjacent bits; both
    levels of a stuck-at), and a mask with the exponent's MSB gets 0.5.

    Args:
        weights: a layer's weights, float32/float16/bfloat16, any shape, finite.
        fault_model: the faults (default: single bit flips in the weights' format).
        threshold: danger threshold relative to ``max|w|`` (> 0).
        floor: smallest prior (in (0, 0.5]).

    Returns:
        float64 tensor ``[masks]``: index = bit (LSB = 0) for single-bit models.
    """
    model = parse_fault_model(
        DEFAULT_FAULT_MODEL if fault_model is None else fault_model, weights.dtype
    )
    if weights.numel() == 0:
        raise ValueError("expected a non-empty weight tensor for the bit prior")
    if not bool(torch.isfinite(weights).all()):
        raise ValueError("expected finite weights for the bit prior, got NaN or Inf")
    if not threshold > 0.0:
        raise ValueError(f"expected threshold > 0, got {threshold}")
    if not 0.0 < floor <= 0.5:
        raise ValueError(f"expected floor in (0, 0.5], got {floor}")
    flat = weights.detach().reshape(-1)
    limit = threshold * float(flat.abs().max())
    dangerous = torch.zeros(model.n_patterns, dtype=torch.float64, device=flat.device)
    for chunk in flat.split(_CHUNK):
        delta = model.deltas(chunk).double().abs()
        dangerous += (delta.nan_to_num(nan=math.inf) > limit).sum(0)
    per_mask = dangerous.view(-1, model.multiplicity).mean(1)
    prior = (per_mask / flat.numel()).clamp(floor, 0.5)
    msb = 1 << (model.width - 2)
    prior[torch.tensor([bool(m & msb) for m in model.masks])] = 0.5
    return prior.cpu()
