"""Table III: complete weights analysis vs exhaustive weight FI, per channel.

For each model: a seeded random 15% of the channels of every analysed layer (the paper's
protocol), kept round-robin over layers within a fault budget (``--fi-faults``; see
``analyses.pick_within_budget``); exhaustive FI of every bit of every weight of those channels
on the analysis batch, run ONCE; then the complete weights analysis of the same channels with
the paper and the extended grid, each with position and fault aggregation, and the fine search
with position aggregation, the first-order weight model (``gradient``) and the package's
default weight model (``equivalent``),
compared channel by channel (MAE, signed mean error, max error, Spearman rho of the CVFs).

Writes ``table3_weights.csv`` (``model, search, aggregate, default, channels, mae, signed_err,
max_abs_err, spearman``; ``default`` marks the package's default), ``table3_weights_pairs.csv`` (one row per channel and variant) and
``table3_weights_coverage.csv`` (what the FI covered and what it cost).

Model sets (``--set``, see ``validation/specs.MODEL_SETS``): ``validation`` (default; every
variant above) and ``default-width``, ``fashion-mnist``, ``transformers`` (the default and the
paper variant only; a few channels per layer within an FI budget in estimated seconds, see
``table3_sets.py``). The CSVs hold the rows of every set found in the cache (columns ``set``,
``dataset``, ``width``, ``input_size``); the coverage CSV says how many channels per layer the FI
covered and under which budget.

Run: ``python validation/table3_weights.py [--quick] [--set NAME,...|all] [--fi-faults N]``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from pytorchfi_deepvigor.analysis.sampling import LayerSites  # noqa: E402
from pytorchfi_deepvigor.analysis.weights import analyze_weights  # noqa: E402
from pytorchfi_deepvigor.campaigns.exhaustive import ExhaustiveCampaign  # noqa: E402
from pytorchfi_deepvigor.functional.edm import candidate_grid  # noqa: E402
from pytorchfi_deepvigor.results import VulnerabilityResult, compare  # noqa: E402
from validation.common import Context, ModelSpec, parse_args  # noqa: E402
from validation.specs import TABLE3_COLUMNS, TABLE3_MODEL_COLUMNS  # noqa: E402
from validation.table3_sets import (  # noqa: E402
    budget_label,
    channel_draw,
    draw,
    fi_wall_seconds,
    merged,
    part_name,
)

COLUMNS = TABLE3_COLUMNS
MODEL_COLUMNS = TABLE3_MODEL_COLUMNS
PAIR_COLUMNS = [
    *MODEL_COLUMNS,
    "search",
    "aggregate",
    "layer",
    "layer_name",
    "channel",
    "cvf_analysis",
    "cvf_fi",
    "abs_err",
]
COVERAGE_COLUMNS = [
    *MODEL_COLUMNS,
    "budget",
    "layers",
    "layers_with_fi",
    "channels_15pct",
    "channels_fi",
    "channels_per_layer",
    "faults_fi",
    "fi_seconds",
    "analysis_seconds",
    "seed",
]
VARIANTS = [
    *((s, a) for s in ("paper", "extended") for a in ("position", "fault")),
    ("fine", "position"),
    ("fine", "gradient"),
    ("fine", "equivalent"),
]
DEFAULT = ("fine", "equivalent")  # DeepVigorAnalyzer.analyze's default
PAPER = ("paper", "position")
FULL_BUDGET, QUICK_BUDGET = 200_000, 6_000


def fi_channels(ctx: Context, spec: ModelSpec, budget: int) -> tuple[dict[int, list[int]], int]:
    """The FI channels per layer and how many the draw held (15%, or the set's per layer)."""
    engine = ctx.engine(spec)
    rng = np.random.default_rng(ctx.seed)
    candidates = {}
    for num in ctx.layers(spec):
        info = engine.layer(num)
        drawn = channel_draw(ctx, spec, info.out_channels, rng)
        candidates[num] = [(c, info.fan_in * 32) for c in drawn]
    picks = draw(ctx, spec, "weights", budget, candidates, rng)
    return {n: sorted(c) for n, c in picks.items()}, sum(len(v) for v in candidates.values())


def analysis_of(
    ctx: Context, spec: ModelSpec, picks: dict[int, list[int]], search: str, aggregate: str
) -> VulnerabilityResult:
    """Complete weights analysis (every position) of exactly the picked channels."""
    engine = ctx.engine(spec)
    grid = candidate_grid(search)
    layers = []
    for num, channels in picks.items():
        info = engine.layer(num)
        sites = LayerSites(
            num, np.asarray(channels, dtype=np.int64), None, info.neurons_per_channel
        )
        layers.append(analyze_weights(engine, info, sites, grid, aggregate=aggregate)[0])
    return VulnerabilityResult.from_layers(
        "deepvigor",
        layers,
        n_images=engine.num_images,
        model_name=spec.key,
        options={"search": search},
    )


def _budget_tag(ctx: Context, spec: ModelSpec, budget: int) -> str:
    """``f<faults>`` (the validation set) or ``t<seconds>-c<channels per layer>``."""
    return part_name("table3_weights", ctx, spec, "weights", budget).split("-", 1)[1]


def run_model(ctx: Context, spec: ModelSpec, budget: int) -> dict[str, list[dict]]:
    engine = ctx.engine(spec)
    picks, n_drawn = fi_channels(ctx, spec, budget)
    started = time.perf_counter()
    progress_dir = (
        ctx.cache_dir
        / "progress"
        / f"{spec.tag}-n{ctx.n_images}-s{ctx.seed}-{_budget_tag(ctx, spec, budget)}"
    )
    fi = ExhaustiveCampaign(engine).run(
        "weights",
        layers=sorted(picks),
        channels=picks,
        seed=ctx.seed,
        progress_dir=progress_dir,
        progress=True,
    )
    fi_seconds = fi_wall_seconds(progress_dir, "weights", time.perf_counter() - started)
    started = time.perf_counter()
    rows, pairs = [], []
    names = {x.layer_num: x.name for x in fi.layers}
    variants = VARIANTS if ctx.quick or ctx.model_set(spec).all_variants else [PAPER, DEFAULT]
    for search, aggregate in variants:
        cmp = compare(analysis_of(ctx, spec, picks, search, aggregate), fi, target="weights")
        rows.append(
            {
                "model": spec.label,
                "search": search,
                "aggregate": aggregate,
                "default": "yes" if (search, aggregate) == DEFAULT else "",
                "channels": cmp.n_channels,
                "mae": cmp.mae,
                "signed_err": sum(p.a - p.b for p in cmp.pairs) / len(cmp.pairs),
                "max_abs_err": cmp.max_abs_err,
                "spearman": cmp.spearman,
            }
        )
        pairs += [
            {
                "model": spec.label,
                "search": search,
                "aggregate": aggregate,
                "layer": p.layer_num,
                "layer_name": names[p.layer_num],
                "channel": p.channel,
                "cvf_analysis": p.a,
                "cvf_fi": p.b,
                "abs_err": abs(p.a - p.b),
            }
            for p in cmp.pairs
        ]
    coverage = {
        "model": spec.label,
        "budget": budget_label(ctx, spec, "weights", budget),
        "layers": len(ctx.layers(spec)),
        "layers_with_fi": len(picks),
        "channels_15pct": n_drawn,
        "channels_fi": sum(len(v) for v in picks.values()),
        "faults_fi": fi.cost.faults,
        "fi_seconds": fi_seconds,
        "analysis_seconds": time.perf_counter() - started,
        "seed": ctx.seed,
    }
    return {"rows": rows, "pairs": pairs, "coverage": [coverage]}


def main(argv: list[str] | None = None) -> None:
    ctx = parse_args(
        __doc__.splitlines()[0],
        argv,
        extra=[("--fi-faults", int, None, "fault budget of the FI per model")],
    )
    budget = ctx.extra["fi_faults"] or (QUICK_BUDGET if ctx.quick else FULL_BUDGET)
    computed = {
        spec.tag: ctx.part(
            part_name("table3_weights", ctx, spec, "weights", budget),
            spec,
            lambda s=spec: run_model(ctx, s, budget),
        )
        for spec in ctx.models
    }
    parts = merged(ctx, "table3_weights", "weights", budget, computed)
    ctx.write_table("table3_weights", COLUMNS, [r for p in parts for r in p["rows"]])
    ctx.write_table("table3_weights_pairs", PAIR_COLUMNS, [r for p in parts for r in p["pairs"]])
    ctx.write_table(
        "table3_weights_coverage", COVERAGE_COLUMNS, [r for p in parts for r in p["coverage"]]
    )


if __name__ == "__main__":
    main()
