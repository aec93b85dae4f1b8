"""Scale-out benchmark: the same study on 1 process and on 2 (torchrun, gloo), 1 thread each.

Studies, on the zoo ResNet-18 at width 1/8 trained on the digits (cached), the first ``--images``
digits test images:

- ``campaign``: layer-wise statistical weight FI (``e = --margin``, t = 2.58, every layer), the
  sharded work items being its fault chunks;
- ``analysis``: the DeepVigor+ total-MVF analysis (both targets, ``--sampling`` of the channels),
  sharded by (layer, target).

Each configuration runs ``--repeats`` times, 1 and 2 processes interleaved, each as a fresh
process tree (``python -m torch.distributed.run --standalone --nproc_per_node 2`` for two). The
study's own time (from the call to the merged result on rank 0, the gather included; model
loading and process start-up excluded) gives the speed-up, best of the repeats on each side; the
end-to-end wall time of the command is recorded beside it. The 2-process result must equal the
1-process one apart from timings (asserted). Rows record each rank's share of the work
(estimated-cost balance, items and compute seconds) and what else used the CPU (the load average
and the busiest other processes at the start of each run), since a 2-process run on a 2-core
machine shared with other jobs measures the machine as much as the code.

Run it on a frozen copy of the code (``git archive HEAD | tar -x -C DIR``, the commit written to
``DIR/SNAPSHOT``): a checkout that changes while it runs makes the two sides run different code.

``--device cuda``: every rank on ``cuda:LOCAL_RANK`` (two ranks share a single GPU); on a GPU
node, ``--nproc`` sets the ranks to as many GPUs as there are. Writes
``validation/results/bench_distributed.csv`` and ``.md``. ``--quick``: an untrained narrow
model, 8 images (seconds; the test suite's smoke run, written to a temporary folder).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from pytorchfi_deepvigor import distributed, zoo  # noqa: E402
from pytorchfi_deepvigor.analysis import DeepVigorAnalyzer  # noqa: E402
from pytorchfi_deepvigor.campaigns.statistical import StatisticalCampaign  # noqa: E402
from pytorchfi_deepvigor.engine import SimulationEngine  # noqa: E402
from pytorchfi_deepvigor.results import VulnerabilityResult  # noqa: E402

RESULTS = ROOT / "validation" / "results"
STUDIES = ("campaign", "analysis")
TARGETS = {"campaign": 1.8, "analysis": 1.6}
GPU_NOTE = (
    "On a GPU node (`--device cuda --nproc <GPUs>`) each rank computes on its own GPU "
    "(`cuda:LOCAL_RANK`) with the same shares as here; the ranks exchange only their results, "
    "once per campaign phase or analysis, so N GPUs should give close to N times one GPU where "
    "there are many more work items than ranks (campaign chunks), and at most (total estimated "
    "cost / largest item) for the analysis, whose first layers are its largest items. Several "
    "ranks on one GPU help only where one rank leaves it idle (small layers, host work between "
    "forwards). Not measured here: no GPU was lent to this run."
)
COLUMNS = ("study", "processes", "repeat", "study_s", "end_to_end_s", "speedup", "notes")


# ----------------------------------------------------------------------------------- worker
def _setup(args: argparse.Namespace) -> tuple[torch.nn.Module, torch.Tensor]:
    if args.quick:
        torch.manual_seed(0)
        model = zoo.build_model("resnet18", width=1 / 16, in_channels=1, input_size=16)
        return model.eval(), zoo.analysis_batch(args.images, input_size=16).images
    model, _ = zoo.get_trained_model("resnet18", width=1 / 8)
    return model.eval(), zoo.analysis_batch(args.images).images


def _study(args: argparse.Namespace, model: torch.nn.Module, images: torch.Tensor) -> Any:
    device = distributed.rank_device(args.device, torch.device(args.device))  # cuda:LOCAL_RANK
    if args.study == "analysis":
        analyzer = DeepVigorAnalyzer(model.to(device), images, device=device)
        return analyzer.analyze(target="both", sampling=args.sampling, seed=0)
    engine = SimulationEngine(model.to(device), images, device=device)
    return StatisticalCampaign(engine).run("layer", target="weights", e=args.margin, seed=0)


def worker(args: argparse.Namespace) -> None:
    """One rank: time the study, and on rank 0 write the result and the timings."""
    torch.set_num_threads(1)
    model, images = _setup(args)
    world = distributed.detect()
    if world is not None:
        distributed.barrier(world)  # every rank loaded its model: start together
    began, cpu = time.perf_counter(), time.process_time()
    result = _study(args, model, images)
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    cpus = [cpu] if world is None else distributed.all_gather(cpu, world)
    if world is None or world.main:
        Path(args.json).write_text(
            json.dumps({"seconds": seconds, "cpu_s": cpus, "result": result.to_dict()})
        )


# ------------------------------------------------------------------------------------ driver
def _others() -> str:
    """The load average and the busiest processes other than this benchmark's."""
    ps = subprocess.run(["ps", "-eo", "pcpu,etimes,args", "--sort=-pcpu"], capture_output=True,
                        text=True, check=False).stdout.splitlines()[1:]  # fmt: skip
    mine = str(Path(__file__).name)
    busy = []
    for line in ps:
        parts = line.split(None, 2)
        if (
            len(parts) == 3
            and float(parts[0]) >= 5.0
            and mine not in parts[2]
            and not (
                parts[2].startswith("ps ")  # this very listing
            )
        ):
            busy.append(f"{parts[0]}% {' '.join(parts[2].split()[:3])[:60]}")
    load = os.getloadavg()[0]
    return f"load {load:.1f}; others: {'; '.join(busy[:4]) or 'none above 5% CPU'}"


def run(args: argparse.Namespace, study: str, nproc: int, out: Path) -> dict[str, Any]:
    """One fresh run of ``study`` on ``nproc`` processes; its timings and result."""
    path = out / f"{study}-{nproc}.json"
    worker_args = [str(Path(__file__).resolve()), "--worker", "--study", study, "--json",
                   str(path), "--device", args.device, "--images", str(args.images),
                   "--margin", str(args.margin), "--sampling", str(args.sampling),
                   *(["--quick"] if args.quick else [])]  # fmt: skip
    launcher = [sys.executable] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
        str(nproc), "--monitor-interval", "0.2"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    others = _others()
    began = time.perf_counter()
    proc = subprocess.run([*launcher, *worker_args], env=env, capture_output=True, text=True,
                          check=False)  # fmt: skip
    wall = time.perf_counter() - began
    if proc.returncode != 0:
        raise RuntimeError(f"{study} on {nproc} process(es) failed:\n{proc.stderr[-3000:]}")
    data = json.loads(path.read_text())
    data.update(end_to_end_s=wall, others=others)
    data["result"] = VulnerabilityResult.from_dict(data["result"])
    return data


def _balance(result: VulnerabilityResult) -> str:
    if not result.ranks:
        return "one process"
    secs = [r.cost.wall_time_s for r in result.ranks]
    evals = [r.cost.image_evaluations for r in result.ranks]
    share = ", ".join(f"rank {r.rank} ({r.device}): {r.items} items, {r.cost.image_evaluations} "
                      f"evals, {r.cost.wall_time_s:.1f} s" for r in result.ranks)  # fmt: skip
    return (f"{share}; most loaded rank / mean: evaluations {max(evals) / (sum(evals) / len(evals)):.2f}, "
            f"seconds {max(secs) / (sum(secs) / len(secs)):.2f}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="untrained narrow model, 8 images")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda:LOCAL_RANK per rank)")
    parser.add_argument("--nproc", type=int, default=2, help="processes of the sharded runs")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each configuration")
    parser.add_argument("--images", type=int, default=None, help="analysis images (default 50)")
    parser.add_argument("--margin", type=float, default=0.1, help="SFI margin e of the campaign")
    parser.add_argument("--sampling", type=float, default=0.05, help="analysis channel ratio")
    parser.add_argument("--only", default=",".join(STUDIES), help="campaign,analysis")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--study", help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.images is None:
        args.images = 8 if args.quick else 50
    if args.worker:
        worker(args)
        return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA requested but not available here: nothing measured", file=sys.stderr)
        return 0
    out = args.out or (Path(tempfile.mkdtemp()) if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp())
    rows: list[dict[str, Any]] = []
    summary: list[str] = []
    for study in args.only.split(","):
        runs: dict[int, list[dict[str, Any]]] = {1: [], args.nproc: []}
        for _ in range(args.repeats):
            for nproc in (1, args.nproc):
                runs[nproc].append(run(args, study, nproc, scratch))
                print(f"{study} on {nproc} process(es): {runs[nproc][-1]['seconds']:.1f} s",
                      file=sys.stderr, flush=True)  # fmt: skip
        one = runs[1][0]["result"].without_timings()
        for data in runs[args.nproc]:
            if data["result"].without_timings() != one:
                raise AssertionError(f"{study}: {args.nproc} processes changed the result")
        best = {n: min(d["seconds"] for d in runs[n]) for n in runs}
        speedup = best[1] / best[args.nproc]
        # CPU seconds: the one process's work over the busier rank's (what idle cores would give)
        cpu = {n: min(max(d["cpu_s"]) for d in runs[n]) for n in runs}
        cores = {n: min(sum(d["cpu_s"]) / d["seconds"] for d in runs[n]) for n in runs}
        for nproc, group in runs.items():
            for repeat, data in enumerate(group):
                res = data["result"]
                notes = (f"{res.cost.image_evaluations} image-evaluations, "
                         f"{res.cost.batched_forwards} forwards; study CPU seconds per rank "
                         f"{', '.join(f'{c:.1f}' for c in data['cpu_s'])} (the machine gave it "
                         f"{sum(data['cpu_s']) / data['seconds']:.2f} cores); {_balance(res)}; "
                         f"at start: {data['others']}")  # fmt: skip
                rows.append(dict(study=study, processes=nproc, repeat=repeat,
                                 study_s=f"{data['seconds']:.3f}",
                                 end_to_end_s=f"{data['end_to_end_s']:.2f}",
                                 speedup=f"{best[1] / data['seconds']:.3f}" if nproc > 1 else "",
                                 notes=notes))  # fmt: skip
        target = TARGETS[study]
        verdict = "met" if speedup >= target else "NOT met"
        summary.append(f"- {study}: {best[1]:.2f} s on 1 process, {best[args.nproc]:.2f} s on "
                       f"{args.nproc} (best of {args.repeats} each): {speedup:.2f}x wall clock; "
                       f"target >= {target:g}x: {verdict}; results equal (asserted). The machine "
                       f"gave the runs at least {cores[1]:.2f} and {cores[args.nproc]:.2f} cores; "
                       f"in CPU seconds (1 process / the busier rank, what free cores would give) "
                       f"{cpu[1]:.1f} / {cpu[args.nproc]:.1f} s = {cpu[1] / cpu[args.nproc]:.2f}x")  # fmt: skip
    snapshot = ROOT / "SNAPSHOT"  # a frozen copy of the code (git archive), not a live checkout
    code = snapshot.read_text().strip() if snapshot.exists() else "the working tree"
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else (
        f"CPU, {os.cpu_count()} cores")  # fmt: skip
    with open(out / "bench_distributed.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["# Scale-out: 1 vs 2 processes (torchrun, gloo), 1 thread each", "",
             f"Device: {dev}; torch {torch.__version__}; ResNet-18 w=1/8 (digits), "
             f"{args.images} images; campaign: layer-wise SFI of the weights, e = {args.margin}; "
             f"analysis: both targets, {args.sampling:g} of the channels; code: {code}"
             f"{'; QUICK smoke run' if args.quick else ''}.", "", *summary, "", GPU_NOTE, "",
             "| study | processes | repeat | study s | end-to-end s | speed-up | notes |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
    lines += [f"| {r['study']} | {r['processes']} | {r['repeat']} | {r['study_s']} | "
              f"{r['end_to_end_s']} | {r['speedup']} | {r['notes']} |" for r in rows]  # fmt: skip
    (out / "bench_distributed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
