"""Run the whole validation: every table and figure, then REPORT.md.

Each step is its own script (see README.md), run as a subprocess. With ``--jobs 2`` (default)
the models are split into two groups of about equal cost that run side by side; every step
caches its per-model results, so a final pass over all models only merges them into the
tables, and a rerun after a crash resumes.

Run: ``python validation/run_all.py [--quick] [--jobs N] [--only STEP,...]``
(full mode: about 15 minutes on an idle 2-core CPU, more under load; outputs in ``validation/results/``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from validation.specs import FULL_MODELS, MODEL_SETS, QUICK_MODELS  # noqa: E402

STEPS = (
    "table3_weights",
    "table3_activations",
    "table4_sampling",
    "table5_6_sims",
    "times",
    "figures",
)
COST_HINT = {
    "vgg11": 1.0,
    "vgg16": 2.0,
    "resnet18": 1.5,
    "mobilenetv2": 2.5,
    "vit": 1.5,
    "convnext": 1.5,
}
TABLE3_STEPS = ("table3_weights", "table3_activations")


def groups(keys: list[str], jobs: int) -> list[list[str]]:
    """Models split into ``jobs`` groups of about equal cost (largest first, greedy)."""
    out: list[list[str]] = [[] for _ in range(max(1, min(jobs, len(keys))))]
    load = [0.0] * len(out)
    for key in sorted(keys, key=lambda k: -COST_HINT.get(k, 1.0)):
        i = load.index(min(load))
        out[i].append(key)
        load[i] += COST_HINT.get(key, 1.0)
    return [sorted(g, key=keys.index) for g in out]


def run(
    step: str, common: list[str], models: list[str] | None, log: list[str], sets: str = ""
) -> None:
    command = [sys.executable, str(HERE / f"{step}.py"), *common]
    if sets and step in TABLE3_STEPS:
        command += ["--set", sets]
    elif models and sets:  # the other tables run the validation set only
        models = [m for m in models if m in {x.key for x in FULL_MODELS}]
        if not models:
            log.append(f"{step}: no validation-set model in this group")
            return
    if models:
        command += ["--models", ",".join(models)]
    started = time.perf_counter()
    print(f"$ {' '.join(command[1:])}", flush=True)
    done = subprocess.run(command, check=False)
    line = (
        f"{step} {models or 'all'}: exit {done.returncode} in {time.perf_counter() - started:.0f} s"
    )
    print(line, flush=True)
    log.append(line)
    if done.returncode:
        raise SystemExit(f"validation step failed: {line}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", default=None, help=f"comma-separated steps of {STEPS} or report")
    parser.add_argument(
        "--table3-sets",
        default="validation",
        help="model sets of Table III (see specs.MODEL_SETS; 'all' adds the zoo's default "
        "widths, Fashion-MNIST and the transformers: about an hour more on 2 cores)",
    )
    args = parser.parse_args(argv)
    if args.quick and args.out is None:
        parser.error("--quick needs --out (a folder for the smoke-run outputs)")
    common = ["--seed", str(args.seed)]
    common += ["--quick"] if args.quick else []
    common += ["--out", str(args.out)] if args.out else []
    common += ["--cache-dir", str(args.cache_dir)] if args.cache_dir else []
    steps = [s for s in STEPS if args.only is None or s in args.only.split(",")]
    keys = [m.key for m in (QUICK_MODELS if args.quick else FULL_MODELS)]
    sets = "" if args.quick else args.table3_sets
    if sets and sets != "validation":
        names = list(MODEL_SETS) if sets == "all" else sets.split(",")
        keys += [m.key for n in names for m in MODEL_SETS[n].models if m.key not in keys]
    started, log = time.perf_counter(), []

    def chain(models: list[str]) -> None:
        for step in steps:
            run(step, common, models, log, sets)

    parts = groups(keys, args.jobs)
    if len(parts) > 1 and steps:
        threads = [threading.Thread(target=chain, args=(g,)) for g in parts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if len(log) < len(steps) * len(parts):
            raise SystemExit("a validation step failed; see the output above")
    for step in steps:  # merge the cached per-model parts into the tables (computes if missing)
        run(step, common, None, log, sets)
    if args.only is None or "report" in args.only.split(","):
        out = ["--out", str(args.out)] if args.out else []
        run("report", out, None, log)
    print(f"validation finished in {time.perf_counter() - started:.0f} s:", *log, sep="\n  ")


if __name__ == "__main__":
    main()
