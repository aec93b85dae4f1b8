"""The simulation engine: run the network after one layer with a batch of perturbations.

Both the DeepVigor+ analysers and the fault-injection campaigns run every faulty inference
through :class:`SimulationEngine`. It caches the golden (fault-free) run of an analysis batch
and, for a catalogued layer ``l``, evaluates a batch in which element ``b`` is image
``image_idx[b]`` with its own perturbation of layer ``l``'s output. Only the part of the network
that depends on that output is recomputed:

* **torch.fx path** (models that trace): the graph is cut at the layer's node; a *prefix*
  module computes, once per layer, the layer's input and output and every value the rest of the
  network still needs (skip connections); a *suffix* module recomputes the descendants of the
  layer from the perturbed output and those cached values.
  The suffix runs in two *segments* split at the layer's checkpoint: the first value that every
  path from the layer to the logits goes through (a dominator) and that feeds a convolution or
  linear layer, e.g. the ReLU after the layer's BatchNorm. The elements whose value there equals
  the golden value (the fault was masked by that ReLU or max-pool) stop: the rest of the network
  would recompute the golden logits for them, so their logits *are* the golden logits. Only the
  elements still differing pay for the rest (measured on ResNet-18: 21 % of the analysis's
  evaluations stop there; none that pass it are equal at a later dominator). Inside the
  segments, on the CPU, the cached activations and the suffix are channels-last (optionally,
  eval-mode Conv2d + BatchNorm2d pairs run folded); each layer's chunks are sized from its own
  suffix's activations. These change float rounding (about 1e-6 of the largest logit, measured
  on a CIFAR ResNet-18), never which work an element needs.
* **hook path** (models that do not trace): a forward hook on the layer replaces its output by
  the perturbed golden output, and the whole network runs. Same results, more work.

Outcomes (:class:`Outcome`): masked (logits equal the golden logits within a float tolerance of
``1e-5`` relative to the largest golden logit), non-critical SDC (logits differ, same top-1),
critical (top-1 differs from the golden top-1 of that image), DUE (a NaN or Inf logit; DUEs
count as critical).
"""

from __future__ import annotations

import copy
import enum
import logging
import operator
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
import torch.fx
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from ._guard import (
    check_device,
    check_float32_model,
    check_images,
    check_model_output,
    check_positive_int,
    eval_mode,
)
from .catalogue import LayerInfo, build_catalogue
from .distributed import rank_device
from .perturbations import Perturbation

__all__ = ["SimulationEngine", "Outcome", "EngineStats", "classify"]

logger = logging.getLogger(__name__)

# Activation budget of one chunk. On the CPU, chunks that stay near the caches are fastest
# (measured: VGG-11 at width 1/8 peaks at 256 images per forward, ResNet-18 at 64-128, and both
# are 2-4x slower per image at 2048); on a GPU, larger chunks keep the device busy.
DEFAULT_MEMORY_BYTES = {"cpu": 128 * 2**20, "cuda": 2 * 2**30}
_SUFFIX_CHUNK_GROWTH = 4
_MASK_RTOL = 1e-5


class Outcome(enum.IntEnum):
    """What a fault did to one inference."""

    MASKED = 0
    SDC = 1
    CRITICAL = 2
    DUE = 3


@dataclass
class EngineStats:
    """Monotone counters of the work the engine did.

    ``batched_forwards`` counts suffix (or full) forward calls, ``image_evaluations`` the batch
    elements they evaluated (one outcome each); one batched forward of the analysis batch is a
    "simulation" in the paper's sense. ``early_exits`` counts the evaluations that stopped at a
    checkpoint because the fault was already masked there, and ``suffix_flops`` the convolution
    and linear FLOPs (2 x MACs) the suffix forwards actually executed.
    """

    batched_forwards: int = 0
    image_evaluations: int = 0
    early_exits: int = 0
    suffix_flops: float = 0.0

    def snapshot(self) -> EngineStats:
        return EngineStats(
            self.batched_forwards, self.image_evaluations, self.early_exits, self.suffix_flops
        )

    def __sub__(self, other: EngineStats) -> EngineStats:
        return EngineStats(
            self.batched_forwards - other.batched_forwards,
            self.image_evaluations - other.image_evaluations,
            self.early_exits - other.early_exits,
            self.suffix_flops - other.suffix_flops,
        )


def classify(logits: torch.Tensor, golden_logits: torch.Tensor) -> torch.Tensor:
    """Outcome codes (int8) of ``logits`` against the golden logits of the same images."""
    finite = torch.isfinite(logits).all(dim=1)
    critical = logits.argmax(dim=1) != golden_logits.argmax(dim=1)
    scale = golden_logits.abs().amax(dim=1).clamp_min(1.0)
    diff = (logits - golden_logits).abs().amax(dim=1)
    masked = diff <= _MASK_RTOL * scale
    out = torch.full(logits.shape[:1], int(Outcome.SDC), dtype=torch.int8, device=logits.device)
    out[masked] = int(Outcome.MASKED)
    out[critical] = int(Outcome.CRITICAL)
    out[~finite] = int(Outcome.DUE)
    return out


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


# --------------------------------------------------------------- per-image-ness of values
DATA, SHAPE, CONST = "data", "shape", "const"
"""What a traced value depends on: the images' values (``DATA``: cached per image, indexed by
image), only their shape (``SHAPE``: a batch size, ``torch.zeros(n, ...)``; recomputed in the
suffix from stand-ins of the suffix's own batch size), or nothing per image (``CONST``:
parameters, buffers and what is computed from them; recomputed in the suffix from the model's
own tensors, never cached per image)."""

_SHAPE_ATTRS = frozenset({"shape", "dtype", "device", "ndim", "is_cuda", "layout"})
_SHAPE_METHODS = frozenset({"size", "dim", "ndimension", "numel", "nelement", "type", "get_device"})


def _is_shape_access(n: torch.fx.Node) -> bool:
    """Whether ``n`` reads only metadata (shape, dtype, device) of its first argument."""
    if n.op == "call_function" and n.target is getattr:
        return len(n.args) >= 2 and n.args[1] in _SHAPE_ATTRS
    return n.op == "call_method" and n.target in _SHAPE_METHODS


def _dependence(gm: torch.fx.GraphModule) -> dict[torch.fx.Node, str]:
    """``DATA``, ``SHAPE`` or ``CONST`` for every node of ``gm`` (see :data:`DATA`)."""
    out: dict[torch.fx.Node, str] = {}
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            out[n] = DATA
        elif n.op == "get_attr":
            out[n] = CONST
        else:
            kinds = {out[a] for a in n.all_input_nodes}
            if _is_shape_access(n):
                first = n.args[0]
                head = out.get(first, CONST) if isinstance(first, torch.fx.Node) else CONST
                kinds.discard(head)
                kinds.add(SHAPE if head in (DATA, SHAPE) else CONST)
            out[n] = DATA if DATA in kinds else SHAPE if SHAPE in kinds else CONST
    return out


def _mutates(gm: torch.fx.GraphModule, n: torch.fx.Node) -> bool:
    """Whether ``n`` changes one of its arguments in place (``ReLU(inplace=True)``, ``x.relu_()``).

    Such a node has an effect even when nothing reads its result, so the prefix keeps it.
    """
    if n.kwargs.get("inplace") is True:
        return True
    if n.op == "call_module":
        return getattr(gm.get_submodule(str(n.target)), "inplace", False) is True
    name = n.target if n.op == "call_method" else getattr(n.target, "__name__", "")
    if n.op in ("call_method", "call_function") and isinstance(name, str):
        return name.endswith("_") and not name.endswith("__") and not name.startswith("_")
    return False


def _descendants(node: torch.fx.Node) -> set[torch.fx.Node]:
    out: set[torch.fx.Node] = set()
    stack = list(node.users)
    while stack:
        n = stack.pop()
        if n not in out:
            out.add(n)
            stack.extend(n.users)
    return out


@dataclass
class _SegmentPlan:
    module: torch.fx.GraphModule
    start: torch.fx.Node  # the checkpoint it starts from (the cut for the first segment)
    live: list[int]
    roots: list[int]
    flops: float


@dataclass
class _Plan:
    """Where the traced graph is cut for one layer.

    ``live``: the per-image (``DATA``) values computed before the cut that the suffix reads
    (skip connections), with ``read_at`` the first node after the cut that reads each (its golden
    value is the one it has there: an in-place op before that point has already run).
    ``roots``: the per-image values whose *shape* the suffix reads (a batch size taken before the
    cut); the suffix gets stand-ins of its own batch size for them.
    """

    layer_in: torch.fx.Node
    cut: torch.fx.Node
    live: list[torch.fx.Node]
    read_at: list[torch.fx.Node]
    roots: list[torch.fx.Node]
    suffix: torch.fx.GraphModule
    segments: list[_SegmentPlan]


def _checkpoint(order: list[torch.fx.Node], flops: dict[str, float]) -> torch.fx.Node | None:
    """The first dominator of ``order`` (after the cut) that feeds a catalogued layer, if any.

    ``order`` is the cut followed by its descendants in topological order. A node dominates when
    no value computed before it is read after it: everything after it then depends on the cut
    only through it. Typically the ReLU (or max-pool) after the layer's BatchNorm: the value at
    which masking happens (measured on ResNet-18: every element equal to golden at a later
    dominator was already equal at the first one).
    """
    pos = {n: i for i, n in enumerate(order)}
    reach = 0  # the furthest position read by a node before the current one
    for i, n in enumerate(order):
        if n.op == "output":
            return None
        feeds_layer = any(u.op == "call_module" and u.target in flops for u in n.users)
        if i > 0 and reach <= i and feeds_layer:
            return n
        reach = max([reach, *(pos[u] for u in n.users)])  # a node may have no users
    return None


def _plan(
    gm: torch.fx.GraphModule,
    layer_name: str,
    flops: dict[str, float],
    fused: dict[str, nn.Module] | None = None,
    split: bool = True,
    dependence: dict[torch.fx.Node, str] | None = None,
) -> _Plan:
    """Cut ``gm`` at the call of ``layer_name``.

    The suffix takes ``(layer_output, *live, *roots)`` and returns the model output; ``live`` are
    the per-image values computed before the cut that the suffix still reads (skip connections),
    ``roots`` stand-ins for the values whose shape it reads. Values that do not depend on the
    images (parameters, buffers, what is computed from them) are recomputed inside the suffix
    from the model's own tensors. The segments split the same nodes at the checkpoint (see
    :func:`_checkpoint`), when there is one: the first takes ``(layer_output, *its live values,
    *its roots)`` and returns the checkpoint's value, the second takes ``(checkpoint value, ...)``
    and returns the model output (``split=False``: one segment, the whole suffix). ``flops``
    gives the FLOPs per image of each catalogued layer by name; ``fused`` the BatchNorm-folded
    convolutions the segments use (see :func:`_fold_batchnorms`). ``suffix`` always runs the
    model's own modules.

    Raises:
        ValueError: when the layer cannot be cut (called several times, input not a traced value).
    """
    dependence = dependence if dependence is not None else _dependence(gm)
    nodes = [n for n in gm.graph.nodes if n.op == "call_module" and n.target == layer_name]
    if len(nodes) != 1:
        raise ValueError(f"layer {layer_name!r} appears {len(nodes)} times in the traced graph")
    cut = nodes[0]
    layer_in = cut.args[0]
    if not isinstance(layer_in, torch.fx.Node):
        raise ValueError(f"cannot find the input of layer {layer_name!r} in the traced graph")
    if dependence[cut] != DATA:
        raise ValueError(f"layer {layer_name!r} does not depend on the images")
    desc = _descendants(cut)
    order = [cut] + [n for n in gm.graph.nodes if n in desc]
    live: list[torch.fx.Node] = []
    read_at: list[torch.fx.Node] = []
    roots: list[torch.fx.Node] = []
    recomputed = _recomputed(order[1:], desc | {cut}, dependence)
    for n in order[1:] + [r for r in gm.graph.nodes if r in recomputed]:
        for a in n.all_input_nodes:
            if a in desc or a is cut or a in recomputed:
                continue
            if n in recomputed:  # a per-image value whose shape a recomputed value reads
                if a not in roots:
                    roots.append(a)
            elif a not in live:
                live.append(a)
                read_at.append(n)
    checkpoint = _checkpoint(order, flops) if split else None
    checkpoints = [cut] if checkpoint is None else [cut, checkpoint]
    segments = []
    pos = {n: i for i, n in enumerate(order)}
    ends = checkpoints[1:] + [order[-1]]
    for start, end in zip(checkpoints, ends, strict=True):
        body = order[pos[start] + 1 : pos[end] + 1]
        module, used, used_roots = _subgraph(gm, start, body, live, roots, dependence, fused)
        seg_flops = sum(flops.get(str(n.target), 0.0) for n in body if n.op == "call_module")
        segments.append(_SegmentPlan(module, start, used, used_roots, seg_flops))
    suffix, _, _ = _subgraph(gm, cut, order[1:], live, roots, dependence)
    return _Plan(layer_in, cut, live, read_at, roots, suffix, segments)


def _recomputed(
    body: list[torch.fx.Node], inside: set[torch.fx.Node], dependence: dict[torch.fx.Node, str]
) -> set[torch.fx.Node]:
    """The non-per-image values (``CONST``, ``SHAPE``) that ``body`` reads from outside, and
    everything non-per-image they are computed from: a suffix computes them itself."""
    out: set[torch.fx.Node] = set()
    stack = [a for n in body for a in n.all_input_nodes if a not in inside]
    while stack:
        a = stack.pop()
        if a in out or a in inside or dependence[a] == DATA:
            continue
        out.add(a)
        stack.extend(a.all_input_nodes)
    return out


def _subgraph(
    gm: torch.fx.GraphModule,
    start: torch.fx.Node,
    body: list[torch.fx.Node],
    live: list[torch.fx.Node],
    roots: list[torch.fx.Node],
    dependence: dict[torch.fx.Node, str],
    fused: dict[str, nn.Module] | None = None,
) -> tuple[torch.fx.GraphModule, list[int], list[int]]:
    """A module ``(start value, *live values it reads, *roots it reads) -> value of body[-1]``.

    ``body[-1]`` may be the graph's output node (then the module returns the model output).
    The non-per-image values the body reads are recomputed first (parameters through
    ``get_attr``, batch sizes from the roots' stand-ins). A convolution of the body named in
    ``fused`` (by node name) whose BatchNorm is in the body too is replaced by the fused module,
    and the BatchNorm dropped. Returns the module and the indices into ``live`` and ``roots`` of
    the values it reads, in order.
    """
    inside = set(body) | {start}
    pre = _recomputed(body, inside, dependence)
    pre_nodes = [n for n in gm.graph.nodes if n in pre]
    reads = {a for n in body + pre_nodes for a in n.all_input_nodes if a not in inside and a not in pre}
    used = sorted(live.index(a) for a in reads if a in live)
    used_roots = sorted(roots.index(a) for a in reads if a not in live)
    graph = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {start: graph.placeholder("start")}
    for i in used:
        env[live[i]] = graph.placeholder(f"live_{i}")
    for i in used_roots:
        env[roots[i]] = graph.placeholder(f"root_{i}")
    fused = fused or {}
    modules: dict[str, object] = {}
    inside = set(body)
    for n in pre_nodes + body:
        if n in env:  # a BatchNorm folded into its convolution
            continue
        if n.name in fused and n in inside and next(iter(n.users)) in inside:
            target = f"fused_{n.name}"
            modules[target] = fused[n.name]
            env[n] = graph.call_module(target, (env[n.args[0]],))  # type: ignore[index]
            env[next(iter(n.users))] = env[n]
            continue
        env[n] = graph.node_copy(n, lambda a: env[a])
        if n.op in ("call_module", "get_attr"):
            modules[str(n.target)] = _fetch(gm, str(n.target))
    if body[-1].op != "output":
        graph.output(env[body[-1]])
    return torch.fx.GraphModule(modules, graph), used, used_roots


def _fetch(root: nn.Module, target: str) -> object:
    """The submodule, parameter or buffer at the dotted ``target`` of ``root``."""
    obj: object = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _fold_batchnorms(gm: torch.fx.GraphModule) -> dict[str, nn.Module]:
    """Eval-mode Conv2d + BatchNorm2d pairs folded into one convolution, by conv node name.

    A pair folds when the BatchNorm (with running statistics) is the convolution's only user and
    reads nothing else. The fused convolution is a copy (the model is not changed); it computes
    the pair's eval-mode result up to float rounding, with one pass over the activations less.
    """
    out: dict[str, nn.Module] = {}
    for n in gm.graph.nodes:
        if n.op != "call_module" or len(n.users) != 1:
            continue
        conv = gm.get_submodule(str(n.target))
        bn_node = next(iter(n.users))
        if type(conv) is not nn.Conv2d or bn_node.op != "call_module":
            continue
        bn = gm.get_submodule(str(bn_node.target))
        if (
            type(bn) is not nn.BatchNorm2d
            or bn_node.args != (n,)
            or bn_node.kwargs
            or bn.running_mean is None
            or bn.running_var is None
        ):
            continue
        with torch.no_grad():
            weight, bias = fuse_conv_bn_weights(
                conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
            )
        folded = copy.deepcopy(conv)
        folded.weight, folded.bias = weight, bias
        out[n.name] = folded
    return out


def _prefix(
    gm: torch.fx.GraphModule, wanted: list[tuple[torch.fx.Node, torch.fx.Node | None, str]]
) -> torch.fx.GraphModule:
    """A module returning the golden values of the ``wanted`` entries in one pass.

    Each entry is ``(node, at, how)``: ``how`` is ``"value"`` (a clone of the value) or
    ``"first"`` (a clone of the first image only, for a shape root); ``at`` is the node before
    which the value is taken (``None``: right where it is computed). Values are cloned: a later
    in-place op of the model (``ReLU(inplace=True)`` after a convolution) would otherwise
    overwrite them; a layer's input is taken right before the layer runs, after any in-place op
    that changed it (``relu_(y)`` with the result discarded, ``y += z``). Nodes that nothing
    wanted depends on are dropped, except the in-place ops that run before the last wanted value.
    """
    nodes = list(gm.graph.nodes)
    pos = {n: i for i, n in enumerate(nodes)}
    last = max(pos[n if at is None else at] for n, at, _ in wanted)
    keep: set[torch.fx.Node] = set()
    stack = [n for n, _, _ in wanted]
    stack += [n for n in nodes[:last] if n.op not in ("output",) and _mutates(gm, n)]
    while stack:
        n = stack.pop()
        if n not in keep:
            keep.add(n)
            stack.extend(n.all_input_nodes)
    before: dict[torch.fx.Node, list[int]] = {}
    after: dict[torch.fx.Node, list[int]] = {}
    for k, (n, at, _) in enumerate(wanted):
        (after.setdefault(n, []) if at is None else before.setdefault(at, [])).append(k)
    graph = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {}
    kept: dict[int, torch.fx.Node] = {}

    def take(k: int) -> None:
        n, _, how = wanted[k]
        src = env[n] if how == "value" else graph.call_function(operator.getitem, (env[n], slice(0, 1)))
        kept[k] = graph.call_method("clone", (src,))

    for n in nodes[: last + 1]:
        for k in before.get(n, []):
            take(k)
        if n in keep:
            env[n] = graph.node_copy(n, lambda a: env[a])
            for k in after.get(n, []):
                take(k)
    graph.output(tuple(kept[k] for k in range(len(wanted))))
    return torch.fx.GraphModule(gm, graph)


def _stand_in(first: torch.Tensor, n: int) -> torch.Tensor:
    """A tensor of ``n`` images shaped like a shape root (its values are never read)."""
    return first[:1].expand(n, *first.shape[1:])


def _differs(x: torch.Tensor, golden: torch.Tensor) -> torch.Tensor:
    """Per batch element: whether ``x`` differs from ``golden`` anywhere (NaN counts as differing).

    ``|x - golden|`` reduced by max: a float reduction, measured 3-4x faster on the CPU than
    ``(x != golden).any()``; max propagates NaN, and ``NaN != 0``.
    """
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        x, golden = x.permute(0, 2, 3, 1), golden.permute(0, 2, 3, 1)
    diff = torch.sub(x.reshape(x.shape[0], -1), golden.reshape(x.shape[0], -1)).abs_()
    return diff.amax(dim=1) != 0


class SimulationEngine:
    """Golden cache and suffix execution for one model and one analysis batch.

    Args:
        model: any ``nn.Module`` classifier (float32); it is never changed. If ``device`` differs
            from the model's device, the engine works on its own copy.
        images: the analysis batch, float32 ``(I, ...)``.
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
            layout to float rounding). The golden logits always come from ``model(images)``.

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
        check_float32_model(model)
        check_images(images)
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
        self.catalogue: list[LayerInfo] = build_catalogue(model, self.images[:1])
        self.stats = EngineStats()
        self._cuts: dict[int, _Cut] = {}
        self._graph: torch.fx.GraphModule | None = None
        self._dependence: dict[torch.fx.Node, str] | None = None
        # layers the traced graph cannot be cut at, with the reason: they run on the hook path
        self.hook_layers: dict[int, str] = {}
        if use_fx:
            try:
                with eval_mode(model):
                    self._graph = torch.fx.symbolic_trace(model)
            except Exception as exc:  # tracing fails on data-dependent control flow
                logger.info("torch.fx cannot trace the model (%s); using the hook path", exc)
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

    def _plans(self, todo: list[LayerInfo]) -> tuple[list[tuple[LayerInfo, _Plan]], list[LayerInfo]]:
        assert self._graph is not None
        if self._dependence is None:
            self._dependence = _dependence(self._graph)
        planned, hooked = [], []
        for info in todo:
            if info.layer_num in self.hook_layers:
                hooked.append(info)
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
                if not isinstance(t, torch.Tensor) or t.dim() == 0 or (
                    entries[k][2] == "value" and t.shape[0] != b - a
                ):
                    raise RuntimeError(
                        f"the traced value {entries[k][0].name!r} is not a per-image tensor "
                        f"(got {type(t).__name__}); construct the engine with use_fx=False"
                    )
                if entries[k][2] == "value" or not parts[k]:
                    parts[k].append(t)
        value = [self._layout(torch.cat(p)) if len(p) > 1 else self._layout(p[0]) for p in parts]  # type: ignore[arg-type]
        for (info, p), (k_in, k_out, k_live, k_roots, k_segs) in zip(planned, keys, strict=True):
            segments = [
                _Segment(s.module, s.live, s.roots, None if j == 0 else value[k_segs[j - 1]], s.flops)
                for j, s in enumerate(p.segments)
            ]
            self._cuts[info.layer_num] = _Cut(
                value[k_in],
                self._neuron_layout(info, value[k_out]),
                [value[k] for k in k_live],
                [value[k] for k in k_roots],
                p.suffix,
                segments,
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
            out = self._neuron_layout(info, torch.cat(outs))
            self._cuts[info.layer_num] = _Cut(torch.cat(ins), out, [], [], None, [])

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
        if layer_output.shape[0] != image_idx.shape[0]:
            raise ValueError(
                f"batch mismatch: {layer_output.shape[0]} layer outputs for {image_idx.shape[0]} images"
            )
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
        layer_output = self._module_layout(info, layer_output)
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
        self, info: LayerInfo, cut: _Cut, image_idx: torch.Tensor, layer_output: torch.Tensor
    ) -> torch.Tensor:
        """The suffix, segment by segment, dropping the elements masked at each checkpoint.

        Elements equal to the golden value at a checkpoint get the golden logits of their image:
        the rest of the network depends on the fault only through that value.
        """
        self.stats.batched_forwards += 1
        self.stats.image_evaluations += int(image_idx.shape[0])
        logits = self.golden_logits[image_idx]
        rows = torch.arange(image_idx.shape[0], device=image_idx.device)
        x, idx = self._module_layout(info, layer_output), image_idx
        for seg in cut.segments:
            if seg.golden_in is not None:
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

    def run(
        self, layer_num: int, image_idx: torch.Tensor, perturbation: Perturbation
    ) -> torch.Tensor:
        """Logits ``(B, classes)`` of each (image, perturbation) element, in memory-bounded chunks."""
        info = self.layer(layer_num)
        image_idx = self._check_idx(image_idx)
        if len(perturbation) != image_idx.shape[0]:
            raise ValueError(
                f"batch mismatch: {len(perturbation)} perturbations for {image_idx.shape[0]} images"
            )
        perturbation.check(info.output_shape)
        perturbation = perturbation.to(self.device)
        cut = self._cut(layer_num)
        outs = []
        with self._frozen():  # once per call, not per chunk: it walks every submodule
            for a, b in self._chunks(image_idx.shape[0], self._layer_batch[layer_num]):
                idx = image_idx[a:b]
                out = cut.layer_output[idx]  # advanced indexing copies: no clone needed
                perturbation.apply(out, a, b)
                if cut.segments:
                    outs.append(self._forward_segments(info, cut, idx, out))
                else:
                    outs.append(self._forward(layer_num, cut, idx, out).float())
        if not outs:
            return torch.empty(0, self.golden_logits.shape[1], device=self.device)
        return torch.cat(outs)

    def outcomes(
        self, layer_num: int, image_idx: torch.Tensor, perturbation: Perturbation
    ) -> torch.Tensor:
        """Outcome codes (int8, see :class:`Outcome`) of each (image, perturbation) element."""
        logits = self.run(layer_num, image_idx, perturbation)
        return classify(logits, self.golden_logits[self._check_idx(image_idx)])

    def critical(
        self, layer_num: int, image_idx: torch.Tensor, perturbation: Perturbation
    ) -> torch.Tensor:
        """Whether each element is critical: top-1 differs from golden, or a logit is NaN/Inf."""
        logits = self.run(layer_num, image_idx, perturbation)
        idx = self._check_idx(image_idx)
        return (logits.argmax(dim=1) != self.golden_top1[idx]) | ~torch.isfinite(logits).all(dim=1)

    def suffix_flops_per_image(self, layer_num: int) -> float:
        """FLOPs (2 x multiply-accumulates) per image of the catalogued layers after ``layer_num``.

        A lower bound of the suffix cost (BatchNorm, activations and adds are not counted), used to
        report achieved GFLOP/s.
        """
        self.layer(layer_num)
        return float(
            sum(2 * l.neurons_per_image * l.fan_in for l in self.catalogue[layer_num + 1 :])
        )
