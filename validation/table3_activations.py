"""Table III for activations (new): activations analysis vs exhaustive operand FI, per neuron.

For each model: a seeded random 15% of the channels of every analysed layer and one seeded
output neuron in each, kept round-robin over layers within a fault budget (``--fi-faults``);
exhaustive FI of every bit of every operand of those neurons (the operand fault model the
activations analysis models), run ONCE; then the activations analysis of exactly those neurons
with the paper, the extended and the fine search (the default). With one neuron per channel the CVF is the neuron's NVF,
so the comparison is neuron by neuron (``aggregate`` is ``n/a``: it applies to weights only).

Writes ``table3_activations.csv`` (``model, search, aggregate, default, channels, mae,
signed_err, max_abs_err, spearman``), ``table3_activations_pairs.csv`` and ``table3_activations_coverage.csv``.

Model sets (``--set``) as in ``table3_weights.py``: the other sets run the paper and the fine
search only, one neuron in each of a few channels per layer within an FI budget in estimated
seconds.

Run: ``python validation/table3_activations.py [--quick] [--set NAME,...|all] [--fi-faults N]``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from pytorchfi_deepvigor.analysis.activations import analyze_activations  # noqa: E402
from pytorchfi_deepvigor.analysis.sampling import LayerSites  # noqa: E402
from pytorchfi_deepvigor.campaigns.exhaustive import ExhaustiveCampaign  # noqa: E402
from pytorchfi_deepvigor.campaigns.faults import operand_sites  # noqa: E402
from pytorchfi_deepvigor.catalogue import LayerInfo  # noqa: E402
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
    "layer",
    "layer_name",
    "channel",
    "row",
    "col",
    "nvf_analysis",
    "nvf_fi",
    "abs_err",
]
COVERAGE_COLUMNS = [
    *MODEL_COLUMNS,
    "budget",
    "layers",
    "layers_with_fi",
    "neurons_15pct",
    "neurons_fi",
    "channels_per_layer",
    "faults_fi",
    "fi_seconds",
    "analysis_seconds",
    "seed",
]
FULL_BUDGET, QUICK_BUDGET = 200_000, 4_000


def fi_neurons(ctx: Context, spec: ModelSpec, budget: int) -> tuple[dict[int, list], int]:
    """Per layer the FI neurons ``(channel, position)`` and how many the 15% draw held."""
    engine = ctx.engine(spec)
    rng = np.random.default_rng(ctx.seed)
    candidates = {}
    for num in ctx.layers(spec):
        info = engine.layer(num)
        per = info.neurons_per_channel
        items = []
        for c in channel_draw(ctx, spec, info.out_channels, rng):
            p = int(rng.integers(per))
            faults = 32 * len(operand_sites(info, np.array([c * per + p])))
            if faults:  # a neuron that reads only padding has no operand fault
                items.append(((c, p), faults))
        candidates[num] = items
    picks = draw(ctx, spec, "operands", budget, candidates, rng)
    return {n: sorted(v) for n, v in picks.items()}, sum(len(v) for v in candidates.values())


def analysis_of(
    ctx: Context, spec: ModelSpec, picks: dict[int, list], search: str
) -> VulnerabilityResult:
    """Activations analysis of exactly the picked neurons (one per channel)."""
    engine = ctx.engine(spec)
    grid = candidate_grid(search)
    layers = []
    for num, neurons in picks.items():
        info = engine.layer(num)
        channels = np.array([c for c, _ in neurons], dtype=np.int64)
        positions = np.array([[p] for _, p in neurons], dtype=np.int64)
        sites = LayerSites(num, channels, positions, info.neurons_per_channel)
        layers.append(analyze_activations(engine, info, sites, grid)[0])
    return VulnerabilityResult.from_layers(
        "deepvigor",
        layers,
        n_images=engine.num_images,
        model_name=spec.key,
        options={"search": search},
    )


def _width(info: LayerInfo) -> int:
    """Positions per row of the neuron layout (as the campaign reads ``(c, h, w)``)."""
    return info.output_shape[2] if len(info.output_shape) == 3 else 1


def _budget_tag(ctx: Context, spec: ModelSpec, budget: int) -> str:
    """``f<faults>`` (the validation set) or ``t<seconds>-c<channels per layer>``."""
    return part_name("table3_activations", ctx, spec, "operands", budget).split("-", 1)[1]


def run_model(ctx: Context, spec: ModelSpec, budget: int) -> dict[str, list[dict]]:
    engine = ctx.engine(spec)
    picks, n_drawn = fi_neurons(ctx, spec, budget)
    neurons = {}
    for num, items in picks.items():
        w = _width(engine.layer(num))
        neurons[num] = [(c, p // w, p % w) for c, p in items]
    started = time.perf_counter()
    progress_dir = (
        ctx.cache_dir
        / "progress"
        / f"{spec.tag}-n{ctx.n_images}-s{ctx.seed}-{_budget_tag(ctx, spec, budget)}"
    )
    fi = ExhaustiveCampaign(engine).run(
        "operands",
        layers=sorted(picks),
        neurons=neurons,
        seed=ctx.seed,
        progress_dir=progress_dir,
        progress=True,
    )
    fi_seconds = fi_wall_seconds(progress_dir, "operands", time.perf_counter() - started)
    started = time.perf_counter()
    rows, pairs = [], []
    names = {x.layer_num: x.name for x in fi.layers}
    searches = ("paper", "extended", "fine")
    if not (ctx.quick or ctx.model_set(spec).all_variants):
        searches = ("paper", "fine")
    for search in searches:
        cmp = compare(analysis_of(ctx, spec, picks, search), fi, target="activations")
        rows.append(
            {
                "model": spec.label,
                "search": search,
                "aggregate": "n/a",
                "default": "yes" if search == "fine" else "",
                "channels": cmp.n_channels,
                "mae": cmp.mae,
                "signed_err": sum(p.a - p.b for p in cmp.pairs) / len(cmp.pairs),
                "max_abs_err": cmp.max_abs_err,
                "spearman": cmp.spearman,
            }
        )
        for p in cmp.pairs:
            ((_, row, col),) = [n for n in neurons[p.layer_num] if n[0] == p.channel]
            pairs.append(
                {
                    "model": spec.label,
                    "search": search,
                    "layer": p.layer_num,
                    "layer_name": names[p.layer_num],
                    "channel": p.channel,
                    "row": row,
                    "col": col,
                    "nvf_analysis": p.a,
                    "nvf_fi": p.b,
                    "abs_err": abs(p.a - p.b),
                }
            )
    coverage = {
        "model": spec.label,
        "budget": budget_label(ctx, spec, "operands", budget),
        "layers": len(ctx.layers(spec)),
        "layers_with_fi": len(picks),
        "neurons_15pct": n_drawn,
        "neurons_fi": sum(len(v) for v in picks.values()),
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
            part_name("table3_activations", ctx, spec, "operands", budget),
            spec,
            lambda s=spec: run_model(ctx, s, budget),
        )
        for spec in ctx.models
    }
    parts = merged(ctx, "table3_activations", "operands", budget, computed)
    ctx.write_table("table3_activations", COLUMNS, [r for p in parts for r in p["rows"]])
    ctx.write_table(
        "table3_activations_pairs", PAIR_COLUMNS, [r for p in parts for r in p["pairs"]]
    )
    ctx.write_table(
        "table3_activations_coverage", COVERAGE_COLUMNS, [r for p in parts for r in p["coverage"]]
    )


if __name__ == "__main__":
    main()
