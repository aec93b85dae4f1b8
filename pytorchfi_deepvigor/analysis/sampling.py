"""Which targets an analysis visits: every one (complete) or a stratified sample (paper III-E).

Per layer, a sampled analysis draws ``ceil(ratio * C_out)`` output channels without
replacement and, in each, ``max(1, floor(log2(neurons per channel)))`` output positions without
replacement. The activations analysis analyses the neurons at those positions; the weights
analysis feeds each drawn channel's EDM with the errors at those positions only. A complete
analysis takes every channel and every position.

Draws come from ``numpy.random.default_rng(seed)``, layer after layer in catalogue order and for
**every** catalogued layer, so the sites of a layer do not depend on which other layers are
analysed. Channels and positions are returned sorted.

Example:
    >>> import torch
    >>> from pytorchfi_deepvigor.catalogue import build_catalogue
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.Flatten(), torch.nn.Linear(288, 4))
    >>> sites = draw_sites(build_catalogue(net, torch.zeros(1, 1, 8, 8)), ratio=0.25, seed=0)
    >>> [(s.channels.size, s.positions.shape) for s in sites]  # 36 positions -> 5 per channel
    [(2, (2, 5)), (1, (1, 1))]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pytorchfi_deepvigor.catalogue import LayerInfo

__all__ = ["LayerSites", "draw_sites", "channels_to_draw", "positions_per_channel", "check_ratio"]


@dataclass(frozen=True, eq=False)
class LayerSites:
    """The targets of one layer.

    Attributes:
        layer_num: the layer.
        channels: sorted int64 ``(C',)`` output channels.
        positions: sorted int64 ``(C', P')`` flat output positions per channel (``row * W + col``),
            or ``None`` for every position (complete analysis).
        n_positions: output positions per channel of the layer (``H * W``; 1 for Linear).
    """

    layer_num: int
    channels: np.ndarray
    positions: np.ndarray | None
    n_positions: int

    @property
    def complete(self) -> bool:
        """Whether every position of each channel is analysed."""
        return self.positions is None

    def position_matrix(self) -> np.ndarray:
        """Positions per channel ``(C', P)``, with every position spelled out when complete."""
        if self.positions is not None:
            return self.positions
        return np.broadcast_to(np.arange(self.n_positions), (self.channels.size, self.n_positions))


def check_ratio(ratio: float | None) -> None:
    """Validate a channel sampling ratio: ``None`` (complete) or a number in ``(0, 1]``."""
    if ratio is None:
        return
    if isinstance(ratio, bool) or not isinstance(ratio, int | float):
        raise TypeError(f"expected sampling as None or a float in (0, 1], got {ratio!r}")
    if not 0.0 < float(ratio) <= 1.0 or math.isnan(ratio):
        raise ValueError(f"expected sampling ratio in (0, 1], got {ratio}")


def channels_to_draw(n_channels: int, ratio: float) -> int:
    """Sampled channels of a layer: ``ceil(ratio * n_channels)`` (robust to float rounding)."""
    return max(1, min(n_channels, math.ceil(ratio * n_channels - 1e-9)))


def positions_per_channel(n_positions: int) -> int:
    """Sampled positions per channel: ``max(1, floor(log2(n_positions)))``."""
    return max(1, int(math.floor(math.log2(max(1, n_positions)))))


def draw_sites(catalogue: Sequence[LayerInfo], ratio: float | None, seed: int) -> list[LayerSites]:
    """Targets of every catalogued layer.

    Args:
        catalogue: the engine's layer catalogue.
        ratio: channel ratio in ``(0, 1]``, or ``None`` for a complete analysis.
        seed: seed of ``numpy.random.default_rng``.

    Returns:
        One :class:`LayerSites` per catalogued layer, in catalogue order.
    """
    check_ratio(ratio)
    rng = np.random.default_rng(seed)
    out = []
    for info in catalogue:
        n_ch, n_pos = info.out_channels, info.neurons_per_channel
        if ratio is None:
            out.append(LayerSites(info.layer_num, np.arange(n_ch), None, n_pos))
            continue
        channels = np.sort(rng.choice(n_ch, size=channels_to_draw(n_ch, ratio), replace=False))
        per = positions_per_channel(n_pos)
        positions = np.stack(
            [np.sort(rng.choice(n_pos, size=per, replace=False)) for _ in channels]
        )
        out.append(LayerSites(info.layer_num, channels.astype(np.int64), positions, n_pos))
    return out
