"""Resume: a killed campaign continues from its progress file and ends exactly as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import seeded_images, tiny_vgg

from pytorchfi_deepvigor._lock import FolderInUse
from pytorchfi_deepvigor.campaigns import ExhaustiveCampaign, Pilot, StatisticalCampaign
from pytorchfi_deepvigor.campaigns.progress import ChunkRecord, ProgressLog
from pytorchfi_deepvigor.engine import SimulationEngine
from pytorchfi_deepvigor.results import VulnerabilityResult

RUN = {"target": "weights", "layers": [3], "seed": 0}
CHUNK = 16

CHILD = """
import sys, time
import torch
sys.path.insert(0, {tests!r})
torch.set_num_threads({threads})
from tiny_models import seeded_images, tiny_vgg
from pytorchfi_deepvigor.campaigns import ExhaustiveCampaign
from pytorchfi_deepvigor.engine import SimulationEngine

engine = SimulationEngine(tiny_vgg(), seeded_images(4))
outcomes = engine.outcomes
def slow_outcomes(*args):  # slow the child down so the parent can kill it midway
    time.sleep(0.02)
    return outcomes(*args)
engine.outcomes = slow_outcomes
ExhaustiveCampaign(engine, faults_per_chunk={chunk}).run(**{run!r}, progress_dir={out!r})
"""


def _clean(result: VulnerabilityResult) -> VulnerabilityResult:
    """The result without the fields allowed to differ (wall time, creation time)."""
    return result.without_timings()


def _records(path: Path) -> int:
    return max(0, len(path.read_bytes().split(b"\n")) - 2) if path.exists() else 0


@pytest.fixture(scope="module")
def reference() -> VulnerabilityResult:
    engine = SimulationEngine(tiny_vgg(), seeded_images(4))
    return ExhaustiveCampaign(engine, faults_per_chunk=CHUNK).run(**RUN)


def _campaign() -> ExhaustiveCampaign:
    return ExhaustiveCampaign(
        SimulationEngine(tiny_vgg(), seeded_images(4)), faults_per_chunk=CHUNK
    )


def test_killed_campaign_resumes_to_the_uninterrupted_result(tmp_path: Path, reference) -> None:
    tests_dir = str(Path(__file__).parents[1])
    script = CHILD.format(
        tests=tests_dir, threads=torch.get_num_threads(), chunk=CHUNK, run=RUN, out=str(tmp_path)
    )
    child = subprocess.Popen([sys.executable, "-c", script])
    path = tmp_path / "exhaustive-weights.progress.jsonl"
    total_chunks = 40 * 32 // CHUNK
    try:
        deadline = time.monotonic() + 120
        while _records(path) < 10 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    done = _records(path)
    assert 10 <= done < total_chunks, f"child finished {done} of {total_chunks} chunks"
    resumed = _campaign().run(**RUN, progress_dir=tmp_path)
    assert _clean(resumed) == _clean(reference)
    assert _records(path) == total_chunks


def test_torn_last_line_is_dropped(tmp_path: Path, reference) -> None:
    campaign = _campaign()
    campaign.run(**RUN, progress_dir=tmp_path)
    path = tmp_path / "exhaustive-weights.progress.jsonl"
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(lines[:40]) + b"\n" + lines[40][: len(lines[40]) // 2])
    assert _clean(campaign.run(**RUN, progress_dir=tmp_path)) == _clean(reference)
    finished = _records(path)
    assert finished == len(lines) - 2  # the torn chunk was recomputed and appended
    again = _campaign().run(**RUN, progress_dir=tmp_path)  # all done: nothing recomputed
    assert _clean(again) == _clean(reference) and _records(path) == finished


def test_statistical_resume_with_pilot(tmp_path: Path) -> None:
    kwargs = {"variant": "data-aware", "layers": [3], "e": 0.1, "prior": Pilot(4), "seed": 2}
    engine = SimulationEngine(tiny_vgg(), seeded_images(3))
    full = StatisticalCampaign(engine, faults_per_chunk=16).run(**kwargs)
    StatisticalCampaign(engine, faults_per_chunk=16).run(**kwargs, progress_dir=tmp_path)
    (path,) = tmp_path.glob("*.progress.jsonl")
    lines = path.read_bytes().split(b"\n")
    assert any(b'"pilot-L3"' in line for line in lines) and any(b'"L3"' in line for line in lines)
    for keep in (3, 10):  # stop inside the pilot, then inside the main sample
        path.write_bytes(b"\n".join(lines[:keep]) + b"\n")
        resumed = StatisticalCampaign(engine, faults_per_chunk=16).run(
            **kwargs, progress_dir=tmp_path
        )
        assert _clean(resumed) == _clean(full)
    (layer,) = full.layers  # the layer's cost counts its pilot and its sample
    assert layer.cost is not None and layer.cost.faults == full.cost.faults > layer.n_faults
    assert layer.cost.batched_forwards == full.cost.batched_forwards


def test_records_from_before_seconds_were_kept_still_load() -> None:
    line = {"unit": "L0", "start": 0, "stop": 1, "counts": [1, 0, 0, 0]}
    rec = ChunkRecord.from_json({**line, "forwards": 1, "evaluations": 1})
    assert rec.seconds == 0.0
    timed = ChunkRecord.from_json({**line, "forwards": 1, "evaluations": 1, "seconds": 0.25})
    again = ChunkRecord.from_json(json.loads(timed.to_line()))
    assert again.seconds == 0.25 and again.counts.tolist() == [[1, 0, 0, 0]]


def test_other_arguments_or_model_are_refused(tmp_path: Path) -> None:
    _campaign().run(**RUN, progress_dir=tmp_path)
    with pytest.raises(ValueError, match=r"another campaign \(different \['seed'\]\)"):
        _campaign().run(**{**RUN, "seed": 1}, progress_dir=tmp_path)
    with pytest.raises(ValueError, match="different.*faults_per_chunk"):
        ExhaustiveCampaign(SimulationEngine(tiny_vgg(), seeded_images(4))).run(
            **RUN, progress_dir=tmp_path
        )
    model = tiny_vgg()
    with torch.no_grad():
        model[-1].bias[0] += 1.0
    other = ExhaustiveCampaign(SimulationEngine(model, seeded_images(4)), faults_per_chunk=CHUNK)
    with pytest.raises(ValueError, match="model_fingerprint"):
        other.run(**RUN, progress_dir=tmp_path)
    other = ExhaustiveCampaign(
        SimulationEngine(tiny_vgg(), seeded_images(4, seed=1)), faults_per_chunk=CHUNK
    )
    with pytest.raises(ValueError, match="images_fingerprint"):
        other.run(**RUN, progress_dir=tmp_path)


def test_corrupt_or_foreign_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text('{"some": "json"}\n')
    with pytest.raises(ValueError, match="not a campaign progress file"):
        ProgressLog(path, {"seed": 0})
    path.unlink()
    ProgressLog(path, {"seed": 0}).close()
    with path.open("a") as f:
        f.write("garbage\n" + json.dumps({"unit": "L0"}) + "\n")
    with pytest.raises(ValueError, match="line 2 fails its integrity check"):
        ProgressLog(path, {"seed": 0})


def _record(unit: str = "L0", start: int = 0, stop: int = 1, critical: int = 1) -> ChunkRecord:
    counts = np.zeros((stop - start, 4), dtype=np.int64)
    counts[:, 2] = critical
    return ChunkRecord(unit, start, stop, counts, 1, 4)


def test_a_count_edited_by_hand_is_refused_with_the_line(tmp_path: Path) -> None:
    _campaign().run(**RUN, progress_dir=tmp_path)
    path = tmp_path / "exhaustive-weights.progress.jsonl"
    lines = path.read_bytes().split(b"\n")
    line = json.loads(lines[20])
    edited = lines[20].replace(
        b'"counts":[' + str(line["counts"][0]).encode(),
        b'"counts":[' + str(line["counts"][0] + 1).encode(),
    )
    assert edited != lines[20]
    path.write_bytes(b"\n".join([*lines[:20], edited, *lines[21:]]))
    with pytest.raises(ValueError, match=r"line 21 fails its integrity check.*--restart"):
        _campaign().run(**RUN, progress_dir=tmp_path)


def test_a_record_from_another_campaign_is_refused(tmp_path: Path) -> None:
    with ProgressLog(tmp_path / "a.jsonl", {"seed": 0}) as log:
        log.append(_record())
    with ProgressLog(tmp_path / "b.jsonl", {"seed": 1}) as log:
        log.append(_record(start=1, stop=2))
    foreign = (tmp_path / "a.jsonl").read_bytes().split(b"\n")[1]
    with (tmp_path / "b.jsonl").open("ab") as f:
        f.write(foreign + b"\n")
    with pytest.raises(ValueError, match="line 3 fails its integrity check"):
        ProgressLog(tmp_path / "b.jsonl", {"seed": 1})


def test_a_duplicated_record_is_counted_once(tmp_path: Path, reference) -> None:
    _campaign().run(**RUN, progress_dir=tmp_path)
    path = tmp_path / "exhaustive-weights.progress.jsonl"
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join([*lines[:30], lines[30], *lines[30:]]))
    resumed = _campaign().run(**RUN, progress_dir=tmp_path)
    assert resumed.cost.faults == reference.cost.faults == 40 * 32
    assert _clean(resumed) == _clean(reference)
    assert ProgressLog(path, json.loads(lines[0])).duplicates == 1


@pytest.mark.parametrize(
    "second, message",
    [(_record(stop=2, critical=2), "repeats the faults L0\\[0:2\\] of line 2 with other outcomes"),
     (_record(start=1, stop=3), r"lines 2 and 3 overlap \(L0\[0:2\] and \[1:3\]\)")],
    ids=["same-range-other-counts", "overlapping-range"],
)  # fmt: skip
def test_contradicting_records_are_refused(tmp_path: Path, second, message) -> None:
    path = tmp_path / "log.jsonl"
    with ProgressLog(path, {"seed": 0}) as log:
        log.append(_record(stop=2))
        log.append(second)
    with pytest.raises(ValueError, match=message):
        ProgressLog(path, {"seed": 0})


HOLD = """
import importlib.util, time
spec = importlib.util.spec_from_file_location("lock", {root!r} + "/pytorchfi_deepvigor/_lock.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)  # the lock module alone (stdlib only): no torch import
lock = module.FolderLock({folder!r}, name=".log.jsonl" + module.LOCK_NAME).acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_log_on_a_locked_folder_names_the_holder(tmp_path: Path) -> None:
    root = str(Path(__file__).parents[2])
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD.format(root=root, folder=str(tmp_path))],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline() == "held\n"
        with pytest.raises(
            FolderInUse, match=rf"progress file {tmp_path}/log.jsonl is in use by process "
            rf"{child.pid} .*choose another progress_dir"
        ):  # fmt: skip
            ProgressLog(tmp_path / "log.jsonl", {"seed": 0})
        ProgressLog(tmp_path / "other.jsonl", {"seed": 0}).close()  # another campaign: free
    finally:
        os.kill(child.pid, signal.SIGKILL)  # the OS drops the lock with the process
        child.wait()
    with ProgressLog(tmp_path / "log.jsonl", {"seed": 0}):
        with pytest.raises(FolderInUse, match="in use by process"):
            ProgressLog(tmp_path / "log.jsonl", {"seed": 0})
        ProgressLog(tmp_path / "other.jsonl", {"seed": 0}).close()
