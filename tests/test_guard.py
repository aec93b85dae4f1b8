"""Checks before the work: one validation per argument everywhere, models the package cannot run."""

from __future__ import annotations

import functools
import time

import pytest
import torch
from guarantees import assert_model_unchanged
from torch import nn

from pytorchfi_deepvigor.analysis import DeepVigorAnalyzer
from pytorchfi_deepvigor.campaigns import ExhaustiveCampaign, StatisticalCampaign
from pytorchfi_deepvigor.engine import SimulationEngine


class Net(nn.Module):
    """A tiny CNN whose forward returns what ``kind`` names, counting its forwards."""

    def __init__(self, kind: str = "logits") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.kind, self.calls = kind, 0
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> object:
        self.calls += 1
        h = self.conv(x)
        logits = self.fc(h.flatten(1))
        return {
            "logits": logits,
            "tuple": (logits, h),
            "dict": {"out": logits, "aux": h},
            "vector": logits[:, 0],
            "segmentation": h,
            "one-logit": logits[:, :1],
            "labels": logits.argmax(dim=1),
        }[self.kind]


def images(n: int = 3, channels: int = 1) -> torch.Tensor:
    return torch.randn(n, channels, 4, 4, generator=torch.Generator().manual_seed(0))


# ----------------------------------------------------------------------------- item 7
def _analyze(layers):
    return DeepVigorAnalyzer(Net(), images()).analyze(target="weights", layers=layers)


def _exhaustive(layers):
    return ExhaustiveCampaign(SimulationEngine(Net(), images())).run("weights", layers=layers)


def _statistical(layers):
    return StatisticalCampaign(SimulationEngine(Net(), images())).run("layer", layers=layers)


ENTRY_POINTS = {"analyze": _analyze, "exhaustive": _exhaustive, "statistical": _statistical}


@pytest.mark.parametrize("run", ENTRY_POINTS.values(), ids=ENTRY_POINTS.keys())
@pytest.mark.parametrize(
    "layers, error, match",
    [
        ([0, 0], ValueError, r"expected distinct layer numbers, got \[0, 0\] \(repeated: \[0\]\)"),
        ([], ValueError, "expected at least one layer number in layers, got an empty sequence"),
        (1, TypeError, "expected layers as a list of layer numbers, e.g. \\[0, 2\\]"),
        ("0", TypeError, "expected layers as a list of layer numbers"),
        ([5], ValueError, "layer_num 5 out of range: the model has 2 injectable layers"),
        ([True], TypeError, "layer_num must be an int, got bool"),
    ],
    ids=["repeated", "empty", "int", "str", "range", "bool"],
)
def test_layers_get_one_check_everywhere(run, layers, error, match) -> None:
    with pytest.raises(error, match=match):
        run(layers)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_batch": True}, "expected max_batch >= 1, an int"),
        ({"max_batch": 0}, "expected max_batch >= 1"),
        ({"max_batch": 2.5}, "expected max_batch >= 1"),
        ({"memory_bytes": -5}, "expected memory_bytes >= 1, an int .*got -5"),
        ({"device": "meta"}, "the meta device holds no values.*device='cpu'"),
        ({"device": "gpu0"}, "expected a device like 'cpu', 'cuda' or 'cuda:1', got 'gpu0'"),
    ],
    ids=["max-batch-bool", "max-batch-0", "max-batch-float", "memory-negative", "meta", "bad-name"],
)
def test_engine_arguments_are_checked_before_any_work(kwargs, match) -> None:
    net = Net()
    started = time.perf_counter()
    with pytest.raises(ValueError, match=match):
        SimulationEngine(net, images(), **kwargs)
    assert net.calls == 0 and time.perf_counter() - started < 1.0
    if "memory_bytes" not in kwargs:  # the analyser passes the others on to its engine
        with pytest.raises(ValueError, match=match):
            DeepVigorAnalyzer(net, images(), **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_user_error() -> None:
    with pytest.raises(ValueError, match="device 'cuda' is not available here.*device='cpu'"):
        SimulationEngine(Net(), images(), device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_a_gpu_index_beyond_the_machine_is_named() -> None:
    with pytest.raises(ValueError, match="device 'cuda:99' does not exist: this machine has"):
        SimulationEngine(Net(), images(), device="cuda:99")


# ----------------------------------------------------------------------------- item 8
@pytest.mark.parametrize(
    "kind, match",
    [
        ("tuple", r"returns a tuple \(a tensor of shape \(2, 3\), a tensor of shape "
                  r"\(2, 4, 4, 4\)\), not one tensor of logits \(N, classes\).*model\(x\)\[0\]"),
        ("dict", r"returns a dict \('out': a tensor of shape \(2, 3\), 'aux': .*\['logits'\]"),
        ("vector", r"returns shape \(2,\) for 2 images; expected logits \(N, classes\)"),
        ("segmentation", r"returns shape \(2, 4, 4, 4\) for 2 images: per-pixel .* not "
                         r"supported.*mean\(dim=\(2, 3\)\)"),
        ("one-logit", r"one logit per image \(shape \(2, 1\)\).*torch.cat"),
        ("labels", r"returns torch.int64 values; expected float logits"),
    ],
    ids=["tuple", "dict", "vector", "segmentation", "one-logit", "labels"],
)  # fmt: skip
def test_unusual_outputs_get_the_package_error_before_any_work(kind, match) -> None:
    for build in (SimulationEngine, DeepVigorAnalyzer):
        net = Net(kind).train()
        call = functools.partial(build, net, images())
        assert_model_unchanged(net, call, raises=ValueError, match=match)
        assert net.calls == 1  # one forward of two images, then the error


@pytest.mark.parametrize(
    "batch, match",
    [
        (images(channels=3), r"cannot run on the images \(shape \(3, 3, 4, 4\), one batch of 2 "
                             r"tried\): RuntimeError: .*rank, channel count and size"),
        (torch.randn(3, 16), r"cannot run on the images \(shape \(3, 16\)"),
    ],
    ids=["channels", "rank"],
)  # fmt: skip
def test_images_the_model_cannot_take_are_named(batch, match) -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3)).train()
    assert_model_unchanged(
        net, lambda: SimulationEngine(net, batch), raises=ValueError, match=match
    )


def test_a_model_that_returns_logits_passes_with_one_extra_forward() -> None:
    net = Net()
    engine = SimulationEngine(net, images())
    assert engine.golden_logits.shape == (3, 3)
