"""Few, coarse errors: the boundary bins of exponent-only flips searched by their own errors.

An exponent-only fault model has 5 (fp16) or 8 (fp32, bf16) faults per operand, their errors
powers of two apart; where the class flips inside a quarter-octave bin, the bin's lower edge
misjudges every error above the flip in it. Like an int8 word's, those neuron targets have
their boundary bins' own errors bisected (``probing.COARSE_PATTERNS``), which makes them equal
to exhaustive FI where criticality is monotone.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import pytorchfi_deepvigor.analysis.probing as probing
from pytorchfi_deepvigor.analysis import DeepVigorAnalyzer
from pytorchfi_deepvigor.campaigns.exhaustive import ExhaustiveCampaign
from pytorchfi_deepvigor.engine import SimulationEngine


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(24, 3),
    ).eval()
    with torch.no_grad():  # a trained-looking spread of scales
        for layer in (net[0], net[2], net[6]):
            layer.weight.mul_(2.0)
    return net.half()


def _mean_error() -> float:
    images = torch.randn(24, 1, 6, 6, generator=torch.Generator().manual_seed(1)).half()
    engine = SimulationEngine(_net(), images)
    fi = ExhaustiveCampaign(engine).run(
        "operands", layers=[1], neurons="all", fault_model="flip:exponent"
    )
    an = DeepVigorAnalyzer(engine).analyze(
        target="activations", layers=[1], fault_model="flip:exponent"
    )
    a = dict(zip(an.layers[0].neurons, an.layers[0].nvf, strict=True))
    b = dict(zip(fi.layers[0].neurons, fi.layers[0].nvf, strict=True))
    assert set(a) == set(b) and len(b) == 6 * 36
    return float(np.mean([abs(a[k] - b[k]) for k in b]))


def test_fp16_exponent_operands_equal_fi() -> None:
    assert _mean_error() < 1e-9


def test_without_the_boundary_search_they_miss(monkeypatch) -> None:
    """The test above can fail: the bins judged by their lower edges alone, as before."""
    monkeypatch.setattr(probing, "COARSE_PATTERNS", 0)
    assert _mean_error() > 1e-4  # measured: 3.4e-4
