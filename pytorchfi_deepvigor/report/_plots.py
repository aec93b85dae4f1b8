"""PNG plots of results, drawn on matplotlib ``Figure`` objects (Agg; no pyplot global state).

Private: use the names re-exported by :mod:`pytorchfi_deepvigor.report`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pytorchfi_deepvigor.results import VulnerabilityResult, compare

__all__ = ["plot_cvf_scatter", "plot_lvf", "plot_mvf"]

_COLOURS = {"activations": "tab:blue", "weights": "tab:orange", "stored": "tab:green"}
_ORDER = tuple(_COLOURS)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def _label(result: VulnerabilityResult) -> str:
    name = f"{result.model_name}, " if result.model_name else ""
    return f"{name}{result.method}, {result.n_images} images"


def plot_lvf(result: VulnerabilityResult, path: str | Path) -> Path:
    """Grouped bars: the LVF of every layer, one bar per target (paper Fig. 8).

    Returns:
        The PNG's path.
    """
    lvfs = {t: {x.layer_num: x.lvf for x in result.layers if x.target == t} for t in _ORDER}
    targets = [t for t in _ORDER if lvfs[t]]
    nums = sorted({x.layer_num for x in result.layers})
    fig = Figure(figsize=(max(5.0, 0.45 * len(nums) * max(1, len(targets)) + 2), 3.6))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(targets))
    for i, target in enumerate(targets):
        lvf = lvfs[target]
        xs = [k + (i - (len(targets) - 1) / 2) * width for k, n in enumerate(nums) if n in lvf]
        ax.bar(xs, [lvf[n] for n in nums if n in lvf], width, label=target, color=_COLOURS[target])
    ax.set_xticks(range(len(nums)), [str(n) for n in nums])
    ax.set_xlabel("layer (PyTorchFI numbering)")
    ax.set_ylabel("LVF")
    ax.set_title(f"Layer vulnerability factor ({_label(result)})", fontsize=9)
    if targets:
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_bit_vf(rows: list[dict], title: str, path: str | Path) -> Path:
    """Heat map of the VF per bit (per mask of the fault model): one row per (layer, target).

    Args:
        rows: :func:`~pytorchfi_deepvigor.report.bit_rows` of a result.
        title: the figure's title (the result's).

    Returns:
        The PNG's path.
    """
    keys = list(dict.fromkeys((r["layer"], r["target"]) for r in rows))
    masks = sorted({r["mask"] for r in rows})
    labels = {r["mask"]: r["bits"] for r in rows}
    grid = np.full((len(keys), len(masks)), np.nan)
    for r in rows:
        grid[keys.index((r["layer"], r["target"])), masks.index(r["mask"])] = r["bit_vf"]
    fig = Figure(figsize=(max(5.0, 0.28 * len(masks) + 2.5), max(2.5, 0.3 * len(keys) + 1.5)))
    ax = fig.add_subplot()
    image = ax.imshow(grid[:, ::-1], aspect="auto", cmap="viridis", vmin=0.0)
    ax.set_xticks(range(len(masks)), [labels[m] for m in masks[::-1]], fontsize=6, rotation=90)
    ax.set_yticks(range(len(keys)), [f"{n} {t[0]}" for n, t in keys], fontsize=6)
    ax.set_xlabel("bit (MSB left)")
    ax.set_ylabel("layer, target (a: activations, w: weights)")
    ax.set_title(f"VF per bit\n{title}", fontsize=7)
    fig.colorbar(image, ax=ax, label="VF")
    return _save(fig, path)


def plot_mvf(result: VulnerabilityResult, path: str | Path) -> Path:
    """Bars: MVF of activations, weights and the total of Eq. 15 (paper Fig. 9)."""
    bars = [
        (name, value, colour)
        for name, value, colour in (
            ("activations", result.mvf_activations, _COLOURS["activations"]),
            ("weights", result.mvf_weights, _COLOURS["weights"]),
            ("total (Eq. 15)", result.mvf_total, "tab:gray"),
        )
        if value is not None
    ]
    fig = Figure(figsize=(4.5, 3.4))
    ax = fig.add_subplot()
    ax.bar([b[0] for b in bars], [b[1] for b in bars], color=[b[2] for b in bars])
    for k, (_, value, _) in enumerate(bars):
        ax.annotate(f"{value:.4f}", (k, value), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("MVF")
    ax.set_title(f"Model vulnerability factor\n({_label(result)})", fontsize=9)
    return _save(fig, path)


def plot_cvf_scatter(
    a: VulnerabilityResult, b: VulnerabilityResult, path: str | Path, *, target: str | None = None
) -> Path:
    """Scatter of the CVFs of the channels in both results (``a`` on x, ``b`` on y), y = x line.

    Raises:
        ValueError: when no channel is present in both results (for ``target``).
    """
    comparison = compare(a, b, target=target)
    fig = Figure(figsize=(4.6, 4.4))
    ax = fig.add_subplot()
    for tgt in _ORDER:
        pairs = [p for p in comparison.pairs if p.target == tgt]
        if pairs:
            ax.scatter([p.a for p in pairs], [p.b for p in pairs], s=14, alpha=0.7,
                       label=f"{tgt} ({len(pairs)})", color=_COLOURS[tgt])  # fmt: skip
    values = np.array([[p.a, p.b] for p in comparison.pairs], dtype=np.float64)
    top = float(np.nanmax(values)) if np.isfinite(values).any() else 1.0
    top = max(top * 1.05, 1e-6)
    ax.plot([0, top], [0, top], color="black", linewidth=0.8, linestyle="--")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel(f"CVF, A: {a.method}")
    ax.set_ylabel(f"CVF, B: {b.method}")
    rho = "n/a" if math.isnan(comparison.spearman) else f"{comparison.spearman:.3f}"
    ax.set_title(
        f"MAE {comparison.mae:.4f}, max {comparison.max_abs_err:.4f}, Spearman {rho}", fontsize=9
    )
    ax.legend(fontsize=8)
    return _save(fig, path)
