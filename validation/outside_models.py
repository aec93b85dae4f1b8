"""Analysis vs exhaustive FI on two models outside the zoo, trained on Fashion-MNIST.

Nobody tuned the analysis to these (they were built to be unlike the zoo): ``res``, a residual
CNN with BatchNorm, a depthwise and a pointwise convolution and a Linear head (16-32 channels);
``norm``, SiLU, GELU, LeakyReLU, GroupNorm (criticality saturates after it), MaxPool, a dilated
convolution and a hidden Linear layer. Both train for 2 epochs on 12,000 Fashion-MNIST images
(seeded, one thread; Debian's ``dataset-fashion-mnist`` puts them in
``/usr/share/datasets/fashion-mnist``), and are analysed on the first 32 test images.

Per model: 2 seeded channels of every layer; exhaustive weight FI of every bit of every weight
of those channels, and exhaustive operand FI of one seeded neuron per channel (the project's
``ExhaustiveCampaign``, which equals in-place injection plus a full forward); then the analysis
of the same targets with each search and weight model. The FI truth and the trained weights
are cached under ``validation/.cache/outside``.

Writes ``outside_models.csv`` (``model, target, search, aggregate, default, targets, mae,
signed_err, max_abs_err, spearman, seconds, image_evaluations``) and
``outside_models_pairs.csv`` to ``validation/results``.

Run: ``python validation/outside_models.py [--images N]`` (the FI takes about 40 minutes on
a busy 2-core CPU the first time; the analyses a minute).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT_DIR))
from pytorchfi_deepvigor.analysis.activations import analyze_activations  # noqa: E402
from pytorchfi_deepvigor.analysis.sampling import LayerSites  # noqa: E402
from pytorchfi_deepvigor.analysis.weights import analyze_weights  # noqa: E402
from pytorchfi_deepvigor.campaigns.exhaustive import ExhaustiveCampaign  # noqa: E402
from pytorchfi_deepvigor.engine import SimulationEngine  # noqa: E402
from pytorchfi_deepvigor.functional.edm import candidate_grid  # noqa: E402
from pytorchfi_deepvigor.zoo.datasets import load_mnist  # noqa: E402

torch.set_num_threads(1)
ROOT = "/usr/share/datasets/fashion-mnist"
CACHE = ROOT_DIR / "validation" / ".cache" / "outside"
RESULTS = ROOT_DIR / "validation" / "results"


class Res(nn.Module):
    def __init__(s, w=16):
        super().__init__()
        s.c0 = nn.Conv2d(1, w, 3, padding=1)
        s.b0 = nn.BatchNorm2d(w)
        s.c1 = nn.Conv2d(w, w, 3, padding=1)
        s.b1 = nn.BatchNorm2d(w)
        s.c2 = nn.Conv2d(w, w, 3, padding=1)
        s.b2 = nn.BatchNorm2d(w)
        s.dw = nn.Conv2d(w, w, 3, stride=2, padding=1, groups=w)
        s.b3 = nn.BatchNorm2d(w)
        s.pw = nn.Conv2d(w, 2 * w, 1)
        s.b4 = nn.BatchNorm2d(2 * w)
        s.fc = nn.Linear(2 * w, 10)
        s.r = nn.ReLU()

    def forward(s, x):
        x = s.r(s.b0(s.c0(x)))
        y = s.b2(s.c2(s.r(s.b1(s.c1(x)))))
        x = s.r(x + y)
        x = s.r(s.b3(s.dw(x)))
        x = s.r(s.b4(s.pw(x)))
        return s.fc(x.mean(dim=(2, 3)))


class Norm(nn.Module):
    def __init__(s, w=16):
        super().__init__()
        s.c0 = nn.Conv2d(1, w, 3, padding=1)
        s.a0 = nn.SiLU()
        s.p = nn.MaxPool2d(2)
        s.c1 = nn.Conv2d(w, 2 * w, 3, padding=2, dilation=2)
        s.g = nn.GroupNorm(4, 2 * w)
        s.a1 = nn.GELU()
        s.c2 = nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1)
        s.a2 = nn.LeakyReLU(0.1)
        s.fc1 = nn.Linear(2 * w * 49, 64)
        s.a3 = nn.GELU()
        s.fc2 = nn.Linear(64, 10)

    def forward(s, x):
        x = s.p(s.a0(s.c0(x)))
        x = s.a1(s.g(s.c1(x)))
        x = s.a2(s.c2(x))
        return s.fc2(s.a3(s.fc1(x.flatten(1))))


def trained(name):
    torch.manual_seed(0)
    m = {"res": Res, "norm": Norm}[name]()
    f = CACHE / f"{name}-v2.pt"
    if f.exists():
        m.load_state_dict(torch.load(f))
        return m.eval()
    tr = load_mnist(ROOT, kind="fashion-mnist", split="train", limit=12000, seed=0)
    opt = torch.optim.Adam(m.parameters(), 2e-3)
    g = torch.Generator().manual_seed(0)
    m.train()
    for _ in range(2):
        perm = torch.randperm(len(tr.labels), generator=g)
        for a in range(0, len(perm), 128):
            i = perm[a : a + 128]
            opt.zero_grad()
            nn.functional.cross_entropy(m(tr.images[i]), tr.labels[i]).backward()
            opt.step()
    m.eval()
    torch.save(m.state_dict(), f)
    return m


def images(n):
    return load_mnist(ROOT, kind="fashion-mnist", split="test", limit=n).images


def pick(engine, per_layer, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for info in engine.catalogue:
        out[info.layer_num] = sorted(
            rng.choice(
                info.out_channels, size=min(per_layer, info.out_channels), replace=False
            ).tolist()
        )
    return out


def fi_weights(name, engine, picks, n):
    f = CACHE / f"{name}-w-n{n}.json"
    if f.exists():
        return {tuple(map(int, k.split(","))): v for k, v in json.load(open(f)).items()}
    res = ExhaustiveCampaign(engine).run(
        "weights", layers=sorted(picks), channels=picks, progress=False
    )
    d = {(l.layer_num, c): v for l in res.layers for c, v in zip(l.channels, l.cvf, strict=False)}
    json.dump({f"{k[0]},{k[1]}": v for k, v in d.items()}, open(f, "w"))
    return d


def neurons_of(engine, picks, seed=1):
    rng = np.random.default_rng(seed)
    out = {}
    for num, chans in picks.items():
        info = engine.layer(num)
        P = info.neurons_per_channel
        w = info.output_shape[2] if len(info.output_shape) == 3 else 1
        out[num] = [(c, int(p) // w, int(p) % w) for c in chans for p in [rng.integers(P)]]
    return out


def fi_operands(name, engine, neurons, n):
    f = CACHE / f"{name}-o-n{n}.json"
    if f.exists():
        return {tuple(map(int, k.split(","))): v for k, v in json.load(open(f)).items()}
    res = ExhaustiveCampaign(engine).run(
        "operands", layers=sorted(neurons), neurons=neurons, progress=False
    )
    d = {(l.layer_num, c): v for l in res.layers for c, v in zip(l.channels, l.cvf, strict=False)}
    json.dump({f"{k[0]},{k[1]}": v for k, v in d.items()}, open(f, "w"))
    return d


def analysis_weights(engine, picks, **kw):
    out = {}
    t = time.perf_counter()
    s0 = engine.stats.snapshot()
    grid = candidate_grid(kw.pop("search", "extended"))
    for num, chans in picks.items():
        info = engine.layer(num)
        sites = LayerSites(num, np.asarray(chans), None, info.neurons_per_channel)
        r, _ = analyze_weights(engine, info, sites, grid, **kw)
        out.update({(num, c): v for c, v in zip(r.channels, r.cvf, strict=False)})
    return out, time.perf_counter() - t, (engine.stats - s0).image_evaluations


def analysis_operands(engine, neurons, **kw):
    out = {}
    t = time.perf_counter()
    s0 = engine.stats.snapshot()
    grid = candidate_grid(kw.pop("search", "extended"))
    for num, ns in neurons.items():
        info = engine.layer(num)
        w = info.output_shape[2] if len(info.output_shape) == 3 else 1
        sites = LayerSites(
            num,
            np.asarray([c for c, _, _ in ns]),
            np.asarray([[h * w + x] for _, h, x in ns]),
            info.neurons_per_channel,
        )
        r, _ = analyze_activations(engine, info, sites, grid, **kw)
        out.update({(num, c): v for c, v in zip(r.channels, r.cvf, strict=False)})
    return out, time.perf_counter() - t, (engine.stats - s0).image_evaluations


WEIGHT_VARIANTS = [("paper", "position"), ("extended", "position"), ("fine", "gradient"),
                   ("fine", "equivalent")]  # fmt: skip
OPERAND_SEARCHES = ["paper", "extended", "fine"]


def summary(a, fi):
    from scipy.stats import spearmanr

    keys = sorted(fi)
    x = np.array([a[k] for k in keys])
    y = np.array([fi[k] for k in keys])
    e = x - y
    rho = float(spearmanr(x, y)[0]) if np.ptp(x) > 0 and np.ptp(y) > 0 else float("nan")
    return {"targets": len(keys), "mae": float(np.abs(e).mean()), "signed_err": float(e.mean()),
            "max_abs_err": float(np.abs(e).max()), "spearman": rho}  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--models", default="res,norm")
    args = parser.parse_args(argv)
    if not Path(ROOT).is_dir():
        print(f"skipped: Fashion-MNIST is not in {ROOT} (apt install dataset-fashion-mnist)")
        return 0
    CACHE.mkdir(parents=True, exist_ok=True)
    rows, pairs = [], []
    for name in args.models.split(","):
        model = trained(name)
        eng = SimulationEngine(model, images(args.images))
        picks = pick(eng, 2)
        fiw = fi_weights(name, eng, picks, args.images)
        neu = neurons_of(eng, picks)
        fio = fi_operands(name, eng, neu, args.images)
        jobs = [("weights", s, a) for s, a in WEIGHT_VARIANTS]
        jobs += [("operands", s, "n/a") for s in OPERAND_SEARCHES]
        for target, search, aggregate in jobs:
            if target == "weights":
                a, sec, ev = analysis_weights(eng, picks, search=search, aggregate=aggregate)
                fi = fiw
            else:
                a, sec, ev = analysis_operands(eng, neu, search=search)
                fi = fio
            default = (search, aggregate) in (("fine", "equivalent"), ("fine", "n/a"))
            rows.append({"model": name, "target": target, "search": search,
                         "aggregate": aggregate, "default": "yes" if default else "",
                         **summary(a, fi), "seconds": sec, "image_evaluations": ev})  # fmt: skip
            pairs += [{"model": name, "target": target, "search": search,
                       "aggregate": aggregate, "layer": k[0], "channel": k[1],
                       "vf_analysis": a[k], "vf_fi": fi[k]} for k in sorted(fi)]  # fmt: skip
            r = rows[-1]
            print(
                f"{name} {target:8s} {search:8s} {aggregate:10s} MAE {r['mae'] * 100:.3f}% "
                f"max {r['max_abs_err'] * 100:.2f} pt rho {r['spearman']:.3f}",
                flush=True,
            )
    import csv

    RESULTS.mkdir(parents=True, exist_ok=True)
    for fname, data in (("outside_models.csv", rows), ("outside_models_pairs.csv", pairs)):
        with open(RESULTS / fname, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(data[0]))
            w.writeheader()
            for r in data:
                w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
        print(f"wrote {RESULTS / fname} ({len(data)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
