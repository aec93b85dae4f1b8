"""Hand-built networks whose vulnerability values are known in closed form.

In every net below, the golden class is 0 and adding ``delta`` to the probed target moves the
logit of class 1 (or 0) linearly, so image ``i`` turns critical exactly when
``delta > margin_i * scale`` (a strict inequality: ties go to class 0, as ``argmax`` does).
The VV the search must find is the smallest candidate of the search set above that threshold.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pytorchfi_deepvigor.analysis import DeepVigorAnalyzer
from pytorchfi_deepvigor.analysis.probing import first_probe_index, search_group
from pytorchfi_deepvigor.engine import SimulationEngine
from pytorchfi_deepvigor.functional.edm import candidate_grid, search_members
from pytorchfi_deepvigor.functional.search import full_scan
from pytorchfi_deepvigor.perturbations import ChannelAdd, NeuronAdd

MARGINS = [0.3, 0.77, 1.5, 5.0, 100.5, 3000.0, 2.0**20 + 3.0, 2.0**40 * 1.3]


def two_feature_net() -> nn.Module:
    """logits = [a, b] for inputs (a, b): two identity Linear layers."""
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(2))
        net[1].weight.copy_(torch.eye(2))
    return net.eval()


def two_feature_images() -> torch.Tensor:
    b = torch.tensor(MARGINS)
    return torch.stack([2 * b, b], dim=1)  # margin a - b = b, exact in float32


def expected_index(threshold: np.ndarray, candidates: np.ndarray, grid: torch.Tensor) -> np.ndarray:
    """Smallest candidate (bool mask over the grid) strictly above each threshold, K if none."""
    k = grid.numel()
    above = candidates & (grid.numpy()[None, :] > threshold[:, None])
    return np.where(above.any(1), above.argmax(1), k)


@pytest.mark.parametrize("search", ["paper", "extended"])
def test_search_finds_linear_thresholds_exactly(search: str) -> None:
    grid = candidate_grid(search)
    k = grid.numel()
    images = two_feature_images()
    margins = (images[:, 0] - images[:, 1]).double().numpy()
    engine = SimulationEngine(two_feature_net(), images)
    n = images.shape[0]
    counts = torch.ones(2, n, 2 * k + 1, dtype=torch.long)  # every bin non-empty: probe all

    def make(t: torch.Tensor, value: torch.Tensor) -> NeuronAdd:
        zero = torch.zeros_like(t)
        return NeuronAdd(t, zero, zero, value)  # target t = feature t of layer 0

    out = search_group(engine, 0, counts, grid, make)
    every = np.ones((n, k), dtype=bool)
    every[:, -1] = False  # c_K is never probed: beyond it is critical by definition
    want = expected_index(margins, every, grid)
    # feature 1 (class 1's logit) is critical for delta > margin, never for delta < 0
    assert out.plus[1].numpy().tolist() == want.tolist()
    assert out.minus[1].tolist() == [k] * n
    # feature 0: critical for delta < -margin, never for delta > 0
    assert out.minus[0].numpy().tolist() == want.tolist()
    assert out.plus[0].tolist() == [k] * n

    # the bisection agrees with a full scan of every candidate
    plus_m, _ = search_members(counts, grid)
    targets = torch.ones(n, dtype=torch.long)

    def oracle(rows: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return engine.critical(0, rows, make(targets[rows], grid.float()[g]))

    scan = full_scan(plus_m[1], oracle, first=first_probe_index(grid))
    assert scan.index.tolist() == out.plus[1].tolist()


def pooled_conv_net(relu: bool) -> nn.Module:
    """logits = [mean(x), mean(x) / 2] (a 1x1 conv, optional ReLU, global average pool)."""
    conv = nn.Conv2d(1, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 0.5]).view(2, 1, 1, 1))
    layers = [conv, nn.ReLU()] if relu else [conv]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()


def pooled_images() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    scale = torch.tensor([0.01, 0.3, 1.0, 7.0, 60.0]).view(-1, 1, 1, 1)
    return (torch.rand(5, 1, 4, 4, generator=gen) + 0.5) * scale


def search_set(counts: np.ndarray, grid: torch.Tensor, sign: int) -> np.ndarray:
    plus, minus = search_members(torch.tensor(counts), grid)
    members = (plus if sign > 0 else minus).numpy()
    one = first_probe_index(grid)
    members[members.any(-1), one] = True
    return members


@pytest.mark.parametrize("search", ["paper", "extended"])
def test_weights_and_activations_vvs_on_a_pooled_conv(search: str) -> None:
    images = pooled_images()
    margins = (images.mean(dim=(1, 2, 3)) * 0.5).double().numpy()
    grid = candidate_grid(search)
    net = pooled_conv_net(relu=False)
    result = DeepVigorAnalyzer(net, images).analyze(
        search=search, aggregate="position", keep_edm=True
    )

    weights = result.layer(0, "weights")  # ChannelAdd shifts channel 1's mean by delta
    members = search_set(weights.edm[1], grid, +1)
    want = expected_index(margins, members, grid)
    got = np.searchsorted(grid.numpy(), weights.vv_plus[1])
    assert got.tolist() == want.tolist()
    members = search_set(weights.edm[0], grid, -1)
    want = expected_index(margins, members, grid)
    assert np.searchsorted(grid.numpy(), -weights.vv_minus[0]).tolist() == want.tolist()

    acts = result.layer(0, "activations")  # NeuronAdd shifts it by delta / 16
    for t, (c, r, col) in enumerate(acts.neurons):
        if c != 1:
            continue
        members = search_set(acts.edm[t], grid, +1)
        want = expected_index(16 * margins, members, grid)
        assert np.searchsorted(grid.numpy(), acts.vv_plus[t]).tolist() == want.tolist(), (r, col)
        assert np.isneginf(acts.vv_minus[t]).all()


def test_extended_grid_finds_targets_never_vulnerable() -> None:
    """Behind a ReLU, no negative delta on the losing channel flips the class, however large.

    With operands around 3000, a sign flip of the weight 0.5 gives an error near -3000: beyond
    the paper grid's 2^10, so the paper grid counts it as critical; the extended grid probes it
    and finds it harmless.
    """
    images = pooled_images() * 3000 / 60
    net = pooled_conv_net(relu=True)
    ext = DeepVigorAnalyzer(net, images).analyze(
        target="weights", search="extended", aggregate="position"
    )
    paper = DeepVigorAnalyzer(net, images).analyze(
        target="weights", search="paper", aggregate="position"
    )
    assert np.isneginf(ext.layer(0, "weights").vv_minus[1]).all()
    assert ext.layer(0, "weights").cvf[1] < paper.layer(0, "weights").cvf[1] - 0.01


def test_pooled_conv_channel_add_threshold_is_the_margin() -> None:
    """Sanity check of the closed form itself, straight on the engine."""
    images = pooled_images()
    margins = images.mean(dim=(1, 2, 3)) * 0.5
    engine = SimulationEngine(pooled_conv_net(relu=False), images)
    idx = torch.arange(images.shape[0])
    ones = torch.ones_like(idx)
    assert not engine.critical(0, idx, ChannelAdd(ones, margins * 0.99)).any()
    assert engine.critical(0, idx, ChannelAdd(ones, margins * 1.01)).all()
