"""Rendering of hardening plans: tables, CSV files and the MVF-overhead (Pareto) plot.

Reads :mod:`pytorchfi_deepvigor.hardening`'s plans, verifications and curves; computes nothing.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from pytorchfi_deepvigor.hardening import HardeningPlan, Verification
from pytorchfi_deepvigor.report import _plots

__all__ = [
    "format_plan",
    "format_verification",
    "plot_pareto",
    "write_hardening_report",
]

_STYLE = {"planner": "-o", "first-layers": "--s", "weights": ":^", "random": "-.x"}


def _pct(value: float | None, digits: int = 4) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value * 100:.{digits}f}%"


def _csv(path: Path, columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore"
        )
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return path


def protection_rows(plan: HardeningPlan) -> list[dict[str, Any]]:
    """One row per protected layer: TMR channels, ECC bits, clamp."""
    return [
        {
            "layer": p.layer_num,
            "name": p.name,
            "tmr_channels": len(p.tmr_channels),
            "tmr_list": " ".join(map(str, p.tmr_channels)),
            "ecc_bits": " ".join(map(str, p.ecc_bits)),
            "clamp": int(p.clamp),
        }
        for p in plan.layers
    ]


def format_plan(plan: HardeningPlan) -> str:
    """The plan as a table, one line per protected layer, and its summary line."""
    lines = [f"{'layer':>5}  {'name':<28} {'TMR ch':>6}  {'ECC bits':<24} clamp"]
    for row in protection_rows(plan):
        bits = row["ecc_bits"]
        bits = bits if len(bits) <= 24 else bits[:21] + "..."
        lines.append(
            f"{row['layer']:>5}  {row['name'][:28]:<28} {row['tmr_channels']:>6}  {bits:<24} "
            f"{'yes' if row['clamp'] else ''}"
        )
    lines.append(plan.summary())
    return "\n".join(lines)


def format_verification(verification: Verification) -> str:
    """Per layer the predicted, analysed and FI-measured LVFs, and the verdict line."""
    head = (f"{'layer':>5}  {'pred act':>10} {'anal act':>10} {'SFI act':>10}  "
            f"{'pred w':>10} {'anal w':>10} {'SFI w':>10}")  # fmt: skip
    lines = [head]
    for r in verification.layers:
        lines.append(
            f"{r['layer_num']:>5}  {_pct(r.get('predicted_activations')):>10} "
            f"{_pct(r.get('analysis_activations')):>10} {_pct(r.get('sfi_activations')):>10}  "
            f"{_pct(r.get('predicted_weights')):>10} {_pct(r.get('analysis_weights')):>10} "
            f"{_pct(r.get('sfi_weights')):>10}"
        )
    lines.append(verification.summary())
    return "\n".join(lines)


def plot_pareto(rows: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Predicted total MVF against the overhead, one line per (strategy, mechanisms)."""
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    keys = list(dict.fromkeys((r["strategy"], r["mechanisms"]) for r in rows))
    for strategy, mechs in keys:
        mine = sorted((r for r in rows if (r["strategy"], r["mechanisms"]) == (strategy, mechs)),
                      key=lambda r: r["budget"])  # fmt: skip
        ax.plot([100 * r["budget"] for r in mine], [100 * r["predicted_mvf"] for r in mine],
                _STYLE.get(strategy, "-"), label=f"{strategy} ({mechs})", markersize=4)  # fmt: skip
    if rows:
        ax.axhline(100 * rows[0]["baseline_mvf"], color="grey", lw=0.8, label="unprotected")
    ax.set_xlabel("overhead budget (% of MACs and of weight memory)")
    ax.set_ylabel("predicted total MVF (%)")
    ax.set_title(title or "Hardening: MVF against overhead", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    return _plots._save(fig, path)


VERIFY_COLUMNS = (
    "layer_num", "name", "predicted_activations", "analysis_activations", "sfi_activations",
    "sfi_activations_margin", "predicted_weights", "analysis_weights", "sfi_weights",
    "sfi_weights_margin",
)  # fmt: skip
CURVE_COLUMNS = ("strategy", "mechanisms", "budget", "overhead_macs", "overhead_memory",
                 "baseline_mvf", "predicted_mvf", "reduction")  # fmt: skip


def write_hardening_report(
    plan: HardeningPlan,
    out_dir: str | Path,
    verification: Verification | None = None,
    curve: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Path]:
    """Write ``plan.json``, ``protection.csv`` and, when given, ``verification.csv`` and
    ``pareto.csv`` / ``pareto.png``. Returns the paths by name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"plan": out / "plan.json"}
    plan.to_json(files["plan"])
    files["protection"] = _csv(out / "protection.csv",
                               ("layer", "name", "tmr_channels", "tmr_list", "ecc_bits", "clamp"),
                               protection_rows(plan))  # fmt: skip
    if verification is not None:
        files["verification"] = _csv(out / "verification.csv", VERIFY_COLUMNS, verification.layers)
    if curve:
        files["pareto_csv"] = _csv(out / "pareto.csv", CURVE_COLUMNS, curve)
        files["pareto_png"] = plot_pareto(curve, out / "pareto.png")
    return files
