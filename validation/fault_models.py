"""Fault models beyond fp32 single bit flips (issue 23): the analysis against exhaustive FI,
and that FI against the oracle, per model, number format and fault model.

For each model (the validation set's CNNs and the zoo's ViT) and each case (fp16 and bf16
single bit flips; 2- and 3-bit adjacent upsets and stuck-at in fp32 on two models; exponent-only
flips), the model and the analysis images are converted to the case's format and:

1. **FI against the oracle**: a seeded sample of weight, operand and stored-value faults of the
   first, a middle and the last layer, each evaluated by the package's FI and by
   ``tests/oracle.py`` (the word changed in the converted model, its own forward): mismatching
   (fault, image) pairs are counted (must be 0).
2. **Analysis against exhaustive FI**: per layer, a seeded draw of channels (weights; every
   weight fault of those channels) and of one neuron per drawn channel (operands; every operand
   fault of it), within a fault budget per model and target; the default analysis of exactly
   those channels and neurons, compared channel by channel: MAE, max error, Spearman rho (where
   there are >= 5 channels), in VF points (fractions x 100).

Writes ``fault_models.csv`` (one row per model, case and target), ``fault_models_pairs.csv``
(per channel), ``fault_models_bits.csv`` (the VF of each bit per layer, analysis and FI, on the
same channels) and ``fault_models.md`` (the table REPORT.md quotes).

Run: ``python validation/fault_models.py --set validation,transformers [--models vgg11,...]
[--cases fp16,...] [--budget N]`` (``--quick``: the quick VGG-11, 16 images, seconds).
``--targets operands`` reruns only those targets of each case and keeps the others from its
cached part; ``--from-results 1`` first rebuilds the cached parts that are missing from the
committed tables (``validation/results/fault_models*.csv``), so a fresh checkout can rerun one
target without recomputing the rest.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
if __package__ in (None, ""):
    sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from oracle import Fault, Oracle  # noqa: E402
from oracle_int8 import Int8Oracle  # noqa: E402

from pytorchfi_deepvigor import zoo  # noqa: E402
from pytorchfi_deepvigor.analysis.activations import (  # noqa: E402
    analyze_activations,
    analyze_stored,
)
from pytorchfi_deepvigor.analysis.sampling import LayerSites  # noqa: E402
from pytorchfi_deepvigor.analysis.weights import analyze_weights  # noqa: E402
from pytorchfi_deepvigor.bits import AnyFaultModel, QuantizedFlip, parse_fault_model  # noqa: E402
from pytorchfi_deepvigor.campaigns.exhaustive import ExhaustiveCampaign  # noqa: E402
from pytorchfi_deepvigor.campaigns.faults import (  # noqa: E402
    FaultEvaluator,
    FaultPopulation,
    check_geometry,
    operand_sites,
)
from pytorchfi_deepvigor.catalogue import LayerInfo  # noqa: E402
from pytorchfi_deepvigor.engine import Outcome, SimulationEngine  # noqa: E402
from pytorchfi_deepvigor.functional.edm import candidate_grid  # noqa: E402
from pytorchfi_deepvigor.quantized import bind_words  # noqa: E402
from pytorchfi_deepvigor.results import LayerResult, VulnerabilityResult, compare  # noqa: E402
from validation.common import Context, ModelSpec, csv_value, parse_args, read_csv, write_text  # noqa: E402
from validation.specs import FULL_MODELS, TRANSFORMER_MODELS  # noqa: E402

FORMATS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
INT8 = "int8"  # post-training quantized with torch.ao (FX, fbgemm) on digits 100-299
CASES = {
    # name: (format, fault model, models it runs on: None = every model)
    "fp32": ("fp32", "flip", None),  # the baseline the others are read against
    "fp16": ("fp16", "flip", None),
    "bf16": ("bf16", "flip", None),
    "mbu2": ("fp32", "mbu2", ("vgg11", "resnet18")),
    "mbu3": ("fp32", "mbu3", ("vgg11", "resnet18")),
    "stuck-at": ("fp32", "stuck-at", ("vgg11", "resnet18")),
    "fp16-exponent": ("fp16", "flip:exponent", ("vgg11", "mobilenetv2")),
    # PyTorchFI's 8-bit quantised flip of stored values (ranges: each layer's max |output|)
    "pytorchfi-int8": ("fp32", "pytorchfi-int8", None),
    # int8 networks: a flip of a stored 8-bit word (int8 weights per channel, quint8 operands)
    "int8": (INT8, "int8", ("vgg11", "resnet18")),
}
MODELS = (*(m for m in FULL_MODELS if m.key != "vgg16"), TRANSFORMER_MODELS[0])
RAYS = ("vit",)
"""Models whose weights are also analysed with ``aggregate="rays"`` (rows ``weights:rays``,
against the same FI): the ViT, whose attention projections the mean pattern misreads."""
BUDGET_SHARE = {"vit": 0.25}
"""The share of ``--budget`` a model gets: the ViT's FI costs about 4x a CNN's per fault here
(574 s for 15,000 weight faults of 100 images on one core)."""
COLUMNS = ["model", "case", "format", "fault_model", "target", "layers", "channels",
           "faults_fi", "mae_pts", "max_err_pts", "spearman", "vf_fi_pts", "oracle_faults",
           "oracle_mismatches", "fi_seconds", "analysis_seconds"]  # fmt: skip
BIT_COLUMNS = ["model", "case", "target", "layer", "layer_name", "mask", "bit_vf_analysis",
               "bit_vf_fi"]  # fmt: skip
PAIR_COLUMNS = ["model", "case", "target", "layer", "layer_name", "channel", "vf_analysis",
                "vf_fi"]  # fmt: skip
ORACLE_SITES = 6  # sites per (layer, target) checked against the oracle


def _engine(ctx: Context, spec: ModelSpec, fmt: str) -> tuple[SimulationEngine, torch.nn.Module]:
    model = ctx.model(spec)[0]
    if fmt == INT8:  # calibrated on images that are neither the analysis batch nor held out
        n = ctx.n_images
        calibration = zoo.analysis_batch(2 * n, input_size=spec.input_size, offset=n).images
        int8 = zoo.quantize_int8(model, calibration)
        return SimulationEngine(int8, ctx.images(spec)), int8
    dtype = FORMATS[fmt]
    converted = model if dtype == torch.float32 else _copy(model).to(dtype)
    images = ctx.images(spec).to(dtype)
    return SimulationEngine(converted, images), converted


def _copy(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model)


def _per_site_faults(engine: SimulationEngine, num: int, spec: str) -> int:
    info = engine.layer(num)
    return parse_fault_model(spec, engine.dtype).n_patterns * info.fan_in


def _words(engine: SimulationEngine, num: int, target: str, spec: str) -> AnyFaultModel:
    """The fault model of one layer's target (an int8 layer's: bound to its words)."""
    info = engine.layer(num)
    return bind_words(parse_fault_model(spec, engine.dtype), info.module, target, info.name)


def _draw(engine: SimulationEngine, spec: str, budget: int, seed: int) -> dict[int, list[int]]:
    """Channels per layer, round-robin over layers, every weight fault of each within budget."""
    rng = np.random.default_rng(seed)
    nums = [i.layer_num for i in engine.catalogue]
    order = {n: list(rng.permutation(engine.layer(n).out_channels)) for n in nums}
    picks: dict[int, list[int]] = {n: [] for n in nums}
    spent = 0
    while any(order.values()):
        for n in nums:
            if not order[n]:
                continue
            cost = _per_site_faults(engine, n, spec)
            if spent + cost > budget and any(picks.values()):
                order[n] = []
                continue
            picks[n].append(int(order[n].pop()))
            spent += cost
    return {n: sorted(c) for n, c in picks.items() if c}


def _neurons(engine: SimulationEngine, channels: dict[int, list[int]], seed: int) -> dict:
    """One seeded neuron per drawn channel (a layer that pads inside its forward: none)."""
    rng = np.random.default_rng(seed + 1)
    out = {}
    for num, chans in channels.items():
        info = engine.layer(num)
        try:
            check_geometry(info)
        except ValueError:
            continue
        per = info.neurons_per_channel
        picked = []
        for c in chans[: max(1, len(chans) // 2)]:
            p = int(rng.integers(per))
            if len(operand_sites(info, np.array([c * per + p]))):
                picked.append((c, p))
        if picked:
            out[num] = picked
    return out


def _oracle_check(
    engine: SimulationEngine, model: torch.nn.Module, spec: str, seed: int
) -> tuple[int, int]:
    """(faults, mismatching faults) of a seeded sample, package FI against the oracle: the
    word changed in the user's model (``tests/oracle.py``; an int8 network's stored 8-bit word,
    ``tests/oracle_int8.py``), its own forward."""
    judge = _int8_judge(engine, model) if engine.quantized else _float_judge(engine, model)
    evaluator = FaultEvaluator(engine)
    rng = np.random.default_rng(seed + 2)
    nums = [i.layer_num for i in engine.catalogue]
    total = bad = 0
    for num in dict.fromkeys([nums[0], nums[len(nums) // 2], nums[-1]]):
        info = engine.layer(num)
        pops = [
            FaultPopulation(info, "weights", _words(engine, num, "weights", spec),
                            rng.choice(info.n_weights, ORACLE_SITES)),
            FaultPopulation(info, "stored", _words(engine, num, "stored", spec),
                            rng.choice(info.neurons_per_image, ORACLE_SITES)),
        ]  # fmt: skip
        try:
            sites = operand_sites(info, rng.choice(info.neurons_per_image, 2))
            words = _words(engine, num, "operands", spec)
            pops.append(FaultPopulation(info, "operands", words, sites[:ORACLE_SITES]))
        except ValueError:
            pass
        for pop in pops:
            ids = np.arange(pop.size)
            image_idx, pert = evaluator.perturbation(pop, ids)
            codes = engine.outcomes(num, image_idx, pert)
            got = (codes >= int(Outcome.CRITICAL)).view(len(ids), -1).cpu().numpy()
            for f in ids:
                total += 1
                bad += int((judge(info, pop, int(f)) != got[f]).any())
    return total, bad


Judge = Callable[[LayerInfo, FaultPopulation, int], np.ndarray]
"""``(layer, population, fault index) -> critical per image`` by the oracle."""


def _float_judge(engine: SimulationEngine, model: torch.nn.Module) -> Judge:
    oracle = Oracle(model, engine.images, view=engine.model)

    def judge(info: LayerInfo, pop: FaultPopulation, f: int) -> np.ndarray:
        s, p = f % pop.n_sites, f // pop.n_sites
        mask = pop.model.masks[p // pop.model.multiplicity]
        where = pop.sites[s]
        site = tuple(int(a) for a in where) if where.ndim else int(where)
        fault = Fault(pop.target, info.name, site, 0, pop.model.pattern_value(p), mask)
        return oracle.critical(fault).cpu().numpy()

    return judge


def _int8_judge(engine: SimulationEngine, model: torch.nn.Module) -> Judge:
    oracle = Int8Oracle(model, engine.images)

    def judge(info: LayerInfo, pop: FaultPopulation, f: int) -> np.ndarray:
        site, bit = pop.sites[f % pop.n_sites], f // pop.n_sites
        if pop.target == "weights":
            return oracle.weight(info.name, int(site), bit)
        if pop.target == "stored":
            return oracle.stored(info.name, _neuron_at(info, int(site)), bit)
        neuron, j = (int(v) for v in site)
        where = _operand_word(info, neuron, j)
        return oracle.operand(info.name, where, bit, _neuron_at(info, neuron))

    return judge


def _neuron_at(info: LayerInfo, neuron: int) -> tuple[int, ...]:
    """Where a neuron (flat, channel-major) is in the layer's output."""
    if info.kind == "Linear":
        return (neuron,)
    c, p = divmod(neuron, info.neurons_per_channel)
    return (c, *divmod(p, info.output_shape[2]))


def _operand_word(info: LayerInfo, neuron: int, j: int) -> tuple[int, ...]:
    """The input word operand ``j`` of ``neuron`` reads (a conv: channel, row, column)."""
    if info.kind == "Linear":
        return (j,)
    kh, kw = info.weight_shape[2:]
    c, row, col = _neuron_at(info, neuron)
    group = c // (info.out_channels // info.groups)
    dr, dc = divmod(j % (kh * kw), kw)
    return (
        group * info.weight_shape[1] + j // (kh * kw),
        row * info.stride[0] - info.padding[0] + dr * info.dilation[0],
        col * info.stride[1] - info.padding[1] + dc * info.dilation[1],
    )


def _analysis(
    engine: SimulationEngine, target: str, picks: dict, spec: str, aggregate: str = "equivalent"
) -> VulnerabilityResult:
    grid = candidate_grid("fine")
    layers = []
    for num, chosen in picks.items():
        info = engine.layer(num)
        words = _words(engine, num, target, spec)
        if target == "weights":
            sites = LayerSites(num, np.asarray(chosen, np.int64), None, info.neurons_per_channel)
            found = analyze_weights(engine, info, sites, grid, aggregate=aggregate, faults=words)
            layers.append(found[0])
            continue
        channels = np.array([c for c, _ in chosen], dtype=np.int64)
        positions = np.array([[p] for _, p in chosen], dtype=np.int64)
        sites = LayerSites(num, channels, positions, info.neurons_per_channel)
        analyse = analyze_stored if target == "stored" else analyze_activations
        layers.append(analyse(engine, info, sites, grid, faults=words)[0])
    return VulnerabilityResult.from_layers("deepvigor", layers, n_images=engine.num_images)


def run_case(
    ctx: Context, spec: ModelSpec, case: str, budget: int, only: tuple[str, ...] | None = None
) -> dict[str, list[dict]]:
    """One model's rows of one case; ``only``: the FI targets to run (default: every one)."""
    fmt, fault_model, _ = CASES[case]
    engine, model = _engine(ctx, spec, fmt)
    int8 = fault_model.startswith("pytorchfi-int8")
    # the oracle flips float words (an int8 network's: its stored 8-bit words, oracle_int8);
    # PyTorchFI's int8 values are checked by the tests (tests/test_fault_models.py)
    n_oracle, n_bad = (0, 0) if int8 else _oracle_check(engine, model, fault_model, ctx.seed)
    rows, pairs, bits = [], [], []
    channels = _draw(engine, "flip" if int8 else fault_model, budget, ctx.seed)
    targets = (("stored", "stored"),) if int8 else (
        ("weights", "weights"), ("activations", "operands"))  # fmt: skip
    for target, fi_target in targets:
        if only is not None and fi_target not in only:
            continue
        if target == "stored":
            picks = {
                n: [(c, p) for c, p in v] for n, v in _neurons(engine, channels, ctx.seed).items()
            }
        else:
            picks = channels if target == "weights" else _neurons(engine, channels, ctx.seed)
        started = time.perf_counter()
        campaign = ExhaustiveCampaign(engine)
        if target == "stored":
            fi = _stored_fi(engine, picks, fault_model)
        elif target == "weights":
            fi = campaign.run("weights", channels=picks, fault_model=fault_model)
        else:
            fi = campaign.run(
                "operands",
                neurons={
                    n: [(c, p // _w(engine, n), p % _w(engine, n)) for c, p in v]
                    for n, v in picks.items()
                },  # fmt: skip
                fault_model=fault_model,
            )
        fi_seconds = time.perf_counter() - started
        aggregates = ("equivalent", "rays") if target == "weights" and spec.key in RAYS else ("",)
        for aggregate in aggregates:
            found = _compared(spec, case, fmt, fault_model, target, fi_target, aggregate, picks,
                              engine, fi, fi_seconds, (n_oracle, n_bad, int8))  # fmt: skip
            rows.append(found["row"])
            pairs += found["pairs"]
            bits += found["bits"]
            r = found["row"]
            print(
                f"  {spec.label} {case} {r['target']}: MAE {r['mae_pts']:.3f} pts, max "
                f"{r['max_err_pts']:.3f}, rho {r['spearman']}, FI {fi_seconds:.0f} s, "
                f"analysis {r['analysis_seconds']:.0f} s, oracle {n_bad}/{n_oracle} mismatches",
                flush=True,
            )
    return {"rows": rows, "pairs": pairs, "bits": bits}


def _compared(
    spec: ModelSpec,
    case: str,
    fmt: str,
    fault_model: str,
    target: str,
    fi_target: str,
    aggregate: str,
    picks: dict,
    engine: SimulationEngine,
    fi: VulnerabilityResult,
    fi_seconds: float,
    oracle: tuple[int, int, bool],
) -> dict:
    """The analysis of one target (weights: by ``aggregate``) against its exhaustive FI: the
    table's row, the channel pairs and the bit maps."""
    n_oracle, n_bad, int8 = oracle
    label = f"{fi_target}:{aggregate}" if aggregate and aggregate != "equivalent" else fi_target
    started = time.perf_counter()
    analysis = _analysis(engine, target, picks, fault_model, aggregate or "equivalent")
    seconds = time.perf_counter() - started
    cmp = compare(analysis, fi, target=target)
    names = {x.layer_num: x.name for x in fi.layers}
    row = {
        "model": spec.label,
        "case": case,
        "format": fmt,
        "fault_model": fault_model,
        "target": label,
        "layers": len(picks),
        "channels": cmp.n_channels,
        "faults_fi": fi.cost.faults,
        "mae_pts": 100 * cmp.mae,
        "max_err_pts": 100 * cmp.max_abs_err,
        "spearman": cmp.spearman if cmp.n_channels >= 5 else None,
        "vf_fi_pts": 100 * float(np.mean([p.b for p in cmp.pairs])),
        "oracle_faults": n_oracle if not int8 else None,
        "oracle_mismatches": n_bad,
        "fi_seconds": fi_seconds,
        "analysis_seconds": seconds,
    }
    pairs = [
        {"model": spec.label, "case": case, "target": label, "layer": p.layer_num,
         "layer_name": names[p.layer_num], "channel": p.channel, "vf_analysis": p.a,
         "vf_fi": p.b}
        for p in cmp.pairs
    ]  # fmt: skip
    bits = []
    for a_layer in analysis.layers:
        f_layer = fi.layer(a_layer.layer_num, a_layer.target)
        if a_layer.bit_vf is None or f_layer.bit_vf is None:
            continue
        for m, (va, vb) in enumerate(zip(a_layer.bit_vf, f_layer.bit_vf, strict=True)):
            bits.append({"model": spec.label, "case": case, "target": label,
                         "layer": a_layer.layer_num, "layer_name": a_layer.name, "mask": m,
                         "bit_vf_analysis": va, "bit_vf_fi": vb})  # fmt: skip
    return {"row": row, "pairs": pairs, "bits": bits}


def _stored_fi(engine: SimulationEngine, picks: dict, spec: str) -> VulnerabilityResult:
    """Exhaustive FI of the picked neurons' stored values (every pattern, every image)."""
    evaluator = FaultEvaluator(engine)
    model = parse_fault_model(spec, engine.dtype)
    layers, faults = [], 0
    for num, chosen in picks.items():
        info = engine.layer(num)
        bound = model
        if isinstance(model, QuantizedFlip):
            bound = model.bound(float(engine.layer_output(num).abs().max()), num)
        flat = np.array([c * info.neurons_per_channel + p for c, p in chosen], dtype=np.int64)
        pop = FaultPopulation(info, "stored", bound, flat)
        counts = evaluator.counts(pop, np.arange(pop.size))  # [F, 4]
        bad = (counts[:, 2] + counts[:, 3]).reshape(-1, len(flat)).sum(axis=0)
        nvf = bad / (counts.sum(axis=1).reshape(-1, len(flat)).sum(axis=0))
        channels = sorted({c for c, _ in chosen})
        cvf = [float(np.mean([v for (c, _), v in zip(chosen, nvf, strict=True) if c == k]))
               for k in channels]  # fmt: skip
        layers.append(LayerResult(
            layer_num=num, name=info.name, kind=info.kind, target="stored",
            n_neurons=info.neurons_per_image, n_weights=info.n_weights,
            channels=tuple(channels), cvf=tuple(cvf), lvf=float(nvf.mean()),
        ))  # fmt: skip
        faults += pop.size
    result = VulnerabilityResult.from_layers("exhaustive", layers, n_images=engine.num_images)
    return dataclasses.replace(result, cost=dataclasses.replace(result.cost, faults=faults))


def _w(engine: SimulationEngine, num: int) -> int:
    shape = engine.layer(num).output_shape
    return shape[2] if len(shape) == 3 else 1


def _markdown(rows: list[dict]) -> str:
    head = ("| model | case | format | fault model | target | channels | FI faults | FI VF (pts) "
            "| MAE (pts) | max err (pts) | Spearman | oracle mismatches |")  # fmt: skip
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        rho = "" if r["spearman"] is None else f"{r['spearman']:.3f}"
        checked = (
            "-" if r["oracle_faults"] is None else f"{r['oracle_mismatches']}/{r['oracle_faults']}"
        )
        lines.append(
            f"| {r['model']} | {r['case']} | {r['format']} | {r['fault_model']} | {r['target']} "
            f"| {r['channels']} | {r['faults_fi']:,} | {r['vf_fi_pts']:.3f} | {r['mae_pts']:.3f} "
            f"| {r['max_err_pts']:.3f} | {rho} | {checked} |"
        )
    return "\n".join(lines) + "\n"


def _merged(old: dict, new: dict, targets: tuple[str, ...]) -> dict:
    """A cached part with the rows of ``targets`` replaced by ``new``'s."""
    return {
        key: [r for r in old.get(key, []) if r["target"].split(":")[0] not in targets]
        + new.get(key, [])
        for key in ("rows", "pairs", "bits")
    }


def _parts_from_results(ctx: Context, budget: int) -> None:
    """Write the cached part of every (model, case) the committed tables hold and the cache
    lacks (the rows of a run on another machine; ``--from-results 1``)."""
    tables = {}
    for key, name in (("rows", "fault_models"), ("pairs", "fault_models_pairs"),
                      ("bits", "fault_models_bits")):  # fmt: skip
        rows = read_csv(HERE / "results" / f"{name}.csv")
        tables[key] = [{k: csv_value(v) for k, v in r.items()} for r in rows]
    for spec in MODELS:
        for case in CASES:
            own = int(budget * BUDGET_SHARE.get(spec.key, 1.0))
            table = f"fault_models-{case}-b{own}"
            if ctx.cached_part(table, spec) is not None:
                continue
            data = {
                key: [r for r in rows if r["model"] == spec.label and r["case"] == case]
                for key, rows in tables.items()
            }
            if data["rows"]:
                write_text(ctx.part_path(table, spec), json.dumps(data, indent=0))
                print(f"  {spec.label} {case}: cached part from the committed tables", flush=True)


def main(argv: list[str] | None = None) -> None:
    ctx = parse_args(
        __doc__.splitlines()[0],
        argv,
        extra=[
            ("--cases", str, ",".join(CASES), f"comma-separated cases of {list(CASES)}"),
            ("--budget", int, 40_000, "weight faults of exhaustive FI per model and case"),
            ("--cached-only", int, 0, "1: write the tables from the cases already run only"),
            (
                "--targets",
                str,
                "",
                "comma-separated FI targets to rerun (weights, operands, "
                "stored), the others kept from the cached part (default: a whole case)",
            ),
            (
                "--from-results",
                int,
                0,
                "1: first rebuild missing cached parts from the committed tables",
            ),
        ],
    )
    cases = ctx.extra["cases"].split(",")
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        raise SystemExit(f"unknown cases {unknown}; expected some of {list(CASES)}")
    budget = 3_000 if ctx.quick else int(ctx.extra["budget"])
    rerun = tuple(t for t in ctx.extra["targets"].split(",") if t) or None
    if ctx.extra["from_results"]:
        _parts_from_results(ctx, budget)
    keys = {m.key for m in MODELS}
    models = ctx.models if ctx.quick else tuple(m for m in ctx.models if m.key in keys)
    rows, pairs, bits = [], [], []
    for spec in models:
        for case in cases:
            only = CASES[case][2]
            if not ctx.quick and only is not None and spec.key not in only:
                continue
            own = budget if ctx.quick else int(budget * BUDGET_SHARE.get(spec.key, 1.0))
            if (
                ctx.extra.get("cached_only")
                and ctx.cached_part(f"fault_models-{case}-b{own}", spec) is None
            ):
                print(f"  {spec.label} {case}: not run yet (--cached-only): left out", flush=True)
                continue
            table = f"fault_models-{case}-b{own}"
            old = ctx.cached_part(table, spec)
            if rerun is not None and old is not None:
                new = run_case(ctx, spec, case, own, rerun)
                data = _merged(old, new, rerun)
                write_text(ctx.part_path(table, spec), json.dumps(data, indent=0, default=float))
            else:
                data = ctx.part(table, spec,
                                lambda spec=spec, case=case, own=own: run_case(ctx, spec, case, own))  # fmt: skip
            rows += data["rows"]
            pairs += data["pairs"]
            bits += data.get("bits", [])
    ctx.write_table("fault_models", COLUMNS, rows)
    ctx.write_table("fault_models_pairs", PAIR_COLUMNS, pairs)
    ctx.write_table("fault_models_bits", BIT_COLUMNS, bits)
    path = ctx.out / "fault_models.md"
    path.write_text(_markdown(rows), encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
