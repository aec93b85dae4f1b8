"""Analysis and campaigns sharded over 2 gloo processes (torchrun, 1 thread each) give the
one-process result; a rank killed mid-campaign resumes, under torchrun or one process, to it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from distributed_worker import CHUNK, study

from pytorchfi_deepvigor import distributed
from pytorchfi_deepvigor.campaigns import faults
from pytorchfi_deepvigor.results import VulnerabilityResult

WORKER = Path(__file__).parent / "distributed_worker.py"
STUDIES = ("analysis", "exhaustive", "statistical")
TORCHRUN_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with gloo is not available",
)


def torchrun(
    out: Path, studies: str, *worker: str, restarts: int = 0
) -> subprocess.CompletedProcess[str]:
    """``torchrun --nproc_per_node 2`` of the worker (1 thread per process), checked."""
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[1]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "--monitor-interval", "0.2", "--max-restarts", str(restarts), str(WORKER),
           str(out), studies, *worker]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sharded")
    torchrun(out, ",".join(STUDIES), "--progress", str(out / "progress"))
    return out


@pytest.fixture(scope="module")
def one_process() -> dict[str, VulnerabilityResult]:
    return {name: study(name, None) for name in STUDIES}


@pytest.mark.slow
@pytest.mark.parametrize("name", STUDIES)
def test_two_processes_give_the_one_process_result(
    sharded: Path, one_process: dict[str, VulnerabilityResult], name: str
) -> None:
    one = one_process[name]
    assert one.ranks == ()  # outside torchrun: one process, nothing recorded
    for rank in (0, 1):
        got = VulnerabilityResult.from_json(sharded / f"{name}.rank{rank}.json")
        assert got.without_timings() == one.without_timings()
        assert [(r.rank, r.device) for r in got.ranks] == [(0, "cpu"), (1, "cpu")]
        assert all(r.items > 0 for r in got.ranks)  # both did a share
        assert sum(r.cost.image_evaluations for r in got.ranks) == one.cost.image_evaluations
    if name != "analysis":  # each rank wrote its chunks to its own progress file
        file = "exhaustive-weights" if name == "exhaustive" else "sfi-data-aware-weights"
        found = sorted(p.parent.name for p in (sharded / "progress").glob(f"*/{file}.*"))
        assert found == ["rank0", "rank1"]


@pytest.mark.slow
def test_killed_rank_resumes_to_the_same_result(
    tmp_path: Path, one_process: dict[str, VulnerabilityResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    progress = tmp_path / "progress"
    # rank 1 SIGKILLs itself after 5 chunks; torchrun stops rank 0 and restarts both once
    proc = torchrun(
        tmp_path, "exhaustive", "--progress", str(progress), "--die-after", "5", restarts=1
    )
    assert "exitcode: -9" in proc.stderr and "local_rank: 1" in proc.stderr
    one = one_process["exhaustive"]
    got = VulnerabilityResult.from_json(tmp_path / "exhaustive.rank0.json")
    assert got.without_timings() == one.without_timings()
    chunks = sum(-(-layer.n_faults // CHUNK) for layer in one.layers)
    assert 5 <= chunks - sum(r.items for r in got.ranks) < chunks  # the rest came from the files

    # another world size: one process resumes from both ranks' files, evaluating nothing
    def refuse(*_: object) -> None:
        raise AssertionError("a resumed campaign evaluated a fault again")

    monkeypatch.setattr(faults.FaultEvaluator, "counts", refuse)
    again = study("exhaustive", str(progress))
    assert again.without_timings() == one.without_timings()


def test_shares_are_deterministic_and_balanced() -> None:
    costs = [float(c) for c in (9, 1, 7, 3, 3, 5, 2, 8, 4, 6)]
    shares = [distributed.share(costs, size=3, rank=r) for r in range(3)]
    assert sorted(i for s in shares for i in s) == list(range(len(costs)))  # a partition
    assert shares == [distributed.share(costs, size=3, rank=r) for r in range(3)]
    loads = distributed.loads(costs, size=3)
    assert max(loads) - sum(costs) / 3 <= max(costs)
    assert loads == [sum(costs[i] for i in s) for s in shares]
    with pytest.raises(ValueError, match="expected 0 <= rank < size"):
        distributed.share(costs, size=2, rank=2)


def test_world_from_torchrun_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)
    assert distributed.detect() is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.detect() is None
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ValueError, match="WORLD_SIZE is set but RANK is not"):
        distributed.detect()
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.detect() == distributed.World(rank=3, size=4, local_rank=1)
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match=r"expected an integer in \$RANK"):
        distributed.detect()
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv(distributed.OPT_OUT, "0")
    assert distributed.detect() is None


def test_each_rank_gets_its_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)
    assert distributed.rank_device("cuda", cuda) == cuda  # one process: as given
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert distributed.rank_device("cuda", cpu) == torch.device("cuda", 1)  # 3 % 2 GPUs
    assert distributed.rank_device(None, torch.device("cuda", 0)) == torch.device("cuda", 1)
    assert distributed.rank_device("cuda:0", cpu) == torch.device("cuda", 0)  # chosen: kept
    assert distributed.rank_device("cpu", cuda) == cpu
