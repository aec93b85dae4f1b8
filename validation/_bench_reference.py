"""The unbatched reference analysis of ``validation/bench.py``: one target per forward.

It runs the DeepVigor+ method the way the authors' code executes it: targets one after the
other, each probe a **full forward from the input** of the analysis images with a forward hook
that adds each image's candidate to the target (one neuron, or every position of one channel),
one sign at a time. Its maths are the package's (the same EDM functions, the same bisection and
first probe, the same VF formulas), so it must give the **same VFs** as
:class:`~pytorchfi_deepvigor.analysis.DeepVigorAnalyzer`; only the execution differs (no golden
cache, no suffix, no batching across targets or signs). Images whose search is over are not
evaluated again, which makes this reference faster than the authors' code, never slower.

Example:
    >>> import torch
    >>> from torch import nn
    >>> torch.manual_seed(0); net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
    <torch._C.Generator object at ...>
    >>> ref = reference_analysis(net.eval(), torch.randn(4, 1, 4, 4), layers=[0], sampling=None)
    >>> sorted(ref.vfs), ref.vfs[(0, "weights")].shape
    ([(0, 'activations'), (0, 'weights')], (2,))
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from pytorchfi_deepvigor._guard import eval_mode
from pytorchfi_deepvigor.analysis.handlers import handler_for
from pytorchfi_deepvigor.analysis.probing import first_probe_index
from pytorchfi_deepvigor.analysis.sampling import LayerSites, draw_sites
from pytorchfi_deepvigor.catalogue import LayerInfo, build_catalogue
from pytorchfi_deepvigor.functional.edm import (
    candidate_grid,
    operand_edm,
    search_members,
    weight_edm,
)
from pytorchfi_deepvigor.functional.search import bisect_search
from pytorchfi_deepvigor.functional.vf import non_critical_mass, vulnerability_factor

__all__ = ["ReferenceResult", "reference_analysis"]

AddFn = Callable[[Tensor, Tensor], None]
"""``add(layer_output_batch, values)``: add one value per batch element to the target, in place."""


@dataclass
class ReferenceResult:
    """VFs per ``(layer_num, "activations" | "weights")`` (NVFs per neuron, CVFs per channel)."""

    vfs: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)
    forwards: int = 0
    image_evaluations: int = 0
    wall_time_s: float = 0.0
    cpu_time_s: float = 0.0


class _Probe:
    """Full forwards of the model with a hook that adds per-image values to one target."""

    def __init__(self, model: nn.Module, images: Tensor, result: ReferenceResult) -> None:
        self.model, self.images, self.result = model, images, result
        self.golden_top1 = model(images).argmax(dim=1)
        self.add: AddFn | None = None
        self.values: Tensor | None = None

    def hook(self, _m: nn.Module, _i: object, out: Tensor) -> Tensor | None:
        if self.add is None or self.values is None:
            return None
        out = out.clone()
        self.add(out, self.values)
        return out

    def critical(self, image_idx: Tensor, values: Tensor, add: AddFn) -> Tensor:
        self.add, self.values = add, values
        try:
            logits = self.model(self.images[image_idx]).float()
        finally:
            self.add = self.values = None
        self.result.forwards += 1
        self.result.image_evaluations += int(image_idx.numel())
        wrong = logits.argmax(dim=1) != self.golden_top1[image_idx]
        return wrong | ~torch.isfinite(logits).all(dim=1)


def _neuron_add(channel: int, row: int, col: int) -> AddFn:
    def add(out: Tensor, values: Tensor) -> None:
        b = torch.arange(out.shape[0], device=out.device)
        if out.dim() == 2:
            out[b, channel] = out[b, channel] + values
        else:
            out[b, channel, row, col] = out[b, channel, row, col] + values

    return add


def _channel_add(channel: int) -> AddFn:
    def add(out: Tensor, values: Tensor) -> None:
        shape = (-1,) + (1,) * (out.dim() - 2)
        out[:, channel] = out[:, channel] + values.view(shape)

    return add


def _target_vf(probe: _Probe, counts: Tensor, grid: Tensor, add: AddFn) -> float:
    """VF of one target from its EDMs ``(I, 2K + 1)``: one bisection per sign, full forwards."""
    values = grid.to(counts.device, torch.float32)
    first = first_probe_index(grid)
    index = []
    for sign, members in zip((1.0, -1.0), search_members(counts, grid), strict=True):

        def oracle(rows: Tensor, g: Tensor, sign: float = sign) -> Tensor:
            return probe.critical(rows, sign * values[g], add)

        index.append(bisect_search(members, oracle, first=first).index)
    mass = non_critical_mass(counts, index[0], index[1])
    return float(vulnerability_factor(mass))


def _activations(probe: _Probe, info: LayerInfo, sites: LayerSites, x_in: Tensor, grid: Tensor):
    handler = handler_for(info.module)
    width = info.output_shape[2] if len(info.output_shape) == 3 else 1
    out = []
    for channel, positions in zip(sites.channels, sites.position_matrix(), strict=True):
        for pos in positions:
            ch = torch.tensor([int(channel)], device=x_in.device)
            ps = torch.tensor([int(pos)], device=x_in.device)
            ops, w, valid = handler.operands(x_in, info.module, ch, ps)
            counts = operand_edm(ops, w, grid, valid)[0]
            add = _neuron_add(int(channel), int(pos) // width, int(pos) % width)
            out.append(_target_vf(probe, counts, grid, add))
    return np.array(out)


def _weights(
    probe: _Probe,
    info: LayerInfo,
    sites: LayerSites,
    x_in: Tensor,
    grid: Tensor,
    aggregate: str,
):
    handler = handler_for(info.module)
    out = []
    for i, channel in enumerate(sites.channels):
        ps = None if sites.positions is None else torch.from_numpy(sites.positions[i : i + 1])
        ch = torch.tensor([int(channel)], device=x_in.device)
        ops, w, valid = handler.weight_operands(
            x_in, info.module, ch, None if ps is None else ps.to(x_in.device)
        )
        counts = weight_edm(ops, w, grid, valid, aggregate=aggregate)[0]
        out.append(_target_vf(probe, counts, grid, _channel_add(int(channel))))
    return np.array(out)


def _layer_input(model: nn.Module, module: nn.Module, images: Tensor) -> Tensor:
    grabbed: list[Tensor] = []
    with module.register_forward_hook(lambda _m, i, _o: grabbed.append(i[0])):
        model(images)
    return grabbed[0]


def reference_analysis(
    model: nn.Module,
    images: Tensor,
    layers: Sequence[int],
    *,
    target: str = "both",
    sampling: float | None = 0.1,
    seed: int = 0,
    search: str = "extended",
    aggregate: str = "position",
) -> ReferenceResult:
    """The analysis of ``layers``, one target per full forward (see the module docstring).

    Args:
        model: the classifier (left unchanged: eval mode only inside, hooks removed).
        images: the analysis batch.
        layers: catalogue layer numbers.
        target: ``"activations"``, ``"weights"`` or ``"both"``.
        sampling: channel ratio, ``None`` for complete; the sites are drawn as the analyser does.
        seed: seed of the site draw.
        search: candidate grid name.
        aggregate: weight EDM aggregation.

    Returns:
        :class:`ReferenceResult`.
    """
    if target not in ("activations", "weights", "both"):
        raise ValueError(f"expected target 'activations', 'weights' or 'both', got {target!r}")
    started, cpu = time.perf_counter(), time.process_time()
    result = ReferenceResult()
    grid = candidate_grid(search)
    catalogue = build_catalogue(model, images[:1])
    sites = draw_sites(catalogue, sampling, seed)
    kinds = ("activations", "weights") if target == "both" else (target,)
    with eval_mode(model), torch.no_grad():
        probe = _Probe(model, images, result)
        for num in layers:
            info = catalogue[num]
            x_in = _layer_input(model, info.module, images)
            handle = info.module.register_forward_hook(probe.hook)
            try:
                for kind in kinds:
                    if kind == "activations":
                        vfs = _activations(probe, info, sites[num], x_in, grid)
                    else:
                        vfs = _weights(probe, info, sites[num], x_in, grid, aggregate)
                    result.vfs[(num, kind)] = vfs
            finally:
                handle.remove()
    result.wall_time_s = time.perf_counter() - started
    result.cpu_time_s = time.process_time() - cpu
    return result
