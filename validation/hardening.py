"""Hardening (issue 24): plans made from the analysis, checked by SFI on the protected models.

For each model (VGG-11 and ResNet-18 at the zoo's default widths, MobileNetV2 at the validation
width, 1/16 on 8x8 digits, and the ViT), on
the first 100 digits test images (the analysis batch), images 100-299 (calibration of the clamps)
and 300-499 (held out: clean accuracy):

1. the default analysis of both targets (``--sampling`` of the channels; the others take their
   layer's LVF), and of the model clamped to ranges profiled on the calibration images;
2. the plans of every strategy (the planner; the baselines first-layers, weights, random) and
   mechanism (TMR, ECC, both; and both on the clamped model) at 5%, 10% and 30% overhead, with
   their predicted total MVF (Eq. 15) and overheads;
3. verification of the planner's plans: the protected model injected with data-aware SFI
   (``--e`` at 99%; TMR/ECC plans inject the layers they protect and take the others from one
   SFI of the user's model, their faults being unchanged, see ``hardening.verify``; clamped
   plans inject every layer), and analysed again (a part of its own, ``reanalyse``).

Writes ``hardening.csv`` (one row per model, strategy, mechanisms, budget: predicted, and where
verified the analysis and SFI with its margin and the verdict), ``hardening_layers.csv`` and
``hardening.md``; ``hardening_pareto.png``.

Run: ``python validation/hardening.py --set default-width,validation,transformers``
(``--quick``: the quick VGG-11, seconds).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if __package__ in (None, ""):
    sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402

from pytorchfi_deepvigor import zoo  # noqa: E402
from pytorchfi_deepvigor.analysis import DeepVigorAnalyzer  # noqa: E402
from pytorchfi_deepvigor.campaigns import StatisticalCampaign  # noqa: E402
from pytorchfi_deepvigor.engine import SimulationEngine  # noqa: E402
from pytorchfi_deepvigor.hardening import (  # noqa: E402
    STRATEGIES,
    clamped,
    harden,
    restrict_ranges,
    verify,
)
from pytorchfi_deepvigor.report.hardening import plot_pareto  # noqa: E402
from pytorchfi_deepvigor.results import VulnerabilityResult  # noqa: E402
from validation.common import (  # noqa: E402
    Context,
    ModelSpec,
    csv_value,
    parse_args,
    read_csv,
    write_text,
)

BUDGETS = (0.05, 0.10, 0.30)
MECHANISMS = {"tmr": ("tmr",), "ecc": ("ecc",), "tmr+ecc": ("tmr", "ecc")}
VERIFIED = {  # (mechanisms, budget) of the planner's plans injected, per model
    "full": [("tmr+ecc", b) for b in BUDGETS]
    + [("tmr", 0.10), ("ecc", 0.10), ("clamp+tmr+ecc", 0.10)],
    "light": [("tmr+ecc", 0.10), ("clamp+tmr+ecc", 0.10)],
}
WANTED = {
    ("default-width", "vgg11"),
    ("default-width", "resnet18"),
    # MobileNetV2 at its default width (1/4, 32x32): one 25% analysis of both targets takes
    # 21 minutes on one thread (issue 22), four of them and the SFI exceed a session; the
    # validation width runs
    ("validation", "mobilenetv2"),
    ("transformers", "vit"),
}
LIGHT = {
    "resnet18",
    "vit",
}  # their SFI of every layer costs 3-4x VGG-11's here: two plans verified, e=0.03 (the ViT 0.05)
COLUMNS = ["model", "strategy", "mechanisms", "budget", "overhead_macs", "overhead_memory",
           "unprotected_mvf", "baseline_mvf", "predicted_mvf", "reduction", "analysis_mvf",
           "sfi_mvf", "sfi_margin", "held", "clean_acc", "protected_acc", "sfi_faults", "sfi_s"]  # fmt: skip
LAYER_COLUMNS = ["model", "mechanisms", "budget", "layer_num", "name", "predicted_activations",
                 "analysis_activations", "sfi_activations", "sfi_activations_margin",
                 "predicted_weights", "analysis_weights", "sfi_weights", "sfi_weights_margin"]  # fmt: skip


def _accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return float((model(images).argmax(1) == labels).float().mean())
    finally:
        model.train(was)


def _analyses(
    ctx: Context, spec: ModelSpec, sampling: float | None
) -> tuple[VulnerabilityResult, VulnerabilityResult, dict, torch.nn.Module]:
    """The analysis of the model and of its clamped copy (each a cached part of its own, so a
    stopped run resumes after them), the clamps' ranges and the clamped copy."""
    model = ctx.model(spec)[0]
    images = ctx.images(spec)
    n = len(images)
    calibration = zoo.analysis_batch(2 * n, input_size=spec.input_size, offset=n).images
    ranges = restrict_ranges(model, calibration)
    names = {i.layer_num: i.name for i in SimulationEngine(model, images[:1]).catalogue}
    clamped_model = clamped(model, ranges, names)

    def analyse(net: torch.nn.Module, what: str) -> dict:
        started = time.perf_counter()
        result = DeepVigorAnalyzer(net, images).analyze(
            target="both", sampling=sampling, seed=ctx.seed
        )
        print(
            f"  {spec.label}: {what} analysis {time.perf_counter() - started:.0f} s, "
            f"MVF {result.mvf_total:.5f}",
            flush=True,
        )
        return result.to_dict()

    result = VulnerabilityResult.from_dict(
        ctx.part(f"hardening-result-s{sampling}", spec, lambda: analyse(model, "model"))
    )
    result_c = VulnerabilityResult.from_dict(
        ctx.part(
            f"hardening-result-clamped-s{sampling}", spec, lambda: analyse(clamped_model, "clamped")
        )
    )
    return result, result_c, ranges, clamped_model


def run_model(
    ctx: Context, spec: ModelSpec, e: float, sampling: float | None, sfi: bool = True
) -> dict:
    model = ctx.model(spec)[0]
    images = ctx.images(spec)
    n = len(images)
    held = zoo.analysis_batch(2 * n, input_size=spec.input_size, offset=3 * n)
    result, result_c, ranges, clamped_model = _analyses(ctx, spec, sampling)
    clean = _accuracy(model, held.images, held.labels)
    clean_c = _accuracy(clamped_model, held.images, held.labels)
    print(
        f"  {spec.label}: clamped MVF {result_c.mvf_total:.5f}, held-out accuracy {clean:.4f} -> {clean_c:.4f}",
        flush=True,
    )
    base = result.mvf_total
    rows, layer_rows = [], []
    plans = {}
    for strategy in STRATEGIES:
        for label, mechs in MECHANISMS.items():
            for budget in BUDGETS:
                plan = harden(result, budget, mechs, strategy=strategy, seed=ctx.seed, model=model)
                plans[(strategy, label, budget)] = plan
                rows.append(_row(spec, plan, label, base, clean, clean))
        for budget in (0.0, *BUDGETS):
            plan = harden(result_c, budget, ("tmr", "ecc"), strategy=strategy, seed=ctx.seed,
                          ranges=ranges, model=clamped_model)  # fmt: skip
            plans[(strategy, "clamp+tmr+ecc", budget)] = plan
            rows.append(_row(spec, plan, "clamp+tmr+ecc", base, clean, clean_c))
            if strategy != "planner":
                break  # a baseline's clamp rows: the clamps alone (budget 0)
    if not sfi:  # the plans and their predictions only
        return {"rows": rows, "layers": layer_rows}

    def reference_sfi() -> dict:
        started = time.perf_counter()
        out = _reference(model, images, e, ctx.seed,
                         ctx.cache_dir / "progress" / f"hardening-reference-e{e}-{spec.tag}")  # fmt: skip
        print(f"  {spec.label}: reference SFI {time.perf_counter() - started:.0f} s", flush=True)
        return out.to_dict()

    reference = VulnerabilityResult.from_dict(
        ctx.part(f"hardening-reference-e{e}", spec, reference_sfi)
    )
    ref_row = _row(spec, plans[("planner", "tmr", 0.05)], "none", base, clean, clean)
    ref_row.update(strategy="unprotected", mechanisms="none", budget=0.0, overhead_macs=0.0,
                   overhead_memory=0.0, predicted_mvf=base, baseline_mvf=base, reduction=1.0,
                   sfi_mvf=reference.mvf_total, sfi_margin=_margin(reference),
                   sfi_faults=reference.cost.faults, sfi_s=round(reference.cost.wall_time_s, 1))  # fmt: skip
    rows.insert(0, ref_row)
    for label, budget in VERIFIED["light" if spec.key in LIGHT else "full"]:
        plan = plans[("planner", label, budget)]

        def check_plan(plan=plan, label=label, budget=budget) -> dict:  # noqa: ANN001
            started = time.perf_counter()
            check = verify(plan, model, images, e=e, seed=ctx.seed, sampling=sampling,
                           analysis=False, reference=None if plan.ranges else reference)  # fmt: skip
            print(f"  {spec.label} {label} {budget:.0%}: {check.summary()}", flush=True)
            return {
                "row": dict(
                    analysis_mvf=check.analysis["total"] if check.analysis else None,
                    sfi_mvf=check.sfi["total"] if check.sfi else None,
                    sfi_margin=check.sfi_margin,
                    held=check.held,
                    sfi_faults=check.cost["sfi"].faults if "sfi" in check.cost else None,
                    sfi_s=round(time.perf_counter() - started, 1),
                ),
                "layers": list(check.layers),
            }

        done = ctx.part(f"hardening-verified-e{e}-s{sampling}-{label}@{budget}", spec, check_plan)
        row = next(
            r
            for r in rows
            if (r["strategy"], r["mechanisms"], r["budget"]) == ("planner", label, budget)
        )
        row.update(done["row"])
        for r in done["layers"]:
            layer_rows.append({"model": spec.label, "mechanisms": label, "budget": budget, **r})
    return {"rows": rows, "layers": layer_rows}


def reanalyse(ctx: Context, spec: ModelSpec, sampling: float | None) -> dict:
    """The analysis column of the verified plans: each protected copy analysed again (the plans
    are those of :func:`run_model`, made from the same cached analyses)."""
    model = ctx.model(spec)[0]
    images = ctx.images(spec)
    result, result_c, ranges, clamped_model = _analyses(ctx, spec, sampling)
    out = {}
    for label, budget in VERIFIED["light" if spec.key in LIGHT else "full"]:

        def check_plan(label=label, budget=budget) -> dict:  # noqa: ANN001
            if label.startswith("clamp"):
                plan = harden(result_c, budget, ("tmr", "ecc"), seed=ctx.seed, ranges=ranges,
                              model=clamped_model)  # fmt: skip
            else:
                plan = harden(result, budget, MECHANISMS[label], seed=ctx.seed, model=model)
            check = verify(plan, model, images, sfi=False, seed=ctx.seed, sampling=sampling)
            print(f"  {spec.label} {label} {budget:.0%}: {check.summary()}", flush=True)
            return {"total": check.analysis["total"], "layers": list(check.layers)}

        out[f"{label}@{budget}"] = ctx.part(
            f"hardening-reanalysed-s{sampling}-{label}@{budget}", spec, check_plan
        )
    return out


def _reference(
    model: torch.nn.Module, images: torch.Tensor, e: float, seed: int, progress_dir: Path
) -> VulnerabilityResult:
    """Data-aware SFI of the user's model, both targets; its progress saved in
    ``progress_dir`` (a stopped run continues from it)."""
    campaign = StatisticalCampaign(SimulationEngine(model, images))
    w = campaign.run("data-aware", target="weights", e=e, seed=seed, progress_dir=progress_dir)
    a = campaign.run("data-aware", target="operands", e=e, seed=seed, progress_dir=progress_dir)
    return VulnerabilityResult.from_layers("sfi-data-aware", w.layers + a.layers,
                                           cost=w.cost + a.cost, n_images=len(images))  # fmt: skip


def _margin(result: VulnerabilityResult) -> float:
    act = {x.layer_num: x for x in result.layers if x.target == "activations"}
    wts = {x.layer_num: x for x in result.layers if x.target == "weights"}
    count, squares = len(act), 0.0
    for n, a in act.items():
        w = wts[n]
        size = a.n_neurons + w.n_weights
        squares += (a.n_neurons / size / count * (a.margin or 0.0)) ** 2
        squares += (w.n_weights / size / count * (w.margin or 0.0)) ** 2
    return squares**0.5


def _row(
    spec: ModelSpec, plan, label: str, unprotected: float, clean: float, protected_acc: float
) -> dict:  # noqa: ANN001
    return {
        "model": spec.label,
        "strategy": plan.strategy,
        "mechanisms": label,
        "budget": plan.budget,
        "overhead_macs": round(plan.overhead_macs, 5),
        "overhead_memory": round(plan.overhead_memory, 5),
        "unprotected_mvf": unprotected,
        "baseline_mvf": plan.baseline["total"],
        "predicted_mvf": plan.predicted["total"],
        "reduction": round(unprotected / plan.predicted["total"], 2)
        if plan.predicted["total"] > 0
        else "inf",
        "clean_acc": clean,
        "protected_acc": protected_acc,
    }


def _pct(value: object, digits: int = 3) -> str:
    return "-" if value in (None, "") else f"{float(value) * 100:.{digits}f}"


def _markdown(rows: list[dict]) -> str:
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        lines += [f"### {model}", "",
                  "| strategy | mechanisms | budget | +MACs | +memory | predicted MVF (%) | reduction | analysis (%) | SFI (%) +- margin | held |",
                  "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in mine:
            sfi = (
                "-"
                if r.get("sfi_mvf") in (None, "")
                else f"{_pct(r['sfi_mvf'])} +- {_pct(r['sfi_margin'])}"
            )
            held = {True: "yes", False: "**no**"}.get(r.get("held"), "-")
            lines.append(
                f"| {r['strategy']} | {r['mechanisms']} | {float(r['budget']):.0%} | "
                f"{float(r['overhead_macs']):.1%} | {float(r['overhead_memory']):.1%} | "
                f"{_pct(r['predicted_mvf'])} | {r['reduction']}x | {_pct(r.get('analysis_mvf'))} | {sfi} | {held} |"
            )
        acc = mine[0]
        clamp = next((r for r in mine if r["mechanisms"] == "clamp+tmr+ecc"), None)
        if clamp:
            lines.append("")
            lines.append(f"Held-out accuracy (200 images): {float(acc['clean_acc']):.2%} unprotected, "
                         f"{float(clamp['protected_acc']):.2%} with the clamps.")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    """The headline table (README): per model, the unprotected MVF, the planner's TMR+ECC plans,
    the clamps, the best baseline at 10%, the clean accuracy with the clamps."""

    def find(model: str, strategy: str, mechs: str, budget: float) -> dict | None:
        return next((r for r in rows if (r["model"], r["strategy"], r["mechanisms"]) ==
                     (model, strategy, mechs) and abs(float(r["budget"]) - budget) < 1e-9), None)  # fmt: skip

    def cell(r: dict | None) -> str:
        if r is None:
            return "-"
        text = f"{_pct(r['predicted_mvf'])}"
        if r.get("sfi_mvf") not in (None, ""):
            text += f" (SFI {_pct(r['sfi_mvf'])} +- {_pct(r['sfi_margin'])})"
        return text

    lines = [
        "| model | unprotected | TMR+ECC 5% | TMR+ECC 10% | TMR+ECC 30% | clamps alone | clamps + TMR+ECC 10% | best baseline, TMR+ECC 10% | held-out accuracy, clamps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for model in dict.fromkeys(r["model"] for r in rows):
        base = next(r for r in rows if r["model"] == model)
        unprotected = _pct(base["unprotected_mvf"])
        ref = find(model, "unprotected", "none", 0.0)
        if ref is not None and ref.get("sfi_mvf") not in (None, ""):
            unprotected += f" (SFI {_pct(ref['sfi_mvf'])} +- {_pct(ref['sfi_margin'])})"
        baselines = [find(model, s, "tmr+ecc", 0.10) for s in STRATEGIES[1:]]
        best = min(
            (b for b in baselines if b), key=lambda b: float(b["predicted_mvf"]), default=None
        )
        clamp = find(model, "planner", "clamp+tmr+ecc", 0.0)
        acc = (
            "-"
            if clamp is None
            else f"{float(clamp['clean_acc']):.1%} -> {float(clamp['protected_acc']):.1%}"
        )
        lines.append(
            f"| {model} | {unprotected} | {cell(find(model, 'planner', 'tmr+ecc', 0.05))} | "
            f"{cell(find(model, 'planner', 'tmr+ecc', 0.10))} | {cell(find(model, 'planner', 'tmr+ecc', 0.30))} | "
            f"{cell(clamp)} | {cell(find(model, 'planner', 'clamp+tmr+ecc', 0.10))} | "
            f"{'-' if best is None else best['strategy'] + ' ' + _pct(best['predicted_mvf'])} | {acc} |"
        )
    return "\n".join(lines) + "\n"


def _parts_from_results(
    ctx: Context, spec: ModelSpec, table: str, plans_table: str, analysis_table: str
) -> None:
    """Write a model's parts from the committed tables where the cache lacks them (the rows of
    a run on another machine; ``--from-results 1``): its verified part and the analysis of its
    verified plans when the tables hold its SFI, else its plans part."""
    if any(ctx.cached_part(t, spec) is not None for t in (table, plans_table)):
        return
    rows = [
        {k: csv_value(v) for k, v in r.items()}
        for r in read_csv(HERE / "results" / "hardening.csv")
        if r["model"] == spec.label
    ]
    if not rows:
        return
    for r in rows:
        r["reduction"] = float(r["reduction"])  # the CSV wrote 1.0 as 1
    layers = [
        {k: csv_value(v) for k, v in r.items()}
        for r in read_csv(HERE / "results" / "hardening_layers.csv")
        if r["model"] == spec.label
    ]
    if not any(r["strategy"] == "unprotected" for r in rows):
        write_text(ctx.part_path(plans_table, spec), json.dumps({"rows": rows}, indent=0))
        print(f"  {spec.label}: its plans part from the committed tables", flush=True)
        return
    analysed = {}
    for r in rows:
        if r["strategy"] == "planner" and r["analysis_mvf"] is not None:
            key = f"{r['mechanisms']}@{r['budget']}"
            mine = [x for x in layers if f"{x['mechanisms']}@{x['budget']}" == key]
            analysed[key] = {"total": r["analysis_mvf"], "layers": mine}
    write_text(ctx.part_path(table, spec), json.dumps({"rows": rows, "layers": layers}, indent=0))
    write_text(ctx.part_path(analysis_table, spec), json.dumps(analysed, indent=0))
    print(f"  {spec.label}: its verified parts from the committed tables", flush=True)


def main(argv: list[str] | None = None) -> None:
    ctx = parse_args(
        __doc__.splitlines()[0],
        argv,
        extra=[
            ("--e", float, 0.02, "SFI error margin per layer and target (99% confidence)"),
            ("--e-light", float, 0.03, "the SFI margin of ResNet-18"),
            ("--e-vit", float, 0.05, "the SFI margin of the ViT (0.03: ~2.5 h of one core)"),
            ("--sampling", float, 0.25, "channel ratio of the analyses (1: complete)"),
            ("--plans-only", int, 0, "1: models without a verified part get their plans only"),
            ("--cached-only", int, 0, "1: write the tables from the parts already computed"),
            ("--from-results", int, 0, "1: first rebuild missing parts from the committed tables"),
        ],
    )
    e, e_light, e_vit = (float(ctx.extra[k]) for k in ("e", "e_light", "e_vit"))
    sampling = None if float(ctx.extra["sampling"]) >= 1 else float(ctx.extra["sampling"])
    models = (
        ctx.models if ctx.quick else tuple(m for m in ctx.models if (m.set_name, m.key) in WANTED)
    )
    rows, layers = [], []
    for spec in models:
        own = (
            0.1 if ctx.quick else {"vit": e_vit}.get(spec.key, e_light if spec.key in LIGHT else e)
        )
        table = f"hardening-e{own}-s{sampling}"
        plans_table = f"hardening-plans-s{sampling}"
        if ctx.extra["from_results"]:
            _parts_from_results(ctx, spec, table, plans_table, f"hardening-analysis-s{sampling}")
        if ctx.extra["cached_only"] and all(
            ctx.cached_part(t, spec) is None for t in (table, plans_table)
        ):
            print(f"  {spec.label}: not run yet (--cached-only): left out", flush=True)
            continue
        if ctx.extra["plans_only"] and ctx.cached_part(table, spec) is None:
            print(f"  {spec.label}: not verified yet (--plans-only): its plans only", flush=True)
            data = ctx.part(plans_table, spec,
                            lambda spec=spec, own=own: run_model(ctx, spec, own, sampling, sfi=False))  # fmt: skip
            rows += data["rows"]
            continue
        data = ctx.part(table, spec,
                        lambda spec=spec, own=own: run_model(ctx, spec, own, sampling))  # fmt: skip
        ana = ctx.part(f"hardening-analysis-s{sampling}", spec,
                       lambda spec=spec: reanalyse(ctx, spec, sampling))  # fmt: skip
        for r in data["rows"]:
            key = f"{r['mechanisms']}@{r['budget']}"
            if r["strategy"] == "planner" and key in ana:
                r["analysis_mvf"] = ana[key]["total"]
        for r in data["layers"]:
            key = f"{r['mechanisms']}@{r['budget']}"
            if key in ana:
                mine = {x["layer_num"]: x for x in ana[key]["layers"]}[r["layer_num"]]
                r["analysis_activations"] = mine["analysis_activations"]
                r["analysis_weights"] = mine["analysis_weights"]
        rows += data["rows"]
        layers += data["layers"]
    rows = [{c: r.get(c) for c in COLUMNS} for r in rows]
    layers = [{c: r.get(c) for c in LAYER_COLUMNS} for r in layers]
    ctx.write_table("hardening", COLUMNS, rows)
    ctx.write_table("hardening_layers", LAYER_COLUMNS, layers)
    path = ctx.out / "hardening.md"
    path.write_text(_markdown(rows), encoding="utf-8")
    (ctx.out / "hardening_summary.md").write_text(summary(rows), encoding="utf-8")
    curve = [r for r in rows if r["model"] == rows[0]["model"] and r["strategy"] != "unprotected"]
    plot_pareto(
        curve,
        ctx.out / "hardening_pareto.png",
        f"{rows[0]['model']}: predicted MVF against overhead",
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
