"""JSON encoding, freezing and NaN-aware equality for :mod:`pytorchfi_deepvigor.results`.

See the schema in ``pytorchfi_deepvigor.results``' docstring. Private: the public names live
there.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

import numpy as np

__all__ = ["check_options", "decode", "freeze", "now_iso", "package_versions", "same", "thaw"]

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_ARRAY_KEYS = {"dtype", "shape", "data"}


def now_iso() -> str:
    """The current UTC time, ISO 8601, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def package_versions() -> dict[str, str]:
    """Versions of torch, pytorchfi and this package ("unknown" where not installed)."""
    out = {}
    for name in ("torch", "pytorchfi", "pytorchfi-deepvigor"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


def _float(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def thaw(value: Any) -> Any:
    """Turn a result value into JSON-ready Python (lists, dicts, strings for non-finite floats)."""
    if isinstance(value, np.ndarray):
        data = value.reshape(-1).tolist()
        if value.dtype.kind in "fc":
            data = [_float(x) for x in data]
        return {"dtype": value.dtype.str, "shape": list(value.shape), "data": data}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: thaw(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return _float(value)
    return value


def decode(value: Any) -> Any:
    """Inverse of :func:`thaw` for typed result fields (lists become tuples)."""
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    if isinstance(value, Mapping):
        if set(value) == _ARRAY_KEYS:
            dtype = np.dtype(value["dtype"])
            data = [_NON_FINITE.get(x, x) if isinstance(x, str) else x for x in value["data"]]
            return np.array(data, dtype=dtype).reshape(value["shape"])
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(decode(v) for v in value)
    return value


def check_options(options: Mapping[str, Any], path: str = "options") -> None:
    """Raise when an options mapping holds something that is not a finite JSON value."""
    if not isinstance(options, Mapping):
        raise TypeError(f"expected {path} as a mapping, got {type(options).__name__}")
    for key, value in options.items():
        if not isinstance(key, str):
            raise TypeError(f"expected str keys in {path}, got {key!r}")
        _check_option(value, f"{path}[{key!r}]")


def _check_option(value: Any, path: str) -> None:
    if isinstance(value, Mapping):
        check_options(value, path)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_option(item, f"{path}[{i}]")
    elif isinstance(value, float | np.floating) and not math.isfinite(value):
        raise ValueError(f"expected a finite float in {path}, got {value}")
    elif not isinstance(value, str | int | float | bool | np.generic) and value is not None:
        raise TypeError(
            f"expected JSON values (str, int, float, bool, None, lists, mappings) in {path}, "
            f"got {type(value).__name__}"
        )


def freeze(value: Any) -> Any:
    """Read-only copy of a JSON-like value: mappings become proxies, lists tuples."""
    if isinstance(value, Mapping):
        return types.MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def same(a: Any, b: Any) -> bool:
    """Structural equality where NaN equals NaN and arrays compare by dtype, shape and values."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
            return False
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(
            same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
        )
    if isinstance(a, Mapping):
        return isinstance(b, Mapping) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, tuple | list):
        return (
            isinstance(b, tuple | list)
            and len(a) == len(b)
            and all(same(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)
