"""Where the traced graph is cut for one layer, and what each value of the cut is.

Everything the fx path decides before it runs lives here: the cut at the layer's node, the
*per-image-ness* of every value (:func:`_dependence`: values that depend on the images' data are
cached per image; parameters, buffers and batch sizes are not, the suffix recomputes them), where
the layer's input and the live values are taken (after the in-place ops that change them), the
checkpoint that splits the suffix in two segments, the prefix that computes the golden values in
one pass, and the optional BatchNorm folding.
"""

from __future__ import annotations

import copy
import inspect
import operator
from dataclasses import dataclass

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

__all__: list[str] = []


# ----------------------------------------------------------------------- layouts
CHANNELS_LAST_MODULES: tuple[type[nn.Module], ...] = (
    nn.Conv2d,
    nn.BatchNorm2d,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.SiLU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.ELU,
    nn.Mish,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Dropout,
    nn.Identity,
)
"""The torch.nn modules the engine runs channels-last: their channels-last kernels compute
what the contiguous ones compute (to float rounding, and the same outputs NaN or Inf) for
every value up to float32's maximum, +-Inf and NaN, and their output keeps their input's
layout (``tests/test_engine_layouts.py`` sweeps them). Not here because they differ:
``GroupNorm`` (one value of 2^100 gives 216 NaN outputs channels-last, none contiguous; from
about 2^64 on its statistics differ), ``GELU`` (rounding of small outputs differs by 1e-4
relative); and nothing after a flatten or a transpose into tokens may see other strides than
in the model: adds and reductions there follow their inputs' strides, so huge values cancel in
another order (a channel map of 2^32 moved a token model's logits by 6.8)."""
CHANNELS_LAST_FUNCTIONS = frozenset(
    {
        F.relu, F.relu_, F.relu6, F.hardtanh, F.leaky_relu, F.silu, F.hardswish,
        F.hardsigmoid, F.sigmoid, F.tanh, F.elu, F.mish, F.max_pool2d, F.avg_pool2d,
        F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.dropout, torch.relu, torch.relu_,
        torch.sigmoid, torch.tanh, torch.cat, torch.add, torch.mul, torch.sub,
        operator.add, operator.mul, operator.sub, operator.truediv, operator.iadd,
        operator.imul,
    }
)  # fmt: skip
CHANNELS_LAST_METHODS = frozenset(
    {"relu", "relu_", "sigmoid", "sigmoid_", "add", "add_", "mul", "mul_", "sub", "sub_"}
)


def _dim_order(t: torch.Tensor) -> tuple[int, ...]:
    """The dims of ``t`` from the outermost in memory to the innermost (largest stride first)."""
    strides = t.stride()
    return tuple(sorted(range(t.dim()), key=lambda d: (-strides[d], d)))


def _model_layout(x: object, order: tuple[int, ...] | None = None) -> object:
    """``x`` in the layout the model's own forward gives it: its dims laid out in ``order``
    (:func:`_dim_order` of the model's own value; ``None``: contiguous), a no-op when they
    are."""
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        return x
    order = tuple(range(x.dim())) if order is None or len(order) != x.dim() else order
    laid = x.permute(order)
    if laid.is_contiguous():  # dense, dims in that order already
        return x
    inverse = sorted(range(len(order)), key=lambda d: order[d])
    return laid.contiguous().permute(inverse)


def _own_orders(
    gm: torch.fx.GraphModule, example: torch.Tensor
) -> dict[torch.fx.Node, tuple[int, ...]]:
    """The :func:`_dim_order` of every tensor value of ``gm``'s forward on ``example`` (the
    user's images, as given): the layouts of the model's own run."""
    orders: dict[torch.fx.Node, tuple[int, ...]] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> object:
            out = super().run_node(n)
            if isinstance(out, torch.Tensor):
                orders[n] = _dim_order(out)
            return out

    Recorder(gm).run(example)
    return orders


def _engine_layout(x: object) -> object:
    """A 4-D ``x`` channels-last (a no-op when it is): a convolution's input in the engine."""
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _is_conv(gm: torch.fx.GraphModule, n: torch.fx.Node) -> bool:
    return n.op == "call_module" and type(gm.get_submodule(str(n.target))) is nn.Conv2d


def _is_layout_node(n: torch.fx.Node) -> bool:
    """Whether ``n`` is a layout change :func:`own_layouts` inserted (the same values)."""
    return n.op == "call_function" and n.target in (_model_layout, _engine_layout)


def _channels_last_ok(gm: torch.fx.GraphModule, n: torch.fx.Node) -> bool:
    """Whether node ``n`` may read channels-last values (see :data:`CHANNELS_LAST_MODULES`):
    it computes the same as on the model's own contiguous values and keeps the layout, or it
    reads only their shape."""
    if _is_shape_access(n):
        return True
    if n.op == "call_module":
        m = gm.get_submodule(str(n.target))
        torch_own = type(m).__module__.startswith("torch.nn")
        return torch_own and isinstance(m, CHANNELS_LAST_MODULES)
    if n.op == "call_function":
        return n.target in CHANNELS_LAST_FUNCTIONS
    if n.op == "call_method":
        return n.target in CHANNELS_LAST_METHODS
    return True


_VIEW_METHODS = frozenset(
    {
        "view", "view_as", "reshape", "permute", "transpose", "t", "chunk", "split", "unbind",
        "narrow", "select", "expand", "expand_as", "flatten", "unflatten", "squeeze",
        "unsqueeze", "movedim", "diagonal", "as_strided", "contiguous", "detach", "__getitem__",
    }
)  # fmt: skip
_VIEW_FUNCTIONS = frozenset(
    {
        operator.getitem, torch.flatten, torch.reshape, torch.permute, torch.transpose,
        torch.chunk, torch.split, torch.unbind, torch.narrow, torch.select, torch.squeeze,
        torch.unsqueeze, torch.t, torch.movedim, torch.diagonal,
    }
)  # fmt: skip


def _may_alias(n: torch.fx.Node) -> bool:
    """Whether ``n``'s result may share memory with its first argument (a view)."""
    if n.op == "call_method":
        return n.target in _VIEW_METHODS
    if n.op == "call_function":
        return n.target in _VIEW_FUNCTIONS or _is_layout_node(n)
    return False


def _mutated_copy(gm: torch.fx.GraphModule, bound: set[torch.fx.Node]) -> bool:
    """Whether an in-place op would write into a view of the copy a node of ``bound`` reads
    (``a, b = x.chunk(2); a.relu_()``): the model's own ``x`` changes there, a copy would not."""
    for m in gm.graph.nodes:
        if not _mutates(gm, m) or not m.args or not isinstance(m.args[0], torch.fx.Node):
            continue
        stack, seen = [m.args[0]], set()
        while stack:
            a = stack.pop()
            if a in seen:
                continue
            seen.add(a)
            if _may_alias(a):
                if a in bound:
                    return True
                first = a.args[0] if a.args else None
                if isinstance(first, torch.fx.Node):
                    stack.append(first)
                elif isinstance(first, (tuple, list)):
                    stack.extend(x for x in first if isinstance(x, torch.fx.Node))
    return False


def own_layouts(gm: torch.fx.GraphModule, example: torch.Tensor) -> list[str] | None:
    """Give every node that may not read channels-last values its arguments in the model's own
    (contiguous) layout, in place.

    The engine computes channels-last on the CPU (faster convolutions) only along the nodes of
    :func:`_channels_last_ok`, which keep the layout; every other node reads its arguments laid
    out as in the model's own forward on ``example`` (:func:`_own_orders`: contiguous, or
    channels-last after a ``permute(0, 3, 1, 2)`` or for channels-last images), so a flatten,
    a transpose into tokens, a GroupNorm or an attention runs on the tensors (values and dim
    order) the model gives it. An in-place node keeps its argument (a copy would lose the
    change). Each plain ``nn.Conv2d`` reads its input channels-last. Returns the names of the
    nodes given contiguous inputs, or ``None`` (the graph unchanged) when an in-place op would
    write into a view of such a copy: the engine then keeps the model's layout throughout.
    """
    nodes = [n for n in gm.graph.nodes if n.op in ("call_module", "call_function", "call_method")]
    reads_copy = {
        n
        for n in nodes
        if not _is_conv(gm, n)
        and not _channels_last_ok(gm, n)
        and not _mutates(gm, n)
        and n.all_input_nodes
    }
    if _mutated_copy(gm, reads_copy):
        return None
    orders = _own_orders(gm, example)
    bound: list[str] = []
    changed = False
    for n in list(gm.graph.nodes):
        if n.op not in ("call_module", "call_function", "call_method"):
            continue
        if _is_conv(gm, n):
            # a 1-channel map is contiguous and channels-last at once: a convolution reading
            # one would write a contiguous map, and the engine's layout would be lost
            x = n.args[0]
            if isinstance(x, torch.fx.Node):
                with gm.graph.inserting_before(n):
                    n.replace_input_with(x, gm.graph.call_function(_engine_layout, (x,)))
                changed = True
            continue
        if _channels_last_ok(gm, n) or _mutates(gm, n) or not n.all_input_nodes:
            continue
        for a in dict.fromkeys(n.all_input_nodes):
            with gm.graph.inserting_before(n):
                own = gm.graph.call_function(_model_layout, (a, orders.get(a)))
            n.replace_input_with(a, own)
        bound.append(n.name)
    if bound or changed:
        gm.graph.lint()
        gm.recompile()
    return bound


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
    first = True
    for n in gm.graph.nodes:
        if n.op == "placeholder":  # the images; the forward's optional arguments keep their
            out[n] = DATA if first else CONST  # defaults (timm's attn_mask=None)
            first = False
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
    if n.op == "call_function" and callable(n.target):  # F.threshold(x, t, v, True)
        try:
            bound = inspect.signature(n.target).bind(*n.args, **n.kwargs)
        except (TypeError, ValueError):  # builtins without a signature, other arities
            pass
        else:
            if bound.arguments.get("inplace") is True:
                return True
        if n.target in (operator.iadd, operator.isub, operator.imul, operator.itruediv):
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


DEAD = "dead: its output does not reach the model's output"


def dead_layers(gm: torch.fx.GraphModule, names: list[str]) -> set[str]:
    """The layers of ``names`` (called modules of ``gm``) from which no path leads to the
    graph's output: nothing they compute is returned (an unread head)."""
    out = set()
    for n in gm.graph.nodes:
        if n.op == "call_module" and n.target in names:
            after = _descendants(n)
            # an in-place op can carry the value into a tensor read later (y.add_(layer(x)))
            if not any(d.op == "output" or _mutates(gm, d) for d in after):
                out.add(str(n.target))
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

    def feeds(u: torch.fx.Node) -> bool:  # a layer, or a layout change before one
        if _is_layout_node(u):
            return any(feeds(v) for v in u.users)
        return u.op == "call_module" and u.target in flops

    reach = 0  # the furthest position read by a node before the current one
    for i, n in enumerate(order):
        if n.op == "output":
            return None
        feeds_layer = any(feeds(u) for u in n.users)
        if i > 0 and reach <= i and feeds_layer and not _is_layout_node(n):
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
    if not any(n.op == "output" for n in desc):
        raise ValueError(
            f"layer {layer_name!r} reaches the model output only through an in-place op "
            "(or not at all): the hook path runs the model's own forward"
        )
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
    reads = {
        a for n in body + pre_nodes for a in n.all_input_nodes if a not in inside and a not in pre
    }
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
        if n.op == "placeholder":  # an optional argument of the forward: its default
            env[n] = n.args[0] if n.args else None  # type: ignore[assignment]
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
        src = (
            env[n]
            if how == "value"
            else graph.call_function(operator.getitem, (env[n], slice(0, 1)))
        )
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
