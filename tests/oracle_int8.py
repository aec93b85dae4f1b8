"""The int8 ground-truth oracle: a fault written into the user's ``torch.ao`` quantized model
(its stored 8-bit words), the model's own forward deciding (issue 23).

Written from the int8 definitions only, sharing nothing with the package: a weight fault
rebuilds the module's packed weight from its integer representation with one bit of one word
inverted (two's complement int8, the module's own scales) and calls ``set_weight_bias``; an
operand fault inverts one bit of one ``quint8`` word of the tensor a layer receives, as one
neuron reads it (the layer's own forward on the faulty input gives that neuron's value); a
stored fault, one word of the tensor it returns (a forward hook). The model is restored after
each fault.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn


def flip_word(word: torch.Tensor, bit: int, signed: bool) -> torch.Tensor:
    """One bit of 8-bit words inverted (two's complement for int8)."""
    raw = word.to(torch.int16) & 0xFF
    raw = raw ^ (1 << bit)
    if signed:
        raw = torch.where(raw >= 128, raw - 256, raw)
    return raw


class Int8Oracle:
    """Faults written into the user's quantized model; its own forward decides."""

    def __init__(self, model: nn.Module, images: torch.Tensor) -> None:
        self.model, self.images = model, images
        with torch.no_grad():
            self.golden = model(images).argmax(1)

    def _critical(self) -> np.ndarray:
        with torch.no_grad():
            out = self.model(self.images)
        return ((out.argmax(1) != self.golden) | ~torch.isfinite(out).all(1)).numpy()

    def weight(self, name: str, flat: int, bit: int) -> np.ndarray:
        m = self.model.get_submodule(name)
        w, b = m.weight(), m.bias()
        ints = w.int_repr().clone()
        view = ints.view(-1)
        view[flat] = flip_word(view[flat], bit, signed=True).to(ints.dtype)
        if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            faulty = torch._make_per_channel_quantized_tensor(
                ints,
                w.q_per_channel_scales(),
                w.q_per_channel_zero_points(),
                w.q_per_channel_axis(),
            )
        else:
            faulty = torch._make_per_tensor_quantized_tensor(ints, w.q_scale(), w.q_zero_point())
        m.set_weight_bias(faulty, b)
        try:
            return self._critical()
        finally:
            m.set_weight_bias(w, b)

    @contextmanager
    def _word(self, name: str, where: tuple[int, ...], bit: int, hook: str) -> Iterator[None]:
        def flip(x: torch.Tensor) -> torch.Tensor:
            ints = x.int_repr().clone()
            idx = (slice(None), *where)
            ints[idx] = flip_word(ints[idx], bit, signed=x.dtype == torch.qint8).to(ints.dtype)
            return torch._make_per_tensor_quantized_tensor(ints, x.q_scale(), x.q_zero_point())

        m = self.model.get_submodule(name)
        if hook == "input":
            handle = m.register_forward_pre_hook(lambda _m, args: (flip(args[0]),))
        else:
            handle = m.register_forward_hook(lambda _m, _a, out: flip(out))
        try:
            yield
        finally:
            handle.remove()

    def operand(
        self, name: str, where: tuple[int, ...], bit: int, neuron: tuple[int, ...]
    ) -> np.ndarray:
        """One operand of one neuron's sum: the layer's input word ``where`` as that neuron
        reads it (the other neurons read the fault-free word)."""
        m = self.model.get_submodule(name)

        def hook(_m: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
            x = args[0]
            ints = x.int_repr().clone()
            idx = (slice(None), *where)
            ints[idx] = flip_word(ints[idx], bit, signed=False).to(ints.dtype)
            faulty = m.forward(
                torch._make_per_tensor_quantized_tensor(ints, x.q_scale(), x.q_zero_point())
            )
            words = out.int_repr().clone()
            at = (slice(None), *neuron)
            words[at] = faulty.int_repr()[at]
            return torch._make_per_tensor_quantized_tensor(words, out.q_scale(), out.q_zero_point())

        handle = m.register_forward_hook(hook)
        try:
            return self._critical()
        finally:
            handle.remove()

    def stored(self, name: str, where: tuple[int, ...], bit: int) -> np.ndarray:
        with self._word(name, where, bit, "output"):
            return self._critical()
