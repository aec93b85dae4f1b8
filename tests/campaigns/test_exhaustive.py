"""Exhaustive campaigns: VFs against per-fault in-place injection, selection, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from guarantees import assert_model_unchanged
from tiny_models import seeded_images, tiny_resnet, tiny_vgg
from torch import nn

from pytorchfi_deepvigor.bits import flip_bit
from pytorchfi_deepvigor.campaigns import ExhaustiveCampaign
from pytorchfi_deepvigor.engine import SimulationEngine, classify


@pytest.fixture(scope="module")
def linear_net() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(2)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3)).eval(), torch.randn(5, 3)


def _bad_fraction(logits: torch.Tensor, golden: torch.Tensor) -> float:
    return float((classify(logits, golden) >= 2).double().mean())


def test_weight_cvf_equals_in_place_injection(linear_net) -> None:
    model, images = linear_net
    engine = SimulationEngine(model, images)
    result = ExhaustiveCampaign(engine, faults_per_chunk=7).run("weights", layers=[0])
    layer = result.layer(0, "weights")
    weight = model[0].weight.data
    expected = []
    with torch.no_grad():
        for k in range(4):
            fractions = []
            for j in range(3):
                golden = weight[k, j].clone()
                for bit in range(32):
                    weight[k, j] = flip_bit(golden, bit)
                    fractions.append(_bad_fraction(model(images), engine.golden_logits))
                weight[k, j] = golden
            expected.append(np.mean(fractions))
    assert layer.channels == (0, 1, 2, 3)
    np.testing.assert_allclose(layer.cvf, expected, rtol=0, atol=1e-12)
    assert layer.lvf == pytest.approx(np.mean(expected), abs=1e-12)
    assert layer.n_faults == 4 * 3 * 32 and layer.counts.total == 4 * 3 * 32 * 5
    assert result.mvf_weights == pytest.approx(layer.lvf)


def test_operand_nvf_equals_in_place_injection(linear_net) -> None:
    model, images = linear_net
    engine = SimulationEngine(model, images)
    result = ExhaustiveCampaign(engine).run("operands", layers=[1], neurons={1: [(2, 0, 0)]})
    layer = result.layer(1, "activations")
    lin = model[2]
    hidden = model[1](model[0](images)).detach()
    fractions = []
    with torch.no_grad():
        for j in range(4):
            for bit in range(32):
                x = hidden.clone()
                x[:, j] = flip_bit(x[:, j], bit)
                logits = lin(hidden)
                logits[:, 2] = nn.functional.linear(x, lin.weight, lin.bias)[:, 2]
                fractions.append(_bad_fraction(logits, engine.golden_logits))
    assert layer.neurons == ((2, 0, 0),) and layer.channels == (2,)
    assert layer.nvf[0] == pytest.approx(np.mean(fractions), abs=1e-12)
    assert layer.cvf == layer.nvf and layer.lvf == layer.nvf[0]


def test_stored_faults_cover_every_value_of_the_channels() -> None:
    engine = SimulationEngine(tiny_vgg(), seeded_images(3))
    result = ExhaustiveCampaign(engine).run("stored", channels={0: [1], 3: [0, 4]})
    assert [layer.layer_num for layer in result.layers] == [0, 3]
    conv, fc = result.layer(0, "stored"), result.layer(3, "stored")
    assert conv.channels == (1,) and conv.n_faults == 8 * 8 * 32
    assert fc.channels == (0, 4) and fc.n_faults == 2 * 32
    assert fc.lvf == pytest.approx(np.mean(fc.cvf))


def test_channel_ratio_draws_seeded_channels() -> None:
    engine = SimulationEngine(tiny_resnet(), seeded_images(2))
    campaign = ExhaustiveCampaign(engine)
    runs = [campaign.run("weights", layers=[5], channel_ratio=0.4, seed=s) for s in (0, 0, 1, 2)]
    drawn = [r.layer(5, "weights").channels for r in runs]
    assert all(len(c) == math.ceil(0.4 * 8) for c in drawn)
    assert drawn[0] == drawn[1] and len(set(drawn)) > 1
    assert runs[0].options["channels"] == {"5": drawn[0]} and runs[0].seed == 0


def test_operand_neurons_sampled_per_channel_and_padding_excluded() -> None:
    engine = SimulationEngine(tiny_vgg(), seeded_images(2))
    result = ExhaustiveCampaign(engine).run("operands", layers=[0], channels=[0, 3], seed=4)
    layer = result.layer(0, "activations")
    per_channel = int(math.floor(math.log2(8 * 8)))
    assert [n[0] for n in layer.neurons] == [0] * per_channel + [3] * per_channel
    edge = sum(1 for _, h, w in layer.neurons if h in (0, 7) or w in (0, 7))
    assert layer.n_faults == 32 * (9 * len(layer.neurons) - 3 * edge - 2 * _corners(layer.neurons))


def _corners(neurons) -> int:
    return sum(1 for _, h, w in neurons if h in (0, 7) and w in (0, 7))


def test_stuck_at_doubles_the_population_and_chunking_changes_nothing() -> None:
    engine = SimulationEngine(tiny_vgg(), seeded_images(3))
    flip = ExhaustiveCampaign(engine).run("weights", layers=[3], channels=[1])
    stuck = ExhaustiveCampaign(engine).run(
        "weights", layers=[3], channels=[1], fault_model="stuck-at"
    )
    stuck_small = ExhaustiveCampaign(engine, faults_per_chunk=5).run(
        "weights", layers=[3], channels=[1], fault_model="stuck-at"
    )
    assert stuck.layers[0].n_faults == 2 * flip.layers[0].n_faults == 2 * 8 * 32
    assert stuck.layers[0].counts == stuck_small.layers[0].counts
    assert stuck.layers[0].cvf == stuck_small.layers[0].cvf
    assert stuck_small.cost.batched_forwards > stuck.cost.batched_forwards
    assert stuck.cost.image_evaluations == stuck.cost.faults * 3


def test_each_layer_records_its_cost() -> None:
    engine = SimulationEngine(tiny_resnet(), seeded_images(3))
    result = ExhaustiveCampaign(engine, faults_per_chunk=50).run("weights", layers=[0, 2])
    costs = [layer.cost for layer in result.layers]
    assert all(c is not None and c.wall_time_s > 0 for c in costs)
    assert [c.faults for c in costs] == [layer.n_faults for layer in result.layers]
    for name in ("batched_forwards", "image_evaluations", "faults"):
        assert sum(getattr(c, name) for c in costs) == getattr(result.cost, name), name


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"target": "bias"}, ValueError, "expected target 'weights'"),
        ({"fault_model": "bitflip"}, ValueError, "unknown fault model"),
        ({"channel_ratio": 1.5}, ValueError, r"channel_ratio in \(0, 1\], got 1.5"),
        ({"channel_ratio": 0.0}, ValueError, r"channel_ratio in \(0, 1\]"),
        ({"channels": [0], "channel_ratio": 0.5}, ValueError, "either channels or channel_ratio"),
        ({"channels": [7], "layers": [0]}, ValueError, "channel 7 out of range for layer 0"),
        ({"channels": {1: [0]}, "layers": [0]}, ValueError, "no channel list for layer 0"),
        ({"channels": 3}, TypeError, "non-empty list of channel indices"),
        ({"neurons": "all"}, ValueError, "neurons only apply to target='operands'"),
        (
            {"target": "operands", "layers": [0], "neurons": {0: [(0, 8, 0)]}},
            ValueError,
            r"neuron \(0, 8, 0\) out of range",
        ),
        ({"target": "operands", "neurons": "some"}, TypeError, "expected neurons as None"),
        ({"layers": [4]}, ValueError, "layer_num 4 out of range"),
        ({"layers": []}, ValueError, "at least one layer number"),
        ({"seed": 1.5}, ValueError, "seed as a non-negative int"),
        ({"progress_dir": 1}, TypeError, "progress_dir as a str or Path"),
    ],
    ids=lambda v: "-".join(map(str, v)) if isinstance(v, dict) else str(v),
)
def test_invalid_arguments_leave_the_model_unchanged(kwargs: dict, error: type, match: str) -> None:
    model = tiny_vgg().train()
    campaign = ExhaustiveCampaign(SimulationEngine(model, seeded_images(2)))
    assert_model_unchanged(model, lambda: campaign.run(**kwargs), raises=error, match=match)


def test_constructor_validation() -> None:
    with pytest.raises(TypeError, match="expected a SimulationEngine"):
        ExhaustiveCampaign(nn.Linear(2, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="faults_per_chunk >= 1"):
        ExhaustiveCampaign(SimulationEngine(tiny_vgg(), seeded_images(1)), faults_per_chunk=-2)


@pytest.mark.parametrize("target", ["weights", "operands", "stored"])
def test_model_unchanged(target: str) -> None:
    model = tiny_resnet().train()
    campaign = ExhaustiveCampaign(SimulationEngine(model, seeded_images(2)))
    result = assert_model_unchanged(
        model, lambda: campaign.run(target, layers=[0, 5], channel_ratio=0.25)
    )
    assert result.method == "exhaustive" and len(result.layers) == 2
