"""The engine runs channels-last only through ops that compute there what they compute on the
model's own contiguous tensors, extreme values included (issue 21)."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pytorchfi_deepvigor.engine.plan import (
    CHANNELS_LAST_FUNCTIONS,
    CHANNELS_LAST_METHODS,
    CHANNELS_LAST_MODULES,
)

C = 12
EXTREMES = [s * 2.0**e for e in (0, 20, 64, 76, 100, 127) for s in (1, -1)]
EXTREMES += [3.4e38, -3.4e38, math.inf, -math.inf, math.nan]


def _instances() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    out: dict[str, nn.Module] = {}
    for cls in CHANNELS_LAST_MODULES:
        if cls is nn.Conv2d:
            out["Conv2d"] = nn.Conv2d(C, C, 3, padding=1)
            out["Conv2d-depthwise"] = nn.Conv2d(C, C, 3, padding=2, dilation=2, groups=C)
            out["Conv2d-1x1-stride2"] = nn.Conv2d(C, C, 1, stride=2)
        elif cls is nn.BatchNorm2d:
            bn = nn.BatchNorm2d(C)
            with torch.no_grad():
                bn.running_mean.normal_()
                bn.running_var.uniform_(0.5, 2)
                bn.weight.normal_()
            out["BatchNorm2d"] = bn
        elif cls is nn.PReLU:
            out["PReLU"] = nn.PReLU(C)
        elif cls in (nn.MaxPool2d, nn.AvgPool2d):
            out[cls.__name__] = cls(3, 2, 1)
        elif cls in (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d):
            out[cls.__name__] = cls(1)
            out[cls.__name__ + "-3"] = cls(3)
        elif cls is nn.LeakyReLU:
            out["LeakyReLU"] = nn.LeakyReLU(0.1)
        else:
            out[cls.__name__] = cls()
    return {k: m.eval() for k, m in out.items()}


def _same(a: torch.Tensor, b: torch.Tensor) -> str:
    if not torch.equal(torch.isnan(a), torch.isnan(b)) or not torch.equal(
        torch.isinf(a) & (a > 0), torch.isinf(b) & (b > 0)
    ):
        return f"non-finite outputs differ: {int((~torch.isfinite(a)).sum())} vs {int((~torch.isfinite(b)).sum())}"
    ok = torch.isfinite(a)
    scale = a[ok].abs().amax() if ok.any() else torch.tensor(0.0)
    err = (a[ok] - b[ok]).abs().amax() if ok.any() else torch.tensor(0.0)
    # float rounding of sums: relative to the largest value of the map
    return "" if float(err) <= 1e-5 * max(float(scale), 1.0) else f"max error {float(err):.3g}"


@pytest.mark.parametrize("name", sorted(_instances()))
def test_channels_last_module_computes_the_contiguous_result(name: str) -> None:
    module = _instances()[name]
    for value in EXTREMES:
        x = torch.randn(3, C, 9, 9, generator=torch.Generator().manual_seed(1))
        x[0, 3, 4, 5] = value
        x[2, 7, 0, 0] = value
        with torch.no_grad():
            want = module(x)
            got = module(x.contiguous(memory_format=torch.channels_last))
        assert got.shape == want.shape
        assert not (problem := _same(want, got)), f"{name} at {value}: {problem}"
        if want.dim() == 4 and want.shape[2] * want.shape[3] > 1:  # keeps the layout
            assert got.is_contiguous(memory_format=torch.channels_last), name


def _inplace(x: torch.Tensor, op) -> torch.Tensor:  # type: ignore[no-untyped-def]
    y = x.clone()
    op(y)
    return y


def _method(x: torch.Tensor, name: str) -> torch.Tensor:
    y = x.clone()
    args = () if name.startswith(("relu", "sigmoid")) else (x.flip(0),)
    return getattr(y, name)(*args)


FUNCTIONS = {
    "relu": F.relu, "relu6": F.relu6, "leaky_relu": F.leaky_relu, "silu": F.silu,
    "hardswish": F.hardswish, "hardsigmoid": F.hardsigmoid, "sigmoid": torch.sigmoid,
    "tanh": torch.tanh, "elu": F.elu, "mish": F.mish,
    "max_pool2d": lambda x: F.max_pool2d(x, 2), "avg_pool2d": lambda x: F.avg_pool2d(x, 2),
    "adaptive_avg_pool2d": lambda x: F.adaptive_avg_pool2d(x, 1),
    "cat": lambda x: torch.cat([x, x * 2], dim=1), "add": lambda x: x + x.flip(0),
    "mul": lambda x: x * x.flip(0), "sub": lambda x: torch.sub(x, x.flip(0)),
    "truediv": lambda x: x / (x.flip(0) + 3), "hardtanh": F.hardtanh,
    "adaptive_max_pool2d": lambda x: F.adaptive_max_pool2d(x, 2),
    "dropout": lambda x: F.dropout(x, 0.5, training=False),
    "iadd": lambda x: _inplace(x, lambda y: y.__iadd__(x.flip(0))),
    "imul": lambda x: _inplace(x, lambda y: y.__imul__(x.flip(0))),
    **{f"method-{m}": functools.partial(_method, name=m) for m in CHANNELS_LAST_METHODS},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_channels_last_functions(name: str) -> None:
    fn = FUNCTIONS[name]
    for value in EXTREMES:
        x = torch.randn(3, C, 8, 8, generator=torch.Generator().manual_seed(2))
        x[1, 5, 3, 3] = value
        got = fn(x.contiguous(memory_format=torch.channels_last))
        assert not (problem := _same(fn(x), got)), f"{name} at {value}: {problem}"


def test_every_listed_function_is_swept() -> None:
    """Each function the engine runs channels-last is one the sweep above checks (by name)."""
    swept = {n.removeprefix("method-") for n in FUNCTIONS}
    for f in CHANNELS_LAST_FUNCTIONS:
        name = getattr(f, "__name__", "").rstrip("_").removeprefix("__").removesuffix("__")
        assert name in swept, name
    assert nn.GroupNorm not in CHANNELS_LAST_MODULES
