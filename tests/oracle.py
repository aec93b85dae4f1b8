"""The ground-truth oracle: a fault injected into the user's unmodified model, its own forward.

Independent of the package on purpose (it imports nothing from ``pytorchfi_deepvigor``): the
bit is flipped with numpy's ``uint32`` view of the float, the weight is written into the model's
own parameter (and restored bit for bit), an operand or a stored value is changed by a forward
hook on the layer, and the model's own ``forward`` runs on every image in its own layout, dtype
and device. A fault is critical on an image when the top-1 differs from the fault-free top-1 or
a logit is NaN/Inf (``fault-injection.md`` section 2: the definition everything is judged by).

Fault sites use the package's numbering so that the two can be compared fault for fault:

* ``"weights"``: the flat index into the layer's weight tensor;
* ``"stored"``: the flat index into one image's output in neuron layout (channel first: a
  Linear on ``(N, *positions, F)`` inputs is read as ``(F, *positions)``);
* ``"operands"``: ``(neuron, operand)``, the neuron a flat index in neuron layout, the operand
  the flat index into one filter ``(in_channel_of_group, kh, kw)`` (a Linear: the input
  feature). The operand's input value is flipped and the layer's own ``forward`` recomputes
  the output; only that neuron takes the recomputed value.

Also the probes of the analysis: an error added at one neuron, or a map added to one channel,
of every image (:func:`neuron_add`, :func:`channel_add`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["Fault", "Oracle", "flip", "stuck"]


def _words(x: torch.Tensor) -> np.ndarray:
    """The stored words of ``x`` (float32, float16 or bfloat16) as numpy unsigned ints."""
    if x.dtype == torch.float32:
        return x.detach().cpu().numpy().copy().view(np.uint32)
    if x.dtype == torch.float16:
        return x.detach().cpu().numpy().copy().view(np.uint16)
    if x.dtype == torch.bfloat16:  # numpy has no bfloat16: its 16 bits, read through int16
        return x.detach().cpu().view(torch.int16).numpy().copy().view(np.uint16)
    raise TypeError(f"the oracle has no words for {x.dtype}")


def _values(words: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    if like.dtype == torch.float32:
        return torch.from_numpy(words.view(np.float32)).to(like.device)
    if like.dtype == torch.float16:
        return torch.from_numpy(words.view(np.float16)).to(like.device)
    return torch.from_numpy(words.view(np.int16)).view(torch.bfloat16).to(like.device)


def flip(x: torch.Tensor, bit: int, mask: int | None = None) -> torch.Tensor:
    """``x`` with bit ``bit`` (LSB = 0), or every bit of ``mask``, inverted in its own word."""
    u = _words(x)
    u ^= u.dtype.type(1 << bit if mask is None else mask)
    return _values(u, x)


def stuck(x: torch.Tensor, bit: int, level: int, mask: int | None = None) -> torch.Tensor:
    """``x`` with bit ``bit`` (or every bit of ``mask``) stuck at ``level`` (0 or 1)."""
    u = _words(x)
    m = u.dtype.type(1 << bit if mask is None else mask)
    if level:
        u |= m
    else:
        u &= ~m
    return _values(u, x)


@dataclass(frozen=True)
class Fault:
    """One fault: ``value`` -1 is an inversion, 0/1 a stuck-at; of bit ``bit``, or of every
    bit of ``mask`` when it is given (a multi-bit upset)."""

    target: str
    layer: str
    site: int | tuple[int, int]
    bit: int
    value: int = -1
    mask: int | None = None

    def faulty(self, x: torch.Tensor) -> torch.Tensor:
        if self.value < 0:
            return flip(x, self.bit, self.mask)
        return stuck(x, self.bit, self.value, self.mask)


def _positions(out: torch.Tensor, module: nn.Module) -> tuple[int, ...]:
    """The position dims of a layer's output (after the channel in neuron layout)."""
    if isinstance(module, nn.Linear):
        return tuple(out.shape[1:-1])
    return tuple(out.shape[2:])


def _at(out: torch.Tensor, module: nn.Module, channel: int, position: int | None) -> tuple:
    """The index into the module's own output of one neuron (or, ``position=None``, of one
    channel's map) of every image."""
    shape = _positions(out, module)
    pos: tuple = (slice(None),) * len(shape)
    if position is not None:
        pos = tuple(int(i) for i in np.unravel_index(position, shape)) if shape else ()
    if isinstance(module, nn.Linear):
        return (slice(None), *pos, channel)
    return (slice(None), channel, *pos)


def _pad_before(m: nn.Conv2d, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> tuple[int, int]:
    """The zero padding before the first row and column that ``m`` applies: its own padding
    where that gives its output size; else it pads inside its forward, and the padding is what
    gives ``out_hw`` from ``in_hw`` the way TensorFlow's "same" (timm's ``Conv2dSame``,
    efficientnet_pytorch's static same padding) splits it: half before, the odd one after."""
    kh, kw = m.kernel_size
    if isinstance(m.padding, str):
        if m.padding == "valid":
            return (0, 0)
        return (m.dilation[0] * (kh - 1) // 2, m.dilation[1] * (kw - 1) // 2)
    out = []
    for n_in, n_out, k, s, d, p in zip(
        in_hw, out_hw, m.kernel_size, m.stride, m.dilation, m.padding, strict=True
    ):
        if (n_in + 2 * p - d * (k - 1) - 1) // s + 1 == n_out:
            out.append(p)
        else:
            out.append(((n_out - 1) * s + d * (k - 1) + 1 - n_in) // 2)
    return (out[0], out[1])


def _conv_input_position(
    m: nn.Conv2d, in_hw: tuple[int, int], out_hw: tuple[int, int], neuron: int, operand: int
):
    """(output channel, flat output position, input channel, input row, input col) of a conv
    operand; the input position is in the unpadded input (it may fall on the padding)."""
    ho, wo = out_hw
    kh, kw = m.kernel_size
    cin_g = m.in_channels // m.groups
    cout_g = m.out_channels // m.groups
    c, p = divmod(neuron, ho * wo)
    r, q = divmod(p, wo)
    ci = (c // cout_g) * cin_g + operand // (kh * kw)
    kr, kc = divmod(operand % (kh * kw), kw)
    pad_h, pad_w = _pad_before(m, in_hw, out_hw)
    return (
        c,
        p,
        ci,
        r * m.stride[0] + kr * m.dilation[0] - pad_h,
        q * m.stride[1] + kc * m.dilation[1] - pad_w,
    )


class Oracle:
    """Faults injected into ``model`` itself, judged by its own forward on ``images``.

    The model is left as it was (every change restored in ``finally``); it runs in eval mode.

    ``view``: a model computing the same thing whose extra layers (the package's attention
    twins: an ``in_proj`` Linear holding ``nn.MultiheadAttention``'s own ``in_proj_weight``)
    are modules where ``model`` applies the weight inside one fused kernel. A weight fault of
    such a layer is still written into the tensor ``model`` holds and judged by ``model``'s own
    forward; a stored value or an operand, which ``model`` never materialises as a module
    output, is changed by a hook on the view's layer and judged by the view's forward (the
    tests check that the view's fault-free logits are ``model``'s). The same holds for a layer
    ``model`` has but never calls as a module (``MultiheadAttention.out_proj``).
    """

    def __init__(
        self, model: nn.Module, images: torch.Tensor, view: nn.Module | None = None
    ) -> None:
        self.model, self.images = model, images
        self.modules = dict(model.named_modules())
        self.view_modules = dict(view.named_modules()) if view is not None else {}
        self.view = view
        self.golden = self._forward()
        assert bool(torch.isfinite(self.golden).all()), "the golden run is not finite"
        self.top1 = self.golden.argmax(dim=1)

    def _forward(self, model: nn.Module | None = None) -> torch.Tensor:
        model = self.model if model is None else model
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                return model(self.images).float()
        finally:
            model.train(was)

    def critical_of(self, logits: torch.Tensor) -> torch.Tensor:
        """Per image: top-1 differs from the fault-free top-1, or a logit is NaN/Inf."""
        return (logits.argmax(dim=1) != self.top1) | ~torch.isfinite(logits).all(dim=1)

    def _hooked(
        self, layer: str, edit: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        calls = []

        def hook(m: nn.Module, i: tuple[torch.Tensor, ...], o: torch.Tensor) -> torch.Tensor:
            calls.append(1)
            self._handed = i[1:]  # a weight handed to the layer (an ONNX MatMul's): kept
            return edit(m, i[0], o)

        # the model's own module first; the view's where the model never calls it as a module
        for modules, model in ((self.modules, None), (self.view_modules, self.view)):
            if layer not in modules:
                continue
            handle = modules[layer].register_forward_hook(hook)
            try:
                logits = self._forward(model)
            finally:
                handle.remove()
            if calls:
                return logits
        raise AssertionError(f"the forward never called {layer!r}: the fault went nowhere")

    def logits(self, fault: Fault) -> torch.Tensor:
        """The model's logits ``(N, classes)`` with ``fault`` on every image."""
        module = self.modules.get(fault.layer)
        if not isinstance(getattr(module, "weight", None), torch.Tensor):
            module = self.view_modules[fault.layer]  # the model hands this layer its weight
        if fault.target == "weights":
            weight = module.weight.data  # any memory format: index it, never a flat view
            at = tuple(int(i) for i in np.unravel_index(int(fault.site), weight.shape))  # type: ignore[arg-type]
            golden = weight[at].clone()
            with torch.no_grad():
                weight[at] = fault.faulty(golden)
                try:
                    return self._forward()
                finally:
                    weight[at] = golden
        if fault.target == "stored":

            def edit(m: nn.Module, _x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
                out = out.clone()
                per_channel = int(np.prod(_positions(out, m)))
                idx = _at(out, m, *divmod(int(fault.site), per_channel))  # type: ignore[arg-type]
                out[idx] = fault.faulty(out[idx])
                return out

            return self._hooked(fault.layer, edit)
        if fault.target != "operands":
            raise ValueError(f"unknown target {fault.target!r}")
        neuron, operand = fault.site  # type: ignore[misc]

        def edit_operand(m: nn.Module, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
            out = out.clone()
            x = x.clone()
            if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
                # the operand of one multiplication: a reflected (or replicated, circular) copy
                # of a stored value is its own operand, the value itself is not changed
                c, p, ci, row, col = _conv_input_position(
                    m, x.shape[2:], out.shape[2:], neuron, operand
                )
                pads = m._reversed_padding_repeated_twice  # (left, right, top, bottom)
                xp = torch.nn.functional.pad(x, pads, mode=m.padding_mode)
                at = (slice(None), ci, row + pads[2], col + pads[0])
                xp[at] = fault.faulty(xp[at])
                y = torch.nn.functional.conv2d(
                    xp, m.weight, m.bias, m.stride, 0, m.dilation, m.groups
                )
                idx = _at(out, m, c, p)
                out[idx] = y[idx]
                return out
            if isinstance(m, nn.Conv2d):
                c, p, ci, row, col = _conv_input_position(
                    m, x.shape[2:], out.shape[2:], neuron, operand
                )
                if not (0 <= row < x.shape[2] and 0 <= col < x.shape[3]):
                    raise ValueError("the operand reads the zero padding: not a fault site")
                x[:, ci, row, col] = fault.faulty(x[:, ci, row, col])
            else:
                c, p = divmod(neuron, int(np.prod(_positions(out, m))))
                shape = _positions(out, m)
                pos = tuple(int(i) for i in np.unravel_index(p, shape)) if shape else ()
                at = (slice(None), *pos, operand)
                x[at] = fault.faulty(x[at])
            idx = _at(out, m, c, p)
            out[idx] = m.forward(x, *self._handed)[idx]  # its own forward, this neuron only
            return out

        return self._hooked(fault.layer, edit_operand)

    def critical(self, fault: Fault) -> torch.Tensor:
        """Per image, whether ``fault`` is critical (bool ``(N,)``)."""
        return self.critical_of(self.logits(fault))

    # ------------------------------------------------------------ the analysis' probes
    def neuron_add(self, layer: str, channel: int, position: int, error: float) -> torch.Tensor:
        """Per image, whether adding ``error`` to one neuron (neuron layout) is critical."""

        def edit(m: nn.Module, _x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
            out = out.clone()
            idx = _at(out, m, channel, position)
            out[idx] = out[idx] + error
            return out

        return self.critical_of(self._hooked(layer, edit))

    def channel_add(self, layer: str, channel: int, error: torch.Tensor | float) -> torch.Tensor:
        """Per image, whether adding ``error`` (a scalar or an ``(N, positions)`` map) to every
        position of one channel is critical."""

        def edit(m: nn.Module, _x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
            out = out.clone()
            idx = _at(out, m, channel, None)
            e = error if isinstance(error, float) else error.reshape(out[idx].shape)
            out[idx] = out[idx] + e
            return out

        return self.critical_of(self._hooked(layer, edit))
