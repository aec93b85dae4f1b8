"""Channel-by-channel comparison of two results (analysis vs FI, sampled vs complete, ...).

Private module: use ``pytorchfi_deepvigor.results.compare``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
from scipy import stats

from pytorchfi_deepvigor.results._types import VulnerabilityResult

__all__ = ["ChannelPair", "Compared", "Comparison", "ComparisonWarning", "compare"]

_TARGETS = ("weights", "activations", "stored")


class ChannelPair(NamedTuple):
    """One channel's VF in both results."""

    layer_num: int
    target: str
    channel: int
    a: float
    b: float


class ComparisonWarning(UserWarning):
    """The two compared results differ in model name or image count."""


class Compared(NamedTuple):
    """What one side of a comparison was: its method, model, images and (layer, target) pairs."""

    method: str
    model_name: str
    n_images: int
    layers: tuple[tuple[int, str], ...]


@dataclass(frozen=True)
class Comparison:
    """Agreement of two results over the channels present in both.

    ``spearman`` is NaN when fewer than two pairs are compared or either side is constant
    (a rank correlation is undefined then). ``a`` and ``b`` record what was compared (set by
    :func:`compare`), ``warnings`` the differences it warned about.

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
    a: Compared | None = None
    b: Compared | None = None
    warnings: tuple[str, ...] = ()

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

    Warns:
        ComparisonWarning: the results name different models or hold different image counts
            (also recorded in ``Comparison.warnings``).

    Raises:
        TypeError: ``a`` or ``b`` is not a ``VulnerabilityResult``.
        ValueError: for an unknown target, when no channel is present in both results, or when
            a layer number names different layers in the two (results of different models).
    """
    for name, value in (("a", a), ("b", b)):
        if not isinstance(value, VulnerabilityResult):
            raise TypeError(
                f"expected {name} as a VulnerabilityResult (e.g. from VulnerabilityResult."
                f"from_json), got {type(value).__name__}"
            )
    if target is not None and target not in _TARGETS:
        raise ValueError(f"expected target in {_TARGETS} or None, got {target!r}")
    _same_layers(a, b)
    left, right = _cvfs(a, target), _cvfs(b, target)
    keys = sorted(left.keys() & right.keys())
    if not keys:
        what = "any target" if target is None else f"target {target!r}"
        raise ValueError(
            f"no channel is present in both results for {what}: "
            f"a has {len(left)} channels in layers {_layers(left)}, "
            f"b has {len(right)} in layers {_layers(right)}"
        )
    found = _differences(a, b)
    for message in found:
        warnings.warn(message, ComparisonWarning, stacklevel=2)
    summary = Comparison.from_pairs(tuple(ChannelPair(*k, left[k], right[k]) for k in keys))
    return replace(summary, a=_side(a, left), b=_side(b, right), warnings=found)


def _side(result: VulnerabilityResult, cvfs: dict[tuple[int, str, int], float]) -> Compared:
    return Compared(result.method, result.model_name, result.n_images, tuple(_layers(cvfs)))


def _same_layers(a: VulnerabilityResult, b: VulnerabilityResult) -> None:
    """Refuse a layer number that names different layers (name, type or size) in a and b."""
    shape = {x.layer_num: (x.name, x.kind, x.n_neurons, x.n_weights) for x in b.layers}
    for x in a.layers:
        other = shape.get(x.layer_num)
        if other is not None and other != (x.name, x.kind, x.n_neurons, x.n_weights):
            raise ValueError(
                f"layer {x.layer_num} is {x.name} ({x.kind}, {x.n_neurons} neurons, "
                f"{x.n_weights} weights) in a but {other[0]} ({other[1]}, {other[2]} neurons, "
                f"{other[3]} weights) in b: the results are of different models"
            )


def _differences(a: VulnerabilityResult, b: VulnerabilityResult) -> tuple[str, ...]:
    found = []
    if a.model_name and b.model_name and a.model_name != b.model_name:
        found.append(
            f"comparing results of different models: {a.model_name!r} and {b.model_name!r}"
        )
    if a.n_images and b.n_images and a.n_images != b.n_images:
        found.append(
            f"comparing results over different image counts: {a.n_images} and {b.n_images}"
        )
    return tuple(found)


def _layers(cvfs: dict[tuple[int, str, int], float]) -> list[tuple[int, str]]:
    return sorted({(num, tgt) for num, tgt, _ in cvfs})
