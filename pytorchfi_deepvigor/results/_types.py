"""The result types: :class:`VulnerabilityResult`, :class:`LayerResult`, costs and counts.

Private module: import them from :mod:`pytorchfi_deepvigor.results` (its docstring holds the
JSON schema).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from pytorchfi_deepvigor.functional.vf import total_mvf
from pytorchfi_deepvigor.results._codec import (
    check_options,
    decode,
    freeze,
    now_iso,
    package_versions,
    same,
    thaw,
)
from pytorchfi_deepvigor.results._validate import VF_SLACK, check_layer, check_result

__all__ = [
    "METHODS",
    "SCHEMA_VERSION",
    "TARGETS",
    "Cost",
    "LayerResult",
    "OutcomeCounts",
    "RankCost",
    "VulnerabilityResult",
    "mvf",
]

SCHEMA_VERSION = 3
# 2: the weight coverage (a schema-1 file reads as coverage None); 3: its ``other`` tensors
# (added or indexed, not multiplied: listed, not counted; a schema-2 file reads with none)
Target = Literal["weights", "activations", "stored"]
Method = Literal[
    "deepvigor", "exhaustive", "sfi-network", "sfi-layer", "sfi-data-unaware", "sfi-data-aware"
]
TARGETS: tuple[str, ...] = get_args(Target)
METHODS: tuple[str, ...] = get_args(Method)


@dataclass(frozen=True)
class WeightCoverage:
    """How much of a model's weight memory a result covers.

    ``total``: elements of the model's weights, every floating-point parameter or buffer of two
    or more dimensions that the forward multiplies its data by (convolution and Linear weights,
    attention projections, matrix products, embedding tables; not biases nor normalisation
    statistics). ``covered``: those of the catalogued Conv2d/Linear weights, the fault sites of
    the analysis and of fault injection. ``missing``: the rest of the weights, one ``"name (N
    elements): reason"`` per tensor. ``other``: the tensors of two or more dimensions that are
    not weights in this sense (added, indexed or scaled elementwise: position embeddings, class
    tokens, position bias tables, layer scales), listed the same way; not counted, not fault
    sites.

    Example:
        >>> c = WeightCoverage(total=1000, covered=990, missing=("w (10 elements): Conv1d",))
        >>> c.fraction, c.complete
        (0.99, False)
    """

    total: int
    covered: int
    missing: tuple[str, ...] = ()
    other: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "missing", tuple(self.missing))
        object.__setattr__(self, "other", tuple(self.other))
        if not 0 <= self.covered <= self.total:
            raise ValueError(f"expected 0 <= covered <= total, got {self.covered} of {self.total}")

    @property
    def fraction(self) -> float:
        """Covered elements over all weight elements (1.0 for a model without weights)."""
        return self.covered / self.total if self.total else 1.0

    @property
    def complete(self) -> bool:
        return self.covered == self.total


@dataclass(frozen=True)
class Cost:
    """Work a result took: batched forwards, image-evaluations, backwards, faults, seconds.

    Example:
        >>> Cost(batched_forwards=2, wall_time_s=0.5) + Cost(batched_forwards=1, faults=10)
        Cost(batched_forwards=3, image_evaluations=0, backwards=0, faults=10, wall_time_s=0.5)
    """

    batched_forwards: int = 0
    image_evaluations: int = 0
    backwards: int = 0
    faults: int = 0
    wall_time_s: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        if not isinstance(other, Cost):
            return NotImplemented
        return Cost(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(Cost)))


@dataclass(frozen=True)
class RankCost:
    """One process of a distributed run (see :mod:`pytorchfi_deepvigor.distributed`): its rank,
    device and host, the work items it computed and what they cost.

    Example:
        >>> RankCost(rank=1, device="cuda:1", items=3, cost=Cost(faults=96)).cost.faults
        96
    """

    rank: int
    device: str
    host: str = ""
    items: int = 0
    cost: Cost = field(default_factory=Cost)


@dataclass(frozen=True)
class OutcomeCounts:
    """Fault outcomes over (fault, image) pairs: masked, non-critical SDC, critical, DUE.

    Example:
        >>> counts = OutcomeCounts(masked=5, sdc=2, critical=2, due=1)
        >>> counts.total, counts.vf
        (10, 0.3)
    """

    masked: int = 0
    sdc: int = 0
    critical: int = 0
    due: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                raise ValueError(f"expected {f.name} as a non-negative int, got {value!r}")
            object.__setattr__(self, f.name, int(value))

    def __add__(self, other: OutcomeCounts) -> OutcomeCounts:
        if not isinstance(other, OutcomeCounts):
            return NotImplemented
        return OutcomeCounts(
            *(getattr(self, f.name) + getattr(other, f.name) for f in fields(self))
        )

    @property
    def total(self) -> int:
        """Number of (fault, image) pairs counted."""
        return self.masked + self.sdc + self.critical + self.due

    @property
    def vf(self) -> float:
        """Fraction of pairs that are critical or DUE (a DUE counts as critical); NaN if empty."""
        return (self.critical + self.due) / self.total if self.total else math.nan

    @classmethod
    def from_outcomes(cls, codes: Any) -> OutcomeCounts:
        """Count engine outcome codes (0 masked, 1 SDC, 2 critical, 3 DUE) in an int array/tensor."""
        array = np.asarray(codes.cpu() if hasattr(codes, "cpu") else codes).reshape(-1)
        if array.size and (array.min() < 0 or array.max() > 3):
            raise ValueError(f"expected outcome codes in 0..3, got {array.min()}..{array.max()}")
        return cls(*np.bincount(array.astype(np.int64), minlength=4).tolist())


def _tuple(values: Iterable[Any] | None, cast: Any) -> tuple[Any, ...] | None:
    return None if values is None else tuple(cast(v) for v in values)


def _array(value: Any, dtype: Any = None) -> np.ndarray | None:
    if value is None:
        return None
    array = np.array(value.cpu() if hasattr(value, "cpu") else value, dtype=dtype, copy=True)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class LayerResult:
    """Vulnerability of one layer for one fault target.

    VFs (``cvf``, ``nvf``, ``lvf``) are fractions in [0, 1]. ``channels`` and ``cvf`` are aligned; so are ``neurons`` ((c, h, w), h = w = 0 for Linear)
    and ``nvf``. For the weights target, ``neurons`` holds the output positions drawn to feed
    each channel's EDM (sampled analysis). ``vv_minus``/``vv_plus`` are ``[targets, images]``
    with targets in the order of ``neurons`` (activations) or ``channels`` (weights). FI
    results fill ``counts``, ``n_faults`` and, for SFI, ``margin``. ``cost`` is the work this
    layer and target took (``None`` where it was not recorded, e.g. in older files).
    ``bit_vf`` is the VF of each mask of the fault model, LSB first (each bit of the word, for
    single-bit models): exhaustive FI and the analysis' default models fill it.

    Example:
        >>> LayerResult(layer_num=1, name="fc", kind="Linear", target="activations",
        ...             n_neurons=10, n_weights=40, channels=(3,), cvf=(0.1,), lvf=0.1).cvf
        (0.1,)
    """

    layer_num: int
    name: str
    kind: str
    target: Target
    n_neurons: int
    n_weights: int
    channels: tuple[int, ...]
    cvf: tuple[float, ...]
    lvf: float
    neurons: tuple[tuple[int, int, int], ...] | None = None
    nvf: tuple[float, ...] | None = None
    vv_minus: np.ndarray | None = None
    vv_plus: np.ndarray | None = None
    edm: np.ndarray | None = None
    counts: OutcomeCounts | None = None
    n_faults: int | None = None
    margin: float | None = None
    cvf_spread: float | None = None
    cost: Cost | None = None
    bit_vf: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"expected target in {TARGETS}, got {self.target!r}")
        set_ = object.__setattr__
        set_(self, "channels", _tuple(self.channels, int))
        set_(self, "cvf", _tuple(self.cvf, float))
        set_(self, "lvf", float(self.lvf))
        if len(self.channels) != len(self.cvf):
            raise ValueError(
                f"expected one cvf per channel, got {len(self.cvf)} for {len(self.channels)}"
            )
        set_(self, "neurons", _tuple(self.neurons, lambda n: tuple(int(i) for i in n)))
        set_(self, "nvf", _tuple(self.nvf, float))
        if self.neurons is not None and any(len(n) != 3 for n in self.neurons):
            raise ValueError("expected neurons as (channel, row, col) triples")
        if self.nvf is not None and (self.neurons is None or len(self.nvf) != len(self.neurons)):
            raise ValueError("expected one nvf per neuron (nvf given without aligned neurons)")
        set_(self, "bit_vf", _tuple(self.bit_vf, float))
        for name, values in (
            ("cvf", self.cvf),
            ("nvf", self.nvf or ()),
            ("lvf", (self.lvf,)),
            ("bit_vf", self.bit_vf or ()),
        ):
            bad = next((v for v in values if not -VF_SLACK <= v <= 1.0 + VF_SLACK), None)
            if bad is not None:
                raise ValueError(f"expected every {name} in [0, 1], got {bad}")
        set_(self, "vv_minus", _array(self.vv_minus, np.float64))
        set_(self, "vv_plus", _array(self.vv_plus, np.float64))
        set_(self, "edm", _array(self.edm))
        for vv in (self.vv_minus, self.vv_plus):
            if vv is not None and vv.ndim != 2:
                raise ValueError(f"expected VV ranges shaped [targets, images], got {vv.shape}")
        minus, plus = self.vv_minus, self.vv_plus
        if (minus is None) != (plus is None) or (
            minus is not None and plus is not None and minus.shape != plus.shape
        ):
            raise ValueError("expected vv_minus and vv_plus both given with one shape, or neither")
        for name in ("margin", "cvf_spread"):
            if getattr(self, name) is not None:
                set_(self, name, float(getattr(self, name)))
        if self.cost is not None and not isinstance(self.cost, Cost):
            raise TypeError(f"expected cost as a Cost, got {type(self.cost).__name__}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LayerResult) and same(self, other)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready plain dict (see the module docstring for the schema)."""
        return {f.name: thaw(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerResult:
        """Rebuild a layer result from :meth:`to_dict`'s output.

        Raises:
            ValueError: naming the field that ``to_dict`` cannot have written.
        """
        check_layer(data, "", TARGETS, [f.name for f in fields(cls)])
        return cls._decode(data)

    @classmethod
    def _decode(cls, data: Mapping[str, Any]) -> LayerResult:
        values = {f.name: decode(data[f.name]) for f in fields(cls) if f.name in data}
        values.update({k: data[k] for k in ("name", "kind", "target") if k in data})
        if values.get("counts") is not None:
            values["counts"] = OutcomeCounts(**values["counts"])
        if values.get("cost") is not None:
            values["cost"] = Cost(**values["cost"])
        return cls(**values)


def mvf(lvfs: Iterable[float]) -> float:
    """Model VF of one target: the mean LVF over layers.

    Raises:
        ValueError: when there is no LVF.
    """
    values = [float(v) for v in lvfs]
    if not values:
        raise ValueError("expected at least one LVF to average into an MVF")
    return sum(values) / len(values)


def _total_mvf(act: Mapping[int, LayerResult], wts: Mapping[int, LayerResult]) -> float:
    """Paper Eq. 15 over the layers analysed for both targets (N_l, W_l from the layers)."""
    nums = sorted(act)
    return total_mvf(
        [act[n].lvf for n in nums],
        [wts[n].lvf for n in nums],
        [act[n].n_neurons for n in nums],
        [act[n].n_weights for n in nums],
    )


@dataclass(frozen=True, eq=False)
class VulnerabilityResult:
    """A model's vulnerability from one analysis or FI campaign.

    Build it with :meth:`from_layers`, which fills the MVFs. ``mvf_total`` is paper Eq. 15,
    given when activations and weights were analysed for the same layers. ``ranks`` holds one
    :class:`RankCost` per process of a distributed run (its length is the world size; empty for
    one process).

    Example:
        >>> VulnerabilityResult.from_layers("exhaustive", [], n_images=0).mvf_total is None
        True
    """

    method: Method
    layers: tuple[LayerResult, ...]
    mvf_activations: float | None
    mvf_weights: float | None
    mvf_total: float | None
    options: Mapping[str, Any] = field(default_factory=dict)
    seed: int | None = None
    cost: Cost = field(default_factory=Cost)
    n_images: int = 0
    model_name: str = ""
    unsupported: tuple[str, ...] = ()
    coverage: WeightCoverage | None = None
    schema_version: int = SCHEMA_VERSION
    created: str = field(default_factory=now_iso)
    versions: Mapping[str, str] = field(default_factory=package_versions)
    ranks: tuple[RankCost, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "ranks", tuple(self.ranks))
        if self.method not in METHODS:
            raise ValueError(f"expected method in {METHODS}, got {self.method!r}")
        object.__setattr__(self, "layers", tuple(self.layers))
        keys = [(layer.layer_num, layer.target) for layer in self.layers]
        if len(set(keys)) != len(keys):
            raise ValueError(f"expected one LayerResult per (layer_num, target), got {keys}")
        check_options(self.options)
        object.__setattr__(self, "options", freeze(self.options))
        object.__setattr__(self, "versions", freeze(self.versions))
        object.__setattr__(self, "unsupported", tuple(self.unsupported))
        if self.schema_version > SCHEMA_VERSION:
            raise ValueError(
                f"result schema_version {self.schema_version} is newer than this package's "
                f"{SCHEMA_VERSION}: upgrade pytorchfi-deepvigor to read it"
            )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VulnerabilityResult) and same(self, other)

    @classmethod
    def from_layers(
        cls,
        method: Method,
        layers: Iterable[LayerResult],
        *,
        options: Mapping[str, Any] | None = None,
        seed: int | None = None,
        cost: Cost | None = None,
        n_images: int = 0,
        model_name: str = "",
        unsupported: Iterable[str] = (),
        coverage: WeightCoverage | None = None,
    ) -> VulnerabilityResult:
        """Assemble a result and compute its MVFs from the layers' LVFs."""
        layers = tuple(layers)
        act = {x.layer_num: x for x in layers if x.target == "activations"}
        wts = {x.layer_num: x for x in layers if x.target == "weights"}
        return cls(
            method=method,
            layers=layers,
            mvf_activations=mvf(x.lvf for x in act.values()) if act else None,
            mvf_weights=mvf(x.lvf for x in wts.values()) if wts else None,
            mvf_total=_total_mvf(act, wts) if act and act.keys() == wts.keys() else None,
            options=dict(options or {}),
            seed=seed,
            cost=cost or Cost(),
            n_images=n_images,
            model_name=model_name,
            unsupported=tuple(unsupported),
            coverage=coverage,
        )

    def layer(self, layer_num: int, target: Target) -> LayerResult:
        """The result of one layer for one target.

        Raises:
            KeyError: naming the (layer_num, target) pairs present.
        """
        for layer in self.layers:
            if layer.layer_num == layer_num and layer.target == target:
                return layer
        present = [(x.layer_num, x.target) for x in self.layers]
        raise KeyError(f"no layer {layer_num} with target {target!r}; present: {present}")

    def lvf(self, target: Target) -> dict[int, float]:
        """LVF per layer number for one target."""
        if target not in TARGETS:
            raise ValueError(f"expected target in {TARGETS}, got {target!r}")
        return {x.layer_num: x.lvf for x in self.layers if x.target == target}

    def without_timings(self) -> VulnerabilityResult:
        """A copy with every wall time set to 0, no creation time and no per-rank record: what
        two runs of the same study with the same seed must agree on exactly (e.g. a resumed and
        an uninterrupted one, or one sharded over processes and a one-process one).

        Example:
            >>> a = VulnerabilityResult.from_layers("deepvigor", [], n_images=1, cost=Cost(wall_time_s=2.0))
            >>> b = VulnerabilityResult.from_layers("deepvigor", [], n_images=1, cost=Cost(wall_time_s=3.0))
            >>> a == b, a.without_timings() == b.without_timings()
            (False, True)
        """
        layers = tuple(
            layer
            if layer.cost is None
            else replace(layer, cost=replace(layer.cost, wall_time_s=0.0))
            for layer in self.layers
        )
        return replace(
            self, created="", cost=replace(self.cost, wall_time_s=0.0), layers=layers, ranks=()
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready plain dict (see the module docstring for the schema)."""
        out = {f.name: thaw(getattr(self, f.name)) for f in fields(self)}
        out["layers"] = [layer.to_dict() for layer in self.layers]
        return out

    def to_json(self, path: str | Path | None = None) -> str:
        """Serialise to strict JSON; also write it to ``path`` when one is given."""
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VulnerabilityResult:
        """Rebuild a result from :meth:`to_dict`'s output.

        Raises:
            ValueError: naming the field that ``to_dict`` cannot have written (wrong type,
                out of range, unequal lengths, missing ``schema_version``, ...).
        """
        check_result(
            data,
            schema_version=SCHEMA_VERSION,
            methods=METHODS,
            targets=TARGETS,
            fields=[f.name for f in fields(cls)],
            layer_fields=[f.name for f in fields(LayerResult)],
        )
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        values["layers"] = tuple(LayerResult._decode(x) for x in data["layers"])
        values["cost"] = Cost(**decode(data.get("cost", {})))
        for name in ("mvf_activations", "mvf_weights", "mvf_total"):
            if name in values:
                values[name] = decode(values[name])
        values["unsupported"] = tuple(data.get("unsupported", ()))
        if data.get("coverage") is not None:
            values["coverage"] = WeightCoverage(**data["coverage"])
        values["ranks"] = tuple(
            RankCost(**{**r, "cost": Cost(**decode(r.get("cost", {})))})
            for r in data.get("ranks") or ()
        )
        return cls(**values)

    @classmethod
    def from_json(cls, source: str | Path) -> VulnerabilityResult:
        """Load from a JSON string or a path to a JSON file.

        Raises:
            ValueError: the text is not complete JSON, or holds what :meth:`to_json` cannot
                have written (the message names the file and the field).
            OSError: the file cannot be read.
        """
        text, where = str(source), "result JSON"
        if isinstance(source, Path) or not text.lstrip().startswith(("{", "[")):
            where = f"result file {source}"
            text = Path(source).read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(
                f"{where} is not valid JSON ({exc}; truncated or not a result.json?)"
            ) from None
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where}: {exc}") from None
