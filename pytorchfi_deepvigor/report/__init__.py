"""Rendering of results: text tables, CSV files, JSON files and PNG plots.

The only module of the package, with the CLI, that writes files. Everything here takes a
:class:`~pytorchfi_deepvigor.results.VulnerabilityResult` (or a
:class:`~pytorchfi_deepvigor.results.Comparison`) and renders it; nothing is computed that the
result does not already hold.

Files written by :func:`write_report` into one folder:

- ``result.json``: the whole typed result, :meth:`VulnerabilityResult.to_json` (versioned
  schema: ``schema_version``, see :mod:`pytorchfi_deepvigor.results`); read it back with
  :meth:`VulnerabilityResult.from_json`.
- ``layers.csv``: one row per (layer, target): :data:`LAYER_COLUMNS`.
- ``channels.csv``: one row per (layer, target, channel): :data:`CHANNEL_COLUMNS`.
- ``neurons.csv``: one row per analysed neuron, only when the result has per-neuron VFs.
- ``bits.csv``: the VF of each bit (each mask of the fault model) per (layer, target), where
  the result has bit maps: :data:`BIT_COLUMNS`.
- ``lvf.png`` (LVF per layer and target) and ``mvf.png`` (MVF of activations, weights, total);
  ``bit_vf.png``: the bit maps as a heat map (rows: layer and target, columns: bits).

:func:`write_comparison` writes ``comparison.json`` (:data:`COMPARISON_FORMAT`, version
:data:`COMPARISON_SCHEMA_VERSION`: the two results' identities with the (layer, target) pairs
compared, the differences :func:`~pytorchfi_deepvigor.results.compare` warned about, MAE / max
error / Spearman per
target and overall, and every channel pair), ``pairs.csv`` and ``cvf_scatter.png``.

Example:
    >>> from pytorchfi_deepvigor.results import LayerResult, VulnerabilityResult
    >>> layer = LayerResult(layer_num=0, name="conv1", kind="Conv2d", target="weights",
    ...                     n_neurons=16, n_weights=9, channels=(0, 1), cvf=(0.25, 0.75), lvf=0.5)
    >>> result = VulnerabilityResult.from_layers("deepvigor", [layer], n_images=4)
    >>> print(format_table(result).splitlines()[1])
    layer  name   type    channels  LVF weights
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from pytorchfi_deepvigor.bits import AnyFaultModel, IntegerFlip, bit_field, parse_fault_model
from pytorchfi_deepvigor.report import _plots
from pytorchfi_deepvigor.results import (
    Compared,
    Comparison,
    ComparisonWarning,
    VulnerabilityResult,
    WeightCoverage,
    compare,
)

__all__ = [
    "BIT_COLUMNS",
    "CHANNEL_COLUMNS",
    "COMPARISON_FORMAT",
    "COMPARISON_SCHEMA_VERSION",
    "LAYER_COLUMNS",
    "comparison_to_dict",
    "coverage_line",
    "format_comparison",
    "format_rows",
    "format_summary",
    "format_table",
    "bit_rows",
    "layer_rows",
    "plot_bit_vf",
    "plot_cvf_scatter",
    "plot_lvf",
    "plot_mvf",
    "result_fault_model",
    "write_channels_csv",
    "write_comparison",
    "write_json",
    "write_layers_csv",
    "write_report",
]

LAYER_COLUMNS = (
    "layer", "name", "type", "target", "neurons", "weights", "channels", "lvf",
    "faults", "masked", "sdc", "critical", "due", "margin", "cvf_spread",
    "image_evaluations", "batched_forwards", "seconds",
)  # fmt: skip
CHANNEL_COLUMNS = ("layer", "name", "target", "channel", "cvf")
COMPARISON_FORMAT = "pytorchfi-deepvigor comparison"
COMPARISON_SCHEMA_VERSION = 1

plot_lvf = _plots.plot_lvf
plot_bit_vf = _plots.plot_bit_vf
plot_mvf = _plots.plot_mvf
plot_cvf_scatter = _plots.plot_cvf_scatter

_SHORT = {"activations": "act", "weights": "weights", "stored": "stored"}
_ORDER = ("activations", "weights", "stored")


def _num(value: float | None, digits: int = 5) -> str:
    if value is None:
        return "-"
    return "nan" if math.isnan(value) else f"{value:.{digits}f}"


def layer_rows(result: VulnerabilityResult) -> list[dict[str, Any]]:
    """One plain dict per (layer, target), keys :data:`LAYER_COLUMNS` (``None`` where absent)."""
    rows = []
    for x in sorted(result.layers, key=lambda x: (x.layer_num, _ORDER.index(x.target))):
        counts, cost = x.counts, x.cost
        rows.append(
            {
                "layer": x.layer_num,
                "name": x.name,
                "type": x.kind,
                "target": x.target,
                "neurons": x.n_neurons,
                "weights": x.n_weights,
                "channels": len(x.channels),
                "lvf": x.lvf,
                "faults": x.n_faults,
                "masked": None if counts is None else counts.masked,
                "sdc": None if counts is None else counts.sdc,
                "critical": None if counts is None else counts.critical,
                "due": None if counts is None else counts.due,
                "margin": x.margin,
                "cvf_spread": x.cvf_spread,
                "image_evaluations": None if cost is None else cost.image_evaluations,
                "batched_forwards": None if cost is None else cost.batched_forwards,
                "seconds": None if cost is None else cost.wall_time_s,
            }
        )
    return rows


def format_rows(header: Sequence[str], rows: Sequence[Sequence[object]], left: int = 1) -> str:
    """A plain-text table: columns padded to their widest cell, the first ``left`` left-aligned.

    Example:
        >>> print(format_rows(["name", "n"], [["a", 1], ["bcd", 22]]))
        name   n
        a      1
        bcd   22
    """
    return "\n".join(_aligned(header, rows, left))


def _aligned(header: Sequence[object], rows: Sequence[Sequence[object]], left: int) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [
            str(c).ljust(w) if i < left else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def _title(result: VulnerabilityResult) -> str:
    what = "DeepVigor+ analysis" if result.method == "deepvigor" else f"{result.method} FI"
    model = f" of {result.model_name}" if result.model_name else ""
    opts = result.options
    extra = []
    if result.method == "deepvigor":
        sampling = opts.get("sampling")
        extra.append("complete" if sampling is None else f"sampling {sampling:g}")
        extra.append(f"search {opts.get('search')}")
    elif result.method.startswith("sfi-") and "e" in opts:
        extra.append(f"e {opts['e']:g}, t {opts['t']:g}")
    if opts.get("channel_ratio") is not None:
        extra.append(f"channel ratio {opts['channel_ratio']:g}")
    if opts.get("fault_model") not in (None, "flip"):
        extra.append(f"fault model {opts['fault_model']}")
    if opts.get("number_format") not in (None, "fp32"):
        extra.append(f"{opts['number_format']} words")
    return (
        f"{what}{model} on {result.n_images} images ({'; '.join([f'seed {result.seed}', *extra])})"
    )


def format_table(result: VulnerabilityResult) -> str:
    """The per-layer table: layer, name, type, channels analysed, LVF per target (and FI columns).

    ``channels`` is the number of channels analysed (``act/weights`` when the targets differ).

    FI results add the faults injected per layer and, for SFI, the achieved margin of each LVF.
    """
    targets = [t for t in _ORDER if any(x.target == t for x in result.layers)]
    by_layer: dict[int, dict[str, Any]] = {}
    for x in result.layers:
        entry = by_layer.setdefault(x.layer_num, {"layer": x, "targets": {}})
        entry["targets"][x.target] = x
    fi = any(x.n_faults is not None for x in result.layers)
    sfi = any(x.margin is not None for x in result.layers)
    header = ["layer", "name", "type", "channels"] + [f"LVF {_SHORT[t]}" for t in targets]
    header += ["faults"] if fi else []
    header += ["margin"] if sfi else []
    rows = []
    for num in sorted(by_layer):
        first, per = by_layer[num]["layer"], by_layer[num]["targets"]
        counts = list(dict.fromkeys(len(per[t].channels) for t in targets if t in per))
        channels = "/".join(map(str, counts))  # one number when every target has as many
        row = [str(num), first.name, first.kind, channels]
        row += [_num(per[t].lvf) if t in per else "-" for t in targets]
        if fi:
            row.append(str(sum(per[t].n_faults or 0 for t in per)))
        if sfi:
            row.append(max((_num(per[t].margin, 4) for t in per if per[t].margin is not None),
                           default="-"))  # fmt: skip
        rows.append(row)
    return "\n".join([_title(result), *_aligned(header, rows, left=3)])


def format_summary(result: VulnerabilityResult) -> str:
    """MVFs (activations, weights, total of Eq. 15), cost, and the layers that were not analysable."""
    parts = [
        f"MVF {name} {_num(value)}"
        for name, value in (
            ("activations", result.mvf_activations),
            ("weights", result.mvf_weights),
            ("total (Eq. 15)", result.mvf_total),
        )
        if value is not None
    ]
    stored = [x.lvf for x in result.layers if x.target == "stored"]
    if stored:  # not part of Eq. 15: the mean over layers, named as such
        parts.append(f"mean LVF stored {_num(sum(stored) / len(stored))}")
    cost = result.cost
    lines = [
        "   ".join(parts) if parts else "no MVF (no layer analysed)",
        f"cost: {cost.batched_forwards:,} batched forwards, {cost.image_evaluations:,} "
        f"image-evaluations, {cost.backwards:,} backwards, {cost.faults:,} faults, "
        f"{cost.wall_time_s:.1f} s",
    ]
    if result.coverage is not None:
        lines.append(coverage_line(result.coverage))
        shown = result.coverage.missing[:5]
        lines += [f"  not covered: {m}" for m in shown]
        if len(result.coverage.missing) > len(shown):
            lines.append(f"  ... and {len(result.coverage.missing) - len(shown)} more tensors")
        if result.coverage.other:
            lines.append(
                f"not weights (added, indexed or scaled by; not fault sites): "
                f"{len(result.coverage.other)} tensors, e.g. {result.coverage.other[0]}"
            )
    if result.unsupported:
        lines.append("not analysed (unsupported layer types): " + ", ".join(result.unsupported))
    return "\n".join(lines)


def coverage_line(coverage: WeightCoverage) -> str:
    """One line: the share of the model's weight elements that are fault sites, loud when it
    is below 100%.

    Example:
        >>> print(coverage_line(WeightCoverage(total=200, covered=150, missing=("a", "b"))))
        WEIGHT COVERAGE 75.00%: 50 of the model's 200 weight elements (2 tensors) are not fault sites
    """
    if coverage.complete:
        return f"weight coverage 100%: every one of the model's {coverage.total:,} weight elements"
    return (
        f"WEIGHT COVERAGE {100 * coverage.fraction:.2f}%: "
        f"{coverage.total - coverage.covered:,} of the model's {coverage.total:,} weight "
        f"elements ({len(coverage.missing)} tensors) are not fault sites"
    )


def _write_csv(path: Path, columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return path


def write_layers_csv(result: VulnerabilityResult, path: str | Path) -> Path:
    """Write ``layers.csv`` (:data:`LAYER_COLUMNS`; empty cells where a value is absent)."""
    return _write_csv(Path(path), LAYER_COLUMNS, layer_rows(result))


def write_channels_csv(result: VulnerabilityResult, path: str | Path) -> Path:
    """Write ``channels.csv``: one row per channel of every (layer, target)."""
    rows = (
        {"layer": x.layer_num, "name": x.name, "target": x.target, "channel": c, "cvf": v}
        for x in result.layers
        for c, v in zip(x.channels, x.cvf, strict=True)
    )
    return _write_csv(Path(path), CHANNEL_COLUMNS, rows)


def _write_neurons_csv(result: VulnerabilityResult, path: Path) -> Path | None:
    rows = [
        {"layer": x.layer_num, "name": x.name, "target": x.target, "channel": n[0],
         "row": n[1], "col": n[2], "nvf": v}
        for x in result.layers
        if x.neurons is not None and x.nvf is not None
        for n, v in zip(x.neurons, x.nvf, strict=True)
    ]  # fmt: skip
    if not rows:
        return None
    columns = ("layer", "name", "target", "channel", "row", "col", "nvf")
    return _write_csv(path, columns, rows)


def result_fault_model(result: VulnerabilityResult) -> AnyFaultModel:
    """The fault model a result records (single float32 bit flips when it records none)."""
    fmt = str(result.options.get("number_format") or "fp32")
    if fmt == "int8":  # an int8 network's stored words (values read as float32)
        return IntegerFlip()
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[fmt]
    return parse_fault_model(str(result.options.get("fault_model") or "flip"), dtype)


def bit_rows(result: VulnerabilityResult) -> list[dict[str, Any]]:
    """One row per (layer, target, mask) of the layers with a bit map (:data:`BIT_COLUMNS`)."""
    model = result_fault_model(result)
    rows = []
    for x in result.layers:
        if x.bit_vf is None or len(x.bit_vf) != len(model.masks):
            continue
        for m, vf in enumerate(x.bit_vf):
            bits = model.pattern_bits(m * model.multiplicity)
            fields = (
                ["int8"]  # an 8-bit integer word: no IEEE fields
                if isinstance(model, IntegerFlip)
                else sorted({bit_field(b, model.dtype) for b in bits})
            )
            rows.append(
                {"layer": x.layer_num, "name": x.name, "target": x.target, "mask": m,
                 "bits": "+".join(str(b) for b in bits), "field": "+".join(fields),
                 "bit_vf": vf}
            )  # fmt: skip
    return rows


BIT_COLUMNS = ("layer", "name", "target", "mask", "bits", "field", "bit_vf")
"""``bits.csv``: the VF of each mask of the fault model (each bit, for single-bit models)."""


def write_json(result: VulnerabilityResult, path: str | Path) -> Path:
    """Write the whole result as strict JSON (``VulnerabilityResult.to_json``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    result.to_json(path)
    return path


def write_report(result: VulnerabilityResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``result.json``, ``layers.csv``, ``channels.csv`` (``neurons.csv``) and the plots.

    Returns:
        File kind -> path of every file written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "result": write_json(result, out / "result.json"),
        "layers": write_layers_csv(result, out / "layers.csv"),
        "channels": write_channels_csv(result, out / "channels.csv"),
    }
    neurons = _write_neurons_csv(result, out / "neurons.csv")
    if neurons is not None:
        files["neurons"] = neurons
    bits = bit_rows(result)
    if bits:
        files["bits"] = _write_csv(out / "bits.csv", BIT_COLUMNS, bits)
    if result.layers:
        files["lvf_plot"] = plot_lvf(result, out / "lvf.png")
        files["mvf_plot"] = plot_mvf(result, out / "mvf.png")
    if bits:
        files["bit_plot"] = plot_bit_vf(bits, _title(result), out / "bit_vf.png")
    return files


def _comparisons(a: VulnerabilityResult, b: VulnerabilityResult) -> dict[str, Comparison]:
    """Comparison per target present in both, plus ``"all"`` when there are several."""
    overall = compare(a, b)  # raises what makes them incomparable, warns once on differences
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ComparisonWarning)
        for target in _ORDER:
            try:
                out[target] = compare(a, b, target=target)
            except ValueError:
                continue
    if len(out) > 1:
        out["all"] = overall
    return out


def _json_float(value: float) -> float | str:
    return value if math.isfinite(value) else ("NaN" if math.isnan(value) else str(value))


def _compared(side: Compared | None) -> list[list[Any]]:
    return [] if side is None else [list(pair) for pair in side.layers]


def comparison_to_dict(a: VulnerabilityResult, b: VulnerabilityResult) -> dict[str, Any]:
    """The comparison of two results as a JSON-ready dict (the ``comparison.json`` schema)."""
    per = _comparisons(a, b)
    ident = ("method", "model_name", "n_images", "seed", "created")
    overall = per.get("all") or next(iter(per.values()))
    return {
        "format": COMPARISON_FORMAT,
        "schema_version": COMPARISON_SCHEMA_VERSION,
        "a": {**{k: getattr(a, k) for k in ident}, "layers": _compared(overall.a)},
        "b": {**{k: getattr(b, k) for k in ident}, "layers": _compared(overall.b)},
        "warnings": list(overall.warnings),
        "targets": {
            t: {
                "mae": _json_float(c.mae),
                "max_abs_err": _json_float(c.max_abs_err),
                "spearman": _json_float(c.spearman),
                "n_channels": c.n_channels,
            }
            for t, c in per.items()
        },
        "pairs": [
            {"layer": p.layer_num, "target": p.target, "channel": p.channel, "a": p.a, "b": p.b}
            for p in overall.pairs
        ],
    }


def format_comparison(a: VulnerabilityResult, b: VulnerabilityResult) -> str:
    """CVF agreement per target (MAE, max error, Spearman), MVFs and costs side by side."""
    per = _comparisons(a, b)
    rows = [
        [t, str(c.n_channels), _num(c.mae), _num(c.max_abs_err), _num(c.spearman, 3)]
        for t, c in per.items()
    ]
    lines = [
        f"A: {a.method} {a.model_name} ({a.created})",
        f"B: {b.method} {b.model_name} ({b.created})",
    ]
    lines += _aligned(["target", "channels", "MAE", "max |A-B|", "Spearman"], rows, left=1)
    mvf_rows = [
        [name, _num(getattr(a, field)), _num(getattr(b, field))]
        for name, field in (
            ("MVF activations", "mvf_activations"),
            ("MVF weights", "mvf_weights"),
            ("MVF total", "mvf_total"),
        )
        if getattr(a, field) is not None or getattr(b, field) is not None
    ]
    mvf_rows.append(
        ["image-evaluations", f"{a.cost.image_evaluations:,}", f"{b.cost.image_evaluations:,}"]
    )
    mvf_rows.append(["wall time (s)", f"{a.cost.wall_time_s:.1f}", f"{b.cost.wall_time_s:.1f}"])
    return "\n".join([*lines, "", *_aligned(["", "A", "B"], mvf_rows, left=1)])


def write_comparison(
    a: VulnerabilityResult, b: VulnerabilityResult, out_dir: str | Path
) -> dict[str, Path]:
    """Write ``comparison.json``, ``pairs.csv`` and ``cvf_scatter.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = comparison_to_dict(a, b)
    path = out / "comparison.json"
    path.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    pairs = _write_csv(out / "pairs.csv", ("layer", "target", "channel", "a", "b"), data["pairs"])
    scatter = plot_cvf_scatter(a, b, out / "cvf_scatter.png")
    return {"comparison": path, "pairs": pairs, "cvf_scatter": scatter}
