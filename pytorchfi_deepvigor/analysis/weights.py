"""The weights analysis of one layer (weight fault model, one target per output channel).

For each analysed channel ``k``: its EDM on every image, the VV search by adding signed
candidates to every position of channel ``k``
(:class:`~pytorchfi_deepvigor.perturbations.ChannelAdd`), the non-critical masses and the CVF.
The LVF is the mean CVF of the analysed channels.

What a weight fault does, and how each ``aggregate`` maps it onto the channel's VVs. Flipping
bit ``b`` of weight ``j`` of filter ``k`` changes it by ``d = flip_b(w) - w`` and adds the
*pattern* ``d * X_j`` to channel ``k`` of image ``i``: ``X_j[p]`` is the operand the weight
meets at output position ``p`` (its input map at the kernel offset). The VVs are measured for a
*constant* error over the channel, so each fault needs one channel-wide equivalent ``e``:

* ``"equivalent"`` (the default): the channel-wide constant with the pattern's mean,
  ``e = d * mean_p X_j[p]`` over the real (unpadded) positions: one error per (weight, bit,
  image), no backward pass; a sampled analysis uses the same model (the drawn positions are not
  needed). For a channels-last Linear layer (a token-wise MLP: ViT, ConvNeXt) on inputs of
  both signs (after a LayerNorm) the pattern's signed parts are judged apart, over the tokens
  the network reads (:func:`read_positions`): ``e+ = d * mean_p X_j^+[p]`` and
  ``e- = d * mean_p X_j^-[p]`` (``X^+ = max(X, 0)``, ``X^- = min(X, 0)``), the fault critical
  where either is. The nonlinearity after such a layer (GELU) acts on each token before
  anything mixes them, so the tokens the fault pushes up pass it whatever the others do, while
  the mean lets the two parts cancel: a ConvNeXt ``pwconv1`` channel read 1.45% with the mean,
  2.71% with the parts, FI 2.71%; a ViT last-block ``fc1`` channel, whose output only the class
  token carries on, 3.02% with the parts over every token and 1.60% over the read one, FI 1.60%.
  In a convolution the next layer's kernel sums neighbouring positions again, so the parts
  partly cancel downstream: judged apart they read high (an outside model's conv after a GELU:
  0.026% MAE with the mean, 0.101% with the parts), and convolutions keep the mean.
  Approximated: a pattern (or part) is judged as the constant of equal total; measured against
  exhaustive FI in ``validation/REPORT.md``. Where the filter reads few input channels, any
  constant is worst and a search along the weights' own patterns is affordable
  (:mod:`~pytorchfi_deepvigor.analysis.rays`; exact up to the order of the unprobed faults and
  the bisection); no VVs of the channel
  (``vv_minus``/``vv_plus`` are ``None`` for such a layer). That is Conv2d filters on at most
  :data:`~pytorchfi_deepvigor.analysis.rays.RAY_IN_CHANNELS` input channels (first layers,
  depthwise convolutions: a first layer on signed images read 40% low) and 1x1 filters on at
  most :data:`~pytorchfi_deepvigor.analysis.rays.RAY_IN_CHANNELS_1X1` (the narrow projections
  and expansions of inverted-residual blocks: a MobileNetV2 projection channel on 6 sparse,
  peaked input maps read 4.1% against FI's 7.0%, now 0.75 points off at most; the
  root-mean-square instead of the mean took that model from 0.111% to 0.079% MAE but a residual
  BatchNorm CNN from 0.15% to 0.31%: no single constant fits every network).
* ``"gradient"``: the first-order equivalent, rays likewise. Let ``M`` be the image's runner-up
  margin (golden logit minus the largest other; the class flips when ``M < 0``) and
  ``G[p] = dM / d out[k, p]`` its gradient at the layer's output. The pattern moves ``M`` by
  ``d * sum_p G[p] X_j[p]`` to first order, a constant ``e`` by ``e * sum_p G[p]``; equal
  moves give ``e = d * (sum_p G[p] X_j[p]) / (sum_p G[p])`` (one backward per layer; exact for a
  Linear layer, where the channel has one position). Where ``sum_p G[p]`` vanishes
  (``|sum G| <= 1e-6 sum |G|``) the plain mean is used. Approximated: the margin is linear in the
  pattern, which it is not across a ReLU's kink, and the critical errors are the huge ones; with
  mixed-sign gradients the ratio can even flip the error's sign.
* ``"position"`` (the paper): one error ``d * X_j[p]`` per (weight, bit, analysed position),
  each judged as if it were channel-wide.
* ``"fault"``: one error per (weight, bit): the positional error of largest magnitude.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from pytorchfi_deepvigor.analysis.activations import cvf_spread
from pytorchfi_deepvigor.analysis.handlers import handler_for
from pytorchfi_deepvigor.analysis.probing import (
    GroupOutcome,
    margin_gradient,
    refine_boundaries,
    search_defaults,
    search_group,
    tied_images,
)
from pytorchfi_deepvigor.analysis.rays import pattern_probe, ray_search, searched_by_rays
from pytorchfi_deepvigor.analysis.sampling import LayerSites
from pytorchfi_deepvigor.bits import AnyFaultModel, IntegerFlip, parse_fault_model
from pytorchfi_deepvigor.catalogue import LayerInfo
from pytorchfi_deepvigor.engine import SimulationEngine
from pytorchfi_deepvigor.functional.edm import bin_lookup, histogram, weight_edm
from pytorchfi_deepvigor.functional.receptive import conv_weight_patterns, linear_operand_means
from pytorchfi_deepvigor.functional.vf import mask_vf, vulnerability_factor, vv_values
from pytorchfi_deepvigor.perturbations import ChannelAdd, NeuronAdd
from pytorchfi_deepvigor.results import LayerResult

__all__ = ["analyze_weights", "AGGREGATES", "equivalent_errors"]

AGGREGATES = ("equivalent", "gradient", "position", "fault", "rays")
"""How a weight fault's pattern becomes channel-wide errors, the default first."""

_GATHER_ELEMENTS = 1 << 24  # operands gathered at once (64 MiB of float32)
_VANISHING = 1e-6  # |sum G| <= this * sum |G|: no first-order equivalent, use the plain mean


def equivalent_errors(
    ops: Tensor, w: Tensor, valid: Tensor, grad: Tensor | None, faults: AnyFaultModel | None = None
) -> Tensor:
    """First-order channel-wide equivalent errors of every single bit flip of the filters.

    Args:
        ops: the operands each weight meets at every output position, ``(I, T, J, P)``.
        w: the filters ``(T, J)``.
        valid: bool ``(T, J, P)``: ``False`` at zero padding.
        grad: the margin's gradient at the ``T`` channels' positions, ``(I, T, P)``, or
            ``None`` for the plain mean of the real operands.
        faults: the fault model (default: every single bit flip of ``w``'s format).

    Returns:
        float32 ``(T, I, J * patterns)``: ``d * sum_p G X_j / sum_p G`` per (weight,
        pattern), or the plain mean of the real operands where ``sum_p G`` vanishes.
    """
    ops = ops.float()
    n_real = valid.sum(dim=-1).clamp_min(1).to(ops.dtype)  # (T, J)
    ratio = ops.sum(dim=-1) / n_real  # (I, T, J): the plain mean
    if grad is not None:
        g = grad.to(ops.dtype)
        weighted = torch.einsum("itjp,itp->itj", ops, g)
        total = g.sum(dim=-1, keepdim=True)  # (I, T, 1)
        seen = total.abs() > _VANISHING * g.abs().sum(dim=-1, keepdim=True)
        ratio = torch.where(seen, weighted / torch.where(seen, total, 1.0), ratio)
    return errors_of_scales(ratio, w, faults)


def errors_of_scales(scale: Tensor, w: Tensor, faults: AnyFaultModel | None = None) -> Tensor:
    """Channel-wide errors ``d * scale[i, t, j]`` of every fault ``d`` of the filters.

    Args:
        scale: ``(I, T, J)``: per image, the factor a weight's change is multiplied by.
        w: the filters ``(T, J)``, in the model's format.
        faults: the fault model (default: every single bit flip of ``w``'s format).

    Returns:
        float32 ``(T, I, J * patterns)`` (32 patterns for float32 flips).
    """
    eps = parse_fault_model("flip" if faults is None else faults, w.dtype).deltas(w)
    err = eps.unsqueeze(0) * scale.float().unsqueeze(-1)  # (I, T, J, patterns)
    return err.transpose(0, 1).flatten(2)


def _channel_view(t: Tensor, info: LayerInfo) -> Tensor:
    """A layer-output-shaped tensor as ``(I, C_out, positions)``."""
    return t.reshape(t.shape[0], info.out_channels, -1)


def read_positions(engine: SimulationEngine, info: LayerInfo) -> Tensor:
    """Which output positions (tokens) of a channels-last Linear layer the network reads.

    NaN added to channel 0 at one position of the first image, one batched run over every
    position: a position whose NaN does not reach the logits is read by no later node (a token
    the classifier head skips, as after a ViT's last block). Cached per engine and layer.
    Where no position reads as read (channel 0 itself dropped), every position counts.
    """
    cache = _READ.setdefault(engine, {})
    if info.layer_num not in cache:
        n_pos = info.neurons_per_channel
        pos = torch.arange(n_pos)
        width = info.output_shape[2] if len(info.output_shape) == 3 else 1
        pert = NeuronAdd(
            torch.zeros(n_pos, dtype=torch.long),
            pos // width,
            pos % width,
            torch.full((n_pos,), float("nan")),
        )
        logits = engine.run(info.layer_num, torch.zeros(n_pos, dtype=torch.long), pert)
        read = (~torch.isfinite(logits).all(dim=1)).cpu()
        cache[info.layer_num] = read if bool(read.any()) else torch.ones_like(read)
    return cache[info.layer_num]


_READ: weakref.WeakKeyDictionary[SimulationEngine, dict[int, Tensor]] = weakref.WeakKeyDictionary()


def _signed_input(engine: SimulationEngine, info: LayerInfo) -> bool:
    """Whether the layer's input holds negative values on some image."""
    return bool((engine.layer_input(info.layer_num) < 0).any())


def _split(engine: SimulationEngine, info: LayerInfo) -> bool:
    """Whether the default model judges a fault's signed parts separately: channels-last Linear
    layers (token-wise MLPs) on inputs of both signs."""
    return info.channel_last and _signed_input(engine, info)


def _signed_errors(
    engine: SimulationEngine, info: LayerInfo, channels: Tensor, faults: AnyFaultModel
) -> Iterator[tuple[int, int, Tensor, Tensor | None]]:
    """The default model's two channel-wide errors of every fault, in memory-bounded pieces.

    Yields ``(start, stop, pos, neg)`` for ``channels[start:stop]``: float32 ``(T, I, J * P)``
    each, ``d * mean_p X_j^+`` and ``d * mean_p X_j^-``, the means of the pattern's positive and
    negative parts over the real positions (for a channels-last Linear, over the tokens the
    network reads); a part that is empty gives ``d * 0``: 0, or NaN for an infinite or NaN
    ``d``, which FI sees too (such a weight times a zero operand is NaN). ``neg`` is ``None``
    and ``pos`` the plain ``d * mean_p X_j`` where the parts are not split (:func:`_split`).
    """
    handler = handler_for(info.module)
    x_in = engine.layer_input(info.layer_num)
    parts = (x_in.clamp_min(0), x_in.clamp_max(0)) if _split(engine, info) else (x_in,)
    read = read_positions(engine, info) if info.channel_last else None
    step = max(1, _GATHER_ELEMENTS // max(1, engine.num_images * info.fan_in * faults.n_patterns))
    for a in range(0, channels.numel(), step):
        ch = channels[a : a + step].to(x_in.device)
        errors = []
        for part in parts:
            if read is None:
                means, w, _ = handler.operand_means(part, info.module, ch)
            else:
                assert isinstance(info.module, nn.Linear)  # only channels-last Linears have reads
                means, w, _ = linear_operand_means(part, info.module, ch, read)
            errors.append(errors_of_scales(means, w, faults.rows(ch)))  # (T, I, J * patterns)
        yield a, a + ch.numel(), errors[0], errors[1] if len(errors) > 1 else None


def _fault_maps(
    engine: SimulationEngine, info: LayerInfo, channels: Tensor, model: AnyFaultModel
) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """``(target, image, column) -> critical``: weight faults of Conv2d filters ``channels``
    (column ``j * patterns + p``: pattern ``p`` of weight ``j``) evaluated with their own maps
    (:func:`~pytorchfi_deepvigor.analysis.rays.pattern_probe`)."""
    x_in = engine.layer_input(info.layer_num)
    assert isinstance(info.module, nn.Conv2d)
    ch = channels.to(x_in.device)
    patterns = conv_weight_patterns(x_in, info.module, ch)
    probe = pattern_probe(engine, info, ch, patterns)
    d = model.rows(channels).deltas(patterns.weights)  # (T, J, patterns)
    n_p = model.n_patterns

    def judge(t: Tensor, i: Tensor, n: Tensor) -> Tensor:
        j = n // n_p
        return probe(t, i, d[t, j, n % n_p], j)[0]

    return judge


def _equivalent_hits(
    engine: SimulationEngine,
    info: LayerInfo,
    channels: Tensor,
    grid: Tensor,
    out: GroupOutcome,
    faults: AnyFaultModel,
) -> tuple[Tensor, Tensor]:
    """CVFs under the default model (a fault is critical where either signed part's bin is),
    and the critical (channel, image, weight) triples per fault pattern."""
    assert out.bins is not None
    bins = out.bins
    cvf, per_pattern = [], torch.zeros(faults.n_patterns, dtype=torch.int64)
    n_img, n_p = engine.num_images, faults.n_patterns
    for a, b, pos, neg in _signed_errors(engine, info, channels, faults):
        crit = bins[a:b].to(pos.device)
        hit = bin_lookup(pos, crit, grid)
        if neg is not None:
            hit |= bin_lookup(neg, crit, grid)
        cvf.append(hit.double().mean(dim=(1, 2)).cpu())
        per_pattern += hit.view(b - a, n_img, -1, n_p).sum(dim=(0, 1, 2)).cpu()
    return torch.cat(cvf), per_pattern


def _edms(
    engine: SimulationEngine,
    info: LayerInfo,
    channels: Tensor,
    positions: Tensor | None,
    grid: Tensor,
    aggregate: str,
    faults: AnyFaultModel,
    margin_grad: Tensor | None = None,
) -> Tensor:
    """EDMs ``(T, I, 2K + 1)`` of a group of channels, gathered in memory-bounded pieces."""
    handler = handler_for(info.module)
    x_in = engine.layer_input(info.layer_num)
    if aggregate == "equivalent":  # both signed parts of every fault, one histogram
        return torch.cat(
            [
                histogram(pos, grid).cpu() + (0 if neg is None else histogram(neg, grid).cpu())
                for _, _, pos, neg in _signed_errors(engine, info, channels, faults)
            ]
        )
    if aggregate == "gradient":
        if margin_grad is None:
            raise ValueError("aggregate='gradient' needs the margin gradient of the layer")
        positions = None  # the equivalent covers every position
    n_pos = positions.shape[1] if positions is not None else info.neurons_per_channel
    per_target = engine.num_images * info.fan_in * n_pos
    step = max(1, _GATHER_ELEMENTS // max(1, per_target))
    out = []
    for a in range(0, channels.numel(), step):
        ch = channels[a : a + step].to(x_in.device)
        ps = None if positions is None else positions[a : a + step].to(x_in.device)
        ops, w, valid = handler.weight_operands(x_in, info.module, ch, ps)
        rows = faults.rows(ch)
        if aggregate == "gradient":
            assert margin_grad is not None
            g = _channel_view(margin_grad, info)[:, ch.to(margin_grad.device)].to(ops.device)
            out.append(histogram(equivalent_errors(ops, w, valid, g, rows), grid).cpu())
        else:
            out.append(weight_edm(ops, w, grid, valid, aggregate=aggregate, faults=rows).cpu())
    return torch.cat(out)


def analyze_weights(
    engine: SimulationEngine,
    info: LayerInfo,
    sites: LayerSites,
    grid: Tensor,
    *,
    aggregate: str = "equivalent",
    grad: Tensor | None = None,
    margin_grad: Tensor | None = None,
    checked: bool | None = None,
    keep_edm: bool = False,
    group_rows: int | None = None,
    faults: AnyFaultModel | None = None,
) -> tuple[LayerResult, int]:
    """Weights analysis of one layer.

    Args:
        engine: the simulation engine.
        info: the layer's catalogue entry.
        sites: the channels (and, sampled, the positions feeding their EDMs).
        grid: candidate magnitudes.
        aggregate: ``"equivalent"``, ``"gradient"``, ``"position"``, ``"fault"`` (see the module
            docstring) or ``"rays"`` (every layer :func:`~.rays.can_search_rays` covers searched
            ray by ray, the others as ``"equivalent"``).
        grad: the margin-loss gradient w.r.t. the layer output (zero-gradient skip), or ``None``.
        margin_grad: the runner-up margin's gradient w.r.t. the layer output
            (:func:`~pytorchfi_deepvigor.analysis.probing.margin_gradient`); required by
            ``"equivalent"``, computed here when omitted.
        checked: check the monotone assumption of the search (default: for grids ending at
            ``+Inf``, i.e. the fine grid).
        keep_edm: keep the EDMs ``(channels, images, 2K + 1)`` in the result.
        group_rows: (channel, image) pairs searched together (default: 16384, fewer for a fine grid,
            about 4 million EDM cells per group).
        faults: the fault model (default: every single bit flip of the weights' format).

    Returns:
        ``(layer_result, faults)`` with ``faults`` the number of single weight faults covered.
    """
    weight = info.module.weight
    assert isinstance(weight, Tensor)
    model = parse_fault_model("flip" if faults is None else faults, weight.dtype)
    if aggregate not in AGGREGATES:
        raise ValueError(f"expected aggregate in {AGGREGATES}, got {aggregate!r}")
    n_img = engine.num_images
    rays = searched_by_rays(info, aggregate)
    if aggregate == "rays" and not rays:  # a Linear on (N, F): its one position, exact
        aggregate = "equivalent"
    if aggregate == "gradient" and margin_grad is None and not rays:
        margin_grad = margin_gradient(engine, info.layer_num)[0]
    checked, group_rows = search_defaults(grid, checked, group_rows)
    channels = torch.from_numpy(sites.channels)
    positions = None if sites.positions is None else torch.from_numpy(sites.positions)
    skip = None
    if grad is not None:
        per_channel = grad.reshape(n_img, info.out_channels, -1).sum(dim=2)[:, channels]
        skip = (per_channel == 0).all(dim=0).cpu()
    step = max(1, group_rows // n_img)
    signed = aggregate == "equivalent" and not rays and _split(engine, info)  # once per layer
    plus, minus, cvf, edms = [], [], [], []
    hits: Tensor | None = None  # critical faults per pattern (the default model only)
    if rays:
        found = ray_search(engine, info, channels, model, margin_grad=margin_grad)
        cvf.append(found.critical.mean(dim=1))
        hits = found.pattern_hits
    for a in range(0, 0 if rays else channels.numel(), step):
        ch = channels[a : a + step]
        ps = None if positions is None else positions[a : a + step]
        counts = _edms(engine, info, ch, ps, grid, aggregate, model, margin_grad)

        def make(t: Tensor, value: Tensor, ch: Tensor = ch) -> ChannelAdd:
            return ChannelAdd(ch[t], value)

        out = search_group(
            engine,
            info.layer_num,
            counts,
            grid,
            make,
            None if skip is None else skip[a : a + step],
            checked=checked,
        )
        plus.append(out.plus)
        minus.append(out.minus)
        if aggregate == "equivalent" and isinstance(model, IntegerFlip) and not signed:
            # few, coarse errors: each boundary bin's own errors searched (probing.py)
            _, per_pattern = _equivalent_hits(engine, info, ch, grid, out, model)
            extra = torch.zeros_like(out.mass)
            assert out.bins is not None
            tied = tied_images(engine)
            for lo, hi, pos, _ in _signed_errors(engine, info, ch, model):

                def sub(t: Tensor, value: Tensor, lo: int = lo, ch: Tensor = ch) -> ChannelAdd:
                    return ChannelAdd(ch[t + lo], value)

                exact = None
                if isinstance(info.module, nn.Conv2d) and tied is not None and bool(tied.any()):
                    exact = _fault_maps(engine, info, ch[lo:hi], model)
                gained, more = refine_boundaries(
                    engine, info.layer_num, pos, None, out.bins[lo:hi], grid, sub,
                    model.n_patterns, tied, exact,
                )  # fmt: skip
                extra[lo:hi] += gained.double()
                per_pattern += more
            total = counts.sum(dim=-1).double().clamp_min(1)
            cvf.append(vulnerability_factor(out.mass - extra / total))
            hits = per_pattern if hits is None else hits + per_pattern
        elif aggregate == "equivalent":
            part, per_pattern = _equivalent_hits(engine, info, ch, grid, out, model)
            cvf.append(part if signed else out.vf)
            hits = per_pattern if hits is None else hits + per_pattern
        else:
            cvf.append(out.vf)
        if keep_edm:
            edms.append(counts)
    cvf_all = torch.cat(cvf).numpy()
    neurons = None
    if sites.positions is not None:
        width = info.output_shape[2] if len(info.output_shape) == 3 else 1
        neurons = tuple(
            (int(c), int(p) // width, int(p) % width)
            for c, row in zip(sites.channels, sites.positions, strict=True)
            for p in row
        )
    result = LayerResult(
        layer_num=info.layer_num,
        name=info.name,
        kind=info.kind,
        target="weights",
        n_neurons=info.neurons_per_image,
        n_weights=info.n_weights,
        channels=tuple(sites.channels.tolist()),
        cvf=tuple(cvf_all.tolist()),
        lvf=float(cvf_all.mean()),
        neurons=neurons,
        vv_minus=None if rays else vv_values(torch.cat(minus), grid, -1).numpy(),
        vv_plus=None if rays else vv_values(torch.cat(plus), grid, 1).numpy(),
        edm=torch.cat(edms).numpy() if keep_edm and not rays else None,
        cvf_spread=cvf_spread(cvf_all),
        bit_vf=None
        if hits is None
        else mask_vf(hits, len(sites.channels) * n_img * info.fan_in, model),
    )
    n_faults = len(sites.channels) * (info.n_weights // info.out_channels) * model.n_patterns
    return result, n_faults
