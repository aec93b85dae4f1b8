"""The weights analysis of one layer (weight fault model, one target per output channel).

For each analysed channel ``k``: its EDM on every image (errors ``(flip_b(w[k, j]) - w[k, j]) *
x[i, j, p]`` over the weights of filter ``k``, their 32 bits and the analysed output positions
``p``: all of them in a complete analysis, the drawn ones in a sampled analysis; with
``aggregate="fault"`` only the positional error of largest magnitude per weight and bit), the VV
search by adding signed candidates to every position of channel ``k``
(:class:`~pytorchfi_deepvigor.perturbations.ChannelAdd`), the non-critical masses and the CVF.
The LVF is the mean CVF of the analysed channels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pytorchfi_deepvigor.analysis.activations import cvf_spread
from pytorchfi_deepvigor.analysis.handlers import handler_for
from pytorchfi_deepvigor.analysis.probing import search_group
from pytorchfi_deepvigor.analysis.sampling import LayerSites
from pytorchfi_deepvigor.catalogue import LayerInfo
from pytorchfi_deepvigor.engine import SimulationEngine
from pytorchfi_deepvigor.functional.edm import weight_edm
from pytorchfi_deepvigor.functional.vf import vv_values
from pytorchfi_deepvigor.perturbations import ChannelAdd
from pytorchfi_deepvigor.results import LayerResult

__all__ = ["analyze_weights"]

_GATHER_ELEMENTS = 1 << 24  # operands gathered at once (64 MiB of float32)


def _edms(
    engine: SimulationEngine,
    info: LayerInfo,
    channels: Tensor,
    positions: Tensor | None,
    grid: Tensor,
    aggregate: str,
) -> Tensor:
    """EDMs ``(T, I, 2K + 1)`` of a group of channels, gathered in memory-bounded pieces."""
    handler = handler_for(info.module)
    x_in = engine.layer_input(info.layer_num)
    n_pos = positions.shape[1] if positions is not None else info.neurons_per_channel
    per_target = engine.num_images * info.fan_in * n_pos
    step = max(1, _GATHER_ELEMENTS // max(1, per_target))
    out = []
    for a in range(0, channels.numel(), step):
        ch = channels[a : a + step].to(x_in.device)
        ps = None if positions is None else positions[a : a + step].to(x_in.device)
        ops, w, valid = handler.weight_operands(x_in, info.module, ch, ps)
        out.append(weight_edm(ops, w, grid, valid, aggregate=aggregate).cpu())
    return torch.cat(out)


def analyze_weights(
    engine: SimulationEngine,
    info: LayerInfo,
    sites: LayerSites,
    grid: Tensor,
    *,
    aggregate: str = "position",
    grad: Tensor | None = None,
    keep_edm: bool = False,
    group_rows: int = 16384,
) -> tuple[LayerResult, int]:
    """Weights analysis of one layer.

    Args:
        engine: the simulation engine.
        info: the layer's catalogue entry.
        sites: the channels (and, sampled, the positions feeding their EDMs).
        grid: candidate magnitudes.
        aggregate: ``"position"`` or ``"fault"`` (see :func:`~pytorchfi_deepvigor.functional.edm.weight_edm`).
        grad: the margin-loss gradient w.r.t. the layer output (zero-gradient skip), or ``None``.
        keep_edm: keep the EDMs ``(channels, images, 2K + 1)`` in the result.
        group_rows: (channel, image) pairs searched together.

    Returns:
        ``(layer_result, faults)`` with ``faults`` the number of single weight faults covered.
    """
    n_img = engine.num_images
    channels = torch.from_numpy(sites.channels)
    positions = None if sites.positions is None else torch.from_numpy(sites.positions)
    skip = None
    if grad is not None:
        per_channel = grad.reshape(n_img, info.out_channels, -1).sum(dim=2)[:, channels]
        skip = (per_channel == 0).all(dim=0).cpu()
    step = max(1, group_rows // n_img)
    plus, minus, cvf, edms = [], [], [], []
    for a in range(0, channels.numel(), step):
        ch = channels[a : a + step]
        ps = None if positions is None else positions[a : a + step]
        counts = _edms(engine, info, ch, ps, grid, aggregate)

        def make(t: Tensor, value: Tensor, ch: Tensor = ch) -> ChannelAdd:
            return ChannelAdd(ch[t], value)

        out = search_group(
            engine, info.layer_num, counts, grid, make, None if skip is None else skip[a : a + step]
        )
        plus.append(out.plus)
        minus.append(out.minus)
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
        vv_minus=vv_values(torch.cat(minus), grid, -1).numpy(),
        vv_plus=vv_values(torch.cat(plus), grid, 1).numpy(),
        edm=torch.cat(edms).numpy() if keep_edm else None,
        cvf_spread=cvf_spread(cvf_all),
    )
    return result, len(sites.channels) * (info.n_weights // info.out_channels) * 32
