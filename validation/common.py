"""What every validation script shares: arguments, models, images, caches, CSV, the machine.

Each script builds a :class:`Context` with :func:`parse_args` and loops over its models. Per
model and table, rows are computed once and kept as a *part* under the cache directory
(``<cache>/parts/<table>/<model>.json``), so a rerun resumes where a killed run stopped and
two processes can work on different models; :meth:`Context.write_table` merges the parts of
the context's models into ``<out>/<table>.csv`` as soon as they exist.

Full mode: the four models of :data:`FULL_MODELS` at the widths stated there, the first 100
digits test images; ``--set`` picks other model sets of :data:`~validation.specs.MODEL_SETS`
(Table III runs them: the zoo's default widths, Fashion-MNIST, the transformers), whose
analysis batch is the first 100 test images of the model's data set. ``--quick``: one narrow VGG-11 trained for one epoch, 16 images, the last
three layers only, a temporary output folder unless ``--out`` is given (the test suite's smoke
run). The models are trained by the zoo (seeded, one thread) and kept in the validation cache.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # scripts run as files; the package and ``validation`` import
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from pytorchfi_deepvigor import zoo  # noqa: E402
from pytorchfi_deepvigor.engine import SimulationEngine  # noqa: E402
from pytorchfi_deepvigor.zoo.config import FASHION_MNIST_ROOT  # noqa: E402
from pytorchfi_deepvigor.zoo.datasets import load_mnist  # noqa: E402
from pytorchfi_deepvigor.zoo.train import TrainingConfig  # noqa: E402
from validation.specs import (  # noqa: E402
    CACHE_DIR,
    FULL_MODELS,
    MODEL_SETS,
    QUICK_MODELS,
    RESULTS_DIR,
    ModelSet,
    ModelSpec,
    csv_value,
    frac,
    read_csv,
    write_csv,
    write_text,
)

__all__ = [
    "CACHE_DIR",
    "FULL_MODELS",
    "MODEL_SETS",
    "QUICK_MODELS",
    "RESULTS_DIR",
    "Context",
    "ModelSet",
    "ModelSpec",
    "csv_value",
    "frac",
    "machine",
    "parse_args",
    "read_csv",
    "write_csv",
    "write_text",
]


def machine() -> dict[str, Any]:
    """The machine the numbers come from: CPU, cores, threads, load, versions."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_1min": round(load, 2),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "platform": platform.platform(terse=True),
    }


def _load_or_train(spec: ModelSpec, cache_dir: Path) -> tuple[nn.Module, float]:
    """The trained model (eval mode) and its test accuracy, from the validation cache.

    The weights are kept as a plain state dict with the record as a JSON string, a file that
    ``torch.load(weights_only=True)`` reads, under the validation's own cache directory.
    """
    fields: dict[str, Any] = {
        "width": spec.width,
        "epochs": spec.training_epochs,
        "input_size": spec.input_size,
        "dataset": spec.dataset,
        "train_limit": spec.train_limit,
    }
    config = TrainingConfig(spec.key, **fields)
    path = cache_dir / "models" / config.file_name()
    if path.exists():
        payload = torch.load(path, map_location="cpu", weights_only=True)
        model = zoo.build_model(
            spec.key, width=spec.width, in_channels=1, input_size=spec.input_size
        )
        model.load_state_dict(payload["state_dict"])
        return model.eval(), float(json.loads(payload["record"])["test_accuracy"])
    started = time.perf_counter()
    model, record = zoo.train_model(spec.key, **fields)
    print(
        f"trained {spec.tag}: test accuracy {record.test_accuracy:.4f} in "
        f"{time.perf_counter() - started:.0f} s",
        flush=True,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    record_json = json.dumps(record.to_dict(), default=str)
    torch.save({"state_dict": model.state_dict(), "record": record_json}, path)
    return model.eval(), float(record.test_accuracy)


@dataclass
class Context:
    """Options of one script run and the per-process model/engine cache."""

    quick: bool
    out: Path
    cache_dir: Path
    models: tuple[ModelSpec, ...]
    seed: int
    n_images: int
    force: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    _loaded: dict[str, tuple[nn.Module, float]] = field(default_factory=dict)
    _engines: dict[tuple[str, int], SimulationEngine] = field(default_factory=dict)

    def model(self, spec: ModelSpec) -> tuple[nn.Module, float]:
        """The trained model and its test accuracy."""
        if spec.tag not in self._loaded:
            self._loaded[spec.tag] = _load_or_train(spec, self.cache_dir)
        return self._loaded[spec.tag]

    def images(self, spec: ModelSpec, batch: int = 0) -> torch.Tensor:
        """Analysis batch ``batch``: test images ``[batch * 100, batch * 100 + n_images)``."""
        offset = batch * 100
        if spec.dataset == "fashion-mnist":
            test = load_mnist(
                FASHION_MNIST_ROOT,
                kind="fashion-mnist",
                split="test",
                limit=offset + self.n_images,
                input_size=spec.input_size,
            )
            return test.images[offset:].clone()
        return zoo.analysis_batch(self.n_images, input_size=spec.input_size, offset=offset).images

    def engine(self, spec: ModelSpec, batch: int = 0) -> SimulationEngine:
        """A simulation engine on the model and analysis batch (shared within the process)."""
        key = (spec.tag, batch)
        if key not in self._engines:
            self._engines[key] = SimulationEngine(self.model(spec)[0], self.images(spec, batch))
        return self._engines[key]

    def layers(self, spec: ModelSpec) -> list[int]:
        """Analysed layers: every one; the last three in quick mode."""
        n = len(self.engine(spec).catalogue)
        return list(range(max(0, n - 3), n)) if self.quick else list(range(n))

    def model_set(self, spec: ModelSpec) -> ModelSet:
        """The model set ``spec`` belongs to (the quick model: the validation set's options)."""
        return MODEL_SETS[spec.set_name]

    def part_path(self, table: str, spec: ModelSpec) -> Path:
        """Where :meth:`part` keeps one model's share of ``table``."""
        return self.cache_dir / "parts" / table / f"{spec.tag}-n{self.n_images}-s{self.seed}.json"

    def cached_part(self, table: str, spec: ModelSpec) -> Any | None:
        """A model's cached share of ``table``, or ``None`` when it was never computed."""
        path = self.part_path(table, spec)
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def part(self, table: str, spec: ModelSpec, compute: Callable[[], Any]) -> Any:
        """One model's share of a table (JSON data): from the cached part, or computed and cached."""
        path = self.part_path(table, spec)
        if path.exists() and not self.force:
            return json.loads(path.read_text(encoding="utf-8"))
        started = time.perf_counter()
        data = compute()
        write_text(path, json.dumps(data, indent=0, default=float))
        print(f"[{table}] {spec.label} done in {time.perf_counter() - started:.0f} s", flush=True)
        return data

    def write_table(self, table: str, columns: Sequence[str], rows: list[dict[str, Any]]) -> Path:
        """Write ``<out>/<table>.csv`` and say so."""
        path = write_csv(self.out / f"{table}.csv", columns, rows)
        print(f"wrote {path} ({len(rows)} rows)", flush=True)
        return path


def parse_args(
    description: str,
    argv: Sequence[str] | None = None,
    extra: Sequence[tuple[str, type, Any, str]] = (),
) -> Context:
    """The common command line of the validation scripts.

    Args:
        description: the script's help text.
        argv: arguments (default: ``sys.argv[1:]``).
        extra: the script's own options as ``(flag, type, default, help)``; their values land
            in ``Context.extra`` under the flag's name (``--fi-faults`` -> ``fi_faults``).

    Returns:
        The run's :class:`Context` (folders created, seeds and machine printed).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="seconds: tiny model, 16 images")
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    parser.add_argument("--cache-dir", type=Path, default=None, help="models and partial results")
    parser.add_argument("--models", default=None, help="comma-separated model keys (full mode)")
    parser.add_argument(
        "--set",
        default="validation",
        help=f"comma-separated model sets of {list(MODEL_SETS)} or 'all' (full mode; "
        "Table III runs every set, the other tables the validation set)",
    )
    parser.add_argument("--seed", type=int, default=0, help="base seed of every random draw")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--force", action="store_true", help="recompute cached parts")
    for flag, kind, default, text in extra:
        parser.add_argument(flag, type=kind, default=default, help=text)
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error(f"expected --seed >= 0, got {args.seed}")
    torch.set_num_threads(max(1, args.threads))
    out = args.out or (
        Path(tempfile.mkdtemp(prefix="validation-quick-")) if args.quick else RESULTS_DIR
    )
    cache = args.cache_dir or (out / ".cache" if args.quick else CACHE_DIR)
    names = list(MODEL_SETS) if args.set == "all" else args.set.split(",")
    unknown_sets = sorted(set(names) - set(MODEL_SETS))
    if unknown_sets:
        parser.error(f"unknown sets {unknown_sets}; expected some of {list(MODEL_SETS)} or 'all'")
    models = QUICK_MODELS if args.quick else tuple(m for n in names for m in MODEL_SETS[n].models)
    if args.models:
        wanted = args.models.split(",")
        unknown = sorted(set(wanted) - {m.key for m in models})
        if unknown:
            parser.error(f"unknown models {unknown}; expected some of {[m.key for m in models]}")
        models = tuple(m for m in models if m.key in wanted)
    for folder in (out, cache):
        folder.mkdir(parents=True, exist_ok=True)
    ignore = cache / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n", encoding="utf-8")
    ctx = Context(
        args.quick,
        out,
        cache,
        models,
        args.seed,
        16 if args.quick else 100,
        args.force,
        {
            flag.lstrip("-").replace("-", "_"): getattr(args, flag.lstrip("-").replace("-", "_"))
            for flag, *_ in extra
        },
    )
    print(
        f"{Path(sys.argv[0]).name}: seed={args.seed} images={ctx.n_images} out={out} "
        f"models={[m.tag for m in models]} machine={machine()}",
        flush=True,
    )
    return ctx
