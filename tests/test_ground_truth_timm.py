"""timm's weight-standardising convolutions and GroupNorm blocks against the oracle (issue 21).

BiT (``StdConv2d`` + ``GroupNormAct``) and NFNet (``ScaledStdConv2d``) transform each filter in
``forward``: a flipped weight is renormalised there. Fault injection used to add ``(w' - w) * x``
(one complete ``StdConv2d`` channel: campaign CVF 0.0194, the model 0.0414). timm comes from the
registry at test time (:mod:`third_party`); without it the test is skipped with the reason.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from oracle import Oracle
from oracle_models import oracle_images
from test_ground_truth import _compare, _oracle
from third_party import timm
from torch import nn

from pytorchfi_deepvigor import ExhaustiveCampaign, SimulationEngine
from pytorchfi_deepvigor.campaigns.faults import FaultPopulation, operand_sites


class BitLike(nn.Module):
    def __init__(self, layers) -> None:
        super().__init__()
        self.stem = layers.StdConv2d(1, 8, 3, padding=1)
        self.norm = layers.GroupNormAct(8, num_groups=2)
        self.conv = layers.ScaledStdConv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv(self.norm(self.stem(x))))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


@pytest.fixture(scope="module")
def bit() -> tuple[Oracle, SimulationEngine]:
    layers = timm().layers
    torch.manual_seed(0)
    model = BitLike(layers).eval()
    with torch.no_grad():
        model.stem.weight.view(-1)[0] = 1.0  # exponent-MSB flips to +Inf
        model.conv.weight.view(-1)[1] = 1.5  # and NaN
    images = oracle_images()
    return Oracle(model, images), SimulationEngine(model, images)


def test_weight_standardising_layers_are_detected(bit: tuple[Oracle, SimulationEngine]) -> None:
    _, engine = bit
    assert [bool(i.weight_transform) for i in engine.catalogue] == [True, True, False]


@pytest.mark.parametrize("layer", [0, 1])
def test_every_weight_fault_of_a_channel(bit: tuple[Oracle, SimulationEngine], layer: int) -> None:
    oracle, engine = bit
    info = engine.layer(layer)
    every = np.arange(info.fan_in)  # channel 0 (weights 0 and 1: 1.0 and 1.5)
    want = _compare(oracle, engine, FaultPopulation(info, "weights", "flip", every))
    result = ExhaustiveCampaign(engine).run("weights", layers=[layer], channels=[0])
    assert result.layers[0].cvf[0] == want.mean()


@pytest.mark.parametrize("layer", [0, 1])
def test_operand_and_stored_faults(bit: tuple[Oracle, SimulationEngine], layer: int) -> None:
    oracle, engine = bit
    info = engine.layer(layer)
    sites = operand_sites(info, np.array([0, info.neurons_per_channel // 2 + 5]))
    _compare(oracle, engine, FaultPopulation(info, "operands", "flip", sites))
    _compare(oracle, engine, FaultPopulation(info, "stored", "stuck-at", np.arange(12)))
    assert _oracle(oracle, FaultPopulation(info, "stored", "flip", np.arange(2))).shape == (64, 12)


class SamePadded(nn.Module):
    """tf_EfficientNet's and dm_NFNet's stems: timm's ``Conv2dSame`` and
    ``ScaledStdConv2dSame`` with stride 2 pad inside their forward (the odd row and column
    after the map). Their operands were refused ("pads inside its forward"): now the first is a
    twin with the padding it applies (analysed too), the second, which also standardises its
    weight, keeps its own forward with the padding recorded."""

    def __init__(self, layers) -> None:
        super().__init__()
        self.stem = layers.Conv2dSame(1, 6, 3, stride=2)
        self.conv = layers.ScaledStdConv2dSame(6, 6, 3, stride=2, padding="same")
        self.head = nn.Linear(6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv(F.relu(self.stem(x))))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def test_same_padding_inside_forward_operands_against_the_oracle() -> None:
    from pytorchfi_deepvigor import DeepVigorAnalyzer
    from pytorchfi_deepvigor.twins import PaddedConv2d

    layers = timm().layers
    torch.manual_seed(0)
    model = SamePadded(layers).eval()
    images = oracle_images()
    engine = SimulationEngine(model, images)
    oracle = Oracle(model, images, view=engine.model)
    stem, conv = engine.layer(0), engine.layer(1)
    assert isinstance(stem.module, PaddedConv2d) and not stem.weight_transform
    assert conv.weight_transform and len(conv.padding) == 4
    for info in (stem, conv):
        last = info.neurons_per_channel - 1  # the bottom-right neuron reads the padding after
        sites = operand_sites(info, np.array([0, last, 2 * info.neurons_per_channel + 3]))
        _compare(oracle, engine, FaultPopulation(info, "operands", "flip", sites))
        _compare(oracle, engine, FaultPopulation(info, "weights", "flip", np.arange(4)))
    analysis = DeepVigorAnalyzer(engine).analyze(target="both", layers=[0])
    fi = ExhaustiveCampaign(engine).run("weights", layers=[0])
    assert np.abs(np.subtract(analysis.layer(0, "weights").cvf, fi.layers[0].cvf)).max() <= 0.01
