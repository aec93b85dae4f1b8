"""Tables VII/VIII: wall-clock of sampled and complete DeepVigor+ analysis, with the machine.

Sampled analyses (5/10/15/20% of the channels) run ``--repeats`` times with seeds
``seed, seed + 1, ...``, each on a fresh engine (the golden run and the per-layer caches are part
of what a user waits for); the complete analysis is the one run of ``analyses.complete`` (its
own recorded wall time, on a fresh engine unless another table used it first). The machine is
shared with other jobs: compare within a row set, as ratios.

Writes ``times.csv``: ``model, target, ratio, repeats, seconds, seconds_min, simulations,
batched_forwards, load_1min, machine`` (``ratio`` is ``complete`` for the complete analysis).

Run: ``python validation/times.py [--quick] [--repeats N]``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from pytorchfi_deepvigor.analysis.analyzer import DeepVigorAnalyzer  # noqa: E402
from validation.analyses import RATIOS, complete  # noqa: E402
from validation.common import Context, ModelSpec, machine, parse_args  # noqa: E402

COLUMNS = [
    "model",
    "target",
    "ratio",
    "repeats",
    "seconds",
    "seconds_min",
    "simulations",
    "batched_forwards",
    "load_1min",
    "machine",
]


def describe_machine() -> str:
    """One line naming the machine: CPU, cores, torch threads, python and torch versions."""
    m = machine()
    return (
        f"{m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch thread(s), "
        f"Python {m['python']}, torch {m['torch']}"
    )


def run_model(ctx: Context, spec: ModelSpec, repeats: int) -> list[dict]:
    model, _ = ctx.model(spec)
    images = ctx.images(spec)
    where = describe_machine()
    rows = []
    for target in ("activations", "weights"):
        for ratio in RATIOS:
            seconds, sims, forwards, loads = [], [], [], []
            for i in range(repeats):
                loads.append(os.getloadavg()[0])
                started = time.perf_counter()
                analyzer = DeepVigorAnalyzer(model, images, model_name=spec.key)
                result = analyzer.analyze(
                    target=target, layers=ctx.layers(spec), sampling=ratio, seed=ctx.seed + i
                )
                seconds.append(time.perf_counter() - started)
                sims.append(result.cost.image_evaluations / result.n_images)
                forwards.append(result.cost.batched_forwards)
            rows.append(
                {
                    "model": spec.label,
                    "target": target,
                    "ratio": ratio,
                    "repeats": repeats,
                    "seconds": float(np.mean(seconds)),
                    "seconds_min": float(np.min(seconds)),
                    "simulations": float(np.mean(sims)),
                    "batched_forwards": float(np.mean(forwards)),
                    "load_1min": float(np.mean(loads)),
                    "machine": where,
                }
            )
        full = complete(ctx, spec, target)
        rows.append(
            {
                "model": spec.label,
                "target": target,
                "ratio": "complete",
                "repeats": 1,
                "seconds": full.cost.wall_time_s,
                "seconds_min": full.cost.wall_time_s,
                "simulations": full.cost.image_evaluations / full.n_images,
                "batched_forwards": full.cost.batched_forwards,
                "load_1min": "",
                "machine": where,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    ctx = parse_args(
        __doc__.splitlines()[0],
        argv,
        extra=[("--repeats", int, None, "timed runs per ratio (default 3; quick 1)")],
    )
    repeats = ctx.extra["repeats"] or (1 if ctx.quick else 3)
    rows = [
        r
        for spec in ctx.models
        for r in ctx.part(f"times-r{repeats}", spec, lambda s=spec: run_model(ctx, s, repeats))
    ]
    ctx.write_table("times", COLUMNS, rows)


if __name__ == "__main__":
    main()
