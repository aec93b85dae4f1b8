"""Table IV: sampled vs complete analysis at channel ratios 5/10/15/20%, 50 seeded repeats.

The complete analyses (activations and weights, the package's default search and weight model)
run once per model.
The sampled analyses are then obtained without re-running every one of them:

* activations: a sampled analysis with ratio r and seed s visits the neurons
  ``draw_sites(catalogue, r, s)`` and each neuron's NVF is a function of that neuron alone, so its
  CVFs and LVFs are the means of the complete analysis's NVFs over the drawn neurons;
* weights: every distinct (channel, positions) drawn by the 4 x 50 analyses is analysed once
  with ``analyze_weights`` (all draws of a layer in one call) and each draw's VFs assembled from
  those (with the default weight model a channel's CVF does not depend on the drawn positions:
  the margin gradient covers every position, so this is the complete CVF; the positional
  ``aggregate`` modes feed the EDM with the drawn positions only).

Both shortcuts are checked against real ``DeepVigorAnalyzer.analyze(sampling=r, seed=s)`` runs
(``table4_verification.csv``); ``table4_layers.csv`` gives per layer the channels a 10% draw
takes and the spread of the complete CVFs, which set the LVF error. When a check fails, every sampled analysis is run for real.
Writes ``table4_sampling.csv``: ``model, target, ratio, repeats, mae_cvf, max_cvf, mae_lvf,
max_lvf`` (absolute errors of the sampled against the complete analysis, fractions).

Run: ``python validation/table4_sampling.py [--quick] [--repeats N]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from pytorchfi_deepvigor.analysis.analyzer import DeepVigorAnalyzer  # noqa: E402
from pytorchfi_deepvigor.analysis.sampling import (  # noqa: E402
    LayerSites,
    channels_to_draw,
    draw_sites,
)
from pytorchfi_deepvigor.analysis.weights import analyze_weights  # noqa: E402
from pytorchfi_deepvigor.functional.edm import candidate_grid  # noqa: E402
from validation.analyses import RATIOS, complete, layer_map  # noqa: E402
from validation.common import Context, ModelSpec, parse_args  # noqa: E402

COLUMNS = ["model", "target", "ratio", "repeats", "mae_cvf", "max_cvf", "mae_lvf", "max_lvf"]
LAYER_COLUMNS = [
    "model",
    "target",
    "layer",
    "channels",
    "sampled_channels_10",
    "cvf_std",
    "predicted_lvf_err_10",
]
CHECK_COLUMNS = ["model", "target", "ratio", "seed", "max_diff_cvf", "max_diff_lvf", "equal"]
TOLERANCE = 1e-9  # float64 means of the same float32 values in another order
Draw = dict[int, tuple[np.ndarray, np.ndarray]]  # layer -> (channels, cvf), lvf is their mean


def _activation_draws(ctx: Context, spec: ModelSpec, draws: dict) -> dict[tuple, Draw]:
    """Sampled activations VFs from the complete NVFs."""
    comp = layer_map(complete(ctx, spec, "activations"), "activations")
    out = {}
    for key, sites in draws.items():
        result = {}
        for num in ctx.layers(spec):
            layer, s = comp[num], sites[num]
            width = ctx.engine(spec).layer(num).output_shape[-1] if s.n_positions > 1 else 1
            nvf = {
                (c, h * width + w): v for (c, h, w), v in zip(layer.neurons, layer.nvf, strict=True)
            }
            per = np.array(
                [
                    [nvf[(int(c), int(p))] for p in row]
                    for c, row in zip(s.channels, s.positions, strict=True)
                ]
            )
            result[num] = (s.channels, per.mean(axis=1), float(per.mean()))
        out[key] = result
    return out


def _weight_draws(ctx: Context, spec: ModelSpec, draws: dict) -> dict[tuple, Draw]:
    """Sampled weights VFs: each distinct (channel, positions) analysed once per layer."""
    engine, grid = ctx.engine(spec), candidate_grid()  # the default search, as analyze() uses
    cvf_of: dict[tuple, float] = {}
    for num in tqdm(ctx.layers(spec), desc=f"{spec.label} sampled weights", unit="layer"):
        info = engine.layer(num)
        unique = sorted(
            {
                (int(c), tuple(int(p) for p in row))
                for sites in draws.values()
                for c, row in zip(sites[num].channels, sites[num].positions, strict=True)
            }
        )
        channels = np.array([c for c, _ in unique], dtype=np.int64)
        positions = np.array([p for _, p in unique], dtype=np.int64)
        sites = LayerSites(num, channels, positions, info.neurons_per_channel)
        layer, _ = analyze_weights(engine, info, sites, grid)
        cvf_of.update({(num, *u): v for u, v in zip(unique, layer.cvf, strict=True)})
    out = {}
    for key, sites in draws.items():
        result = {}
        for num in ctx.layers(spec):
            s = sites[num]
            cvf = np.array(
                [
                    cvf_of[(num, int(c), tuple(int(p) for p in row))]
                    for c, row in zip(s.channels, s.positions, strict=True)
                ]
            )
            result[num] = (s.channels, cvf, float(cvf.mean()))
        out[key] = result
    return out


def _real(ctx: Context, spec: ModelSpec, target: str, ratio: float, seed: int) -> Draw:
    analyzer = DeepVigorAnalyzer(ctx.engine(spec), model_name=spec.key)
    result = analyzer.analyze(target=target, layers=ctx.layers(spec), sampling=ratio, seed=seed)
    return {x.layer_num: (np.array(x.channels), np.array(x.cvf), x.lvf) for x in result.layers}


def _diff(a: Draw, b: Draw) -> tuple[float, float]:
    cvf = max(float(np.abs(a[n][1] - b[n][1]).max()) for n in a)
    return cvf, max(abs(a[n][2] - b[n][2]) for n in a)


def _errors(draws: dict[tuple, Draw], comp: dict, ratio: float) -> dict[str, float]:
    cvf_err, lvf_err = [], []
    for (r, _), draw in draws.items():
        if r != ratio:
            continue
        for num, (channels, cvf, lvf) in draw.items():
            full = np.asarray(comp[num].cvf)
            cvf_err.append(np.abs(cvf - full[channels]))
            lvf_err.append(abs(lvf - comp[num].lvf))
    cvf_all = np.concatenate(cvf_err)
    return {
        "mae_cvf": float(cvf_all.mean()),
        "max_cvf": float(cvf_all.max()),
        "mae_lvf": float(np.mean(lvf_err)),
        "max_lvf": float(np.max(lvf_err)),
    }


def layer_rows(ctx: Context, spec: ModelSpec) -> list[dict]:
    """Why LVFs of sampled analyses err: per layer, channels drawn at 10% and the CVF spread.

    ``predicted_lvf_err_10`` is the mean absolute error of the mean of k channels drawn without
    replacement from C whose CVFs have standard deviation s, for normal errors:
    ``sqrt(2 / pi) * s / sqrt(k) * sqrt((C - k) / (C - 1))`` (0 when k = C). It ignores the
    neuron sampling inside channels, so it is a lower bound for the activations.
    """
    rows = []
    for target in ("activations", "weights"):
        for layer in layer_map(complete(ctx, spec, target), target).values():
            cvf, n = np.asarray(layer.cvf), len(layer.cvf)
            k = channels_to_draw(n, 0.10)
            std = float(cvf.std(ddof=1)) if n > 1 else 0.0
            fpc = np.sqrt((n - k) / (n - 1)) if n > 1 else 0.0
            rows.append(
                {
                    "model": spec.label,
                    "target": target,
                    "layer": layer.layer_num,
                    "channels": n,
                    "sampled_channels_10": k,
                    "cvf_std": std,
                    "predicted_lvf_err_10": float(np.sqrt(2 / np.pi) * std / np.sqrt(k) * fpc),
                }
            )
    return rows


def run_model(ctx: Context, spec: ModelSpec, repeats: int, checks: int) -> dict[str, list]:
    catalogue = ctx.engine(spec).catalogue
    draws = {
        (r, ctx.seed + i): {s.layer_num: s for s in draw_sites(catalogue, r, ctx.seed + i)}
        for r in RATIOS
        for i in range(repeats)
    }
    rows, check_rows = [], []
    for target, derive in (("activations", _activation_draws), ("weights", _weight_draws)):
        comp = layer_map(complete(ctx, spec, target), target)
        derived = derive(ctx, spec, draws)
        verified = True
        for i, ratio in enumerate([RATIOS[j % len(RATIOS)] for j in range(checks)]):
            key = (ratio, ctx.seed + i)
            d_cvf, d_lvf = _diff(derived[key], _real(ctx, spec, target, *key))
            verified &= max(d_cvf, d_lvf) <= TOLERANCE
            check_rows.append(
                {
                    "model": spec.label,
                    "target": target,
                    "ratio": ratio,
                    "seed": key[1],
                    "max_diff_cvf": d_cvf,
                    "max_diff_lvf": d_lvf,
                    "equal": max(d_cvf, d_lvf) <= TOLERANCE,
                }
            )
        if not verified:  # the shortcut is not exact here: run every sampled analysis
            derived = {
                key: _real(ctx, spec, target, *key)
                for key in tqdm(draws, desc=f"{spec.label} real sampled {target}")
            }
        for ratio in RATIOS:
            rows.append(
                {
                    "model": spec.label,
                    "target": target,
                    "ratio": ratio,
                    "repeats": repeats,
                    **_errors(derived, comp, ratio),
                }
            )
    return {"rows": rows, "checks": check_rows}


def main(argv: list[str] | None = None) -> None:
    ctx = parse_args(
        __doc__.splitlines()[0],
        argv,
        extra=[("--repeats", int, None, "seeded repeats per ratio (default 50; quick 3)")],
    )
    repeats = ctx.extra["repeats"] or (3 if ctx.quick else 50)
    checks = 1 if ctx.quick else 4
    parts = [
        ctx.part(
            f"table4_sampling-r{repeats}", spec, lambda s=spec: run_model(ctx, s, repeats, checks)
        )
        for spec in ctx.models
    ]
    ctx.write_table("table4_sampling", COLUMNS, [r for p in parts for r in p["rows"]])
    ctx.write_table("table4_verification", CHECK_COLUMNS, [r for p in parts for r in p["checks"]])
    layers = [
        r for s in ctx.models for r in ctx.part("table4_layers", s, lambda s=s: layer_rows(ctx, s))
    ]
    ctx.write_table("table4_layers", LAYER_COLUMNS, layers)


if __name__ == "__main__":
    main()
