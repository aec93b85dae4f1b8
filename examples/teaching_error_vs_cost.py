# %% [markdown]
# # How many simulations does each method need to reach a given error in the vulnerability factor?
#
# A teaching experiment on a small VGG-11 trained on the digits, weight faults (single bit
# flips), a few layers. The reference is **exhaustive FI**: every bit of every weight of the
# layers, on every image; its layer VFs (LVFs) are exact for this batch of images. Against it:
#
# * **statistical FI** (SFI), each variant (network-wise, layer-wise, data-unaware, data-aware)
#   run at several requested error margins `e` (99% confidence): a smaller `e` draws more faults;
# * the **DeepVigor+ analysis**, sampled at several channel ratios and complete.
#
# The error of a method is the mean over layers of |LVF - exhaustive LVF|; its cost is the
# number of simulations, counted as image-evaluations / images (one simulation = the network
# run once on the whole batch, as one fault of FI costs). Written: `error_vs_cost.png` and
# `error_vs_cost.csv` in `--out`.
#
# Run: `python examples/teaching_error_vs_cost.py` (a few minutes on 2 CPU cores) or `--quick`.

# %%
from __future__ import annotations

import argparse
import csv
import warnings
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pytorchfi_deepvigor import DeepVigorAnalyzer, SimulationEngine, VulnerabilityResult, zoo
from pytorchfi_deepvigor.campaigns.exhaustive import ExhaustiveCampaign
from pytorchfi_deepvigor.campaigns.statistical import VARIANTS, StatisticalCampaign

parser = argparse.ArgumentParser(description="VF error against simulations, per method")
parser.add_argument("--quick", action="store_true", help="8 images, the classifier only")
parser.add_argument("--out", default="teaching-out", help="output folder")
parser.add_argument("--cache-dir", help="zoo checkpoint cache")
parser.add_argument("--seed", type=int, default=0, help="seed of every draw")
parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
args = parser.parse_args()
torch.set_num_threads(args.threads)  # one thread: fastest for small models on a shared CPU

if args.quick:
    epochs, n_images, layers = 1, 8, [8]
    margins, ratios = [0.1, 0.05], [0.5, None]
else:
    epochs, n_images, layers = None, 20, [0, 8]
    margins, ratios = [0.2, 0.1, 0.05, 0.02, 0.01], [0.1, 0.25, 0.5, None]
model, record = zoo.get_trained_model(
    "vgg11", width=1 / 16, epochs=epochs, cache_dir=args.cache_dir
)
images = zoo.analysis_batch(n_images).images
engine = SimulationEngine(model, images)
print(f"VGG-11 width 1/16 (test accuracy {record.test_accuracy:.1%}), {n_images} images, "
      f"weight faults in layers {layers}")  # fmt: skip


def simulations(result: VulnerabilityResult) -> float:
    return result.cost.image_evaluations / result.n_images


def error(result: VulnerabilityResult, reference: dict[int, float]) -> float:
    lvf = result.lvf("weights")
    return sum(abs(lvf[n] - reference[n]) for n in lvf) / len(lvf)


# %% [markdown]
# ## The reference: exhaustive FI

# %%
exhaustive = ExhaustiveCampaign(engine).run("weights", layers=layers, seed=args.seed, progress=True)
reference = exhaustive.lvf("weights")
rows = [("exhaustive FI", "", simulations(exhaustive), 0.0, "")]

# %% [markdown]
# ## Statistical FI, each variant at each margin

# %%
sfi = StatisticalCampaign(engine)
for variant in VARIANTS:
    for e in margins:
        with warnings.catch_warnings():  # a margin above e is reported in the table instead
            warnings.simplefilter("ignore")
            result = sfi.run(variant, layers=layers, e=e, seed=args.seed, progress=True)
        margin = max(x.margin for x in result.layers if x.margin is not None)
        rows.append((f"SFI {variant}", f"e={e:g}", simulations(result), error(result, reference),
                     f"{margin:.4f}"))  # fmt: skip

# %% [markdown]
# ## The DeepVigor+ analysis, sampled and complete

# %%
analyzer = DeepVigorAnalyzer(engine)
for ratio in ratios:
    result = analyzer.analyze(target="weights", layers=layers, sampling=ratio, seed=args.seed)
    name = "complete" if ratio is None else f"sampling {ratio:g}"
    rows.append(("DeepVigor+", name, simulations(result), error(result, reference), ""))

# %%
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
with (out / "error_vs_cost.csv").open("w", newline="") as handle:
    writer = csv.writer(handle)
    writer.writerow(["method", "setting", "simulations", "lvf_error", "achieved_margin"])
    writer.writerows(rows)
print(f"\n{'method':22} {'setting':14} {'simulations':>12} {'|LVF error|':>12} {'margin':>8}")
for method, setting, sims, err, margin in rows:
    print(f"{method:22} {setting:14} {sims:12,.0f} {err:12.5f} {margin:>8}")

floor = 1e-5  # an error of 0 is drawn here on the log scale
fig = Figure(figsize=(7, 4.5))
FigureCanvasAgg(fig)
ax = fig.add_subplot()
for method in dict.fromkeys(r[0] for r in rows[1:]):
    points = [r for r in rows if r[0] == method]
    ax.plot([p[2] for p in points], [max(p[3], floor) for p in points], "o-", label=method)
    for p in points:
        ax.annotate(p[1], (p[2], max(p[3], floor)), fontsize=6, xytext=(3, 3),
                    textcoords="offset points")  # fmt: skip
ax.axvline(rows[0][2], color="black", linestyle="--", linewidth=1, label="exhaustive FI (error 0)")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("simulations (image-evaluations / images)")
ax.set_ylabel("mean |LVF - exhaustive LVF| over layers")
ax.set_title(f"VF error vs cost: VGG-11 w1/16, layers {layers}, {n_images} images", fontsize=9)
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(out / "error_vs_cost.png", dpi=120)
print(f"\nwrote {out / 'error_vs_cost.png'} and {out / 'error_vs_cost.csv'}")
