"""The registry: every zoo model builds, runs on digits, traces with torch.fx, has BatchNorm
(CNNs) or LayerNorm (transformers)."""

from __future__ import annotations

import pytest
import torch
from torch import fx, nn

from pytorchfi_deepvigor.zoo import (
    DEFAULT_WIDTHS,
    VALIDATION_WIDTHS,
    analysis_batch,
    build_model,
    count_parameters,
    list_models,
)

CNNS = ["vgg11", "vgg16", "resnet18", "resnet34", "mobilenetv2"]
TRANSFORMERS = ["vit", "convnext"]
ZOO = CNNS + TRANSFORMERS
TINY = {name: 1 / 16 for name in ZOO}


def test_list_models_names_the_zoo_and_optionally_torchvision() -> None:
    assert list_models() == sorted(ZOO)
    with_tv = list_models(include_torchvision=True)
    assert with_tv[: len(ZOO)] == sorted(ZOO)
    assert "torchvision:resnet18" in with_tv and "torchvision:mobilenet_v2" in with_tv


def test_default_widths_cover_the_zoo() -> None:
    assert sorted(DEFAULT_WIDTHS) == sorted(ZOO)
    assert all(0 < width <= 1 for width in DEFAULT_WIDTHS.values())
    assert VALIDATION_WIDTHS is DEFAULT_WIDTHS  # the former name still works


@pytest.mark.parametrize("name", ZOO)
def test_builds_runs_on_digits_and_traces(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, width=TINY[name], in_channels=1).eval()
    images = analysis_batch(4).images
    with torch.no_grad():
        logits = model(images)
        traced = fx.symbolic_trace(model)
        assert torch.equal(traced(images), logits)
    assert logits.shape == (4, 10)
    norm = nn.BatchNorm2d if name in CNNS else nn.LayerNorm
    assert any(isinstance(m, norm) for m in model.modules())


@pytest.mark.parametrize("name", ZOO)
def test_no_module_is_used_twice(name: str) -> None:
    """A forward hook on any module fires exactly once per forward."""
    model = build_model(name, width=TINY[name], in_channels=1).eval()
    calls: dict[str, int] = {}
    handles = [
        module.register_forward_hook(
            lambda *_, key=key: calls.__setitem__(key, calls.get(key, 0) + 1)
        )
        for key, module in model.named_modules()
        if key and not list(module.children())
    ]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 1, 32, 32))
    finally:
        for handle in handles:
            handle.remove()
    assert set(calls.values()) == {1}


def test_vgg11_eighth_width_has_8_to_64_channels_and_conventional_names() -> None:
    model = build_model("vgg11", width=1 / 8, in_channels=1)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16, 32, 32, 64, 64, 64, 64]
    names = dict(model.named_modules())
    assert isinstance(names["features.0"], nn.Conv2d) and isinstance(names["classifier"], nn.Linear)


def test_resnet_has_projection_shortcuts_and_torchvision_names() -> None:
    model = build_model("resnet18", width=1 / 8)
    names = dict(model.named_modules())
    assert isinstance(names["layer2.0.downsample.0"], nn.Conv2d)
    assert isinstance(names["layer1.0.downsample"], nn.Identity)
    assert isinstance(names["fc"], nn.Linear) and names["conv1"].in_channels == 3


def test_mobilenetv2_has_depthwise_convolutions_and_residuals() -> None:
    model = build_model("mobilenetv2", width=1 / 4, in_channels=1)
    depthwise = [
        m
        for m in model.modules()
        if isinstance(m, nn.Conv2d) and m.groups == m.in_channels == m.out_channels > 1
    ]
    assert len(depthwise) == 17
    assert sum(getattr(m, "use_residual", False) for m in model.modules()) == 10


def test_width_in_channels_num_classes_and_input_size_16() -> None:
    narrow = build_model("resnet18", width=1 / 16, in_channels=3, num_classes=7, input_size=16)
    assert narrow(torch.zeros(2, 3, 16, 16)).shape == (2, 7)
    wide = build_model("resnet18", width=1 / 8)
    assert count_parameters(wide) > 3 * count_parameters(narrow)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": "vgg13"}, ValueError, "unknown model 'vgg13'"),
        ({"name": 11}, TypeError, "expected name to be a str"),
        ({"name": "vgg11", "width": 0}, ValueError, "expected width > 0"),
        ({"name": "vgg11", "in_channels": 1.0}, TypeError, "expected in_channels to be an int"),
        ({"name": "vgg11", "num_classes": 0}, ValueError, "expected num_classes >= 1"),
        ({"name": "vgg11", "input_size": 16}, ValueError, "multiple of 32, got 16"),
        ({"name": "resnet18", "input_size": 20}, ValueError, "multiple of 8, got 20"),
        ({"name": "torchvision:nope"}, ValueError, "unknown torchvision model 'nope'"),
        ({"name": "torchvision:resnet18", "width": 0.5}, ValueError, "no width multiplier"),
    ],
    ids=["unknown", "name-type", "width", "channels-type", "classes", "vgg-size", "resnet-size",
         "tv-unknown", "tv-width"],
)  # fmt: skip
def test_build_model_rejects_bad_arguments(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        build_model(**kwargs)


def test_torchvision_model_by_name_with_new_stem_and_classes() -> None:
    model = build_model("torchvision:resnet18", in_channels=1, num_classes=10).eval()
    assert model.conv1.in_channels == 1 and model.conv1.out_channels == 64
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 10)


def test_transformers_have_token_and_channels_last_linears_the_catalogue_accepts() -> None:
    from pytorchfi_deepvigor.catalogue import build_catalogue, unsupported_layers

    x = torch.zeros(1, 1, 32, 32)
    vit = build_model("vit", width=1 / 4, in_channels=1).eval()
    cat = {i.name: i for i in build_catalogue(vit, x)}
    assert cat["blocks.0.attn.qkv"].output_shape == (3 * 48, 65)  # 64 patches + class token
    assert cat["blocks.3.fc2"].module_output_shape == (65, 48) and len(cat) == 1 + 4 * 4 + 1
    convnext = build_model("convnext", width=1 / 8, in_channels=1).eval()
    cat = {i.name: i for i in build_catalogue(convnext, x)}
    assert cat["stages.0.0.pwconv1"].output_shape == (48, 16, 16)
    assert cat["stages.0.0.dwconv"].groups == 12
    assert unsupported_layers(vit) == [] and unsupported_layers(convnext) == []
