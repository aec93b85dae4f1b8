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

Every image of each (channel, ray, sign) is searched by the checked bisection (the default).
Opt-in (:data:`FIRST_ORDER_START`), the search starts from the member a first-order model of
the image's margin predicts critical first (:func:`_first_order_start`): where that guess is
right it brackets the answer in two probes and confirms it with one halfway up the ray,
instead of a bisection's ``log2`` of the members.
A ray's faults are the same on every image, so the images can instead be searched in two
stages (:func:`_guided_search`, opt-in: :data:`GUIDE_IMAGES`): the first images by the checked
bisection, the others galloping from the median of their answers. Criticality is not monotone
at the top of a ray, where the faults of different weights are all huge (exponent flips to
``2^64 .. 2^128`` or Inf) and which of them is critical depends on the weight's pattern, not on
``|d|``; where the guides' checks pass, the guided images miss those scattered critical faults:
on the validation MobileNetV2 (width 1/16, 8x8 digits) its first layer read 1.2-1.9 points
below exhaustive FI per channel, and cost more image-evaluations than the plain search (2,526
against 2,109 per channel), so it is off by default. Costs and errors against exhaustive FI:
``validation/results/ray_cost.md``.

Approximated: only the order of the unprobed faults, by ``|d|`` across the weights of one input
channel (their patterns differ by a shift), and the monotone bisection between probes
(checked on the guides, and where they found a band). The CVF is the fraction of (weight, bit, image) faults found
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

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from pytorchfi_deepvigor.analysis.probing import margin_gradient, tied_images
from pytorchfi_deepvigor.bits import AnyFaultModel, IntegerFlip, parse_fault_model
from pytorchfi_deepvigor.catalogue import LayerInfo
from pytorchfi_deepvigor.engine import SimulationEngine
from pytorchfi_deepvigor.functional.receptive import (
    WeightPatterns,
    conv_weight_patterns,
    linear_weight_patterns,
)
from pytorchfi_deepvigor.functional.search import (
    SCAN_PROBES,
    Oracle,
    checked_search,
    runner_up_margin,
)
from pytorchfi_deepvigor.perturbations import ChannelAdd
from pytorchfi_deepvigor.quantized import is_quantized_layer

__all__ = [
    "RAY_IN_CHANNELS",
    "RAY_IN_CHANNELS_1X1",
    "RayOutcome",
    "can_search_rays",
    "ray_count",
    "ray_search",
    "searched_by_rays",
    "uses_first_order",
    "uses_rays",
]

RAY_IN_CHANNELS = 3
"""Conv2d filters that read at most this many input channels (a first layer on grey or RGB
images, any depthwise convolution) are analysed ray by ray."""

RAY_IN_CHANNELS_1X1 = 8
"""1x1 Conv2d filters (where a ray is exact: every weight meets its input channel unshifted)
that read at most this many input channels are analysed ray by ray."""


def uses_rays(info: LayerInfo) -> bool:
    """Whether the weights analysis of this layer searches rays: a Conv2d on few input
    channels, and every convolution of an int8 network, whose 8 coarse faults per weight the
    mean model misreads (measured on the int8 VGG-11 of the fault-model table: MAE 0.016 ->
    0.007 points, Spearman 0.894 -> 0.987, at 6.6x the image-evaluations, still 9x fewer than
    exhaustive FI; ResNet-18 0.039 -> 0.034, 0.989 -> 0.996 at 2.1x)."""
    module = info.module
    if is_quantized_layer(module) and isinstance(module, nn.Conv2d):
        return True
    pointwise = isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (1, 1)
    return 0 < ray_count(info) <= (RAY_IN_CHANNELS_1X1 if pointwise else RAY_IN_CHANNELS)


def can_search_rays(info: LayerInfo) -> bool:
    """Whether :func:`ray_search` applies: a Conv2d (float or int8), or a float Linear on
    tokens (channels last: one ray per input feature, its map that feature over the tokens)."""
    module = info.module
    if isinstance(module, nn.Conv2d):
        return True
    return isinstance(module, nn.Linear) and info.channel_last and not is_quantized_layer(module)


def searched_by_rays(info: LayerInfo, aggregate: str) -> bool:
    """Whether the weights analysis searches this layer ray by ray: by default
    (``"equivalent"``, ``"gradient"``) where :func:`uses_rays` says so, with
    ``aggregate="rays"`` wherever :func:`can_search_rays` (every convolution and token-wise
    Linear: each fault judged along its own map, at about ``2 (log2(P / 2) + 2)`` probes per
    weight and image for ``P`` faults per weight instead of exhaustive FI's ``P``)."""
    if aggregate in ("equivalent", "gradient"):
        return uses_rays(info)
    return aggregate == "rays" and can_search_rays(info)


def ray_count(info: LayerInfo) -> int:
    """Rays per filter: the input channels a Conv2d filter reads (0 for other layers)."""
    module = info.module
    return module.in_channels // module.groups if isinstance(module, nn.Conv2d) else 0


RAY_SHARED_PADDING = 0.2
"""The weights of one input channel share a ray (their maps differ by a shift) where at most
this share of the (weight, output position) pairs meets zero padding (a 3x3 filter with
padding 1: 16% on an 8x8 map, 31% on 4x4, 56% on 2x2). On a smaller map each weight is its own
ray: there the shift is most of the map, and a ray of shifted maps sorted by ``|d|`` misread
the depthwise layers of MobileNetV2 on 2x2 and 1x1 maps (``features.14.conv.3``, fp16 exponent
flips: 0.22% against exhaustive FI's 2.73%: its largest faults were those of weights that only
meet padding, not critical, and the bisection took the ray for uncritical)."""

_ROW_BUDGET = 1 << 14  # (channel, weight, image, sign) searches per group


class RayOutcome:
    """Critical fractions of ``T`` channels on ``I`` images, and the probes spent.

    Attributes:
        critical: float64 ``(T, I)``: fraction of the channel's (weight, bit) faults critical.
        probes: long ``(T,)``: pattern probes per channel (all weights, images and signs).
        non_monotone: rays whose criticality contradicted the bisection.
        pattern_hits: long ``(P,)``: critical (channel, image, weight) triples per pattern of
            the fault model (per bit, for single-bit models).
    """

    def __init__(
        self, critical: Tensor, probes: Tensor, non_monotone: int, pattern_hits: Tensor
    ) -> None:
        self.critical = critical
        self.probes = probes
        self.non_monotone = non_monotone
        self.pattern_hits = pattern_hits


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


def ray_search(
    engine: SimulationEngine,
    info: LayerInfo,
    channels: Tensor,
    faults: AnyFaultModel | None = None,
    margin_grad: Tensor | None = None,
) -> RayOutcome:
    """Critical fraction of every single weight fault of ``channels``, ray by ray.

    Args:
        engine: the simulation engine.
        info: a Conv2d layer (see :func:`uses_rays`).
        channels: long ``(T,)`` output channels.
        faults: the fault model (default: every single bit flip of the weights' format).
        margin_grad: the gradient of each image's runner-up margin with respect to the layer's
            output (:func:`~pytorchfi_deepvigor.analysis.probing.margin_gradient`), for the
            first-order start (see :func:`uses_first_order`); computed here when omitted.

    Returns:
        :class:`RayOutcome`.
    """
    module = info.module
    if not (isinstance(module, nn.Conv2d) or (isinstance(module, nn.Linear) and info.channel_last)):
        raise TypeError(
            f"ray search needs a Conv2d layer or a Linear on tokens, got {type(module).__name__}"
        )
    model = parse_fault_model("flip" if faults is None else faults, module.weight.dtype)
    if isinstance(module, nn.Linear):
        per_ray = 1  # a token-wise Linear: one ray per input feature, exact up to the bisection
    else:
        kh, kw = module.kernel_size
        real = _patterns(engine, info, channels[:1]).real
        # one ray per input channel of the filter's group, or per weight where the map is small
        per_ray = kh * kw if 1.0 - float(real.float().mean()) <= RAY_SHARED_PADDING else 1
    n_rays = info.fan_in // per_ray
    step = max(1, _ROW_BUDGET // (n_rays * 2 * engine.num_images))
    crit_all, probes_all, non_mono = [], [], 0
    hits = torch.zeros(model.n_patterns, dtype=torch.int64)
    if uses_first_order(info) and margin_grad is None:
        margin_grad = margin_gradient(engine, info.layer_num)[0]
    for a in range(0, channels.numel(), step):
        crit, probes, n_bad, per_pattern = _search_channels(
            engine, info, channels[a : a + step], per_ray, model, margin_grad
        )
        crit_all.append(crit)
        probes_all.append(probes)
        non_mono += n_bad
        hits += per_pattern
    return RayOutcome(torch.cat(crit_all), torch.cat(probes_all), non_mono, hits)


Probe = Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
"""``(target, image, value, weight) -> (critical, outcome key)``: see :func:`pattern_probe`."""


def _patterns(engine: SimulationEngine, info: LayerInfo, channels: Tensor) -> WeightPatterns:
    """The weights' maps of a Conv2d's filters or of a token-wise Linear's output features."""
    x_in = engine.layer_input(info.layer_num)
    ch = channels.to(x_in.device)
    if isinstance(info.module, nn.Linear):
        return linear_weight_patterns(x_in, info.module, ch)
    assert isinstance(info.module, nn.Conv2d)
    return conv_weight_patterns(x_in, info.module, ch)


def pattern_probe(
    engine: SimulationEngine, info: LayerInfo, channels: Tensor, patterns: WeightPatterns
) -> Probe:
    """Criticality and outcome key of weight faults with their own maps: ``value[b] * X_j``
    (weight ``j[b]`` of filter ``channels[t[b]]``) added to that channel on image ``i[b]``,
    as fault injection adds a faulty weight's change; each engine chunk's maps are gathered
    when the chunk runs."""
    out_shape = tuple(info.output_shape[1:])

    def probe(t: Tensor, i: Tensor, value: Tensor, j: Tensor) -> tuple[Tensor, Tensor]:
        def elements(a: int, b: int) -> ChannelAdd:
            pattern, real = patterns(i[a:b], t[a:b], j[a:b])
            # a zero-padded position adds nothing (not d * 0: NaN for d = +-Inf), as the model's
            # batched convolution computes and fault injection follows
            delta = value[a:b].unsqueeze(-1).to(pattern.device) * pattern
            delta = torch.where(real, delta, torch.zeros((), dtype=delta.dtype))
            return ChannelAdd(channels[t[a:b].to(channels.device)], delta.reshape(-1, *out_shape))

        crit, keys = engine.verdicts(info.layer_num, i, elements)
        return crit.cpu(), keys.cpu()

    return probe


def _search_channels(
    engine: SimulationEngine,
    info: LayerInfo,
    channels: Tensor,
    per_ray: int,
    model: AnyFaultModel,
    margin_grad: Tensor | None,
) -> tuple[Tensor, Tensor, int, Tensor]:
    """:func:`ray_search` for one group of channels: critical fractions, probes, non-monotone,
    critical faults per pattern."""
    x_in = engine.layer_input(info.layer_num)
    n_img = engine.num_images
    n_rays = info.fan_in // per_ray
    ch = channels.to(x_in.device)
    patterns = _patterns(engine, info, ch)  # gathered per probe, on demand
    w = patterns.weights
    n_t = w.shape[0]
    n_p = model.n_patterns
    d = model.rows(ch).deltas(w)  # (T, J, patterns)
    # a weight that only meets zero padding changes nothing: none of its finite faults is
    # critical (an infinite or NaN one is left to its probe: a float16 kernel computes
    # Inf * 0 at the padding, NaN, where a float32 one at batch size > 1 skips it)
    meets = patterns.real.any(dim=1).view(1, -1, 1).to(d.device)
    d = torch.where(meets | ~torch.isfinite(d), d, 0.0)
    probe = pattern_probe(engine, info, ch, patterns)
    if per_ray == 1 and n_p <= 2 * (math.log2(max(1.0, n_p / 2)) + 2):
        # a ray of one weight's few faults: each probed costs no more than its search
        return _every_fault(probe, d, torch.arange(n_img), n_img, n_p)
    d_ray = d.reshape(n_t, n_rays, per_ray * n_p)  # fault f = (offset, pattern)
    order, member = _rank(d_ray)  # (T, C, 2, F)
    n_f = per_ray * n_p
    shape = (n_t, n_rays, 2, n_img)
    members = member.unsqueeze(3).expand(*shape, n_f).reshape(-1, n_f)
    idx = [torch.arange(n).view([-1 if i == k else 1 for i in range(4)]).expand(shape)
           for k, n in enumerate(shape)]  # fmt: skip
    row_t, row_c, row_s, row_i = (v.reshape(-1) for v in idx)

    def oracle(rows: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
        t, c, i = row_t[rows], row_c[rows], row_i[rows]
        f = order[t, c, row_s[rows], g]
        return probe(t, i, d_ray[t, c, f], c * per_ray + f // n_p)

    if margin_grad is not None and uses_first_order(info):
        start = _first_order_start(
            engine, margin_grad, ch, patterns, d_ray, order, member, per_ray, n_p
        )
        res = checked_search(members, oracle, start=start.reshape(-1),
                             bisect_uncritical=True, confirm=True)  # fmt: skip
        critical, row_probes, n_bad = res.critical, res.probes, int(res.non_monotone.sum())
    else:
        critical, row_probes, n_bad = _guided_search(members, oracle, shape)
    both = (critical & members).view(*shape, n_f)  # by rank g: fault f = order[t, c, s, g]
    hit = both.sum(dim=(1, 2, 4))  # (T, I)
    pattern = (order % n_p).unsqueeze(3).expand(*shape, n_f)
    per_pattern = torch.bincount(pattern[both], minlength=n_p)
    probes = row_probes.view(shape).sum(dim=(1, 2, 3))
    tied = tied_images(engine) if isinstance(model, IntegerFlip) else None
    if tied is not None and bool(tied.any()):
        # a tied image (an int8 network's logits tie; argmax takes the first) is not monotone
        # along a ray: every fault of the channels on it, with its own pattern (probing.py)
        on = tied.nonzero().flatten()
        hit[:, on] -= both[:, :, :, on].sum(dim=(1, 2, 4))
        per_pattern -= torch.bincount(pattern[:, :, :, on][both[:, :, :, on]], minlength=n_p)
        on_hits, on_probes, _, on_pattern = _every_fault(probe, d, on, n_img, n_p, rays_only=True)
        hit += on_hits
        per_pattern += on_pattern
        probes += on_probes
    nan_t, nan_j, nan_b = torch.isnan(d).nonzero(as_tuple=True)
    if nan_t.numel():  # not on a ray: each with its own weight's pattern
        t = nan_t.repeat_interleave(n_img)
        j, bit = nan_j.repeat_interleave(n_img), nan_b.repeat_interleave(n_img)
        i = torch.arange(n_img).repeat(nan_t.numel())
        crit = probe(t, i, d[t, j, bit], j)[0]
        hit.index_put_((t.cpu(), i), crit.long(), accumulate=True)
        per_pattern.index_put_((bit.cpu(),), crit.long(), accumulate=True)
        probes += torch.bincount(t.cpu(), minlength=n_t)
    return hit.double() / (info.fan_in * n_p), probes, n_bad, per_pattern


def _every_fault(
    probe: Probe, d: Tensor, images: Tensor, n_img: int, n_p: int, rays_only: bool = False
) -> tuple[Tensor, Tensor, int, Tensor]:
    """Every fault of the filters probed with its own weight's map on ``images``: the
    critical (filter, image) counts (long ``(T, I)``, every image of the engine: 0 off
    ``images``), the probes per filter, 0 non-monotone rays and the critical faults per
    pattern. Faults that change nothing (``d = 0``) are not probed; ``rays_only``: the NaN
    faults neither (the caller probes them). Returns the counts as critical fractions
    unless ``rays_only``."""
    n_t, n_j, _ = d.shape
    keep = d != 0
    if rays_only:
        keep &= ~torch.isnan(d)
    t, j, bit = keep.nonzero(as_tuple=True)
    k = t.numel()
    t, j, bit = (v.cpu().repeat(images.numel()) for v in (t, j, bit))
    i = images.cpu().repeat_interleave(k)
    hit = torch.zeros(n_t, n_img, dtype=torch.long)
    per_pattern = torch.zeros(n_p, dtype=torch.long)
    probes = torch.zeros(n_t, dtype=torch.long)
    if t.numel():
        crit = probe(t, i, d[t, j, bit], j)[0]
        hit.index_put_((t, i), crit.long(), accumulate=True)
        per_pattern.index_put_((bit,), crit.long(), accumulate=True)
        probes += torch.bincount(t, minlength=n_t)
    if rays_only:
        return hit, probes, 0, per_pattern
    return hit.double() / (n_j * n_p), probes, 0, per_pattern


FIRST_ORDER_START = False
"""``True`` (opt-in): each (channel, ray, sign, image) search starts from the member a
first-order model predicts critical first (see :func:`_first_order_start`) and gallops from
there; ``False`` (default): the plain checked bisection. Where the ray's largest member is not
critical the search is the plain one either way (``checked_search(bisect_uncritical=True)``),
so the start moves probes, not answers, wherever criticality is monotone. It is opt-in because
it is not monotone everywhere: 19-37% fewer image-evaluations on first layers, 0-9% on
MobileNetV2's depthwise and 1x1 layers, but the largest error against exhaustive FI grew on 4
of 7 measured layers (to 0.082 points; ``validation/results/ray_cost.md``) and a 1-input
strided first layer of ``tests/test_weight_coverage.py`` read 2.4 points off one channel's FI
(the plain bisection: within 1 point)."""


_GUESS_ELEMENTS = 1 << 22  # pattern values gathered per piece of the first-order start


def uses_first_order(info: LayerInfo) -> bool:
    """Whether the ray search of this layer starts from the first-order guess (and so needs
    the margin's gradient with respect to the layer's output: one backward per image chunk)."""
    return uses_rays(info) and FIRST_ORDER_START and GUIDE_IMAGES is None


def _first_order_start(
    engine: SimulationEngine,
    grad: Tensor,
    ch: Tensor,
    patterns: WeightPatterns,
    d_ray: Tensor,
    order: Tensor,
    member: Tensor,
    per_ray: int,
    n_p: int,
) -> Tensor:
    """Per ``(T, C, 2, I)`` row, the rank of the first member that the first-order model of the
    image's runner-up margin ``m`` predicts critical: a fault ``d`` of weight ``j`` moves it by
    ``d * G_j``, ``G_j = sum_p g[p] X_j[p]`` (``g``: the margin's gradient with respect to the
    channel's output, one backward per image chunk of the layer), critical where
    ``m + d * G_j < 0``; the number of members where none is predicted critical."""
    n_t, n_rays, n_f = d_ray.shape
    n_img = grad.shape[0]
    g = grad[:, ch].reshape(n_img, n_t, -1).float()  # (I, T, P)
    margin = runner_up_margin(engine.golden_logits, engine.golden_top1).float().cpu()
    n_j = n_rays * per_ray
    t_all = torch.arange(n_t).repeat_interleave(n_j * n_img)
    j_all = torch.arange(n_j).repeat_interleave(n_img).repeat(n_t)
    i_all = torch.arange(n_img).repeat(n_t * n_j)
    weights_g = torch.empty(t_all.numel())
    step = max(1, _GUESS_ELEMENTS // max(1, g.shape[2]))
    for a in range(0, t_all.numel(), step):
        i, t, j = i_all[a : a + step], t_all[a : a + step], j_all[a : a + step]
        pattern, real = patterns(i, t, j)
        x = torch.where(real, pattern.float(), torch.zeros((), dtype=torch.float32))
        weights_g[a : a + step] = (x * g[i.to(g.device), t.to(g.device)]).sum(dim=-1).cpu()
    weights_g = weights_g.view(n_t, n_j, n_img)  # G[t, j, i]
    f = order  # (T, C, 2, K): fault index on the ray, by rank
    j_of = torch.arange(n_rays).view(1, -1, 1, 1) * per_ray + f // n_p
    d_of = torch.gather(d_ray.unsqueeze(2).expand(-1, -1, 2, -1), 3, f)
    moved = d_of.unsqueeze(3) * torch.gather(
        weights_g.unsqueeze(1).unsqueeze(2).expand(-1, n_rays, 2, -1, -1),
        3,
        j_of.unsqueeze(-1).expand(-1, -1, -1, -1, n_img),
    ).transpose(3, 4)  # (T, C, 2, I, K): the margin's first-order move
    predicted = (margin.view(1, 1, 1, -1, 1) + moved < 0) & member.unsqueeze(3)
    first = torch.where(predicted.any(dim=-1), predicted.float().argmax(dim=-1), n_f)
    return torch.minimum(first, member.sum(dim=-1).unsqueeze(-1))


GUIDE_IMAGES: int | None = None
"""``None`` (default): every image searched by the checked bisection. A number: only that many
images per (channel, ray, sign) are, the others start from the median of their answers and
probe one by one the members where the guide images found criticality not monotone (cheaper on
some layers, and less accurate where the scattered top of a ray passes the guides' checks; see
the module docstring)."""


def _guided_search(
    members: Tensor, oracle: Oracle, shape: tuple[int, int, int, int]
) -> tuple[Tensor, Tensor, int]:
    """:func:`checked_search` of the ``(T, C, 2, I)`` rows, by ``(T, C, 2)`` group (a ray's
    faults of one sign), in two stages. A ray's members are the same faults on every image;
    only where criticality starts differs, and where it is not monotone: at the top, where faults of
    different weights are all huge (exponent flips to ``2^64 .. 2^128`` or Inf), which of them
    is critical depends on the weight's pattern, not on ``|d|``. The first
    :data:`GUIDE_IMAGES` images of each group are searched as :func:`checked_search` does
    (checked, scanned where the check fails); the others too, but galloping from the median
    rank of the guides' answers where their largest member is critical, and where a guide was
    not monotone, every member from the lowest rank critical in such a guide (the *band*) is
    probed one by one, the search running below it. Returns the critical members, the probes
    per row and the non-monotone rows."""
    n_img, k = shape[3], members.shape[1]
    group = torch.arange(members.shape[0]) // n_img
    n_guides = n_img if GUIDE_IMAGES is None else min(GUIDE_IMAGES, n_img)
    guide = torch.arange(members.shape[0]) % n_img < n_guides
    rows = guide.nonzero().squeeze(1)
    res = checked_search(members[rows], lambda r, g: oracle(rows[r], g))
    critical = torch.zeros_like(members)
    probes = torch.zeros(members.shape[0], dtype=torch.long)
    critical[rows], probes[rows] = res.critical, res.probes
    n_bad = int(res.non_monotone.sum())
    rank_of = members.cumsum(dim=1) - 1  # a member's rank in its row
    answer = (members[rows] & (torch.arange(k) < res.index.view(-1, 1))).sum(dim=1)
    n_groups = int(group.max()) + 1
    found = (res.index < k).view(n_groups, -1)
    median = torch.where(found, answer.view(n_groups, -1).double(), torch.nan).nanmedian(dim=1)
    guess = median.values.nan_to_num(nan=k).long()  # where the guides found a critical fault
    floor = torch.where(found, answer.view(n_groups, -1), k).amin(dim=1)
    lowest = torch.where(res.critical & members[rows], rank_of[rows], k).amin(dim=1)
    band = torch.full((n_groups,), k, dtype=torch.long)
    bad = res.non_monotone
    band.scatter_reduce_(0, group[rows][bad], lowest[bad], reduce="amin")
    rows = (~guide).nonzero().squeeze(1)
    if rows.numel() == 0:
        return critical, probes, n_bad
    upper = members[rows] & (rank_of[rows] >= band[group[rows]].view(-1, 1))
    r_u, g_u = upper.nonzero(as_tuple=True)
    for a in range(0, r_u.numel(), SCAN_PROBES):  # the band: each member its own probe,
        r, g = rows[r_u[a : a + SCAN_PROBES]], g_u[a : a + SCAN_PROBES]  # in the search's pieces
        crit = oracle(r, g)
        critical[r, g] = crit[0] if isinstance(crit, tuple) else crit
        probes.index_add_(0, r, torch.ones_like(r))
    lower = members[rows] & ~upper
    n_lower = lower.sum(dim=1)
    start = torch.minimum(guess[group[rows]], n_lower)
    low = torch.minimum(floor[group[rows]], n_lower)
    res = checked_search(lower, lambda r, g: oracle(rows[r], g), start=start, floor=low)
    critical[rows] |= res.critical & lower
    probes[rows] += res.probes
    return critical, probes, n_bad + int(res.non_monotone.sum())
