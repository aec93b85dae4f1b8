"""Tables V and VI: simulations of FI vs DeepVigor+, and SFI run where it is feasible.

A *simulation* is one forward of the analysis batch: an FI fault costs one, an analysis costs
``image_evaluations / n_images`` (its batched forwards carry many (image, candidate) elements).

* ``table5_sims.csv``: exhaustive FI (every fault of every analysed layer: weights x 32, real
  operands x 32 for activations; ``exhaustive_fi_stored`` = output values x 32, the paper's
  count for activations) vs the complete analysis, per model and target, and the ratio.
* ``table6_sfi.csv``: layer-wise, data-unaware and data-aware SFI (e = 1%, t = 2.58; data-aware
  with the package's default prior from bit statistics, and with Ruospo et al.'s prior) vs the
  10% sampled analysis, per model and target, with ``total`` = activations + weights (what the
  total MVF of Eq. 15 needs), and the ratios SFI / sampled analysis. Sizes come from the
  campaigns' sampling plans (the exact number of faults a run would inject).
* ``models.csv``: the models (width, input size, epochs, test accuracy, analysed layers,
  channels, neurons per image, weights) and the analysis batch.
* ``table6_sfi_runs.csv``: where running is feasible (populations up to ``--sfi-max`` faults:
  the first and the last analysed layer), every SFI variant is run and its LVF set beside
  exhaustive FI of the whole layer, with the achieved margin.

Run: ``python validation/table5_6_sims.py [--quick] [--sfi-max N]``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from pytorchfi_deepvigor.campaigns.exhaustive import ExhaustiveCampaign  # noqa: E402
from pytorchfi_deepvigor.campaigns.faults import FaultPopulation, operand_sites  # noqa: E402
from pytorchfi_deepvigor.campaigns.statistical import StatisticalCampaign  # noqa: E402
from pytorchfi_deepvigor.functional.sfi import RUOSPO_PRIOR, MarginExceededWarning  # noqa: E402
from validation.analyses import complete, sampled  # noqa: E402
from validation.common import Context, ModelSpec, parse_args  # noqa: E402

T5_COLUMNS = [
    "model",
    "target",
    "exhaustive_fi",
    "exhaustive_fi_stored",
    "analysis_complete",
    "analysis_batched_forwards",
    "ratio",
]
T6_COLUMNS = [
    "model",
    "target",
    "sfi_layer",
    "sfi_data_unaware",
    "sfi_data_aware",
    "sfi_data_aware_ruospo",
    "sampled_10",
    "ratio_layer",
    "ratio_data_unaware",
    "ratio_data_aware",
    "ratio_data_aware_ruospo",
]
RUN_COLUMNS = [
    "model",
    "target",
    "layer",
    "layer_name",
    "variant",
    "population",
    "faults",
    "lvf_sfi",
    "margin",
    "lvf_exhaustive",
    "abs_err",
    "within_margin",
]
SFI = {
    "sfi_layer": ("layer", None),
    "sfi_data_unaware": ("data-unaware", None),
    "sfi_data_aware": ("data-aware", None),
    "sfi_data_aware_ruospo": ("data-aware", list(RUOSPO_PRIOR)),
}
MODEL_COLUMNS = [
    "model",
    "key",
    "width",
    "input_size",
    "epochs",
    "test_accuracy",
    "layers",
    "channels",
    "neurons",
    "weights",
    "images",
    "seed",
]
E, T = 0.01, 2.58


def model_row(ctx: Context, spec: ModelSpec) -> dict:
    """What the model is: width, input, training, accuracy and size of the analysed layers."""
    infos = [ctx.engine(spec).layer(n) for n in ctx.layers(spec)]
    return {
        "model": spec.label,
        "key": spec.key,
        "width": spec.width,
        "input_size": spec.input_size,
        "epochs": spec.training_epochs,
        "test_accuracy": ctx.model(spec)[1],
        "layers": len(infos),
        "channels": sum(i.out_channels for i in infos),
        "neurons": sum(i.neurons_per_image for i in infos),
        "weights": sum(i.n_weights for i in infos),
        "images": ctx.n_images,
        "seed": ctx.seed,
    }


def population(ctx: Context, spec: ModelSpec, target: str, layer: int) -> int:
    """Every single bit-flip fault of one layer for one target."""
    info = ctx.engine(spec).layer(layer)
    if target == "weights":
        return info.n_weights * 32
    sites = operand_sites(info, np.arange(info.neurons_per_image))
    return FaultPopulation(info, "operands", "flip", sites).size


def table5(ctx: Context, spec: ModelSpec) -> list[dict]:
    rows = []
    for target in ("activations", "weights"):
        result = complete(ctx, spec, target)
        exhaustive = sum(population(ctx, spec, target, n) for n in ctx.layers(spec))
        stored = sum(ctx.engine(spec).layer(n).neurons_per_image * 32 for n in ctx.layers(spec))
        sims = result.cost.image_evaluations / result.n_images
        rows.append(
            {
                "model": spec.label,
                "target": target,
                "exhaustive_fi": exhaustive,
                "exhaustive_fi_stored": stored if target == "activations" else exhaustive,
                "analysis_complete": sims,
                "analysis_batched_forwards": result.cost.batched_forwards,
                "ratio": exhaustive / sims,
            }
        )
    return rows


def table6(ctx: Context, spec: ModelSpec) -> list[dict]:
    campaign = StatisticalCampaign(ctx.engine(spec))
    rows = []
    for target in ("activations", "weights"):
        row: dict = {"model": spec.label, "target": target}
        for column, (variant, prior) in SFI.items():
            plan = campaign.plan(
                variant,
                target=target,
                layers=ctx.layers(spec),
                e=E,
                t=T,
                prior=prior,
                seed=ctx.seed,
            )
            row[column] = plan.faults
        result = sampled(ctx, spec, target, 0.10, ctx.seed)
        row["sampled_10"] = result.cost.image_evaluations / result.n_images
        rows.append(row)
    total = {"model": spec.label, "target": "total"}
    for column in [*SFI, "sampled_10"]:
        total[column] = sum(r[column] for r in rows)
    rows.append(total)
    for row in rows:
        for column in SFI:
            row["ratio" + column[3:]] = row[column] / row["sampled_10"]
    return rows


def sfi_runs(ctx: Context, spec: ModelSpec, limit: int) -> list[dict]:
    engine = ctx.engine(spec)
    layers = sorted({ctx.layers(spec)[0], ctx.layers(spec)[-1]})
    rows = []
    for target in ("weights", "activations"):
        for num in layers:
            size = population(ctx, spec, target, num)
            if size > limit:
                continue
            neurons = "all" if target == "activations" else None
            exact = ExhaustiveCampaign(engine).run(
                target, layers=[num], neurons=neurons, progress=True
            )
            lvf = exact.layers[0].lvf
            for column, (variant, prior) in SFI.items():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", MarginExceededWarning)
                    run = StatisticalCampaign(engine).run(
                        variant,
                        target=target,
                        layers=[num],
                        e=E,
                        t=T,
                        prior=prior,
                        seed=ctx.seed,
                        progress=True,
                    )
                got = run.layers[0]
                rows.append(
                    {
                        "model": spec.label,
                        "target": target,
                        "layer": num,
                        "layer_name": got.name,
                        "variant": column[4:],
                        "population": size,
                        "faults": got.n_faults,
                        "lvf_sfi": got.lvf,
                        "margin": got.margin,
                        "lvf_exhaustive": lvf,
                        "abs_err": abs(got.lvf - lvf),
                        "within_margin": abs(got.lvf - lvf) <= got.margin + 1e-12,
                    }
                )
    return rows


def main(argv: list[str] | None = None) -> None:
    ctx = parse_args(
        __doc__.splitlines()[0],
        argv,
        extra=[
            ("--sfi-max", int, None, "largest layer population to run SFI and exhaustive FI on")
        ],
    )
    limit = ctx.extra["sfi_max"] or (6_000 if ctx.quick else 60_000)
    ctx.write_table("models", MODEL_COLUMNS, [model_row(ctx, spec) for spec in ctx.models])
    t5 = [
        r
        for spec in ctx.models
        for r in ctx.part("table5_sims", spec, lambda s=spec: table5(ctx, s))
    ]
    ctx.write_table("table5_sims", T5_COLUMNS, t5)
    t6 = [
        r
        for spec in ctx.models
        for r in ctx.part("table6_sfi", spec, lambda s=spec: table6(ctx, s))
    ]
    ctx.write_table("table6_sfi", T6_COLUMNS, t6)
    runs = [
        r
        for spec in ctx.models
        for r in ctx.part(f"table6_sfi_runs-m{limit}", spec, lambda s=spec: sfi_runs(ctx, s, limit))
    ]
    ctx.write_table("table6_sfi_runs", RUN_COLUMNS, runs)


if __name__ == "__main__":
    main()
