"""What exhaustive and statistical campaigns share: argument checks, execution, aggregation.

A campaign is a list of :class:`WorkUnit` (one layer's population and the fault ids drawn from
it). :func:`execute` evaluates them in chunks through the one per-fault evaluation
(:class:`~pytorchfi_deepvigor.campaigns.faults.FaultEvaluator`), records each chunk in the
progress log when there is one, and skips what the log already holds.

Under torchrun (:mod:`pytorchfi_deepvigor.distributed`) the chunks not yet done are the work
items: each rank evaluates its cost-balanced share (cost: faults x the FLOPs of the layer and of
every catalogued layer after it), and the ranks exchange their chunks' counts at the end of
:func:`execute`, so every rank returns the whole campaign. Each rank writes its own progress file,
``progress_dir/rank<r>/<name>.progress.jsonl`` (one process: ``progress_dir/<name>...``), and
every run reads all of them: progress is per chunk, not per rank, so a rerun with any number of
processes resumes from what any earlier run saved.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pytorchfi_deepvigor import distributed
from pytorchfi_deepvigor._guard import check_layers as _check_layers
from pytorchfi_deepvigor.bits import AnyFaultModel, QuantizedFlip, parse_fault_model
from pytorchfi_deepvigor.campaigns.faults import (
    FaultEvaluator,
    FaultPopulation,
    chunk_size,
)
from pytorchfi_deepvigor.campaigns.progress import ChunkRecord, ProgressLog, tensors_fingerprint
from pytorchfi_deepvigor.engine import SimulationEngine
from pytorchfi_deepvigor.quantized import bind_words, network_words
from pytorchfi_deepvigor.results import Cost, OutcomeCounts, RankCost

__all__ = [
    "RESULT_TARGET",
    "WorkUnit",
    "Executed",
    "RankedLog",
    "check_engine",
    "check_fault_model",
    "check_layers",
    "check_seed",
    "check_target",
    "chunk_sizes",
    "execute",
    "open_log",
    "weighted_vf",
]

logger = logging.getLogger(__name__)

RESULT_TARGET = {"weights": "weights", "operands": "activations", "stored": "stored"}
"""Campaign target -> the result type's target (operand faults compare with activations)."""


def check_engine(engine: object) -> SimulationEngine:
    if not isinstance(engine, SimulationEngine):
        raise TypeError(f"expected a SimulationEngine(model, images), got {type(engine).__name__}")
    return engine


def check_target(target: str) -> str:
    if target == "activations":
        return "operands"
    if target not in RESULT_TARGET:
        raise ValueError(
            f"expected target 'weights', 'operands' (alias 'activations') or 'stored', got {target!r}"
        )
    return target


def check_fault_model(
    fault_model: str | AnyFaultModel, dtype: torch.dtype, quantized: bool = False
) -> AnyFaultModel:
    """The fault model named ``fault_model`` in the model's format ``dtype`` (a clear
    ``ValueError`` naming the accepted names otherwise); on an int8 network (``quantized``)
    the default is the int8 word flip."""
    return network_words(parse_fault_model(fault_model, dtype), quantized)


def layer_fault_model(
    model: AnyFaultModel, engine: SimulationEngine, layer_num: int, target: str = "weights"
) -> AnyFaultModel:
    """``model`` for one layer's target: PyTorchFI's quantised flip bound to the layer's range
    (its ``ranges`` entry, else the layer's largest ``|output|`` on the analysis images); on an
    int8 layer, the int8 flip bound to the words the target hits."""
    info = engine.layer(layer_num)
    if isinstance(model, QuantizedFlip) and model.max_value is None:
        peak = float(engine.layer_output(layer_num).abs().max())
        model = model.bound(peak, layer_num)
    return bind_words(model, info.module, target, info.name)


def fault_model_options(models: Mapping[int, AnyFaultModel]) -> dict[str, Any]:
    """What a result records of the fault model: its name and format (and PyTorchFI ranges)."""
    first = next(iter(models.values()))
    out: dict[str, Any] = {"fault_model": first.name, "number_format": first.format}
    if isinstance(first, QuantizedFlip):
        out["fault_ranges"] = {
            str(n): m.max_value for n, m in models.items() if isinstance(m, QuantizedFlip)
        }
    return out


def check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"expected seed as a non-negative int, got {seed!r}")
    return int(seed)


def check_layers(engine: SimulationEngine, layers: Sequence[int] | None) -> list[int]:
    """Catalogue layer numbers, sorted, each given once (all layers when ``None``)."""
    return _check_layers(layers, engine)  # the one check of layers, as in the analyser


@dataclass(frozen=True, eq=False)
class WorkUnit:
    """The faults ``ids`` of ``population`` to evaluate, under a unique ``key``."""

    key: str
    population: FaultPopulation
    ids: np.ndarray


@dataclass
class Executed:
    """Per unit key the per-fault outcome counts ``[F, 4]`` and the work it took, plus totals.

    ``work[key]`` adds up the unit's chunks, resumed ones included (their forwards, evaluations,
    faults and seconds as recorded in the progress file).
    """

    counts: dict[str, np.ndarray]
    forwards: int = 0
    evaluations: int = 0
    work: dict[str, Cost] = field(default_factory=dict)
    ranks: tuple[RankCost, ...] = ()
    """Under torchrun: what each rank computed in this run (empty in one process)."""

    def add(self, rec: ChunkRecord) -> None:
        self.forwards += rec.forwards
        self.evaluations += rec.evaluations
        self.work[rec.unit] = self.work.get(rec.unit, Cost()) + Cost(
            batched_forwards=rec.forwards,
            image_evaluations=rec.evaluations,
            faults=rec.stop - rec.start,
            wall_time_s=rec.seconds,
        )


def chunk_sizes(
    engine: SimulationEngine, layers: Sequence[int], faults_per_chunk: int | None
) -> dict[int, int]:
    """Faults per chunk of each layer: the user's choice, else :func:`faults.chunk_size`."""
    return {n: faults_per_chunk or chunk_size(engine, engine.layer(n)) for n in layers}


class RankedLog:
    """This process's progress log, plus the records of the files other ranks (of this run or
    an earlier one, with any number of processes) wrote for the same campaign, read once."""

    def __init__(self, own: ProgressLog, others: list[ProgressLog]) -> None:
        self.own = own
        self.others = others
        self._read = [rec for log in others for rec in log.records]

    @property
    def records(self) -> list[ChunkRecord]:
        """The other files' records, then this file's (a chunk may appear in several)."""
        return self._read + self.own.records

    def append(self, record: ChunkRecord) -> None:
        self.own.append(record)

    def close(self) -> None:
        self.own.close()


def open_log(
    progress_dir: str | Path | None,
    name: str,
    engine: SimulationEngine,
    arguments: Mapping[str, Any],
) -> RankedLog | None:
    """The campaign's progress log under ``progress_dir`` (``None`` without a directory)."""
    if progress_dir is None:
        return None
    if not isinstance(progress_dir, str | Path):
        raise TypeError(
            f"expected progress_dir as a str or Path, got {type(progress_dir).__name__}"
        )
    header = {
        **arguments,
        "model_fingerprint": tensors_fingerprint(model=engine.model),
        "images_fingerprint": tensors_fingerprint(images=engine.images),
    }
    root, file = Path(progress_dir), f"{name}.progress.jsonl"
    world = distributed.detect()
    path = root / file if world is None else root / f"rank{world.rank}" / file
    own = ProgressLog(path, header)
    try:
        others = [
            ProgressLog(p, header, readonly=True)
            for p in sorted([root / file, *root.glob(f"rank*/{file}")])
            if p.is_file() and p != path
        ]
    except BaseException:
        own.close()
        raise
    return RankedLog(own, others)


def _resume(result: Executed, units: Sequence[WorkUnit], log: RankedLog | None) -> None:
    """Fill ``result`` from the records of ``log`` (each chunk once, whichever file holds it)."""
    sizes = {u.key: len(u.ids) for u in units}
    seen: dict[tuple[str, int, int], ChunkRecord] = {}
    for rec in log.records if log else ():
        if rec.unit not in sizes:
            continue  # another phase of the same campaign (e.g. its pilot)
        if not 0 <= rec.start < rec.stop <= sizes[rec.unit]:
            raise ValueError(
                f"progress record {rec.unit}[{rec.start}:{rec.stop}] does not fit this campaign; "
                "delete the progress file to start afresh"
            )
        key = (rec.unit, rec.start, rec.stop)
        if key in seen:  # two ranks' files hold the same chunk
            if not seen[key].same_work(rec):
                raise ValueError(
                    f"two progress files hold {rec.unit}[{rec.start}:{rec.stop}] with different "
                    "outcomes; delete the progress folder to start afresh"
                )
            continue
        seen[key] = rec
        result.counts[rec.unit][rec.start : rec.stop] = rec.counts
        result.add(rec)


def _chunk_plan(
    evaluator: FaultEvaluator,
    units: Sequence[WorkUnit],
    result: Executed,
    chunks: Mapping[int, int],
) -> tuple[list[tuple[WorkUnit, int, int]], list[float]]:
    """The chunks still to evaluate, and each one's estimated cost (see the module docstring)."""
    engine = evaluator.engine
    todo, costs = [], []
    for unit in units:
        counts = result.counts[unit.key]
        info = unit.population.layer
        per_fault = engine.suffix_flops_per_image(info.layer_num) + 2.0 * (
            info.neurons_per_image * info.fan_in
        )
        size = chunks[info.layer_num]
        for start in range(0, len(unit.ids), size):
            stop = min(start + size, len(unit.ids))
            if not (counts[start:stop, 0] >= 0).all():
                todo.append((unit, start, stop))
                costs.append(float(stop - start) * per_fault)
    return todo, costs


def execute(
    evaluator: FaultEvaluator,
    units: Sequence[WorkUnit],
    *,
    chunks: Mapping[int, int],
    log: RankedLog | None,
    progress: bool,
) -> Executed:
    """Evaluate every unit's faults in chunks (``chunks``: faults per chunk by layer number),
    resuming from ``log``; under torchrun this rank's share, then every rank's (module docstring)."""
    result = Executed({u.key: np.full((len(u.ids), 4), -1, dtype=np.int64) for u in units})
    _resume(result, units, log)
    world = distributed.detect()
    if world is not None:
        distributed.barrier(world)  # every rank has read the progress files before any writes
    todo, costs = _chunk_plan(evaluator, units, result, chunks)
    if world is not None:
        picked = distributed.share(costs, size=world.size, rank=world.rank)
        logger.info(
            "%s: %d of %d fault chunks left, %.1f%% of their estimated cost",
            world.describe(),
            len(picked),
            len(todo),
            100.0 * sum(costs[i] for i in picked) / (sum(costs) or 1.0),
        )
        todo = [todo[i] for i in picked]
    engine = evaluator.engine
    mine: list[ChunkRecord] = []
    began_all = time.perf_counter()
    desc = "FI" if world is None else f"FI ({world.describe()})"
    total = sum(stop - start for _, start, stop in todo)
    with tqdm(total=total, disable=not progress, unit="fault", desc=desc) as bar:
        for unit, start, stop in todo:
            counts = result.counts[unit.key]
            before, began = engine.stats.snapshot(), time.perf_counter()
            counts[start:stop] = evaluator.counts(unit.population, unit.ids[start:stop])
            work = engine.stats - before
            rec = ChunkRecord(
                unit.key,
                start,
                stop,
                counts[start:stop],
                work.batched_forwards,
                work.image_evaluations,
                time.perf_counter() - began,
            )
            result.add(rec)
            mine.append(rec)
            if log is not None:
                log.append(rec)
            bar.update(stop - start)
    if world is not None:
        spent = Cost(
            batched_forwards=sum(r.forwards for r in mine),
            image_evaluations=sum(r.evaluations for r in mine),
            faults=sum(r.stop - r.start for r in mine),
            wall_time_s=time.perf_counter() - began_all,
        )
        record = distributed.rank_cost(world, engine.device, spent, len(mine))
        parts = distributed.all_gather((record, mine), world)
        for rank, (_, recs) in enumerate(parts):
            if rank != world.rank:
                for rec in recs:
                    result.counts[rec.unit][rec.start : rec.stop] = rec.counts
                    result.add(rec)
        result.ranks = tuple(r for r, _ in parts)
    return result


def weighted_vf(
    counts: np.ndarray, groups: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """VF per group: weighted fraction of critical or DUE (fault, image) pairs.

    Args:
        counts: ``[F, 4]`` outcome counts per fault.
        groups: ``[F]`` group (channel or neuron) of each fault.
        weights: ``[F]`` inverse inclusion probability of each fault (``None``: all equal).

    Returns:
        (sorted unique groups, VF of each).
    """
    uniq, inverse = np.unique(groups, return_inverse=True)
    w = np.ones(len(counts)) if weights is None else np.asarray(weights, dtype=np.float64)
    bad = (counts[:, 2] + counts[:, 3]).astype(np.float64)
    total = counts.sum(axis=1).astype(np.float64)
    num = np.bincount(inverse, weights=w * bad, minlength=len(uniq))
    den = np.bincount(inverse, weights=w * total, minlength=len(uniq))
    return uniq, num / den


def outcome_counts(counts: np.ndarray) -> OutcomeCounts:
    """Sum of per-fault counts as :class:`~pytorchfi_deepvigor.results.OutcomeCounts`."""
    return OutcomeCounts(*(int(x) for x in counts.sum(axis=0)))


def ceil_ratio(ratio: float, n: int) -> int:
    """``ceil(ratio * n)`` without float noise (at least 1)."""
    return max(1, min(n, math.ceil(round(ratio * n, 9))))
