"""int8 networks (``torch.ao.quantization``, FX graph mode, fbgemm): fault injection against
flipping the stored word in the user's quantized model (its own forward: ``oracle_int8``),
fault for fault, and the analysis against that fault injection (issue 23)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip(
    "torch.ao.quantization.quantize_fx", reason="torch.ao.quantization is gone from this torch"
)

from oracle_int8 import Int8Oracle, flip_word  # noqa: E402
from test_ground_truth import _package  # noqa: E402  (the package's per-fault verdicts, one copy)

from pytorchfi_deepvigor import DeepVigorAnalyzer, ExhaustiveCampaign, SimulationEngine  # noqa: E402
from pytorchfi_deepvigor.bits import IntegerFlip, parse_fault_model  # noqa: E402
from pytorchfi_deepvigor.campaigns.faults import (  # noqa: E402
    FaultPopulation,
    operand_sites,
)
from pytorchfi_deepvigor.perturbations import ChannelAdd, NeuronAdd  # noqa: E402
from pytorchfi_deepvigor.quantized import QuantizedConv2d, QuantizedLinear  # noqa: E402
from pytorchfi_deepvigor.zoo import quantize_int8  # noqa: E402


class _Net(nn.Module):
    """Conv-ReLU (fused), a residual add, a depthwise conv, pooling and two Linears."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(1, 6, 3, padding=1)
        self.conv1 = nn.Conv2d(6, 6, 3, padding=1)
        self.dw = nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc0 = nn.Linear(24, 16)
        self.fc1 = nn.Linear(16, 5)
        self.act = nn.ReLU()  # a module: fused with conv0 into a ConvReLU2d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act(self.conv0(x))
        b = torch.relu(self.conv1(a)) + a
        c = self.pool(torch.relu(self.dw(b)))
        return self.fc1(torch.relu(self.fc0(c.flatten(1))))


def quantized_net(seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """A small float network, post-training quantized (per-channel int8 weights) on random
    calibration images, and 12 analysis images."""
    torch.manual_seed(seed)
    net = _Net().eval()
    images = torch.randn(12, 1, 8, 8)
    return quantize_int8(net, torch.randn(64, 1, 8, 8)), images


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def setup() -> tuple[nn.Module, torch.Tensor, SimulationEngine, Int8Oracle]:
    torch.set_num_threads(1)
    model, images = quantized_net()
    engine = SimulationEngine(model, images)
    return model, images, engine, Int8Oracle(model, images)


def _bound(engine: SimulationEngine, num: int, target: str) -> IntegerFlip:
    from pytorchfi_deepvigor.campaigns._run import layer_fault_model

    words = layer_fault_model(IntegerFlip(), engine, num, target)
    assert isinstance(words, IntegerFlip)
    return words


# ------------------------------------------------------------------------------ tests
def test_the_view_holds_twins_and_the_model_is_unchanged(setup) -> None:  # type: ignore[no-untyped-def]
    model, images, engine, _ = setup
    kinds = {i.name: type(i.module) for i in engine.catalogue}
    assert kinds == {
        "conv0": QuantizedConv2d,
        "conv1": QuantizedConv2d,
        "dw": QuantizedConv2d,
        "fc0": QuantizedLinear,
        "fc1": QuantizedLinear,
    }
    assert engine.quantized and engine.uses_fx and not engine.hook_layers
    assert all(not i.weight_transform for i in engine.catalogue)
    assert type(model.conv0).__name__ == "ConvReLU2d"  # the user's model keeps its modules
    with torch.no_grad():
        assert torch.equal(engine.golden_logits, model(images))
        # the fault-free suffix of every layer is the model's own forward, bit for bit
        for info in engine.catalogue:
            assert torch.equal(engine.reference_logits(info.layer_num), engine.golden_logits)


def test_int8_words_against_their_definition() -> None:
    """Every bit of every int8 and uint8 word: the faulty value is the dequantized flipped
    word (two's complement for qint8), per channel."""
    scales = torch.tensor([0.013, 0.5], dtype=torch.float64)
    ints = torch.arange(-128, 128, dtype=torch.int8).reshape(2, 128)
    w = torch._make_per_channel_quantized_tensor(ints, scales, torch.zeros(2, dtype=torch.long), 0)
    model = IntegerFlip().bound(torch.qint8, scales, torch.zeros(2, dtype=torch.long))
    got = model.all_faulty(w.dequantize())  # (2, 128, 8)
    for bit in range(8):
        flipped = flip_word(ints, bit, signed=True).to(torch.int8)
        want = torch._make_per_channel_quantized_tensor(
            flipped, scales, torch.zeros(2, dtype=torch.long), 0
        ).dequantize()
        assert torch.equal(got[..., bit], want), bit
    x = torch._make_per_tensor_quantized_tensor(torch.arange(256, dtype=torch.uint8), 0.037, 11)
    model = IntegerFlip().bound(torch.quint8, torch.tensor(0.037), torch.tensor(11))
    got = model.all_faulty(x.dequantize())
    for bit in range(8):
        flipped = flip_word(x.int_repr(), bit, signed=False).to(torch.uint8)
        want = torch._make_per_tensor_quantized_tensor(flipped, 0.037, 11).dequantize()
        assert torch.equal(got[..., bit], want), bit
    assert parse_fault_model("int8").name == "int8"


def _weights_agree(
    engine: SimulationEngine, oracle: Int8Oracle, width: int | None = None, middle: bool = True
) -> int:
    """Every bit of the first ``width`` weights (all: ``None``) of one channel of every layer
    (the middle one, else the first), package against oracle fault for fault; the critical
    (fault, image) pairs."""
    critical = 0
    for info in engine.catalogue:
        k = info.out_channels // 2 if middle else 0
        sites = k * info.fan_in + np.arange(min(info.fan_in, width or info.fan_in))
        pop = FaultPopulation(info, "weights", _bound(engine, info.layer_num, "weights"), sites)
        got = _package(engine, pop)
        site, bit, _ = pop.decode(np.arange(pop.size))
        want = np.stack(
            [
                oracle.weight(info.name, int(sites[s]), int(b))
                for s, b in zip(site, bit, strict=True)
            ]
        )
        assert (got == want).all(), f"{info.name}: {(got != want).any(1).sum()} faults differ"
        critical += int(want.sum())
    return critical


def test_weights_fault_for_fault(setup) -> None:  # type: ignore[no-untyped-def]
    _, _, engine, oracle = setup
    assert _weights_agree(engine, oracle, width=10)  # the high bits of some weights matter


def test_operands_and_stored_fault_for_fault(setup) -> None:  # type: ignore[no-untyped-def]
    _, _, engine, oracle = setup
    for info in engine.catalogue:
        per = info.neurons_per_channel
        sites = operand_sites(info, np.array([per // 2]))[:12]
        pop = FaultPopulation(info, "operands", _bound(engine, info.layer_num, "operands"), sites)
        got = _package(engine, pop)
        site, bit, _ = pop.decode(np.arange(pop.size))
        want = []
        for s, b in zip(site, bit, strict=True):
            neuron, j = (int(v) for v in sites[s])
            if info.kind == "Linear":
                where: tuple[int, ...] = (j,)
            else:
                kh, kw = info.weight_shape[2:]
                ci = (
                    j // (kh * kw)
                    + (neuron // per) // (info.out_channels // info.groups) * (info.weight_shape[1])
                )
                r, c = divmod(neuron % per, info.output_shape[2])
                dr, dc = divmod(j % (kh * kw), kw)
                where = (
                    ci,
                    r * info.stride[0] - info.padding[0] + dr,
                    c * info.stride[1] - info.padding[1] + dc,
                )
            out_at = (
                (neuron,)
                if info.kind == "Linear"
                else (neuron // per, *divmod(neuron % per, info.output_shape[2]))
            )
            want.append(oracle.operand(info.name, where, int(b), out_at))
        assert (got == np.stack(want)).all(), info.name
        stored = np.arange(min(per, 6))
        pop = FaultPopulation(info, "stored", _bound(engine, info.layer_num, "stored"), stored)
        got = _package(engine, pop)
        site, bit, _ = pop.decode(np.arange(pop.size))
        want = []
        for s, b in zip(site, bit, strict=True):
            flat = int(stored[s])
            if info.kind == "Linear":
                where = (flat,)
            else:
                where = (0, *divmod(flat, info.output_shape[2]))
            want.append(oracle.stored(info.name, where, int(b)))
        assert (got == np.stack(want)).all(), info.name


def test_probes_requantise_once_like_the_kernel(setup) -> None:  # type: ignore[no-untyped-def]
    """An error added to a layer's sum: the engine requantises it once; the kernel run with
    the same change in its bias (the model's own forward) gives the same critical images."""
    model, images, engine, _ = setup
    n = engine.num_images
    idx, z = torch.arange(n), torch.zeros(n, dtype=torch.long)
    for info in engine.catalogue:
        m = model.get_submodule(info.name)
        w, b = m.weight(), m.bias()
        c = info.out_channels // 2
        # the kernel's bias is an int32 multiple of the input scale x the weight scale
        step = info.module.in_qparams[0] * float(w.q_per_channel_scales()[c])
        for e in (0.3, -0.3, 2.0, -7.0, 40.0):
            e = round(e / step) * step
            got = engine.critical(info.layer_num, idx, ChannelAdd(z + c, torch.full((n,), e)))
            bias = torch.zeros(info.out_channels) if b is None else b.clone()
            bias[c] += e
            m.set_weight_bias(w, bias)
            try:
                with torch.no_grad():
                    want = model(images).argmax(1) != engine.golden_top1
            finally:
                m.set_weight_bias(w, b)
            assert got.tolist() == want.tolist(), f"{info.name} channel {c} error {e}"
        got = engine.critical(info.layer_num, idx, NeuronAdd(z + c, z, z, torch.full((n,), 0.0)))
        assert not got.any()


def test_exhaustive_fi_counts_the_oracle(setup) -> None:  # type: ignore[no-untyped-def]
    _, _, engine, oracle = setup
    info = engine.layer(1)
    result = ExhaustiveCampaign(engine).run("weights", layers=[1], channels=[2])
    assert result.options["fault_model"] == "int8"
    every = [
        oracle.weight(info.name, 2 * info.fan_in + j, b)
        for j in range(info.fan_in)
        for b in range(8)
    ]
    assert result.layers[0].cvf[0] == pytest.approx(np.mean(every), abs=0)


def test_weights_analysis_against_fi(setup) -> None:  # type: ignore[no-untyped-def]
    """Every layer's weights: the analysis (the equivalent-error model, rays on the first
    layer) within 3 points of exhaustive FI (checked above against the oracle); the result
    records the int8 model."""
    _, _, engine, _ = setup
    analysis = DeepVigorAnalyzer(engine).analyze(target="weights")
    assert analysis.options["fault_model"] == "int8"
    fi = ExhaustiveCampaign(engine).run("weights")
    for got in analysis.layers:
        want = next(x for x in fi.layers if x.layer_num == got.layer_num)
        assert got.lvf == pytest.approx(want.lvf, abs=0.03), got.name


def test_float_models_on_int8_layers_are_refused(setup) -> None:  # type: ignore[no-untyped-def]
    from pytorchfi_deepvigor.hardening import harden

    model, _, engine, _ = setup
    result = DeepVigorAnalyzer(engine).analyze(target="both", layers=[4])
    with pytest.raises(ValueError, match="int8 network"):  # not planned on float words
        harden(result, budget=0.1, model=model)
    with pytest.raises(ValueError, match="int8"):
        ExhaustiveCampaign(engine).run("weights", layers=[0], fault_model="mbu2")
    with pytest.raises(ValueError, match="int8"):
        DeepVigorAnalyzer(engine).analyze(target="weights", layers=[0], fault_model="stuck-at")


def _snapshot(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    out = []
    for name, t in model.state_dict().items():
        if isinstance(t, torch.Tensor):
            out.append((name, t.int_repr().clone() if t.is_quantized else t.clone()))
        elif isinstance(t, tuple):  # packed params: (weight, bias)
            for k, part in enumerate(t):
                if isinstance(part, torch.Tensor):
                    value = part.int_repr() if part.is_quantized else part
                    out.append((f"{name}.{k}", value.clone()))
    return out


def test_the_users_int8_model_is_left_unchanged() -> None:
    model, images = quantized_net(seed=1)
    model.train()  # an unusual mode, kept
    before = _snapshot(model)
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    engine = SimulationEngine(model, images)
    DeepVigorAnalyzer(engine).analyze(target="both", layers=[0, 4])
    ExhaustiveCampaign(engine).run("weights", layers=[1], channels=[0])
    ExhaustiveCampaign(engine).run("stored", layers=[3], channels=[0])
    with pytest.raises(ValueError, match="int8"):
        DeepVigorAnalyzer(engine).analyze(target="weights", skip_zero_gradient=True)
    after = _snapshot(model)
    assert [n for n, _ in before] == [n for n, _ in after] and before
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(before, after, strict=True))
    assert model.training and all(m.training for m in model.modules())
    assert hooks == sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


class _Eager(nn.Module):
    """An eager-mode network: stubs around the quantized part, a fused Conv+ReLU."""

    def __init__(self) -> None:
        super().__init__()
        from torch.ao.quantization import DeQuantStub, QuantStub

        self.quant, self.dequant = QuantStub(), DeQuantStub()
        self.conv = nn.Conv2d(1, 4, 3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv(self.quant(x)))
        return self.dequant(self.fc(x.flatten(1)))


def test_eager_mode_network_fault_for_fault() -> None:
    import warnings

    torch.manual_seed(3)
    net = _Eager().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao import quantization as tq

        net.qconfig = tq.get_default_qconfig("fbgemm")
        tq.fuse_modules(net, [["conv", "relu"]], inplace=True)
        tq.prepare(net, inplace=True)
        with torch.no_grad():
            net(torch.randn(64, 1, 8, 8))
        tq.convert(net, inplace=True)
    images = torch.randn(12, 1, 8, 8)
    engine = SimulationEngine(net, images)
    assert [type(i.module) for i in engine.catalogue] == [QuantizedConv2d, QuantizedLinear]
    _weights_agree(engine, Int8Oracle(net, images), width=9, middle=False)


def test_boundary_bins_make_neuron_targets_exact(setup) -> None:  # type: ignore[no-untyped-def]
    """int8 errors are few and coarse: the search's bins alone read fc0/fc1's operand VFs
    0.212/2.786% against FI's 0.250/3.203% here; with each boundary bin's own errors searched
    the neuron targets equal exhaustive FI (no tied image in this batch)."""
    _, _, engine, _ = setup
    top = engine.golden_logits.topk(2, dim=1).values
    assert not bool((top[:, 0] == top[:, 1]).any())
    heads = [3, 4]  # fc0, fc1: every operand of every neuron is cheap to inject there
    analysis = DeepVigorAnalyzer(engine).analyze(target="activations", layers=heads)
    fi = ExhaustiveCampaign(engine).run("operands", layers=heads, neurons="all")
    stored = DeepVigorAnalyzer(engine).analyze(target="stored")
    fi_stored = ExhaustiveCampaign(engine).run("stored")
    for got_result, want_result in ((analysis, fi), (stored, fi_stored)):
        for got in got_result.layers:
            want = next(x for x in want_result.layers if x.layer_num == got.layer_num)
            assert got.lvf == pytest.approx(want.lvf, abs=1e-9), (got.name, got.target)
            assert got.bit_vf is not None and want.bit_vf is not None
            assert got.bit_vf == pytest.approx(want.bit_vf, abs=1e-9), (got.name, got.target)
    assert any(x.lvf > 0 for x in analysis.layers)


def test_a_tied_image_is_probed_fault_by_fault() -> None:
    """A quantized network's logits tie (argmax takes the first): on such an image a fault's
    effect is not monotone in its size, and its faults are probed one by one (operands, stored
    values, and weights with their own maps on the convolutions, ray-searched or not)."""
    model, images = quantized_net(seed=2)
    engine = SimulationEngine(model, images)
    top = engine.golden_logits.topk(2, dim=1).values
    tied = (top[:, 0] == top[:, 1]).nonzero().flatten()
    assert tied.numel() == 1
    one = SimulationEngine(model, images[tied])  # the tied image alone: exact
    heads = [3, 4]
    analysis = DeepVigorAnalyzer(one).analyze(target="activations", layers=heads)
    fi = ExhaustiveCampaign(one).run("operands", layers=heads, neurons="all")
    stored = DeepVigorAnalyzer(one).analyze(target="stored")
    fi_stored = ExhaustiveCampaign(one).run("stored")
    weights = DeepVigorAnalyzer(one).analyze(target="weights")  # rays, maps and Linear
    fi_weights = ExhaustiveCampaign(one).run("weights")
    pairs = ((analysis, fi), (stored, fi_stored), (weights, fi_weights))
    for got_result, want_result in pairs:
        for got in got_result.layers:
            want = next(x for x in want_result.layers if x.layer_num == got.layer_num)
            assert got.lvf == pytest.approx(want.lvf, abs=1e-9), (got.name, got.target)
    assert any(x.lvf > 0 for x in stored.layers)


def test_per_tensor_weights_fault_for_fault() -> None:
    """Weights quantized with one scale per tensor (torch.ao's default_qconfig)."""
    import warnings

    from torch.ao.quantization import QConfigMapping, default_qconfig
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.manual_seed(4)
    net = _Net().eval()
    images = torch.randn(12, 1, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mapping = QConfigMapping().set_global(default_qconfig)
        prepared = prepare_fx(net, mapping, example_inputs=(images,))
        with torch.no_grad():
            prepared(torch.randn(64, 1, 8, 8))
        model = convert_fx(prepared)
    assert model.conv1.weight().qscheme() == torch.per_tensor_affine
    engine = SimulationEngine(model, images)
    assert _weights_agree(engine, Int8Oracle(model, images))
