"""The weights analysis along each weight's own pattern, for filters with a small fan-in.

A weight fault adds the pattern ``d * X_j`` to its channel (``X_j``: the operands weight ``j``
meets at every output position, ``d = flip_b(w_j) - w_j``). The 32 faults of one weight all lie
on the *ray* ``t * X_j``: on one image, which of them are critical only depends on where along
the ray the class starts to flip. So instead of mapping each fault onto a channel-wide constant
(the first-order equivalent of :mod:`~pytorchfi_deepvigor.analysis.weights`, an approximation
that fails where the operands have mixed signs or the channel's gradients cancel, as in a first
layer fed normalised images), search every ray itself: per (channel, weight, image, sign), the
weight's own faults of that sign sorted by ``|d|`` are the candidates, bisected like the VV
search (:func:`~pytorchfi_deepvigor.functional.search.checked_search`, so a ray along which
criticality is not monotone is scanned), each probe adding the exact pattern ``d * X_j``
(:class:`~pytorchfi_deepvigor.perturbations.ChannelAdd` with a per-position delta). Faults whose
``d`` is NaN are probed one by one; ``d = 0`` (``-0.0`` for ``0.0``) changes nothing.

Nothing is approximated beyond the monotone bisection between probes: the CVF is the fraction of
(weight, bit, image) faults found critical, what exhaustive FI measures, at about
``2 * log2(16) + 2`` probes per weight and image instead of 32. The cost grows with the fan-in,
so the analyser uses rays only where the fan-in is at most :data:`RAY_FAN_IN` (first layers,
depthwise convolutions); wider filters use the first-order equivalent.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pytorchfi_deepvigor.analysis.handlers import handler_for
from pytorchfi_deepvigor.bits import flip_all_bits
from pytorchfi_deepvigor.catalogue import LayerInfo
from pytorchfi_deepvigor.engine import SimulationEngine
from pytorchfi_deepvigor.functional.search import checked_search
from pytorchfi_deepvigor.perturbations import ChannelAdd

__all__ = ["RAY_FAN_IN", "RayOutcome", "ray_search"]

RAY_FAN_IN = 27
"""Filters with at most this many weights (a 3x3 kernel on up to 3 input channels, any
depthwise 3x3) are analysed along each weight's own pattern."""

_ROW_BUDGET = 1 << 14  # (channel, weight, image, sign) searches per group


class RayOutcome:
    """Critical fractions of ``T`` channels on ``I`` images, and the probes spent.

    Attributes:
        critical: float64 ``(T, I)``: fraction of the channel's (weight, bit) faults critical.
        probes: long ``(T,)``: pattern probes per channel (all weights, images and signs).
        non_monotone: rays whose criticality contradicted the bisection.
    """

    def __init__(self, critical: Tensor, probes: Tensor, non_monotone: int) -> None:
        self.critical = critical
        self.probes = probes
        self.non_monotone = non_monotone


def _rank_bits(d: Tensor) -> tuple[Tensor, Tensor]:
    """Per weight and sign, the bits ordered by ``|d|`` (long ``(T, J, 2, 32)``) and membership."""
    on_ray = ~torch.isnan(d)  # +-Inf are the outermost members of a ray
    plus = on_ray & (d > 0)
    minus = on_ray & (d < 0)
    mag = d.abs().nan_to_num(nan=0.0)
    order, member = [], []
    for side in (plus, minus):
        key = torch.where(side, mag, torch.inf)
        o = torch.sort(key, dim=-1, stable=True).indices
        order.append(o)
        member.append(torch.gather(side, -1, o))
    return torch.stack(order, dim=2), torch.stack(member, dim=2)


def ray_search(engine: SimulationEngine, info: LayerInfo, channels: Tensor) -> RayOutcome:
    """Critical fraction of every single weight fault of ``channels``, ray by ray.

    Args:
        engine: the simulation engine.
        info: the layer (a small fan-in: see :data:`RAY_FAN_IN`).
        channels: long ``(T,)`` output channels.

    Returns:
        :class:`RayOutcome`.
    """
    handler = handler_for(info.module)
    x_in = engine.layer_input(info.layer_num)
    n_img = engine.num_images
    out_shape = tuple(info.output_shape[1:]) if len(info.output_shape) > 1 else ()
    crit_all, probes_all, non_mono = [], [], 0
    per_channel = info.fan_in * n_img * 2
    step = max(1, _ROW_BUDGET // per_channel)
    for a in range(0, channels.numel(), step):
        ch = channels[a : a + step].to(x_in.device)
        ops, w, _ = handler.weight_operands(x_in, info.module, ch, None)  # (I, T, J, P)
        n_t, n_j = w.shape
        d = flip_all_bits(w) - w.unsqueeze(-1)  # (T, J, 32)
        order, member = _rank_bits(d)  # (T, J, 2, 32)
        # rows: (t, j, sign, image)
        members = member.unsqueeze(3).expand(n_t, n_j, 2, n_img, 32).reshape(-1, 32)
        row_t = torch.arange(n_t).view(-1, 1, 1, 1).expand(n_t, n_j, 2, n_img).reshape(-1)
        row_j = torch.arange(n_j).view(1, -1, 1, 1).expand(n_t, n_j, 2, n_img).reshape(-1)
        row_s = torch.arange(2).view(1, 1, -1, 1).expand(n_t, n_j, 2, n_img).reshape(-1)
        row_i = torch.arange(n_img).view(1, 1, 1, -1).expand(n_t, n_j, 2, n_img).reshape(-1)

        def probe(t: Tensor, j: Tensor, i: Tensor, bit: Tensor) -> Tensor:
            dev = ops.device
            t, j, i, bit = (v.to(dev) for v in (t, j, i, bit))
            delta = d[t, j, bit].unsqueeze(-1) * ops[i, t, j]  # (P', positions)
            pert = ChannelAdd(ch[t], delta.reshape(-1, *out_shape))
            return engine.critical(info.layer_num, i, pert).cpu()

        def oracle(rows: Tensor, g: Tensor) -> Tensor:
            t, j, s = row_t[rows], row_j[rows], row_s[rows]
            bit = order[t, j, s, g]
            return probe(t, j, row_i[rows], bit)

        res = checked_search(members, oracle)
        non_mono += int(res.non_monotone.sum())
        hit = (res.critical & members).view(n_t, n_j, 2, n_img, 32).sum(dim=(1, 2, 4))  # (T, I)
        probes = res.probes.view(n_t, n_j, 2, n_img).sum(dim=(1, 2, 3))
        # NaN deltas are not on a ray: probe each (weight, bit, image) once
        nan_t, nan_j, nan_b = torch.isnan(d).nonzero(as_tuple=True)
        if nan_t.numel():
            reps = nan_t.numel()
            t = nan_t.repeat_interleave(n_img)
            i = torch.arange(n_img).repeat(reps)
            crit = probe(t, nan_j.repeat_interleave(n_img), i, nan_b.repeat_interleave(n_img))
            hit.index_put_((t.cpu(), i), crit.long(), accumulate=True)
            probes += torch.bincount(t.cpu(), minlength=n_t)
        crit_all.append(hit.double() / (n_j * 32))
        probes_all.append(probes)
    return RayOutcome(torch.cat(crit_all), torch.cat(probes_all), non_mono)
