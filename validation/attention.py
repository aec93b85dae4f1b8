"""Attention projections against exhaustive fault injection (issue 25): the first analytical
VFs of q/k/v and output projections.

Models (random seeded weights, seeded random images): torchvision's ``VisionTransformer``
(``nn.MultiheadAttention``, fused fast path), a sequence-first ``MultiheadAttention`` whose
averaged attention weights reach the logits (the module's slow path), torchvision's Swin V1
and V2 (``qkv``/``proj`` applied by ``F.linear`` on windows; a 6x6 map padded to 8x8 for 4x4
windows, shifted in the second block). For every projection layer: the default analysis of
20% of the channels (``target`` weights and activations) against exhaustive FI of the same
channels (the engine's FI, checked fault for fault against the ground-truth oracle by
``tests/test_attention.py``), per-channel absolute error, and times.

Usage::

    OMP_NUM_THREADS=1 python validation/attention.py            # writes results/attention.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "tests"))

from test_attention import MODELS, PROJECTIONS  # noqa: E402

from pytorchfi_deepvigor import DeepVigorAnalyzer, ExhaustiveCampaign, SimulationEngine  # noqa: E402

COLUMNS = [
    "model",
    "layer",
    "part",
    "target",
    "channels",
    "images",
    "fi_mean_cvf",
    "mae",
    "max_error",
    "analysis_s",
    "exhaustive_s",
]


def _part(name: str, channel: int, out_channels: int) -> str:
    if name.endswith(("in_proj", "qkv")):
        return "qkv"[channel * 3 // out_channels]
    return "out"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--sampling", type=float, default=0.2)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "attention.csv")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for key, (make, size, _) in MODELS.items():
        torch.manual_seed(0)
        model = make().eval()
        images = torch.randn(args.images, 3, size, size, generator=torch.Generator().manual_seed(1))
        engine = SimulationEngine(model, images)
        for info in engine.catalogue:
            if not info.name.endswith(PROJECTIONS):
                continue
            for target in ("weights", "activations"):
                t = time.perf_counter()
                analysis = DeepVigorAnalyzer(engine).analyze(
                    target=target, layers=[info.layer_num], sampling=args.sampling
                )
                t_analysis = time.perf_counter() - t
                channels = list(analysis.layers[0].channels)
                t = time.perf_counter()
                fi = ExhaustiveCampaign(engine).run(
                    target, layers=[info.layer_num], channels=channels
                )
                t_fi = time.perf_counter() - t
                a, e = np.array(analysis.layers[0].cvf), np.array(fi.layers[0].cvf)
                parts = np.array([_part(info.name, c, info.out_channels) for c in channels])
                for part in dict.fromkeys(parts):
                    sel = parts == part
                    err = np.abs(a[sel] - e[sel])
                    rows.append(
                        {
                            "model": key,
                            "layer": info.name,
                            "part": part,
                            "target": target,
                            "channels": int(sel.sum()),
                            "images": args.images,
                            "fi_mean_cvf": f"{e[sel].mean():.5f}",
                            "mae": f"{err.mean():.5f}",
                            "max_error": f"{err.max():.5f}",
                            "analysis_s": f"{t_analysis:.2f}",
                            "exhaustive_s": f"{t_fi:.2f}",
                        }
                    )
                    print(" ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
