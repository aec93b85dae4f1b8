"""The ``pytorchfi-deepvigor`` command (also ``python -m pytorchfi_deepvigor``).

Subcommands: ``analyze`` (DeepVigor+), ``inject`` (exhaustive or statistical FI, resumable),
``compare`` (two result files), ``harden`` (a protection plan within a budget, verified by FI),
``train`` (a zoo model on the digits, cached), ``zoo`` (the models, or one model's layer
catalogue) and ``demo`` (train and analyse the default model).
Run ``pytorchfi-deepvigor <command> --help`` for the options.

Exit status: 0 on success, 1 for an invalid value found while running (``error: <message>``
on stderr), 2 for an invalid command line (argparse), 130 when interrupted (Ctrl-C); an
interrupted ``inject`` keeps its progress and prints the command that resumes it.

Example:
    >>> build_parser().parse_args(["analyze", "--layers", "0,2", "--sampling", "0.1"]).layers
    [0, 2]
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence
from importlib import metadata
from typing import NoReturn

import torch

from pytorchfi_deepvigor.analysis.weights import AGGREGATES
from pytorchfi_deepvigor.bits import DEFAULT_FAULT_MODEL, parse_fault_model
from pytorchfi_deepvigor.cli import _commands as commands
from pytorchfi_deepvigor.cli import _harden
from pytorchfi_deepvigor.cli._load import DATASETS
from pytorchfi_deepvigor.functional.edm import SEARCHES
from pytorchfi_deepvigor.zoo.models import list_models

__all__ = ["build_parser", "main", "parse_layers", "parse_sampling"]

PROG = "pytorchfi-deepvigor"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parse_layers(text: str) -> list[int] | None:
    """``"all"`` -> ``None``; ``"0,2,5"`` or ``"0-3,7"`` -> sorted layer numbers.

    Example:
        >>> parse_layers("0-2,5"), parse_layers("all")
        ([0, 1, 2, 5], None)
    """
    if text.strip().lower() == "all":
        return None
    numbers: set[int] = set()
    try:
        for part in text.split(","):
            first, _, last = part.strip().partition("-")
            lo, hi = int(first), int(last or first)
            if lo < 0 or hi < lo:
                raise ValueError(part)
            repeated = numbers.intersection(range(lo, hi + 1))
            if repeated:  # the one check of layers: the API refuses repeats too
                raise argparse.ArgumentTypeError(
                    f"layer {min(repeated)} is given twice in {text!r}"
                )
            numbers.update(range(lo, hi + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'all' or layer numbers like 0,2,5 or 0-3, got {text!r}"
        ) from None
    return sorted(numbers)


def parse_sampling(text: str) -> float | None:
    """``"complete"`` -> ``None``; a channel ratio in (0, 1] -> that float.

    Example:
        >>> parse_sampling("complete"), parse_sampling("0.1")
        (None, 0.1)
    """
    if text.strip().lower() == "complete":
        return None
    try:
        ratio = float(text)
    except ValueError:
        ratio = float("nan")
    if not 0.0 < ratio <= 1.0:
        raise argparse.ArgumentTypeError(
            f"expected 'complete' or a channel ratio in (0, 1], got {text!r}"
        )
    return ratio


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _ratio(text: str) -> float:
    value = parse_sampling(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"expected a ratio in (0, 1], got {text!r}")
    return value


def _parents() -> dict[str, _Parser]:
    base = _Parser(add_help=False)
    base.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bars on stderr"
    )
    base.add_argument(
        "--cache-dir",
        help="zoo checkpoint cache (default: "
        "$PYTORCHFI_DEEPVIGOR_CACHE, else ~/.cache/pytorchfi_deepvigor)",
    )
    base.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: "
        "fastest for small models on a shared machine; 0: torch's default)",
    )
    base.add_argument("--verbose", action="store_true", help="log INFO messages to stderr")
    base.add_argument("--traceback", action="store_true", help="show tracebacks of errors")

    model = _Parser(add_help=False)
    group = model.add_argument_group("model")
    group.add_argument(
        "--model", help="zoo name (see the 'zoo' command) or torchvision:NAME (default vgg11)"
    )
    group.add_argument(
        "--width",
        type=float,
        help="width multiplier of a zoo model (default: its validation width, 1/8 for vgg11)",
    )
    group.add_argument(
        "--checkpoint",
        help="weights to load (a state_dict file) instead of the zoo's digits-trained model",
    )
    group.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow a checkpoint that pickles a whole module (trusted files only)",
    )
    group.add_argument(
        "--random-weights",
        action="store_true",
        help="untrained model with weights from --seed (to try the tool)",
    )
    group.add_argument("--epochs", type=_positive_int, help="training epochs of a zoo model")
    group.add_argument("--train-seed", type=int, default=0, help="training seed (default 0)")
    group.add_argument("--retrain", action="store_true", help="train again, ignore the cache")
    group.add_argument(
        "--num-classes", type=_positive_int, help="model outputs (default: the data set's classes)"
    )
    group.add_argument(
        "--format",
        dest="number_format",
        choices=("fp32", "fp16", "bf16", "int8"),
        default=None,
        help="convert the model (and the images) to this number format before the run: faults "
        "hit its 32- or 16-bit words and the network runs in it (default: the model's own); "
        "int8: post-training quantized (torch.ao, fbgemm) on the images after the analysis "
        "batch, faults hit its stored 8-bit words",
    )

    data = _Parser(add_help=False)
    group = data.add_argument_group("data")
    group.add_argument(
        "--dataset",
        choices=sorted(DATASETS),
        default="digits",
        help="analysis images (default digits: scikit-learn's, embedded)",
    )
    group.add_argument("--data-root", help="folder of a local data set (every dataset but digits)")
    group.add_argument(
        "--images",
        type=_positive_int,
        default=100,
        help="analysis images: the first N test images (default 100)",
    )
    group.add_argument(
        "--input-size",
        type=_positive_int,
        help="image side (default 32; 224 for torchvision models)",
    )
    group.add_argument(
        "--in-channels", type=_positive_int, help="image channels (default: the data set's)"
    )

    run = _Parser(add_help=False)
    group = run.add_argument_group("run")
    group.add_argument(
        "--layers",
        type=parse_layers,
        default=None,
        help="layer numbers (PyTorchFI numbering), e.g. 0,2,5 or 0-3; default all",
    )
    group.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    group.add_argument("--device", help="cpu, cuda, cuda:1, ... (default cpu)")
    group.add_argument("--out", help="output folder")
    return {"base": base, "model": model, "data": data, "run": run}  # fmt: skip


def _add_analysis_options(parser: argparse.ArgumentParser, target: str, sampling: str) -> None:
    group = parser.add_argument_group("analysis")
    group.add_argument(
        "--target",
        choices=("weights", "activations", "both", "stored"),
        default=target,
        help=f"fault target (default {target}): weights, activations (operands), both, or "
        "stored (the layers' output values: PyTorchFI's neuron faults)",
    )
    group.add_argument(
        "--sampling",
        type=parse_sampling,
        default=parse_sampling(sampling),
        help=f"'complete' or a channel ratio in (0, 1] (default {sampling})",
    )
    group.add_argument(
        "--search",
        choices=SEARCHES,
        default=SEARCHES[0],
        help="VV search: fine (default: 4 candidates per octave, every finite bin probed, "
        "non-monotone criticality scanned), extended, or paper (+-2^-10..2^10)",
    )
    group.add_argument(
        "--aggregate",
        choices=AGGREGATES,
        default=AGGREGATES[0],
        help="weight fault model: equivalent (default: the pattern's mean; filters on <= 3 input "
        "channels and 1x1 filters on <= 8 searched along their own patterns; channels-last "
        "Linears on signed tokens by the pattern's signed parts over the read tokens), gradient "
        "(first-order), position (the paper), fault (largest positional error) or rays (every "
        "convolution and token-wise Linear searched along its weights' own patterns: the most "
        "accurate, a few probes per weight and image)",
    )
    _add_fault_model(group)


def _fault_model(text: str) -> str:
    """A fault model's name, its syntax checked (its bits against fp32 here, against the
    model's own format once the model is loaded, before the engine is built)."""
    try:
        parse_fault_model(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _add_fault_model(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--fault-model",
        type=_fault_model,
        default=DEFAULT_FAULT_MODEL,
        help="flip (default: every single bit flip), stuck-at (stuck-at-0 and -1 of every "
        "bit), mbu2 or mbu3 (2 or 3 adjacent bits flipped), each optionally limited to some "
        "bits of the model's format: flip:exponent, mbu2:23-30, stuck-at:sign,exponent; or "
        "pytorchfi-int8 (PyTorchFI's 8-bit quantised flip of stored values, ranges = each "
        "layer's largest |output|)",
    )


def _add_inject_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("fault injection")
    group.add_argument(
        "--campaign",
        default="exhaustive",
        choices=("exhaustive", "network", "layer", "data-unaware", "data-aware"),
        help="exhaustive FI or an SFI variant (default exhaustive)",
    )
    group.add_argument(
        "--target",
        choices=("weights", "activations", "stored", "both"),
        default="weights",
        help="weights, activations (operands), stored "
        "activations, or both weights and activations (default weights)",
    )
    group.add_argument("--e", type=float, default=None, help="SFI error margin (default 0.01)")
    group.add_argument(
        "--t", type=float, default=None, help="SFI confidence quantile (default 2.58: 99%%)"
    )
    group.add_argument(
        "--prior",
        choices=("bit-statistics", "pilot"),
        default=None,
        help="data-aware SFI prior (default bit-statistics)",
    )
    group.add_argument(
        "--channel-ratio",
        type=_ratio,
        default=None,
        help="exhaustive: a seeded fraction of each layer's channels (default all)",
    )
    _add_fault_model(group)
    group.add_argument(
        "--chunk",
        type=_positive_int,
        default=None,
        help="faults per engine call and per progress record",
    )
    group.add_argument("--restart", action="store_true",
                       help="discard the progress saved in OUT/progress and start afresh")  # fmt: skip


def _version() -> str:
    try:
        return metadata.version("pytorchfi-deepvigor")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``pytorchfi-deepvigor`` command."""
    p = _parents()
    parser = _Parser(prog=PROG, description="DeepVigor+ vulnerability analysis and fault "
                     "injection for CNNs (a PyTorchFI plugin).")  # fmt: skip
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)  # fmt: skip
    common = [p["base"], p["model"], p["data"], p["run"]]

    analyze = sub.add_parser("analyze", parents=common, help="DeepVigor+ analysis of a model")
    _add_analysis_options(analyze, "both", "0.1")
    analyze.set_defaults(handler=commands.analyze, out="deepvigor-analysis")

    inject = sub.add_parser("inject", parents=common, help="exhaustive or statistical FI")
    _add_inject_options(inject)
    inject.set_defaults(handler=commands.inject, out="deepvigor-inject")

    comp = sub.add_parser("compare", parents=[p["base"]], help="compare two result.json files")
    comp.add_argument("a", help="first result.json (e.g. the analysis)")
    comp.add_argument("b", help="second result.json (e.g. the FI campaign)")
    comp.add_argument("--out", help="also write comparison.json, pairs.csv, cvf_scatter.png here")
    comp.set_defaults(handler=commands.compare)

    train = sub.add_parser(
        "train",
        parents=[p["base"]],
        help="train (or load from the cache) a zoo model, print its accuracy",
    )
    train.add_argument("--model", choices=list_models(), help="zoo model (default vgg11)")
    train.add_argument("--width", type=float, help="width multiplier (default: validation width)")
    train.add_argument("--epochs", type=_positive_int, help="epochs (default: the zoo's)")
    train.add_argument("--train-seed", type=int, default=0, help="training seed (default 0)")
    train.add_argument("--retrain", action="store_true", help="train again, ignore the cache")
    train.add_argument("--out", help="also write training.json here")  # fmt: skip
    train.set_defaults(handler=commands.train)

    zoo = sub.add_parser("zoo", parents=[p["base"]], help="list the zoo models, or one "
                         "model's layer catalogue with --model")  # fmt: skip
    zoo.add_argument("--model", help="show this model's layers (a zoo name or torchvision:NAME)")
    zoo.add_argument("--width", type=float, help="width multiplier (default: validation width)")
    zoo.add_argument(
        "--input-size",
        type=_positive_int,
        help="image side (default 32; 224 for torchvision models)",
    )
    zoo.add_argument(
        "--in-channels", type=_positive_int, default=1, help="image channels (default 1)"
    )
    zoo.set_defaults(handler=commands.zoo)

    harden = sub.add_parser(
        "harden",
        parents=common,
        help="plan what to protect within an overhead budget, verify it by FI",
    )
    _harden.add_arguments(harden)
    harden.set_defaults(handler=_harden.harden, out="deepvigor-harden")

    demo = sub.add_parser("demo", parents=common, help="train (first run) and analyse VGG-11 on "
                          "the digits, both targets, 10%% sampling")  # fmt: skip
    _add_analysis_options(demo, "both", "0.1")
    demo.set_defaults(handler=commands.demo, out="deepvigor-demo")
    return parser


def _show_warning(
    message: Warning | str, category: type[Warning], *_: object, **__: object
) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _one_line(error: BaseException) -> str:
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(text.split()) or type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.showwarning = _show_warning
        threads = torch.get_num_threads()
        try:
            if args.threads < 0:
                raise ValueError(f"expected --threads >= 0, got {args.threads}")
            if args.threads:
                torch.set_num_threads(args.threads)
            return int(args.handler(args))
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except (ValueError, TypeError, OSError, KeyError) as error:
            if args.traceback:
                raise
            print(f"error: {_one_line(error)}", file=sys.stderr)
            return 1
        except Exception as error:  # a bug: still no traceback unless asked for
            if args.traceback:
                raise
            print(
                f"error: {type(error).__name__}: {_one_line(error)} "
                "(rerun with --traceback and report it)",
                file=sys.stderr,
            )
            return 1
        finally:
            torch.set_num_threads(threads)
