# %% [markdown]
# # How do I analyse my own torchvision model on my own local images?
#
# Any `nn.Module` classifier works: the analysis needs the model (float32, its trained weights)
# and a batch of images it takes. Here: torchvision's ResNet-18 with as many outputs as the data
# set has classes, and an ImageNet-style class folder (`<root>/<class>/<image>.png`) read from
# local disk with `zoo.load_image_folder` (nothing is downloaded).
#
# * `--data-root DIR`: your class folder. Without it, the script writes a tiny one (three
#   classes of scanned digits from scikit-learn, as RGB PNGs) into a temporary folder.
# * `--checkpoint PATH`: your weights (a `state_dict` saved with `torch.save`). Without it, the
#   model is trained for a few seeded steps on the images, as a stand-in for your weights.
#
# The steps: list the layers with PyTorchFI's numbering (`DeepVigorFI`), pick some, analyse
# both fault targets on a 10% channel sample, print the per-layer table, write the report
# files, and check that the model was left exactly as it was.
#
# Run: `python examples/own_model_local_data.py [--data-root DIR] [--checkpoint PATH]` (about a
# minute on 2 CPU cores) or with `--quick`.

# %%
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from sklearn.datasets import load_digits

from pytorchfi_deepvigor import DeepVigorAnalyzer, DeepVigorFI, report, zoo

parser = argparse.ArgumentParser(description="DeepVigor+ on your torchvision model and images")
parser.add_argument("--quick", action="store_true", help="4 images of 32x32, two layers")
parser.add_argument("--data-root", help="ImageNet-style class folder (default: a tiny one)")
parser.add_argument("--checkpoint", help="state_dict of the model (default: a few training steps)")
parser.add_argument("--model", default="resnet18", help="torchvision model name (default resnet18)")
parser.add_argument("--out", default="own-model-out", help="output folder")
parser.add_argument("--seed", type=int, default=0, help="seed of the site draw and the stand-in")
parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
args = parser.parse_args()
torch.set_num_threads(args.threads)  # one thread: fastest for small models on a shared CPU
size, n_images = (32, 4) if args.quick else (64, 30)


def tiny_class_folder(root: Path, per_class: int = 10) -> Path:
    """Three classes ('zero', 'one', 'two') of scikit-learn's 8x8 digits as 64x64 RGB PNGs."""
    digits = load_digits()
    for label, name in enumerate(("zero", "one", "two")):
        (root / name).mkdir(parents=True, exist_ok=True)
        pictures = digits.images[digits.target == label][:per_class]
        for i, picture in enumerate(pictures):
            grey = (picture * (255 / 16)).astype(np.uint8)
            image = Image.fromarray(grey).resize((64, 64), Image.BILINEAR).convert("RGB")
            image.save(root / name / f"{i:03d}.png")
    return root


# %% [markdown]
# ## Your images and your model

# %%
with tempfile.TemporaryDirectory() as scratch:
    root = Path(args.data_root) if args.data_root else tiny_class_folder(Path(scratch) / "data")
    data = zoo.load_image_folder(root, input_size=size, limit=n_images, seed=args.seed)
print(f"{len(data)} images of {size}x{size} from {len(data.classes)} classes {data.classes}")

torch.manual_seed(args.seed)
model = torchvision.models.get_model(args.model, weights=None, num_classes=len(data.classes))
if args.checkpoint:
    model.load_state_dict(torch.load(args.checkpoint, map_location="cpu", weights_only=True))
else:  # a stand-in for your trained weights: a few seeded steps on the images
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    for _ in range(5 if args.quick else 20):
        loss = torch.nn.functional.cross_entropy(model(data.images), data.labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
model.eval()
before = {k: v.clone() for k, v in model.state_dict().items()}

# %% [markdown]
# ## The layers, numbered as PyTorchFI numbers them

# %%
fi = DeepVigorFI(model, len(data), [3, size, size], [torch.nn.Conv2d, torch.nn.Linear])
table = fi.layer_table()
print(report.format_rows(["layer", "name", "type", "weights"],
                         [[r["layer"], r["name"], r["type"], r["weights"]] for r in table], left=3))  # fmt: skip
last = len(table) - 1
layers = [0, last] if args.quick else [0, last // 2, last]

# %% [markdown]
# ## Analyse, print, write

# %%
analyzer = DeepVigorAnalyzer(model, data.images, model_name=f"torchvision:{args.model}")
result = analyzer.analyze(target="both", layers=layers, sampling=0.1, seed=args.seed, progress=True)
print(report.format_table(result))
print(report.format_summary(result))
files = report.write_report(result, args.out)
print("wrote", ", ".join(str(p) for p in files.values()))

unchanged = all(torch.equal(before[k], v) for k, v in model.state_dict().items())
print(f"model left unchanged: {unchanged}; still in eval mode: {not model.training}")
assert unchanged and not model.training
