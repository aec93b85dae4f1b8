"""Coverage matrix: every torchvision classifier, and a representative set of timm models, analysed
and injected, or refused with the reason.

For each name of ``torchvision.models.list_models(module=torchvision.models)``: the model with
random seeded weights (``weights=None``, 10 classes, eval mode) on a few seeded random images of a
small input (32x32; ViTs built for it; MaxViT at 64x64 with 2x2 partitions, see ``REDUCED``).
With ``--timm``, the models of :data:`TIMM_MODELS` instead (rows ``timm/<name>``): timm 1.0.31
from the pinned, SHA-256-checked wheel of ``tests/third_party.py`` (imported from the wheel,
nothing installed), ``pretrained=False``, 10 classes, 64x64 images unless the model needs more
(the size and the timm arguments that build it for the small input are in ``REDUCED``). Then

1. the engine and its catalogue (fx or hook path, the layers run on hooks, ``unsupported``);
2. a sampled DeepVigor analysis (``target="both"``) of a few layers: the first, a middle one, the
   last, and a Linear on N-D inputs when the model has one;
3. fault injection on the same layers: for each, bit flips of weights, operands and stored
   activations on seeded random sites (every exponent bit and the sign, some mantissa bits),
   and always the extreme faults: the exponent's high bits stuck at 0 and 1 on the site whose
   value gives 2^64..2^128, +-Inf or NaN. The engine's outcome of every (fault, image) must
   equal the ground-truth oracle's (``tests/oracle.py``, independent of the package: the
   weight written into the live model, or the layer's output, or one neuron recomputed by the
   layer's own forward from a flipped operand, edited by a forward hook, and the model's own
   forward); fault for fault;
4. the model is left exactly as it was.

A model is "works" when every step passes, "refused" when the package raises (the reason is the
error message), "mismatch" when an outcome differs, "not run here" when it is too large for this
machine (the reason says why). Each model runs in its own process with a time limit.

Usage::

    OMP_NUM_THREADS=1 nice -n 10 python validation/coverage.py            # every model
    python validation/coverage.py --models resnet18 swin_t --out /tmp/cov  # a few
    OMP_NUM_THREADS=1 nice -n 10 python validation/coverage.py --timm --resume \
        validation/results/coverage.csv                                     # + the timm set
    python validation/coverage.py --timm --models convnext_atto --out /tmp/cov  # one of them

Writes ``validation/results/coverage.csv`` and ``coverage.md`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import os
import sys
import time
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

RESULTS = Path(__file__).resolve().parent / "results"
INPUT_SIZE = 32
SPECIAL_SIZES = {"maxvit_t": 64, "alexnet": 64}  # MaxViT: 64 / 32 = 2 per window; AlexNet: 63+
REDUCED = {
    "maxvit_t": "reduced: maxvit_t's widths and depths at 64x64 with 2x2 partitions (its 7x7 "
    "partitions need 224x224, where one full forward of the 2 images takes 1.8 s on this machine: "
    "the 288 reference forwards alone ~520 s, the analysis ~100 s per layer and target)",
}  # models built smaller than torchvision's, with why

# timm 1.0.31: a representative model of each family, name -> (input size, timm arguments).
# Cheap ones first, so that a run stopped at a time limit covers the most families.
TIMM_PREFIX = "timm/"
TIMM_SIZE = 64
TIMM_MODELS: dict[str, tuple[int, dict[str, Any]]] = {
    "mobilenetv3_small_100": (TIMM_SIZE, {}),
    "regnety_002": (TIMM_SIZE, {}),
    "convnext_atto": (TIMM_SIZE, {}),
    "efficientnet_b0": (TIMM_SIZE, {}),
    "tf_efficientnet_b0": (TIMM_SIZE, {}),  # TF "same" padding computed in forward
    "resnet18": (TIMM_SIZE, {}),
    "vit_tiny_patch16_224": (TIMM_SIZE, {"img_size": TIMM_SIZE}),
    "deit_tiny_patch16_224": (TIMM_SIZE, {"img_size": TIMM_SIZE}),
    "deit_tiny_distilled_patch16_224": (TIMM_SIZE, {"img_size": TIMM_SIZE}),  # 2 tokens, 2 heads
    "mixer_s16_224": (TIMM_SIZE, {"img_size": TIMM_SIZE}),
    "levit_128s": (TIMM_SIZE, {"img_size": TIMM_SIZE}),
    "mobilevit_xxs": (TIMM_SIZE, {}),
    "repvgg_a0": (TIMM_SIZE, {}),
    "fastvit_t8": (TIMM_SIZE, {}),
    "poolformer_s12": (TIMM_SIZE, {}),
    "coat_tiny": (TIMM_SIZE, {"img_size": TIMM_SIZE}),
    "swin_tiny_patch4_window7_224": (TIMM_SIZE, {"img_size": TIMM_SIZE, "window_size": 4}),
    "resnetv2_50x1_bit": (TIMM_SIZE, {}),
    "eca_nfnet_l0": (TIMM_SIZE, {}),
    "efficientformer_l1": (224, {}),
    "dm_nfnet_f0": (TIMM_SIZE, {}),  # ScaledStdConv2dSame: weight standardised, TF same padding
}
_TOKENS = (
    "img_size=64: 4x4 patches of 16 pixels, 16 tokens (196 at 224), the same widths and depths"
)
REDUCED.update({
    TIMM_PREFIX + "vit_tiny_patch16_224": f"built for 64x64: {_TOKENS} (position embedding of 17)",
    TIMM_PREFIX + "deit_tiny_patch16_224": f"built for 64x64: {_TOKENS} (position embedding of 17)",
    TIMM_PREFIX + "deit_tiny_distilled_patch16_224": f"built for 64x64: {_TOKENS} (position "
    "embedding of 18: class and distillation tokens)",
    TIMM_PREFIX + "mixer_s16_224": f"reduced: {_TOKENS}; its token-mixing MLPs are 16->64->16 "
    "(196->256->196 at 224)",
    TIMM_PREFIX + "levit_128s": "built for 64x64: img_size=64, attention biases of 4x4, 2x2 and 1x1 "
    "maps (14x14, 7x7, 4x4 at 224), the same widths and depths",
    TIMM_PREFIX + "coat_tiny": "built for 64x64: img_size=64, the same widths and depths",
    TIMM_PREFIX + "swin_tiny_patch4_window7_224": "built for 64x64: img_size=64, window_size=4 "
    "(7x7 windows tile the 56, 28, 14, 7 maps of 224x224 only; 4x4 windows tile the 16, 8, 4 "
    "maps at 64 and the last stage's 2x2 map is one window, unshifted), the same widths and "
    "depths; relative-position tables of 7x7 instead of 13x13",
    TIMM_PREFIX + "efficientformer_l1": "input 224x224: its last stage's attention biases are "
    "fixed at 7x7 (timm ignores img_size), so the map must be 224/32 = 7",
})  # fmt: skip
MAX_PARAMS = 250_000_000
FLIP_BITS = (0, 11, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31)
SITES_PER_TARGET = 2  # per layer and target: x 12 bits = 24 faults, x 3 targets, x ~3 layers
FIELDS = [
    "model", "status", "parameters", "input", "path", "catalogued", "nd_linears", "unsupported",
    "layers", "faults", "extreme_faults", "mismatches", "rounding", "weight_coverage",
    "not_covered", "analysis_s", "fi_s", "seconds", "why",
]  # fmt: skip


# ------------------------------------------------------------------------------ reference
# The ground-truth oracle of the tests (tests/oracle.py): independent of the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from oracle import Fault, Oracle  # noqa: E402


def reference_logits(oracle: Oracle, pop: Any, fault: int) -> torch.Tensor:
    """The oracle's logits of one fault of ``pop``: injected into the model itself, its own
    forward."""
    site_idx, bit, value = (int(a[0]) for a in pop.decode(np.array([fault])))
    where = pop.sites[site_idx]
    site = tuple(int(a) for a in where) if where.ndim else int(where)
    return oracle.logits(Fault(pop.target, pop.layer.name, site, bit, value))


def _extreme_site(engine: Any, info: Any, target: str, candidates: np.ndarray) -> np.ndarray:
    """Of ``candidates`` (sites of ``target``), the one whose value (image 0) is largest below
    2 in magnitude: bit 30 stuck at 1 makes it +-Inf or NaN when it lies in [1, 2), else the
    largest value that fault can make (2^64..2^128)."""
    if target == "weights":
        values = info.module.weight.detach().reshape(-1)[torch.as_tensor(candidates)]
    elif target == "stored":
        values = engine.layer_output(info.layer_num)[0].reshape(-1)[torch.as_tensor(candidates)]
    else:
        return candidates[:1]
    mag = values.abs().float()
    mag[mag >= 2] = -1.0
    return candidates[int(mag.argmax()) : int(mag.argmax()) + 1]


# ------------------------------------------------------------------------------ one model
def _build_timm(name: str) -> tuple[nn.Module, torch.Tensor]:
    """A timm model (``name`` without the prefix) with random seeded weights, 10 classes."""
    from third_party import import_timm

    timm = import_timm()
    size, kwargs = TIMM_MODELS.get(name, (TIMM_SIZE, {}))
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10, **kwargs).eval()
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    return model, images


def _build(name: str) -> tuple[nn.Module, torch.Tensor]:
    if name.startswith(TIMM_PREFIX):
        return _build_timm(name[len(TIMM_PREFIX) :])
    import torchvision

    torch.manual_seed(0)
    size = SPECIAL_SIZES.get(name, INPUT_SIZE)
    kwargs: dict[str, Any] = {"image_size": size} if name.startswith("vit_") else {}
    if name == "inception_v3":
        kwargs["aux_logits"] = False
        kwargs["init_weights"] = True
    if name == "googlenet":
        kwargs["aux_logits"] = False
        kwargs["init_weights"] = True
    if name == "maxvit_t":  # torchvision's maxvit_t fixes partition_size=7
        from torchvision.models.maxvit import MaxVit

        model = MaxVit(
            input_size=(size, size), stem_channels=64, partition_size=2,
            block_channels=[64, 128, 256, 512], block_layers=[2, 2, 5, 2], head_dim=32,
            stochastic_depth_prob=0.2, num_classes=10,
        ).eval()  # fmt: skip
    else:
        model = torchvision.models.get_model(name, weights=None, num_classes=10, **kwargs).eval()
    n_img = 2
    if name == "inception_v3":
        size = 80  # its stem needs at least 75 pixels
    images = torch.randn(n_img, 3, size, size, generator=torch.Generator().manual_seed(0))
    return model, images


def _choose_layers(catalogue: list[Any]) -> list[int]:
    n = len(catalogue)
    chosen = {0, n // 2, n - 1}
    nd = [i.layer_num for i in catalogue if i.channel_last]
    if nd:
        chosen.add(nd[len(nd) // 2])
    return sorted(chosen)


def _rounding(
    fast: torch.Tensor,
    slow: torch.Tensor,
    got: torch.Tensor,
    ref: torch.Tensor,
    golden: torch.Tensor,
    fault_free: torch.Tensor,
) -> bool:
    """Whether two outcome rows differ only as masked vs non-critical SDC, by float rounding:
    the two sides' logits agree within the masking tolerance (1e-5 of the largest golden logit),
    or the fault moved each side's logits by at most twice that tolerance from its own
    fault-free logits (the engine's suffix, ``fault_free``; the plain forward, ``golden``),
    which differ from each other by rounding with no fault at all (1.2x the tolerance on
    SwinV2); the engine's delta and the full forward's recomputed dot product then round
    differently on either side of the threshold."""
    differ = fast != slow
    if not bool(((fast[differ] <= 1) & (slow[differ] <= 1)).all()):
        return False
    tol = 1e-5 * golden.abs().amax(dim=1, keepdim=True).clamp_min(1.0)
    if bool(((got - ref).abs() <= tol).all()):
        return True
    small = ((got - fault_free).abs() <= 2 * tol) & ((ref - golden).abs() <= 2 * tol)
    return bool(small.all())


EXTREME_BITS = (30, 29, 31)  # stuck-at-1 of the exponent's MSB: 2^64..2^128, +-Inf, NaN


def _fi(
    engine: Any,
    model: nn.Module,
    layers: list[int],
    seed: int,
    bits: Sequence[int] = FLIP_BITS,
    n_sites: int = SITES_PER_TARGET,
    reference: Any = None,
    refused: list[str] | None = None,
) -> tuple[int, int, int, list[str]]:
    """Faults on ``layers``: per target ``n_sites`` seeded sites x ``bits`` (flips), and the
    extreme site (:func:`_extreme_site`) with :data:`EXTREME_BITS` stuck at 0 and 1; the
    engine's outcomes against ``reference`` (default :func:`reference_logits`, the oracle).
    Returns (faults, mismatches, rounding, notes on the first mismatches). With ``refused``
    (a list), a target of a layer that the package refuses (ValueError, TypeError: operand
    faults of a conv that pads inside its forward, timm's ``Conv2dSame``) is appended there
    with the reason and the other targets and layers still run; without it, the error
    propagates."""
    reference = reference or reference_logits
    from pytorchfi_deepvigor.campaigns.faults import FaultEvaluator

    rng = np.random.default_rng(seed)
    evaluator = FaultEvaluator(engine)
    oracle = Oracle(model, engine.images, view=engine.model)
    faults = mismatches = rounding = 0
    notes: list[str] = []
    for num in layers:
        info = engine.layer(num)
        targets: tuple[Literal["weights", "operands", "stored"], ...] = (
            "weights",
            "operands",
            "stored",
        )
        for target in targets:
            try:
                work = _fi_target(engine, info, target, rng, bits, n_sites)
                m, r, n = _compare_all(engine, evaluator, oracle, work, notes, reference)
            except (ValueError, TypeError) as exc:
                if refused is None:
                    raise
                text = " ".join(str(exc).split())[:300]
                refused.append(f"{target} of {info.name}: {type(exc).__name__}: {text}")
                continue
            faults, mismatches, rounding = faults + n, mismatches + m, rounding + r
    return faults, mismatches, rounding, notes


def _fi_target(
    engine: Any,
    info: Any,
    target: Literal["weights", "operands", "stored"],
    rng: np.random.Generator,
    bits: Sequence[int],
    n_sites: int,
) -> list[tuple[Any, np.ndarray]]:
    """The (population, fault ids) of one layer and target: ``n_sites`` seeded sites x ``bits``
    (flips), and the extreme site with :data:`EXTREME_BITS` stuck at 0 and 1."""
    from pytorchfi_deepvigor.campaigns.faults import FaultPopulation, operand_sites

    if target == "weights":
        sites = rng.choice(info.n_weights, n_sites, replace=False)
        pool = rng.choice(info.n_weights, min(info.n_weights, 256), replace=False)
    elif target == "stored":
        sites = rng.choice(info.neurons_per_image, n_sites, replace=False)
        pool = rng.choice(info.neurons_per_image, min(info.neurons_per_image, 256), replace=False)
    else:
        neurons = rng.choice(info.neurons_per_image, 4, replace=False)
        every = operand_sites(info, neurons)
        sites = every[rng.choice(len(every), n_sites, replace=False)]
        pool = sites
    extreme = _extreme_site(engine, info, target, pool)
    pops = [
        (FaultPopulation(info, target, "flip", sites), bits),
        (FaultPopulation(info, target, "stuck-at", extreme), EXTREME_BITS),
    ]
    return [(pop, np.concatenate([list(pop.stratum(b)) for b in pb])) for pop, pb in pops]


def _compare_all(
    engine: Any,
    evaluator: Any,
    oracle: Oracle,
    work: list[tuple[Any, np.ndarray]],
    notes: list[str],
    reference: Any,
) -> tuple[int, int, int]:
    """(mismatches, rounding, faults) of every (population, fault ids) of ``work``."""
    mismatches = rounding = faults = 0
    for pop, ids in work:
        m, r = _compare(engine, evaluator, oracle, pop, ids, notes, reference)
        faults, mismatches, rounding = faults + len(ids), mismatches + m, rounding + r
    return mismatches, rounding, faults


def _compare(
    engine: Any,
    evaluator: Any,
    oracle: Oracle,
    pop: Any,
    ids: np.ndarray,
    notes: list[str],
    reference: Any,
) -> tuple[int, int]:
    """(mismatches, rounding) of the faults ``ids`` of ``pop``: engine against ``reference``."""
    from pytorchfi_deepvigor.engine import classify

    num = pop.layer.layer_num
    mismatches = rounding = 0
    with torch.no_grad():
        image_idx, pert = evaluator.perturbation(pop, ids)
        logits = engine.run(num, image_idx, pert)
        fast = engine.outcomes_of(num, image_idx, logits).view(len(ids), -1)
        logits = logits.view(len(ids), engine.num_images, -1)
        for row, f in enumerate(ids):
            ref = reference(oracle, pop, int(f)).float()
            slow = classify(ref, engine.golden_logits)
            if fast[row].tolist() == slow.tolist():
                continue
            fault_free = engine.reference_logits(num)
            if _rounding(fast[row], slow, logits[row], ref, engine.golden_logits, fault_free):
                rounding += 1
                continue
            mismatches += 1
            if len(notes) < 3:
                s, b, v = (int(a[0]) for a in pop.decode(np.array([f])))
                notes.append(
                    f"{pop.layer.name} {pop.target} site {pop.sites[s].tolist()} bit {b}"
                    f"{'' if v < 0 else f' stuck at {v}'}: engine {fast[row].tolist()} vs "
                    f"oracle {slow.tolist()}"
                )
    return mismatches, rounding


def run_model(name: str) -> dict[str, Any]:
    """One row of the matrix (never raises: a failure is the row's status and reason)."""
    from pytorchfi_deepvigor.analysis import DeepVigorAnalyzer
    from pytorchfi_deepvigor.catalogue import unsupported_layers
    from pytorchfi_deepvigor.coverage import weight_coverage
    from pytorchfi_deepvigor.engine import SimulationEngine

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    row: dict[str, Any] = {"model": name}
    start = time.perf_counter()
    step = "build"
    try:
        model, images = _build(name)
        row["parameters"] = sum(p.numel() for p in model.parameters())
        row["input"] = "x".join(str(s) for s in images.shape)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        step = "engine"
        engine = SimulationEngine(model, images)
        cat = engine.catalogue
        row["catalogued"] = len(cat)
        row["nd_linears"] = sum(i.channel_last for i in cat)
        unsupported = unsupported_layers(engine.model)  # the engine's view: its twins
        row["unsupported"] = len(unsupported)
        layers = _choose_layers(cat)
        row["layers"] = " ".join(f"{n}:{cat[n].name}({cat[n].kind})" for n in layers)
        step = "analysis"
        t = time.perf_counter()
        result = DeepVigorAnalyzer(engine).analyze(
            target="both", layers=layers, sampling=0.01, seed=0
        )
        row["analysis_s"] = round(time.perf_counter() - t, 1)
        assert result.coverage is not None
        sites = weight_coverage(engine.model, cat)  # fault sites (FI); the analysis' may be less
        row["weight_coverage"] = round(sites.fraction, 6)
        row["not_covered"] = len(sites.missing)
        bad = [x.name for x in result.layers if not 0.0 <= x.lvf <= 1.0]
        step = "fault injection"
        t = time.perf_counter()
        refused: list[str] = []  # targets of layers the package refuses, with the reason
        faults, mismatches, rounding, notes = _fi(engine, model, layers, seed=0, refused=refused)
        row["extreme_faults"] = (len(layers) * 3 - len(refused)) * 2 * len(EXTREME_BITS)
        row["fi_s"] = round(time.perf_counter() - t, 1)
        row["faults"], row["mismatches"], row["rounding"] = faults, mismatches, rounding
        row["path"] = "fx" if engine.uses_fx else "hooks"
        if engine.hook_layers:
            row["path"] += f" ({len(engine.hook_layers)} layers on hooks)"
        changed = [k for k, v in model.state_dict().items() if not torch.equal(before[k], v)]
        why = [REDUCED[name]] if name in REDUCED else []
        if unsupported:
            why.append(
                f"unsupported: {unsupported[0]}"
                + (f" (+{len(unsupported) - 1})" if len(unsupported) > 1 else "")
            )
        if refused:  # the rest ran: its faults, mismatches and rounding are in the columns
            why.append(
                "fault injection refused: " + "; ".join(refused) + " (the other targets and "
                "layers ran: the faults column)"
            )
        if mismatches:
            why += notes
        if bad or changed:
            why.append(f"bad LVF {bad}, model changed {changed[:3]}")
        row["status"] = (
            "mismatch" if mismatches or bad or changed else "refused" if refused else "works"
        )
        row["why"] = "; ".join(why)
    except Exception as exc:  # the package refused, or something broke: record which and why
        row["status"] = "refused" if isinstance(exc, ValueError | TypeError) else "error"
        text = " ".join(str(exc).split())[:300]
        row["why"] = f"{step}: {type(exc).__name__}: {text}"
        row["trace"] = traceback.format_exc(limit=3)
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def coverage_only(name: str) -> dict[str, Any]:
    """The weight coverage of one model (its catalogue only: no analysis, no FI)."""
    from pytorchfi_deepvigor import SimulationEngine
    from pytorchfi_deepvigor.coverage import weight_coverage

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    model, images = _build(name)
    engine = SimulationEngine(model, images)  # its view holds the twins (attention, padding)
    coverage = weight_coverage(engine.model, engine.catalogue)
    return {"weight_coverage": round(coverage.fraction, 6), "not_covered": len(coverage.missing)}


def _coverage_child(name: str, queue: Any) -> None:
    try:
        queue.put(coverage_only(name))
    except Exception as exc:  # recorded, never raised: the row keeps its status
        queue.put({"why_coverage": f"{type(exc).__name__}: {exc}"})


def _child(name: str, queue: Any) -> None:
    queue.put(run_model(name))


def _param_count(name: str) -> int | None:
    """torchvision's parameter count of its weights (None for timm models: they are small)."""
    if name.startswith(TIMM_PREFIX):
        return None
    import torchvision

    try:
        return int(torchvision.models.get_model_weights(name).DEFAULT.meta["num_params"])
    except Exception:
        return None


def _family(name: str) -> str:
    """``resnet50`` -> ``resnet``, ``efficientnet_v2_s`` -> ``efficientnet_v2``, ``vit_b_16`` -> ``vit``."""
    for prefix in ("efficientnet_v2", "swin_v2", "wide_resnet", "mobilenet_v", "regnet_"):
        if name.startswith(prefix):
            return prefix
    return name.split("_")[0].rstrip("0123456789")


def run(
    names: Sequence[str],
    timeout: float,
    out: Path | None = None,
    done: Sequence[dict[str, Any]] = (),
    notes: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Every model in its own process; the matrix is rewritten after each (rows not reached yet
    say so, so a stopped run leaves a complete, honest file). ``done``: rows kept from before."""
    ctx = mp.get_context("spawn")
    rows: list[dict[str, Any]] = list(done)
    for k, name in enumerate(names):
        params = _param_count(name)
        if params is not None and params > MAX_PARAMS:
            rows.append({
                "model": name, "status": "not run here", "parameters": params,
                "why": f"{params / 1e6:.0f} M parameters: building it and a full forward per "
                       f"reference fault exceed this shared 2-core, 23 GB machine's budget "
                       f"(limit {MAX_PARAMS / 1e6:.0f} M)",
            })  # fmt: skip
            print(f"{name}: not run here", flush=True)
            continue
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(name, queue))
        start = time.perf_counter()
        proc.start()
        try:
            row = queue.get(timeout=timeout)
        except Exception:
            row = {
                "model": name, "status": "not run here", "parameters": params,
                "why": f"over the {timeout:.0f} s limit per model on this 2-core machine",
                "seconds": round(time.perf_counter() - start, 1),
            }  # fmt: skip
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
        rows.append(row)
        print(
            f"{name}: {row['status']} {row.get('seconds', '')} s {row.get('why', '')[:120]}",
            flush=True,
        )
        if out is not None:
            pending = [
                {"model": n, "status": "not run here", "parameters": _param_count(n),
                 "why": "not reached: the run was stopped (time limit of the session)"}
                for n in names[k + 1 :]
            ]  # fmt: skip
            write(rows + pending, out, notes)
    return rows


def _notes(out: Path) -> list[str]:
    """The paragraphs of an existing ``coverage.md`` that say how and when its rows were run
    (the ones starting "Run of"), kept when the matrix is rewritten."""
    path = out / "coverage.md"
    if not path.exists():
        return []
    return [p for p in path.read_text(encoding="utf-8").split("\n\n") if p.startswith("Run of")]


def write(rows: list[dict[str, Any]], out: Path, notes: Sequence[str] | None = None) -> None:
    """The matrix, sorted by model, as ``coverage.csv`` and ``coverage.md``; ``notes``: the
    "Run of ..." paragraphs of ``coverage.md`` (default: those already there)."""
    notes = _notes(out) if notes is None else notes
    # rows read back from a csv (--resume) have "" for what was never measured
    rows = [{k: v for k, v in r.items() if v != ""} for r in sorted(rows, key=lambda r: r["model"])]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "coverage.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    counts: dict[str, dict[str, int]] = {"all": {}, "torchvision": {}, "timm": {}}
    for r in rows:
        source = "timm" if r["model"].startswith(TIMM_PREFIX) else "torchvision"
        for key in ("all", source):
            counts[key][r["status"]] = counts[key].get(r["status"], 0) + 1

    def _count(c: dict[str, int]) -> str:
        return ", ".join(f"{v} {k}" for k, v in sorted(c.items()))

    totals = _count(counts["all"])
    if counts["timm"]:  # and how they split
        totals += (
            " ("
            + "; ".join(
                f"{key} {sum(counts[key].values())}: {_count(counts[key])}"
                for key in ("torchvision", "timm")
                if counts[key]
            )
            + ")"
        )
    lines = [
        "# Coverage: torchvision classifiers and timm models",
        "",
        f"Written by `validation/coverage.py` (torch {torch.__version__}); random seeded weights, "
        f"10 classes, 2 images of {INPUT_SIZE}x{INPUT_SIZE} (MaxViT 64 with 2x2 partitions, Inception-v3 80, AlexNet 64), one "
        "thread. Rows `timm/<name>`: timm 1.0.31 (the pinned wheel of tests/third_party.py), "
        f"`pretrained=False`, 10 classes, 2 images of {TIMM_SIZE}x{TIMM_SIZE} (EfficientFormer-L1 "
        "224; the timm arguments that build a model for the small input are in its why column). "
        'Sampled analysis (`target="both"`, `sampling=0.01`) of the listed layers; FI: '
        f"{SITES_PER_TARGET} sites x {len(FLIP_BITS)} bits per layer and target (weights, "
        "operands, stored), plus, in the rows that say so, the extreme faults (bits 30, 29, 31 "
        "stuck at 0 and 1 on the site that gives +-Inf, NaN or 2^64..2^128), every outcome "
        "compared with the ground-truth oracle (tests/oracle.py: the fault written into the "
        "model itself, its own forward; earlier rows: the same comparison, random bits only). "
        '"mismatches": faults whose outcome on some image differs; "rounding": faults '
        "that differ only as masked vs non-critical SDC with logits equal to float rounding "
        "(the fault moved a logit by about the masking tolerance, 1e-5 of the largest golden "
        "logit; the engine adds the exact delta, the full forward recomputes the dot product). "
        '"weight coverage": the share of the model\'s weight elements that are fault sites of '
        "catalogued layers (of the engine's view, with its twins: attention projections, "
        "convolutions that pad in their forward, weights handed to a MatMul), and how many "
        "tensors are not (the result lists each with the reason). Weights: since 310cd04 the "
        "floating-point parameters and buffers of two or more dimensions the forward multiplies "
        "by (position embeddings, class tokens and bias tables are listed apart, not counted; "
        "before, every such tensor counted); rows run before say so in their paragraph. From "
        "the run after 8fdece7 on, fault sites of FI: the analysis' own coverage leaves out the "
        "weight-transforming layers it skips (NFNet's ScaledStdConv2d).",
        "",
        *(line for note in notes for line in (note.strip(), "")),
        f"Totals: {totals}",
        "",
        "| model | status | params (M) | path | layers (catalogued / N-D Linear / unsupported) "
        "| weight coverage (tensors not covered) | faults (mismatches / rounding) | s | why |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        params = f"{int(r['parameters']) / 1e6:.1f}" if r.get("parameters") else ""
        layers = (
            f"{r.get('catalogued', '')} / {r.get('nd_linears', '')} / {r.get('unsupported', '')}"
            if "catalogued" in r
            else ""
        )
        extreme = f", {r['extreme_faults']} extreme" if r.get("extreme_faults") else ""
        fi = (
            f"{r['faults']}{extreme} ({r['mismatches']} / {r['rounding']})" if "faults" in r else ""
        )
        why = str(r.get("why", "")).replace("|", "/")
        cov = (
            f"{100 * float(r['weight_coverage']):.2f}% ({r.get('not_covered', '')})"
            if r.get("weight_coverage")
            else ""
        )
        lines.append(
            f"| {r['model']} | {r['status']} | {params} | {r.get('path', '')} | {layers} | {cov} "
            f"| {fi} | {r.get('seconds', '')} | {why} |"
        )
    (out / "coverage.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    import torchvision

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models",
        nargs="+",
        help="torchvision names (default: every classifier); with --timm, timm names (with or "
        "without the timm/ prefix; default: every model of TIMM_MODELS)",
    )
    parser.add_argument(
        "--timm",
        action="store_true",
        help="run the timm models (TIMM_MODELS, rows timm/<name>) instead of torchvision's; "
        "with --resume the rows there are kept",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per model")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--resume",
        type=Path,
        help="a coverage.csv whose finished rows are kept (not rerun; with --models, the rows of "
        "the models named are rerun)",
    )
    parser.add_argument(
        "--note",
        help='a paragraph "Run of <date> ..." added to coverage.md (when, the load, the commit)',
    )
    parser.add_argument(
        "--coverage-only",
        action="store_true",
        help="with --resume: fill the weight-coverage columns of the finished rows (catalogue "
        "only, seconds per model) and rewrite the matrix",
    )
    args = parser.parse_args(argv)
    notes = _notes(args.out)
    if args.note:
        notes.append(args.note if args.note.startswith("Run of") else f"Run of {args.note}")
    if args.timm:  # in TIMM_MODELS' order (cheap first)
        names = [TIMM_PREFIX + n for n in TIMM_MODELS]
        if args.models:
            names = [n if n.startswith(TIMM_PREFIX) else TIMM_PREFIX + n for n in args.models]
        args.models = names if args.models else None
    else:
        names = args.models or torchvision.models.list_models(module=torchvision.models)
        # the smallest model of each family first, then the rest smallest first (torchvision's
        # parameter counts): a run stopped early covers every family and the most models
        names = sorted(names, key=lambda n: (_param_count(n) or 0, n))
        firsts = list({_family(n): n for n in reversed(names)}.values())[::-1]
        names = firsts + [n for n in names if n not in firsts]
    done: list[dict[str, Any]] = []
    if args.resume is not None and args.resume.exists():
        with open(args.resume, encoding="utf-8") as handle:
            kept = list(csv.DictReader(handle))
        if args.models:  # rerun the named models, keep every other row (not reached ones too)
            done = [r for r in kept if r["model"] not in args.models]
        else:  # run what was not reached (rows of models not in this run are kept as they are)
            done = [
                r for r in kept if r["model"] not in names or not r["why"].startswith("not reached")
            ]
        names = [n for n in names if n not in {r["model"] for r in done}]
    if args.coverage_only:  # fill the coverage columns of the rows there, nothing else
        ctx = mp.get_context("spawn")
        for row in done:
            if row["status"] != "works" or row.get("weight_coverage"):
                continue
            queue = ctx.Queue()
            proc = ctx.Process(target=_coverage_child, args=(row["model"], queue))
            proc.start()
            try:
                row.update(queue.get(timeout=args.timeout))
            except Exception:
                pass
            proc.join(timeout=30)
            print(f"{row['model']}: coverage {row.get('weight_coverage', '?')}", flush=True)
        write(done, args.out, notes)
        return 0
    rows = run(names, args.timeout, args.out, done, notes)
    write(rows, args.out, notes)
    print(f"wrote {args.out / 'coverage.csv'} and coverage.md", flush=True)
    return 0 if all(r["status"] in ("works", "not run here", "refused") for r in rows) else 1


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
