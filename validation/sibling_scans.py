"""What scanning a sibling row from below its target's band saves, and what it changes (issue 22).

The fine VV search checks each (target, image, sign) row at its largest member; where a row is
not monotone (a band of critical candidates below a non-critical largest one), the target's rows
that found no critical candidate are scanned too. ``analysis.probing.SIBLING_MARGIN`` (8: two
octaves of the fine grid) starts those scans that far below the lowest band start of the
target's failing rows; ``None`` scans whole rows (the code before). For each model and target:
the 10% sampled analysis (seed 0) with both settings on the same engine, its image-evaluations
and seconds, and how far the CVFs move (points) with the margin against whole rows.

Run: ``python validation/sibling_scans.py [--set validation,transformers]`` (about 20 minutes
on one thread). Writes ``sibling_scans.csv`` and ``sibling_scans.md``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from pytorchfi_deepvigor import DeepVigorAnalyzer  # noqa: E402
from pytorchfi_deepvigor.analysis import probing  # noqa: E402
from validation.common import parse_args  # noqa: E402

COLUMNS = ["model", "target", "margin", "image_evaluations", "seconds", "image_evaluations_whole",
           "seconds_whole", "saved", "max_cvf_change_pts", "mean_cvf_change_pts", "channels"]  # fmt: skip
RATIO = 0.1


def _run(engine, target: str, margin: int | None) -> tuple[np.ndarray, int, float]:  # type: ignore[no-untyped-def]
    probing.SIBLING_MARGIN = margin
    started = time.perf_counter()
    result = DeepVigorAnalyzer(engine).analyze(target=target, sampling=RATIO, seed=0)
    seconds = time.perf_counter() - started
    cvf = np.concatenate([np.asarray(layer.cvf) for layer in result.layers])
    return cvf, result.cost.image_evaluations, seconds


def main(argv: list[str] | None = None) -> None:
    ctx = parse_args(__doc__.splitlines()[0], argv)
    margin = probing.SIBLING_MARGIN
    rows = []
    try:
        for spec in ctx.models:
            engine = ctx.engine(spec)
            for target in ("weights", "activations"):
                whole, n_whole, s_whole = _run(engine, target, None)
                banded, n_band, s_band = _run(engine, target, margin)
                change = 100 * np.abs(banded - whole)
                rows.append({
                    "model": spec.label, "target": target, "margin": margin,
                    "image_evaluations": n_band, "seconds": s_band,
                    "image_evaluations_whole": n_whole, "seconds_whole": s_whole,
                    "saved": 1 - n_band / n_whole, "max_cvf_change_pts": float(change.max()),
                    "mean_cvf_change_pts": float(change.mean()), "channels": int(change.size),
                })  # fmt: skip
                r = rows[-1]
                print(f"  {spec.label} {target}: {n_whole:,} -> {n_band:,} image-evaluations "
                      f"({100 * r['saved']:.0f}% saved), {s_whole:.1f} -> {s_band:.1f} s, CVFs "
                      f"moved {r['max_cvf_change_pts']:.4f} points at most", flush=True)  # fmt: skip
    finally:
        probing.SIBLING_MARGIN = margin
    ctx.write_table("sibling_scans", COLUMNS, rows)
    lines = [
        "| model | target | image-evaluations, whole rows -> margin | saved | seconds | largest "
        "CVF change (points) | mean | channels |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['target']} | {r['image_evaluations_whole']:,} -> "
            f"{r['image_evaluations']:,} | {100 * r['saved']:.0f}% | {r['seconds_whole']:.1f} -> "
            f"{r['seconds']:.1f} | {r['max_cvf_change_pts']:.4f} | "
            f"{r['mean_cvf_change_pts']:.5f} | {r['channels']} |"
        )
    path = ctx.out / "sibling_scans.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
