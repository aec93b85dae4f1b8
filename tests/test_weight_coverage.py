"""Coverage as a number (issue 25): every result says what share of the model's weight memory
it covers, and names the rest with the reason."""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from oracle_models import ORACLE_MODELS, oracle_images
from tiny_models import TINY_MODELS, seeded_images
from torch import nn

from pytorchfi_deepvigor import (
    DeepVigorAnalyzer,
    ExhaustiveCampaign,
    SimulationEngine,
    StatisticalCampaign,
    VulnerabilityResult,
    weight_coverage,
)
from pytorchfi_deepvigor.coverage import NOT_MULTIPLIED, weight_tensors
from pytorchfi_deepvigor.report import format_summary


class BufferHead(nn.Module):
    """An ONNX-converted shape: the classifier's weight is a buffer fed to a matmul, and a
    position table is added to the feature map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pos = nn.Parameter(torch.randn(1, 4, 10, 10) * 0.1)
        self.register_buffer("w", torch.randn(4, 10))
        self.register_buffer("b", torch.randn(10))  # 1-D: a bias, not a weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x) + self.pos).mean(dim=(2, 3))
        return torch.matmul(h, self.w) + self.b


def test_a_plain_cnn_is_covered_completely() -> None:
    model = TINY_MODELS["resnet"]()
    engine = SimulationEngine(model, seeded_images(4))
    result = DeepVigorAnalyzer(engine).analyze(target="weights", sampling=0.5)
    assert result.coverage is not None and result.coverage.complete
    assert result.coverage.total == sum(t.numel() for _, t in weight_tensors(model))
    assert "weight coverage 100%" in format_summary(result)
    assert VulnerabilityResult.from_json(result.to_json()).coverage == result.coverage


class UntraceableBufferHead(BufferHead):
    """:class:`BufferHead` whose forward branches on a value: torch.fx cannot trace it, so its
    matmul cannot be made a layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x) + self.pos).mean(dim=(2, 3))
        if bool(h.sum() > -1e30):
            h = h * 1.0
        return torch.matmul(h, self.w) + self.b


def test_buffers_are_weights_positions_are_listed_apart() -> None:
    model = BufferHead().eval()
    engine = SimulationEngine(model, oracle_images())
    coverage = weight_coverage(model, engine.catalogue)
    assert (coverage.covered, coverage.total) == (76, 76)  # the buffer under matmul is a layer
    assert engine.layer(1).module.weight.data_ptr() == model.w.data_ptr()
    assert coverage.other == (f"pos (400 elements): {NOT_MULTIPLIED}",)  # added: not a weight
    model = UntraceableBufferHead().eval()
    engine = SimulationEngine(model, oracle_images())
    coverage = weight_coverage(model, engine.catalogue)
    assert (coverage.covered, coverage.total) == (36, 36 + 40)  # the buffer under matmul counts
    assert coverage.missing == (
        "w (40 elements): buffer: used by torch.matmul, not as the weight of a catalogued "
        "Conv2d/Linear",
    )
    assert coverage.other == (f"pos (400 elements): {NOT_MULTIPLIED}",)  # added: not a weight


def test_attention_projections_are_covered_on_the_engines_view() -> None:
    """MultiheadAttention's packed in_proj_weight and its out_proj are catalogued on the
    engine's view (its twin's in_proj holds the very same tensor); the model itself, seen
    without the engine, lists the module with the reason."""
    tokens = ORACLE_MODELS["tokens"]()
    engine = SimulationEngine(tokens, oracle_images())
    coverage = weight_coverage(engine.model, engine.catalogue)
    assert coverage.complete and coverage.total >= 192 + 64
    assert any(i.module.weight is tokens.attn.in_proj_weight for i in engine.catalogue)
    plain = {m.split(" ")[0]: m for m in weight_coverage(tokens, []).missing}
    assert "MultiheadAttention: packed in_proj_weight" in plain["attn.in_proj_weight"]


def test_every_result_carries_it_and_the_summary_says_so_loudly() -> None:
    model = UntraceableBufferHead().eval()
    engine = SimulationEngine(model, oracle_images())
    results = [
        DeepVigorAnalyzer(engine).analyze(target="both"),
        ExhaustiveCampaign(engine).run("weights", channel_ratio=0.5),
        StatisticalCampaign(engine).run("layer", target="weights", e=0.2),
    ]
    for result in results:
        assert result.coverage == weight_coverage(model, engine.catalogue)
        text = format_summary(result)
        assert "WEIGHT COVERAGE 47.37%: 40 of the model's 76 weight elements" in text
        assert "not covered: w (40 elements)" in text
        assert "not weights (added, indexed or scaled by; not fault sites): 1 tensors" in text


def test_a_weight_recomputed_by_a_hook_is_not_a_fault_site() -> None:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        conv = torch.nn.utils.weight_norm(nn.Conv2d(1, 4, 3, padding=1))
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(400, 10)).eval()
    coverage = weight_coverage(model, SimulationEngine(model, oracle_images()).catalogue)
    assert coverage.covered == 4000
    assert [m.split(" ")[0] for m in coverage.missing] == ["0.weight_g", "0.weight_v"]


class SharedConv(nn.Module):
    """A convolution applied twice per forward (CoaT's shared positional convolution)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.shared = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.head = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = x + self.shared(x)
        x = x + self.shared(torch.relu(x))
        return self.head(x.mean(dim=(2, 3)))


def test_a_layer_called_twice_is_listed_not_the_whole_model_refused() -> None:
    """It used to raise at engine construction; now the rest is analysed and injected, and the
    shared layer is named with the reason and its share of the weights."""
    from oracle import Oracle
    from test_ground_truth import _compare

    from pytorchfi_deepvigor.campaigns.faults import FaultPopulation

    torch.manual_seed(0)
    model = SharedConv().eval()
    engine = SimulationEngine(model, oracle_images())
    assert [i.name for i in engine.catalogue] == ["stem", "head"]
    result = DeepVigorAnalyzer(engine).analyze(target="both")
    assert any(
        u.startswith("shared (Conv2d: called 2 times per forward") for u in result.unsupported
    )
    assert result.coverage is not None
    assert result.coverage.missing == (
        f"shared.weight (36 elements): Conv2d: {result.unsupported[0].split(': ', 1)[1][:-1]}",
    )
    info = engine.layer(0)
    _compare(
        Oracle(model, oracle_images()),
        engine,
        FaultPopulation(info, "weights", "flip", list(range(9))),
    )


class Windows(nn.Module):
    """Window attention's shape: 2x2 windows of a map folded into the batch before a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(1, 8, 2, stride=2)
        self.qkv = nn.Linear(8, 8)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)  # (B, 8, 5, 5) -> four windows of 2x2 (the last row/column dropped)
        b = x.shape[0]
        w = x[:, :, :4, :4].reshape(b, 8, 2, 2, 2, 2).permute(0, 2, 4, 3, 5, 1)
        w = self.qkv(w.reshape(b * 4, 4, 8))  # (B * windows, tokens, C)
        return self.head(w.reshape(b, 16, 8).mean(dim=1))


def test_windows_folded_into_the_batch_are_listed_not_a_crash_later() -> None:
    model = Windows().eval()
    engine = SimulationEngine(model, oracle_images())
    assert [i.name for i in engine.catalogue] == ["embed", "head"]
    result = DeepVigorAnalyzer(engine).analyze(target="both")
    assert any(u.startswith("qkv (Linear: its input folds windows") for u in result.unsupported)
    assert result.coverage is not None and "qkv.weight (64 elements)" in result.coverage.missing[0]
    fi = ExhaustiveCampaign(engine).run("weights", channel_ratio=0.5)
    assert len(fi.layers) == 2


class StaticSamePadConv(nn.Conv2d):
    """efficientnet_pytorch's ``Conv2dStaticSamePadding``: a ``ZeroPad2d`` child pads, then
    ``F.conv2d`` on the module's own weight."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, image_size: int) -> None:
        super().__init__(cin, cout, kernel, stride=stride)
        out = -(-image_size // stride)
        pad = max((out - 1) * stride + kernel - image_size, 0)
        self.static_padding = nn.ZeroPad2d((pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.static_padding(x)
        return torch.nn.functional.conv2d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )


def test_a_conv_subclass_with_a_padding_child_is_analysed_and_injected() -> None:
    """Its 49 convolutions were listed as 'never called' (they are called), then injected
    through their own forward but neither analysed nor open to operand faults (the padding they
    apply was not recorded). Now the engine's view holds a twin with the padding it applies
    (TensorFlow's "same": the odd row and column after), so everything runs, checked against
    the oracle on the model itself and against exhaustive FI."""
    from oracle import Oracle
    from test_ground_truth import _compare

    from pytorchfi_deepvigor.campaigns.faults import FaultPopulation, operand_sites
    from pytorchfi_deepvigor.twins import PaddedConv2d

    torch.manual_seed(0)
    model = nn.Sequential(
        StaticSamePadConv(1, 4, 3, 2, 10), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 25, 10)
    ).eval()
    images = oracle_images()
    engine = SimulationEngine(model, images)
    conv = engine.layer(0)
    assert conv.name == "0" and isinstance(conv.module, PaddedConv2d)
    assert conv.padding == (0, 1, 0, 1) and not conv.weight_transform
    assert conv.module.weight is model[0].weight and type(model[0]) is StaticSamePadConv
    assert engine.uses_fx and not engine.hook_layers
    analysis = DeepVigorAnalyzer(engine).analyze(target="both", layers=[0])
    assert analysis.coverage is not None and analysis.coverage.complete
    oracle = Oracle(model, images, view=engine.model)
    _compare(oracle, engine, FaultPopulation(conv, "weights", "flip", list(range(9))))
    _compare(oracle, engine, FaultPopulation(conv, "stored", "stuck-at", list(range(10))))
    # the last row and column read the padding after the map: border operands included
    sites = operand_sites(conv, np.array([0, 4, 20, 24, 99]))
    _compare(oracle, engine, FaultPopulation(conv, "operands", "flip", sites))
    for target in ("weights", "activations"):
        fi = ExhaustiveCampaign(engine).run(target, layers=[0])
        done = analysis.layer(0, target)
        error = np.abs(np.subtract(done.cvf, fi.layers[0].cvf))
        assert error.max() <= 0.01, (target, error)


class ZeroGainConv(nn.Conv2d):
    """NFNet's last block conv with timm's zero-initialised gain: the forward scales the weight
    by 0, so a changed weight changes nothing, but an Inf written into it gives NaN."""

    def __init__(self) -> None:
        super().__init__(4, 4, 1)
        self.gain = nn.Parameter(torch.zeros(4, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.gain, self.bias)


def test_a_weight_scaled_by_zero_is_still_a_fault_site() -> None:
    """It was taken for a weight-norm weight ("derived") and refused: 25% of eca_nfnet_l0's
    weights with random initialisation."""
    from oracle import Oracle
    from test_ground_truth import _compare

    from pytorchfi_deepvigor.campaigns.faults import FaultPopulation

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), ZeroGainConv(), nn.Flatten(), nn.Linear(400, 10)
    ).eval()
    with torch.no_grad():
        model[2].weight[0, 0] = 1.5  # bit 30 flipped: +Inf
    engine = SimulationEngine(model, oracle_images())
    info = engine.layer(1)
    assert info.weight_transform and not info.weight_derived
    assert weight_coverage(model, engine.catalogue).complete
    pop = FaultPopulation(info, "weights", "flip", [0, 5])
    want = _compare(Oracle(model, oracle_images()), engine, pop)
    assert want.any()  # the exponent's top bit gives Inf, Inf * 0 = NaN: critical


def test_the_analysis_coverage_leaves_out_the_layers_it_skips() -> None:
    """A weight-standardising convolution is injected through its own forward (a fault site of
    FI) but not analysed: the analysis result says so in its coverage (EfficientNet-Lite0's
    same-padding convolutions read 100% here while the analysis skipped 49 of 50 layers)."""
    model = ORACLE_MODELS["stdconv"]()
    engine = SimulationEngine(model, oracle_images())
    skipped = [i for i in engine.catalogue if i.weight_transform]
    assert skipped
    analysis = DeepVigorAnalyzer(engine).analyze(target="weights", sampling=0.5)
    fi = ExhaustiveCampaign(engine).run("weights", channel_ratio=0.25)
    assert fi.coverage is not None and fi.coverage.complete
    assert analysis.coverage is not None
    assert analysis.coverage.total - analysis.coverage.covered == sum(i.n_weights for i in skipped)
    assert all(
        "layer not analysed: Conv2d.forward of StdConv2d" in m for m in analysis.coverage.missing
    )


class MatMul(nn.Module):
    """An ONNX conversion's ``MatMul``: no weight of its own, handed one."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a, b)


class HandedHead(nn.Module):
    """A model converted from ONNX: its classifier is a buffer handed to a ``MatMul``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.register_buffer("w", torch.randn(4, 10))
        self.matmul = MatMul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.matmul(torch.relu(self.conv(x)).mean(dim=(2, 3)), self.w)


def test_a_buffer_handed_to_a_matmul_module_is_analysed_and_injected() -> None:
    """The blind spot of ONNX conversions (PP-OCR's classifier): the buffer is the weight of a
    Linear twin sharing its memory; weight, stored and operand faults equal the oracle's (the
    weight written into the model's buffer, its own forward), the analysis matches
    exhaustive FI."""
    from oracle import Oracle
    from test_ground_truth import _compare

    from pytorchfi_deepvigor.campaigns.faults import FaultPopulation, operand_sites
    from pytorchfi_deepvigor.twins import ArgumentLinear

    torch.manual_seed(0)
    model = HandedHead().eval()
    images = oracle_images()
    engine = SimulationEngine(model, images)
    head = engine.layer(1)
    assert head.name == "matmul" and isinstance(head.module, ArgumentLinear)
    assert head.module.weight.data_ptr() == model.w.data_ptr() and head.weight_shape == (10, 4)
    assert weight_coverage(engine.model, engine.catalogue).complete
    oracle = Oracle(model, images, view=engine.model)
    _compare(oracle, engine, FaultPopulation(head, "weights", "flip", [0, 7, 39]))
    _compare(oracle, engine, FaultPopulation(head, "stored", "flip", [0, 9]))
    _compare(oracle, engine, FaultPopulation(head, "operands", "flip", operand_sites(head, [3])))
    analysis = DeepVigorAnalyzer(engine).analyze(target="both", layers=[1])
    for target in ("weights", "activations"):
        fi = ExhaustiveCampaign(engine).run(target, layers=[1])
        error = np.abs(np.subtract(analysis.layer(1, target).cvf, fi.layers[0].cvf))
        assert error.max() <= 0.01, (target, error)
    assert type(model.matmul) is MatMul and not model.matmul._forward_hooks


class FunctionalConv(nn.Module):
    """A block applying its own weight with ``F.conv2d`` (stride 2, padding 1) in its forward."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 1, 3, 3) * 0.5)
        self.b = nn.Parameter(torch.randn(4) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(F.conv2d(x, self.w, self.b, stride=2, padding=1))


class HeadLinear(nn.Linear):
    """A Linear subclass with the plain forward (timm's ``Linear``): torch.fx traces through it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class FunctionalNet(nn.Module):
    """Weights applied in custom forwards: ``F.conv2d`` in a child, ``F.linear`` on a parameter
    and ``x @ W`` on a buffer in the model's own forward, a Linear subclass."""

    def __init__(self) -> None:
        super().__init__()
        self.features = FunctionalConv()
        self.w1 = nn.Parameter(torch.randn(12, 4) * 0.5)
        self.mid = HeadLinear(12, 12)
        self.register_buffer("head", torch.randn(12, 10) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x).mean(dim=(2, 3))
        h = torch.relu(self.mid(torch.relu(F.linear(h, self.w1))))
        return h @ self.head


def test_weights_applied_functionally_in_custom_forwards_are_layers() -> None:
    """``F.conv2d``/``F.linear``/``@`` on a module's own weight, found in its traced forward, is
    a layer holding that weight: analysed and injected, every fault equal to the oracle's (the
    weight written into the model's own tensor, its own forward), the analysis matching
    exhaustive FI; the model is left as it was."""
    from oracle import Oracle
    from test_ground_truth import _compare

    from pytorchfi_deepvigor.campaigns.faults import FaultPopulation, operand_sites

    torch.manual_seed(0)
    model = FunctionalNet().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = oracle_images()
    engine = SimulationEngine(model, images)
    names = [(i.name, type(i.module).__name__) for i in engine.catalogue]
    assert names == [
        ("features.w_layer", "Conv2d"),
        ("w1_layer", "Linear"),
        ("mid", "Linear"),
        ("head_layer", "ArgumentLinear"),
    ]
    conv = engine.layer(0)
    assert (
        conv.stride == (2, 2) and conv.padding == (1, 1) and conv.module.weight is model.features.w
    )
    assert (
        engine.layer(1).module.weight is model.w1
        and engine.layer(2).module.weight is model.mid.weight
    )
    assert engine.uses_fx and not engine.hook_layers
    assert weight_coverage(model, engine.catalogue).complete
    oracle = Oracle(model, images, view=engine.model)
    for info in engine.catalogue:
        n_w = int(np.prod(info.weight_shape))
        weights = list(range(0, n_w, max(1, n_w // 5)))
        _compare(oracle, engine, FaultPopulation(info, "weights", "flip", weights))
        neurons = np.arange(0, info.neurons_per_image, max(1, info.neurons_per_image // 3))
        _compare(oracle, engine, FaultPopulation(info, "stored", "stuck-at", list(neurons)))
        _compare(
            oracle, engine, FaultPopulation(info, "operands", "flip", operand_sites(info, neurons))
        )
    analysis = DeepVigorAnalyzer(engine).analyze(target="both")
    for target in ("weights", "activations"):
        fi = ExhaustiveCampaign(engine).run(target)
        for n in range(len(engine.catalogue)):
            error = np.abs(np.subtract(analysis.layer(n, target).cvf, fi.layers[n].cvf))
            assert error.max() <= 0.02, (n, target, error)
    assert type(model.features) is FunctionalConv and type(model.mid) is HeadLinear
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
