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
    "FULL_MODELS",
    "QUICK_MODELS",
    "RESULTS_DIR",
    "ROOT",
    "TABLE3_COLUMNS",
    "ModelSpec",
    "frac",
    "read_csv",
    "write_csv",
    "write_text",
]

TABLE3_COLUMNS = [
    "model",
    "search",
    "aggregate",
    "default",
    "channels",
    "mae",
    "signed_err",
    "max_abs_err",
    "spearman",
]
"""Columns of table3_weights.csv and table3_activations.csv (``default`` marks the package's)."""

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

    @property
    def tag(self) -> str:
        """File-name tag: key, width, input size, epochs."""
        return f"{self.key}-w{self.width:g}-s{self.input_size}-e{self.training_epochs}"

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
