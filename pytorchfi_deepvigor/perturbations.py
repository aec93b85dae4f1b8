"""Perturbations of one layer's output, one per batch element.

A perturbation describes, for each element ``b`` of a simulation batch, how the golden output of
the analysed layer is changed before the rest of the network runs. The engine takes the golden
layer output of image ``image_idx[b]``, applies element ``b`` of the perturbation, and runs the
network suffix. Indices follow the catalogue's neuron layout (channel first): for a Conv2d
``(channel, row, col)``; for a Linear on ``(N, F)`` inputs ``channel`` is the feature index and
``row``/``col`` are ignored (pass zeros); for a Linear on ``(N, T, F)`` inputs (neurons ``(F, T)``)
``row`` is the token and ``col`` is 0; on ``(N, H, W, C)`` maps (neurons ``(C, H, W)``) ``row``,
``col`` are the position. A channel map ``value[b, *positions]`` has the neuron layout's shape.

In a float16 or bfloat16 model the engine adds :class:`ChannelAdd` and :class:`NeuronAdd`
values (changes of the layer's sum, as a faulty weight or operand makes them) to the layer's
float32 sum before its rounding to the model's format, as the layer's kernel does; the ``Set``
perturbations write their values as given.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "Perturbation",
    "NeuronAdd",
    "StoredAdd",
    "NeuronSet",
    "ChannelAdd",
    "ChannelSet",
    "OutputSet",
]


def _long(t: torch.Tensor | list[int], name: str) -> torch.Tensor:
    t = torch.as_tensor(t)
    if t.dim() != 1 or t.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(
            f"{name} must be a 1-D integer tensor, got {t.dtype} of shape {tuple(t.shape)}"
        )
    return t.long()


class Perturbation:
    """Base class: a batch of per-element changes to a layer's output."""

    channel: torch.Tensor

    def __len__(self) -> int:
        return int(self.channel.shape[0])

    def check(self, output_shape: tuple[int, ...]) -> None:
        """Raise ``ValueError`` when an index falls outside a per-image ``output_shape``."""
        if len(self) and (
            int(self.channel.min()) < 0 or int(self.channel.max()) >= output_shape[0]
        ):
            raise ValueError(
                f"perturbation channel out of range [0, {output_shape[0]}): "
                f"got {int(self.channel.min())}..{int(self.channel.max())}"
            )

    def apply(self, out: torch.Tensor, start: int, stop: int) -> None:
        """Apply elements ``start:stop`` in place to ``out`` (a batch of ``stop - start`` outputs)."""
        raise NotImplementedError

    def to(self, device: torch.device) -> Perturbation:
        """The same perturbation with its tensors on ``device``."""
        raise NotImplementedError


@dataclass(frozen=True)
class _Neuron(Perturbation):
    channel: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    value: torch.Tensor

    def __post_init__(self) -> None:
        for name in ("channel", "row", "col"):
            object.__setattr__(self, name, _long(getattr(self, name), name))
        value = torch.as_tensor(self.value, dtype=torch.float32)
        object.__setattr__(self, "value", value)
        n = self.channel.shape[0]
        if not (self.row.shape[0] == self.col.shape[0] == value.shape[0] == n) or value.dim() != 1:
            raise ValueError(
                "channel, row, col and value must be 1-D of the same length, got "
                f"{n}, {self.row.shape[0]}, {self.col.shape[0]}, {tuple(value.shape)}"
            )

    def check(self, output_shape: tuple[int, ...]) -> None:
        super().check(output_shape)
        if len(output_shape) > 3:
            raise ValueError(
                f"neuron perturbations need at most 2 position dims, got {output_shape}"
            )
        if len(output_shape) >= 2 and len(self):
            sizes = (*output_shape[1:], 1)[:2]  # (T,): col must be 0
            for name, idx, size in (("row", self.row, sizes[0]), ("col", self.col, sizes[1])):
                if int(idx.min()) < 0 or int(idx.max()) >= size:
                    raise ValueError(f"perturbation {name} out of range [0, {size})")

    def _index(self, out: torch.Tensor, start: int, stop: int) -> tuple[torch.Tensor, ...]:
        b = torch.arange(stop - start, device=out.device)
        c = self.channel[start:stop]
        if out.dim() == 2:
            return (b, c)
        if out.dim() == 3:
            return (b, c, self.row[start:stop])
        return (b, c, self.row[start:stop], self.col[start:stop])

    def to(self, device: torch.device) -> Perturbation:
        return type(self)(
            self.channel.to(device), self.row.to(device), self.col.to(device), self.value.to(device)
        )


class NeuronAdd(_Neuron):
    """Add ``value[b]`` to one neuron ``(channel[b], row[b], col[b])`` (the operand fault model).

    Example:
        >>> p = NeuronAdd(torch.tensor([1]), torch.tensor([0]), torch.tensor([2]), torch.tensor([0.5]))
        >>> out = torch.zeros(1, 2, 3, 3); p.apply(out, 0, 1); float(out[0, 1, 0, 2])
        0.5
    """

    def apply(self, out: torch.Tensor, start: int, stop: int) -> None:
        idx = self._index(out, start, stop)
        out[idx] = out[idx] + self.value[start:stop].to(out.dtype)


class StoredAdd(NeuronAdd):
    """Add ``value[b]`` to one neuron's **stored** value: the layer's output as the model keeps
    it (a stored-value fault's change), where :class:`NeuronAdd` is a change of the layer's
    sum (an operand fault's). The two differ where the layer rounds its sum: a float16 or
    int8 layer's kernel rounds (an int8 one applies its fused ReLU) after the sum, and a
    stored fault happens after that."""


class NeuronSet(_Neuron):
    """Replace one neuron by ``value[b]`` (a stored-activation fault: the flipped value itself)."""

    def apply(self, out: torch.Tensor, start: int, stop: int) -> None:
        out[self._index(out, start, stop)] = self.value[start:stop].to(out.dtype)


@dataclass(frozen=True)
class _Channel(Perturbation):
    channel: torch.Tensor
    value: torch.Tensor

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel", _long(self.channel, "channel"))
        value = torch.as_tensor(self.value, dtype=torch.float32)
        object.__setattr__(self, "value", value)
        if value.dim() == 0 or value.shape[0] != self.channel.shape[0]:
            raise ValueError(
                f"value must have one entry per channel index ({self.channel.shape[0]}), "
                f"got shape {tuple(value.shape)}"
            )

    def check(self, output_shape: tuple[int, ...]) -> None:
        super().check(output_shape)
        if self.value.dim() > 1 and tuple(self.value.shape[1:]) != tuple(output_shape[1:]):
            raise ValueError(
                f"channel map shape {tuple(self.value.shape[1:])} does not match the layer's "
                f"map shape {tuple(output_shape[1:])}"
            )

    def _target(
        self, out: torch.Tensor, start: int, stop: int
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        b = torch.arange(stop - start, device=out.device)
        value = self.value[start:stop].to(out.dtype)
        if out.dim() > 2 and value.dim() == 1:
            value = value.view(-1, *([1] * (out.dim() - 2))).expand(-1, *out.shape[2:])
        return (b, self.channel[start:stop]), value

    def to(self, device: torch.device) -> Perturbation:
        return type(self)(self.channel.to(device), self.value.to(device))


class ChannelAdd(_Channel):
    """Add a scalar ``value[b]`` (or a map ``value[b, H, W]``) to every position of one channel.

    This is the weight fault model: a faulty weight of filter ``k`` changes all of channel ``k``.
    """

    def apply(self, out: torch.Tensor, start: int, stop: int) -> None:
        idx, value = self._target(out, start, stop)
        out[idx] = out[idx] + value


class ChannelSet(_Channel):
    """Replace one channel's map by ``value[b, H, W]`` (e.g. the channel recomputed with a faulty filter)."""

    def apply(self, out: torch.Tensor, start: int, stop: int) -> None:
        idx, value = self._target(out, start, stop)
        out[idx] = value


@dataclass(frozen=True)
class OutputSet(Perturbation):
    """Replace the whole output by ``value[b]`` (neuron layout, ``(B, *output_shape)``): a weight
    fault of a layer whose forward transforms its weight, computed by that forward.

    Example:
        >>> p = OutputSet(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
        >>> out = torch.zeros(1, 3); p.apply(out, 1, 2); out.tolist()  # element 1 of the batch
        [[4.0, 5.0, 6.0]]
    """

    value: torch.Tensor

    def __post_init__(self) -> None:
        value = torch.as_tensor(self.value, dtype=torch.float32)
        if value.dim() < 2:
            raise ValueError(f"value must be (B, *output_shape), got shape {tuple(value.shape)}")
        object.__setattr__(self, "value", value)

    def __len__(self) -> int:
        return int(self.value.shape[0])

    def check(self, output_shape: tuple[int, ...]) -> None:
        if tuple(self.value.shape[1:]) != tuple(output_shape):
            raise ValueError(
                f"output shape {tuple(self.value.shape[1:])} does not match the layer's "
                f"{tuple(output_shape)}"
            )

    def apply(self, out: torch.Tensor, start: int, stop: int) -> None:
        out.copy_(self.value[start:stop].to(out.dtype))

    def to(self, device: torch.device) -> Perturbation:
        return OutputSet(self.value.to(device))
