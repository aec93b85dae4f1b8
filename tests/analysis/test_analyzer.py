"""DeepVigorAnalyzer: result structure on VGG/ResNet/MobileNet-shaped nets, options, guarantees."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from guarantees import assert_model_unchanged
from tiny_models import TINY_MODELS, seeded_images
from torch import nn

from pytorchfi_deepvigor.analysis import DeepVigorAnalyzer
from pytorchfi_deepvigor.analysis.rays import uses_rays
from pytorchfi_deepvigor.engine import SimulationEngine
from pytorchfi_deepvigor.functional.vf import total_mvf
from pytorchfi_deepvigor.results import VulnerabilityResult


@pytest.mark.parametrize("name", list(TINY_MODELS))
def test_sampled_both_targets_on_tiny_models(name: str) -> None:
    net, images = TINY_MODELS[name](), seeded_images(6)
    result = DeepVigorAnalyzer(net, images).analyze(sampling=0.5, seed=1)
    catalogue = SimulationEngine(net, images).catalogue
    assert len(result.layers) == 2 * len(catalogue)
    for info in catalogue:
        act, wts = (
            result.layer(info.layer_num, "activations"),
            result.layer(info.layer_num, "weights"),
        )
        n_ch = math.ceil(0.5 * info.out_channels)
        per = max(1, int(math.log2(info.neurons_per_channel)))
        assert len(act.channels) == len(wts.channels) == n_ch
        assert len(act.neurons) == n_ch * per and act.vv_plus.shape == (n_ch * per, 6)
        if uses_rays(info):  # searched weight by weight: no channel VVs
            assert wts.vv_minus is None and wts.vv_plus is None
        else:
            assert wts.vv_minus.shape == (n_ch, 6) and (wts.vv_minus < 0).all()
        assert len(wts.neurons) == n_ch * per
        for vf in (*act.nvf, *act.cvf, *wts.cvf):
            assert 0.0 <= vf <= 1.0
        assert (act.vv_plus > 0).all()
        assert act.lvf == pytest.approx(np.mean(act.nvf))
    layers = sorted({x.layer_num for x in result.layers})
    expected = total_mvf(
        [result.layer(n, "activations").lvf for n in layers],
        [result.layer(n, "weights").lvf for n in layers],
        [result.layer(n, "activations").n_neurons for n in layers],
        [result.layer(n, "weights").n_weights for n in layers],
    )
    assert result.mvf_total == pytest.approx(expected)
    assert result.cost.image_evaluations > 0 and result.cost.batched_forwards > 0
    assert result.seed == 1 and result.options["sampling"] == 0.5


def conv_zoo_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, (3, 2), padding="same", dilation=(1, 2)),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4),  # depthwise, strided
        nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 4 * 3, 3),
    ).eval()


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_complete_analysis_counts_real_operands_only() -> None:
    net, images = (
        conv_zoo_net(),
        torch.randn(3, 1, 8, 6, generator=torch.Generator().manual_seed(0)),
    )
    result = DeepVigorAnalyzer(net, images).analyze(
        keep_edm=True, search="extended", aggregate="position"
    )
    dw = result.layer(1, "activations")  # depthwise 3x3, padding 1: a corner sees 4 real operands
    assert dw.edm.shape == (4 * 4 * 3, 3, 2 * 28 + 1)
    corner = dw.neurons.index((0, 0, 0))
    centre = dw.neurons.index((0, 1, 1))
    assert (dw.edm[corner].sum(-1) == 32 * 4).all() and (dw.edm[centre].sum(-1) == 32 * 9).all()
    wts = result.layer(3, "weights")  # Linear: 72 weights x 32 bits per output feature
    assert (wts.edm.sum(-1) == 72 * 32).all()
    assert result.unsupported == ()
    again = VulnerabilityResult.from_json(result.to_json())
    assert again == result and again.layer(1, "activations").edm.shape == dw.edm.shape


def test_hook_path_gives_the_same_result() -> None:
    net, images = TINY_MODELS["resnet"](), seeded_images(4)
    fx = DeepVigorAnalyzer(net, images).analyze(layers=[1, 4], sampling=0.5)
    hooks = DeepVigorAnalyzer(SimulationEngine(net, images, use_fx=False)).analyze(
        layers=[1, 4], sampling=0.5
    )
    assert not SimulationEngine(net, images, use_fx=False).uses_fx
    for a, b in zip(fx.layers, hooks.layers, strict=True):
        assert a.cvf == b.cvf and np.array_equal(a.vv_plus, b.vv_plus)


def dead_channel_net() -> nn.Module:
    """Channel 1 of the conv sits behind a ReLU with a hugely negative bias: zero gradient."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    with torch.no_grad():
        net[0].bias[1] = -100.0
    return net.eval()


def test_zero_gradient_skip() -> None:
    net, images = dead_channel_net(), seeded_images(5, size=6)
    kw = {"layers": [0], "aggregate": "position"}  # the VVs of every channel, no margin gradient
    plain = DeepVigorAnalyzer(net, images).analyze(**kw)
    skip = DeepVigorAnalyzer(net, images).analyze(**kw, skip_zero_gradient=True)
    assert skip.cost.backwards >= 1 and plain.cost.backwards == 0
    assert skip.cost.image_evaluations < plain.cost.image_evaluations
    for target in ("weights", "activations"):
        a, b = plain.layer(0, target), skip.layer(0, target)
        sites = b.neurons or [(c, 0, 0) for c in b.channels]
        dead = [i for i, n in enumerate(sites) if n[0] == 1]
        assert np.isposinf(b.vv_plus[dead]).all() and np.isneginf(b.vv_minus[dead]).all()
        assert np.isfinite(a.vv_plus[dead]).any()  # a big enough delta revives the channel
        # elsewhere the skip changes nothing, except for targets it skipped (VVs +-inf)
        changed = (a.vv_plus != b.vv_plus).any(1) | (a.vv_minus != b.vv_minus).any(1)
        assert np.isposinf(b.vv_plus[changed]).all() and np.isneginf(b.vv_minus[changed]).all()
        if target == "weights":
            assert changed.tolist() == [False, True]


def test_every_layer_records_its_cost() -> None:
    analyzer = DeepVigorAnalyzer(TINY_MODELS["resnet"](), seeded_images(4))
    result = analyzer.analyze(target="both", sampling=0.5, seed=1, skip_zero_gradient=True)
    costs = [layer.cost for layer in result.layers]
    assert all(c is not None and c.wall_time_s > 0 for c in costs)
    for name in ("batched_forwards", "image_evaluations", "backwards", "faults"):
        assert sum(getattr(c, name) for c in costs) == getattr(result.cost, name), name
    assert sum(c.wall_time_s for c in costs) <= result.cost.wall_time_s
    assert all(c.image_evaluations > 0 for c in costs)


def test_results_are_seeded() -> None:
    net, images = TINY_MODELS["vgg"](), seeded_images(4)
    analyzer = DeepVigorAnalyzer(net, images)
    a = analyzer.analyze(target="activations", sampling=0.3, seed=5)
    b = analyzer.analyze(target="activations", sampling=0.3, seed=5)
    c = analyzer.analyze(target="activations", sampling=0.3, seed=6)
    assert a.without_timings().layers == b.without_timings().layers
    assert [x.neurons for x in a.layers] != [x.neurons for x in c.layers]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"target": "neurons"}, ValueError, "expected target in"),
        ({"search": "octave"}, ValueError, "expected search in"),
        ({"aggregate": "max"}, ValueError, "expected aggregate in"),
        ({"seed": -1}, ValueError, "expected seed as a non-negative int"),
        ({"sampling": 2.0}, ValueError, r"sampling ratio in \(0, 1\]"),
        ({"layers": [9]}, ValueError, "layer_num 9 out of range"),
        ({"layers": [0, 0]}, ValueError, "expected distinct layer numbers"),
        ({"layers": 0}, TypeError, "expected layers as a list"),
        ({"keep_edm": "yes"}, TypeError, "expected keep_edm as a bool"),
    ],
    ids=["target", "search", "aggregate", "seed", "sampling", "layer", "dup", "int", "flag"],
)
def test_invalid_options_raise_and_leave_the_model_unchanged(kwargs, error, match) -> None:
    net = TINY_MODELS["vgg"]().train()
    images = seeded_images(2)
    assert_model_unchanged(
        net, lambda: DeepVigorAnalyzer(net, images).analyze(**kwargs), raises=error, match=match
    )


def test_analysis_leaves_the_model_unchanged() -> None:
    net = TINY_MODELS["mobilenet"]().train()
    images = seeded_images(3)
    assert_model_unchanged(
        net,
        lambda: DeepVigorAnalyzer(net, images).analyze(sampling=0.2, skip_zero_gradient=True),
    )


def test_constructor_errors() -> None:
    net, images = TINY_MODELS["vgg"](), seeded_images(2)
    with pytest.raises(ValueError, match="expected images"):
        DeepVigorAnalyzer(net)
    with pytest.raises(ValueError, match="not both"):
        DeepVigorAnalyzer(SimulationEngine(net, images), images)
    with pytest.raises(TypeError, match="expected an nn.Module or a SimulationEngine"):
        DeepVigorAnalyzer("vgg", images)  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu() -> None:
    net, images = TINY_MODELS["resnet"](), seeded_images(4)
    cpu = DeepVigorAnalyzer(net, images).analyze(sampling=0.5, skip_zero_gradient=True)
    gpu = DeepVigorAnalyzer(net, images, device="cuda").analyze(
        sampling=0.5, skip_zero_gradient=True
    )
    for a, b in zip(cpu.layers, gpu.layers, strict=True):
        assert np.allclose(a.cvf, b.cvf, atol=0.02)
