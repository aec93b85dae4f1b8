"""The weights analysis along the weights' own patterns, for filters on few input channels.

A weight fault adds the pattern ``d * X_j`` to its channel (``X_j``: the operands weight ``j``
meets at every output position, ``d = flip_b(w_j) - w_j``). All faults whose patterns share a
direction lie on one *ray* ``t * X``: on one image, which of them are critical only depends on
where along the ray the class starts to flip. The weights of one input channel meet the same
input map, shifted by their kernel offsets; ignoring the shift (exact for a 1x1 kernel), a
filter on ``C`` input channels has ``C`` rays per image. Instead of mapping each fault onto a channel-wide constant (the first-order
equivalent of :mod:`~pytorchfi_deepvigor.analysis.weights`, which fails where the operands have
mixed signs or the channel's gradients cancel, as in a first layer fed normalised images: it read
a first layer 40% low), search every ray itself: per (channel, input channel, image, sign), the
faults of that input channel's weights with that sign, sorted by ``|d|``, are the candidates,
bisected like the VV search (:func:`~pytorchfi_deepvigor.functional.search.checked_search`, so a
ray along which criticality is not monotone is scanned). Each probe is the fault itself: its own
weight's pattern ``d * X_j`` added exactly
(:class:`~pytorchfi_deepvigor.perturbations.ChannelAdd` with a per-position delta), so the shift
only matters for the faults the bisection does not probe. Faults whose
``d`` is NaN are not on a ray: each is probed with its own weight's pattern. ``d = 0`` (``-0.0``
for ``0.0``) changes nothing.

Approximated: only the order of the unprobed faults, by ``|d|`` across the weights of one input
channel (their patterns differ by a shift), and the monotone bisection between probes
(checked). The CVF is the fraction of (weight, bit, image) faults found
critical, what exhaustive FI measures, at about ``2 * (log2(16 k) + 1)`` probes per input channel
and image for a ``k``-weight kernel, instead of ``32 k``. The analyser uses rays where a filter
reads at most :data:`RAY_IN_CHANNELS` input channels (first layers on images, depthwise
convolutions), so they cost about what the channel's VV search costs, and where a 1x1 filter
reads at most :data:`RAY_IN_CHANNELS_1X1` (a ray is then exact up to the bisection; about
``C`` times the channel's VV search for ``C`` input channels, paid only by narrow layers).

Memory: a probe's pattern is gathered from the layer's input when its engine chunk runs
(:func:`~pytorchfi_deepvigor.functional.receptive.conv_weight_patterns`), and of its outcome
only the criticality and a fingerprint are kept
(:meth:`~pytorchfi_deepvigor.engine.SimulationEngine.verdicts`): what a search holds grows with
its rows and candidates (at most ``_ROW_BUDGET`` rows per group), never with the classes, the
images' size or the probes of a call.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pytorchfi_deepvigor.bits import flip_all_bits
from pytorchfi_deepvigor.catalogue import LayerInfo
from pytorchfi_deepvigor.engine import SimulationEngine
from pytorchfi_deepvigor.functional.receptive import conv_weight_patterns
from pytorchfi_deepvigor.functional.search import checked_search
from pytorchfi_deepvigor.perturbations import ChannelAdd

__all__ = [
    "RAY_IN_CHANNELS",
    "RAY_IN_CHANNELS_1X1",
    "RayOutcome",
    "ray_count",
    "ray_search",
    "uses_rays",
]

RAY_IN_CHANNELS = 3
"""Conv2d filters that read at most this many input channels (a first layer on grey or RGB
images, any depthwise convolution) are analysed ray by ray."""

RAY_IN_CHANNELS_1X1 = 8
"""1x1 Conv2d filters (where a ray is exact: every weight meets its input channel unshifted)
that read at most this many input channels are analysed ray by ray."""


def uses_rays(info: LayerInfo) -> bool:
    """Whether the weights analysis of this layer searches rays (a Conv2d on few input channels)."""
    module = info.module
    pointwise = isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (1, 1)
    return 0 < ray_count(info) <= (RAY_IN_CHANNELS_1X1 if pointwise else RAY_IN_CHANNELS)


def ray_count(info: LayerInfo) -> int:
    """Rays per filter: the input channels a Conv2d filter reads (0 for other layers)."""
    module = info.module
    return module.in_channels // module.groups if isinstance(module, nn.Conv2d) else 0


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


def _rank(d: Tensor) -> tuple[Tensor, Tensor]:
    """Per ray and sign, the faults ordered by ``|d|`` and their membership.

    Args:
        d: ``(T, C, F)``: the weight changes of the ``F`` faults on each of ``C`` rays.

    Returns:
        ``(order, member)``: long and bool ``(T, C, 2, F)`` (sign 0: ``d > 0``, 1: ``d < 0``).
    """
    on_ray = ~torch.isnan(d)  # +-Inf are the outermost members of a ray
    mag = d.abs().nan_to_num(nan=0.0)
    order, member = [], []
    for side in (on_ray & (d > 0), on_ray & (d < 0)):
        o = torch.sort(torch.where(side, mag, torch.inf), dim=-1, stable=True).indices
        order.append(o)
        member.append(torch.gather(side, -1, o))
    return torch.stack(order, dim=2), torch.stack(member, dim=2)


def ray_search(engine: SimulationEngine, info: LayerInfo, channels: Tensor) -> RayOutcome:
    """Critical fraction of every single weight fault of ``channels``, ray by ray.

    Args:
        engine: the simulation engine.
        info: a Conv2d layer (see :func:`uses_rays`).
        channels: long ``(T,)`` output channels.

    Returns:
        :class:`RayOutcome`.
    """
    module = info.module
    if not isinstance(module, nn.Conv2d):
        raise TypeError(f"ray search needs a Conv2d layer, got {type(module).__name__}")
    kh, kw = module.kernel_size
    n_rays = info.fan_in // (kh * kw)  # one ray per input channel of the filter's group
    step = max(1, _ROW_BUDGET // (n_rays * 2 * engine.num_images))
    crit_all, probes_all, non_mono = [], [], 0
    for a in range(0, channels.numel(), step):
        crit, probes, n_bad = _search_channels(engine, info, channels[a : a + step], kh * kw)
        crit_all.append(crit)
        probes_all.append(probes)
        non_mono += n_bad
    return RayOutcome(torch.cat(crit_all), torch.cat(probes_all), non_mono)


def _search_channels(
    engine: SimulationEngine, info: LayerInfo, channels: Tensor, per_ray: int
) -> tuple[Tensor, Tensor, int]:
    """:func:`ray_search` for one group of channels: critical fractions, probes, non-monotone."""
    assert isinstance(info.module, nn.Conv2d)
    x_in = engine.layer_input(info.layer_num)
    n_img = engine.num_images
    out_shape = tuple(info.output_shape[1:])
    n_rays = info.fan_in // per_ray
    ch = channels.to(x_in.device)
    patterns = conv_weight_patterns(x_in, info.module, ch)  # gathered per probe, on demand
    w = patterns.weights
    n_t = w.shape[0]
    d = flip_all_bits(w) - w.unsqueeze(-1)  # (T, J, 32)
    d_ray = d.reshape(n_t, n_rays, per_ray * 32)  # fault f = (offset, bit)
    order, member = _rank(d_ray)  # (T, C, 2, F)
    n_f = per_ray * 32
    shape = (n_t, n_rays, 2, n_img)
    members = member.unsqueeze(3).expand(*shape, n_f).reshape(-1, n_f)
    idx = [torch.arange(n).view([-1 if i == k else 1 for i in range(4)]).expand(shape)
           for k, n in enumerate(shape)]  # fmt: skip
    row_t, row_c, row_s, row_i = (v.reshape(-1) for v in idx)

    def probe(t: Tensor, i: Tensor, value: Tensor, j: Tensor) -> tuple[Tensor, Tensor]:
        """Criticality and outcome key of the patterns ``value * X_j`` of channels ``t`` on
        images ``i``; each engine chunk's patterns are gathered when the chunk runs."""

        def elements(a: int, b: int) -> ChannelAdd:
            pattern, real = patterns(i[a:b], t[a:b], j[a:b])
            # a zero-padded position adds nothing (not d * 0: NaN for d = +-Inf), as the model's
            # batched convolution computes and fault injection follows
            delta = value[a:b].unsqueeze(-1).to(pattern.device) * pattern
            delta = torch.where(real, delta, torch.zeros((), dtype=delta.dtype))
            return ChannelAdd(ch[t[a:b].to(ch.device)], delta.reshape(-1, *out_shape))

        crit, keys = engine.verdicts(info.layer_num, i, elements)
        return crit.cpu(), keys.cpu()

    def oracle(rows: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
        t, c, i = row_t[rows], row_c[rows], row_i[rows]
        f = order[t, c, row_s[rows], g]
        return probe(t, i, d_ray[t, c, f], c * per_ray + f // 32)

    res = checked_search(members, oracle, scope=row_t)
    hit = (res.critical & members).view(*shape, n_f).sum(dim=(1, 2, 4))  # (T, I)
    probes = res.probes.view(shape).sum(dim=(1, 2, 3))
    nan_t, nan_j, nan_b = torch.isnan(d).nonzero(as_tuple=True)
    if nan_t.numel():  # not on a ray: each with its own weight's pattern
        t = nan_t.repeat_interleave(n_img)
        j, bit = nan_j.repeat_interleave(n_img), nan_b.repeat_interleave(n_img)
        i = torch.arange(n_img).repeat(nan_t.numel())
        crit = probe(t, i, d[t, j, bit], j)[0]
        hit.index_put_((t.cpu(), i), crit.long(), accumulate=True)
        probes += torch.bincount(t.cpu(), minlength=n_t)
    return hit.double() / (info.fan_in * 32), probes, int(res.non_monotone.sum())
