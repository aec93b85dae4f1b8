"""Exact bit-flip error models for PyTorchFI's function= hooks: weight, stored activation, operand."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from pytorchfi import core
from torch import nn

from pytorchfi_deepvigor.bits import flip_bit
from pytorchfi_deepvigor.error_models import (
    ActivationBitFlip,
    OperandBitFlip,
    WeightBitFlip,
    operand_site,
)
from pytorchfi_deepvigor.injector import DeepVigorFI


def ints(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().view(torch.int32)


def conv_net(**conv_kwargs) -> tuple[nn.Module, list[int]]:
    torch.manual_seed(0)
    kw = {"in_channels": 4, "out_channels": 6, "kernel_size": 3, **conv_kwargs}
    return nn.Sequential(nn.Conv2d(**kw)).eval(), [kw["in_channels"], 7, 6]


@pytest.fixture(autouse=True)
def root_logger():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers, root.level = handlers, level


# ------------------------------------------------------------------------------------ weights
def test_weight_bit_flip_matches_bits_for_every_bit():
    w = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    for bit in range(32):
        assert torch.equal(ints(WeightBitFlip(bit)(w, (2, 1))), ints(flip_bit(w[2, 1], bit)))
    assert WeightBitFlip(31, stuck_at=1)(w.abs(), (0, 0)).item() == -w.abs()[0, 0].item()
    assert WeightBitFlip(31, stuck_at=0)(w.abs(), (0, 0)).item() == w.abs()[0, 0].item()
    flipped = WeightBitFlip(30)(w, (1, 1, None, None))  # PyTorchFI's index of a Linear weight
    assert torch.equal(ints(flipped), ints(flip_bit(w[1, 1], 30)))


def test_weight_bit_flip_through_both_injectors():
    net, shape = conv_net()
    x = torch.randn(2, *shape)
    fi = DeepVigorFI(net, 2, shape)
    plain = core.fault_injection(net, 2, shape)
    site = {"layer_num": [0], "k": [4], "dim1": [2], "dim2": [1], "dim3": [0]}
    with torch.no_grad():
        ours = fi.declare_weight_fi(function=WeightBitFlip(27), **site)(x)
        theirs = plain.declare_weight_fi(function=WeightBitFlip(27), **site)(x)
        with fi.weight_fault(0, (4, 2, 1, 0), bit=27):
            in_place = net(x)
    assert torch.equal(ints(ours), ints(theirs)) and torch.equal(ints(ours), ints(in_place))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [({"bit": 32}, ValueError, r"\[0, 31\]"), ({"bit": True}, TypeError, "int"),
     ({"bit": 3, "stuck_at": 2}, ValueError, "stuck_at")],
    ids=["bit 32", "bool bit", "stuck_at 2"],
)  # fmt: skip
def test_weight_bit_flip_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        WeightBitFlip(**kwargs)


def test_weight_bit_flip_needs_a_float32_weight():
    with pytest.raises(TypeError, match="float32"):
        WeightBitFlip(3)(torch.ones(2, 2, dtype=torch.float64), (0, 0))


# ----------------------------------------------------------------------- stored activations
def test_activation_bit_flip_changes_exactly_the_declared_values():
    net, shape = conv_net(padding=1)
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(2))
    fi = DeepVigorFI(net, 3, shape)
    bad = fi.declare_neuron_fi(
        layer_num=[0, 0], batch=[2, 0], dim1=[5, 1], dim2=[6, 0], dim3=[0, 3],
        function=ActivationBitFlip(fi, [30, 4]),
    )  # fmt: skip
    with torch.no_grad():
        expected = net(x)
        expected[2, 5, 6, 0] = flip_bit(expected[2, 5, 6, 0], 30)
        expected[0, 1, 0, 3] = flip_bit(expected[0, 1, 0, 3], 4)
        for _ in range(2):
            assert torch.equal(ints(bad(x)), ints(expected))


def test_activation_bit_flip_works_with_plain_pytorchfi():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    plain = core.fault_injection(net, 1, [3], [nn.Linear])
    bad = plain.declare_neuron_fi(
        layer_num=[1], batch=[0], dim1=[1], dim2=[None], dim3=[None],
        function=ActivationBitFlip(plain, 31),
    )  # fmt: skip
    x = torch.ones(1, 3)
    with torch.no_grad():
        golden = net(x)
        outs = [bad(x) for _ in range(3)]  # the model advances and wraps the 0.6.0 counter
    assert all(o[0, 1].item() == -golden[0, 1].item() and o[0, 0] == golden[0, 0] for o in outs)


def test_activation_bit_flip_errors():
    net, shape = conv_net()
    fi = DeepVigorFI(net, 1, shape)
    site = {"layer_num": [0], "batch": [0], "dim1": [0], "dim2": [0], "dim3": [0]}
    bad = fi.declare_neuron_fi(function=ActivationBitFlip(fi, [1, 2]), **site)
    with pytest.raises(ValueError, match="got 2 bits for 1 declared faults"):
        bad(torch.ones(1, *shape))
    with pytest.raises(ValueError, match=r"\[0, 31\]"):
        ActivationBitFlip(fi, [3, 40])
    fi64 = DeepVigorFI(net.double(), 1, shape)
    bad = fi64.declare_neuron_fi(function=ActivationBitFlip(fi64, 1), **site)
    with pytest.raises(TypeError, match="float32"):
        bad(torch.ones(1, *shape, dtype=torch.float64))


# ---------------------------------------------------------------------------------- operands
CONVS = {
    "plain": {},
    "stride 2 pad 1": {"stride": 2, "padding": 1},
    "dilation 2": {"dilation": 2, "padding": 2},
    "groups 2": {"groups": 2, "padding": 1},
    "depthwise": {"groups": 4, "out_channels": 8, "padding": 1},
    "same, even kernel": {"kernel_size": (2, 4), "padding": "same"},
    "same, dilated": {"kernel_size": 3, "dilation": (1, 2), "padding": "same"},
    "valid, non-square": {"kernel_size": (1, 3), "stride": (1, 2), "padding": "valid"},
}


def _pads(conv: nn.Conv2d) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) as PyTorch pads: "same" puts total // 2 first."""
    out = []
    for d in (1, 0):
        if conv.padding == "same":
            total = conv.dilation[d] * (conv.kernel_size[d] - 1)
            out += [total // 2, total - total // 2]
        elif conv.padding == "valid":
            out += [0, 0]
        else:
            out += [conv.padding[d]] * 2
    return tuple(out)


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
@pytest.mark.parametrize("conv_kwargs", CONVS.values(), ids=CONVS.keys())
def test_operand_site_reads_what_the_convolution_reads(conv_kwargs):
    net, shape = conv_net(**conv_kwargs)
    conv = net[0]
    x = torch.arange(1, 1 + torch.Size(shape).numel(), dtype=torch.float32).view(1, *shape)
    padded = F.pad(x, _pads(conv))
    cols = F.unfold(padded, conv.kernel_size, dilation=conv.dilation, stride=conv.stride)
    out_h, out_w = conv(x).shape[2:]
    assert cols.shape[2] == out_h * out_w  # the padding split reproduces the output size
    cin_g, (kh_n, kw_n) = conv.in_channels // conv.groups, conv.kernel_size
    per_group = conv.out_channels // conv.groups
    for k in range(conv.out_channels):
        base = (k // per_group) * cin_g
        for h in range(out_h):
            for w in range(out_w):
                column = cols[0, :, h * out_w + w].view(conv.in_channels, kh_n, kw_n)
                for c in range(cin_g):
                    for kh in range(kh_n):
                        for kw in range(kw_n):
                            site = operand_site(conv, (k, h, w), (c, kh, kw), shape[1:])
                            read = 0.0 if site is None else x[(0, *site)].item()
                            assert read == column[base + c, kh, kw].item()
    # and the conv computes its outputs from exactly these operands
    weight = conv.weight.view(conv.groups, per_group, -1)
    grouped = cols.view(conv.groups, cin_g * kh_n * kw_n, -1)
    manual = torch.bmm(weight.double(), grouped.double()).view(-1, out_h, out_w) + conv.bias.view(
        -1, 1, 1
    )
    assert torch.allclose(manual.float(), conv(x)[0], rtol=1e-5, atol=1e-3)


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
@pytest.mark.parametrize("conv_kwargs", CONVS.values(), ids=CONVS.keys())
def test_operand_flip_adds_its_delta_to_one_neuron_only(conv_kwargs):
    net, shape = conv_net(**conv_kwargs)
    conv = net[0]
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(3))
    fi = DeepVigorFI(net, 2, shape)
    with torch.no_grad():
        golden = net(x)
    k, h, w = conv.out_channels - 1, golden.shape[2] - 1, 0
    operands = [
        (c, i, j)
        for c in range(conv.in_channels // conv.groups)
        for i in range(conv.kernel_size[0])
        for j in range(conv.kernel_size[1])
        if operand_site(conv, (k, h, w), (c, i, j), shape[1:]) is not None
    ]
    operand = operands[-1]  # the last operand that is not zero padding
    site = operand_site(conv, (k, h, w), operand, shape[1:])
    assert site is not None
    bad = fi.declare_neuron_fi(
        layer_num=[0],
        batch=[1],
        dim1=[k],
        dim2=[h],
        dim3=[w],
        function=OperandBitFlip(fi, operand, 22),
    )
    with torch.no_grad():
        faulty = bad(x)
    operand_value = x[(1, *site)]
    delta = (flip_bit(operand_value, 22) - operand_value) * conv.weight[(k, *operand)]
    expected = golden.clone()
    expected[1, k, h, w] += delta
    assert torch.equal(ints(faulty), ints(expected))
    # the same as recomputing that neuron with the flipped operand, up to summation order
    x_flipped = x.clone()
    x_flipped[(1, *site)] = flip_bit(operand_value, 22)
    with torch.no_grad():
        recomputed = net(x_flipped)[1, k, h, w]
    assert torch.allclose(faulty[1, k, h, w], recomputed, rtol=1e-5, atol=1e-5)


def test_operand_flip_on_linear_layers():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 3)).eval()
    fi = DeepVigorFI(net, 1, [5], [nn.Linear])
    x = torch.randn(1, 5)
    bad = fi.declare_neuron_fi(
        layer_num=[0, 0],
        batch=[0, 0],
        dim1=[0, 2],
        function=OperandBitFlip(fi, [(4,), (1,)], [30, 31]),
    )
    with torch.no_grad():
        expected = net(x)
        faulty = bad(x)
    w = net[0].weight
    expected[0, 0] += (flip_bit(x[0, 4], 30) - x[0, 4]) * w[0, 4]
    expected[0, 2] += (flip_bit(x[0, 1], 31) - x[0, 1]) * w[2, 1]
    assert torch.equal(ints(faulty), ints(expected))


def test_operand_flip_errors():
    net, shape = conv_net(padding=1)
    fi = DeepVigorFI(net, 1, shape)
    x = torch.ones(1, *shape)
    corner = {"layer_num": [0], "batch": [0], "dim1": [0], "dim2": [0], "dim3": [0]}
    with pytest.raises(ValueError, match="reads zero padding, which is not a fault site"):
        fi.declare_neuron_fi(function=OperandBitFlip(fi, (0, 0, 0), 3), **corner)(x)
    with pytest.raises(ValueError, match=r"operand \(4, 0, 0\) outside the weight"):
        fi.declare_neuron_fi(function=OperandBitFlip(fi, (4, 0, 0), 3), **corner)(x)
    with pytest.raises(ValueError, match="got 2 operands for 1 declared faults"):
        fi.declare_neuron_fi(function=OperandBitFlip(fi, [(0, 1, 1)] * 2, 3), **corner)(x)
    reflect, _ = conv_net(padding=1, padding_mode="reflect")
    with pytest.raises(ValueError, match="padding_mode='zeros'"):
        operand_site(reflect[0], (0, 1, 1), (0, 1, 1), (7, 6))
    with pytest.raises(ValueError, match="Conv2d or nn.Linear"):
        operand_site(nn.Conv1d(1, 1, 1), (0, 0), (0, 0), (1,))
