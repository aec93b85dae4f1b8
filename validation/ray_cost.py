"""What the ray-searched layers cost and how close they read (issue 22, item 1).

The weights analysis searches a Conv2d filter on few input channels (first layers, depthwise
convolutions, narrow 1x1 convolutions) ray by ray (``pytorchfi_deepvigor/analysis/rays.py``):
exact up to the order of unprobed faults, but one search per (channel, input channel, sign,
image). For each layer below, on a seeded sample of its channels:

1. the default analysis (rays, every image by the checked bisection), its image-evaluations
   per channel, time and CVFs;
2. the same with the opt-in first-order start (``rays.FIRST_ORDER_START = True``: every
   search starts from the member a first-order model of the image's margin predicts critical
   first instead of the middle of its ray): what the start saves and what it costs in
   accuracy;
3. the paper mode (``search="paper", aggregate="position"``): the cost to stay within 3x of;
4. exhaustive weight FI of the same channels (every bit of every weight), the reference; a
   seeded sample of those faults checked by the ground-truth oracle (``tests/oracle.py``: the
   bit written into the model's own weight, its own forward), image for image.

Layers: the zoo's VGG-11 first layer (grey digits, one ray), the zoo's MobileNetV2 (its first
layer, an early and a late depthwise layer, a 1x1 expansion on 6 input channels), the first
(RGB) layers of the pretrained MTCNN RNet and ONet on LFW faces (``tests/pretrained.py``), and
with ``--large`` the pretrained EfficientNet-Lite0's RGB stem and a depthwise layer (224x224,
1,000 classes, few images: its FI takes minutes per channel).

Usage::

    OMP_NUM_THREADS=1 nice -n 10 python validation/ray_cost.py            # about 15 minutes
    python validation/ray_cost.py --cases vgg11:0 --out /tmp/rc            # one layer

Writes ``validation/results/ray_cost.csv`` and ``ray_cost.md`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from oracle import Oracle  # noqa: E402

from pytorchfi_deepvigor import DeepVigorAnalyzer, ExhaustiveCampaign, SimulationEngine  # noqa: E402
from pytorchfi_deepvigor.analysis import rays  # noqa: E402


def _validation_third_party():  # type: ignore[no-untyped-def]
    """validation/third_party.py (tests/ has a third_party module of its own)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("validation_third_party", HERE / "third_party.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_tp = _validation_third_party()
_ratio, oracle_check = _tp._ratio, _tp.oracle_check

RESULTS = HERE / "results"
CASES = {  # name: (model, layer, images, channels)
    "vgg11:0": ("zoo/vgg11", 0, 100, 4),
    "mobilenetv2:0": ("zoo/mobilenetv2", 0, 100, 4),
    "mobilenetv2:4": ("zoo/mobilenetv2", 4, 100, 4),
    "mobilenetv2:6": ("zoo/mobilenetv2", 6, 100, 4),
    "mobilenetv2:43": ("zoo/mobilenetv2", 43, 100, 4),
    "mtcnn_rnet:0": ("mtcnn_rnet", 0, 100, 4),
    "mtcnn_onet:0": ("mtcnn_onet", 0, 100, 2),
}
LARGE = {
    "efficientnet_lite0:0": ("efficientnet_lite0", 0, 8, 1),
    "efficientnet_lite0:1": ("efficientnet_lite0", 1, 8, 2),
}
FIELDS = [
    "case", "layer", "kind", "rays", "images", "channels", "default_evals", "first_order_evals",
    "paper_evals", "default_vs_paper", "fi_evals", "fi_vs_default", "default_mae",
    "default_max", "first_order_mae", "first_order_max", "paper_mae", "paper_max", "oracle_faults",
    "oracle_mismatches", "default_s", "first_order_s", "paper_s", "fi_s",
]  # fmt: skip


def _load(model: str, n: int) -> tuple[torch.nn.Module, torch.Tensor]:
    if model.startswith("zoo/"):
        from pytorchfi_deepvigor import zoo

        return zoo.get_trained_model(model[4:])[0], zoo.analysis_batch(n=n).images
    from pretrained import load

    p = load(model, n)
    return p.model, p.images


def _kind(info) -> str:  # type: ignore[no-untyped-def]
    if info.layer_num == 0:
        return "first"
    if info.groups > 1 and info.groups == info.module.in_channels:
        return "depthwise"
    return "1x1" if tuple(info.module.kernel_size) == (1, 1) else "conv"


def _analyse(engine: SimulationEngine, layer: int, ratio: float, **kw) -> tuple:  # type: ignore[no-untyped-def]
    engine.stats.image_evaluations = 0
    t = time.perf_counter()
    r = DeepVigorAnalyzer(engine).analyze(target="weights", layers=[layer], sampling=ratio, **kw)
    lay = r.layer(layer, "weights")
    return np.array(lay.cvf), engine.stats.image_evaluations, time.perf_counter() - t, lay.channels


def run_case(case: str, model: str, layer: int, n: int, k: int) -> dict[str, object]:
    net, images = _load(model, n)
    engine = SimulationEngine(net, images)
    info = engine.layer(layer)
    assert rays.uses_rays(info), f"{case}: {info.name} is not ray-searched"
    ratio = _ratio(k, info.out_channels)
    default, ev_d, t_d, channels = _analyse(engine, layer, ratio)
    start = rays.FIRST_ORDER_START
    rays.FIRST_ORDER_START = True
    try:
        first_order, ev_u, t_u, _ = _analyse(engine, layer, ratio)
    finally:
        rays.FIRST_ORDER_START = start
    paper, ev_p, t_p, _ = _analyse(engine, layer, ratio, search="paper", aggregate="position")
    engine.stats.image_evaluations = 0
    t = time.perf_counter()
    fi = ExhaustiveCampaign(engine).run("weights", layers=[layer], channels={layer: list(channels)})
    t_fi, ev_fi = time.perf_counter() - t, engine.stats.image_evaluations
    truth = np.array(fi.layers[0].cvf)
    faults, mismatches, _ = oracle_check(engine, Oracle(net, images, view=engine.model), layer,
                                         list(channels), seed=0)  # fmt: skip
    n_ch = len(channels)
    return {
        "case": case, "layer": info.name, "kind": _kind(info), "rays": rays.ray_count(info),
        "images": engine.num_images, "channels": n_ch,
        "default_evals": round(ev_d / n_ch), "first_order_evals": round(ev_u / n_ch),
        "paper_evals": round(ev_p / n_ch), "default_vs_paper": round(ev_d / ev_p, 2),
        "fi_evals": round(ev_fi / n_ch), "fi_vs_default": round(ev_fi / ev_d, 1),
        "default_mae": float(np.abs(default - truth).mean()),
        "default_max": float(np.abs(default - truth).max()),
        "first_order_mae": float(np.abs(first_order - truth).mean()),
        "first_order_max": float(np.abs(first_order - truth).max()),
        "paper_mae": float(np.abs(paper - truth).mean()),
        "paper_max": float(np.abs(paper - truth).max()),
        "oracle_faults": faults, "oracle_mismatches": mismatches,
        "default_s": round(t_d, 1), "first_order_s": round(t_u, 1), "paper_s": round(t_p, 1),
        "fi_s": round(t_fi, 1),
    }  # fmt: skip


def write_md(rows: list[dict[str, object]], path: Path, note: str) -> None:
    pts = lambda v: f"{100 * float(v):.3f}"  # noqa: E731  (a VF in percentage points)
    lines = [
        "# Ray-searched layers: cost and accuracy against exhaustive FI",
        "",
        note,
        "",
        "Image-evaluations per analysed channel; errors in percentage points of the channel VF "
        "against exhaustive weight FI of the same channels; 'oracle': sampled FI faults whose "
        "outcome differs, image for image, from the bit written into the model itself.",
        "",
        "| layer | kind | rays | images x channels | default | first-order start | paper mode | default / paper | FI | FI / default | default MAE / max | first-order MAE / max | paper MAE / max | oracle | s (default, first-order, paper, FI) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['case']} {r['layer']} | {r['kind']} | {r['rays']} | {r['images']} x "
            f"{r['channels']} | {r['default_evals']:,} | {r['first_order_evals']:,} | "
            f"{r['paper_evals']:,} | {r['default_vs_paper']}x | {r['fi_evals']:,} | "
            f"{r['fi_vs_default']}x | {pts(r['default_mae'])} / {pts(r['default_max'])} | "
            f"{pts(r['first_order_mae'])} / {pts(r['first_order_max'])} | {pts(r['paper_mae'])} / {pts(r['paper_max'])} | "
            f"{r['oracle_mismatches']} of {r['oracle_faults']} | {r['default_s']}, "
            f"{r['first_order_s']}, {r['paper_s']}, {r['fi_s']} |"
        )
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", help=f"of {sorted(CASES) + sorted(LARGE)}")
    parser.add_argument("--large", action="store_true", help="add EfficientNet-Lite0's layers")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--note", default="", help="how the run was made (for the .md)")
    args = parser.parse_args(argv)
    known = {**CASES, **LARGE}
    names = args.cases or [*CASES, *(LARGE if args.large else [])]
    unknown = [c for c in names if c not in known]
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {sorted(known)}")
    warnings.simplefilter("ignore")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for case in names:
        print(f"{case} ...", flush=True)
        rows.append(run_case(case, *known[case]))
        print({k: rows[-1][k] for k in FIELDS}, flush=True)
        with open(args.out / "ray_cost.csv", "w", newline="") as f:
            w = csv.DictWriter(f, FIELDS)
            w.writeheader()
            w.writerows(rows)
        write_md(rows, args.out / "ray_cost.md", args.note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
