"""Figures 8-10: LVF per layer, MVF per model, total MVF over 8 batches of 100 images.

* ``fig8_lvf_<model>.png`` (+ ``fig8_lvf.csv``): per layer the LVF of activations, of weights,
  and the layer's term of Eq. 15 ``(N_l LVF_act + W_l LVF_w) / (N_l + W_l)`` (the paper's
  "total LVF"), from the complete analyses.
* ``fig9_mvf.png`` (+ ``fig9_mvf.csv``): MVF of activations, weights and the total MVF (Eq. 15)
  per model, from the complete analyses.
* ``fig10_batches.png`` (+ ``fig10_batches.csv``): the total MVF of the 10% sampled analysis
  (seed ``--seed``) on 8 disjoint batches of 100 test images (batch k = test images
  ``100k .. 100k + 99``; batch 0 is the analysis batch).

Run: ``python validation/figures.py [--quick]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pytorchfi_deepvigor.results import VulnerabilityResult  # noqa: E402
from validation.analyses import complete, layer_map, sampled  # noqa: E402
from validation.common import Context, ModelSpec, parse_args  # noqa: E402

FIG8_COLUMNS = ["model", "layer", "layer_name", "lvf_activations", "lvf_weights", "lvf_total"]
MVF_COLUMNS = ["model", "mvf_activations", "mvf_weights", "mvf_total"]
FIG10_COLUMNS = ["model", "batch", "mvf_activations", "mvf_weights", "mvf_total"]


def _joint(act: VulnerabilityResult, wts: VulnerabilityResult) -> VulnerabilityResult:
    return VulnerabilityResult.from_layers("deepvigor", [*act.layers, *wts.layers])


def layer_rows(ctx: Context, spec: ModelSpec) -> list[dict]:
    act = layer_map(complete(ctx, spec, "activations"), "activations")
    wts = layer_map(complete(ctx, spec, "weights"), "weights")
    rows = []
    for num in sorted(act):
        a, w = act[num], wts[num]
        total = (a.n_neurons * a.lvf + a.n_weights * w.lvf) / (a.n_neurons + a.n_weights)
        rows.append(
            {
                "model": spec.label,
                "layer": num,
                "layer_name": a.name,
                "lvf_activations": a.lvf,
                "lvf_weights": w.lvf,
                "lvf_total": total,
            }
        )
    return rows


def mvf_row(ctx: Context, spec: ModelSpec) -> dict:
    joint = _joint(complete(ctx, spec, "activations"), complete(ctx, spec, "weights"))
    return {
        "model": spec.label,
        "mvf_activations": joint.mvf_activations,
        "mvf_weights": joint.mvf_weights,
        "mvf_total": joint.mvf_total,
    }


def batch_rows(ctx: Context, spec: ModelSpec, batches: int) -> list[dict]:
    rows = []
    for batch in range(batches):
        act = sampled(ctx, spec, "activations", 0.10, ctx.seed, batch)
        joint = _joint(act, sampled(ctx, spec, "weights", 0.10, ctx.seed, batch))
        rows.append(
            {
                "model": spec.label,
                "batch": batch,
                "mvf_activations": joint.mvf_activations,
                "mvf_weights": joint.mvf_weights,
                "mvf_total": joint.mvf_total,
            }
        )
    return rows


def plot_lvf(rows: list[dict], path: Path) -> None:
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(rows) + 2), 3.6))
    for i, (key, label) in enumerate(
        [
            ("lvf_activations", "LVF activations"),
            ("lvf_weights", "LVF weights"),
            ("lvf_total", "LVF total"),
        ]
    ):
        ax.bar(x + (i - 1) * 0.27, [100 * r[key] for r in rows], width=0.27, label=label)
    ax.set_xticks(x, [str(r["layer"]) for r in rows], fontsize=7)
    ax.set(xlabel="layer", ylabel="vulnerability factor (%)", title=f"{rows[0]['model']}: LVF")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_mvf(rows: list[dict], path: Path) -> None:
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for i, key in enumerate(("mvf_activations", "mvf_weights", "mvf_total")):
        ax.bar(
            x + (i - 1) * 0.27,
            [100 * r[key] for r in rows],
            width=0.27,
            label=key.replace("mvf_", "MVF "),
        )
    ax.set_xticks(x, [r["model"] for r in rows])
    ax.set(ylabel="model vulnerability factor (%)", title="MVF per model (complete analysis)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_batches(rows: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        ax.plot(
            [r["batch"] + 1 for r in mine], [100 * r["mvf_total"] for r in mine], "o-", label=model
        )
    ax.set(
        xlabel="batch of 100 test images",
        ylabel="total MVF (%)",
        title="Total MVF over batches (10% sampled analysis)",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ctx = parse_args(
        __doc__.splitlines()[0],
        argv,
        extra=[
            ("--batches", int, None, "batches of 100 test images for Fig. 10 (default 8; quick 2)")
        ],
    )
    batches = ctx.extra["batches"] or (2 if ctx.quick else 8)
    layers, mvf, over = [], [], []
    for spec in ctx.models:
        rows = ctx.part("fig8_lvf", spec, lambda s=spec: layer_rows(ctx, s))
        plot_lvf(rows, ctx.out / f"fig8_lvf_{spec.key}.png")
        layers += rows
        mvf.append(ctx.part("fig9_mvf", spec, lambda s=spec: mvf_row(ctx, s)))
        over += ctx.part(
            f"fig10_batches-b{batches}", spec, lambda s=spec: batch_rows(ctx, s, batches)
        )
    ctx.write_table("fig8_lvf", FIG8_COLUMNS, layers)
    ctx.write_table("fig9_mvf", MVF_COLUMNS, mvf)
    ctx.write_table("fig10_batches", FIG10_COLUMNS, over)
    plot_mvf(mvf, ctx.out / "fig9_mvf.png")
    plot_batches(over, ctx.out / "fig10_batches.png")
    print(f"wrote fig8_lvf_<model>.png, fig9_mvf.png, fig10_batches.png to {ctx.out}", flush=True)


if __name__ == "__main__":
    main()
