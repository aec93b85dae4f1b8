"""Fault injection against the ground-truth oracle, fault for fault (issue 21).

Every fault of the chosen sites (all 32 bits, flips and stuck-at) is evaluated twice: by the
package (:class:`FaultEvaluator`, the one per-fault evaluation every campaign uses, on the
default engine: fx suffixes, channels-last on the CPU, early exits) and by :mod:`oracle` (the
fault written into the user's model, its own forward). The critical images of each fault must
be the same; the campaigns' counts must be the oracle's totals. The analysis' probes (an error
added to a neuron, or to a channel) are checked the same way over extreme errors.

Models (:mod:`oracle_models`): GroupNorm/BatchNorm/InstanceNorm/LayerNorm, SiLU/GELU/ReLU6/
LeakyReLU/PReLU/Hardswish, max/avg/adaptive pooling, residual adds, depthwise and dilated
convolutions, channels-last Linears, attention, a weight-standardising convolution and a dead
head. On the main of 2026-12-06 the GroupNorm cases, the StdConv2d weights and the dead head
fail (see the regression tests at the end).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from oracle import Fault, Oracle
from oracle_models import ORACLE_MODELS, oracle_images

from pytorchfi_deepvigor import ExhaustiveCampaign, SimulationEngine
from pytorchfi_deepvigor.campaigns.faults import (
    FaultEvaluator,
    FaultPopulation,
    check_geometry,
    operand_sites,
)
from pytorchfi_deepvigor.engine import Outcome
from pytorchfi_deepvigor.perturbations import ChannelAdd, NeuronAdd

EXTREMES = [
    s * v
    for v in (1.0, 2.0**10, 2.0**32, 2.0**64, 2.0**76, 2.0**80, 2.0**100, 2.0**127, 3.4e38)
    for s in (1.0, -1.0)
] + [math.inf, -math.inf, math.nan]


VARIANTS = {
    # the user's model and images in channels-last memory: its own forward runs that way
    "norms-channels-last": ("norms", {"channels_last_model": True}),
    # the hook path: every suffix is the model's own forward with the layer's output replaced
    "norms-hooks": ("norms", {"use_fx": False}),
}


@pytest.fixture(scope="module", params=sorted(ORACLE_MODELS) + sorted(VARIANTS))
def setup(request: pytest.FixtureRequest) -> tuple[str, Oracle, SimulationEngine]:
    torch.set_num_threads(1)
    name, options = VARIANTS.get(request.param, (request.param, {}))
    model = ORACLE_MODELS[name]()
    images = oracle_images()
    if options.pop("channels_last_model", False):
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    engine = SimulationEngine(model, images, **options)
    return request.param, Oracle(model, images, view=engine.model), engine


def _package(engine: SimulationEngine, pop: FaultPopulation) -> np.ndarray:
    """Critical ``[F, I]`` of every fault of ``pop`` by the package's per-fault evaluation."""
    evaluator = FaultEvaluator(engine)
    out = []
    for ids in np.array_split(np.arange(pop.size), max(1, pop.size // 64)):
        image_idx, perturbation = evaluator.perturbation(pop, ids)
        codes = engine.outcomes(pop.layer.layer_num, image_idx, perturbation)
        out.append((codes >= int(Outcome.CRITICAL)).view(len(ids), -1).cpu().numpy())
    return np.concatenate(out)


def _oracle(oracle: Oracle, pop: FaultPopulation) -> np.ndarray:
    site, bit, value = pop.decode(np.arange(pop.size))
    rows = []
    for s, b, v in zip(site, bit, value, strict=True):
        where = pop.sites[s]
        fault = Fault(
            pop.target,
            pop.layer.name,
            tuple(int(a) for a in where) if where.ndim else int(where),
            int(b),
            int(v),
        )
        rows.append(oracle.critical(fault).cpu().numpy())
    return np.stack(rows)


def _compare(oracle: Oracle, engine: SimulationEngine, pop: FaultPopulation) -> np.ndarray:
    got, want = _package(engine, pop), _oracle(oracle, pop)
    differ = np.flatnonzero((got != want).any(axis=1))
    if differ.size:
        s, b, v = pop.decode(differ[:5])
        lines = [
            f"site {pop.sites[i].tolist()} bit {j} value {k}: package {got[f].astype(int).tolist()}"
            f" oracle {want[f].astype(int).tolist()}"
            for f, i, j, k in zip(differ[:5], s, b, v, strict=True)
        ]
        pytest.fail(
            f"{pop.layer.name} {pop.target}: {differ.size} of {pop.size} faults differ:\n"
            + "\n".join(lines)
        )
    return want


def _layers(engine: SimulationEngine) -> list[int]:
    """The first three layers and the last (the head)."""
    nums = [i.layer_num for i in engine.catalogue]
    return list(dict.fromkeys(nums[:3] + nums[-1:]))


def test_weights_fault_for_fault(setup: tuple[str, Oracle, SimulationEngine]) -> None:
    _, oracle, engine = setup
    for num in _layers(engine):
        info = engine.layer(num)
        k = info.out_channels // 2
        for model in ("flip", "stuck-at"):
            sites = k * info.fan_in + np.arange(min(info.fan_in, 12))
            sites = np.unique(np.concatenate([[0, 1], sites]))  # weights 0, 1: +-1.0, 1.5
            want = _compare(oracle, engine, FaultPopulation(info, "weights", model, sites))
            if model == "flip":
                every = k * info.fan_in + np.arange(info.fan_in)
                full = _oracle(oracle, FaultPopulation(info, "weights", "flip", every))
                result = ExhaustiveCampaign(engine).run("weights", layers=[num], channels=[k])
                assert result.layers[0].cvf[0] == pytest.approx(full.mean(), abs=0)
                assert want.any() or info.dead


def _known_geometry(engine: SimulationEngine, num: int) -> bool:
    try:
        check_geometry(engine.layer(num))
    except ValueError:
        return False
    return True


def test_operands_fault_for_fault(setup: tuple[str, Oracle, SimulationEngine]) -> None:
    _, oracle, engine = setup
    for num in _layers(engine):
        if not _known_geometry(engine, num):  # pads inside forward: refused, see below
            continue
        info = engine.layer(num)
        per = info.neurons_per_channel
        c = info.out_channels - 1
        # a border neuron (padding excluded) and an interior one
        neurons = np.array([c * per, c * per + per // 2 + (int(math.isqrt(per)) // 2)])
        sites = operand_sites(info, neurons)
        if len(sites) > 40:
            sites = sites[np.random.default_rng(num).choice(len(sites), 40, replace=False)]
        _compare(oracle, engine, FaultPopulation(info, "operands", "flip", sites))
    info = engine.layer(next(n for n in _layers(engine) if _known_geometry(engine, n)))
    _compare(
        oracle, engine, FaultPopulation(info, "operands", "stuck-at", operand_sites(info, [0]))
    )


def test_stored_fault_for_fault(setup: tuple[str, Oracle, SimulationEngine]) -> None:
    _, oracle, engine = setup
    for num in _layers(engine):
        info = engine.layer(num)
        sites = np.arange(min(info.neurons_per_channel, 16))  # the start of channel 0
        for model in ("flip", "stuck-at"):
            want = _compare(oracle, engine, FaultPopulation(info, "stored", model, sites))
        every = np.arange(info.neurons_per_channel)
        full = _oracle(oracle, FaultPopulation(info, "stored", "flip", every))
        result = ExhaustiveCampaign(engine).run("stored", layers=[num], channels=[0])
        assert result.layers[0].cvf[0] == pytest.approx(full.mean(), abs=0)
        assert want.shape[1] == engine.num_images


def test_probes_agree_with_oracle(setup: tuple[str, Oracle, SimulationEngine]) -> None:
    """The analysis' probes: an error at one neuron, a constant or a map over one channel."""
    _, oracle, engine = setup
    n = engine.num_images
    idx = torch.arange(n)
    maps = torch.randn(n, 1, generator=torch.Generator().manual_seed(0))
    for num in _layers(engine):
        info = engine.layer(num)
        per = info.neurons_per_channel
        c, p = info.out_channels // 3, per // 2
        width = info.output_shape[2] if len(info.output_shape) == 3 else 1
        row, col = divmod(p, width)
        for e in EXTREMES:
            full = torch.full((n,), e)
            z = torch.zeros(n, dtype=torch.long)
            got = engine.critical(num, idx, NeuronAdd(z + c, z + row, z + col, full))
            want = oracle.neuron_add(info.name, c, p, e)
            assert got.tolist() == want.tolist(), f"{info.name} neuron {c},{p} error {e}"
            got = engine.critical(num, idx, ChannelAdd(z + c, full))
            want = oracle.channel_add(info.name, c, e)
            assert got.tolist() == want.tolist(), f"{info.name} channel {c} error {e}"
            if per > 1 and math.isfinite(e):
                pattern = (maps * torch.linspace(-1, 1, per)[None, :] * e).float()
                shaped = pattern.reshape(n, *info.output_shape[1:])
                got = engine.critical(num, idx, ChannelAdd(z + c, shaped))
                want = oracle.channel_add(info.name, c, pattern)
                assert got.tolist() == want.tolist(), f"{info.name} channel map {c} x {e}"


# ------------------------------------------------------------------------------ regressions
def test_groupnorm_operand_regression() -> None:
    """Issue 21's case: an operand error of -2^80 before a GroupNorm. Channels-last GroupNorm
    gave NaN for the whole group: every image critical through the engine (50 of 50 here),
    while the model itself computes finite values (16 of 50 critical)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.GroupNorm(2, 8),
        torch.nn.SiLU(),
        torch.nn.Conv2d(8, 8, 3, padding=2, dilation=2),
        torch.nn.GELU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 4 * 4, 10),
    ).eval()
    images = torch.randn(50, 1, 8, 8)
    engine, oracle = SimulationEngine(net, images), Oracle(net, images)
    z = torch.zeros(50, dtype=torch.long)
    got = engine.critical(0, torch.arange(50), NeuronAdd(z + 3, z + 4, z + 4, z - 2.0**80))
    want = oracle.neuron_add("0", 3, 4 * 8 + 4, -(2.0**80))
    assert got.tolist() == want.tolist()
    assert 0 < int(want.sum()) < 50  # the model's own GroupNorm is finite here
    assert engine.layout_bound  # the GroupNorm reads the model's own layout
    # every operand of that neuron, every bit: identical counts
    info = engine.layer(0)
    pop = FaultPopulation(info, "operands", "flip", operand_sites(info, [3 * 64 + 4 * 8 + 4]))
    result = ExhaustiveCampaign(engine).run("operands", layers=[0], neurons={0: [[3, 4, 4]]})
    want_all = _oracle(oracle, pop)
    assert result.layers[0].counts is not None
    assert result.layers[0].counts.critical + result.layers[0].counts.due == int(want_all.sum())


def test_dead_head_is_masked_not_a_crash() -> None:
    model = ORACLE_MODELS["two_heads"]()
    images = oracle_images()
    engine = SimulationEngine(model, images)
    box = next(i for i in engine.catalogue if i.name == "net.box")
    assert box.dead.startswith("dead:")
    assert not any(i.dead for i in engine.catalogue if i.name != "net.box")
    from pytorchfi_deepvigor import DeepVigorAnalyzer

    analysis = DeepVigorAnalyzer(engine).analyze(target="both", layers=[box.layer_num])
    assert [x.lvf for x in analysis.layers] == [0.0, 0.0]
    for target in ("weights", "operands", "stored"):
        fi = ExhaustiveCampaign(engine).run(target, layers=[box.layer_num], channel_ratio=0.5)
        assert fi.layers[0].lvf == 0.0


def test_weight_transform_is_detected() -> None:
    engine = SimulationEngine(ORACLE_MODELS["stdconv"](), oracle_images())
    kinds = {i.name: bool(i.weight_transform) for i in engine.catalogue}
    assert kinds == {"conv0": False, "std": True, "head": False}
    from pytorchfi_deepvigor import DeepVigorAnalyzer

    result = DeepVigorAnalyzer(engine).analyze(target="weights")
    assert {x.name for x in result.layers} == {"conv0", "head"}
    assert any(u.startswith("std (StdConv2d:") for u in result.unsupported)


def test_optional_arguments_and_padding_inside_forward() -> None:
    """timm-shaped: the forward's optional ``attn_mask=None`` reaches attention (the engine
    cloned it: ``'NoneType' object has no attribute 'clone'``), and a convolution pads inside
    its forward (it used to run on the hook path with its operands refused; its twin records
    the padding, the fx plan cuts at it, and the operands are checked by the parametrised
    tests above)."""
    engine = SimulationEngine(ORACLE_MODELS["optional_args"](), oracle_images())
    conv = engine.layer(0)
    assert not conv.weight_transform and engine.uses_fx
    engine.prepare()
    assert not engine.hook_layers
    assert len(operand_sites(conv, np.arange(4))) > 0


def test_a_weight_recomputed_by_a_hook_is_refused_not_reported_masked() -> None:
    """``torch.nn.utils.weight_norm`` recomputes ``weight`` from ``weight_g``/``weight_v``
    before each forward: a fault written into ``weight`` changes nothing (the oracle: 0
    critical), and the faults that matter are in parameters the package does not inject."""
    import warnings

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # weight_norm is deprecated in favour of parametrize
        conv = torch.nn.utils.weight_norm(torch.nn.Conv2d(1, 4, 3, padding=1))
    model = torch.nn.Sequential(
        conv, torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 100, 10)
    ).eval()
    engine = SimulationEngine(model, oracle_images())
    assert engine.layer(0).weight_derived and not engine.layer(1).weight_transform
    with pytest.raises(ValueError, match="recomputed before each forward"):
        ExhaustiveCampaign(engine).run("weights", layers=[0], channels=[0])
    from pytorchfi_deepvigor import DeepVigorAnalyzer

    result = DeepVigorAnalyzer(engine).analyze(target="weights")
    assert [x.name for x in result.layers] == ["3"]
    assert any("recomputed before each forward" in u for u in result.unsupported)
