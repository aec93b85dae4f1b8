"""Fault populations and the one per-fault evaluation shared by every campaign.

A :class:`FaultPopulation` is every fault of one target over a set of sites of one layer under
one :class:`~pytorchfi_deepvigor.bits.FaultModel`: each (site, pattern) pair. The default model
flips one bit (32 patterns in float32, 16 in float16/bfloat16); stuck-at has stuck-at-0 and
stuck-at-1 per bit (population x 2, as Ruospo et al. count); a multi-bit upset inverts 2 or 3
adjacent bits. Faults are numbered so that each mask (a bit, or a run of adjacent bits) is one
contiguous stratum::

    fault_id = (mask * multiplicity + polarity) * n_sites + site

For the single-bit models the stratum is the bit.

Sites, per target:

* ``"weights"``: flat indices into the layer's weight tensor (bias faults are not modelled);
* ``"operands"``: (neuron, operand) pairs, neuron = ``channel * H * W + row * W + col`` and
  operand = the flat index into one filter ``(in_channel_of_group, kh, kw)``; operands that read
  zero padding are not fault sites (a Linear on N-D inputs: neuron = ``feature * P + position``,
  operand = the input feature);
* ``"stored"``: flat indices into one image's output tensor of the layer.

:class:`FaultEvaluator` turns a batch of fault ids into one engine call over every image of the
analysis batch, with the change each fault makes at the layer's output, exactly as the method
defines it: a weight fault adds ``(w' - w) * x[i, j, p]`` to every position of channel ``k``
(:class:`~pytorchfi_deepvigor.perturbations.ChannelAdd`), an operand fault adds
``(x' - x) * w`` to one neuron (``NeuronAdd``), a stored-activation fault replaces one value by
its faulty bit pattern (``NeuronSet``). Only the network suffix runs.

A layer whose forward is not the plain product of its stored weight
(:attr:`~pytorchfi_deepvigor.catalogue.LayerInfo.weight_transform`: ``StdConv2d`` standardises
each filter) gets no shortcut: a weight fault is its own forward with the faulty weight
(``torch.func.functional_call``, the model untouched), the whole output replaced
(:class:`~pytorchfi_deepvigor.perturbations.OutputSet`); an operand fault its own forward on the
input with the operand flipped, the neuron's value replaced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from pytorchfi_deepvigor._guard import eval_mode
from pytorchfi_deepvigor.bits import (
    AnyFaultModel,
    QuantizedFlip,
    flip_bit,
    parse_fault_model,
    stuck_at,
)
from pytorchfi_deepvigor.catalogue import LayerInfo
from pytorchfi_deepvigor.engine import SimulationEngine
from pytorchfi_deepvigor.perturbations import (
    ChannelAdd,
    NeuronAdd,
    NeuronSet,
    OutputSet,
    Perturbation,
)
from pytorchfi_deepvigor.quantized import is_quantized_layer

__all__ = [
    "BITS",
    "FAULT_MODELS",
    "FAULT_TARGETS",
    "FaultEvaluator",
    "FaultPopulation",
    "faulty_values",
    "check_geometry",
    "operand_sites",
]

FaultTarget = Literal["weights", "operands", "stored"]
FAULT_TARGETS: tuple[str, ...] = ("weights", "operands", "stored")
FAULT_MODELS: tuple[str, ...] = ("flip", "stuck-at", "mbu2", "mbu3")
"""The fault kinds; each takes an optional bit selection (``"flip:exponent"``)."""
BITS = 32
"""Bits of a float32 word (the default format)."""
_Index = TypeVar("_Index", np.ndarray, torch.Tensor)


@dataclass(frozen=True, eq=False)
class FaultPopulation:
    """Every fault of one target over some sites of one layer.

    Attributes:
        layer: the catalogue entry of the layer.
        target: ``"weights"``, ``"operands"`` or ``"stored"``.
        fault_model: the fault model's name (``"flip"``, ``"stuck-at"``, ``"mbu2:23-30"``...,
            see :func:`~pytorchfi_deepvigor.bits.parse_fault_model`) or a
            :class:`~pytorchfi_deepvigor.bits.FaultModel`; kept as its name, the model itself
            in :attr:`model`, in the format of the layer's weight (the model's own dtype).
        sites: int64 site coordinates, ``[S]`` (weights, stored) or ``[S, 2]`` (operands).

    Example:
        >>> from pytorchfi_deepvigor.catalogue import build_catalogue
        >>> info = build_catalogue(torch.nn.Linear(3, 2), torch.zeros(1, 3))[0]
        >>> pop = FaultPopulation(info, "weights", "stuck-at", np.arange(3))
        >>> pop.size, pop.stratum(31), [a.tolist() for a in pop.decode(np.array([0, 7, 191]))]
        (192, range(186, 192), [[0, 1, 2], [0, 1, 31], [0, 0, 1]])
    """

    layer: LayerInfo
    target: FaultTarget
    fault_model: str | AnyFaultModel
    sites: np.ndarray
    model: AnyFaultModel = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.target not in FAULT_TARGETS:
            raise ValueError(f"expected target in {FAULT_TARGETS}, got {self.target!r}")
        model = parse_fault_model(self.fault_model, layer_weight(self.layer).dtype)
        if isinstance(model, QuantizedFlip):
            if self.target != "stored":
                raise ValueError(
                    f"{model.name} is PyTorchFI's neuron fault model: it flips bits of a "
                    f"quantised copy of a layer's output; use target='stored', not "
                    f"{self.target!r}"
                )
            if model.max_value is None:
                raise ValueError(
                    f"{model.name} needs the layer's range: bind it with "
                    "QuantizedFlip.bound(range, layer_num) (the campaigns do)"
                )
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "fault_model", model.name)
        sites = np.asarray(self.sites, dtype=np.int64)
        if sites.ndim != (2 if self.target == "operands" else 1):
            raise ValueError(f"unexpected site array of shape {sites.shape} for {self.target}")
        object.__setattr__(self, "sites", sites)

    @property
    def n_sites(self) -> int:
        return int(self.sites.shape[0])

    @property
    def multiplicity(self) -> int:
        """Faults per (site, mask): 1 for inversions, 2 for stuck-at-0/1."""
        return self.model.multiplicity

    @property
    def n_strata(self) -> int:
        """Masks of the fault model: the bits of a single-bit model (32 in float32)."""
        return len(self.model.masks)

    @property
    def size(self) -> int:
        """Number of faults: sites x patterns (32 bit flips per float32 site)."""
        return self.n_sites * self.model.n_patterns

    def stratum(self, mask: int) -> range:
        """The fault ids of one mask (both polarities for stuck-at): a contiguous range."""
        width = self.multiplicity * self.n_sites
        return range(mask * width, (mask + 1) * width)

    def decode(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(site index, mask, value) of each fault id; value -1 is an inversion, 0/1 a
        stuck-at. For the single-bit models the mask is the bit (LSB = 0)."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.size):
            raise ValueError(f"fault ids out of range [0, {self.size})")
        site = ids % self.n_sites
        rest = ids // self.n_sites
        mask, polarity = rest // self.multiplicity, rest % self.multiplicity
        value = polarity if self.model.kind == "stuck-at" else np.full_like(ids, -1)
        return site, mask, value

    def patterns(self, ids: np.ndarray) -> np.ndarray:
        """The fault model's pattern of each fault id (:meth:`FaultModel.faulty`)."""
        ids = np.asarray(ids, dtype=np.int64)
        return ids // self.n_sites

    def channels(self, ids: np.ndarray) -> np.ndarray:
        """Output channel (or Linear feature) each fault of ``ids`` affects."""
        site = self.sites[self.decode(ids)[0]]
        if self.target == "weights":
            return site // self.layer.fan_in
        neuron = site[:, 0] if self.target == "operands" else site
        return neuron // self.layer.neurons_per_channel


def faulty_values(x: torch.Tensor, bit: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``x`` with one bit flipped (``value == -1``) or stuck at ``value`` (0/1), elementwise.

    Example:
        >>> faulty_values(torch.tensor([1.0, 1.0, 1.0]), torch.tensor([31, 31, 23]), torch.tensor([-1, 0, 1]))
        tensor([-1.,  1.,  1.])
    """
    bit = bit.to(x.device).expand_as(x)
    value = value.to(x.device).expand_as(x)
    return torch.where(
        value < 0,
        flip_bit(x, bit),
        torch.where(value == 0, stuck_at(x, bit, 0), stuck_at(x, bit, 1)),
    )


@dataclass(frozen=True)
class _Faults:
    """A batch's faults: the model and each fault's pattern."""

    model: AnyFaultModel
    pattern: torch.Tensor


def _pads(info: LayerInfo) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zero padding of a Conv2d."""
    if isinstance(info.padding, str):
        if info.padding == "valid":
            return (0, 0, 0, 0)
        kh, kw = info.weight_shape[2:]
        th, tw = info.dilation[0] * (kh - 1), info.dilation[1] * (kw - 1)
        return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    if len(info.padding) == 4:  # (left, right, top, bottom): a same-padding twin
        left, right, top, bottom = info.padding
        return (top, bottom, left, right)
    ph, pw = info.padding
    return (ph, ph, pw, pw)


def layer_weight(info: LayerInfo) -> torch.Tensor:
    """The (detached) weight tensor of a catalogued layer."""
    weight = info.module.weight
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"layer {info.name!r} has no weight tensor")
    return weight.detach()


def _operand_coords(
    info: LayerInfo, neuron: _Index, operand: _Index
) -> tuple[_Index, _Index, _Index, _Index, _Index, _Index]:
    """(channel, row, col, in_channel, padded_row, padded_col) of conv operands."""
    _, ho, wo = info.output_shape
    cin_g, kh, kw = info.weight_shape[1:]
    cout_g = info.output_shape[0] // info.groups
    channel, pos = neuron // (ho * wo), neuron % (ho * wo)
    row, col = pos // wo, pos % wo
    ci = (channel // cout_g) * cin_g + operand // (kh * kw)
    k_row, k_col = (operand % (kh * kw)) // kw, operand % kw
    prow = row * info.stride[0] + k_row * info.dilation[0]
    pcol = col * info.stride[1] + k_col * info.dilation[1]
    return channel, row, col, ci, prow, pcol


def check_geometry(info: LayerInfo) -> None:
    """Raise ``ValueError`` when a Conv2d's recorded stride, padding and dilation do not give
    its output size: it pads (or crops) inside its own forward (timm's ``Conv2dSame``), and
    which input value an operand is cannot be known from the module's attributes."""
    if info.kind != "Conv2d":
        return
    top, bottom, left, right = _pads(info)
    _, h, w = info.input_shape
    kh, kw = info.weight_shape[2:]
    expect = (
        (h + top + bottom - info.dilation[0] * (kh - 1) - 1) // info.stride[0] + 1,
        (w + left + right - info.dilation[1] * (kw - 1) - 1) // info.stride[1] + 1,
    )
    if expect != tuple(info.output_shape[1:]):
        raise ValueError(
            f"layer {info.name!r} ({type(info.module).__name__}) writes {info.output_shape[1:]} "
            f"maps from {(h, w)} inputs, where its recorded padding {info.padding} gives "
            f"{expect}: it pads inside its forward, so its operands' positions are unknown; "
            "weight and stored-value faults work (they run its own forward)"
        )


def operand_sites(info: LayerInfo, neurons: np.ndarray) -> np.ndarray:
    """Every (neuron, operand) site of the given flat neuron indices, padding excluded, ``[S, 2]``."""
    neurons = np.asarray(neurons, dtype=np.int64)
    operand = np.arange(info.fan_in, dtype=np.int64)
    pairs = np.stack(np.broadcast_arrays(neurons[:, None], operand[None, :]), -1).reshape(-1, 2)
    if info.kind != "Conv2d":
        return pairs
    check_geometry(info)
    top, _, left, _ = _pads(info)
    _, h, w = info.input_shape
    *_, prow, pcol = _operand_coords(info, pairs[:, 0], pairs[:, 1])
    inside = (prow >= top) & (prow < top + h) & (pcol >= left) & (pcol < left + w)
    return pairs[inside]


class FaultEvaluator:
    """Outcome counts of fault batches on every image of an engine's analysis batch.

    Args:
        engine: the simulation engine (its golden cache is reused across calls).

    Example:
        >>> torch.manual_seed(0); net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        <torch._C.Generator object at ...>
        >>> engine = SimulationEngine(net, torch.randn(2, 1, 2, 2))
        >>> pop = FaultPopulation(engine.layer(0), "weights", "flip", np.arange(12))
        >>> FaultEvaluator(engine).counts(pop, np.array([0, 11])).sum(axis=1).tolist()  # 2 images each
        [2, 2]
    """

    def __init__(self, engine: SimulationEngine) -> None:
        self.engine = engine
        self._padded: dict[int, torch.Tensor] = {}

    def _padded_input(self, info: LayerInfo) -> torch.Tensor:
        if info.layer_num not in self._padded:
            x = self.engine.layer_input(info.layer_num)
            top, bottom, left, right = _pads(info)
            mode = getattr(info.module, "padding_mode", "zeros")
            if mode == "zeros":
                x = F.pad(x, (left, right, top, bottom))
            else:
                x = F.pad(x, (left, right, top, bottom), mode=mode)
            self._padded[info.layer_num] = x
        return self._padded[info.layer_num]

    def _tokens(self, info: LayerInfo) -> torch.Tensor:
        """A Linear layer's N-D input ``(I, *positions, F_in)`` as ``(I, P, F_in)``."""
        x = self.engine.layer_input(info.layer_num)
        return x.reshape(x.shape[0], -1, x.shape[-1])

    def perturbation(
        self, population: FaultPopulation, ids: np.ndarray
    ) -> tuple[torch.Tensor, Perturbation]:
        """Image indices and perturbation of a batch: fault-major, every image per fault."""
        site_idx = population.decode(ids)[0]
        device = self.engine.device
        sites = torch.as_tensor(population.sites[site_idx], device=device)
        fault = _Faults(population.model, torch.as_tensor(population.patterns(ids), device=device))
        n_img = self.engine.num_images
        image_idx = torch.arange(n_img, device=device).repeat(len(site_idx))
        make = {"weights": self._weights, "operands": self._operands, "stored": self._stored}
        with torch.no_grad():
            return image_idx, make[population.target](population.layer, sites, fault)

    def counts(self, population: FaultPopulation, ids: np.ndarray) -> np.ndarray:
        """Per fault, how many images end masked, SDC, critical, DUE: int64 ``[F, 4]``."""
        image_idx, perturbation = self.perturbation(population, ids)
        codes = self.engine.outcomes(population.layer.layer_num, image_idx, perturbation)
        codes = codes.long().view(len(ids), self.engine.num_images).cpu()
        out = torch.zeros(len(ids), 4, dtype=torch.long)
        out.scatter_add_(1, codes, torch.ones_like(codes))
        return out.numpy()

    # ------------------------------------------------------------------ per target
    def _weights(self, info: LayerInfo, sites: torch.Tensor, fault: _Faults) -> Perturbation:
        weight = layer_weight(info).reshape(-1)
        w = weight[sites]
        faulty = fault.model.rows(sites // info.fan_in).faulty(w, fault.pattern)
        if info.weight_transform or w.dtype != torch.float32 or is_quantized_layer(info.module):
            # float16/bfloat16: the layer's own kernel with the faulty weight (its rounding
            # of the sum, not the golden output's rounding plus the change's); int8: the
            # quantized kernel with the faulty packed weight (its requantisation)
            return self._own_weights(info, sites, faulty)
        dw = faulty - w
        k, j = sites // info.fan_in, sites % info.fan_in
        if info.kind == "Linear" and not info.channel_last:
            x = self.engine.layer_input(info.layer_num)[:, j].T  # [F, I]
            delta = dw[:, None] * x
        elif info.kind == "Linear":  # N-D input: the weight meets feature j at every position
            x = self._tokens(info)[:, :, j].permute(2, 0, 1)  # [F, I, P]
            delta = (dw[:, None, None] * x).reshape(len(k), x.shape[1], *info.output_shape[1:])
        else:
            # the operand of position (0, 0); position (r, c) reads stride * (r, c) further
            _, _, _, ci, prow, pcol = _operand_coords(info, k * info.neurons_per_channel, j)
            _, ho, wo = info.output_shape
            rows = prow[:, None] + info.stride[0] * torch.arange(ho, device=k.device)[None, :]
            cols = pcol[:, None] + info.stride[1] * torch.arange(wo, device=k.device)[None, :]
            x = self._padded_input(info)[:, ci[:, None, None], rows[:, :, None], cols[:, None, :]]
            delta = dw[:, None, None, None] * x.transpose(0, 1)  # [F, I, Ho, Wo]
            if getattr(info.module, "padding_mode", "zeros") == "zeros":
                # a zero-padded position adds nothing, not d * 0: with d = +-Inf/NaN the
                # model's conv is finite there (measured on batches of 12 and more; at batch 1
                # some geometries give NaN: the package follows the batched kernel)
                pad_top, _, pad_left, _ = _pads(info)
                _, height, width = info.input_shape
                real = ((rows >= pad_top) & (rows < pad_top + height))[:, :, None] & (
                    (cols >= pad_left) & (cols < pad_left + width)
                )[:, None, :]
                delta = torch.where(real[:, None], delta, torch.zeros((), dtype=delta.dtype))
        n_img = self.engine.num_images
        return ChannelAdd(k.repeat_interleave(n_img), delta.reshape(-1, *delta.shape[2:]))

    def _own_weights(
        self, info: LayerInfo, sites: torch.Tensor, faulty: torch.Tensor
    ) -> Perturbation:
        """Each fault through the layer's own forward, on every image: ``OutputSet``."""
        if info.weight_derived:
            raise ValueError(f"layer {info.name!r}: {info.weight_transform}")
        x = self.engine.layer_input(info.layer_num).contiguous()
        weight = layer_weight(info)
        outs = []
        for site, v in zip(sites.tolist(), faulty, strict=True):
            w = weight.clone()  # the weight's own memory format (a flat view may not exist)
            w[np.unravel_index(site, w.shape)] = v
            with eval_mode(info.module):
                y = torch.func.functional_call(info.module, {"weight": w}, (x,))
            y = y.dequantize() if y.is_quantized else y
            outs.append(y.movedim(-1, 1) if info.channel_last else y)
        return OutputSet(torch.cat(outs))

    def _own_operands(self, info: LayerInfo, sites: torch.Tensor, fault: _Faults) -> Perturbation:
        """Each operand fault through the layer's own forward: the input value the operand
        reads flipped, the neuron's value taken from the result (``NeuronSet``)."""
        if getattr(info.module, "padding_mode", "zeros") != "zeros":
            raise ValueError(
                f"layer {info.name!r}: operand faults of a layer whose forward transforms its "
                f"weight need zero padding (its padding_mode is {info.module.padding_mode!r}: "
                "one operand would be a copy of a value that another operand reads too)"
            )
        x = self.engine.layer_input(info.layer_num).contiguous()
        neuron, j = sites[:, 0], sites[:, 1]
        if info.kind == "Linear":
            channel, pos = neuron // info.neurons_per_channel, neuron % info.neurons_per_channel
            width = info.output_shape[2] if len(info.output_shape) == 3 else 1
            row, col = pos // width, pos % width
            flat = x.reshape(x.shape[0], -1, x.shape[-1])
            where: list[tuple[int, ...]] = [
                (p, jj) for p, jj in zip(pos.tolist(), j.tolist(), strict=True)
            ]
        else:
            channel, row, col, ci, prow, pcol = _operand_coords(info, neuron, j)
            top, _, left, _ = _pads(info)
            flat = x
            where = [
                (c, r - top, q - left)
                for c, r, q in zip(ci.tolist(), prow.tolist(), pcol.tolist(), strict=True)
            ]
        values = []
        for f, at in enumerate(where):
            xf = flat.clone()
            idx: tuple[slice | int, ...] = (slice(None), *at)
            xf[idx] = fault.model.faulty(xf[idx], fault.pattern[f : f + 1])
            with eval_mode(info.module):
                y = info.module(xf.reshape(x.shape))
            y = y.dequantize() if y.is_quantized else y
            y = y.movedim(-1, 1) if info.channel_last else y
            y = y.reshape(y.shape[0], info.out_channels, -1)
            p = int(neuron[f]) % info.neurons_per_channel
            values.append(y[:, int(channel[f]), p])
        return self._neuron(NeuronSet, channel, row, col, torch.stack(values, 1))

    def _operands(self, info: LayerInfo, sites: torch.Tensor, fault: _Faults) -> Perturbation:
        if (
            info.weight_transform
            or layer_weight(info).dtype != torch.float32
            or is_quantized_layer(info.module)
        ):
            return self._own_operands(info, sites, fault)
        neuron, j = sites[:, 0], sites[:, 1]
        if info.kind == "Linear" and not info.channel_last:
            channel, row, col = neuron, torch.zeros_like(neuron), torch.zeros_like(neuron)
            x = self.engine.layer_input(info.layer_num)[:, j]  # [I, F]
        elif info.kind == "Linear":  # neuron = feature * P + position
            channel, pos = neuron // info.neurons_per_channel, neuron % info.neurons_per_channel
            width = info.output_shape[2] if len(info.output_shape) == 3 else 1
            row, col = pos // width, pos % width
            x = self._tokens(info)[:, pos, j]  # [I, F]
        else:
            channel, row, col, ci, prow, pcol = _operand_coords(info, neuron, j)
            x = self._padded_input(info)[:, ci, prow, pcol]
        w = layer_weight(info).reshape(-1)[channel * info.fan_in + j]
        delta = (fault.model.faulty(x, fault.pattern[None, :]) - x) * w[None, :]
        return self._neuron(NeuronAdd, channel, row, col, delta)

    def _stored(self, info: LayerInfo, sites: torch.Tensor, fault: _Faults) -> Perturbation:
        out = self.engine.layer_output(info.layer_num)
        x = out.reshape(out.shape[0], -1)[:, sites]  # [I, F]
        per_channel = info.neurons_per_channel
        channel, pos = sites // per_channel, sites % per_channel
        width = info.output_shape[2] if len(info.output_shape) == 3 else 1
        faulty = fault.model.faulty(x, fault.pattern[None, :])
        return self._neuron(NeuronSet, channel, pos // width, pos % width, faulty)

    def _neuron(
        self,
        kind: type[NeuronAdd] | type[NeuronSet],
        channel: torch.Tensor,
        row: torch.Tensor,
        col: torch.Tensor,
        per_image: torch.Tensor,
    ) -> Perturbation:
        n_img = self.engine.num_images
        rep = [t.repeat_interleave(n_img) for t in (channel, row, col)]
        return kind(channel=rep[0], row=rep[1], col=rep[2], value=per_image.T.reshape(-1))


CPU_CACHE_BYTES = 4 * 2**20
"""On a CPU, one engine call carries about this many bytes of the layer's output (16 to 256
elements): larger batches fall out of the caches (on a CIFAR-style ResNet, 1,424 elements per
call was 2-3x slower per image than 40-120)."""


def chunk_size(engine: SimulationEngine, info: LayerInfo) -> int:
    """Default faults per engine call for a layer: one engine batch of faults x images."""
    elements = engine.max_batch
    if engine.device.type == "cpu":
        per_image = 4 * info.neurons_per_image
        elements = min(elements, max(16, min(256, CPU_CACHE_BYTES // per_image)))
    return max(1, elements // engine.num_images)
