"""Stratified site drawing: sizes, reproducibility, independence from the analysed layers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from pytorchfi_deepvigor.analysis.sampling import (
    channels_to_draw,
    check_ratio,
    draw_sites,
    positions_per_channel,
)
from pytorchfi_deepvigor.catalogue import build_catalogue


def catalogue():
    net = nn.Sequential(
        nn.Conv2d(1, 30, 3, padding=1),  # 30 channels of 12 x 10 = 120 positions
        nn.Conv2d(30, 7, 3, stride=2),
        nn.Flatten(),
        nn.Linear(7 * 5 * 4, 9),
    )
    return build_catalogue(net, torch.zeros(1, 1, 12, 10))


@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.15, 0.5, 1.0])
def test_draw_sizes_follow_the_paper(ratio: float) -> None:
    cat = catalogue()
    for info, sites in zip(cat, draw_sites(cat, ratio, seed=3), strict=True):
        n_ch = math.ceil(round(ratio * info.out_channels, 9))
        assert sites.channels.size == n_ch
        assert len(set(sites.channels.tolist())) == n_ch
        assert (np.diff(sites.channels) > 0).all() and sites.channels.max() < info.out_channels
        per = max(1, math.floor(math.log2(info.neurons_per_channel)))
        assert sites.positions.shape == (n_ch, per)
        for row in sites.positions:
            assert len(set(row.tolist())) == per and row.max() < info.neurons_per_channel


def test_known_sizes() -> None:
    assert channels_to_draw(30, 0.1) == 3  # 0.1 * 30 = 3.0000000000000004 in floating point
    assert channels_to_draw(10, 0.15) == 2 and channels_to_draw(7, 1.0) == 7
    assert [positions_per_channel(n) for n in (1, 2, 3, 120, 1024)] == [1, 1, 1, 6, 10]


def test_complete_takes_everything() -> None:
    cat = catalogue()
    for info, sites in zip(cat, draw_sites(cat, None, seed=0), strict=True):
        assert sites.complete and sites.channels.tolist() == list(range(info.out_channels))
        assert sites.position_matrix().shape == (info.out_channels, info.neurons_per_channel)


def test_draws_are_seeded() -> None:
    cat = catalogue()
    a, b, c = (draw_sites(cat, 0.2, seed=s) for s in (7, 7, 8))
    assert all(np.array_equal(x.positions, y.positions) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0].channels, c[0].channels)


@pytest.mark.parametrize(
    ("ratio", "error", "match"),
    [
        (0.0, ValueError, r"sampling ratio in \(0, 1\], got 0.0"),
        (1.5, ValueError, r"sampling ratio in \(0, 1\], got 1.5"),
        (float("nan"), ValueError, "sampling ratio"),
        ("0.1", TypeError, "expected sampling as None or a float"),
        (True, TypeError, "expected sampling as None or a float"),
    ],
    ids=["zero", "above-one", "nan", "string", "bool"],
)
def test_ratio_validation(ratio: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        check_ratio(ratio)  # type: ignore[arg-type]
