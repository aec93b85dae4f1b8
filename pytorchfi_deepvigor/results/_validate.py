"""Validation of result JSON before it is decoded: types, ranges, lengths, schema version.

:func:`check_result` and :func:`check_layer` accept exactly what ``to_dict`` can write (see the
schema in ``results``' module docstring) and raise ``ValueError`` naming the field, e.g.
``layers[0].lvf: expected a VF in [0, 1], got 5.0``. Private: the result types call them from
their ``from_dict``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np

__all__ = ["VF_SLACK", "check_layer", "check_result"]

_NON_FINITE = ("NaN", "Infinity", "-Infinity")
_ARRAY_KINDS = "biuf"  # bool, int, unsigned, float: what an analysis or a campaign stores
VF_SLACK = 1e-6  # float32 noise of a mean of fractions

_LAYER_REQUIRED = ("layer_num", "name", "kind", "target", "n_neurons", "n_weights")
_RESULT_REQUIRED = ("schema_version", "method", "layers")
_COUNTS = ("masked", "sdc", "critical", "due")
_COST = {
    "batched_forwards": "count",
    "image_evaluations": "count",
    "backwards": "count",
    "faults": "count",
    "wall_time_s": "seconds",
}


def _fail(where: str, expected: str, value: Any) -> None:
    shown = repr(value) if not isinstance(value, list | dict) else type(value).__name__
    raise ValueError(f"{where}: expected {expected}, got {shown}")


def _int(value: Any, where: str, minimum: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(where, f"an int >= {minimum}", value)


def _number(value: Any, where: str) -> float:
    """A JSON number or one of the non-finite strings, as a float."""
    if isinstance(value, str) and value in _NON_FINITE:
        return float(value.replace("Infinity", "inf"))
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(where, "a number", value)
    return float(value)


def _vf(value: Any, where: str) -> None:
    number = _number(value, where)
    if not -VF_SLACK <= number <= 1.0 + VF_SLACK:  # also refuses NaN
        _fail(where, "a VF in [0, 1]", value)


def _seconds(value: Any, where: str) -> None:
    number = _number(value, where)
    if not number >= 0.0 or math.isinf(number):
        _fail(where, "a finite number of seconds >= 0", value)


def _str(value: Any, where: str) -> None:
    if not isinstance(value, str):
        _fail(where, "a string", value)


def _list(value: Any, where: str, item: Callable[[Any, str], Any] | None = None) -> list[Any]:
    if not isinstance(value, list):
        _fail(where, "a list", value)
    if item is not None:
        for i, x in enumerate(value):
            item(x, f"{where}[{i}]")
    return list(value)


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        _fail(where, "an object", value)
    return value


def _known(
    data: Mapping[str, Any], where: str, known: Collection[str], required: tuple[str, ...]
) -> None:
    at = f"{where}: " if where else ""
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{at}unknown fields {unknown}")
    missing = [k for k in required if k not in data]
    if missing:
        raise ValueError(f"{at}missing fields {missing}")


def _array(value: Any, where: str, ndim: int | None = None) -> None:
    data = _object(value, where)
    _known(data, where, ("dtype", "shape", "data"), ("dtype", "shape", "data"))
    try:
        dtype = np.dtype(data["dtype"])
    except TypeError:
        dtype = np.dtype(object)
    if not isinstance(data["dtype"], str) or dtype.kind not in _ARRAY_KINDS:
        _fail(f"{where}.dtype", "a bool, int or float numpy dtype", data["dtype"])
    shape = _list(data["shape"], f"{where}.shape", _int)
    if ndim is not None and len(shape) != ndim:
        _fail(f"{where}.shape", f"{ndim} dimensions", shape)
    values = _list(data["data"], f"{where}.data")
    if len(values) != math.prod(shape):
        raise ValueError(
            f"{where}.data: expected {math.prod(shape)} values for shape {shape}, got {len(values)}"
        )
    for i, x in enumerate(values):
        _number(x, f"{where}.data[{i}]")


def _optional(data: Mapping[str, Any], key: str, check: Callable[[Any, str], Any], at: str) -> None:
    if data.get(key) is not None:
        check(data[key], f"{at}{key}")


def _cost(value: Any, where: str) -> None:
    data = _object(value, where)
    _known(data, where, _COST, ())
    for key, kind in _COST.items():
        if key in data:
            (_int if kind == "count" else _seconds)(data[key], f"{where}.{key}")


def _coverage(value: Any, where: str) -> None:
    data = _object(value, where)
    _known(data, where, ("total", "covered", "missing", "other"), ("total", "covered"))
    _int(data["total"], f"{where}.total")
    _int(data["covered"], f"{where}.covered")
    if data["covered"] > data["total"]:
        _fail(f"{where}.covered", f"at most total ({data['total']})", data["covered"])
    _optional(data, "missing", lambda v, w: _list(v, w, _str), f"{where}.")
    _optional(data, "other", lambda v, w: _list(v, w, _str), f"{where}.")


def _counts(value: Any, where: str) -> None:
    data = _object(value, where)
    _known(data, where, _COUNTS, _COUNTS)
    for key in _COUNTS:
        _int(data[key], f"{where}.{key}")


def _neuron(value: Any, where: str) -> None:
    if len(_list(value, where, _int)) != 3:
        _fail(where, "a (channel, row, col) triple", value)


def _rank(value: Any, where: str) -> None:
    data = _object(value, where)
    _known(data, where, ("rank", "device", "host", "items", "cost"), ("rank", "device"))
    _int(data["rank"], f"{where}.rank")
    _str(data["device"], f"{where}.device")
    _optional(data, "host", _str, f"{where}.")
    _optional(data, "items", _int, f"{where}.")
    _optional(data, "cost", _cost, f"{where}.")


def check_layer(data: Any, where: str, targets: tuple[str, ...], fields: Collection[str]) -> None:
    """Validate one layer's JSON object (``where``: its place, e.g. ``layers[2]``)."""
    at = f"{where}." if where else ""
    data = _object(data, where or "layer")
    _known(data, where, fields, (*_LAYER_REQUIRED, "channels", "cvf", "lvf"))
    _int(data["layer_num"], f"{at}layer_num")
    for key in ("name", "kind"):
        _str(data[key], f"{at}{key}")
    if data["target"] not in targets:
        _fail(f"{at}target", f"one of {targets}", data["target"])
    for key in ("n_neurons", "n_weights"):
        _int(data[key], f"{at}{key}")
    channels = _list(data["channels"], f"{at}channels", _int)
    cvf = _list(data["cvf"], f"{at}cvf", _vf)
    if len(cvf) != len(channels):
        raise ValueError(f"{at}cvf: expected one VF per channel ({len(channels)}), got {len(cvf)}")
    _vf(data["lvf"], f"{at}lvf")
    _optional(data, "neurons", lambda v, w: _list(v, w, _neuron), at)
    _optional(data, "nvf", lambda v, w: _list(v, w, _vf), at)
    for key in ("vv_minus", "vv_plus"):
        _optional(data, key, lambda v, w: _array(v, w, ndim=2), at)
    _optional(data, "edm", _array, at)
    _optional(data, "counts", _counts, at)
    _optional(data, "n_faults", _int, at)
    _optional(data, "margin", _number, at)
    _optional(data, "cvf_spread", _number, at)
    _optional(data, "cost", _cost, at)
    _optional(data, "bit_vf", lambda v, w: _list(v, w, _vf), at)


def check_result(
    data: Any,
    *,
    schema_version: int,
    methods: tuple[str, ...],
    targets: tuple[str, ...],
    fields: Collection[str],
    layer_fields: Collection[str],
) -> None:
    """Validate a whole result's JSON object before it is decoded (the names it accepts are
    passed in by the types, which this module does not import)."""
    if not isinstance(data, Mapping):
        names: dict[type, str] = {list: "a list", str: "a string"}
        what = names.get(type(data), type(data).__name__)
        raise ValueError(f"expected a JSON object (a result), got {what}")
    if data.get("format") == "pytorchfi-deepvigor comparison":
        raise ValueError(
            "this is a comparison (comparison.json, from 'compare --out'), not a result: "
            "give a result.json"
        )
    _known(data, "", fields, _RESULT_REQUIRED)
    version = data["schema_version"]
    _int(version, "schema_version", minimum=1)
    if version > schema_version:
        raise ValueError(
            f"schema_version {version} is newer than this package's {schema_version}: "
            "upgrade pytorchfi-deepvigor to read it"
        )
    if data["method"] not in methods:
        _fail("method", f"one of {methods}", data["method"])
    layers = _list(data["layers"], "layers")
    for i, layer in enumerate(layers):
        check_layer(layer, f"layers[{i}]", targets, layer_fields)
    for key in ("mvf_activations", "mvf_weights", "mvf_total"):
        _optional(data, key, _vf, "")
    _optional(data, "options", _object, "")
    _optional(data, "seed", _int, "")
    _optional(data, "cost", _cost, "")
    _optional(data, "n_images", _int, "")
    for key in ("model_name", "created"):
        _optional(data, key, _str, "")
    _optional(data, "unsupported", lambda v, w: _list(v, w, _str), "")
    _optional(data, "coverage", _coverage, "")
    _optional(data, "ranks", lambda v, w: _list(v, w, _rank), "")
    versions = _object(data.get("versions", {}), "versions")
    for key, value in versions.items():
        _str(value, f"versions[{key!r}]")
