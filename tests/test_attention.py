"""Attention projections as layers (issue 25): ``nn.MultiheadAttention``'s packed
``in_proj_weight`` and ``out_proj``, torchvision Swin's ``qkv``/``proj`` applied by
``F.linear`` on windows folded into the batch.

The engine runs a view of the model with traceable twins (:mod:`pytorchfi_deepvigor.twins`).
Checked here: the view computes the model's logits; every weight is covered; weight faults
fault for fault against the ground-truth oracle, which writes them into the model's own tensor
and runs the model's own forward (the fused fast path of ``MultiheadAttention`` included, all
32 bits, so extreme values overflow where the model's kernel overflows); stored values and
operands against the oracle on the view; the analysis against exhaustive FI; the model left
as it was; the modules a twin does not model listed with the reason.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from oracle import Oracle
from test_ground_truth import _compare
from torch import nn

from pytorchfi_deepvigor import DeepVigorAnalyzer, ExhaustiveCampaign, SimulationEngine
from pytorchfi_deepvigor.campaigns.faults import FaultPopulation
from pytorchfi_deepvigor.coverage import weight_coverage
from pytorchfi_deepvigor.twins import MultiheadSelfAttention, WindowAttention, refusals

torchvision = pytest.importorskip("torchvision")
from torchvision.models import VisionTransformer  # noqa: E402
from torchvision.models.swin_transformer import (  # noqa: E402
    PatchMergingV2,
    SwinTransformer,
    SwinTransformerBlockV2,
)


class SequenceFirst(nn.Module):
    """``MultiheadAttention`` with ``batch_first=False``, an odd number of heads and its
    averaged weights used: the module's slow path, (T, N, E) inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 12, 4, stride=4)
        self.attn = nn.MultiheadAttention(12, 3)
        self.head = nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)  # (N, T, E)
        s = t.transpose(0, 1)  # (T, N, E), as the module expects
        y, w = self.attn(s, s, s)
        return (
            self.head(y.transpose(0, 1).mean(dim=1) + t.mean(dim=1)) + w.mean(dim=(1, 2))[:, None]
        )


def _vit() -> nn.Module:
    return VisionTransformer(
        image_size=16,
        patch_size=4,
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
        num_classes=10,
    )


def _swin(v2: bool = False) -> nn.Module:
    extra = {"block": SwinTransformerBlockV2, "downsample_layer": PatchMergingV2} if v2 else {}
    # 12x12 images: a 6x6 map, padded to 8x8 for the 4x4 windows, shifted in the second block
    return SwinTransformer(
        patch_size=[2, 2],
        embed_dim=16,
        depths=[2],
        num_heads=[2],
        window_size=[4, 4],
        num_classes=10,
        **extra,
    )


MODELS = {
    "vit": (_vit, 16, MultiheadSelfAttention),
    "sequence-first": (SequenceFirst, 16, MultiheadSelfAttention),
    "swin": (_swin, 12, WindowAttention),
    "swin-v2": (lambda: _swin(v2=True), 12, WindowAttention),
}
PROJECTIONS = ("in_proj", "out_proj", "attn.qkv", "attn.proj")


@pytest.fixture(scope="module", params=sorted(MODELS))
def setup(request: pytest.FixtureRequest) -> tuple[str, nn.Module, Oracle, SimulationEngine]:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    make, size, _ = MODELS[request.param]
    model = make().eval()
    images = torch.randn(12, 3, size, size, generator=torch.Generator().manual_seed(1))
    engine = SimulationEngine(model, images)
    return request.param, model, Oracle(model, images, view=engine.model), engine


def _projections(engine: SimulationEngine) -> list[int]:
    return [i.layer_num for i in engine.catalogue if i.name.endswith(PROJECTIONS)]


def test_the_view_computes_the_models_logits_and_shares_its_weights(setup) -> None:
    name, model, oracle, engine = setup
    twins = [m for m in engine.model.modules() if isinstance(m, MODELS[name][2])]
    assert twins and engine.model is not model
    with torch.no_grad():
        torch.testing.assert_close(engine.model(oracle.images), oracle.golden, rtol=1e-5, atol=1e-6)
    own = {id(p) for p in model.parameters()} | {id(b) for b in model.buffers()}
    assert {id(p) for p in engine.model.parameters()} <= own  # nothing copied (V2's bias aside)
    assert not any(
        isinstance(m, (MultiheadSelfAttention, WindowAttention)) for m in model.modules()
    )


def test_every_projection_is_a_per_image_layer_and_covered(setup) -> None:
    name, model, _, engine = setup
    nums = _projections(engine)
    assert len(nums) == 2 * len(
        [m for m in engine.model.modules() if isinstance(m, MODELS[name][2])]
    )
    for num in nums:
        info = engine.layer(num)
        assert info.kind == "Linear" and info.channel_last and not info.weight_transform
    coverage = weight_coverage(engine.model, engine.catalogue)
    if name == "swin-v2":  # its cpb_mlp reads a table shared by every image: listed, as before
        assert all("cpb_mlp" in m or "relative_coords_table" in m for m in coverage.missing)
    else:
        assert coverage.complete, coverage.missing


def test_weight_faults_fault_for_fault_in_the_models_own_kernel(setup) -> None:
    """Every bit of one filter of each projection (for ``in_proj``: a q, a k and a v row),
    written into the model's own tensor, judged by the model's own forward."""
    _, _, oracle, engine = setup
    for num in _projections(engine):
        info = engine.layer(num)
        e = info.out_channels // 3
        rows = [1, e + 1, 2 * e + 1] if info.name.endswith(("in_proj", "qkv")) else [1]
        sites = np.concatenate([r * info.fan_in + np.arange(min(info.fan_in, 6)) for r in rows])
        for model in ("flip", "stuck-at"):
            _compare(oracle, engine, FaultPopulation(info, "weights", model, sites))


def test_stored_and_operand_faults_fault_for_fault(setup) -> None:
    _, _, oracle, engine = setup
    rng = np.random.default_rng(0)
    for num in _projections(engine):
        info = engine.layer(num)
        neurons = rng.choice(info.neurons_per_image, 6, replace=False)
        _compare(oracle, engine, FaultPopulation(info, "stored", "flip", neurons))
        operands = np.stack([neurons, rng.integers(0, info.fan_in, 6)], axis=1)
        _compare(oracle, engine, FaultPopulation(info, "operands", "flip", operands))


# Measured, not bounded: the q/k weights of these models, where the analysis' weight model (a
# fault's token pattern judged as one constant over the tokens) is known to be wrong: a constant
# added to every key changes no softmax (its shift invariance), while a fault's pattern does.
UNBOUNDED = {
    "sequence-first": "its averaged attention weights are added to the logits: q/k weight "
    "faults read near 0 where FI gives about 1% (validation/results/attention.csv)",
    "swin-v2": "cosine attention normalises q and k: k weight faults read up to 0.26 too "
    "high on these 12 images, 0.16 on 32 (validation/results/attention.csv)",
}
# measured on these models (12 images, 20% of the channels): weights MAE <= 0.0001 and
# operands <= 0.005; the bounds leave a margin and would catch a broken fault model
BOUNDS = {"weights": 0.002, "activations": 0.01}


@pytest.mark.parametrize("target", sorted(BOUNDS))
def test_the_analysis_against_exhaustive_fi(setup, target: str) -> None:
    name, _, _, engine = setup
    if name in UNBOUNDED and target == "weights":
        pytest.skip(UNBOUNDED[name])
    for num in _projections(engine):
        analysis = DeepVigorAnalyzer(engine).analyze(target=target, layers=[num], sampling=0.2)
        channels = list(analysis.layers[0].channels)
        exhaustive = ExhaustiveCampaign(engine).run(target, layers=[num], channels=channels)
        error = np.abs(np.subtract(analysis.layers[0].cvf, exhaustive.layers[0].cvf))
        assert error.mean() <= BOUNDS[target], (engine.layer(num).name, error)


def test_the_model_is_left_as_it_was(setup) -> None:
    _, model, _, engine = setup
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    DeepVigorAnalyzer(engine).analyze(target="both", layers=_projections(engine)[:2], sampling=0.1)
    ExhaustiveCampaign(engine).run("weights", layers=_projections(engine)[:1], channels=[0])
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    assert not model.training and not any(m._forward_hooks for m in model.modules())


class CrossAttention(nn.Module):
    """Queries from one map, keys and values from another: not modelled, listed."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 4, stride=4)
        self.b = nn.Conv2d(3, 8, 4, stride=4)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, kv = self.a(x).flatten(2).transpose(1, 2), F.relu(self.b(x)).flatten(2).transpose(1, 2)
        return self.head(self.attn(q, kv, kv, need_weights=False)[0].mean(dim=1))


def test_a_module_the_twin_does_not_model_is_listed_with_the_reason() -> None:
    torch.manual_seed(0)
    model = CrossAttention().eval()
    engine = SimulationEngine(model, torch.randn(4, 3, 16, 16))
    assert engine.model is model and [i.name for i in engine.catalogue] == ["a", "b", "head"]
    assert refusals(model) == {
        "attn": "cross-attention (query, key and value are not the same tensor)"
    }
    result = DeepVigorAnalyzer(engine).analyze(target="weights", sampling=0.5)
    assert any(
        u.startswith("attn (MultiheadAttention:") and "cross-attention" in u
        for u in result.unsupported
    )
    assert result.coverage is not None and not result.coverage.complete
