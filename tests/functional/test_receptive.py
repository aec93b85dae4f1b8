"""Receptive fields: operands times weights rebuild the layer's output; padding is masked."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pytorchfi_deepvigor.functional.receptive import (
    conv_geometry,
    conv_operand_means,
    conv_operands,
    conv_patches,
    conv_weight_operands,
    conv_weight_patterns,
    linear_operand_means,
    linear_operands,
    linear_weight_operands,
)

CONVS = {
    "plain": lambda: nn.Conv2d(3, 4, 3),
    "padded-strided": lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1),
    "same-even-dilated": lambda: nn.Conv2d(3, 4, (2, 4), padding="same", dilation=(2, 1)),
    "valid-nonsquare": lambda: nn.Conv2d(3, 4, (1, 3), padding="valid", stride=(1, 2)),
    "grouped": lambda: nn.Conv2d(4, 6, 3, padding=(2, 1), dilation=2, groups=2),
    "depthwise": lambda: nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False),
    "reflect": lambda: nn.Conv2d(3, 2, 3, padding=1, padding_mode="reflect"),
    "circular": lambda: nn.Conv2d(3, 2, 3, padding=2, padding_mode="circular"),
}


def _input(conv: nn.Conv2d) -> torch.Tensor:
    return torch.randn(2, conv.in_channels, 7, 6, generator=torch.Generator().manual_seed(0))


def _bias(layer: nn.Module, channels: torch.Tensor) -> torch.Tensor:
    if layer.bias is None:
        return torch.zeros(channels.shape)
    return layer.bias.detach()[channels]


def _padding_mask(conv: nn.Conv2d, h_out: int, w_out: int, h: int, w: int) -> torch.Tensor:
    """Brute force: which (kernel offset, output position) operands fall inside the input."""
    g = conv_geometry(conv)
    kh, kw = g.kernel
    mask = torch.zeros(kh * kw, h_out * w_out, dtype=torch.bool)
    for r in range(h_out):
        for c in range(w_out):
            for a in range(kh):
                for b in range(kw):
                    y = r * g.stride[0] - g.pad[2] + a * g.dilation[0]
                    x = c * g.stride[1] - g.pad[0] + b * g.dilation[1]
                    mask[a * kw + b, r * w_out + c] = 0 <= y < h and 0 <= x < w
    return mask


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("name", list(CONVS))
def test_operands_rebuild_conv_output(name: str) -> None:
    torch.manual_seed(0)
    conv = CONVS[name]()
    x = _input(conv)
    out = conv(x).detach()
    n_ch, h_out, w_out = out.shape[1:]
    ch = torch.arange(n_ch).repeat_interleave(h_out * w_out)
    pos = torch.arange(h_out * w_out).repeat(n_ch)
    ops, w, valid = conv_operands(x, conv, ch, pos)
    rebuilt = (ops * w).sum(-1) + _bias(conv, ch)
    assert torch.allclose(rebuilt, out.flatten(1), atol=1e-5)
    wops, ww, wvalid = conv_weight_operands(x, conv, torch.arange(n_ch))
    rebuilt = (wops * ww[..., None]).sum(2) + _bias(conv, torch.arange(n_ch))[..., None]
    assert torch.allclose(rebuilt, out.flatten(2), atol=1e-5)
    if conv.padding_mode == "zeros":
        mask = _padding_mask(conv, h_out, w_out, *x.shape[2:])
        kk = mask.shape[0]
        j = torch.arange(w.shape[1]) % kk
        assert valid.equal(mask[j][:, pos].T.reshape(n_ch, h_out * w_out, -1).flatten(0, 1))
        assert wvalid.equal(mask[j].unsqueeze(0).expand(n_ch, -1, -1))
        assert (ops[:, ~valid] == 0).all()  # padded operands are zeros, but not sites
    else:
        assert valid.all() and wvalid.all()


def test_weight_sites_at_chosen_positions() -> None:
    conv = CONVS["grouped"]()
    x = _input(conv)
    out = conv(x).detach().flatten(2)
    positions = torch.tensor([[0, 5], [3, 3], [7, 1]])
    channels = torch.tensor([5, 0, 2])
    ops, w, valid = conv_weight_operands(x, conv, channels, positions)
    assert ops.shape == (2, 3, 18, 2) and valid.shape == (3, 18, 2)
    rebuilt = (ops * w[..., None]).sum(2) + _bias(conv, channels)[:, None]
    expected = out[:, channels[:, None], positions]
    assert torch.allclose(rebuilt, expected, atol=1e-5)


def test_linear_operands() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(5, 3)
    x = torch.randn(4, 5)
    ch = torch.tensor([2, 0])
    ops, w, valid = linear_operands(x, lin, ch)
    assert torch.allclose((ops * w).sum(-1) + _bias(lin, ch), lin(x).detach()[:, ch], atol=1e-6)
    assert valid.all()
    wops, ww, wvalid = linear_weight_operands(x, lin, ch)
    assert wops.shape == (4, 2, 5, 1) and wvalid.shape == (2, 5, 1)


def test_receptive_input_errors() -> None:
    with pytest.raises(TypeError, match="expected an nn.Conv2d"):
        conv_geometry(nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"expected input \(I, 3, H, W\)"):
        conv_patches(torch.zeros(1, 2, 4, 4), conv_geometry(nn.Conv2d(3, 1, 1)))


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("name", list(CONVS))
def test_operand_means_are_the_gathered_operands_mean_over_real_positions(name: str) -> None:
    torch.manual_seed(0)
    conv = CONVS[name]()
    x = _input(conv)
    channels = torch.tensor([conv.out_channels - 1, 0, 1])
    ops, w, valid = conv_weight_operands(x, conv, channels)
    means, w2, n_real = conv_operand_means(x, conv, channels)
    assert torch.equal(w, w2) and torch.equal(n_real, valid.sum(-1).to(n_real.dtype))
    want = ops.sum(-1) / valid.sum(-1).clamp_min(1)
    assert means.shape == want.shape and torch.allclose(means, want, rtol=1e-6, atol=1e-7)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("layout", ["contiguous", "channels-last"])
@pytest.mark.parametrize("name", list(CONVS))
def test_weight_patterns_are_the_gathered_operands_bit_for_bit(name: str, layout: str) -> None:
    """Gathered per (image, filter, weight) on demand: the very operands and validity of
    conv_weight_operands (zeros at padding), whatever the input's memory layout."""
    torch.manual_seed(0)
    conv = CONVS[name]()
    x = _input(conv)
    if layout == "channels-last":
        x = x.contiguous(memory_format=torch.channels_last)
    channels = torch.tensor([conv.out_channels - 1, 0, 1])
    ops, w, valid = conv_weight_operands(x, conv, channels)
    patterns = conv_weight_patterns(x, conv, channels)
    grid = torch.meshgrid(*(torch.arange(n) for n in ops.shape[:3]), indexing="ij")
    i, t, j = (v.flatten() for v in grid)
    got, real = patterns(i, t, j)
    assert torch.equal(patterns.weights, w) and torch.equal(real, valid[t, j])
    assert torch.equal(got.view(torch.int32), ops[i, t, j].view(torch.int32))


@pytest.mark.parametrize("shape", [(3, 5), (3, 4, 5), (3, 2, 3, 5)], ids=["2-D", "tokens", "maps"])
def test_linear_operand_means(shape: tuple[int, ...]) -> None:
    lin = nn.Linear(5, 4)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    channels = torch.tensor([3, 1])
    ops, w, valid = linear_weight_operands(x, lin, channels)
    means, w2, n_real = linear_operand_means(x, lin, channels)
    assert torch.equal(w, w2) and torch.equal(n_real, valid.sum(-1).float())
    assert torch.allclose(means, ops.mean(-1), rtol=1e-6, atol=1e-7)
