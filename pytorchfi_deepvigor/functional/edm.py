"""Step 1 of DeepVigor+: candidate grids and error distribution maps (EDMs).

The candidate vulnerability values (CVVs) are positive magnitudes ``c_1 < ... < c_K``
(powers of two) used with both signs:

* ``"paper"``: ``2^-10 .. 2^10`` (21 values, the paper's Eq. 11);
* ``"extended"``: the paper grid plus ``2^12, 2^16, 2^24, 2^32, 2^64, 2^100, 2^127``, so a
  target that is not vulnerable at any magnitude can be recognised as such;
* ``"fine"`` (default): four candidates per octave, ``(1 + q/4) * 2^e`` for ``e`` in
  ``-24 .. 127`` and ``q`` in ``0..3``, then ``+Inf``: the same resolution over the whole range
  where bit-flip errors occur (no jumps like ``2^32 -> 2^64``), and the outermost finite bin
  ``[1.75 * 2^127, Inf)`` is probed like the others, so only NaN and +-Inf are assumed critical
  (what FI sees as a DUE: a weight of ``-Inf`` in a Linear head makes a logit ``-Inf``), and
  even those are probed where no finite bin of a target and image is critical (an output no
  later node reads; :func:`~pytorchfi_deepvigor.analysis.probing.search_group`). ``-Inf``
  goes to bin 0 with the finite errors below ``-1.75 * 2^127``, which share its key (the only
  finite errors the fine grid assumes critical).

An EDM of one target on one image is a histogram of the additive output errors that all
single bit flips of the target's fault sites produce, over the ``2K + 1`` bins cut by the edges
``[-c_K, ..., -c_1, c_1, ..., c_K]``. Bin ``b`` holds the errors in ``[edge[b-1], edge[b])``:

* bin ``0`` (``e < -c_K``, ``-Inf`` included) and bin ``2K`` (``e >= c_K``, ``+Inf`` included;
  NaN errors are counted here, as ``+Inf``) are **critical** without a probe: for the paper grid
  this is the paper's "beyond 2^10 is critical", for the extended grid it only concerns
  ``|e| >= 2^127`` and infinities, for the fine grid (``c_K = Inf``) only NaN and +-Inf, and
  there only where some finite bin of the same target and image is critical (elsewhere NaN,
  +Inf and -Inf are probed);
* bin ``K`` (``[-c_1, c_1)``) is **never critical**: below the grid's resolution (the paper's
  masked errors);
* the positive bin ``[c_k, c_{k+1})`` (bin ``K + k``) is critical iff the candidate ``+c_k`` is,
  the negative bin ``[-c_{k+1}, -c_k)`` (bin ``K - k``) iff ``-c_k`` is.

The vulnerability-value search space (VVSS) is therefore the set of inner edges of non-empty
bins: ``+c_k`` (``k < K``) when bin ``K + k`` is non-empty, ``-c_k`` likewise
(:func:`search_members`). Fault sites: an operand target (an output neuron) has the operands of
its receptive field (only the input channels of its group; zero padding is not a site); a weight
target (an output channel ``k``) has the weights of filter ``k``, and every output position adds
one error per (weight, bit) (``aggregate="position"``, the paper) or only the positional error
of largest magnitude (``aggregate="fault"``).

Counting is vectorised: :func:`~pytorchfi_deepvigor.bits.flip_all_bits` gives every flip of
every site at once; as every edge is a power of two (or, for the fine grid, a power of two times
``1.25``, ``1.5`` or ``1.75``), an error's bin follows from its float32 sign, exponent and (fine
grid) two leading mantissa bits, so one integer key per error and one ``bincount`` count them all (the same result as
``torch.bucketize(errors, edges, right=True)``, several times faster); there is no Python loop
over sites or bits.

Example:
    >>> grid = candidate_grid("paper")
    >>> len(grid), float(grid[0]), float(grid[-1])
    (21, 0.0009765625, 1024.0)
    >>> counts = histogram(torch.tensor([[0.0, 3.0, -3.0, float("nan")]]), grid)
    >>> [int(counts[0, b]) for b in (21, 42, 21 + 1 + 11, 21 - 1 - 11)]  # 0, NaN, 3, -3
    [1, 1, 1, 1]
"""

from __future__ import annotations

import torch
from torch import Tensor

from pytorchfi_deepvigor.bits import AnyFaultModel, parse_fault_model

__all__ = [
    "GRIDS",
    "FINE_RANGE",
    "SEARCHES",
    "candidate_grid",
    "grid_summary",
    "key_shift",
    "bin_edges",
    "bin_index",
    "bin_lookup",
    "histogram",
    "operand_edm",
    "weight_edm",
    "search_members",
]

GRIDS: dict[str, tuple[int, ...]] = {
    "paper": tuple(range(-10, 11)),
    "extended": (*range(-10, 11), 12, 16, 24, 32, 64, 100, 127),
}
"""Exponents of the power-of-two candidate grids: ``c_k = 2 ** exponent``."""

FINE_RANGE = (-24, 127)
"""Octaves ``e`` of the fine grid: candidates ``(1 + q/4) * 2^e``, ``q = 0..3``, then ``+Inf``."""

SEARCHES = ("fine", "extended", "paper")
"""The candidate grids by name, the default first."""

_CHUNK_ELEMENTS = 1 << 20  # errors per chunk: small enough to stay in cache


def candidate_grid(search: str = "fine") -> Tensor:
    """Positive candidate magnitudes ``c_1 < ... < c_K`` (float64, exact in float32).

    Args:
        search: ``"fine"`` (default), ``"extended"`` or ``"paper"``.

    Raises:
        ValueError: for an unknown grid name.
    """
    if search == "fine":
        lo, hi = FINE_RANGE
        values = [(1.0 + q / 4.0) * 2.0**e for e in range(lo, hi + 1) for q in range(4)]
        return torch.tensor([*values, float("inf")], dtype=torch.float64)
    if search not in GRIDS:
        raise ValueError(f"expected search in {list(SEARCHES)}, got {search!r}")
    return torch.tensor([2.0**e for e in GRIDS[search]], dtype=torch.float64)


def grid_summary(search: str) -> dict[str, object]:
    """What a result records of a grid: its name, size and ends (``"inf"`` for ``+Inf``)."""
    grid = candidate_grid(search)
    last = float(grid[-1])
    return {
        "grid": search,
        "grid_size": grid.numel(),
        "grid_min": float(grid[0]),
        "grid_max": "inf" if last == float("inf") else last,
    }


def key_shift(grid: Tensor) -> int:
    """Right shift of the float32 bits that keys the grid's bins: 23 (octaves) or 21 (quarters)."""
    finite = grid[torch.isfinite(grid)].to(torch.float32)
    low = finite.view(torch.int32) & ((1 << 23) - 1)
    return 23 if not bool(low.any()) else 21


def _check_grid(grid: Tensor) -> None:
    if grid.dim() != 1 or grid.numel() < 2:
        raise ValueError(f"expected a 1-D grid of at least 2 magnitudes, got {tuple(grid.shape)}")
    if not bool((grid > 0).all()) or not bool((grid[1:] > grid[:-1]).all()):
        raise ValueError("expected a grid of strictly increasing positive magnitudes")
    finite = grid[:-1] if float(grid[-1]) == float("inf") else grid  # only the last may be +Inf
    if not bool(torch.isfinite(finite).all()):
        raise ValueError("expected finite grid magnitudes (only the last may be +Inf)")
    mant, exps = torch.frexp(finite.double())  # finite = mant * 2^exps, mant in [0.5, 1)
    quarters = mant * 8.0  # 4, 5, 6 or 7 for (1 + q/4) * 2^e
    if (
        not bool((quarters == quarters.round()).all())
        or not -126 <= int(exps[0]) - 1 <= int(exps[-1]) - 1 <= 127
    ):
        raise ValueError(
            "expected grid magnitudes (1 + q/4) * 2^e with q in 0..3 and e in [-126, 127]"
        )


def bin_edges(grid: Tensor) -> Tensor:
    """The ``2K`` bin edges ``[-c_K, ..., -c_1, c_1, ..., c_K]`` (float32)."""
    _check_grid(grid)
    return torch.cat([-grid.flip(0), grid]).to(torch.float32)


def _raw_keys(values: Tensor, shift: int = 23) -> Tensor:
    """Sign-and-magnitude key in ``[-H, H)`` (``H = 2^(31 - shift)``) of every float32 value.

    With ``shift = 23`` a non-negative value gets its biased exponent ``E`` (``|v|`` in
    ``[2^(E-127), 2^(E-126))``, 255 for Inf/NaN); with ``shift = 21`` the exponent and the two
    leading mantissa bits, i.e. the quarter ``[(1 + q/4) 2^e, (1 + (q+1)/4) 2^e)``. A negative
    value gets ``-ceil(|bits| / 2^shift)``: an exact edge falls in the bin above it, as the bins
    ``[edge, next edge)`` require; ``-0.0`` gets 0 (like ``+0.0``), a negative NaN ``-H``.
    Computed as ``((bits ^ (s & 0x7FFFFFFF)) - s) >> shift`` with ``s`` the sign mask (no
    overflow), **in place**: ``values`` (a contiguous float32 temporary) is overwritten.
    """
    bits = values.view(torch.int32)
    sign = bits >> 31  # -1 for a set sign bit, else 0
    bits.bitwise_xor_(sign & 0x7FFFFFFF).sub_(sign).bitwise_right_shift_(shift)
    return bits


_KEY_TABLES: dict[tuple[bytes, int], Tensor] = {}  # the last few grids' tables


def _key_table(grid: Tensor, shift: int) -> Tensor:
    """Bin of every key ``+ H`` (long ``(2H,)``) for the grid's edges (cached per grid: the
    analysers bin every group's errors with one grid)."""
    key = (grid.detach().double().cpu().numpy().tobytes(), shift)
    table = _KEY_TABLES.get(key)
    if table is None:
        if len(_KEY_TABLES) >= 8:
            _KEY_TABLES.clear()
        table = _KEY_TABLES[key] = _build_key_table(grid.detach().cpu(), shift)
    return table


def _build_key_table(grid: Tensor, shift: int) -> Tensor:
    k = grid.numel()
    half = 1 << (31 - shift)
    per_octave = 1 << (23 - shift)
    key = torch.arange(half, dtype=torch.float64)
    exp, quarter = torch.div(key, per_octave, rounding_mode="floor"), key % per_octave
    lower = torch.exp2(exp - 127) * (1 + quarter / per_octave)  # the key's smallest magnitude
    below = (grid.view(1, -1) <= lower.view(-1, 1)).sum(dim=1)  # c_k <= lower edge
    neg, pos = k - below, k + below  # indexed by the negative and positive keys
    neg[:per_octave], pos[:per_octave] = k, k  # zero and subnormals: below c_1
    top = half - per_octave  # the first key of E = 255: +Inf and NaN
    pos[top:] = 2 * k
    neg[top:] = 2 * k  # negative NaN
    neg[top - 1] = 0  # -Inf (it shares the key of the magnitudes just below 2^128): critical
    table = torch.cat([neg.flip(0), pos]).long()  # key -(m + 1) sits at H - 1 - m
    return table


def _count(keys: Tensor, grid: Tensor, valid: Tensor | None = None, shift: int = 23) -> Tensor:
    """Bin counts ``(..., 2K + 1)`` of raw keys ``(..., N)`` over the last dimension."""
    nbins = 2 * grid.numel() + 1
    half = 1 << (31 - shift)
    n_keys = 2 * half
    if valid is not None:
        keys = torch.where(valid, keys, half)  # an overflow key, dropped below
    lead = keys.shape[:-1]
    flat = keys.reshape(-1, keys.shape[-1])
    n_rows = flat.shape[0]
    offset = torch.arange(n_rows, device=flat.device) * (n_keys + 1) + half
    if n_rows * (n_keys + 1) < 2**31:
        offset = offset.to(torch.int32)
    else:
        flat = flat.long()
    flat = flat.add_(offset.unsqueeze(1)) if flat.is_contiguous() else flat + offset.unsqueeze(1)
    per_key = torch.bincount(flat.view(-1), minlength=n_rows * (n_keys + 1))
    per_key = per_key.view(n_rows, n_keys + 1)[:, :n_keys]
    counts = torch.zeros(n_rows, nbins, dtype=torch.int64, device=flat.device)
    counts.index_add_(1, _key_table(grid, shift).to(flat.device), per_key)
    return counts.reshape(*lead, nbins)


def _keys_of(errors: Tensor, shift: int) -> Tensor:
    return _raw_keys(errors.to(torch.float32, copy=True).contiguous(), shift)


def bin_index(errors: Tensor, grid: Tensor) -> Tensor:
    """Bin (0..2K) of every error; NaN goes to the top bin ``2K`` (counted as ``+Inf``)."""
    _check_grid(grid)
    shift = key_shift(grid)
    table = _key_table(grid, shift).to(errors.device)
    return table[(_keys_of(errors, shift) + (1 << (31 - shift))).long()]


def bin_lookup(errors: Tensor, per_bin: Tensor, grid: Tensor) -> Tensor:
    """``per_bin[..., b]`` at the bin ``b`` of every error: ``(..., N)`` of ``per_bin``'s dtype.

    The same as ``per_bin.gather(-1, bin_index(errors, grid))``, in one gather: ``per_bin``
    (leading dims as ``errors``', e.g. the bins found critical per target and image) is first
    spread over the float32 keys (2,048 per row for the fine grid), then each error's key
    picks its entry, so no bin index is materialised.
    """
    _check_grid(grid)
    shift = key_shift(grid)
    table = _key_table(grid, shift).to(errors.device)
    lead = errors.shape[:-1]
    per_key = per_bin.to(errors.device).reshape(-1, per_bin.shape[-1])[:, table]
    keys = _keys_of(errors, shift).reshape(per_key.shape[0], -1)
    idx = keys.add_(1 << (31 - shift)).long()
    return per_key.gather(1, idx).view(*lead, errors.shape[-1])


def histogram(errors: Tensor, grid: Tensor, valid: Tensor | None = None) -> Tensor:
    """Counts of ``errors[..., n]`` over the last dimension, per leading index.

    The bins are found from the float32 bit patterns (one integer key per error, one
    ``bincount``), which is exact for power-of-two edges and several times faster than a
    binary search. Errors are binned as float32.

    Args:
        errors: float tensor ``(..., N)``.
        grid: candidate magnitudes (:func:`candidate_grid`).
        valid: optional bool tensor broadcastable to ``errors``; ``False`` entries are not counted.

    Returns:
        int64 tensor ``(..., 2K + 1)``.
    """
    _check_grid(grid)
    shift = key_shift(grid)
    return _count(_keys_of(errors, shift), grid, valid, shift)


def _model(faults: AnyFaultModel | None, dtype: torch.dtype) -> AnyFaultModel:
    return parse_fault_model("flip" if faults is None else faults, dtype)


def operand_edm(
    x: Tensor,
    w: Tensor,
    grid: Tensor,
    valid: Tensor | None = None,
    faults: AnyFaultModel | None = None,
    nans: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """EDMs of operand targets (output neurons): errors ``(flip_b(x_j) - x_j) * w_j``.

    Args:
        x: the operands of each target on each image, ``(I, T, J)``, in the model's format.
        w: the weights they multiply, ``(T, J)``.
        grid: candidate magnitudes.
        valid: bool ``(T, J)``; ``False`` marks operands that are not fault sites (zero padding).
        faults: the fault model (default: every single bit flip of ``x``'s format); its
            patterns replace the bit flips: ``(faulty_p(x_j) - x_j) * w_j``.

        nans: also return how many of each EDM's errors are NaN (counted in its top bin).

    Returns:
        int64 counts ``(T, I, 2K + 1)``; each row sums to ``P * valid[t].sum()`` (``P``
        patterns per operand: 32 for float32 flips). With ``nans``: ``(counts, nan_counts)``,
        the latter int64 ``(T, I)``, from the same pass over the errors.
    """
    if x.dim() != 3 or w.dim() != 2 or x.shape[1:] != w.shape:
        raise ValueError(
            f"expected x (I, T, J) and w (T, J), got {tuple(x.shape)} and {tuple(w.shape)}"
        )
    _check_grid(grid)
    model = _model(faults, x.dtype)
    shift = key_shift(grid)
    n_img, n_tgt, n_ops = x.shape
    mask = None if valid is None else valid.to(x.device).view(n_tgt, 1, n_ops, 1)
    xt = x.transpose(0, 1)  # (T, I, J)
    wf = w.float()
    out, nan_out = [], []
    step = max(1, _CHUNK_ELEMENTS // max(1, n_img * n_ops * model.n_patterns))
    for a in range(0, n_tgt, step):
        xs = xt[a : a + step]
        err = model.deltas(xs).mul_(wf[a : a + step, None, :, None])
        m = None if mask is None else mask[a : a + step].expand_as(err)
        if nans:
            nan = torch.isnan(err)
            if m is not None:
                nan &= m
            nan_out.append(nan.sum(dim=(2, 3)))
        keys = _raw_keys(err, shift).flatten(2)
        out.append(_count(keys, grid, None if m is None else m.flatten(2), shift))
    counts = (
        torch.cat(out) if out else torch.zeros(0, n_img, 2 * grid.numel() + 1, dtype=torch.long)
    )
    if not nans:
        return counts
    return counts, torch.cat(nan_out) if nan_out else torch.zeros(0, n_img, dtype=torch.long)


def _largest(x: Tensor, valid: Tensor | None) -> Tensor:
    """The operand of largest magnitude over positions (last dim), padding excluded."""
    mag = x.abs()
    if valid is not None:
        mag = torch.where(valid, mag, -1.0)
    pick = mag.argmax(dim=-1, keepdim=True)
    return torch.gather(x, -1, pick).squeeze(-1)


def weight_edm(
    x: Tensor,
    w: Tensor,
    grid: Tensor,
    valid: Tensor | None = None,
    aggregate: str = "position",
    faults: AnyFaultModel | None = None,
) -> Tensor:
    """EDMs of weight targets (output channels): errors ``(flip_b(w_j) - w_j) * x_{j,p}``.

    Args:
        x: the operands each weight meets at each analysed output position, float32
            ``(I, T, J, P)`` (``T`` targets, ``J`` weights per filter, ``P`` positions).
        w: the filters, float32 ``(T, J)``.
        grid: candidate magnitudes.
        valid: bool ``(T, J, P)``; ``False`` marks zero padding (no operand, no error counted).
        aggregate: ``"position"`` (one error per weight, bit and position, the paper) or
            ``"fault"`` (one error per weight and bit: the positional error of largest magnitude,
            i.e. the error at the first position of largest operand magnitude).
        faults: the fault model (default: every single bit flip of ``w``'s format).

    Returns:
        int64 counts ``(T, I, 2K + 1)``.
    """
    if aggregate not in ("position", "fault"):
        raise ValueError(f"expected aggregate 'position' or 'fault', got {aggregate!r}")
    if x.dim() != 4 or w.dim() != 2 or x.shape[1:3] != w.shape:
        raise ValueError(
            f"expected x (I, T, J, P) and w (T, J), got {tuple(x.shape)} and {tuple(w.shape)}"
        )
    _check_grid(grid)
    shift = key_shift(grid)
    n_img, n_tgt, n_w, n_pos = x.shape
    model = _model(faults, w.dtype)
    eps = model.deltas(w)  # (T, J, patterns)
    xt = x.float().transpose(0, 1)  # (T, I, J, P)
    vt = None if valid is None else valid.to(x.device).unsqueeze(1)  # (T, 1, J, P)
    if aggregate == "fault":
        xm = _largest(xt, vt)  # (T, I, J)
        keys = _raw_keys(eps.unsqueeze(1) * xm.unsqueeze(-1), shift)  # (T, I, J, patterns)
        if vt is None:
            return _count(keys.flatten(2), grid, shift=shift)
        m = vt.any(dim=-1, keepdim=True).expand_as(keys)  # a weight that meets only padding
        return _count(keys.flatten(2), grid, m.flatten(2), shift)
    if vt is not None:  # padding: no error counted (removed from the counts below)
        xt = xt.masked_fill(~vt, 0.0)
    out = []
    per_img = n_w * model.n_patterns * n_pos
    step_i = max(1, min(n_img, _CHUNK_ELEMENTS // max(1, per_img)))
    for t in range(n_tgt):
        rows = []
        for a in range(0, n_img, step_i):
            err = eps[t, None, :, :, None] * xt[t, a : a + step_i, :, None, :]
            keys = _raw_keys(err, shift).flatten(1)  # err: (i, J, patterns, P)
            rows.append(_count(keys, grid, shift=shift))
        out.append(torch.cat(rows))
    if not out:
        return torch.zeros(0, n_img, 2 * grid.numel() + 1, dtype=torch.long)
    counts = torch.stack(out)
    if vt is not None:
        _drop_padding(counts, eps, vt.squeeze(1))
    return counts


def _drop_padding(counts: Tensor, eps: Tensor, valid: Tensor) -> None:
    """Remove from ``counts`` the errors of padded (zero) operands: ``eps * 0``.

    Such an error is ``+-0`` (the middle bin) for a finite ``eps`` and NaN (the top bin) for an
    infinite or NaN one; ``eps`` is ``(T, J, 32)``, ``valid`` ``(T, J, P)``.
    """
    padded = (~valid).sum(dim=-1, dtype=torch.int64)  # (T, J)
    finite = torch.isfinite(eps).sum(dim=-1)  # (T, J)
    mid = (padded * finite).sum(dim=1)
    top = (padded * (eps.shape[-1] - finite)).sum(dim=1)
    k = (counts.shape[-1] - 1) // 2
    counts[:, :, k] -= mid.view(-1, 1)
    counts[:, :, 2 * k] -= top.view(-1, 1)


def search_members(counts: Tensor, grid: Tensor) -> tuple[Tensor, Tensor]:
    """VVSS membership of each candidate magnitude, per sign.

    Args:
        counts: EDM counts ``(..., 2K + 1)``.
        grid: the ``K`` candidate magnitudes.

    Returns:
        ``(plus, minus)``, bool ``(..., K)``: ``plus[..., g]`` is true when the bin
        ``[c_g, c_{g+1})`` is non-empty (so ``+grid[g]`` must be probed), ``minus[..., g]`` when
        ``[-c_{g+1}, -c_g)`` is. The last candidate ``c_K`` is never a member: errors beyond it
        are critical by definition.
    """
    k = grid.numel()
    if counts.shape[-1] != 2 * k + 1:
        raise ValueError(f"expected counts with {2 * k + 1} bins, got {counts.shape[-1]}")
    false = torch.zeros(*counts.shape[:-1], 1, dtype=torch.bool, device=counts.device)
    plus = torch.cat([counts[..., k + 1 : 2 * k] > 0, false], dim=-1)
    minus = torch.cat([counts[..., :k].flip(-1)[..., : k - 1] > 0, false], dim=-1)
    return plus, minus
