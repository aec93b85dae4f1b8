"""Analyses and campaigns sharded over processes, GPUs and nodes, on ``torch.distributed``.

Under ``torchrun`` (or any launcher that sets ``WORLD_SIZE`` > 1, ``RANK`` and, for the
rendezvous, ``MASTER_ADDR``/``MASTER_PORT``), :meth:`DeepVigorAnalyzer.analyze`,
:meth:`ExhaustiveCampaign.run` and :meth:`StatisticalCampaign.run` run unchanged: every rank
builds the same plan of work items (``(layer, target)`` pairs for the analysis, fault chunks for
the campaigns, drawn from the seed), takes the share :func:`share` gives it (greedy
longest-first on an estimated cost, the same on every rank), computes it on its own device, and
every rank gathers the others' items and merges one result, identical apart from timings to the
one-process run. Outside such a launcher nothing changes: one process, no ``torch.distributed``.

The process group is initialised here when the caller has not done it: ``gloo`` on the CPU,
``cpu:gloo,cuda:nccl`` when CUDA is present (the results travel as pickled objects through
gloo), and a group initialised here is destroyed when the interpreter exits (a gloo group left
alive aborts the process at exit: "terminate called without an active exception", SIGABRT, a
failed rank to torchrun; a group the caller made is the caller's to destroy).
``PYTORCHFI_DEEPVIGOR_DISTRIBUTED=0`` makes every rank run alone (e.g. a DDP job that
analyses a different model per rank).

Example:
    >>> share([5.0, 1.0, 4.0, 2.0, 3.0], size=2, rank=0), share([5.0, 1.0, 4.0, 2.0, 3.0], size=2, rank=1)
    ([0, 1, 3], [2, 4])
    >>> loads([5.0, 1.0, 4.0, 2.0, 3.0], size=2)
    [8.0, 7.0]
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pytorchfi_deepvigor.results import Cost, RankCost

__all__ = [
    "OPT_OUT",
    "World",
    "all_gather",
    "barrier",
    "connect",
    "detect",
    "loads",
    "merge_rank_costs",
    "rank_cost",
    "rank_device",
    "share",
]

logger = logging.getLogger(__name__)

OPT_OUT = "PYTORCHFI_DEEPVIGOR_DISTRIBUTED"
"""Environment variable: ``0`` makes every rank of a launched job run alone."""

_TIMEOUT = datetime.timedelta(
    minutes=int(os.environ.get("PYTORCHFI_DEEPVIGOR_TIMEOUT_MIN", "1440"))
)
_GROUP: dict[str, Any] = {}


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``size``, ``local_rank`` on its node."""

    rank: int
    size: int
    local_rank: int

    @property
    def main(self) -> bool:
        """Whether this is rank 0 (the one that writes files)."""
        return self.rank == 0

    def describe(self) -> str:
        return f"rank {self.rank}/{self.size}"


def _env_int(name: str, default: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        if default is None:
            raise ValueError(
                f"WORLD_SIZE is set but {name} is not: start the job with torchrun, which sets "
                f"RANK, LOCAL_RANK and WORLD_SIZE, or unset WORLD_SIZE (or set {OPT_OUT}=0)"
            )
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"expected an integer in ${name}, got {value!r}") from None


def detect() -> World | None:
    """The job this process belongs to, or ``None`` when it runs alone.

    An initialised ``torch.distributed`` default group of more than one process wins; else the
    torchrun variables ``WORLD_SIZE`` (> 1), ``RANK`` and ``LOCAL_RANK``.

    Raises:
        ValueError: the variables are inconsistent (named in the message).
    """
    if os.environ.get(OPT_OUT, "1") == "0":
        return None
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        size = dist.get_world_size()
        if size <= 1:
            return None
        return World(dist.get_rank(), size, _env_int("LOCAL_RANK", dist.get_rank()))
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1:
        return None
    rank, local = _env_int("RANK"), _env_int("LOCAL_RANK", _env_int("RANK"))
    if not 0 <= rank < size or local < 0:
        raise ValueError(f"expected 0 <= RANK < WORLD_SIZE, got RANK={rank}, WORLD_SIZE={size}")
    if not dist.is_available():
        raise RuntimeError(
            f"WORLD_SIZE={size} but this torch build has no torch.distributed; run one process "
            f"(unset WORLD_SIZE) or set {OPT_OUT}=0"
        )
    return World(rank, size, local)


def _group(world: World) -> Any:
    """The process group for object collectives (gloo), initialising the default one if needed."""
    dist = torch.distributed
    if not dist.is_initialized():
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if not os.environ.get(name):
                raise ValueError(
                    f"WORLD_SIZE={world.size} but {name} is not set: start the job with torchrun "
                    "(it sets the rendezvous), or set MASTER_ADDR and MASTER_PORT"
                )
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(
            backend=backend,
            rank=world.rank,
            world_size=world.size,
            timeout=_TIMEOUT,
            store=_attempt_store(world),
        )
        atexit.register(_destroy)
        logger.info("%s: initialised torch.distributed (%s)", world.describe(), backend)
    key = "group"
    if key not in _GROUP:
        backend = str(dist.get_backend()).lower()
        _GROUP[key] = None if "gloo" in backend else dist.new_group(backend="gloo")
    return _GROUP[key]


def _destroy() -> None:
    """Destroy the process group initialised by :func:`_group`, while the interpreter is alive."""
    _GROUP.clear()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _attempt_store(world: World) -> Any:
    """torchrun's agent store, under a prefix of this restart attempt (``None`` without torchrun).

    torchrun (2.14) keeps one store across ``--max-restarts`` attempts: without the prefix, the
    ranks of a restarted attempt read the addresses the killed attempt left there and fail to
    connect ("Gloo connectFullMesh failed ... Connection refused").
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None  # env:// rendezvous: rank 0 hosts a fresh store
    dist = torch.distributed
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        _env_int("MASTER_PORT"),
        world.size,
        is_master=False,
        timeout=_TIMEOUT,
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"pytorchfi-deepvigor/attempt_{attempt}/", store)


def connect(world: World) -> None:
    """Join the job's process group now (initialising it from the torchrun variables if needed),
    so a missing rendezvous fails before any work."""
    _group(world)


def barrier(world: World) -> None:
    """Wait until every rank got here."""
    torch.distributed.barrier(group=_group(world))


def all_gather(obj: Any, world: World) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    out: list[Any] = [None] * world.size
    torch.distributed.all_gather_object(out, obj, group=_group(world))
    return out


def rank_device(device: str | torch.device | None, model_device: torch.device) -> torch.device:
    """The device a rank computes on: ``cuda:LOCAL_RANK`` for a CUDA device given without an
    index (or a model on CUDA and no ``device``) under a launched job; else as given.

    Example:
        >>> rank_device("cpu", torch.device("cpu"))
        device(type='cpu')
    """
    wanted = torch.device(device) if device is not None else model_device
    world = detect()
    if world is None or wanted.type != "cuda":
        return wanted
    if device is not None and wanted.index is not None:
        return wanted  # the caller chose the GPU
    count = torch.cuda.device_count()
    if count == 0:
        return wanted
    return torch.device("cuda", world.local_rank % count)


def share(costs: Sequence[float], *, size: int, rank: int) -> list[int]:
    """Indices of the work items ``rank`` of ``size`` computes, in plan order.

    Greedy longest-processing-time: items by decreasing cost (ties: plan order) each go to the
    least loaded rank (ties: the lowest). The same costs give the same shares on every rank; the
    most loaded rank carries at most the mean load plus the largest item.
    """
    if not 0 <= rank < size:
        raise ValueError(f"expected 0 <= rank < size, got rank {rank} of {size}")
    return [i for i, owner in enumerate(_owners(costs, size)) if owner == rank]


def loads(costs: Sequence[float], *, size: int) -> list[float]:
    """The estimated cost each rank gets from :func:`share`."""
    out = [0.0] * size
    for cost, owner in zip(costs, _owners(costs, size), strict=True):
        out[owner] += float(cost)
    return out


def _owners(costs: Sequence[float], size: int) -> list[int]:
    owners = [0] * len(costs)
    load = [0.0] * size
    for i in sorted(range(len(costs)), key=lambda i: (-float(costs[i]), i)):
        r = min(range(size), key=lambda r: (load[r], r))
        owners[i] = r
        load[r] += float(costs[i])
    return owners


def rank_cost(world: World, device: torch.device, cost: Cost, items: int) -> RankCost:
    """This rank's record: rank, device, host, work items computed and their cost."""
    return RankCost(
        rank=world.rank, device=str(device), host=socket.gethostname(), items=items, cost=cost
    )


def merge_rank_costs(*groups: Sequence[RankCost]) -> tuple[RankCost, ...]:
    """Per-rank records of several phases (e.g. a pilot and a campaign) added up by rank."""
    merged: dict[int, RankCost] = {}
    for group in groups:
        for r in group:
            if r.rank in merged:
                m = merged[r.rank]
                r = RankCost(r.rank, m.device, m.host, m.items + r.items, m.cost + r.cost)
            merged[r.rank] = r
    return tuple(merged[k] for k in sorted(merged))
