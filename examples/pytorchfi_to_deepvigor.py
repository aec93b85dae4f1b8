# %% [markdown]
# # I have a PyTorchFI weight-fault campaign: what changes with DeepVigor+, what do both give, how long do both take?
#
# The study: how vulnerable is one output channel (one filter) of one convolution to single bit
# flips in its weights? Its channel vulnerability factor (CVF) is the fraction of
# (fault, image) pairs whose top-1 class differs from the fault-free one.
#
# 1. **The existing script**: plain PyTorchFI 0.6.0 (`pytorchfi.core.fault_injection` and a
#    `declare_weight_fi` loop over every bit of every weight of the filter). PyTorchFI has no
#    IEEE-754 float flip, so the script flips the bits itself (here with `struct`).
# 2. **One changed line**: `DeepVigorFI` is a drop-in for `fault_injection`; the same loop runs
#    unchanged and gives the same CVF (exact flips, same faults, same images).
# 3. **The same study with the plugin's tools**: `ExhaustiveCampaign` runs the same faults
#    batched on the simulation engine (same CVF; the whole campaign is one call, resumable, with
#    outcome counts), and `DeepVigorAnalyzer` estimates the CVF of every channel of the layer
#    semi-analytically. The table prints the time each took on your machine.
#
# Run: `python examples/pytorchfi_to_deepvigor.py` (trains VGG-11 at width 1/8 on the digits
# on first use, cached; about a minute on 2 CPU cores) or with `--quick` (seconds). `--layer 1`
# studies a filter with 8x more weights (2,304 faults: about 8x longer).

# %%
from __future__ import annotations

import argparse
import logging
import struct
import time

import torch
from pytorchfi import core
from torch import nn

from pytorchfi_deepvigor import DeepVigorAnalyzer, DeepVigorFI, zoo
from pytorchfi_deepvigor.campaigns.exhaustive import ExhaustiveCampaign

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--quick", action="store_true", help="tiny model, 8 images, first layer")
parser.add_argument("--cache-dir", help="zoo checkpoint cache (default: ~/.cache/...)")
parser.add_argument("--layer", type=int, default=0, help="layer number (default 0)")
parser.add_argument("--channel", type=int, default=0, help="output channel (default 0)")
parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
args = parser.parse_args()
torch.set_num_threads(args.threads)  # one thread: fastest for small models on a shared CPU

width, epochs, n_images = (1 / 16, 1, 8) if args.quick else (None, None, 100)
layer = args.layer
model, record = zoo.get_trained_model("vgg11", width=width, epochs=epochs, cache_dir=args.cache_dir)
images = zoo.analysis_batch(n_images).images
print(f"VGG-11 width {record.config.width:g}, test accuracy {record.test_accuracy:.1%}, "
      f"{n_images} images, layer {layer}, channel {args.channel}")  # fmt: skip


def flip(value: float, bit: int) -> float:
    """What a PyTorchFI user writes: reinterpret the float32 as uint32 and XOR one bit."""
    (word,) = struct.unpack("<I", struct.pack("<f", value))
    return struct.unpack("<f", struct.pack("<I", word ^ (1 << bit)))[0]


# %% [markdown]
# ## 1. The existing PyTorchFI script


# %%
def campaign(pfi, model: nn.Module, images: torch.Tensor, layer: int, k: int) -> tuple[float, int]:
    """Every bit of every weight of filter ``k``: the CVF and the number of faults."""
    with torch.no_grad():
        golden = model(images).argmax(1)
    weight = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)][layer].weight
    critical = faults = 0
    for c in range(weight.shape[1]):
        for h in range(weight.shape[2]):
            for w in range(weight.shape[3]):
                for bit in range(32):
                    value = flip(weight[k, c, h, w].item(), bit)
                    corrupted = pfi.declare_weight_fi(
                        layer_num=[layer], k=[k], dim1=[c], dim2=[h], dim3=[w], value=[value]
                    )
                    with torch.no_grad():
                        logits = corrupted(images)
                    bad = (logits.argmax(1) != golden) | ~torch.isfinite(logits).all(1)
                    critical += int(bad.sum())
                    faults += 1
    return critical / (faults * len(images)), faults


shape = list(images.shape[1:])
logging.disable(logging.INFO)  # PyTorchFI 0.6.0 calls logging.basicConfig and logs at INFO
start = time.perf_counter()
pfi = core.fault_injection(model, len(images), shape, layer_types=[nn.Conv2d, nn.Linear])
cvf_plain, n_faults = campaign(pfi, model, images, layer, args.channel)
t_plain = time.perf_counter() - start
logging.disable(logging.NOTSET)

# %% [markdown]
# ## 2. The one changed line: `DeepVigorFI` instead of `core.fault_injection`

# %%
start = time.perf_counter()
fi = DeepVigorFI(model, len(images), shape, [nn.Conv2d, nn.Linear])  # was: core.fault_injection
cvf_dropin, _ = campaign(fi, model, images, layer, args.channel)
t_dropin = time.perf_counter() - start

# %% [markdown]
# ## 3. The same study with the plugin: batched exhaustive FI, and the DeepVigor+ analysis

# %%
start = time.perf_counter()
exhaustive = ExhaustiveCampaign(fi.engine(images)).run(
    "weights", layers=[layer], channels=[args.channel]
)
t_exhaustive = time.perf_counter() - start
cvf_exhaustive = exhaustive.layers[0].cvf[0]

start = time.perf_counter()
analysis = DeepVigorAnalyzer(model, images).analyze(target="weights", layers=[layer])
t_analysis = time.perf_counter() - start
row = analysis.layers[0]
cvf_analysis = row.cvf[row.channels.index(args.channel)]

# %%
print(f"\n{n_faults} faults x {n_images} images on channel {args.channel} of layer {layer}\n")
print(f"{'method':58} {'CVF':>9} {'seconds':>8} {'speed-up':>9}")
for name, cvf, seconds in (
    ("1. plain PyTorchFI loop (deep copy + full forward per fault)", cvf_plain, t_plain),
    ("2. same loop, DeepVigorFI as drop-in", cvf_dropin, t_dropin),
    ("3a. ExhaustiveCampaign (batched, network suffix only)", cvf_exhaustive, t_exhaustive),
    (f"3b. DeepVigorAnalyzer (all {len(row.channels)} channels of the layer)", cvf_analysis,
     t_analysis),
):  # fmt: skip
    print(f"{name:58} {cvf:9.5f} {seconds:8.2f} {t_plain / seconds:8.1f}x")
assert cvf_plain == cvf_dropin == cvf_exhaustive, "the three FI runs must agree exactly"
print(f"\nFI: CVF {cvf_exhaustive:.5f}; analysis: CVF {cvf_analysis:.5f} "
      f"(|error| {abs(cvf_analysis - cvf_exhaustive):.5f}); analysis LVF of the layer "
      f"{row.lvf:.5f} from {analysis.cost.image_evaluations:,} image-evaluations against "
      f"{exhaustive.cost.image_evaluations:,} for one channel of FI")  # fmt: skip
