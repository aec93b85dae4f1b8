"""From a plan to a protected model: profiled clamp bounds and the model copy that holds them.

The user's model is never changed: :func:`apply` protects a deep copy, :func:`restrict_ranges`
profiles bounds with hooks that are removed (and the modules' modes restored) also when a call
raises.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from pytorchfi_deepvigor._guard import check_images, check_positive_int, eval_mode
from pytorchfi_deepvigor.catalogue import build_catalogue
from pytorchfi_deepvigor.hardening.plan import HardeningPlan, LayerProtection, resolve_name
from pytorchfi_deepvigor.hardening.protect import ProtectedLayer, plain_layer

__all__ = ["apply", "clamped", "restrict_ranges"]

Ranges = Mapping[int, tuple[Iterable[float], Iterable[float]]]


def _module(model: nn.Module, name: str, num: int) -> nn.Module:
    try:
        module = model.get_submodule(resolve_name(model, name))
    except AttributeError:
        module = None
    if not isinstance(module, nn.Conv2d | nn.Linear):
        raise ValueError(
            f"layer {num} ({name!r}) is not an nn.Conv2d or nn.Linear of this model (computed "
            "inside a fused module, or a different model): it cannot be wrapped for protection"
        )
    return module


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _protected(
    model: nn.Module, protections: Iterable[LayerProtection], ranges: Ranges
) -> nn.Module:
    out = copy.deepcopy(model)
    for prot in protections:
        if not (prot.tmr_channels or prot.clamp):
            continue  # ECC protects memory: the computation is unchanged
        module = _module(out, prot.name, prot.layer_num)
        low = high = None
        if prot.clamp:
            if prot.layer_num not in ranges:
                raise ValueError(
                    f"layer {prot.layer_num} ({prot.name}) is clamped but the plan has no bounds for it"
                )
            lo, hi = ranges[prot.layer_num]
            low, high = torch.tensor(list(lo)), torch.tensor(list(hi))
        _replace(
            out, resolve_name(out, prot.name), ProtectedLayer(module, prot.tmr_channels, low, high)
        )
    return out


def apply(plan: HardeningPlan, model: nn.Module) -> nn.Module:
    """A copy of ``model`` with the plan's TMR channels and clamps (the user's model untouched).

    The copy keeps the catalogue of ``model``: the same layers in the same order (a protected
    layer is the child ``layer`` of a :class:`ProtectedLayer`), so layer numbers, fault sites and
    PyTorchFI's numbering are unchanged. ECC protects memory and changes no computation: it is
    accounted for by :func:`~pytorchfi_deepvigor.hardening.verify`.

    Raises:
        ValueError: a protected layer that is not a plain Conv2d/Linear module of ``model``.
    """
    if not isinstance(plan, HardeningPlan):
        raise TypeError(f"expected a HardeningPlan, got {type(plan).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    for prot in plan.layers:  # every name checked before any copy
        if prot.tmr_channels or prot.clamp:
            module = _module(model, prot.name, prot.layer_num)
            why = plain_layer(module)
            if prot.tmr_channels and why:
                raise ValueError(
                    f"layer {prot.layer_num} ({prot.name}) cannot be triplicated: {why}; plan "
                    "without TMR there (harden(..., model=model) leaves such layers to ECC)"
                )
    return _protected(model, plan.layers, plan.ranges)


def clamped(model: nn.Module, ranges: Ranges, names: Mapping[int, str]) -> nn.Module:
    """A copy of ``model`` whose layers ``ranges`` names are clamped to their bounds."""
    return _protected(model, [LayerProtection(n, names[n], clamp=True) for n in ranges], ranges)


def restrict_ranges(
    model: nn.Module,
    calibration: Tensor,
    layers: Iterable[int] | None = None,
    *,
    margin: float = 0.0,
    per: str = "channel",
    max_batch: int | None = 256,
) -> dict[int, tuple[tuple[float, ...], tuple[float, ...]]]:
    """Per output channel, the fault-free range of each layer's output on ``calibration``.

    Use a calibration split, not the analysis images: the bounds then say what the deployed
    model computes, and the analysis judges them on images they were not fitted to.

    Args:
        model: the classifier (left unchanged).
        calibration: images ``(N, ...)`` in the model's format.
        layers: catalogue layer numbers (default: every layer).
        margin: widen each channel's range by this fraction of its width on both sides.
        per: ``"channel"`` (a range per output channel) or ``"layer"`` (one range per layer,
            every channel held to the layer's).
        max_batch: images per forward.

    Returns:
        ``{layer_num: (low per channel, high per channel)}``.

    Example:
        >>> torch.manual_seed(0); net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3))
        <torch._C.Generator object at ...>
        >>> bounds = restrict_ranges(net, torch.randn(16, 1, 4, 4))
        >>> sorted(bounds), len(bounds[0][0])
        ([0, 1], 2)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    images = check_images(calibration, next((p.dtype for p in model.parameters()), torch.float32))
    if not margin >= 0:
        raise ValueError(f"expected a non-negative margin, got {margin!r}")
    if per not in ("channel", "layer"):
        raise ValueError(f"expected per='channel' or per='layer', got {per!r}")
    step = check_positive_int(max_batch, "max_batch") or len(images)
    catalogue = build_catalogue(model, images[:1])
    wanted = [i.layer_num for i in catalogue] if layers is None else [int(n) for n in layers]
    infos = {i.layer_num: i for i in catalogue}
    bad = [n for n in wanted if n not in infos]
    if bad:
        raise ValueError(f"layers {bad} are not in the catalogue (0..{len(catalogue) - 1})")
    lows: dict[int, Tensor] = {}
    highs: dict[int, Tensor] = {}

    def hook(num: int, dim: int):  # noqa: ANN202
        def record(_m: nn.Module, _i: object, out: Tensor) -> None:
            moved = out.detach().float().movedim(dim, 0).reshape(out.shape[dim], -1)
            lo, hi = moved.amin(1), moved.amax(1)
            lows[num] = lo if num not in lows else torch.minimum(lows[num], lo)
            highs[num] = hi if num not in highs else torch.maximum(highs[num], hi)

        return record

    handles = []
    try:
        for num in wanted:
            module = infos[num].module
            dim = 1 if isinstance(module, nn.Conv2d) else -1
            handles.append(module.register_forward_hook(hook(num, dim)))
        with eval_mode(model), torch.no_grad():
            for start in range(0, len(images), step):
                model(images[start : start + step])
    finally:
        for handle in handles:
            handle.remove()
    out = {}
    for num in wanted:
        if num not in lows:
            raise ValueError(
                f"layer {num} ({infos[num].name}) was never called on the calibration images"
            )
        if per == "layer":
            lows[num] = lows[num].min().expand_as(lows[num])
            highs[num] = highs[num].max().expand_as(highs[num])
        width = (highs[num] - lows[num]) * margin
        out[num] = (
            tuple((lows[num] - width).tolist()),
            tuple((highs[num] + width).tolist()),
        )
    return out
