"""The activations analysis of one layer (operand fault model, one target per output neuron).

For each analysed neuron ``(c, row, col)``: its operand EDM on every image (errors
``(flip_b(x_j) - x_j) * w[c, j]`` over the real operands of its receptive field, padding
excluded), the VV search by adding signed candidates to that one neuron
(:class:`~pytorchfi_deepvigor.perturbations.NeuronAdd`), the non-critical masses and the NVF.
The CVF of a channel is the mean NVF of its analysed neurons, the LVF the mean NVF of all of them.
Neurons are processed in groups of about ``group_rows / I`` so that one bisection round carries
thousands of (neuron, image, sign) searches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pytorchfi_deepvigor.analysis.handlers import handler_for
from pytorchfi_deepvigor.analysis.probing import (
    coarse_errors,
    refine_boundaries,
    search_defaults,
    search_group,
    tied_images,
)
from pytorchfi_deepvigor.analysis.sampling import LayerSites
from pytorchfi_deepvigor.bits import AnyFaultModel, QuantizedFlip, parse_fault_model
from pytorchfi_deepvigor.catalogue import LayerInfo
from pytorchfi_deepvigor.engine import SimulationEngine
from pytorchfi_deepvigor.functional.edm import histogram, operand_edm
from pytorchfi_deepvigor.functional.vf import (
    mask_vf,
    pattern_hits,
    vulnerability_factor,
    vv_values,
)
from pytorchfi_deepvigor.perturbations import NeuronAdd, StoredAdd
from pytorchfi_deepvigor.results import LayerResult

__all__ = ["analyze_activations", "analyze_stored", "cvf_spread"]


def cvf_spread(cvf: np.ndarray) -> float | None:
    """Standard deviation of the CVFs across a layer's analysed channels (``None`` below two)."""
    return float(np.std(cvf, ddof=1)) if cvf.size > 1 else None


_CHUNK_ELEMENTS = 1 << 20  # errors per piece of the per-pattern count


def _operand_errors(
    ops: Tensor, w: Tensor, valid: Tensor | None, model: AnyFaultModel
) -> Iterator[tuple[int, int, Tensor, Tensor | None]]:
    """``(start, stop, errors (T', I, J, P), valid (T', 1, J, 1) or None)`` of the neurons
    ``start:stop``, in memory-bounded pieces."""
    n_img, n_tgt, n_ops = ops.shape
    xt, wf = ops.transpose(0, 1), w.float()
    step = max(1, _CHUNK_ELEMENTS // max(1, n_img * n_ops * model.n_patterns))
    for a in range(0, n_tgt, step):
        err = model.deltas(xt[a : a + step]).mul_(wf[a : a + step, None, :, None])
        real = None if valid is None else valid[a : a + step, None, :, None]
        yield a, min(n_tgt, a + step), err, real


def _operand_hits(
    ops: Tensor,
    w: Tensor,
    valid: Tensor | None,
    bins: Tensor,
    grid: Tensor,
    model: AnyFaultModel,
    nan_critical: Tensor | None,
) -> Tensor:
    """Critical (neuron, image, operand) triples per fault pattern, in memory-bounded pieces."""
    out = torch.zeros(model.n_patterns, dtype=torch.int64)
    for a, b, err, real in _operand_errors(ops, w, valid, model):
        nan = None if nan_critical is None else nan_critical[a:b]
        out += pattern_hits(err, bins[a:b], grid, real, nan)[1].cpu()
    return out


Errors = Iterator[tuple[int, int, Tensor, Tensor | None]]
"""Pieces ``(start, stop, errors (T', I, S, P), valid or None)`` of a group's errors."""


@dataclass
class _Group:
    """A group of neurons' EDMs ``(T, I, 2K + 1)``, the fault sites they cover, a function
    from the bins found critical (and NaN's criticality) to the critical faults per pattern,
    their errors, and how many of them are NaN ``(T, I)``."""

    counts: Tensor
    n_sites: int
    hits: Callable[[Tensor, Tensor | None], Tensor]
    errors: Callable[[], Errors]
    nans: Tensor | None  # read by the fine grid's search only (None elsewhere)


_GroupEDM = Callable[[Tensor, Tensor], _Group]
"""Per group of neurons ``(channels, positions)``: its :class:`_Group`."""


def _search_neurons(
    engine: SimulationEngine,
    info: LayerInfo,
    sites: LayerSites,
    grid: Tensor,
    group_edm: _GroupEDM,
    model: AnyFaultModel,
    target: str,
    *,
    kind: type[NeuronAdd] = NeuronAdd,
    grad: Tensor | None,
    checked: bool | None,
    keep_edm: bool,
    group_rows: int | None,
) -> tuple[LayerResult, int]:
    """The VV search of every analysed neuron of a layer, an error added to the neuron itself
    (:class:`NeuronAdd`), group by group; the neuron-target result (``target``)."""
    n_img = engine.num_images
    checked, group_rows = search_defaults(grid, checked, group_rows)
    pos_per_ch = sites.position_matrix()
    chan = torch.from_numpy(np.repeat(sites.channels, pos_per_ch.shape[1]))
    pos = torch.from_numpy(np.ascontiguousarray(pos_per_ch).reshape(-1))
    width = info.output_shape[2] if len(info.output_shape) == 3 else 1
    row, col = pos // width, pos % width
    skip = None
    if grad is not None:
        flat = grad.reshape(n_img, info.out_channels, -1)[:, chan, pos]
        skip = (flat == 0).all(dim=0).cpu()
    step = max(1, group_rows // n_img)
    plus, minus, nvf, edms, n_sites = [], [], [], [], 0
    hits = torch.zeros(model.n_patterns, dtype=torch.int64)  # critical faults per pattern
    tied = tied_images(engine)  # a quantized network's logits tie
    for a in range(0, chan.numel(), step):
        ch, ps = chan[a : a + step], pos[a : a + step]
        group = group_edm(ch, ps)
        counts = group.counts
        n_sites += group.n_sites
        r, c = row[a : a + step], col[a : a + step]

        def make(t: Tensor, value: Tensor, ch: Tensor = ch, r: Tensor = r, c: Tensor = c):
            return kind(ch[t], r[t], c[t], value)

        out = search_group(
            engine,
            info.layer_num,
            counts,
            grid,
            make,
            None if skip is None else skip[a : a + step],
            checked=checked,
            nans=group.nans,
        )
        plus.append(out.plus)
        minus.append(out.minus)
        assert out.bins is not None
        hits += group.hits(out.bins, out.nan_critical)
        if coarse_errors(model):  # few, coarse errors: each boundary bin searched
            extra = torch.zeros_like(out.mass)
            for lo, hi, err, real in group.errors():

                def sub(t: Tensor, value: Tensor, lo: int = lo) -> NeuronAdd:
                    return make(t + lo, value)

                found, per_pattern = refine_boundaries(
                    engine, info.layer_num, err.flatten(2), None if real is None
                    else real.expand(*real.shape[:2], -1, model.n_patterns).flatten(2),
                    out.bins[lo:hi], grid, sub, model.n_patterns, tied,
                )  # fmt: skip
                extra[lo:hi] += found.double()
                hits += per_pattern
            total = counts.sum(dim=-1).double().clamp_min(1)
            nvf.append(vulnerability_factor(out.mass - extra / total))
        else:
            nvf.append(out.vf)
        if keep_edm:
            edms.append(counts.cpu())
    nvf_all = torch.cat(nvf).numpy()
    cvf = nvf_all.reshape(len(sites.channels), -1).mean(axis=1)
    result = LayerResult(
        layer_num=info.layer_num,
        name=info.name,
        kind=info.kind,
        target=target,  # type: ignore[arg-type]
        n_neurons=info.neurons_per_image,
        n_weights=info.n_weights,
        channels=tuple(sites.channels.tolist()),
        cvf=tuple(cvf.tolist()),
        lvf=float(nvf_all.mean()),
        neurons=tuple(zip(chan.tolist(), row.tolist(), col.tolist(), strict=True)),
        nvf=tuple(nvf_all.tolist()),
        vv_minus=vv_values(torch.cat(minus), grid, -1).numpy(),
        vv_plus=vv_values(torch.cat(plus), grid, 1).numpy(),
        edm=torch.cat(edms).numpy() if keep_edm else None,
        bit_vf=mask_vf(hits, n_sites * n_img, model),
        cvf_spread=cvf_spread(cvf),
    )
    return result, n_sites * model.n_patterns


def analyze_activations(
    engine: SimulationEngine,
    info: LayerInfo,
    sites: LayerSites,
    grid: Tensor,
    *,
    grad: Tensor | None = None,
    checked: bool | None = None,
    keep_edm: bool = False,
    group_rows: int | None = None,
    faults: AnyFaultModel | None = None,
) -> tuple[LayerResult, int]:
    """Activations analysis of one layer.

    Args:
        engine: the simulation engine (its analysis batch is the images).
        info: the layer's catalogue entry.
        sites: the channels and positions to analyse.
        grid: candidate magnitudes.
        grad: the margin-loss gradient w.r.t. the layer output (zero-gradient skip), or ``None``.
        checked: check the monotone assumption of the search (default: for grids ending at
            ``+Inf``, i.e. the fine grid).
        keep_edm: keep the EDMs ``(neurons, images, 2K + 1)`` in the result.
        group_rows: (neuron, image) pairs searched together (default: 16384, fewer for a fine grid,
            about 4 million EDM cells per group).
        faults: the fault model (default: every single bit flip of the operands' format).

    Returns:
        ``(layer_result, faults)`` with ``faults`` the number of single faults the EDMs cover.
    """
    handler = handler_for(info.module)
    x_in = engine.layer_input(info.layer_num)
    model = parse_fault_model("flip" if faults is None else faults, x_in.dtype)

    def group_edm(ch: Tensor, ps: Tensor) -> _Group:
        ops, w, valid = handler.operands(x_in, info.module, ch.to(x_in.device), ps.to(x_in.device))
        nans: Tensor | None = None
        if bool(torch.isinf(grid[-1])):  # only the fine grid's search reads the NaNs
            counts, nans = operand_edm(ops, w, grid, valid, model, nans=True)
            nans = nans.cpu()
        else:
            counts = operand_edm(ops, w, grid, valid, model)
        return _Group(
            counts,
            int(valid.sum()),
            lambda bins, nan: _operand_hits(ops, w, valid, bins, grid, model, nan),
            lambda: _operand_errors(ops, w, valid, model),
            nans,
        )

    return _search_neurons(
        engine, info, sites, grid, group_edm, model, "activations",
        grad=grad, checked=checked, keep_edm=keep_edm, group_rows=group_rows,
    )  # fmt: skip


def analyze_stored(
    engine: SimulationEngine,
    info: LayerInfo,
    sites: LayerSites,
    grid: Tensor,
    *,
    grad: Tensor | None = None,
    checked: bool | None = None,
    keep_edm: bool = False,
    group_rows: int | None = None,
    faults: AnyFaultModel | None = None,
) -> tuple[LayerResult, int]:
    """Stored-value analysis of one layer: faults in the layer's output values themselves.

    A neuron's fault sites are its own value on each image: a pattern turns ``v`` into
    ``v' = faulty_p(v)`` and adds ``v' - v`` to that neuron's stored value
    (:class:`StoredAdd`: after the layer's rounding, an int8 layer's fused ReLU included), where
    an operand fault adds ``(x' - x) * w`` to its sum. It is the fault model of PyTorchFI's neuron injection
    (a value of a layer's output replaced), and the only target of its quantised flip
    (``fault_model="pytorchfi-int8"``, bound to the layer's range here).

    Args and returns: as :func:`analyze_activations` (the result's target is ``"stored"``).
    """
    out_map = engine.layer_output(info.layer_num)
    model = parse_fault_model("flip" if faults is None else faults, out_map.dtype)
    if isinstance(model, QuantizedFlip) and model.max_value is None:
        model = model.bound(float(out_map.abs().max()), info.layer_num)
    values = out_map.reshape(out_map.shape[0], info.out_channels, -1)  # (I, C, positions)

    def group_edm(ch: Tensor, ps: Tensor) -> _Group:
        v = values[:, ch.to(values.device), ps.to(values.device)].transpose(0, 1)  # (T, I)
        errors = model.deltas(v)  # (T, I, patterns): one site per neuron

        def hits(bins: Tensor, nan: Tensor | None) -> Tensor:
            return pattern_hits(errors.unsqueeze(2), bins, grid, None, nan)[1].cpu()

        pieces = lambda: iter([(0, v.shape[0], errors.unsqueeze(2), None)])  # noqa: E731
        nans = torch.isnan(errors).sum(dim=-1).cpu()
        return _Group(histogram(errors, grid), ch.numel(), hits, pieces, nans)

    return _search_neurons(
        engine, info, sites, grid, group_edm, model, "stored", kind=StoredAdd,
        grad=grad, checked=checked, keep_edm=keep_edm, group_rows=group_rows,
    )  # fmt: skip
