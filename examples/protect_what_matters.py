# %% [markdown]
# # Which channels and bits should I protect, and does the protection keep its promise?
#
# A worked example of the hardening planner on a VGG-11 trained on the digits:
#
# 1. the DeepVigor+ analysis of both fault targets gives each channel's and each bit's VF;
# 2. `harden` picks, within a 10% overhead budget (at most 10% more MACs and 10% more weight
#    memory), the channels to triplicate (TMR) and the weight bits to cover by ECC that lower
#    the total MVF (the paper's Eq. 15) the most, and predicts the protected model's MVF;
# 3. the same budget spent the way one would without VFs (the first layers; the largest layers;
#    at random) for comparison;
# 4. `verify` builds the protected copy (the model itself is never changed) and measures it by
#    data-aware statistical FI: is the FI-measured MVF within the margin of the prediction?
#
# Run: `python examples/protect_what_matters.py` (a few minutes on 2 CPU cores) or `--quick`.

# %%
from __future__ import annotations

import argparse

import torch

from pytorchfi_deepvigor import DeepVigorAnalyzer, zoo
from pytorchfi_deepvigor.hardening import STRATEGIES, apply, harden, verify
from pytorchfi_deepvigor.report.hardening import format_plan

parser = argparse.ArgumentParser(description="plan a protection, check it by FI")
parser.add_argument("--quick", action="store_true", help="a narrow model, 16 images")
parser.add_argument("--budget", type=float, default=0.10, help="overhead budget (0.1 = 10%%)")
parser.add_argument("--cache-dir", help="zoo checkpoint cache")
parser.add_argument("--seed", type=int, default=0, help="seed of every draw")
parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
args = parser.parse_args()
torch.set_num_threads(args.threads)

width, epochs, n_images, e = (1 / 16, 1, 16, 0.1) if args.quick else (1 / 8, None, 100, 0.02)
model, record = zoo.get_trained_model("vgg11", width=width, epochs=epochs, cache_dir=args.cache_dir)
images = zoo.analysis_batch(n_images).images
held_out = zoo.analysis_batch(200, offset=n_images).images
print(f"VGG-11 width {width:g} (test accuracy {record.test_accuracy:.1%}), {n_images} images")

# %% [markdown]
# ## The analysis: every layer, both targets, a quarter of the channels

# %%
result = DeepVigorAnalyzer(model, images).analyze(target="both", sampling=0.25, seed=args.seed)
print(f"unprotected total MVF: {result.mvf_total:.4%}")

# %% [markdown]
# ## The plan, and what the same budget buys without the VFs

# %%
plan = harden(result, args.budget, ("tmr", "ecc"), model=model)
print(format_plan(plan))
print(f"\n{'strategy':14} {'+MACs':>7} {'+memory':>8} {'predicted MVF':>14}")
for strategy in STRATEGIES:
    other = harden(
        result, args.budget, ("tmr", "ecc"), strategy=strategy, seed=args.seed, model=model
    )
    print(f"{strategy:14} {other.overhead_macs:7.1%} {other.overhead_memory:8.1%} "
          f"{other.predicted['total']:14.4%}")  # fmt: skip

# %% [markdown]
# ## The promise, checked by fault injection on the protected copy

# %%
protected = apply(plan, model)
assert torch.equal(protected.eval()(images), model.eval()(images))  # fault-free: the same model
check = verify(plan, model, images, e=e, seed=args.seed, sampling=0.25, holdout=held_out)
print(check.summary())
print("the promise held" if check.held else "the promise did NOT hold")
