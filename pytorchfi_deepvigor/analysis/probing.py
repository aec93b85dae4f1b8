"""Steps 2 and 3 for a group of targets of one layer: batched VV search, masses and VFs.

The analysers build EDMs for a group of targets (neurons or channels) and hand them here with
a function that turns (target, candidate value) pairs into an engine perturbation. All
(target, image, sign) searches of the group run together: every bisection round is one
``engine.verdicts`` call carrying every unfinished search (the engine chunks it to its memory
budget and keeps of each outcome its criticality and a fingerprint, never the logits), so a
round costs a few batched forwards whatever the number of targets.

The optional zero-gradient skip (the paper's Fig. 6 box 4) uses the gradient of the margin
loss with respect to the layer's output, computed once per layer by :func:`output_gradient`
(one backward per image chunk, ``torch.autograd.grad`` with respect to that tensor only, so no
parameter's ``.grad`` is touched). A target whose gradient is exactly zero on every image is not
searched: its VVs are "none" on both signs (only the outer EDM bins count as critical).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from pytorchfi_deepvigor.bits import AnyFaultModel, IntegerFlip
from pytorchfi_deepvigor.engine import SimulationEngine
from pytorchfi_deepvigor.functional.edm import bin_index, search_members
from pytorchfi_deepvigor.functional.search import (
    bisect_search,
    checked_search,
    guided_search,
    margin_loss,
    runner_up_margin,
)
from pytorchfi_deepvigor.functional.vf import (
    bin_criticality,
    critical_bins_mass,
    non_critical_mass,
    vulnerability_factor,
)
from pytorchfi_deepvigor.perturbations import Perturbation

__all__ = [
    "GroupOutcome",
    "search_group",
    "refine_boundaries",
    "tied_images",
    "output_gradient",
    "margin_gradient",
    "first_probe_index",
    "search_defaults",
    "coarse_errors",
    "COARSE_PATTERNS",
]

MakePerturbation = Callable[[Tensor, Tensor], Perturbation]
"""``(target index (P,), candidate value (P,)) -> perturbation`` of ``P`` batch elements."""


@dataclass(frozen=True)
class GroupOutcome:
    """Search results of ``T`` targets on ``I`` images.

    Attributes:
        plus: long ``(T, I)`` grid index of ``delta_plus`` (``K`` = none).
        minus: long ``(T, I)`` grid index of ``|delta_minus|`` (``K`` = none).
        mass: float64 ``(T, I)`` non-critical mass per image.
        vf: float64 ``(T,)`` NVF or CVF.
        probes: long ``(T,)`` candidates evaluated per target (all images and signs).
        non_monotone: (target, image, sign) searches whose largest member contradicted the
            monotone bisection (``checked`` searches only; 0 otherwise).
        scanned: searches scanned member by member (from their answer up, a row scanned for
            another row's band from two octaves below that band; see :data:`SIBLING_MARGIN`).
        outer_probed: (target, image) pairs whose outer bins were probed (NaN, +-Inf; see
            :func:`search_group`).
        outer_masked: those of them where no outer value was critical (an unread position).
        bins: bool ``(T, I, 2K + 1)``: whether each EDM bin was found (or assumed) critical.
        nan_critical: bool ``(T, I)``: whether the NaN errors are critical, where the caller
            counted them apart (``nans`` of :func:`search_group`; the top bin then holds +Inf
            alone); ``None``: they share the top bin's criticality.
    """

    plus: Tensor
    minus: Tensor
    mass: Tensor
    vf: Tensor
    probes: Tensor
    non_monotone: int = 0
    scanned: int = 0
    outer_probed: int = 0
    outer_masked: int = 0
    bins: Tensor | None = None
    nan_critical: Tensor | None = None


SIBLING_MARGIN: int | None = 8
"""Where a (target, image, sign) search finds criticality not monotone (a band of critical
candidates below a non-critical largest one), the target's other rows that found no critical
candidate are scanned from this many candidates (8: two octaves of the fine grid) below the
lowest band start seen, not over their whole rows (``None``: whole rows, as before). Measured
at 10% sampling, image-evaluations and the largest CVF change against whole-row scans: VGG-16
weights 78,155 -> 35,204 (none), ResNet-18 70,773 -> 51,674 (none), the ViT's weights 447,147
-> 224,260 (0.031 points), MobileNetV2 activations 390,135 -> about 189,000 (0.011 points
without the margin); the whole-row scans were 33-72% of those analyses and found 0 critical
candidates below the band in 816 rows of VGG-11, VGG-16 and ResNet-18."""


GUIDE_IMAGES: int | None = 8
"""The images of every target searched first by a checked search (see
:func:`search_group`); the others gallop from the median answer of the target's guide images
(:func:`~pytorchfi_deepvigor.functional.search.guided_search`). ``None``: every image
bisected."""


GUIDE_MIN_WORK = 4e9
"""Suffix FLOPs the guided search must be expected to save (one probe per row it guesses)
before it is used: its two stages run about ten more rounds (batched forwards) than one
checked search, and a round has a fixed cost, about 13 ms on one CPU thread for the zoo's
MobileNetV2 (4e8 FLOPs at 30 GFLOP/s). Measured, best of two interleaved runs beside a
validation run, 10% sampled analyses of both targets: guided everywhere, MobileNetV2 (width
1/16, 8x8 digits, at most 0.1 MFLOP per suffix) took 17.7 s against 14.4 s (1,752 forwards
against 1,003, 2% fewer image-evaluations); with this limit it searches plainly (14.3 s
against 14.4). ResNet-18 (width 1/8, 32x32, up to 17 MFLOP per suffix): 41.0 s against 46.3 s
(340,681 image-evaluations against 423,857, 1,992 forwards against 2,162), VGG-11 (width 1/8):
10.0 s against 10.8 s."""


def _guided(engine: SimulationEngine, layer_num: int, n_rows: int, n_img: int) -> bool:
    """Whether :func:`search_group` searches its rows in two stages (:data:`GUIDE_IMAGES`)."""
    if GUIDE_IMAGES is None or n_img < 2 * GUIDE_IMAGES:
        return False
    guessed = n_rows * (n_img - GUIDE_IMAGES) / n_img
    return guessed * engine.suffix_flops_per_image(layer_num) >= GUIDE_MIN_WORK


def search_defaults(grid: Tensor, checked: bool | None, group_rows: int | None) -> tuple[bool, int]:
    """The analysers' defaults for a grid: checked search for grids ending at ``+Inf`` (fine),
    and (target, image) rows per group: 16384, fewer for a fine grid (about 4 million EDM cells)."""
    if checked is None:
        checked = bool(torch.isinf(grid[-1]))
    if group_rows is None:
        group_rows = min(16384, max(256, (1 << 22) // (2 * grid.numel() + 1)))
    return checked, group_rows


def first_probe_index(grid: Tensor) -> int | None:
    """Grid index of the candidate ``1.0`` (the paper's first probe), ``None`` if absent."""
    hits = (grid == 1.0).nonzero()
    return int(hits[0, 0]) if hits.numel() else None


def search_group(
    engine: SimulationEngine,
    layer_num: int,
    counts: Tensor,
    grid: Tensor,
    make: MakePerturbation,
    skip: Tensor | None = None,
    checked: bool = False,
    nans: Tensor | None = None,
) -> GroupOutcome:
    """Search the VVs of ``T`` targets on every image of the engine, both signs at once.

    Args:
        engine: the simulation engine.
        layer_num: the analysed layer.
        counts: EDMs ``(T, I, 2K + 1)``.
        grid: the ``K`` candidate magnitudes.
        make: builds the perturbation adding a signed candidate to a target.
        skip: optional bool ``(T,)``: targets not to search (zero gradient).
        checked: check the monotone assumption and scan where it fails
            (:func:`~pytorchfi_deepvigor.functional.search.checked_search`); the VF then counts
            exactly the bins found critical. For a grid ending at ``+Inf`` (the fine grid, whose
            outer bins hold only NaN and +-Inf), a (target, image) pair with outer errors and no
            critical bin of either sign has NaN, +Inf and -Inf probed as well (see below).
        nans: optional long ``(T, I)``: how many of each EDM's top-bin errors are NaN. A neuron
            target's errors are its value's own change, so NaN and +Inf can be judged apart
            (a clamping activation such as ReLU6 turns +Inf into a finite value while NaN
            stays NaN): with the fine grid, each outer value is then judged on its own side
            (:func:`_outer_values`) and NaN apart from +Inf (``GroupOutcome.nan_critical``).

    Returns:
        :class:`GroupOutcome`.
    """
    counts = counts.cpu()  # the search state is small: keep it on the CPU
    n_tgt, n_img, _ = counts.shape
    k = grid.numel()
    plus_m, minus_m = search_members(counts, grid)
    if skip is not None:
        keep = (~skip.cpu()).view(n_tgt, 1, 1)
        plus_m, minus_m = plus_m & keep, minus_m & keep
    members = torch.cat([plus_m.reshape(-1, k), minus_m.reshape(-1, k)])
    half = n_tgt * n_img
    values = grid.to(torch.float32)
    images = torch.arange(n_img).repeat(n_tgt * 2)
    targets = torch.arange(n_tgt).repeat_interleave(n_img).repeat(2)

    def oracle(rows: Tensor, g: Tensor) -> Tensor:
        return judged(rows, g)[0]

    def judged(rows: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
        sign = torch.where(rows < half, 1.0, -1.0)
        pert = make(targets[rows], sign * values[g])
        crit, keys = engine.verdicts(layer_num, images[rows], pert)  # no logits kept
        return crit.cpu(), keys.cpu()

    first = first_probe_index(grid)
    if not checked:
        res = bisect_search(members, oracle, first=first)
        plus = res.index[:half].view(n_tgt, n_img)
        minus = res.index[half:].view(n_tgt, n_img)
        mass = non_critical_mass(counts, plus, minus)
        probes = res.probes.view(2, n_tgt, n_img).sum(dim=(0, 2))
        ar = torch.arange(k)
        bins = bin_criticality(ar >= plus.unsqueeze(-1), ar >= minus.unsqueeze(-1))
        return GroupOutcome(plus, minus, mass, vulnerability_factor(mass), probes, bins=bins)
    if GUIDE_IMAGES is not None and _guided(engine, layer_num, members.shape[0], n_img):
        sign_of = (torch.arange(2 * half) >= half).long()
        out = guided_search(members, judged, targets + n_tgt * sign_of, images < GUIDE_IMAGES,
                            first=first, scope=targets, sibling_margin=SIBLING_MARGIN)  # fmt: skip
    else:
        out = checked_search(
            members, judged, first=first, scope=targets, sibling_margin=SIBLING_MARGIN
        )
    plus = out.index[:half].view(n_tgt, n_img)
    minus = out.index[half:].view(n_tgt, n_img)
    crit = out.critical.view(2, n_tgt, n_img, k)
    probes = out.probes.view(2, n_tgt, n_img).sum(dim=(0, 2))
    outer_plus = outer_minus = nan_crit = None
    asked = masked = 0
    if bool(torch.isinf(grid[-1])) and nans is not None:
        tops = torch.stack([plus_m, minus_m])  # each row's largest member: its top
        outer = _outer_values(engine, layer_num, counts, nans.cpu(), crit, tops, make)
        outer_plus, outer_minus, nan_crit, spent, asked_ti = outer
        probes += spent.sum(dim=1)
        asked = int(asked_ti.sum())
        masked = int((asked_ti & ~outer_plus & ~outer_minus & ~nan_crit).sum())
        split = counts.clone()
        split[..., -1] -= nans.cpu().to(split.dtype)  # the top bin: +Inf alone
        bins = bin_criticality(crit[0], crit[1], outer_plus, outer_minus)
        c = split.to(torch.float64)
        non = (c * ~bins).sum(-1) + nans.cpu().to(torch.float64) * ~nan_crit
        mass = non / counts.to(torch.float64).sum(-1).clamp_min(1)
        return GroupOutcome(
            plus, minus, mass, vulnerability_factor(mass), probes, int(out.non_monotone.sum()),
            int(out.scanned.sum()), asked, masked, bins, nan_crit,
        )  # fmt: skip
    if bool(torch.isinf(grid[-1])):
        outer_plus, outer_minus, asked_ti = _outer_bins(engine, layer_num, counts, crit, make)
        probes += 3 * asked_ti.sum(dim=1)
        asked = int(asked_ti.sum())
        masked = int((asked_ti & ~outer_plus & ~outer_minus).sum())
    mass = critical_bins_mass(counts, crit[0], crit[1], outer_plus, outer_minus)
    return GroupOutcome(
        plus,
        minus,
        mass,
        vulnerability_factor(mass),
        probes,
        int(out.non_monotone.sum()),
        int(out.scanned.sum()),
        asked,
        masked,
        bin_criticality(crit[0], crit[1], outer_plus, outer_minus),
    )


COARSE_PATTERNS = 8
"""A fault model with at most this many patterns per site (int8 words; float exponent-only
flips: 5 in fp16, 8 in bf16 and fp32) makes few, coarse errors per target and image, which the
quarter-octave bins cannot place: its neuron targets have their boundary bins' own errors
searched (:func:`refine_boundaries`). Measured on MobileNetV2's fp16 exponent-only operands
against exhaustive FI (53 neurons): MAE 0.052 -> 0.019 points, at 2x the analysis time."""


def coarse_errors(model: AnyFaultModel) -> bool:
    """Whether ``model``'s errors are few and coarse (see :data:`COARSE_PATTERNS`)."""
    return isinstance(model, IntegerFlip) or model.n_patterns <= COARSE_PATTERNS


def refine_boundaries(
    engine: SimulationEngine,
    layer_num: int,
    errors: Tensor,
    valid: Tensor | None,
    bins: Tensor,
    grid: Tensor,
    make: MakePerturbation,
    n_patterns: int,
    tied: Tensor | None = None,
    exact: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """The exact threshold inside each search row's boundary bin, for discrete error sets.

    The search judges an error by its bin: a bin is critical when its candidate (the bin's
    lower edge) is. Where the class flips at a magnitude inside a bin, the errors of that bin
    above the flip are counted masked. For a fault model with few, coarse errors (an int8
    word's flip moves a value by ``2^b`` steps of its scale) those can be all the critical
    faults of a target. Here every (target, image, sign) row's **boundary bin** (its
    largest-magnitude non-critical bin below its smallest critical one, or its largest bin
    when none is critical) has its own errors' magnitudes bisected, assuming criticality
    monotone within the bin as the search does across bins: one engine call per round for
    every row, about ``log2`` of the bin's distinct errors probes per row.

    An image whose golden logits tie at the top (``tied``: a quantized network's logits are
    few discrete values, and ``argmax`` takes the first of equal ones) is decided by whichever
    tied class a change favours, not by its size: criticality is not monotone there (measured:
    an int8 ResNet-18 layer's faults of bits 1-4 critical on such an image and its larger ones
    not). Its rows get every error probed (each fault of the target on that image, as FI
    would), and their counts replace the bins'; where a target's error model is not the
    fault's own change (a convolution weight's error is a map, judged by its mean), ``exact``
    evaluates the faults themselves.

    Args:
        engine, layer_num: where the errors are added.
        errors: float32 ``(T, I, N)``: each target's errors on each image; column ``n`` is
            pattern ``n % n_patterns`` of a fault site.
        valid: optional bool broadcastable to ``errors``: ``False`` marks non-sites (padding).
        bins: bool ``(T, I, 2K + 1)``: the bins the search found critical
            (:attr:`GroupOutcome.bins`).
        grid: the ``K`` candidate magnitudes.
        make: builds the perturbation adding a signed value to a target (indices ``0..T-1``).
        n_patterns: the fault model's patterns per site.
        tied: optional bool ``(I,)``: images whose golden top logits tie.
        exact: optional ``(target, image, column) -> critical`` (long ``(B,)`` each, bool
            ``(B,)``): the faults of tied images evaluated by the caller (default: each
            column's error added as :func:`make` builds it).

    Returns:
        ``(extra, per_pattern)``: int64 ``(T, I)`` critical errors beyond those their bins
        count (negative where a tied image's bins counted more), and int64
        ``(n_patterns,)`` of them per pattern.
    """
    n_tgt, n_img, n_col = errors.shape
    k = grid.numel()
    idx = bin_index(errors, grid).long()
    crit = bins.to(errors.device).gather(-1, idx)
    real = torch.isfinite(errors)
    if valid is not None:
        real &= valid.to(errors.device).expand_as(real)
    ok = real & (idx != k)  # the middle bin: below the grid's first candidate
    magnitude = errors.abs()
    extra = torch.zeros(n_tgt, n_img, dtype=torch.int64)
    per_pattern = torch.zeros(n_patterns, dtype=torch.int64)
    if tied is not None and bool(tied.any()):
        every = real & tied.to(errors.device).view(1, n_img, 1)  # the middle bin too
        r_t, r_i, r_n = every.nonzero(as_tuple=True)
        if r_t.numel():
            if exact is None:
                pert = make(r_t.cpu(), errors[r_t, r_i, r_n])
                judged = engine.verdicts(layer_num, r_i.cpu(), pert)[0]
            else:
                judged = exact(r_t.cpu(), r_i.cpu(), r_n.cpu())
            probed = torch.zeros_like(every)
            probed[r_t, r_i, r_n] = judged.to(errors.device)
            binned = crit & every
            extra += (probed.sum(dim=-1) - binned.sum(dim=-1)).cpu()
            cols = torch.arange(n_col, device=errors.device) % n_patterns
            for mask, weight in ((probed, 1), (binned, -1)):
                found = mask.nonzero(as_tuple=True)[2]
                per_pattern += weight * torch.bincount(cols[found].cpu(), minlength=n_patterns)
        ok = ok & ~tied.to(errors.device).view(1, n_img, 1)
    for sign in (1.0, -1.0):
        rank = (idx - k) * int(sign)  # 1.. on this sign's side
        side = ok & (rank > 0)
        lowest = torch.where(side & crit, rank, 2 * k + 2).amin(dim=-1, keepdim=True)
        below = side & ~crit & (rank < lowest)
        edge = torch.where(below, rank, 0).amax(dim=-1, keepdim=True)
        cand = below & (rank == edge) & (edge > 0)
        t, i = cand.any(dim=-1).nonzero(as_tuple=True)
        if t.numel() == 0:
            continue
        mags = torch.where(cand[t, i], magnitude[t, i], float("inf"))  # (R, N)
        width = int(cand[t, i].sum(dim=-1).max())
        table = mags.sort(dim=-1).values[:, :width].cpu()
        members = torch.isfinite(table)
        t_cpu, i_cpu = t.cpu(), i.cpu()

        def oracle(
            rows: Tensor,
            m: Tensor,
            sign: float = sign,
            table: Tensor = table,
            t_cpu: Tensor = t_cpu,
            i_cpu: Tensor = i_cpu,
        ) -> Tensor:
            value = (sign * table[rows, m]).to(torch.float32)
            pert = make(t_cpu[rows], value)
            return engine.verdicts(layer_num, i_cpu[rows], pert)[0].cpu()

        found = bisect_search(members, oracle).index
        padded = torch.cat([table, torch.full((table.shape[0], 1), float("inf"))], dim=1)
        threshold = padded.gather(1, found.unsqueeze(1)).to(errors.device)  # (R, 1)
        hit = cand[t, i] & (magnitude[t, i] >= threshold)  # (R, N)
        extra[t_cpu, i_cpu] += hit.sum(dim=-1).cpu()
        cols = hit.nonzero(as_tuple=True)[1] % n_patterns
        per_pattern += torch.bincount(cols.cpu(), minlength=n_patterns)
    return extra, per_pattern


def tied_images(engine: SimulationEngine) -> Tensor | None:
    """bool ``(I,)``: the images whose golden top two logits are equal (a quantized network's
    logits are few discrete values; ``argmax`` takes the first); ``None`` for one class."""
    logits = engine.golden_logits
    if logits.shape[1] < 2:
        return None
    top = logits.topk(2, dim=1).values
    return (top[:, 0] == top[:, 1]).cpu()


_OUTER_VALUES = (float("nan"), float("inf"), float("-inf"))


def _outer_bins(
    engine: SimulationEngine, layer_num: int, counts: Tensor, crit: Tensor, make: MakePerturbation
) -> tuple[Tensor, Tensor, Tensor]:
    """Probe NaN, +Inf and -Inf where nothing finite was critical; the outer bins' criticality.

    The fine grid's outer bins hold only the errors a flip makes infinite or NaN, and they are
    counted critical without a probe: right wherever the target is read (NaN reaches the
    logits, a DUE), wrong where it is not (an output position that no later node reads: a
    token the classifier head skips, a position a strided layer steps over), where FI sees
    every such fault masked. A (target, image) pair with outer errors and *no* critical finite
    bin on either sign is the only one where that can be so (a read target turns the largest
    finite errors, ``+-1.75 * 2^127``, into a class change almost always), so only those pairs
    are probed: NaN and +Inf for the top bin (which holds both), -Inf for the bottom one.

    Returns:
        ``(outer_plus, outer_minus, asked)``, bool ``(T, I)`` each: whether the top and the
        bottom bin are critical, and which pairs were probed.
    """
    n_tgt, n_img = counts.shape[:2]
    has_outer = (counts[..., 0] + counts[..., -1]) > 0
    asked = has_outer & ~(crit[0].any(dim=-1) | crit[1].any(dim=-1))
    top = torch.ones(n_tgt, n_img, dtype=torch.bool)
    bottom = torch.ones(n_tgt, n_img, dtype=torch.bool)
    t, i = asked.nonzero(as_tuple=True)
    if t.numel():
        n = t.numel()
        values = torch.tensor(_OUTER_VALUES, dtype=torch.float32).repeat_interleave(n)
        c = engine.critical(layer_num, i.repeat(3), make(t.repeat(3), values)).cpu().view(3, n)
        top[t, i] = c[0] | c[1]
        bottom[t, i] = c[2]
    return top, bottom, asked


def _outer_values(
    engine: SimulationEngine,
    layer_num: int,
    counts: Tensor,
    nans: Tensor,
    crit: Tensor,
    members: Tensor,
    make: MakePerturbation,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The outer values of neuron targets, each judged on its own: +Inf, -Inf and NaN.

    +Inf is critical where the largest finite positive error searched is (its probe is the
    search's check: the monotone reading carried to its end; where it is not critical, even
    with a critical band below it, +Inf is probed), -Inf likewise on the negative side, NaN
    wherever any finite error is (the target is read, and NaN reaches the logits). Elsewhere
    each value a (target, image) pair holds is probed. Judging them together (every outer bin critical as soon as either side
    has a critical bin) misread the first layer of a ReLU6 network, where +Inf becomes 6 and
    -Inf 0: MobileNetV2's ``features.0.0`` operands 2.10% against exhaustive FI's 1.41%.

    Returns:
        ``(plus_inf, minus_inf, nan, probes, asked)``: bool ``(T, I)`` criticalities of +Inf,
        -Inf and NaN, the probes spent per pair (long) and the pairs probed at all (bool).
    """
    n_inf = counts[..., -1] - nans.to(counts.dtype)
    k = members.shape[-1]
    largest = torch.where(members, torch.arange(k), -1).amax(dim=-1)  # (2, T, I); -1: none
    at_top = crit.gather(-1, largest.clamp_min(0).unsqueeze(-1)).squeeze(-1) & (largest >= 0)
    pos, neg = at_top[0], at_top[1]
    read = crit[0].any(dim=-1) | crit[1].any(dim=-1)
    judged = []
    spent = torch.zeros(counts.shape[:2], dtype=torch.long)
    for value, known, present in (
        (float("inf"), pos, n_inf > 0),
        (float("-inf"), neg, counts[..., 0] > 0),
        (float("nan"), read, nans > 0),
    ):
        out = torch.ones(counts.shape[:2], dtype=torch.bool)
        t, i = (present & ~known).nonzero(as_tuple=True)
        if t.numel():
            values = torch.full((t.numel(),), value, dtype=torch.float32)
            out[t, i] = engine.critical(layer_num, i, make(t, values)).cpu()
            spent[t, i] += 1
        judged.append(out)
    return judged[0], judged[1], judged[2], spent, spent > 0


def output_gradient(
    engine: SimulationEngine, layer_num: int, loss: Callable[[Tensor, Tensor], Tensor] = margin_loss
) -> tuple[Tensor, int]:
    """Gradient of a summed per-image loss w.r.t. the layer's golden output, and the backwards run.

    Args:
        engine: the simulation engine.
        layer_num: the layer.
        loss: ``(logits, golden_top1) -> (B,)``; the paper's margin loss by default.

    Returns:
        ``(grad, backwards)``: ``grad`` has the layer output's shape ``(I, ...)``.
    """
    out = engine.layer_output(layer_num)
    grads, backwards = [], 0
    for start in range(0, engine.num_images, engine.max_batch):
        stop = min(engine.num_images, start + engine.max_batch)
        piece = out[start:stop].detach().clone().requires_grad_(True)
        idx = torch.arange(start, stop)
        with torch.enable_grad():
            logits = engine.suffix(layer_num, idx, piece)
            total = loss(logits, engine.golden_top1[start:stop]).sum()
            (grad,) = torch.autograd.grad(total, piece)
        grads.append(grad.detach())
        backwards += 1
    return torch.cat(grads), backwards


def margin_gradient(engine: SimulationEngine, layer_num: int) -> tuple[Tensor, int]:
    """Gradient of each image's runner-up margin w.r.t. the layer's golden output.

    The margin ``z_golden - max_{j != golden} z_j`` is what a fault must drive below zero; its
    gradient weighs the layer's output positions in the weights analysis's first-order
    equivalent error (:mod:`pytorchfi_deepvigor.analysis.weights`).
    """
    return output_gradient(engine, layer_num, runner_up_margin)
