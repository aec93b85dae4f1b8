"""One rank of the distributed tests (``tests/test_distributed.py``), started by torchrun.

``python distributed_worker.py OUT STUDY[,STUDY...] [--progress DIR] [--die-after N]`` runs each
study on the tiny ResNet and writes ``OUT/<study>.rank<r>.json`` (every rank returns the merged
result). ``--die-after N``: on the first attempt (``TORCHELASTIC_RESTART_COUNT`` 0), rank 1
SIGKILLs itself after evaluating N chunks, as a crashed node would.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import tiny_resnet  # noqa: E402

from pytorchfi_deepvigor import distributed  # noqa: E402
from pytorchfi_deepvigor.analysis import DeepVigorAnalyzer  # noqa: E402
from pytorchfi_deepvigor.campaigns import faults  # noqa: E402
from pytorchfi_deepvigor.campaigns.exhaustive import ExhaustiveCampaign  # noqa: E402
from pytorchfi_deepvigor.campaigns.statistical import StatisticalCampaign  # noqa: E402
from pytorchfi_deepvigor.engine import SimulationEngine  # noqa: E402
from pytorchfi_deepvigor.results import VulnerabilityResult  # noqa: E402

CHUNK = 64


def images() -> torch.Tensor:
    return torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(3))


def study(name: str, progress_dir: str | None) -> VulnerabilityResult:
    """The studies the tests compare, one process or sharded (the same call either way)."""
    model = tiny_resnet()
    if name == "analysis":
        return DeepVigorAnalyzer(model, images()).analyze(target="both", sampling=0.5, seed=2)
    engine = SimulationEngine(model, images())
    if name == "exhaustive":
        return ExhaustiveCampaign(engine, faults_per_chunk=CHUNK).run(
            "weights", channel_ratio=0.25, seed=1, progress_dir=progress_dir
        )
    if name == "statistical":
        return StatisticalCampaign(engine, faults_per_chunk=CHUNK).run(
            "data-aware", target="weights", e=0.05, prior="pilot", seed=4, progress_dir=progress_dir
        )
    raise ValueError(f"unknown study {name!r}")


def _die_after(n: int) -> None:
    count = [0]
    inner = faults.FaultEvaluator.counts

    def counts(self, population, ids):  # type: ignore[no-untyped-def]
        count[0] += 1
        if count[0] > n:
            os.kill(os.getpid(), signal.SIGKILL)
        return inner(self, population, ids)

    faults.FaultEvaluator.counts = counts  # type: ignore[method-assign]


def main() -> None:
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("studies")
    parser.add_argument("--progress")
    parser.add_argument("--die-after", type=int)
    args = parser.parse_args()
    world = distributed.detect()
    rank = 0 if world is None else world.rank
    if args.die_after is not None and rank == 1:
        if os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
            _die_after(args.die_after)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.studies.split(","):
        result = study(name, args.progress)
        result.to_json(out / f"{name}.rank{rank}.json")


if __name__ == "__main__":
    main()
