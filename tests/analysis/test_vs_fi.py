"""Complete weights analysis against a plain exhaustive weight fault-injection loop.

A small CNN is trained for a few seconds (seeded) on scikit-learn's 8x8 digits; for a few
channels of every layer, the reference flips every bit of every weight in place, runs the whole
network on the analysis batch and counts critical outcomes (top-1 differs from the golden top-1,
or non-finite logits). The analysis' CVFs must match with a mean absolute error under 1%.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import train_on_digits
from torch import nn

from pytorchfi_deepvigor.analysis import DeepVigorAnalyzer

CHANNELS = {0: [0, 3], 1: [2, 5], 2: [4]}  # layer number -> channels checked by exhaustive FI


@pytest.fixture(scope="module")
def digits_model() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 10),
    )
    return train_on_digits(net, epochs=8, n_test=48)


def exhaustive_weight_cvf(net: nn.Module, images: torch.Tensor, layer: nn.Module, k: int) -> float:
    """Fraction of (weight, bit, image) of filter k whose flip is critical: in place, full forward."""
    masks = [1 << b if b < 31 else -(1 << 31) for b in range(32)]
    with torch.no_grad():
        golden = net(images).argmax(1)
        flat = layer.weight.data[k].view(-1)
        critical = torch.zeros((), dtype=torch.long)
        for j in range(flat.numel()):
            original = flat[j].clone()
            for mask in masks:
                flat[j] = (original.view(torch.int32) ^ mask).view(torch.float32)
                out = net(images)
                critical += ((out.argmax(1) != golden) | ~torch.isfinite(out).all(1)).sum()
            flat[j] = original
    return int(critical) / (flat.numel() * 32 * images.shape[0])


def test_complete_weights_analysis_matches_exhaustive_fi(digits_model) -> None:
    net, images = digits_model
    before = [p.detach().clone() for p in net.parameters()]
    result = DeepVigorAnalyzer(net, images).analyze(target="weights")
    layers = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    errors = []
    for num, channels in CHANNELS.items():
        analysed = result.layer(num, "weights")
        for k in channels:
            fi = exhaustive_weight_cvf(net, images, layers[num], k)
            errors.append(abs(analysed.cvf[analysed.channels.index(k)] - fi))
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    assert np.mean(errors) < 0.01, errors
    # the analysis is not trivially right: the CVFs are far from zero and differ between layers
    assert min(result.lvf("weights").values()) > 0.005
