"""What the two Table III scripts share: per model set, the FI budget, the part names, the merge.

Table III runs on every model set of :data:`~validation.specs.MODEL_SETS`. The validation set
keeps the paper's protocol (15% of the channels of every layer within a fault budget,
``--fi-faults``); the other sets draw a few channels per layer and keep them round-robin over
the layers, cheapest layer first, while an FI budget in estimated seconds lasts
(``analyses.fi_cost_seconds``), so that as many layers as possible get a channel. At the zoo's
default widths one channel of every layer already costs 20-120 minutes of weight FI on one core
(the suffix of an early layer is most of the network), so the costliest layers go without. Each model's rows are a cached part; the CSVs merge the parts of every set found in
the cache, so running one set never drops the rows of another.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from validation.analyses import draw_channels, fi_cost_seconds, pick_within_budget
from validation.common import MODEL_SETS, Context, ModelSpec

__all__ = [
    "fi_wall_seconds",
    "budget_label",
    "channel_draw",
    "draw",
    "merged",
    "part_name",
    "spec_columns",
]


def part_name(table: str, ctx: Context, spec: ModelSpec, target: str, faults: int) -> str:
    """The cache name of a model's part of ``table``: it names the FI budget."""
    model_set = ctx.model_set(spec)
    seconds = model_set.budget(target, spec)
    if seconds is None or ctx.quick:
        return f"{table}-f{faults}"
    return f"{table}-t{seconds:g}-c{model_set.channels_per_layer}"


def budget_label(ctx: Context, spec: ModelSpec, target: str, faults: int) -> str:
    """The FI budget in words, for the coverage CSV."""
    model_set = ctx.model_set(spec)
    seconds = model_set.budget(target, spec)
    if seconds is None or ctx.quick:
        return f"{faults} faults, 15% of the channels per layer"
    cap = model_set.channels_per_layer
    return f"{seconds:g} s estimated, up to {cap} channel(s) per layer"


def draw(
    ctx: Context,
    spec: ModelSpec,
    target: str,
    faults: int,
    items: dict[int, list[tuple[Any, int]]],
    rng: np.random.Generator,
) -> dict[int, list[Any]]:
    """Keep the drawn FI sites ``{layer: [(site, faults)]}`` that fit the model's budget."""
    model_set = ctx.model_set(spec)
    seconds = model_set.budget(target, spec)
    if seconds is None or ctx.quick:
        return pick_within_budget(items, faults, rng)
    engine = ctx.engine(spec)
    costed = {
        n: [(site, fi_cost_seconds(engine, n, f, target)) for site, f in v]
        for n, v in items.items()
    }
    return pick_within_budget(costed, seconds, rng, cheapest_first=True)


def channel_draw(
    ctx: Context, spec: ModelSpec, n_channels: int, rng: np.random.Generator
) -> list[int]:
    """The channels drawn in a layer: the paper's 15%, or the set's channels per layer."""
    cap = ctx.model_set(spec).channels_per_layer
    if cap is None or ctx.quick:
        return draw_channels(n_channels, 0.15, rng)
    return draw_channels(n_channels, min(1.0, cap / n_channels), rng)[:cap]


def fi_wall_seconds(progress_dir: Path, target: str, seconds: float) -> float:
    """The FI's wall-clock seconds when it ran, not the replay of its finished progress file.

    The first run that finishes writes ``fi-seconds-<target>.json`` beside the progress file; a rerun
    (``--force`` recomputes the analyses and replays the FI in seconds) reads it back.
    """
    path = progress_dir / f"fi-seconds-{target}.json"
    if path.exists():
        return float(json.loads(path.read_text(encoding="utf-8"))["seconds"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"seconds": seconds}) + "\n", encoding="utf-8")
    return seconds


def spec_columns(spec: ModelSpec) -> dict[str, Any]:
    """The CSV columns that say which model a row is: set, data set, width, input size."""
    return {
        "set": spec.set_name,
        "dataset": spec.dataset,
        "width": spec.width_label,
        "input_size": spec.input_size,
    }


def merged(
    ctx: Context, table: str, target: str, faults: int, computed: dict[str, dict]
) -> list[dict[str, list[dict]]]:
    """Parts of every model of every set: computed now, else from the cache; set order."""
    specs = list(ctx.models) if ctx.quick else [m for s in MODEL_SETS.values() for m in s.models]
    out = []
    for spec in specs:
        part = computed.get(spec.tag)
        if part is None:
            part = ctx.cached_part(part_name(table, ctx, spec, target, faults), spec)
        if part is None:
            continue
        extra = spec_columns(spec)
        part = {k: [{**r, **extra} for r in rows] for k, rows in part.items()}
        per_layer: dict[Any, set] = {}
        for p in part["pairs"]:
            per_layer.setdefault(p["layer"], set()).add(p["channel"])
        counts = sorted(len(v) for v in per_layer.values()) or [0]
        for row in part["coverage"]:
            row.setdefault("budget", budget_label(ctx, spec, target, faults))
            row["channels_per_layer"] = (
                f"{counts[0]}" if counts[0] == counts[-1] else f"{counts[0]}-{counts[-1]}"
            )
        out.append(part)
    return out
