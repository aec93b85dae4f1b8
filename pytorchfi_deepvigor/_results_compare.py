"""Channel-by-channel comparison of two results (analysis vs FI, sampled vs complete, ...).

Private module: use ``pytorchfi_deepvigor.results.compare``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from scipy import stats

if TYPE_CHECKING:
    from pytorchfi_deepvigor.results import VulnerabilityResult

__all__ = ["ChannelPair", "Comparison", "compare"]

_TARGETS = ("weights", "activations", "stored")


class ChannelPair(NamedTuple):
    """One channel's VF in both results."""

    layer_num: int
    target: str
    channel: int
    a: float
    b: float


@dataclass(frozen=True)
class Comparison:
    """Agreement of two results over the channels present in both.

    ``spearman`` is NaN when fewer than two pairs are compared or either side is constant
    (a rank correlation is undefined then).

    Example:
        >>> pairs = (ChannelPair(0, "weights", 0, 0.2, 0.3), ChannelPair(0, "weights", 1, 0.5, 0.5))
        >>> c = Comparison.from_pairs(pairs)
        >>> round(c.mae, 6), round(c.max_abs_err, 6), round(c.spearman, 6), c.n_channels
        (0.05, 0.1, 1.0, 2)
    """

    mae: float
    max_abs_err: float
    spearman: float
    n_channels: int
    pairs: tuple[ChannelPair, ...]

    @classmethod
    def from_pairs(cls, pairs: tuple[ChannelPair, ...]) -> Comparison:
        """Summarise channel pairs (at least one)."""
        if not pairs:
            raise ValueError("expected at least one channel pair to compare")
        a = np.array([p.a for p in pairs], dtype=np.float64)
        b = np.array([p.b for p in pairs], dtype=np.float64)
        err = np.abs(a - b)
        rho = math.nan
        if len(pairs) >= 2 and np.ptp(a) > 0 and np.ptp(b) > 0:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", stats.ConstantInputWarning)
                rho = float(stats.spearmanr(a, b).statistic)
        return cls(
            mae=float(err.mean()),
            max_abs_err=float(err.max()),
            spearman=rho,
            n_channels=len(pairs),
            pairs=pairs,
        )


def _cvfs(result: VulnerabilityResult, target: str | None) -> dict[tuple[int, str, int], float]:
    return {
        (layer.layer_num, layer.target, ch): vf
        for layer in result.layers
        if target is None or layer.target == target
        for ch, vf in zip(layer.channels, layer.cvf, strict=True)
    }


def compare(
    a: VulnerabilityResult, b: VulnerabilityResult, *, target: str | None = None
) -> Comparison:
    """Compare the CVFs of two results over the channels present in both.

    Channels are matched by (layer_num, target, channel); ``target`` restricts the comparison
    to one target ("weights", "activations" or "stored").

    Args:
        a: e.g. the analysis result.
        b: e.g. the FI result on the same model, images and fault model.
        target: compare only this target; all targets when None.

    Returns:
        A :class:`Comparison` with MAE, max absolute error, Spearman rho and the pairs.

    Raises:
        ValueError: for an unknown target, or when no channel is present in both results.
    """
    if target is not None and target not in _TARGETS:
        raise ValueError(f"expected target in {_TARGETS} or None, got {target!r}")
    left, right = _cvfs(a, target), _cvfs(b, target)
    keys = sorted(left.keys() & right.keys())
    if not keys:
        what = "any target" if target is None else f"target {target!r}"
        raise ValueError(
            f"no channel is present in both results for {what}: "
            f"a has {len(left)} channels in layers {_layers(left)}, "
            f"b has {len(right)} in layers {_layers(right)}"
        )
    return Comparison.from_pairs(tuple(ChannelPair(*k, left[k], right[k]) for k in keys))


def _layers(cvfs: dict[tuple[int, str, int], float]) -> list[tuple[int, str]]:
    return sorted({(num, tgt) for num, tgt, _ in cvfs})
