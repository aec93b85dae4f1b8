"""The shared guarantee harness (tests/guarantees.py) and the injector's entry points under it."""

from __future__ import annotations

import pytest
import torch
from guarantees import assert_model_unchanged, snapshot
from torch import nn

from pytorchfi_deepvigor.error_models import ActivationBitFlip, OperandBitFlip, WeightBitFlip
from pytorchfi_deepvigor.injector import DeepVigorFI

SHAPE = [2, 6, 6]


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, groups=2),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(4 * 2 * 2, 3),
    )
    net[1].running_mean.uniform_(-1, 1)
    net[1].running_var.uniform_(0.5, 2)
    return net.train()  # train mode: any silent eval()/forward would move BatchNorm statistics


def images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(1))


# ----------------------------------------------------------------------------- the harness
def _raise_after(change):
    def call():
        change()
        raise RuntimeError("boom")

    return call


HARNESS_CHANGES = {
    "weight": lambda net: net[0].weight.data.view(-1)[:1].neg_(),
    "buffer": lambda net: net[1].running_mean.add_(1.0),
    "mode": lambda net: net[5].eval(),
    "forward hook": lambda net: net[0].register_forward_hook(lambda *a: None),
    "pre hook": lambda net: net.register_forward_pre_hook(lambda *a: None),
    "backward hook": lambda net: net[6].register_full_backward_hook(lambda *a: None),
    "tensor hook": lambda net: net[6].weight.register_hook(lambda g: g),
    "grad": lambda net: net(images()).sum().backward(),
    "replaced parameter": lambda net: setattr(net[6], "bias", nn.Parameter(net[6].bias.clone())),
    "replaced module": lambda net: net.__setitem__(2, nn.ReLU()),
    "requires_grad": lambda net: net[0].bias.requires_grad_(False),
}


@pytest.mark.parametrize("change", HARNESS_CHANGES.values(), ids=HARNESS_CHANGES.keys())
def test_harness_detects_change(change):
    net = tiny_net()
    with pytest.raises(AssertionError, match="the call changed the model"):
        assert_model_unchanged(net, lambda: change(net))


@pytest.mark.parametrize("change", HARNESS_CHANGES.values(), ids=HARNESS_CHANGES.keys())
def test_harness_detects_change_when_the_call_raises(change):
    net = tiny_net()
    with pytest.raises(AssertionError, match="raised RuntimeError: boom"):
        assert_model_unchanged(net, _raise_after(lambda: change(net)), raises=RuntimeError)


def test_harness_detects_global_hook():
    net = tiny_net()
    handles = []
    try:
        with pytest.raises(AssertionError, match="global _global_forward_hooks"):
            register = nn.modules.module.register_module_forward_hook
            assert_model_unchanged(net, lambda: handles.append(register(lambda *a: None)))
    finally:
        for h in handles:
            h.remove()


def test_harness_tells_negative_zero_from_zero():
    net = tiny_net()
    net[0].weight.data.view(-1)[0] = 0.0
    with pytest.raises(AssertionError, match=r"tensors\['param 0.weight'\]"):
        assert_model_unchanged(net, lambda: net[0].weight.data.view(-1)[:1].neg_())


def test_harness_compares_nan_payloads_bit_for_bit():
    net = tiny_net()
    net[0].weight.data.view(-1).view(torch.int32)[0] = 0x7FC00001  # a NaN with a payload

    def other_nan():
        net[0].weight.data.view(-1).view(torch.int32)[0] = 0x7FC00002

    with pytest.raises(AssertionError, match=r"tensors\['param 0.weight'\]"):
        assert_model_unchanged(net, other_nan)


def test_harness_passes_restoring_calls_and_returns_result():
    net = tiny_net()

    def restoring():
        with torch.no_grad():
            net[0].weight.add_(1.0).sub_(1.0)  # may round: restore the exact bits instead
        net[0].weight.data.copy_(saved)
        handle = net.register_forward_hook(lambda *a: None)
        handle.remove()
        net.eval().train()
        return 42

    saved = net[0].weight.detach().clone()
    assert assert_model_unchanged(net, restoring) == 42


def test_harness_raises_semantics():
    net = tiny_net()
    err = assert_model_unchanged(net, _raise_after(lambda: None), raises=RuntimeError, match="bo+m")
    assert isinstance(err, RuntimeError)
    with pytest.raises(AssertionError, match="does not match"):
        assert_model_unchanged(net, _raise_after(lambda: None), raises=RuntimeError, match="zzz")
    with pytest.raises(AssertionError, match="expected the call to raise"):
        assert_model_unchanged(net, lambda: 1, raises=ValueError)
    with pytest.raises(RuntimeError, match="boom"):  # unexpected exceptions propagate
        assert_model_unchanged(net, _raise_after(lambda: None))
    with pytest.raises(RuntimeError, match="boom"):  # so do exceptions of another type
        assert_model_unchanged(net, _raise_after(lambda: None), raises=ValueError)


def test_snapshot_of_unchanged_model_has_no_differences():
    net = tiny_net()
    assert snapshot(net).differences(snapshot(net)) == []


# ------------------------------------------------------------------ the injector's entry points
def _run_weight_fault(fi, net, **kwargs):
    with fi.weight_fault(0, (1, 0, 1, 1), **kwargs):
        return net(images())


def _raise_inside_weight_fault(fi, net):
    with fi.weight_fault(2, 5, bit=30):
        net(images())
        raise KeyError("inside")


def _neuron_model(fi, **kwargs):
    bad = fi.declare_neuron_fi(layer_num=[0, 2], batch=[0, 1], dim1=[1, 2], **kwargs)
    return [bad(images()) for _ in range(2)]


SUCCEEDING = {
    "constructor": lambda fi, net: DeepVigorFI(net, 2, SHAPE),
    "constructor conv only": lambda fi, net: DeepVigorFI(net, 2, SHAPE, [nn.Conv2d]),
    "constructor all": lambda fi, net: DeepVigorFI(net, 2, SHAPE, ["all"]),
    "constructor example_input": lambda fi, net: DeepVigorFI(net, 2, example_input=images()),
    "queries": lambda fi, net: (
        fi.get_total_layers(),
        fi.get_layer_shape(1),
        fi.get_weights_size(2),
        fi.layer_table(),
        fi.catalogue,
        fi.print_pytorchfi_layer_summary(),
    ),
    "declare_neuron_fi value": lambda fi, net: _neuron_model(
        fi, dim2=[3, None], dim3=[4, None], value=[9.0, -9.0]
    ),
    "declare_neuron_fi activation flip": lambda fi, net: _neuron_model(
        fi, dim2=[3, None], dim3=[0, None], function=ActivationBitFlip(fi, 30)
    ),
    "declare_neuron_fi operand flip": lambda fi, net: fi.declare_neuron_fi(
        layer_num=[0],
        batch=[1],
        dim1=[2],
        dim2=[3],
        dim3=[4],
        function=OperandBitFlip(fi, (1, 1, 1), 30),
    )(images()),
    "declare_weight_fi": lambda fi, net: fi.declare_weight_fi(
        layer_num=[2, 2], k=[1, 2], dim1=[0, 7], value=[1e6, -1e6]
    )(images()),
    "declare_weight_fi function": lambda fi, net: fi.declare_weight_fi(
        layer_num=[1], k=[1], dim1=[0], dim2=[2], dim3=[2], function=WeightBitFlip(30)
    )(images()),
    "fi_reset": lambda fi, net: (
        _neuron_model(fi, dim2=[0, None], dim3=[0, None], value=[1, 1]),
        fi.fi_reset(),
    ),
    "weight_fault bit": lambda fi, net: _run_weight_fault(fi, net, bit=30),
    "weight_fault stuck": lambda fi, net: _run_weight_fault(fi, net, bit=31, stuck_at=1),
    "weight_fault value": lambda fi, net: _run_weight_fault(fi, net, value=float("nan")),
    "weight_fault function": lambda fi, net: _run_weight_fault(fi, net, function=WeightBitFlip(3)),
    "engine": lambda fi, net: fi.engine(images(3)).golden_top1,
}


@pytest.mark.parametrize("call", SUCCEEDING.values(), ids=SUCCEEDING.keys())
def test_entry_point_leaves_model_unchanged(call, request):
    net = tiny_net()
    if "weight_fault" in request.node.callspec.id:
        net.eval()  # the block runs the user's model itself: train mode would move BatchNorm
    fi = DeepVigorFI(net, 2, SHAPE, [nn.Conv2d, nn.Linear])
    assert_model_unchanged(net, lambda: call(fi, net))


FAILING = {
    "constructor bad shape": (lambda fi, net: DeepVigorFI(net, 2, [3, 6, 6]), ValueError, "profil"),
    "weight of a ReLU (all)": (
        lambda fi, net: DeepVigorFI(net, 2, SHAPE, ["all"]).declare_weight_fi(
            layer_num=[2], k=[0], dim1=[0], value=[1.0]
        ),
        ValueError,
        "no weight",
    ),
    "declare_neuron_fi out of range": (
        lambda fi, net: fi.declare_neuron_fi(layer_num=[0], batch=[0], dim1=[4], value=[1.0]),
        ValueError,
        r"dim1 \(channel\) index 4 out of range \[0, 4\)",
    ),
    "corrupted model NaN input": (
        lambda fi, net: fi.declare_neuron_fi(layer_num=[2], batch=[0], dim1=[0], value=[1.0])(
            torch.full((2, *SHAPE), float("nan"))
        ),
        ValueError,
        "NaN",
    ),
    "declare_weight_fi out of range": (
        lambda fi, net: fi.declare_weight_fi(layer_num=[3], k=[0], dim1=[0], value=[1.0]),
        ValueError,
        r"layer_num 3 out of range \[0, 3\)",
    ),
    "weight_fault exception inside": (_raise_inside_weight_fault, KeyError, "inside"),
    "weight_fault bad bit": (lambda fi, net: _run_weight_fault(fi, net, bit=32), ValueError, "bit"),
    "weight_fault two models": (
        lambda fi, net: _run_weight_fault(fi, net, bit=3, value=1.0),
        ValueError,
        "exactly one",
    ),
    "engine empty": (lambda fi, net: fi.engine(images(0)), ValueError, "empty"),
}


@pytest.mark.parametrize("case", FAILING.values(), ids=FAILING.keys())
def test_failing_entry_point_leaves_model_unchanged(case, request):
    call, error, match = case
    net = tiny_net()
    if "weight_fault" in request.node.callspec.id:
        net.eval()
    fi = DeepVigorFI(net, 2, SHAPE, [nn.Conv2d, nn.Linear])
    assert_model_unchanged(net, lambda: call(fi, net), raises=error, match=match)
