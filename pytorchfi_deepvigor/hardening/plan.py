"""Hardening plans: what is protected, what it costs, and the MVF it promises.

Pure bookkeeping over a :class:`~pytorchfi_deepvigor.results.VulnerabilityResult` (no model, no
forward): the protection of each layer (:class:`LayerProtection`), the cost model of each
mechanism, the exact prediction of the protected model's VFs from the result's per-channel,
per-neuron and per-bit VFs (:func:`predict`), and the :class:`HardeningPlan` that holds them.

Mechanisms and their effect on the VFs (one fault per inference, the package's fault sites):

* **TMR of an output channel** (``tmr``): the channel is computed three times and voted, so a
  fault in its weights or in an operand of its multiplies is corrected: the channel's weight CVF
  and its neurons' operand NVFs become 0. Cost: two more copies of the channel's MACs (and of its
  weights, reported as memory).
* **ECC on weight bits** (``ecc``): a single-error-correcting Hamming code over the chosen bits
  of every weight word of a layer (the whole word, the sign and exponent, the exponent, or its
  top bit): a flip of a covered bit is corrected, so those bits' VF (the result's bit map)
  becomes 0. Cost: ``r`` check bits per word, the smallest ``r`` with ``2^r >= m + r + 1`` for
  ``m`` covered bits. Where a layer has both, a TMR channel's weight VF is already 0 and ECC
  removes the covered bits' share of the other channels' VF (the layer's bit map is taken as
  every channel's: the result holds bit maps per layer, not per channel).
* **Range restriction** (``clamp``): the layer's output held to profiled bounds. It changes the
  model, so it cannot be predicted from a result: the clamped model is analysed again and the
  other mechanisms are planned on that result (see :func:`pytorchfi_deepvigor.hardening.harden`).

Costs are fractions of the model's MACs (per image, over the result's layers) and of its weight
memory in bits: a TMR channel costs the larger of its two shares, an ECC group its check bits'
share of the memory, and a plan's costs add up to at most its budget (so it adds at most the
budget's share of each).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from pytorchfi_deepvigor.functional.vf import total_mvf
from pytorchfi_deepvigor.results import LayerResult, VulnerabilityResult

__all__ = [
    "ECC_GROUPS",
    "FORMAT_BITS",
    "HardeningPlan",
    "LayerCosts",
    "LayerProtection",
    "Prediction",
    "channel_counts",
    "channel_vfs",
    "check_result",
    "ecc_bits",
    "hamming_check_bits",
    "layer_costs",
    "predict",
]

# word layout per number format: (bits, exponent bits (low, high), sign bit)
FORMAT_BITS: dict[str, tuple[int, tuple[int, int], int]] = {
    "fp32": (32, (23, 30), 31),
    "fp16": (16, (10, 14), 15),
    "bf16": (16, (7, 14), 15),
}
ECC_GROUPS: tuple[str, ...] = ("exponent-msb", "exponent", "sign-exponent", "word")


def ecc_bits(group: str, number_format: str = "fp32") -> tuple[int, ...]:
    """The bit positions (LSB = 0) an ECC group covers in one word of ``number_format``.

    Example:
        >>> ecc_bits("exponent-msb"), ecc_bits("exponent", "bf16")
        ((30,), (7, 8, 9, 10, 11, 12, 13, 14))
    """
    if number_format not in FORMAT_BITS:
        raise ValueError(
            f"no ECC groups for number format {number_format!r}: expected one of {sorted(FORMAT_BITS)}"
        )
    width, (lo, hi), sign = FORMAT_BITS[number_format]
    if group == "exponent-msb":
        return (hi,)
    if group == "exponent":
        return tuple(range(lo, hi + 1))
    if group == "sign-exponent":
        return (*range(lo, hi + 1), sign)
    if group == "word":
        return tuple(range(width))
    raise ValueError(f"unknown ECC group {group!r}: expected one of {', '.join(ECC_GROUPS)}")


def hamming_check_bits(m: int) -> int:
    """Check bits of a single-error-correcting Hamming code over ``m`` data bits.

    Example:
        >>> [hamming_check_bits(m) for m in (1, 8, 9, 32)]
        [2, 4, 4, 6]
    """
    if m < 1:
        raise ValueError(f"expected at least one data bit, got {m}")
    r = 1
    while 2**r < m + r + 1:
        r += 1
    return r


@dataclass(frozen=True)
class LayerProtection:
    """The protection of one layer: TMR channels, ECC-covered weight bits, a clamp.

    Example:
        >>> LayerProtection(3, "features.3", tmr_channels=(2, 0), ecc_bits=(30,)).tmr_channels
        (0, 2)
    """

    layer_num: int
    name: str
    tmr_channels: tuple[int, ...] = ()
    ecc_bits: tuple[int, ...] = ()
    clamp: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "tmr_channels", tuple(sorted({int(c) for c in self.tmr_channels})))
        object.__setattr__(self, "ecc_bits", tuple(sorted({int(b) for b in self.ecc_bits})))

    @property
    def empty(self) -> bool:
        return not (self.tmr_channels or self.ecc_bits or self.clamp)


@dataclass(frozen=True)
class LayerCosts:
    """What one layer holds, for the cost model: channels, MACs and weights per channel."""

    layer_num: int
    name: str
    channels: int
    macs_per_channel: int
    weights_per_channel: int
    n_neurons: int
    n_weights: int


def _pair(result: VulnerabilityResult) -> dict[int, tuple[LayerResult, LayerResult]]:
    act = {x.layer_num: x for x in result.layers if x.target == "activations"}
    wts = {x.layer_num: x for x in result.layers if x.target == "weights"}
    return {n: (act[n], wts[n]) for n in sorted(act) if n in wts}


Channels = Mapping[int, int]


def _complete(result: VulnerabilityResult, wts: LayerResult) -> bool:
    """Whether every channel of the layer was analysed: no sampling or channel ratio recorded,
    and channels 0..k-1 (a result that does not record how it drew its channels is taken at
    its channels; pass the model to be sure)."""
    drawn = any(result.options.get(k) is not None for k in ("sampling", "channel_ratio"))
    return not drawn and sorted(wts.channels) == list(range(len(wts.channels)))


def resolve_name(model: Any, name: str) -> str:
    """``name`` in ``model``; a name of a protected copy (``features.0.layer``, the layer inside
    its :class:`~pytorchfi_deepvigor.hardening.ProtectedLayer`, e.g. from the analysis of a
    clamped model) is the user's ``features.0``."""
    try:
        model.get_submodule(name)
        return name
    except AttributeError:
        return name[: -len(".layer")] if name.endswith(".layer") else name


def channel_counts(result: VulnerabilityResult, model: Any = None) -> dict[int, int]:
    """Output channels of each layer analysed for both targets: from ``model`` when it is given
    (the module the layer's name gives), otherwise from the result, whose every channel must
    then have been analysed.

    Raises:
        ValueError: a sampled layer without ``model``, or a name ``model`` does not hold.
    """
    out = {}
    for num, (_, wts) in _pair(result).items():
        if model is None and _complete(result, wts):
            out[num] = len(wts.channels)
            continue
        if model is None:
            raise ValueError(
                f"layer {num} ({wts.name}): only some channels were analysed (sampling); pass "
                "the model (harden(..., model=model)) so the plan knows every layer's channels, "
                "or analyse with sampling=None"
            )
        try:
            module = model.get_submodule(resolve_name(model, wts.name))
        except AttributeError:
            module = None
        count = getattr(module, "out_channels", getattr(module, "out_features", None))
        if not isinstance(count, int) or count <= max(wts.channels, default=-1):
            raise ValueError(
                f"layer {num} ({wts.name}) is not a Conv2d/Linear of the model given: pass the "
                "model the result was computed on"
            )
        out[num] = count
    return out


def check_result(result: VulnerabilityResult, channels: Channels) -> None:
    """Refuse a result the planner cannot plan on, naming what to run instead.

    Raises:
        ValueError: not an analysis or exhaustive FI of both targets, weights or neurons that do
            not split into the layer's channels, or not the single-bit flip fault model.
    """
    if not isinstance(result, VulnerabilityResult):
        raise TypeError(f"expected a VulnerabilityResult, got {type(result).__name__}")
    pairs = _pair(result)
    if not pairs:
        raise ValueError(
            "the result has no layer analysed for both weights and operands: a plan weighs both "
            "(paper Eq. 15); run analyze(target='both') (or exhaustive FI of both targets)"
        )
    for num, (act, wts) in pairs.items():
        c = channels[num]
        if wts.n_weights % c or act.n_neurons % c:
            raise ValueError(
                f"layer {num} ({wts.name}): its weights or neurons do not split evenly into its "
                f"{c} channels: pass the model the result was computed on (model=)"
            )
    model = str(result.options.get("fault_model", "flip"))
    if model == "int8":
        raise ValueError(
            "the result is of an int8 network: the planner's ECC and TMR models are for float "
            "words (fp32, fp16, bf16); plans for int8 networks are not modelled yet"
        )
    if model != "flip":
        raise ValueError(
            f"the result's fault model is {model!r}: the planner's ECC and TMR models are for "
            "single bit flips of every bit ('flip'); analyse with the default fault model"
        )


def number_format(result: VulnerabilityResult) -> str:
    return str(result.options.get("number_format", "fp32"))


def layer_costs(result: VulnerabilityResult, channels: Channels) -> dict[int, LayerCosts]:
    """Channels, MACs and weights per channel of each layer analysed for both targets."""
    out = {}
    for num, (act, wts) in _pair(result).items():
        c = channels[num]
        per_w, per_n = wts.n_weights // c, act.n_neurons // c
        out[num] = LayerCosts(num, wts.name, c, per_w * per_n, per_w, act.n_neurons, wts.n_weights)
    return out


@dataclass(frozen=True)
class Prediction:
    """The VFs a protection promises: per layer (operands, weights) and the model's MVFs."""

    lvf_activations: Mapping[int, float]
    lvf_weights: Mapping[int, float]
    mvf_activations: float
    mvf_weights: float
    mvf_total: float


def channel_vfs(layer: LayerResult, channels: int) -> np.ndarray:
    """Every channel's CVF: the result's where it was analysed, the layer's LVF (the sample's
    estimate) where not."""
    cvf = np.full(channels, layer.lvf, dtype=np.float64)
    cvf[list(layer.channels)] = layer.cvf
    return cvf


def bit_share(wts: LayerResult, bits: tuple[int, ...]) -> float:
    """The share of a layer's weight VF carried by ``bits`` (its bit map; 0 without one)."""
    if not bits:
        return 0.0
    if wts.bit_vf is None:
        raise ValueError(
            f"layer {wts.layer_num} ({wts.name}) has no bit map: ECC needs the VF of each bit; rerun "
            "the analysis with this package's default models (or exhaustive FI)"
        )
    vf = np.asarray(wts.bit_vf, dtype=np.float64)
    total = float(vf.sum())
    return float(vf[list(bits)].sum()) / total if total > 0 else 0.0


def predict(
    result: VulnerabilityResult, protections: Mapping[int, LayerProtection], channels: Channels
) -> Prediction:
    """The VFs of the protected model from the result's VFs: a layer's LVF is the mean of its
    channels' CVFs (operands and weights), a TMR channel's are 0, ECC removes its bits' share of
    the weight VF (the layer's bit map taken as every channel's)."""
    pairs = _pair(result)
    lvf_a, lvf_w, n_l, w_l = {}, {}, [], []
    for num, (act, wts) in pairs.items():
        prot = protections.get(num)
        act_cvf = channel_vfs(act, channels[num])
        wts_cvf = channel_vfs(wts, channels[num])
        if prot and prot.tmr_channels:
            act_cvf[list(prot.tmr_channels)] = 0.0
            wts_cvf[list(prot.tmr_channels)] = 0.0
        share = bit_share(wts, prot.ecc_bits) if prot else 0.0
        lvf_a[num] = float(act_cvf.mean())
        lvf_w[num] = float(wts_cvf.mean() * max(0.0, 1.0 - share))
        n_l.append(act.n_neurons)
        w_l.append(wts.n_weights)
    nums = list(pairs)
    a = [lvf_a[n] for n in nums]
    w = [lvf_w[n] for n in nums]
    return Prediction(
        lvf_a, lvf_w, float(np.mean(a)), float(np.mean(w)), float(total_mvf(a, w, n_l, w_l))
    )


@dataclass(frozen=True)
class HardeningPlan:
    """What to protect, its overhead and the MVF it promises.

    ``layers`` holds one :class:`LayerProtection` per protected layer. ``overhead_macs`` and
    ``overhead_memory`` are the extra MACs (TMR) and the extra weight memory (TMR's replicas and
    ECC's check bits) as fractions of the model's. ``baseline`` and ``predicted`` are the
    unprotected and protected MVFs (``total``, ``activations``, ``weights``) from the result the
    plan was made on. ``ranges`` holds the clamp bounds per layer number (``[low, high]`` per
    channel) where the plan restricts ranges. ``strategy`` says how the plan was chosen.
    """

    strategy: str
    budget: float
    mechanisms: tuple[str, ...]
    layers: tuple[LayerProtection, ...]
    overhead_macs: float
    overhead_memory: float
    baseline: Mapping[str, float]
    predicted: Mapping[str, float]
    number_format: str = "fp32"
    ranges: Mapping[int, tuple[tuple[float, ...], tuple[float, ...]]] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(sorted(self.layers, key=lambda p: p.layer_num)))
        object.__setattr__(self, "mechanisms", tuple(self.mechanisms))

    @property
    def protections(self) -> dict[int, LayerProtection]:
        return {p.layer_num: p for p in self.layers}

    @property
    def reduction(self) -> float:
        """How many times smaller the predicted total MVF is than the baseline's (inf at 0)."""
        base, pred = self.baseline["total"], self.predicted["total"]
        return base / pred if pred > 0 else math.inf

    def summary(self) -> str:
        n_tmr = sum(len(p.tmr_channels) for p in self.layers)
        n_ecc = sum(1 for p in self.layers if p.ecc_bits)
        n_clamp = sum(1 for p in self.layers if p.clamp)
        return (
            f"{self.strategy} plan at {self.budget:.0%}: TMR on {n_tmr} channels, ECC on "
            f"{n_ecc} layers, clamps on {n_clamp} layers; +{self.overhead_macs:.1%} MACs, "
            f"+{self.overhead_memory:.1%} weight memory; MVF {self.baseline['total']:.4%} -> "
            f"{self.predicted['total']:.4%} (predicted)"
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["layers"] = [
            {
                "layer_num": p.layer_num,
                "name": p.name,
                "tmr_channels": list(p.tmr_channels),
                "ecc_bits": list(p.ecc_bits),
                "clamp": p.clamp,
            }
            for p in self.layers
        ]
        out["mechanisms"] = list(self.mechanisms)
        out["baseline"] = dict(self.baseline)
        out["predicted"] = dict(self.predicted)
        out["ranges"] = {str(k): [list(lo), list(hi)] for k, (lo, hi) in self.ranges.items()}
        out["options"] = dict(self.options)
        return out

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HardeningPlan:
        """Rebuild a plan from :meth:`to_dict`'s output.

        Raises:
            ValueError: naming the field that is missing or of the wrong kind.
        """
        names = [f.name for f in fields(cls)]
        missing = [
            n
            for n in (
                "strategy",
                "budget",
                "mechanisms",
                "layers",
                "overhead_macs",
                "overhead_memory",
                "baseline",
                "predicted",
            )
            if n not in data
        ]
        if missing:
            raise ValueError(f"not a hardening plan: missing {', '.join(missing)}")
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"not a hardening plan: unknown fields {', '.join(unknown)}")
        try:
            layers = tuple(LayerProtection(**p) for p in data["layers"])
            ranges = {
                int(k): (tuple(map(float, v[0])), tuple(map(float, v[1])))
                for k, v in dict(data.get("ranges", {})).items()
            }
        except (TypeError, KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"hardening plan: bad layers or ranges ({exc})") from None
        values = {n: data[n] for n in names if n in data}
        values.update(layers=layers, ranges=ranges)
        return cls(**values)

    @classmethod
    def from_json(cls, source: str | Path) -> HardeningPlan:
        text = (
            Path(source).read_text(encoding="utf-8")
            if isinstance(source, Path) or not str(source).lstrip().startswith("{")
            else str(source)
        )
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"hardening plan {source}: not valid JSON ({exc})") from None
        return cls.from_dict(data)
