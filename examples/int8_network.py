# %% [markdown]
# # How vulnerable is the int8 network I deploy, and does the analysis agree with FI on it?
#
# A network served on a CPU or an edge accelerator is often int8: post-training quantized with
# `torch.ao.quantization` (weights int8 per output channel, activations `quint8`). Its faults
# hit 8-bit words, and a fault's effect is decided by its quantized kernels (requantisation,
# saturation), so the VFs of its float32 twin are not its VFs.
#
# The steps: quantize the zoo's VGG-11 (trained on the digits, cached) on calibration images
# that are not the analysis batch (`zoo.quantize_int8`), analyse both targets (the fault model
# is `int8`: one bit of one stored word, the default on such a network), check a few channels
# by exhaustive fault injection (which writes the faulty word into the layer's packed weight and
# runs its kernel), show which bits matter, and check that the model was left as it was.
#
# Run: `python examples/int8_network.py` (trains VGG-11 on first use, cached; about a minute on
# 2 CPU cores) or with `--quick` (seconds).

# %%
from __future__ import annotations

import argparse

import torch

from pytorchfi_deepvigor import DeepVigorAnalyzer, ExhaustiveCampaign, compare, zoo

parser = argparse.ArgumentParser(description="DeepVigor+ on an int8 network")
parser.add_argument("--quick", action="store_true", help="tiny model, 16 images, two layers")
parser.add_argument("--cache-dir", help="zoo checkpoint cache (default: ~/.cache/...)")
parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
args = parser.parse_args()
torch.set_num_threads(args.threads)
width, epochs, n_images = (1 / 16, 1, 16) if args.quick else (None, None, 100)

# %% [markdown]
# ## The int8 network: calibrated on images 100-299, analysed on images 0-99

# %%
model, record = zoo.get_trained_model("vgg11", width=width, epochs=epochs, cache_dir=args.cache_dir)
images = zoo.analysis_batch(n_images).images
calibration = zoo.analysis_batch(2 * n_images, offset=n_images).images
int8 = zoo.quantize_int8(model, calibration)
before = {k: v.int_repr().clone() if v.is_quantized else v for k, v in int8.state_dict().items()
          if isinstance(v, torch.Tensor)}  # fmt: skip
labels = zoo.analysis_batch(n_images).labels
with torch.no_grad():
    float_acc = (model(images).argmax(1) == labels).float().mean().item()
    int8_acc = (int8(images).argmax(1) == labels).float().mean().item()
print(f"top-1 on the analysis images: float32 {float_acc:.2%}, int8 {int8_acc:.2%}")

# %% [markdown]
# ## The analysis: both targets, a quarter of the channels

# %%
analyzer = DeepVigorAnalyzer(int8, images)
layers = [0, len(analyzer.engine.catalogue) - 1] if args.quick else None
result = analyzer.analyze(target="both", layers=layers, sampling=0.25)
print(f"fault model {result.options['fault_model']}, words {result.options['number_format']}")
for layer in result.layers:
    print(f"  {layer.name:12s} {layer.target:11s} LVF {layer.lvf:.5f}")
print(f"total MVF (paper Eq. 15): {result.mvf_total:.5f}")

# %% [markdown]
# ## Fault injection on the same channels of two layers: the analysis against it

# %%
check = [0, len(analyzer.engine.catalogue) - 1]
channels = {n: list(result.layer(n, "weights").channels[:2]) for n in check}
fi = ExhaustiveCampaign(analyzer.engine).run("weights", layers=check, channels=channels)
cmp = compare(result, fi, target="weights")
print(f"weights, {cmp.n_channels} channels: MAE {100 * cmp.mae:.3f} points against FI "
      f"({fi.cost.faults:,} faults x {n_images} images)")  # fmt: skip

# %% [markdown]
# ## Which bits matter: the VF of each bit of the int8 weights (LSB = bit 0, bit 7 the sign),
# from the analysis, for its most vulnerable layer

# %%
worst = max((x for x in result.layers if x.target == "weights" and x.bit_vf), key=lambda x: x.lvf)
assert worst.bit_vf is not None
print(f"bit VF ({worst.name}):", " ".join(f"b{b}:{v:.4f}" for b, v in enumerate(worst.bit_vf)))

# %%
after = {k: v.int_repr() if v.is_quantized else v for k, v in int8.state_dict().items()
         if isinstance(v, torch.Tensor)}  # fmt: skip
print("model left unchanged:", all(torch.equal(before[k], after[k]) for k in before))
