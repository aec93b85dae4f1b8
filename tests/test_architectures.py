"""The coverage matrix's checks on a representative subset of torchvision's architectures, built
from torchvision's own classes at tiny widths: a residual CNN (ResNet), a depthwise CNN
(MobileNetV3), ConvNeXt (channels-last Linears, layer scale), Swin (windowed attention, Linears on
(N, H, W, C)) and ViT (MultiheadAttention, Linears on (N, T, D)). Each: the catalogue, a sampled
analysis of a few layers, and fault injection whose every outcome equals in-place injection plus
a full forward (``validation/coverage.py`` runs the same on every full-size classifier)."""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torchvision.models import convnext, resnet, swin_transformer, vision_transformer

from pytorchfi_deepvigor.analysis import DeepVigorAnalyzer
from pytorchfi_deepvigor.catalogue import unsupported_layers
from pytorchfi_deepvigor.engine import SimulationEngine

SCRIPT = Path(__file__).resolve().parents[1] / "validation" / "coverage.py"


@pytest.fixture(scope="module")
def coverage():
    spec = importlib.util.spec_from_file_location("coverage_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["coverage_script"] = module
    spec.loader.exec_module(module)
    return module


def _resnet():
    return resnet.ResNet(resnet.BasicBlock, [1, 1, 1, 1], num_classes=10)


def _mobilenet():
    return torchvision.models.mobilenet_v3_small(num_classes=10, width_mult=0.25)


def _convnext():
    stages = [convnext.CNBlockConfig(16, 32, 1), convnext.CNBlockConfig(32, None, 1)]
    return convnext.ConvNeXt(stages, num_classes=10)


def _swin():
    return swin_transformer.SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=[2, 2],
        num_classes=10,
    )  # fmt: skip


def _swin_v2():
    return swin_transformer.SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=[2, 2],
        num_classes=10, block=swin_transformer.SwinTransformerBlockV2,
        downsample_layer=swin_transformer.PatchMergingV2,
    )  # fmt: skip


def _vit():
    return vision_transformer.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
        num_classes=10,
    )  # fmt: skip


MODELS = {
    "resnet": _resnet,
    "mobilenet_v3": _mobilenet,
    "convnext": _convnext,
    "swin": _swin,
    "swin_v2": _swin_v2,
    "vit": _vit,
}
# what each must show: (Linears on N-D inputs, unsupported entries)
EXPECTED = {
    "resnet": (0, 0),
    "mobilenet_v3": (0, 0),
    "convnext": (4, 0),  # two blocks x two pointwise Linears on (N, H, W, C)
    # swin: MLP and patch-merging Linears, and the attention's qkv / proj (twins.py: run per
    # image on the padded map); nothing unsupported
    "swin": (9, 0),
    # swin_v2: the same, and per block two cpb_mlp Linears on a shared batch-1 buffer, and that
    # buffer (relative_coords_table, the position table they read): listed
    "swin_v2": (9, 6),
    "vit": (8, 0),  # MLP Linears and MultiheadAttention's in_proj / out_proj on (N, T, D)
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_analysed_and_injected_like_a_full_forward(name, coverage):
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = SimulationEngine(model, images)
    assert engine.uses_fx and not engine.hook_layers
    cat = engine.catalogue
    unsupported = unsupported_layers(engine.model)  # the engine's view: attention twins
    assert (sum(i.channel_last for i in cat), len(unsupported)) == EXPECTED[name], unsupported
    layers = coverage._choose_layers(cat)
    result = DeepVigorAnalyzer(engine).analyze(target="both", layers=layers[:2], sampling=0.05)
    assert all(0.0 <= x.lvf <= 1.0 for x in result.layers)
    faults, mismatches, rounding, notes = coverage._fi(
        engine, model, layers, seed=0, bits=(22, 26, 29, 30, 31), n_sites=1
    )
    per_target = 5 + 2 * len(coverage.EXTREME_BITS)  # the sites' flips, the extreme stuck-ats
    assert faults == len(layers) * 3 * per_target and mismatches == 0, notes
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_layers_whose_input_does_not_depend_on_the_images_are_listed_not_catalogued():
    """SwinV2's continuous position bias MLP runs on a batch-1 table shared by every image: a
    fault there changes all images at once. It is listed with that reason, never catalogued
    (fault injection on it used to raise an unrelated shape error)."""
    model = _swin_v2().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = SimulationEngine(model, torch.randn(3, 3, 32, 32))
    names = [i.name for i in engine.catalogue]
    assert names and not any("cpb_mlp" in n for n in names)
    listed = [u for u in unsupported_layers(engine.model) if "cpb_mlp" in u]
    assert len(listed) == 4 and all("does not depend on the images" in u for u in listed)


def test_the_comparison_sees_a_wrong_outcome(coverage):
    """The fault-for-fault check can fail: against a reference one bit off, outcomes differ."""
    torch.manual_seed(0)
    model = _resnet().eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    engine = SimulationEngine(model, images)

    def one_bit_off(oracle, pop, fault):
        shifted = int(fault) + pop.multiplicity * pop.n_sites  # the next bit of the same site
        return coverage.reference_logits(oracle, pop, shifted % pop.size)

    _, mismatches, _, notes = coverage._fi(
        engine, model, [0], seed=0, bits=(26, 29, 30), n_sites=1, reference=one_bit_off
    )
    assert mismatches > 0 and notes


def test_the_script_writes_the_matrix(coverage, tmp_path):
    rows = [
        {"model": "a", "status": "works", "parameters": 1000, "catalogued": 3, "nd_linears": 1,
         "unsupported": 0, "faults": 10, "mismatches": 0, "rounding": 0, "seconds": 1.0},
        {"model": "b", "status": "not run here", "parameters": 9e8, "why": "too big"},
    ]  # fmt: skip
    coverage.write(rows, tmp_path)
    text = (tmp_path / "coverage.md").read_text()
    assert "| a | works |" in text and "| b | not run here |" in text and "too big" in text
    assert "Totals: 1 not run here, 1 works" in text
    assert len((tmp_path / "coverage.csv").read_text().splitlines()) == 3
    assert np.isfinite(coverage.MAX_PARAMS)


def test_the_matrix_keeps_its_run_notes_and_order(coverage, tmp_path):
    """Rewritten after each model (rows in any order), the matrix stays sorted by model and keeps
    the "Run of ..." paragraphs saying when and at which commit its rows were run."""
    rows = [{"model": m, "status": "works", "seconds": 1.0} for m in ("vgg11", "alexnet")]
    coverage.write(rows, tmp_path, ["Run of day 1 at commit abc."])
    resumed = {"model": "b", "status": "refused", "why": "x", "catalogued": "", "faults": ""}
    coverage.write([*rows, resumed], tmp_path)  # "" fields: a row read back by --resume
    text = (tmp_path / "coverage.md").read_text()
    assert "| b | refused |  |  |  |  |  |  | x |" in text
    assert "\n\nRun of day 1 at commit abc.\n\nTotals: 1 refused, 2 works\n" in text
    assert text.index("| alexnet |") < text.index("| b |") < text.index("| vgg11 |")
    csv_models = [line.split(",")[0] for line in (tmp_path / "coverage.csv").read_text().split()]
    assert csv_models == ["model", "alexnet", "b", "vgg11"]
