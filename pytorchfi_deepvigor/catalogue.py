"""The layer catalogue: every injectable layer of a model, numbered as PyTorchFI numbers it.

PyTorchFI 0.6.0 walks ``model.children()`` depth first and numbers the leaf modules of the
injectable types in that order; ``layer_num`` here means the same thing. Injectable layers are
``nn.Conv2d`` (any stride, padding, dilation, groups) and ``nn.Linear`` on ``(N, F)`` inputs or on
N-D inputs ``(N, *positions, F)`` (tokens ``(N, T, F)``, channels-last maps ``(N, H, W, C)``).

Neurons are described channel first, whatever the module's layout: ``output_shape`` is ``(C, H,
W)`` for a Conv2d, ``(F,)`` for a Linear on ``(N, F)``, and ``(F, *positions)`` for a Linear on
N-D inputs (``channel_last`` is then ``True``; the module itself writes ``module_output_shape``
``(*positions, F)``). A neuron is an output feature at one token/position, the weight target
("channel") an output feature, and a flat position ``p`` indexes ``positions`` row-major, so
``neurons_per_channel`` is ``T`` (or ``H * W``). The engine's layer outputs and perturbations
use this neuron layout.

Modules that carry weights but cannot be analysed (Conv1d, Conv3d, LSTM, MultiheadAttention's
packed projections, a ``F.conv2d``/``F.linear`` on a bare parameter, ...) are listed with the
reason by :func:`unsupported_layers` so reports can name them instead of silently skipping them.
"""

from __future__ import annotations

import math
import warnings
import weakref
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ._guard import eval_mode
from .quantized import is_quantized_layer
from .twins import refusals, same_pads

__all__ = [
    "LayerInfo",
    "SUPPORTED_LAYERS",
    "build_catalogue",
    "unsupported_layers",
    "unsupported_parts",
]

SUPPORTED_LAYERS: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class LayerInfo:
    """One injectable layer.

    Attributes:
        layer_num: PyTorchFI's layer number.
        name: qualified module name (``model.get_submodule(name)`` returns it).
        kind: ``"Conv2d"`` or ``"Linear"``.
        module: the module itself (not compared, not printed).
        weight_shape: shape of ``module.weight``.
        input_shape: per-image shape of what the layer reads.
        output_shape: per-image shape of the layer's neurons, channel first: ``(C, H, W)``,
            ``(F,)``, or ``(F, *positions)`` for a Linear on N-D inputs.
        groups, stride, padding, dilation: convolution parameters (Linear: 1, (1, 1), (0, 0), (1, 1));
            ``padding`` is ``(ph, pw)``, a string (``"same"``, ``"valid"``), or ``(left, right,
            top, bottom)`` for a convolution that pads inside its forward (its twin records
            what it applies, see :mod:`~pytorchfi_deepvigor.twins`).
        has_bias: whether the layer adds a bias.
        channel_last: the module writes its channels last (a Linear on N-D inputs): its real
            output is ``module_output_shape`` ``(*positions, F)``.
        weight_transform: why the layer's forward is not the plain ``F.conv2d``/``F.linear`` of
            its stored weight (``timm``'s ``StdConv2d`` standardises each filter, a weight-norm
            hook recomputes it, ...), ``""`` when it is (checked on one image, with the stored
            weight and with a changed one). Fault injection then runs the layer's own forward
            with the faulty weight or operand; the analysis, whose fault model is the plain
            product, skips such a layer and says so.
        dead: why nothing the layer computes reaches the model's output (e.g. the head of a
            two-headed network whose other output is returned), ``""`` when it does. Set by the
            engine from the traced graph; every fault of a dead layer is masked (VF 0).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
        >>> [(l.layer_num, l.name, l.kind, l.output_shape) for l in build_catalogue(net, torch.zeros(1, 1, 8, 8))]
        [(0, '0', 'Conv2d', (4, 6, 6)), (1, '2', 'Linear', (3,))]
    """

    layer_num: int
    name: str
    kind: str
    module: nn.Module = field(compare=False, repr=False)
    weight_shape: tuple[int, ...]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    groups: int = 1
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, ...] | str = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    has_bias: bool = False
    channel_last: bool = False
    weight_transform: str = ""
    dead: str = ""

    @property
    def weight_derived(self) -> bool:
        """Whether the stored weight is recomputed before each forward (a weight-norm hook):
        a fault in it changes nothing, and fault injection refuses it."""
        return self.weight_transform.startswith("derived:")

    @property
    def out_channels(self) -> int:
        """Output channels (Conv2d) or output features (Linear)."""
        return self.output_shape[0]

    @property
    def neurons_per_channel(self) -> int:
        """Output positions per channel: H * W for Conv2d, 1 for Linear on (N, F), T (or H * W)
        for Linear on N-D inputs."""
        return math.prod(self.output_shape[1:])

    @property
    def module_output_shape(self) -> tuple[int, ...]:
        """Per-image shape of what the module itself writes (channels last when ``channel_last``)."""
        if self.channel_last:
            return (*self.output_shape[1:], self.output_shape[0])
        return self.output_shape

    @property
    def neurons_per_image(self) -> int:
        """Output activations per image (N_l of the paper's Eq. 15)."""
        return math.prod(self.output_shape)

    @property
    def n_weights(self) -> int:
        """Number of weights (W_l of the paper's Eq. 15); the bias is not counted."""
        return math.prod(self.weight_shape)

    @property
    def fan_in(self) -> int:
        """Operands per output neuron (receptive field size, padding included)."""
        return math.prod(self.weight_shape[1:])

    def as_row(self) -> dict[str, object]:
        """A flat dict for tables: number, name, type, shapes (neuron layout), neurons, weights,
        groups."""
        return {
            "layer": self.layer_num,
            "name": self.name,
            "type": self.kind,
            "weight_shape": list(self.weight_shape),
            "output_shape": list(self.output_shape),
            "neurons": self.neurons_per_image,
            "weights": self.n_weights,
            "groups": self.groups,
            **({"weight_transform": self.weight_transform} if self.weight_transform else {}),
            **({"dead": self.dead} if self.dead else {}),
        }


def _weightless_children(m: nn.Module) -> bool:
    """Whether ``m``'s submodules hold no parameter or buffer (a padding child, an identity)."""
    return all(
        not list(c.parameters(recurse=False)) and not list(c.buffers(recurse=False))
        for c in m.modules()
        if c is not m
    )


def _injectable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The Conv2d/Linear modules: leaves, or subclasses whose children hold no weights
    (efficientnet_pytorch's ``Conv2dStaticSamePadding`` pads with a ``ZeroPad2d`` child)."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, SUPPORTED_LAYERS) and _weightless_children(m)
    ]


_MAC_FUNCTIONS = {
    F.conv1d: "F.conv1d",
    F.conv2d: "F.conv2d",
    F.conv3d: "F.conv3d",
    F.conv_transpose1d: "F.conv_transpose1d",
    F.conv_transpose2d: "F.conv_transpose2d",
    F.conv_transpose3d: "F.conv_transpose3d",
    F.linear: "F.linear",
    F.bilinear: "F.bilinear",
    torch.matmul: "torch.matmul",
    torch.mm: "torch.mm",
    torch.bmm: "torch.bmm",
    torch.addmm: "torch.addmm",
    torch.baddbmm: "torch.baddbmm",
    torch.einsum: "torch.einsum",
    torch.Tensor.matmul: "Tensor.matmul",
    torch.Tensor.__matmul__: "@",
    F.multi_head_attention_forward: "F.multi_head_attention_forward",
}
_MODULE_REASONS: dict[type[nn.Module], str] = {
    nn.MultiheadAttention: "packed in_proj_weight and out_proj applied by "
    "F.multi_head_attention_forward, not by Linear modules",
    nn.LSTM: "recurrent weights",
    nn.GRU: "recurrent weights",
    nn.RNN: "recurrent weights",
}
_FUNCTIONAL_USES: weakref.WeakKeyDictionary[nn.Module, list[tuple[str, str]]] = (
    weakref.WeakKeyDictionary()
)
"""Per model, the parameters its last profiled forward (:func:`build_catalogue`) fed to a
convolution or matrix product outside a catalogued layer."""
_SHARED_INPUTS: weakref.WeakKeyDictionary[nn.Module, dict[str, int]] = weakref.WeakKeyDictionary()
"""Per model, the injectable layers whose input batch was not the images' in its last profiled
forward, with that batch (see :data:`SHARED_INPUT_REASON` and :data:`FOLDED_REASON`)."""

FOLDED_REASON = (
    "its input folds windows or patches into the batch (2 images gave a batch of {n}, as Swin's "
    "window attention or MobileViT's patches do): a neuron of one image is spread over several "
    "rows, which the per-image analysis and FI do not model"
)

_REUSED: weakref.WeakKeyDictionary[nn.Module, dict[str, int]] = weakref.WeakKeyDictionary()
"""Per model, the injectable layers its last profiled forward called more than once, with the
number of calls (see :data:`REUSED_REASON`)."""

REUSED_REASON = (
    "called {n} times per forward (weight sharing): a fault in its weight reaches every call, "
    "which the per-call analysis and FI do not model; give each use its own module to analyse it"
)

SHARED_INPUT_REASON = (
    "its input does not depend on the images: a tensor computed from parameters and buffers "
    "alone (batch 1 whatever the batch, e.g. SwinV2's continuous position bias MLP), shared by "
    "every image, so a fault there changes all images at once, which the per-image analysis and "
    "FI do not model"
)


class _ParameterUses(TorchFunctionMode):
    """Records the parameters passed to convolutions and matrix products."""

    def __init__(self, params: dict[int, str]) -> None:
        super().__init__()
        self.params = params
        self.used: dict[str, str] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        name = _MAC_FUNCTIONS.get(func)
        if name is not None:
            for a in (*args, *kwargs.values()):
                for t in a if isinstance(a, (list, tuple)) else (a,):
                    if isinstance(t, torch.Tensor) and id(t) in self.params:
                        self.used.setdefault(self.params[id(t)], name)
        return func(*args, **kwargs)


def unsupported_layers(model: nn.Module, example_input: torch.Tensor | None = None) -> list[str]:
    """Weight-carrying parts of ``model`` that cannot be analysed, each as ``"name (Type: why)"``.

    Listed: leaf modules of other types holding a weight of two or more dimensions (Conv1d,
    Conv3d, LSTM, ...), ``nn.MultiheadAttention`` (its packed projections), and parameters or
    buffers that the forward feeds to a convolution or matrix product outside a catalogued layer
    (``F.conv2d(x, self.w)``, ``F.linear(x, self.w)``, ``torch.matmul(x, self.buffer)``): those
    are found by running ``example_input`` (default: what the last :func:`build_catalogue` of
    this model saw).
    """
    return [
        f"{name} ({what}: {why})" for name, what, why in unsupported_parts(model, example_input)
    ]


def unsupported_parts(
    model: nn.Module, example_input: torch.Tensor | None = None
) -> list[tuple[str, str, str]]:
    """:func:`unsupported_layers` as ``(module or tensor name, type, why)`` triples."""
    out: list[tuple[str, str, str]] = []
    covered: set[str] = set()
    refused = refusals(model)
    for name, m in model.named_modules():
        reason = next((r for t, r in _MODULE_REASONS.items() if isinstance(m, t)), None)
        if reason is not None and name in refused:
            reason = f"{reason}; its projections are not analysed here: {refused[name]}"
        if reason is not None:
            out.append((name, type(m).__name__, reason))
            covered.add(name)
            continue
        if list(m.children()) or isinstance(m, SUPPORTED_LAYERS):
            continue
        if any(p.dim() >= 2 for p in m.parameters(recurse=False)) or (
            isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() >= 2
        ):
            out.append((name, type(m).__name__, "only Conv2d and Linear are analysed"))
            covered.add(name)
    if example_input is not None:
        seen, uses, _, shared, _ = _profile(model, example_input)
        reused = {n: len(c) for n, c in seen.items() if len(c) > 1}
    else:
        uses, shared = None, _SHARED_INPUTS.get(model, {})
        reused = _REUSED.get(model, {})
    modules = dict(model.named_modules())
    buffers = {n for n, _ in model.named_buffers()}
    for name, batch in shared.items():
        why = SHARED_INPUT_REASON if batch == 1 else FOLDED_REASON.format(n=batch)
        out.append((name, type(modules[name]).__name__, why))
    for name, n in reused.items():
        out.append((name, type(modules[name]).__name__, REUSED_REASON.format(n=n)))
    listed: set[str] = set()
    for param, func in uses if uses is not None else _FUNCTIONAL_USES.get(model, []):
        owner = param.rpartition(".")[0]
        if any(owner == c or owner.startswith(c + ".") for c in covered) or owner in listed:
            continue
        m = modules.get(owner)
        if isinstance(m, SUPPORTED_LAYERS):  # its parameters applied by another function
            listed.add(owner)
            why = f"its weight is applied by {func} inside another function, the module itself is never called"
            out.append((owner, type(m).__name__, why))
        else:
            kind = "buffer" if param in buffers else "parameter"
            why = f"used by {func}, not as the weight of a catalogued Conv2d/Linear"
            out.append((param, kind, why))
    return out


def _profile(
    model: nn.Module, example_input: torch.Tensor
) -> tuple[
    dict[str, list[tuple[tuple[int, ...], tuple[int, ...]]]],
    list[tuple[str, str]],
    list[str],
    dict[str, int],
    dict[str, torch.Tensor],
]:
    """One eval-mode forward of two inputs (the first one twice if there is one): per injectable
    layer its per-image (input, output) shapes per call, the parameters used by
    convolutions/matrix products outside called layers, the call order of the injectable layers,
    the layers whose input batch was not the images' (1: it does not depend on the images; more:
    windows or patches folded into the batch), with that batch, and the first image each
    injectable layer read."""
    layers = _injectable(model)
    seen: dict[str, list[tuple[tuple[int, ...], tuple[int, ...]]]] = {n: [] for n, _ in layers}
    order: list[str] = []
    shared: dict[str, int] = {}
    first: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(name: str):  # type: ignore[no-untyped-def]
        def hook(_m: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            seen[name].append((tuple(inputs[0].shape[1:]), tuple(output.shape[1:])))
            order.append(name)
            first.setdefault(name, inputs[0][:1].detach().clone())
            if inputs[0].shape[0] != batch.shape[0] and name not in shared:
                shared[name] = int(inputs[0].shape[0])  # 1: shared; more: windows folded in

        return hook

    batch = (
        example_input[:2]
        if example_input.shape[0] >= 2
        else example_input[:1].repeat(2, *(1,) * (example_input.dim() - 1))
    )
    tensors = {id(p): n for n, p in model.named_parameters()}
    tensors.update(  # a weight held in a buffer (ONNX conversions) is a weight too
        {id(b): n for n, b in model.named_buffers() if b.is_floating_point() and b.dim() >= 2}
    )
    mode = _ParameterUses(tensors)
    try:
        for name, m in layers:
            handles.append(m.register_forward_hook(make_hook(name)))
        with eval_mode(model), torch.no_grad(), mode:
            model(batch)
    finally:
        for h in handles:
            h.remove()
    called = {n for n in seen if seen[n]}
    uses = [(p, f) for p, f in mode.used.items() if p.rpartition(".")[0] not in called]
    return seen, uses, order, shared, first


WEIGHT_TRANSFORM = (
    "{kind}.forward of {cls} is not the plain F.{op} of its stored weight (it transforms the "
    "weight, pads or rescales, or a hook does): weight and operand faults run through its own "
    "forward; the analysis, whose fault model is the plain product, skips it"
)
WEIGHT_DERIVED = (
    "derived: {cls}'s weight is recomputed before each forward from other parameters (a weight-norm or "
    "spectral-norm hook): a fault in the stored weight changes nothing and the parameters it "
    "comes from are not fault sites; fault injection refuses its weights, the analysis skips it"
)


def _plain(m: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """What a plain Conv2d / Linear with ``weight`` computes on ``x``."""
    bias = m.bias if isinstance(m.bias, torch.Tensor) else None
    if isinstance(m, nn.Conv2d):
        if isinstance(m.padding, tuple) and len(m.padding) == 4:  # a same-padding twin
            x = F.pad(x, m.padding)  # type: ignore[arg-type]
            return F.conv2d(x, weight, bias, m.stride, 0, m.dilation, m.groups)
        if m.padding_mode != "zeros":
            x = F.pad(x, m._reversed_padding_repeated_twice, mode=m.padding_mode)
            return F.conv2d(x, weight, bias, m.stride, 0, m.dilation, m.groups)
        return F.conv2d(x, weight, bias, m.stride, m.padding, m.dilation, m.groups)
    return F.linear(x, weight, bias)


def _weight_transform(m: nn.Module, x: torch.Tensor) -> str:
    """``""`` when ``m`` computes the plain product of its stored weight (on ``x`` and on a
    random input of its shape, with the stored weight and with one weight changed); else
    :data:`WEIGHT_TRANSFORM`, or :data:`WEIGHT_DERIVED` when a changed ``weight`` changes
    nothing (a hook recomputes it). The weight is restored bit for bit, also on an error."""
    weight = m.weight
    if not isinstance(weight, torch.Tensor) or is_quantized_layer(m):
        return ""  # an int8 layer's twin: the kernel of its (requantised) weight, quantized.py
    kind = "Conv2d" if isinstance(m, nn.Conv2d) else "Linear"
    op = "conv2d" if kind == "Conv2d" else "linear"
    names = {"kind": kind, "cls": type(m).__name__, "op": op}
    saved = weight.detach().clone()  # keeps the weight's own memory format
    changed = saved.clone()
    first = (0,) * changed.dim()
    changed[first] = changed[first] * 4 + 1
    generator = torch.Generator(device=x.device).manual_seed(0)
    inputs = (x, torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype))
    try:
        with eval_mode(m), torch.no_grad():
            outs = {}
            for k, w in enumerate((saved, changed)):
                weight.detach().copy_(w)
                for j, xi in enumerate(inputs):
                    outs[k, j] = m(xi)
            pairs = [
                (k, j, w, xi) for k, w in enumerate((saved, changed)) for j, xi in enumerate(inputs)
            ]
            if all(_is_plain(m, xi, w, outs[k, j]) for k, j, w, xi in pairs):
                return ""
            # a hook (weight norm) or a parametrization recomputes the weight: after a forward
            # it is another tensor, or no longer what was written (a weight the forward merely
            # scales by zero, as NFNet's zero-initialised gain does, is still a fault site)
            if m.weight is not weight or not torch.equal(m.weight, changed):
                return WEIGHT_DERIVED.format(**names)
            return WEIGHT_TRANSFORM.format(**names)
    finally:
        with torch.no_grad():
            weight.detach().copy_(saved)


def _is_plain(m: nn.Module, x: torch.Tensor, weight: torch.Tensor, got: object) -> bool:
    """Whether ``got`` (what ``m`` gave on ``x``) is the plain product of ``weight``."""
    try:
        want = _plain(m, x, weight)
    except RuntimeError:  # it pads inside forward: no plain conv of x fits
        return False
    if not isinstance(got, torch.Tensor) or got.shape != want.shape:
        return False
    scale = float(want.abs().max()) if want.numel() else 0.0
    return bool(torch.allclose(got, want, rtol=1e-4, atol=1e-6 * max(scale, 1.0)))


def _weight(m: nn.Module) -> torch.Tensor:
    weight = m.weight
    assert isinstance(weight, torch.Tensor)
    return weight


def _pair(v: object) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):  # efficientnet_lite_pytorch keeps its strides in lists
        return (int(v[0]), int(v[1]))
    return (int(v), int(v))  # type: ignore[call-overload]


def _padding(v: object) -> tuple[int, ...]:
    """A Conv2d's numeric padding: ``(ph, pw)``, or ``(left, right, top, bottom)`` as a
    :class:`~pytorchfi_deepvigor.twins.PaddedConv2d` records the padding it applies."""
    if isinstance(v, (tuple, list)) and len(v) == 4:
        return tuple(int(p) for p in v)
    return _pair(v)


def build_catalogue(model: nn.Module, example_input: torch.Tensor) -> list[LayerInfo]:
    """Profile ``model`` once (eval mode, no grad, two images) and list its injectable layers.

    Args:
        model: any ``nn.Module``; it is left exactly as it was.
        example_input: a batch of inputs; only its first element is used.

    Raises:
        ValueError: if the model has no injectable layer, or a Linear layer sees more than two
            position dims. A layer called more than once per forward (weight sharing) is not
            catalogued; :func:`unsupported_layers` lists it with the reason.
    """
    layers = _injectable(model)
    if not layers:
        raise ValueError(
            "the model has no injectable layer (nn.Conv2d or nn.Linear); "
            f"unsupported layers: {unsupported_layers(model, example_input) or 'none'}"
        )
    seen, uses, order, shared, first = _profile(model, example_input)
    _FUNCTIONAL_USES[model] = uses
    _SHARED_INPUTS[model] = shared
    _REUSED[model] = {n: len(c) for n, c in seen.items() if len(c) > 1}
    if list(dict.fromkeys(n for n in order if n in seen)) != [n for n, _ in layers if seen[n]]:
        warnings.warn(
            "the execution order of the injectable layers differs from their registration order; "
            "layer numbers follow registration order (as PyTorchFI's weight injection does)",
            stacklevel=2,
        )
    catalogue: list[LayerInfo] = []
    packed = [n for n, m in model.named_modules() if isinstance(m, tuple(_MODULE_REASONS))]
    for name, m in layers:
        calls = seen[name]
        if not calls and any(name.startswith(p + ".") for p in packed):
            continue  # e.g. MultiheadAttention.out_proj: listed by unsupported_layers
        if name in shared:
            continue  # listed by unsupported_layers with the reason
        if not calls:
            warnings.warn(
                f"layer {name!r} is never called in forward; it is not catalogued", stacklevel=2
            )
            continue
        if len(calls) > 1:
            continue  # weight sharing: listed by unsupported_layers with the reason
        in_shape, out_shape = calls[0]
        if isinstance(m, nn.Conv2d):
            if len(out_shape) != 3:
                raise ValueError(
                    f"Conv2d {name!r} must see (N, C, H, W) inputs, got output {out_shape}"
                )
            pad = m.padding if isinstance(m.padding, str) else _padding(m.padding)
            # a conv that pads inside its forward and also transforms its weight (timm's
            # ScaledStdConv2dSame: no twin): the padding that gives its output size
            fixed = isinstance(pad, str) or len(pad) == 4
            inferred = None if fixed else same_pads(m, in_shape[1:], out_shape[1:])
            pad = pad if inferred is None else inferred
            info = LayerInfo(
                layer_num=len(catalogue),
                name=name,
                kind="Conv2d",
                module=m,
                weight_shape=tuple(_weight(m).shape),
                input_shape=in_shape,
                output_shape=out_shape,
                groups=m.groups,
                stride=_pair(m.stride),
                padding=pad,
                dilation=_pair(m.dilation),
                has_bias=m.bias is not None,
                weight_transform=_weight_transform(m, first[name]),
            )
        else:
            positions = out_shape[:-1]
            if len(positions) > 2:
                raise ValueError(
                    f"Linear {name!r} sees inputs of shape {in_shape} per image; only (N, F), "
                    "(N, T, F) and (N, H, W, C) inputs are supported (at most two position dims)"
                )
            info = LayerInfo(
                layer_num=len(catalogue),
                name=name,
                kind="Linear",
                module=m,
                weight_shape=tuple(_weight(m).shape),
                input_shape=in_shape,
                output_shape=(out_shape[-1], *positions),
                has_bias=m.bias is not None,
                channel_last=bool(positions),
                weight_transform=_weight_transform(m, first[name]),
            )
        catalogue.append(info)
    return catalogue
