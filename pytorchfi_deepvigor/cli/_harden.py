"""The ``harden`` subcommand: analyse, plan the protection within a budget, verify it by FI.

Private helper of :mod:`pytorchfi_deepvigor.cli`. The images the data options name are split
in order: the first ``--images`` are the analysis batch (the analysis, the plan, the
verification), the next ``--calibration`` profile the clamps (range restriction only), the next
``--holdout`` check that the protected model keeps the clean top-1 of images no step has seen.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path

import torch

from pytorchfi_deepvigor import hardening, report
from pytorchfi_deepvigor.analysis import DeepVigorAnalyzer
from pytorchfi_deepvigor.cli._commands import _claim_out
from pytorchfi_deepvigor.cli._load import load_setup
from pytorchfi_deepvigor.engine import SimulationEngine
from pytorchfi_deepvigor.report import hardening as hardening_report
from pytorchfi_deepvigor.results import VulnerabilityResult

__all__ = ["harden", "parse_budgets"]


def parse_budgets(text: str) -> tuple[float, ...]:
    """``"0.05,0.1,0.3"`` or ``"5%,10%"`` -> fractions in [0, 2]."""
    out = []
    for part in (p.strip() for p in str(text).split(",") if p.strip()):
        try:
            value = float(part[:-1]) / 100 if part.endswith("%") else float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"bad budget {part!r}: expected a fraction (0.1) or a percentage (10%)"
            ) from None
        if not 0 <= value <= 2:
            raise argparse.ArgumentTypeError(f"budget {part!r} is outside 0..200%")
        out.append(value)
    if not out:
        raise argparse.ArgumentTypeError("expected at least one budget")
    return tuple(out)


def _one_budget(text: str) -> float:
    values = parse_budgets(text)
    if len(values) != 1:
        raise argparse.ArgumentTypeError(
            f"--budget takes one budget, got {len(values)}; --curve takes a list"
        )
    return values[0]


def parse_mechanisms(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    bad = [n for n in names if n not in (*hardening.MECHANISMS, "clamp")]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown mechanisms {bad or names}: expected a comma list of tmr, ecc, clamp"
        )
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("hardening")
    group.add_argument("--budget", type=_one_budget, default=0.1,
                       help="overhead budget of the plan: a fraction or percentage (default 10%%): its "
                       "costs (a TMR channel: the larger of its MAC and memory shares; ECC: its "
                       "check bits' share of memory) add up to at most this")  # fmt: skip
    group.add_argument("--mechanisms", type=parse_mechanisms, default=("tmr", "ecc"),
                       help="comma list of tmr (channel triplication), ecc (weight-bit ECC), "
                       "clamp (range restriction, re-analysed) (default tmr,ecc)")  # fmt: skip
    group.add_argument("--strategy", choices=hardening.STRATEGIES, default="planner",
                       help="planner (default: the optimum) or a baseline: first-layers, "
                       "weights (largest layers first), random")  # fmt: skip
    group.add_argument("--curve", type=parse_budgets, default=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5),
                       help="budgets of the MVF-overhead curve (pareto.csv/png)")  # fmt: skip
    group.add_argument("--result", help="plan on this analysis result.json (of the same model and "
                       "images, both targets) instead of analysing")  # fmt: skip
    group.add_argument("--sampling", type=_sampling, default=0.25,
                       help="channel ratio of the analyses, or complete (default 0.25; channels "
                       "not analysed take their layer's LVF)")  # fmt: skip
    group.add_argument("--calibration", type=int, default=200,
                       help="images after the analysis batch that profile the clamps (default 200)")  # fmt: skip
    group.add_argument("--holdout", type=int, default=200,
                       help="images after those that check the clean top-1 (default 200; 0: none)")  # fmt: skip
    group.add_argument("--verify", choices=("both", "analysis", "sfi", "none"), default="both",
                       help="measure the protected model by the analysis and/or data-aware SFI "
                       "(default both)")  # fmt: skip
    group.add_argument("--e", type=float, default=0.02, help="SFI error margin (default 0.02)")
    group.add_argument("--t", type=float, default=2.58, help="SFI quantile (default 2.58: 99%%)")


def _sampling(text: str) -> float | None:
    if text == "complete":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'complete' or a ratio in (0, 1], got {text!r}"
        ) from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a ratio in (0, 1], got {text!r}")
    return value


def _split(args: argparse.Namespace):  # noqa: ANN202
    n = args.images
    extra = (args.calibration if "clamp" in args.mechanisms else 0) + max(args.holdout, 0)
    if args.calibration < 0 or args.holdout < 0:
        raise ValueError("--calibration and --holdout count images: give 0 or more")
    if "clamp" in args.mechanisms and args.calibration < 1:
        raise ValueError(
            "--mechanisms clamp profiles its bounds on --calibration images: give 1 or more"
        )
    loading = copy.copy(args)
    loading.images = n + extra
    setup = load_setup(loading)
    images = setup.images.images
    if len(images) < n + extra:
        raise ValueError(
            f"the data set gave {len(images)} images, fewer than --images {n} + --calibration + "
            f"--holdout ({n + extra}): lower them"
        )
    calibration = images[n : n + args.calibration] if "clamp" in args.mechanisms else images[:0]
    holdout = images[n + len(calibration) : n + len(calibration) + args.holdout]
    return setup, images[:n], calibration, holdout


def harden(args: argparse.Namespace) -> int:
    """``harden``: the plan, its curve and its verification, written to ``--out``."""
    started = time.perf_counter()
    with _claim_out(args):
        setup, images, calibration, holdout = _split(args)
        model = setup.model
        budget = args.budget
        mechs = tuple(m for m in args.mechanisms if m != "clamp")
        if not mechs:
            raise ValueError(
                "--mechanisms needs tmr or ecc beside clamp; for the clamps alone give "
                "--mechanisms tmr,clamp --budget 0"
            )
        ranges = None
        analysed = model
        if "clamp" in args.mechanisms:
            ranges = hardening.restrict_ranges(model, calibration, layers=args.layers)
            names = {i.layer_num: i.name for i in SimulationEngine(model, images[:1]).catalogue}
            analysed = hardening.clamped(model, ranges, names)
            where = "every layer" if args.layers is None else f"layers {args.layers}"
            print(f"clamps profiled on {len(calibration)} calibration images, {where}")
        if args.result and ranges is not None:
            raise ValueError(
                "--result is an analysis of the unclamped model: drop --result to analyse the "
                "clamped one"
            )

        def analyse(net: torch.nn.Module, what: str) -> VulnerabilityResult:
            print(f"analysing {what} ({len(images)} images, both targets, sampling "
                  f"{'complete' if args.sampling is None else args.sampling})")  # fmt: skip
            return DeepVigorAnalyzer(net, images, device=args.device, model_name=setup.label).analyze(
                target="both", layers=args.layers, sampling=args.sampling, seed=args.seed,
                progress=args.progress,
            )  # fmt: skip

        unclamped = None
        if args.result:
            result = VulnerabilityResult.from_json(Path(args.result))
        else:
            result = analyse(model, setup.label)
        if ranges is not None:
            unclamped = result
            result = analyse(analysed, f"{setup.label} clamped")
            print(
                f"total MVF {unclamped.mvf_total:.4%} unprotected, {result.mvf_total:.4%} clamped"
            )
        plan = hardening.harden(result, budget, mechs, strategy=args.strategy, seed=args.seed,
                                ranges=ranges, model=analysed)  # fmt: skip
        curve = hardening.curve(result, args.curve, [("tmr",), ("ecc",), ("tmr", "ecc")],
                                hardening.STRATEGIES, seed=args.seed, ranges=ranges, model=analysed)  # fmt: skip
        if unclamped is not None:
            plan = dataclasses.replace(
                plan, options={**plan.options, "unclamped_mvf": unclamped.mvf_total}
            )
        print(hardening_report.format_plan(plan))
        verification = None
        if args.verify != "none":
            verification = hardening.verify(
                plan, model, images, sfi=args.verify in ("both", "sfi"),
                analysis=args.verify in ("both", "analysis"), e=args.e, t=args.t, seed=args.seed,
                sampling=args.sampling, holdout=holdout if len(holdout) else None, progress=args.progress,
            )  # fmt: skip
            print(hardening_report.format_verification(verification))
        files = hardening_report.write_hardening_report(plan, args.out, verification, curve)
        files.update(report.write_report(result, Path(args.out) / "analysis"))
        run = {**setup.info, "command": ["pytorchfi-deepvigor", *args.argv],
               "wall_time_s": time.perf_counter() - started}  # fmt: skip
        (Path(args.out) / "run.json").write_text(json.dumps(run, indent=1, default=str) + "\n")
        print(f"wrote {', '.join(str(p) for p in files.values())}")
    return 0
