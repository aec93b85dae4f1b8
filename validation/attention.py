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

Trained: the zoo's ViT trained on the digits (``zoo.get_trained_model("vit")``), twice: as
the zoo builds it (``qkv``/``proj`` Linear modules, as timm's ViT) and ported to
``nn.MultiheadAttention`` with the very same trained weights (``in_proj_weight`` is the ``qkv``
weight, ``out_proj`` the ``proj``: the packing is the same), so its projections go through the
twin and the fused kernel; 64 digits; the two must agree, and both are judged against
exhaustive FI. Random-weight models say little (their q/k faults are rarely critical); these do.

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
from torch import nn  # noqa: E402

from pytorchfi_deepvigor import (  # noqa: E402
    DeepVigorAnalyzer,
    ExhaustiveCampaign,
    SimulationEngine,
    zoo,  # noqa: E402
)


class _PortedAttention(nn.Module):
    """The zoo ViT's attention on ``nn.MultiheadAttention``, with the zoo module's weights."""

    def __init__(self, zoo_attention: nn.Module) -> None:
        super().__init__()
        qkv, proj = zoo_attention.qkv, zoo_attention.proj
        self.attn = nn.MultiheadAttention(qkv.in_features, zoo_attention.heads, batch_first=True)
        with torch.no_grad():
            self.attn.in_proj_weight.copy_(qkv.weight)
            self.attn.in_proj_bias.copy_(qkv.bias)
            self.attn.out_proj.weight.copy_(proj.weight)
            self.attn.out_proj.bias.copy_(proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


def trained_models() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    """The trained zoo ViT and its port to ``nn.MultiheadAttention``, on 64 digits."""
    import copy

    model, _ = zoo.get_trained_model("vit")
    model.eval()
    ported = copy.deepcopy(model)
    for block in ported.blocks:
        block.attn = _PortedAttention(block.attn)
    ported.eval()
    images = zoo.analysis_batch(64).images
    with torch.no_grad():
        a, b = model(images), ported(images)
    assert torch.equal(a.argmax(1), b.argmax(1)), "the port changed a prediction"
    print(f"trained vit: port max |logit difference| {float((a - b).abs().max()):.2e}")
    return {"trained-vit-linear": (model, images), "trained-vit-mha": (ported, images)}


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


TRAINED_CHANNELS = 6  # per projection layer of the trained ViT: exhaustive FI is the cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--sampling", type=float, default=0.2)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "attention.csv")
    parser.add_argument("--random-only", action="store_true", help="skip the trained ViT")
    parser.add_argument(
        "--trained-only",
        action="store_true",
        help="only the trained ViT, its rows replacing those of an existing --out file",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows: list[dict[str, object]] = []
    runs: dict[str, tuple[nn.Module, torch.Tensor, tuple[str, ...], float | None]] = {}
    if args.trained_only and args.out.exists():
        with args.out.open(newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if not r["model"].startswith("trained")]
    if not args.trained_only:
        for key, (make, size, _) in MODELS.items():
            torch.manual_seed(0)
            generator = torch.Generator().manual_seed(1)
            images = torch.randn(args.images, 3, size, size, generator=generator)
            runs[key] = (make().eval(), images, ("weights", "activations"), args.sampling)
    if not args.random_only:
        # weights only, TRAINED_CHANNELS channels of the first and last block's projections:
        # exhaustive operand FI of a token layer on 64 images is hours here
        for key, (model, images) in trained_models().items():
            runs[key] = (model, images, ("weights",), None)
    for key, (model, images, targets, sampling) in runs.items():
        engine = SimulationEngine(model, images)
        chosen = [i for i in engine.catalogue if i.name.endswith(PROJECTIONS)]
        if sampling is None:  # the trained ViT: the first and the last block
            blocks = sorted({i.name.split(".")[1] for i in chosen}, key=int)
            chosen = [i for i in chosen if i.name.split(".")[1] in (blocks[0], blocks[-1])]
        for info in chosen:
            share = sampling or (TRAINED_CHANNELS - 0.5) / info.out_channels
            for target in targets:
                t = time.perf_counter()
                analysis = DeepVigorAnalyzer(engine).analyze(
                    target=target, layers=[info.layer_num], sampling=share
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
                    rows.append({
                        "model": key, "layer": info.name, "part": part, "target": target,
                        "channels": int(sel.sum()), "images": len(images),
                        "fi_mean_cvf": f"{e[sel].mean():.5f}", "mae": f"{err.mean():.5f}",
                        "max_error": f"{err.max():.5f}", "analysis_s": f"{t_analysis:.2f}",
                        "exhaustive_s": f"{t_fi:.2f}",
                    })  # fmt: skip
                    print(" ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
                _write(args.out, rows)  # after every layer: a stopped run keeps what it did
    print(f"wrote {args.out}")


def _write(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
