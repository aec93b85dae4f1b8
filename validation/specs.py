"""The torch-free part of the validation's shared code: paths, model specs, CSV and text files.

``report.py`` and ``run_all.py`` import only this (no torch import: they start in a moment);
``common.py`` re-exports everything here.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CACHE_DIR",
    "DEFAULT_WIDTH_MODELS",
    "FASHION_MODELS",
    "FULL_MODELS",
    "MODEL_SETS",
    "QUICK_MODELS",
    "TRANSFORMER_MODELS",
    "RESULTS_DIR",
    "ROOT",
    "TABLE3_COLUMNS",
    "TABLE3_MODEL_COLUMNS",
    "ModelSet",
    "ModelSpec",
    "frac",
    "read_csv",
    "write_csv",
    "write_text",
]

TABLE3_COLUMNS = [
    "model",
    "set",
    "dataset",
    "width",
    "input_size",
    "search",
    "aggregate",
    "default",
    "channels",
    "mae",
    "signed_err",
    "max_abs_err",
    "spearman",
]
"""Columns of table3_weights.csv and table3_activations.csv (``default`` marks the package's;
``set`` names the model set of :data:`MODEL_SETS`, ``dataset`` what the model was trained on)."""

TABLE3_MODEL_COLUMNS = TABLE3_COLUMNS[:5]
"""The columns naming a Table III row's model (model, set, dataset, width, input size), which
its pairs and coverage CSVs start with."""

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "validation" / "results"
CACHE_DIR = ROOT / "validation" / ".cache"


@dataclass(frozen=True)
class ModelSpec:
    """A zoo model as the validation trains and uses it."""

    key: str
    label: str
    width: float
    input_size: int
    epochs: int | None = None
    dataset: str = "digits"
    train_limit: int | None = None
    set_name: str = "validation"
    fi_seconds: tuple[tuple[str, float], ...] | None = None
    """Per target, this model's FI budget in estimated seconds, overriding its set's."""

    @property
    def tag(self) -> str:
        """File-name tag: key, data set (unless digits), width, input size, epochs."""
        data = "" if self.dataset == "digits" else f"-{self.dataset}"
        limit = "" if self.train_limit is None else f"-t{self.train_limit}"
        return f"{self.key}{data}-w{self.width:g}-s{self.input_size}-e{self.training_epochs}{limit}"

    @property
    def width_label(self) -> str:
        """The width as a fraction, e.g. ``1/8``."""
        return f"1/{round(1 / self.width)}" if self.width < 1 else f"{self.width:g}"

    @property
    def training_epochs(self) -> int:
        """The epochs it is trained for (the zoo's default for the model unless given)."""
        if self.epochs is not None:
            return self.epochs
        from pytorchfi_deepvigor.zoo.train import DEFAULT_EPOCHS

        return DEFAULT_EPOCHS[self.key]


#: The models of the full run. The zoo's DEFAULT_WIDTHS (1/8, MobileNetV2 1/4, 32x32 inputs)
#: cost ~100x more exhaustive FI than a 2-core CPU finishes in an hour (see README.md), so the
#: validation trains narrower models; ResNet-18 and MobileNetV2 take smaller inputs (their
#: total stride is 8; the digits are 8x8 originals), VGG needs 32x32 (five max-pools).
FULL_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("vgg11", "VGG-11", 1 / 32, 32),
    ModelSpec("vgg16", "VGG-16", 1 / 32, 32),
    ModelSpec("resnet18", "ResNet-18", 1 / 32, 16),
    ModelSpec("mobilenetv2", "MobileNetV2", 1 / 16, 8),
)
QUICK_MODELS: tuple[ModelSpec, ...] = (ModelSpec("vgg11", "VGG-11 (quick)", 1 / 32, 32, 1),)

#: What a user and the demo run: the zoo's DEFAULT_WIDTHS (1/8, MobileNetV2 1/4), 32x32.
#: VGG-11 was run first with a larger weights budget (four layers instead of two).
DEFAULT_WIDTH_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("vgg11", "VGG-11", 1 / 8, 32, set_name="default-width",
              fi_seconds=(("weights", 240.0),)),
    ModelSpec("vgg16", "VGG-16", 1 / 8, 32, set_name="default-width"),
    ModelSpec("resnet18", "ResNet-18", 1 / 8, 32, set_name="default-width"),
    ModelSpec("mobilenetv2", "MobileNetV2", 1 / 4, 32, set_name="default-width"),
)  # fmt: skip
#: The four architectures at the validation widths, trained with the zoo's recipe on a seeded
#: 12,000-image subset of Fashion-MNIST's training set (all 60,000 would take 5x longer on one
#: core), analysed on its first 100 test images.
FASHION_MODELS: tuple[ModelSpec, ...] = tuple(
    ModelSpec(
        m.key,
        m.label,
        m.width,
        m.input_size,
        dataset="fashion-mnist",
        train_limit=12_000,
        set_name="fashion-mnist",
    )
    for m in FULL_MODELS
)
#: The zoo's transformers (LayerNorm, GELU, N-D Linear layers) at their default widths.
TRANSFORMER_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("vit", "ViT", 1 / 4, 32, set_name="transformers"),
    ModelSpec("convnext", "ConvNeXt", 1 / 8, 32, set_name="transformers"),
)


@dataclass(frozen=True)
class ModelSet:
    """A set of Table III models and how their exhaustive FI is kept affordable.

    Attributes:
        name: the name ``--set`` takes and the CSVs' ``set`` column holds.
        models: the models.
        description: one line for REPORT.md and README.md.
        channels_per_layer: FI candidates drawn per layer (``None``: the paper's 15%).
        fi_seconds: per target (``weights``, ``operands``), the FI budget per model in
            estimated seconds on one core (``analyses.fi_cost_seconds``); ``None``: the fault
            budget ``--fi-faults``.
        all_variants: run every search/aggregation variant (else the default and the paper's).
    """

    name: str
    models: tuple[ModelSpec, ...]
    description: str
    channels_per_layer: int | None = None
    fi_seconds: tuple[tuple[str, float], ...] | None = None
    all_variants: bool = False

    def budget(self, target: str, spec: ModelSpec | None = None) -> float | None:
        """Estimated FI seconds of ``spec`` (default: any model of the set) for ``target``.

        ``None``: the fault budget. A model's own ``fi_seconds`` wins over the set's.
        """
        own = dict(spec.fi_seconds or ()) if spec is not None else {}
        if target in own:
            return own[target]
        return None if self.fi_seconds is None else dict(self.fi_seconds)[target]


MODEL_SETS: dict[str, ModelSet] = {
    s.name: s
    for s in (
        ModelSet(
            "validation",
            FULL_MODELS,
            "the digits, validation widths (VGG 1/32 at 32x32, ResNet-18 1/32 at 16x16, "
            "MobileNetV2 1/16 at 8x8), 15% of the channels of every layer",
            all_variants=True,
        ),
        ModelSet(
            "default-width",
            DEFAULT_WIDTH_MODELS,
            "the digits, the zoo's default widths (1/8, MobileNetV2 1/4, 32x32: what the demo "
            "and a user run), one channel per layer while the FI budget lasts",
            channels_per_layer=1,
            fi_seconds=(("weights", 60.0), ("operands", 30.0)),
        ),
        ModelSet(
            "fashion-mnist",
            FASHION_MODELS,
            "Fashion-MNIST (12,000 seeded training images), validation widths, up to two "
            "channels per layer while the FI budget lasts",
            channels_per_layer=2,
            fi_seconds=(("weights", 90.0), ("operands", 40.0)),
        ),
        ModelSet(
            "transformers",
            TRANSFORMER_MODELS,
            "the digits, the zoo's ViT (1/4) and ConvNeXt (1/8) at 32x32, one channel per "
            "layer while the FI budget lasts",
            channels_per_layer=1,
            fi_seconds=(("weights", 60.0), ("operands", 30.0)),
        ),
    )
}
"""Every Table III model set, by name (``validation`` is the one every other table uses)."""


def frac(value: float | None) -> str:
    """A fraction for a CSV cell: 6 significant digits, '' for None, 'nan' for NaN."""
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{float(value):.6g}"


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> Path:
    """Write rows (dicts holding at least ``columns``) to ``path``; floats as :func:`frac`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(
                [frac(v) if isinstance(v, float) else v for v in (row[c] for c in columns)]
            )
    return path


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path`` and move it into place (atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts of strings (empty list when the file does not exist)."""
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def csv_value(text: str) -> object:
    """A cell of :func:`read_csv` as the table's row held it: ``None`` (empty), bool, int, float
    or the string."""
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
