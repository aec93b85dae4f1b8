"""The run: :class:`SimulationEngine` caches the golden values of the cuts (:mod:`.plan`) and
evaluates batches of perturbations through them, in memory-bounded chunks, channels-last on
the CPU, with the early exit at the checkpoint, or on the hook path."""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import dataclasses
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.fx
from torch import nn

from .._guard import (
    check_device,
    check_float_model,
    check_images,
    check_model_output,
    check_positive_int,
    eval_mode,
)
from ..catalogue import LayerInfo, build_catalogue
from ..distributed import rank_device
from ..perturbations import ChannelAdd, NeuronAdd, Perturbation, StoredAdd
from ..quantized import QUANTIZED_TWINS, is_quantized_layer, quantized_view
from ..twins import LEAF_TWINS, twin_view
from .outcomes import EngineStats, Outcome, classify, fingerprint
from .plan import (
    DEAD,
    _dependence,
    _fold_batchnorms,
    _Plan,
    _plan,
    _prefix,
    dead_layers,
    own_layouts,
)

__all__ = ["SimulationEngine", "DEFAULT_MEMORY_BYTES", "Elements"]

_T = TypeVar("_T")

Elements = Callable[[int, int], Perturbation]
"""``(start, stop) -> the perturbation of elements start:stop`` of a batch: the engine builds
each chunk's perturbations when it runs the chunk (a batch of map perturbations, weight-fault
patterns, is never held whole)."""

logger = logging.getLogger(__name__)

# Activation budget of one chunk. On the CPU, chunks that stay near the caches are fastest
# (measured: VGG-11 at width 1/8 peaks at 256 images per forward, ResNet-18 at 64-128, and both
# are 2-4x slower per image at 2048); on a GPU, larger chunks keep the device busy.
DEFAULT_MEMORY_BYTES = {"cpu": 128 * 2**20, "cuda": 2 * 2**30}
_SUFFIX_CHUNK_GROWTH = 4


@dataclass
class _Segment:
    """One piece of a suffix: from a checkpoint value (and live values) to the next one."""

    module: Callable[..., torch.Tensor]
    live: list[int]  # which of the cut's live values it reads
    roots: list[int]  # which of the cut's shape roots it reads
    golden_in: torch.Tensor | None  # golden value of the checkpoint it starts from (I, ...)
    # (None: no check before it; the first segment starts from the perturbed layer output)
    flops: float  # convolution / linear FLOPs per image


@dataclass
class _Cut:
    """Cached golden values and the suffix program for one layer."""

    layer_input: torch.Tensor
    layer_output: torch.Tensor  # in neuron layout: channel first (see LayerInfo.channel_last)
    live_ins: list[torch.Tensor]  # per-image values (I, ...), indexed by image
    root_ins: list[torch.Tensor]  # one image of each shape root (1, ...), expanded per call
    suffix: Callable[..., torch.Tensor] | None  # None: hook path
    segments: list[_Segment]
    # float16/bfloat16 models: the layer's float32 sum before its rounding to the model's
    # format, in neuron layout (computed on first use; None: not reproduced, or float32);
    # an int8 layer's: its sum before requantisation
    wide: torch.Tensor | None = None
    wide_done: bool = False
    # an int8 layer: (scale, zero point, dtype) of its quantized output; ``layer_input`` and
    # ``layer_output`` hold the dequantized values, the suffix reads the quantized ones
    qparams: tuple[float, int, torch.dtype] | None = None


class _Tracer(torch.fx.Tracer):
    """torch.fx's tracer, keeping the layer twins of :mod:`~pytorchfi_deepvigor.twins` (a
    convolution that pads first, a Linear holding a handed weight) as modules: the layers the
    plan cuts at."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, LEAF_TWINS + QUANTIZED_TWINS) or super().is_leaf_module(
            m, module_qualified_name
        )


def _heap_trimmer() -> Callable[[], object] | None:
    """glibc's ``malloc_trim`` (``None`` elsewhere)."""
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # musl and other C libraries
        return None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


_TRIM = _heap_trimmer()
_TRIM_EVERY_S = 1.0
_trimmed_at = 0.0


def _release_heap() -> None:
    """Give the C heap's free pages back to the system, at most once a second.

    Campaigns call the engine hundreds of thousands of times with batches of varying sizes;
    glibc serves their megabyte-sized tensors from its heap (its mmap threshold rises after
    the first large frees) and the freed holes are not returned: measured, one ViT layer's
    data-aware SFI ended at 4.1-4.3 GiB resident for 25 MiB of live tensors, and a whole
    model's was killed by the kernel at 24 GiB. Trimming once a second keeps it at 0.6 GiB at
    no measurable cost (trimming after every call cost 12%).
    """
    global _trimmed_at
    if _TRIM is None:
        return
    now = time.monotonic()
    if now - _trimmed_at >= _TRIM_EVERY_S:
        _TRIM()
        _trimmed_at = now


def _qparams(t: torch.Tensor) -> tuple[float, int, torch.dtype] | None:
    """(scale, zero point, dtype) of a per-tensor quantized tensor; ``None`` for a float one."""
    if not t.is_quantized:
        return None
    return float(t.q_scale()), int(t.q_zero_point()), t.dtype


def _plain(t: torch.Tensor) -> torch.Tensor:
    """``t``, dequantized where it is an int8 network's quantized activation."""
    return t.dequantize() if t.is_quantized else t


def _stand_in(first: torch.Tensor, n: int) -> torch.Tensor:
    """A tensor of ``n`` images shaped like a shape root (its values are never read)."""
    return first[:1].expand(n, *first.shape[1:])


def _differs(x: torch.Tensor, golden: torch.Tensor) -> torch.Tensor:
    """Per batch element: whether ``x`` differs from ``golden`` anywhere (NaN counts as differing).

    ``|x - golden|`` reduced by max: a float reduction, measured 3-4x faster on the CPU than
    ``(x != golden).any()``; max propagates NaN, and ``NaN != 0``.
    """
    if x.is_quantized:  # an int8 network's activations: their stored integers
        x, golden = x.int_repr().float(), golden.int_repr().float()
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        x, golden = x.permute(0, 2, 3, 1), golden.permute(0, 2, 3, 1)
    diff = torch.sub(x.reshape(x.shape[0], -1), golden.reshape(x.shape[0], -1)).abs_()
    return diff.amax(dim=1) != 0


class SimulationEngine:
    """Golden cache and suffix execution for one model and one analysis batch.

    Args:
        model: any ``nn.Module`` classifier in one float format (float32, float16 or bfloat16:
            ``engine.dtype``; the suffix runs in it); it is never changed. ``engine.model``
            is the view the engine runs (:func:`~pytorchfi_deepvigor.twins.twin_view`: shares
            every tensor, some modules replaced by twins). If ``device`` differs
            from the model's device, the engine works on its own copy. An int8 network
            (``torch.ao.quantization``) is accepted too: ``engine.quantized``; its quantized
            layers become twins that run their own kernels (:mod:`~pytorchfi_deepvigor.quantized`),
            the golden inputs and outputs are kept dequantized, the suffix runs quantized.
        images: the analysis batch ``(I, ...)``, in the model's format (float32 for an int8
            network, which quantizes its input itself).
        device: where to compute (default: the model's device; under torchrun a GPU given without an
            index, or a model on one, means ``cuda:LOCAL_RANK``).
        max_batch: cap on batch elements per forward (default: from ``memory_bytes``).
        memory_bytes: budget for the activations of one chunk (default 128 MiB on the CPU,
            2 GiB on a GPU).
        use_fx: trace with torch.fx (falls back to hooks when tracing fails); ``False`` forces hooks.
        early_exit: stop the elements whose fault is masked at the layer's checkpoint (see
            above) instead of running the rest of the network for them (costs one golden value
            per layer). Results do not depend on it, only the work done.
        fold_batchnorm: run each eval-mode Conv2d + BatchNorm2d pair after the layer as one
            folded convolution (an engine-owned copy). Off by default: it is ~8 % faster on the
            CPU and agrees to float rounding for ordinary values, but it changes where extreme
            values overflow (a fault near float32's maximum can become Inf/NaN in one form and
            not in the other: measured, 3 of 57,600 (fault, image) pairs of exhaustive weight FI
            on a VGG-11 layer turned critical), so outcomes then belong to the folded model
            (as deployed by inference engines that fold), not to the model as given.
        channels_last: compute and cache the golden activations, and run the suffixes, in the
            channels-last layout (default: on the CPU, where its convolutions are measured
            1.2-2x faster for the narrow layers of an analysis; values agree with the default
            layout to float rounding). Only convolutions, BatchNorm, pooling, elementwise
            activations, adds and concatenations run channels-last (each checked under extreme
            values; ``GroupNorm`` gives NaN channels-last where the contiguous kernel is finite);
            every other traced node reads its inputs laid out as in the model's own forward
            (:attr:`layout_bound` names them), and where an in-place op writes into a view the
            whole suffix keeps the model's layout. The golden logits always come from
            ``model(images)``.

    Example:
        >>> from pytorchfi_deepvigor.perturbations import NeuronAdd
        >>> torch.manual_seed(0); net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
        <torch._C.Generator object at ...>
        >>> eng = SimulationEngine(net, torch.randn(4, 1, 4, 4))
        >>> idx = torch.tensor([0, 1]); zero = torch.zeros(2, dtype=torch.long)
        >>> eng.critical(0, idx, NeuronAdd(zero, zero, zero, torch.tensor([0.0, 0.0]))).tolist()
        [False, False]
    """

    def __init__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        *,
        device: str | torch.device | None = None,
        max_batch: int | None = None,
        memory_bytes: int | None = None,
        use_fx: bool = True,
        early_exit: bool = True,
        fold_batchnorm: bool = False,
        channels_last: bool | None = None,
    ) -> None:
        self.dtype = check_float_model(model)
        check_images(images, self.dtype)
        max_batch = check_positive_int(max_batch, "max_batch")
        memory_bytes = check_positive_int(memory_bytes, "memory_bytes")
        device = check_device(device)
        param = next(iter(model.parameters()), None)
        model_device = param.device if param is not None else torch.device("cpu")
        # under torchrun a GPU without an index (or a model on one) means cuda:LOCAL_RANK
        self.device = rank_device(device, model_device)
        if self.device != model_device:
            model = copy.deepcopy(model).to(self.device)
        self.model = model
        if channels_last is None:
            channels_last = self.device.type == "cpu"
        self.channels_last = bool(channels_last) and images.dim() == 4
        self.images = images.to(self.device)
        check_model_output(model, self.images)  # logits (N, classes), before any work
        # the view the engine runs (twins.py): attention projections, convolutions that pad in
        # their forward and weights handed to a MatMul as layers; ``model`` itself without any
        model = self.model = twin_view(model, self.images[:2])
        # an int8 network (torch.ao): its quantized layers as twins running their own kernels
        model = self.model = quantized_view(model, self.images[:2])
        self.quantized = any(is_quantized_layer(m) for m in model.modules())
        if self.quantized:  # its kernels choose their own layouts
            self.channels_last = False
        self.catalogue: list[LayerInfo] = build_catalogue(model, self.images[:1])
        self.stats = EngineStats()
        self._cuts: dict[int, _Cut] = {}
        self._references: dict[int, torch.Tensor] = {}
        self._graph: torch.fx.GraphModule | None = None
        self._dependence: dict[torch.fx.Node, str] | None = None
        # layers the traced graph cannot be cut at, with the reason: they run on the hook path
        self.hook_layers: dict[int, str] = {}
        if use_fx:
            try:
                with eval_mode(model):
                    self._graph = torch.fx.GraphModule(model, _Tracer().trace(model))
            except Exception as exc:  # tracing fails on data-dependent control flow
                logger.info("torch.fx cannot trace the model (%s); using the hook path", exc)
        if self._graph is not None:  # layers nothing reads: every fault masked, no suffix run
            dead = dead_layers(self._graph, [info.name for info in self.catalogue])
            self.catalogue = [
                dataclasses.replace(info, dead=DEAD) if info.name in dead else info
                for info in self.catalogue
            ]
        # the traced nodes whose kernels differ channels-last read the model's own layout
        bound: list[str] | None = []
        if self._graph is not None and self.channels_last:
            with self._frozen():
                bound = own_layouts(self._graph, self.images[:2].clone())  # in-place-safe
        if bound is None:  # in-place writes through views: the model's layout throughout
            self.channels_last = False
        self.layout_bound: list[str] = bound or []
        calls = self._activation_bytes_per_image()
        per_image = 2 * sum(b for _, b in calls)
        if memory_bytes is None:
            memory_bytes = DEFAULT_MEMORY_BYTES.get(self.device.type, DEFAULT_MEMORY_BYTES["cuda"])
        self.max_batch = max_batch or max(1, min(8192, memory_bytes // max(per_image, 1)))
        # A suffix holds fewer activations than the whole network: its chunks may grow, up to
        # _SUFFIX_CHUNK_GROWTH x max_batch (measured: late ResNet layers run their convolutions
        # 10-15 % faster at 2-4x the whole-network chunk, and slower again beyond).
        self._layer_batch: dict[int, int] = {}
        for info in self.catalogue:
            at = next((i for i, (m, _) in enumerate(calls) if m is info.module), None)
            rest = 2 * sum(b for _, b in calls[at + 1 :]) if at is not None else per_image
            grown = memory_bytes // max(rest, 1)
            self._layer_batch[info.layer_num] = (
                max_batch
                if max_batch is not None
                else max(self.max_batch, min(grown, _SUFFIX_CHUNK_GROWTH * self.max_batch, 8192))
            )
        self.early_exit = bool(early_exit)
        self._fused = (
            _fold_batchnorms(self._graph) if self._graph is not None and fold_batchnorm else {}
        )
        self._layer_flops = {
            l.name: float(2 * l.neurons_per_image * l.fan_in) for l in self.catalogue
        }
        with self._frozen():
            self.golden_logits = self._full_forward(self.images)
        if not bool(torch.isfinite(self.golden_logits).all()):
            raise ValueError("the golden run already produces NaN/Inf logits: check the model")
        self.golden_top1 = self.golden_logits.argmax(dim=1)

    # ----------------------------------------------------------------------------- basics
    @property
    def num_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def uses_fx(self) -> bool:
        """Whether the suffix runs through torch.fx (else: hook path)."""
        return self._graph is not None

    def reset_stats(self) -> None:
        self.stats = EngineStats()

    def layer(self, layer_num: int) -> LayerInfo:
        """The catalogue entry of ``layer_num``, with a clear error when it does not exist."""
        if isinstance(layer_num, bool) or not isinstance(layer_num, int):
            raise TypeError(f"layer_num must be an int, got {type(layer_num).__name__}")
        if not 0 <= layer_num < len(self.catalogue):
            raise ValueError(
                f"layer_num {layer_num} out of range: the model has {len(self.catalogue)} "
                f"injectable layers (0..{len(self.catalogue) - 1})"
            )
        return self.catalogue[layer_num]

    def layer_input(self, layer_num: int) -> torch.Tensor:
        """Golden input of the layer for every image, ``(I, *input_shape)``."""
        return self._cut(layer_num).layer_input

    def layer_output(self, layer_num: int) -> torch.Tensor:
        """Golden output of the layer for every image, ``(I, *output_shape)``."""
        return self._cut(layer_num).layer_output

    def release(self, layer_num: int | None = None) -> None:
        """Drop the cached golden values of one layer (or all) to free memory."""
        if layer_num is None:
            self._cuts.clear()
        else:
            self._cuts.pop(layer_num, None)

    @contextmanager
    def _frozen(self) -> Iterator[None]:
        with eval_mode(self.model), torch.no_grad():
            yield

    def _activation_bytes_per_image(self) -> list[tuple[nn.Module, int]]:
        """Output bytes of one image of every leaf module call, in call order."""
        calls: list[tuple[nn.Module, int]] = []
        handles = []

        def hook(m: nn.Module, _i: object, out: object) -> None:
            if isinstance(out, torch.Tensor):
                calls.append((m, out[:1].numel() * out.element_size()))

        try:
            for m in self.model.modules():
                if not list(m.children()):
                    handles.append(m.register_forward_hook(hook))
            with self._frozen():
                self.model(self.images[:1])
        finally:
            for h in handles:
                h.remove()
        return calls

    def _layout(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` in the engine's layout (channels-last for 4-D tensors when enabled)."""
        if self.channels_last and t.dim() == 4:
            return t.contiguous(memory_format=torch.channels_last)
        return t

    def _chunks(self, n: int, step: int | None = None) -> Iterator[tuple[int, int]]:
        step = step or self.max_batch
        for start in range(0, n, step):
            yield start, min(n, start + step)

    def _full_forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [self.model(x[a:b]) for a, b in self._chunks(x.shape[0])]
        return torch.cat(outs).float()

    # ------------------------------------------------------------------------ golden cache
    def _cut(self, layer_num: int) -> _Cut:
        if layer_num not in self._cuts:
            self.prepare([layer_num])
        return self._cuts[layer_num]

    def prepare(self, layer_nums: list[int] | None = None) -> None:
        """Cache the golden values of several layers in ONE golden pass (default: all layers).

        Each layer is otherwise prepared on first use by its own partial forward; preparing the
        layers a study will touch together saves those forwards at the cost of holding their
        inputs and outputs in memory at once. A layer the traced graph cannot be cut at (see
        :func:`_plan`) runs on the hook path; :attr:`hook_layers` lists them.
        """
        nums = range(len(self.catalogue)) if layer_nums is None else layer_nums
        todo = [self.layer(n) for n in dict.fromkeys(nums) if n not in self._cuts]
        if not todo:
            return
        with self._frozen():
            hooked = todo
            if self._graph is not None:
                planned, hooked = self._plans(todo)
                if planned:
                    self._prepare_fx(planned)
            if hooked:
                self._prepare_hooks(hooked)

    def _plans(
        self, todo: list[LayerInfo]
    ) -> tuple[list[tuple[LayerInfo, _Plan]], list[LayerInfo]]:
        assert self._graph is not None
        if self._dependence is None:
            self._dependence = _dependence(self._graph)
        planned, hooked = [], []
        for info in todo:
            if info.layer_num in self.hook_layers or info.dead:
                hooked.append(info)  # a dead layer: its golden values only (nothing runs after)
                continue
            try:
                plan = _plan(
                    self._graph,
                    info.name,
                    self._layer_flops,
                    self._fused,
                    self.early_exit,
                    self._dependence,
                )
            except ValueError as exc:
                logger.info("layer %s runs on the hook path: %s", info.name, exc)
                self.hook_layers[info.layer_num] = str(exc)
                hooked.append(info)
                continue
            planned.append((info, plan))
        return planned, hooked

    def _prepare_fx(self, planned: list[tuple[LayerInfo, _Plan]]) -> None:
        """One prefix pass caching what every planned layer's suffix needs."""
        assert self._graph is not None
        wanted: dict[tuple[torch.fx.Node, torch.fx.Node | None, str], int] = {}

        def want(n: torch.fx.Node, at: torch.fx.Node | None = None, how: str = "value") -> int:
            return wanted.setdefault((n, at, how), len(wanted))

        keys = []
        for _, p in planned:
            keys.append(
                (
                    want(p.layer_in, p.cut),  # what the layer received
                    want(p.cut),
                    [want(n, at) for n, at in zip(p.live, p.read_at, strict=True)],
                    [want(n, None, "first") for n in p.roots],
                    [want(s.start) for s in p.segments[1:]],
                )
            )
        entries = list(wanted)
        prefix = _prefix(self._graph, entries)
        parts: list[list[object]] = [[] for _ in entries]
        for a, b in self._chunks(self.num_images):
            for k, t in enumerate(prefix(self._layout(self.images[a:b]))):
                if (
                    not isinstance(t, torch.Tensor)
                    or t.dim() == 0
                    or (entries[k][2] == "value" and t.shape[0] != b - a)
                ):
                    raise RuntimeError(
                        f"the traced value {entries[k][0].name!r} is not a per-image tensor "
                        f"(got {type(t).__name__}); construct the engine with use_fx=False"
                    )
                if entries[k][2] == "value" or not parts[k]:
                    parts[k].append(t)
        # each value in the layout the prefix computed it in (channels-last only where allowed)
        value: list[torch.Tensor] = [
            torch.cat(p) if len(p) > 1 else p[0]  # type: ignore[arg-type,misc]
            for p in parts
        ]
        for (info, p), (k_in, k_out, k_live, k_roots, k_segs) in zip(planned, keys, strict=True):
            segments = [
                _Segment(
                    s.module, s.live, s.roots, None if j == 0 else value[k_segs[j - 1]], s.flops
                )
                for j, s in enumerate(p.segments)
            ]
            self._cuts[info.layer_num] = _Cut(
                _plain(value[k_in]),
                self._neuron_layout(info, _plain(value[k_out])),
                [value[k] for k in k_live],
                [value[k] for k in k_roots],
                p.suffix,
                segments,
                qparams=_qparams(value[k_out]),
            )

    def _prepare_hooks(self, todo: list[LayerInfo]) -> None:
        grabbed: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {
            info.layer_num: ([], []) for info in todo
        }

        def grab(num: int) -> Callable[..., None]:
            def hook(_m: nn.Module, i: tuple[torch.Tensor, ...], o: torch.Tensor) -> None:
                # copies: an in-place op after the layer would overwrite them
                grabbed[num][0].append(i[0].clone())
                grabbed[num][1].append(o.clone())

            return hook

        with ExitStack() as stack:
            for info in todo:
                stack.enter_context(info.module.register_forward_hook(grab(info.layer_num)))
            for a, b in self._chunks(self.num_images):
                self.model(self.images[a:b])
        for info in todo:
            ins, outs = grabbed[info.layer_num]
            out = torch.cat(outs)
            self._cuts[info.layer_num] = _Cut(
                _plain(torch.cat(ins)),
                self._neuron_layout(info, _plain(out)),
                [],
                [],
                None,
                [],
                qparams=_qparams(out),
            )

    @staticmethod
    def _neuron_layout(info: LayerInfo, out: torch.Tensor) -> torch.Tensor:
        """A layer's output ``(I, *module_output_shape)`` in neuron layout ``(I, *output_shape)``."""
        return out.movedim(-1, 1) if info.channel_last else out

    @staticmethod
    def _module_layout(info: LayerInfo, out: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`_neuron_layout`: what the model's next op reads."""
        return out.movedim(1, -1) if info.channel_last else out

    # ---------------------------------------------------------------------------- running
    def _check_idx(self, image_idx: torch.Tensor) -> torch.Tensor:
        image_idx = torch.as_tensor(image_idx)
        if image_idx.dim() != 1 or image_idx.is_floating_point():
            raise TypeError(
                f"image_idx must be a 1-D integer tensor, got shape {tuple(image_idx.shape)}"
            )
        if image_idx.numel() and (
            int(image_idx.min()) < 0 or int(image_idx.max()) >= self.num_images
        ):
            raise ValueError(f"image_idx out of range [0, {self.num_images})")
        return image_idx.long().to(self.device)

    def suffix(
        self, layer_num: int, image_idx: torch.Tensor, layer_output: torch.Tensor
    ) -> torch.Tensor:
        """Logits of the network run from a given layer output (autograd-friendly, no chunking).

        ``layer_output[b]`` replaces layer ``layer_num``'s output for image ``image_idx[b]``. Runs
        in eval mode; gradients flow to ``layer_output`` when it requires grad. Counts as one
        batched forward.
        """
        cut = self._cut(layer_num)
        image_idx = self._check_idx(image_idx)
        if cut.qparams is not None and layer_output.requires_grad:
            raise ValueError(
                f"layer {self.catalogue[layer_num].name!r} is int8 (torch.ao quantized): its "
                "suffix has no gradient; the analysis runs without gradients on such networks"
            )
        if layer_output.shape[0] != image_idx.shape[0]:
            raise ValueError(
                f"batch mismatch: {layer_output.shape[0]} layer outputs for {image_idx.shape[0]} images"
            )
        if self.catalogue[layer_num].dead:  # the golden logits, whatever the layer computes
            golden = self.golden_logits[image_idx].clone()
            if layer_output.requires_grad:  # a zero gradient
                golden = golden + (layer_output * 0).nan_to_num(0).sum()
            return golden
        if layer_output.requires_grad:  # the model's in-place ops (ReLU(inplace=True)) may
            layer_output = layer_output.clone()  # follow the layer: never on a leaf tensor
        with eval_mode(self.model):
            return self._forward(layer_num, cut, image_idx, layer_output)

    def _forward(
        self, layer_num: int, cut: _Cut, image_idx: torch.Tensor, layer_output: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`suffix` without checks or mode guard (the caller holds :meth:`_frozen`)."""
        n = int(image_idx.shape[0])
        self.stats.batched_forwards += 1
        self.stats.image_evaluations += n
        info = self.catalogue[layer_num]
        layer_output = self._module_layout(info, self._stored(cut, layer_output))
        if cut.suffix is not None:
            self.stats.suffix_flops += n * self.suffix_flops_per_image(layer_num)
            return cut.suffix(
                layer_output,
                *[t[image_idx] for t in cut.live_ins],
                *[_stand_in(r, n) for r in cut.root_ins],
            )
        self.stats.suffix_flops += n * sum(self._layer_flops.values())
        with info.module.register_forward_hook(lambda _m, _i, _o: layer_output):
            return self.model(self.images[image_idx])

    def _forward_segments(
        self,
        info: LayerInfo,
        cut: _Cut,
        image_idx: torch.Tensor,
        layer_output: torch.Tensor,
        exits: bool = True,
    ) -> torch.Tensor:
        """The suffix, segment by segment, dropping the elements masked at each checkpoint.

        Elements equal to the golden value at a checkpoint get the golden logits of their image:
        the rest of the network depends on the fault only through that value. ``exits=False``
        runs every element to the end.
        """
        self.stats.batched_forwards += 1
        self.stats.image_evaluations += int(image_idx.shape[0])
        logits = self.golden_logits[image_idx]
        rows = torch.arange(image_idx.shape[0], device=image_idx.device)
        x, idx = self._module_layout(info, self._stored(cut, layer_output)), image_idx
        for seg in cut.segments:
            if exits and seg.golden_in is not None:
                differs = _differs(x, seg.golden_in[idx])
                if not bool(differs.all()):
                    x, idx, rows = x[differs], idx[differs], rows[differs]
                    if rows.shape[0] == 0:
                        break
            n = int(idx.shape[0])
            x = seg.module(
                x,
                *[cut.live_ins[i][idx] for i in seg.live],
                *[_stand_in(cut.root_ins[i], n) for i in seg.roots],
            )
            self.stats.suffix_flops += seg.flops * int(rows.shape[0])
        else:
            logits[rows] = x.float()
        self.stats.early_exits += int(image_idx.shape[0]) - int(rows.shape[0])
        return logits

    @staticmethod
    def _stored(cut: _Cut, out: torch.Tensor) -> torch.Tensor:
        """A layer output as the network stores it: quantized again in an int8 network (its
        values lie on the layer's grid: the round trip is exact)."""
        if cut.qparams is None or out.is_quantized:
            return out
        scale, zero_point, dtype = cut.qparams
        return torch.quantize_per_tensor(out.float(), scale, zero_point, dtype)

    def run(
        self, layer_num: int, image_idx: torch.Tensor, perturbation: Perturbation | Elements
    ) -> torch.Tensor:
        """Logits ``(B, classes)`` of each (image, perturbation) element, in memory-bounded chunks.

        ``perturbation`` may be an :data:`Elements` callable: each chunk's elements are then
        built when the chunk runs.
        """
        outs = self._each_chunk(layer_num, image_idx, perturbation, lambda _a, _b, _i, x: x)
        if not outs:
            return torch.empty(0, self.golden_logits.shape[1], device=self.device)
        return torch.cat(outs)

    def _each_chunk(
        self,
        layer_num: int,
        image_idx: torch.Tensor,
        perturbation: Perturbation | Elements,
        reduce: Callable[[int, int, torch.Tensor, torch.Tensor], _T],
    ) -> list[_T]:
        """``reduce(start, stop, image_idx, logits)`` of every chunk ``start:stop`` of the
        elements, in order; each chunk's logits (and an :data:`Elements` callable's
        perturbations) are dropped once reduced."""
        info = self.layer(layer_num)
        image_idx = self._check_idx(image_idx)
        n = int(image_idx.shape[0])
        if isinstance(perturbation, Perturbation):
            if len(perturbation) != n:
                raise ValueError(
                    f"batch mismatch: {len(perturbation)} perturbations for {n} images"
                )
            perturbation.check(info.output_shape)
        step = self._layer_batch[layer_num]
        if info.dead:  # nothing after the layer depends on it: every element is golden
            return [
                reduce(a, b, image_idx[a:b], self.golden_logits[image_idx[a:b]].clone())
                for a, b in self._chunks(n, step)
            ]
        if isinstance(perturbation, Perturbation):
            perturbation = perturbation.to(self.device)
        cut = self._cut(layer_num)
        outs = []
        with self._frozen():  # once per call, not per chunk: it walks every submodule
            for a, b in self._chunks(n, step):
                idx = image_idx[a:b]
                out = cut.layer_output[idx]  # advanced indexing copies: no clone needed
                if isinstance(perturbation, Perturbation):
                    out = self._perturbed(info, cut, idx, out, perturbation, a, b)
                else:
                    piece = self._built(perturbation, a, b, info)
                    out = self._perturbed(info, cut, idx, out, piece, 0, b - a)
                if cut.segments:
                    logits = self._forward_segments(info, cut, idx, out)
                else:
                    logits = self._forward(layer_num, cut, idx, out).float()
                outs.append(reduce(a, b, idx, logits))
        _release_heap()
        return outs

    def _perturbed(
        self,
        info: LayerInfo,
        cut: _Cut,
        idx: torch.Tensor,
        out: torch.Tensor,
        perturbation: Perturbation,
        start: int,
        stop: int,
    ) -> torch.Tensor:
        """The golden outputs ``out`` of images ``idx`` with elements ``start:stop`` applied.

        In a float16/bfloat16 model an additive perturbation (:class:`ChannelAdd`,
        :class:`NeuronAdd`: an error of the layer's sum, as a faulty weight or operand makes
        it) is added to the layer's float32 sum before its rounding to the model's format, as
        the layer's kernel computes a faulty output: it accumulates in float32 and rounds once.
        Added to the rounded output instead, an error below half a unit in the last place
        would change nothing, where the kernel moves the output across a rounding boundary
        (and flips images near a tie). Positions the error leaves unchanged keep the golden
        value bit for bit.
        """
        summed = isinstance(perturbation, (ChannelAdd, NeuronAdd))
        if summed and not isinstance(perturbation, StoredAdd):  # a change of the layer's sum
            wide = self._wide(info, cut)
            if wide is not None and cut.qparams is not None:  # requantised, as the kernel does
                exact = wide[idx].clone()
                perturbation.apply(exact, start, stop)
                return info.module.requantize(exact)  # type: ignore[operator]
            if wide is not None:
                golden = wide[idx]
                exact = golden.clone()
                perturbation.apply(exact, start, stop)
                changed = exact != golden  # NaN counts as changed
                return torch.where(changed, exact.to(out.dtype), out)
        perturbation.apply(out, start, stop)
        if (
            summed
            and not isinstance(perturbation, StoredAdd)
            and cut.qparams is not None
            and is_quantized_layer(info.module)
        ):  # an error of the sum added to the requantised output: requantised again
            return info.module.requantize(out)  # type: ignore[operator]
        return out

    def _wide(self, info: LayerInfo, cut: _Cut) -> torch.Tensor | None:
        """The layer's float32 sum before rounding (see :meth:`_perturbed`): a float32 copy of
        the layer run on its golden input. ``None`` in a float32 model, and where rounding that
        sum does not give the layer's own golden output (beyond the ties a different order of
        summation rounds the other way: at most 1% of the values), so the layer is not a
        float32-accumulating product and the error is added to its rounded output."""
        if cut.wide_done:
            return cut.wide
        cut.wide_done = True
        quantized = cut.qparams is not None and is_quantized_layer(info.module)
        run: Callable[[torch.Tensor], torch.Tensor]
        rounded: Callable[[torch.Tensor], torch.Tensor]
        if quantized:
            module: Any = info.module  # its sum before requantisation (quantized.py)
            run, rounded = module.accumulate, module.requantize
        elif self.dtype == torch.float32 or not any(True for _ in info.module.parameters()):
            return None
        else:
            twin = copy.deepcopy(info.module).float().eval()
            twin._forward_hooks.clear()
            twin._forward_pre_hooks.clear()
            run, dtype = twin, self.dtype
            rounded = lambda t: t.to(dtype)  # noqa: E731
        parts = []
        with self._frozen():
            for a, b in self._chunks(self.num_images):
                parts.append(run(cut.layer_input[a:b].float()).float())
        wide = self._neuron_layout(info, torch.cat(parts))
        if wide.shape != cut.layer_output.shape:
            return None
        off = rounded(wide) != cut.layer_output
        if float(off.float().mean()) > 0.01:
            logger.info("layer %s: its float32 sum does not round to its output", info.name)
            return None
        # a tie the kernel's order of summation rounded the other way: its golden value, so
        # that only an error that moves it changes it
        cut.wide = torch.where(off, cut.layer_output.float(), wide)
        return cut.wide

    def _built(self, elements: Elements, start: int, stop: int, info: LayerInfo) -> Perturbation:
        """The perturbation of elements ``start:stop`` an :data:`Elements` callable builds."""
        piece = elements(start, stop)
        if len(piece) != stop - start:
            raise ValueError(
                f"batch mismatch: {len(piece)} perturbations built for elements {start}:{stop}"
            )
        piece.check(info.output_shape)
        return piece.to(self.device)

    def outcomes(
        self, layer_num: int, image_idx: torch.Tensor, perturbation: Perturbation
    ) -> torch.Tensor:
        """Outcome codes (int8, see :class:`Outcome`) of each (image, perturbation) element.

        Critical and DUE are judged against the golden run. Masked against the layer's own
        fault-free suffix (:meth:`reference_logits`): the suffix runs in the engine's layouts
        (channels-last on the CPU), which can move the logits of a model by about the masking
        tolerance with no fault at all (SwinV2: 1.2x); an element stopped at a checkpoint
        (golden logits, bitwise) is masked.
        """
        return self.outcomes_of(layer_num, image_idx, self.run(layer_num, image_idx, perturbation))

    def outcomes_of(
        self, layer_num: int, image_idx: torch.Tensor, logits: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`outcomes` of logits :meth:`run` returned for a layer and images."""
        idx = self._check_idx(image_idx)
        golden = self.golden_logits[idx]
        codes = classify(logits, self.reference_logits(layer_num)[idx])
        critical = logits.argmax(dim=1) != self.golden_top1[idx]
        finite = torch.isfinite(logits).all(dim=1)
        exited = (logits == golden).all(dim=1)
        codes[finite & ~critical & (codes == int(Outcome.CRITICAL))] = int(Outcome.SDC)
        codes[finite & critical] = int(Outcome.CRITICAL)
        codes[exited] = int(Outcome.MASKED)
        return codes

    def reference_logits(self, layer_num: int) -> torch.Tensor:
        """Logits ``(I, classes)`` of the fault-free suffix of a layer, run to the end in the
        engine's layouts (equal to :attr:`golden_logits` up to float rounding); cached.

        Not counted in :attr:`stats` (one fault-free forward per layer, whenever it is first
        needed): a campaign's cost is the sum of its chunks' and must not depend on which chunk
        of a resumed run needed it first.
        """
        if layer_num not in self._references and self.layer(layer_num).dead:
            self._references[layer_num] = self.golden_logits.clone()
        if layer_num not in self._references:
            saved = self.stats.snapshot()
            info = self.layer(layer_num)
            cut = self._cut(layer_num)
            outs = []
            with self._frozen():
                for a, b in self._chunks(self.num_images, self._layer_batch[layer_num]):
                    idx = torch.arange(a, b, device=self.device)
                    out = cut.layer_output[idx]
                    if cut.segments:
                        outs.append(self._forward_segments(info, cut, idx, out, exits=False))
                    else:
                        outs.append(self._forward(layer_num, cut, idx, out).float())
            self._references[layer_num] = torch.cat(outs)
            for name in ("batched_forwards", "image_evaluations", "early_exits", "suffix_flops"):
                setattr(self.stats, name, getattr(saved, name))
        return self._references[layer_num]

    def critical(
        self, layer_num: int, image_idx: torch.Tensor, perturbation: Perturbation | Elements
    ) -> torch.Tensor:
        """Whether each element is critical: top-1 differs from golden, or a logit is NaN/Inf."""
        return self.verdicts(layer_num, image_idx, perturbation)[0]

    def judge(
        self, layer_num: int, image_idx: torch.Tensor, perturbation: Perturbation | Elements
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`critical` and the logits ``(B, classes)`` it was decided on (float32).

        The logits of every element are held at once (``B x classes`` floats): a search that only
        compares outcomes takes :meth:`verdicts`.
        """
        logits = self.run(layer_num, image_idx, perturbation)
        return self._is_critical(self._check_idx(image_idx), logits), logits

    def verdicts(
        self, layer_num: int, image_idx: torch.Tensor, perturbation: Perturbation | Elements
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`critical` and a :func:`~.outcomes.fingerprint` of the logits it was decided on.

        What :meth:`judge` decides, keeping of each element what a search needs: whether it is
        critical (bool ``(B,)``) and an int64 ``(B,)`` key of its logits' bytes (bitwise equal
        logits, equal keys). Each chunk's logits are dropped once reduced, and an
        :data:`Elements` callable builds each chunk's perturbations when the chunk runs, so the
        memory used stays within the engine's budget whatever the number of elements and classes.
        """
        n = int(torch.as_tensor(image_idx).shape[0])
        crit = torch.empty(n, dtype=torch.bool, device=self.device)
        keys = torch.empty(n, dtype=torch.int64, device=self.device)

        def reduce(a: int, b: int, idx: torch.Tensor, logits: torch.Tensor) -> None:
            # written in place: no per-chunk result outlives its chunk (small survivors
            # between the chunks' freed logits fragment the CPU heap: measured +0.18 GiB of
            # resident memory over a 130k-element call)
            crit[a:b] = self._is_critical(idx, logits)
            keys[a:b] = fingerprint(logits)

        self._each_chunk(layer_num, image_idx, perturbation, reduce)
        return crit, keys

    def _is_critical(self, image_idx: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        top1 = logits.argmax(dim=1) != self.golden_top1[image_idx]
        return top1 | ~torch.isfinite(logits).all(dim=1)

    def suffix_flops_per_image(self, layer_num: int) -> float:
        """FLOPs (2 x multiply-accumulates) per image of the catalogued layers after ``layer_num``.

        A lower bound of the suffix cost (BatchNorm, activations and adds are not counted), used to
        report achieved GFLOP/s.
        """
        self.layer(layer_num)
        return float(
            sum(2 * l.neurons_per_image * l.fan_in for l in self.catalogue[layer_num + 1 :])
        )
