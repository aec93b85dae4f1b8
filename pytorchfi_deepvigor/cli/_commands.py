"""The subcommands of :mod:`pytorchfi_deepvigor.cli`: each takes the parsed arguments, prints
what a user reads on stdout (progress and messages on stderr), writes its files and returns
the exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shlex
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from pytorchfi_deepvigor import distributed, report
from pytorchfi_deepvigor._guard import DEVICE_HINT, check_device, check_output_dir
from pytorchfi_deepvigor._lock import FolderInUse, FolderLock, is_lock_file
from pytorchfi_deepvigor.analysis import DeepVigorAnalyzer
from pytorchfi_deepvigor.campaigns.exhaustive import ExhaustiveCampaign
from pytorchfi_deepvigor.campaigns.statistical import StatisticalCampaign
from pytorchfi_deepvigor.catalogue import build_catalogue
from pytorchfi_deepvigor.cli._load import default_width, load_setup, train_zoo_model
from pytorchfi_deepvigor.engine import SimulationEngine
from pytorchfi_deepvigor.results import ComparisonWarning, Cost, VulnerabilityResult
from pytorchfi_deepvigor.results import compare as compare_results
from pytorchfi_deepvigor.twins import twin_view
from pytorchfi_deepvigor.zoo.cache import DamagedCacheFile, read_cache_file, resolve_cache_dir
from pytorchfi_deepvigor.zoo.models import (
    DEFAULT_WIDTHS,
    INPUT_SIZE_MULTIPLE,
    TORCHVISION_PREFIX,
    build_model,
    count_parameters,
    list_models,
)
from pytorchfi_deepvigor.zoo.train import DEFAULT_EPOCHS, TrainingConfig

__all__ = ["analyze", "compare", "demo", "inject", "resume_command", "train", "zoo"]

PROG = "pytorchfi-deepvigor"


def _with_run_info(result: VulnerabilityResult, info: dict[str, Any], args: Any) -> Any:
    """The result with what produced it (model, data, command line) under ``options["run"]``."""
    run = {**info, "command": [PROG, *args.argv]}
    return dataclasses.replace(result, options={**result.options, "run": run})


def _finish(result: VulnerabilityResult, out: str) -> None:
    world = distributed.detect()
    if world is not None and not world.main:
        return  # under torchrun every rank holds the merged result; rank 0 writes it
    files = report.write_report(result, out)
    print(report.format_table(result))
    print(report.format_summary(result))
    print(f"wrote {', '.join(str(p) for p in files.values())}")


def _run_analysis(args: argparse.Namespace) -> VulnerabilityResult:
    setup = load_setup(args)
    analyzer = DeepVigorAnalyzer(
        setup.model, setup.images.images, device=args.device, model_name=setup.label
    )
    result = analyzer.analyze(
        target=args.target,
        layers=args.layers,
        sampling=args.sampling,
        search=args.search,
        aggregate=args.aggregate,
        seed=args.seed,
        progress=args.progress,
        fault_model=args.fault_model,
    )
    return _with_run_info(result, setup.info, args)


@contextlib.contextmanager
def _claim_out(args: argparse.Namespace) -> Iterator[None]:
    """``--device`` checked, ``--out`` checked (a folder that can be created and written) and
    locked for the block, before any work. A folder this run created is removed again when the
    command fails before writing anything into it.

    Raises:
        ValueError: ``--out`` is empty, a file, or cannot be created or written; ``--device``
            does not exist here.
        FolderInUse: another run holds the folder (the message names it).
    """
    try:
        check_device(args.device)
    except ValueError as exc:
        raise ValueError(str(exc).replace(DEVICE_HINT, "use --device cpu")) from None
    out = args.out
    created = isinstance(out, str) and bool(out.strip()) and not Path(out).exists()
    folder = check_output_dir(out, "--out")
    world = distributed.detect()
    if world is not None and not world.main:  # torchrun: rank 0 holds --out for the job
        yield
        return
    try:
        lock = FolderLock(folder, "--out").acquire()
    except FolderInUse:
        raise
    except OSError as exc:
        raise ValueError(f"cannot write into --out {out}: {exc.strerror or exc}") from None
    try:
        yield
    except BaseException:
        lock.release()
        if created:
            _remove_if_only_locks(folder)
        raise
    finally:
        lock.release()


def _remove_if_only_locks(folder: Path) -> None:
    """Remove ``folder`` when it holds nothing but lock files (and folders of them)."""
    files = [p for p in folder.rglob("*") if not p.is_dir()]
    if all(is_lock_file(p) for p in files):
        shutil.rmtree(folder, ignore_errors=True)


def analyze(args: argparse.Namespace) -> int:
    """``analyze``: DeepVigor+ on the model and images the options name."""
    with _claim_out(args):
        _finish(_run_analysis(args), args.out)
    return 0


def demo(args: argparse.Namespace) -> int:
    """``demo``: ``analyze`` with the demo's defaults, timed, ending with the total MVF."""
    start = time.perf_counter()
    with _claim_out(args):
        return _demo(args, start)


def _demo(args: argparse.Namespace, start: float) -> int:
    name = args.model or "vgg11"
    world = distributed.detect()
    main = world is None or world.main  # under torchrun rank 0 speaks for the job
    if main:
        print(
            f"DeepVigor+ demo: {name} (width {default_width(name, args.width):g}) trained on "
            f"scikit-learn's digits, {args.images} analysis images, target {args.target}, "
            f"sampling {'complete' if args.sampling is None else f'{args.sampling:g}'}"
        )
    result = _run_analysis(args)
    _finish(result, args.out)
    total = result.mvf_total
    if main and total is not None:
        print(f"total MVF (paper Eq. 15): {total:.5f}")
    if main:
        print(f"demo finished in {time.perf_counter() - start:.1f} s")
    return 0


def resume_command(argv: list[str]) -> str:
    """The shell command that reruns this invocation from this folder (without ``--restart``)."""
    head = sys.argv[0] if sys.argv and sys.argv[0] else PROG
    name = Path(head).name
    if name == "__main__.py" and Path(head).parent.name == "pytorchfi_deepvigor":
        prefix = [sys.executable, "-m", "pytorchfi_deepvigor"]
    elif name.startswith(PROG):
        prefix = [head]
    else:  # called as a function (a notebook, the tests)
        prefix = [PROG]
    words = prefix + [a for a in argv if a != "--restart"]
    return f"cd {shlex.quote(os.getcwd())} && {shlex.join(words)}"


def _check_inject(args: argparse.Namespace) -> None:
    exhaustive = args.campaign == "exhaustive"
    if exhaustive and (args.e is not None or args.t is not None):
        raise ValueError(
            "--e and --t set the margin of SFI campaigns, not of --campaign exhaustive"
        )
    if not exhaustive and args.channel_ratio is not None:
        raise ValueError("--channel-ratio applies to --campaign exhaustive only")
    if args.prior is not None and args.campaign != "data-aware":
        raise ValueError("--prior applies to --campaign data-aware only")


def _campaign(
    engine: SimulationEngine, args: argparse.Namespace, target: str, progress_dir: Path
) -> VulnerabilityResult:
    if args.campaign == "exhaustive":
        return ExhaustiveCampaign(engine, faults_per_chunk=args.chunk).run(
            target,
            layers=args.layers,
            channel_ratio=args.channel_ratio,
            fault_model=args.fault_model,
            seed=args.seed,
            progress_dir=progress_dir,
            progress=args.progress,
        )
    return StatisticalCampaign(engine, faults_per_chunk=args.chunk).run(
        args.campaign,
        target=target,
        layers=args.layers,
        e=0.01 if args.e is None else args.e,
        t=2.58 if args.t is None else args.t,
        prior=args.prior,
        fault_model=args.fault_model,
        seed=args.seed,
        progress_dir=progress_dir,
        progress=args.progress,
    )


def _merge(results: list[VulnerabilityResult], label: str) -> VulnerabilityResult:
    if len(results) == 1:
        return dataclasses.replace(results[0], model_name=label)
    first = results[0]
    cost = Cost()
    for r in results:
        cost = cost + r.cost
    merged = VulnerabilityResult.from_layers(
        first.method,
        [layer for r in results for layer in r.layers],
        options={"campaigns": [dict(r.options) for r in results]},
        seed=first.seed,
        cost=cost,
        n_images=first.n_images,
        model_name=label,
        coverage=first.coverage,
    )
    return dataclasses.replace(
        merged, ranks=distributed.merge_rank_costs(*(r.ranks for r in results))
    )


def inject(args: argparse.Namespace) -> int:
    """``inject``: an FI campaign, resumable from ``OUT/progress`` after Ctrl-C or a crash."""
    _check_inject(args)
    with _claim_out(args):
        return _inject(args)


def _inject(args: argparse.Namespace) -> int:
    setup = load_setup(args)
    progress_dir = Path(args.out) / "progress"
    world = distributed.detect()
    if args.restart and (world is None or world.main):
        for pattern in ("*.progress.jsonl", "rank*/*.progress.jsonl"):  # rank*: torchrun's
            for path in progress_dir.glob(pattern):
                path.unlink()
    if world is not None:
        distributed.barrier(world)  # no rank opens its progress before rank 0 cleared it
    targets = ["weights", "activations"] if args.target == "both" else [args.target]
    try:
        engine = SimulationEngine(setup.model, setup.images.images, device=args.device)
        results = [_campaign(engine, args, target, progress_dir) for target in targets]
    except KeyboardInterrupt:
        print(f"interrupted: the finished faults are saved in {progress_dir}", file=sys.stderr)
        print(f"resume with: {resume_command(args.argv)}", file=sys.stderr)
        return 130
    result = _with_run_info(_merge(results, setup.label), setup.info, args)
    _finish(result, args.out)
    return 0


def _load_result(path: str, which: str) -> VulnerabilityResult:
    """A result file, or a ``ValueError`` naming which file is bad and why, in one line."""
    try:
        return VulnerabilityResult.from_json(Path(path))
    except OSError as exc:
        raise ValueError(f"cannot read {which} {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        reason = str(exc).removeprefix(f"result file {Path(path)}")
        if reason.startswith(":"):  # a field: say it is a result.json that cannot be used
            reason = f" is not a usable result.json{reason}"
        raise ValueError(f"{which} {path}{reason}") from None


def compare(args: argparse.Namespace) -> int:
    """``compare A B``: channel-by-channel agreement of two result files."""
    if args.out is not None:
        check_output_dir(args.out, "--out")
    a, b = _load_result(args.a, "A (the first file)"), _load_result(args.b, "B (the second file)")
    compare_results(a, b)  # warns once about what differs (models, image counts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ComparisonWarning)  # not again for each rendering
        print(report.format_comparison(a, b))
        if args.out is not None:
            files = report.write_comparison(a, b, args.out)
            print(f"wrote {', '.join(str(p) for p in files.values())}")
    return 0


def train(args: argparse.Namespace) -> int:
    """``train``: a zoo model on the digits (from the cache when there), and its accuracy."""
    if args.out is not None:
        check_output_dir(args.out, "--out")
    name = args.model or "vgg11"
    width = default_width(name, args.width)
    model, record, fresh = train_zoo_model(name, width, args)
    how = f"trained in {record.train_time_s:.1f} s" if fresh else "loaded from the cache"
    print(
        f"{name} width {width:g}: test accuracy {100 * record.test_accuracy:.2f}% on the 899 "
        f"digits test images ({record.config.epochs} epochs, seed {record.config.seed}, "
        f"{count_parameters(model):,} parameters; {how})"
    )
    print(f"checkpoint: {record.cache_path}")
    if args.out is not None:
        path = Path(args.out) / "training.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record.to_dict(), indent=1) + "\n", encoding="utf-8")
        print(f"wrote {path}")
    return 0


def _cached_accuracy(name: str, cache_dir: str | None) -> str:
    config = TrainingConfig(name, float(DEFAULT_WIDTHS[name]), DEFAULT_EPOCHS[name])
    path = resolve_cache_dir(cache_dir) / "zoo" / config.file_name()
    if not path.exists():
        return "-"
    try:
        payload = read_cache_file(path, dataclasses.asdict(config))
    except DamagedCacheFile:
        return "damaged"
    return f"{100 * payload['record']['test_accuracy']:.2f}%"


def zoo(args: argparse.Namespace) -> int:
    """``zoo``: the models with their validation widths, or one model's layer catalogue."""
    if args.model is None:
        rows = []
        for name in list_models():
            width = DEFAULT_WIDTHS[name]
            params = count_parameters(build_model(name, width=width, in_channels=1))
            rows.append([name, f"{width:g}", DEFAULT_EPOCHS[name], INPUT_SIZE_MULTIPLE[name],
                         f"{params:,}", _cached_accuracy(name, args.cache_dir)])  # fmt: skip
        header = ["model", "width", "epochs", "input multiple", "parameters", "cached accuracy"]
        print(report.format_rows(header, rows))
        print(f"also: {TORCHVISION_PREFIX}<name> for torchvision's models (random weights, or "
              "--checkpoint); 'zoo --model NAME' lists a model's layers")  # fmt: skip
        return 0
    name = args.model
    width = default_width(name, args.width)
    size = args.input_size or (224 if name.startswith(TORCHVISION_PREFIX) else 32)
    model = build_model(name, width=width, in_channels=args.in_channels, input_size=size).eval()
    example = torch.zeros(1, args.in_channels, size, size)
    catalogue = build_catalogue(twin_view(model, example), example)  # numbered as the engine
    rows = [[r["layer"], r["name"], r["type"], r["weight_shape"], r["output_shape"],
             f"{r['neurons']:,}", f"{r['weights']:,}"] for r in (i.as_row() for i in catalogue)]  # fmt: skip
    print(f"{name} at width {width:g}, input {args.in_channels}x{size}x{size}: "
          f"{len(catalogue)} injectable layers")  # fmt: skip
    print(report.format_rows(["layer", "name", "type", "weights shape", "output shape",
                              "neurons", "weights"], rows, left=3))  # fmt: skip
    return 0
