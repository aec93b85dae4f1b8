"""Step 1 of DeepVigor+: candidate grids and error distribution maps (EDMs).

The candidate vulnerability values (CVVs) are positive magnitudes ``c_1 < ... < c_K``
(powers of two) used with both signs:

* ``"paper"``: ``2^-10 .. 2^10`` (21 values, the paper's Eq. 11);
* ``"extended"`` (default): the paper grid plus ``2^12, 2^16, 2^24, 2^32, 2^64, 2^100, 2^127``,
  so a target that is not vulnerable at any magnitude can be recognised as such.

An EDM of one target on one image is a histogram of the additive output errors that all
single bit flips of the target's fault sites produce, over the ``2K + 1`` bins cut by the edges
``[-c_K, ..., -c_1, c_1, ..., c_K]``. Bin ``b`` holds the errors in ``[edge[b-1], edge[b])``:

* bin ``0`` (``e < -c_K``, ``-Inf`` included) and bin ``2K`` (``e >= c_K``, ``+Inf`` included;
  NaN errors are counted here, as ``+Inf``) are **always critical**: for the paper grid this is
  the paper's "beyond 2^10 is critical", for the extended grid it only concerns
  ``|e| >= 2^127`` and infinities;
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
every site at once; as every edge is a power of two, an error's bin follows from its float32
exponent bits (sign, biased exponent, and whether it is an exact power of two), so one integer
key per error and one ``bincount`` count them all (the same result as
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

from pytorchfi_deepvigor.bits import flip_all_bits

__all__ = [
    "GRIDS",
    "candidate_grid",
    "bin_edges",
    "bin_index",
    "histogram",
    "operand_edm",
    "weight_edm",
    "search_members",
]

GRIDS: dict[str, tuple[int, ...]] = {
    "paper": tuple(range(-10, 11)),
    "extended": (*range(-10, 11), 12, 16, 24, 32, 64, 100, 127),
}
"""Exponents of the candidate grids: ``c_k = 2 ** exponent``."""

_CHUNK_ELEMENTS = 1 << 20  # errors per chunk: small enough to stay in cache


def candidate_grid(search: str = "extended") -> Tensor:
    """Positive candidate magnitudes ``c_1 < ... < c_K`` (float64, exact powers of two).

    Args:
        search: ``"extended"`` (default) or ``"paper"``.

    Raises:
        ValueError: for an unknown grid name.
    """
    if search not in GRIDS:
        raise ValueError(f"expected search in {sorted(GRIDS)}, got {search!r}")
    return torch.tensor([2.0**e for e in GRIDS[search]], dtype=torch.float64)


def _check_grid(grid: Tensor) -> None:
    if grid.dim() != 1 or grid.numel() < 2:
        raise ValueError(f"expected a 1-D grid of at least 2 magnitudes, got {tuple(grid.shape)}")
    if not bool((grid > 0).all()) or not bool((grid[1:] > grid[:-1]).all()):
        raise ValueError("expected a grid of strictly increasing positive magnitudes")
    exps = torch.log2(grid.double())
    if (
        not bool((exps == exps.round()).all())
        or not -126 <= float(exps[0]) <= float(exps[-1]) <= 127
    ):
        raise ValueError("expected grid magnitudes that are powers of two in [2^-126, 2^127]")


def bin_edges(grid: Tensor) -> Tensor:
    """The ``2K`` bin edges ``[-c_K, ..., -c_1, c_1, ..., c_K]`` (float32)."""
    _check_grid(grid)
    return torch.cat([-grid.flip(0), grid]).to(torch.float32)


_KEYS = 512  # (sign, exponent) keys, see _raw_keys


def _raw_keys(values: Tensor) -> Tensor:
    """Sign-and-exponent key in ``[-256, 256)`` of every float32 value, from its bits alone.

    A non-negative value gets its biased exponent ``E`` (``|v|`` in ``[2^(E-127), 2^(E-126))``,
    255 for Inf/NaN). A negative value gets ``-ceil(|bits| / 2^23)``, i.e. ``-(E' + 1)`` with
    ``|v|`` in ``(2^(E'-127), 2^(E'-126)]``: an exact power of two falls in the bin above it, as
    the bins ``[edge, next edge)`` require; ``-0.0`` gets 0 (like ``+0.0``), a negative NaN -256.
    Computed as ``((bits ^ (s & 0x7FFFFFFF)) - s) >> 23`` with ``s`` the sign mask (no overflow),
    **in place**: ``values`` (a contiguous float32 temporary) is overwritten by the keys.
    """
    bits = values.view(torch.int32)
    sign = bits >> 31  # -1 for a set sign bit, else 0
    bits.bitwise_xor_(sign & 0x7FFFFFFF).sub_(sign).bitwise_right_shift_(23)
    return bits


def _key_table(grid: Tensor) -> Tensor:
    """Bin of every key ``+ 256`` (long ``(512,)``) for the grid's edges."""
    k = grid.numel()
    exps = torch.arange(256, dtype=torch.float64)
    below = (grid.view(1, -1) <= torch.exp2(exps - 127).view(-1, 1)).sum(dim=1)  # c_k <= 2^(E-127)
    neg, pos = k - below, k + below  # indexed by E' and by E
    neg[0], pos[0] = k, k  # zero and subnormals: below c_1
    neg[255], pos[255] = 2 * k, 2 * k  # a negative NaN (-Inf has E' = 254); +Inf and NaN
    return torch.cat([neg.flip(0), pos]).long()  # key -(E' + 1) sits at 255 - E'


def _count(keys: Tensor, grid: Tensor, valid: Tensor | None = None) -> Tensor:
    """Bin counts ``(..., 2K + 1)`` of raw keys ``(..., N)`` over the last dimension."""
    nbins = 2 * grid.numel() + 1
    if valid is not None:
        keys = torch.where(valid, keys, _KEYS - 256)  # an overflow key, dropped below
    lead = keys.shape[:-1]
    flat = keys.reshape(-1, keys.shape[-1])
    n_rows = flat.shape[0]
    offset = torch.arange(n_rows, device=flat.device) * (_KEYS + 1) + 256
    if n_rows * (_KEYS + 1) < 2**31:
        offset = offset.to(torch.int32)
    else:
        flat = flat.long()
    flat = flat.add_(offset.unsqueeze(1)) if flat.is_contiguous() else flat + offset.unsqueeze(1)
    per_key = torch.bincount(flat.view(-1), minlength=n_rows * (_KEYS + 1))
    per_key = per_key.view(n_rows, _KEYS + 1)[:, :_KEYS]
    counts = torch.zeros(n_rows, nbins, dtype=torch.int64, device=flat.device)
    counts.index_add_(1, _key_table(grid).to(flat.device), per_key)
    return counts.reshape(*lead, nbins)


def bin_index(errors: Tensor, grid: Tensor) -> Tensor:
    """Bin (0..2K) of every error; NaN goes to the top bin ``2K`` (counted as ``+Inf``)."""
    _check_grid(grid)
    table = _key_table(grid).to(errors.device)
    return table[(_raw_keys(errors.to(torch.float32, copy=True).contiguous()) + 256).long()]


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
    return _count(_raw_keys(errors.to(torch.float32, copy=True).contiguous()), grid, valid)


def operand_edm(x: Tensor, w: Tensor, grid: Tensor, valid: Tensor | None = None) -> Tensor:
    """EDMs of operand targets (output neurons): errors ``(flip_b(x_j) - x_j) * w_j``.

    Args:
        x: the operands of each target on each image, float32 ``(I, T, J)``.
        w: the weights they multiply, float32 ``(T, J)``.
        grid: candidate magnitudes.
        valid: bool ``(T, J)``; ``False`` marks operands that are not fault sites (zero padding).

    Returns:
        int64 counts ``(T, I, 2K + 1)``; each row sums to ``32 * valid[t].sum()``.
    """
    if x.dim() != 3 or w.dim() != 2 or x.shape[1:] != w.shape:
        raise ValueError(
            f"expected x (I, T, J) and w (T, J), got {tuple(x.shape)} and {tuple(w.shape)}"
        )
    _check_grid(grid)
    n_img, n_tgt, n_ops = x.shape
    mask = None if valid is None else valid.to(x.device).view(n_tgt, 1, n_ops, 1)
    xt = x.transpose(0, 1)  # (T, I, J)
    out = []
    step = max(1, _CHUNK_ELEMENTS // max(1, n_img * n_ops * 32))
    for a in range(0, n_tgt, step):
        xs = xt[a : a + step]
        err = flip_all_bits(xs).sub_(xs.unsqueeze(-1)).mul_(w[a : a + step, None, :, None])
        m = None if mask is None else mask[a : a + step].expand_as(err)
        out.append(_count(_raw_keys(err).flatten(2), grid, None if m is None else m.flatten(2)))
    return torch.cat(out) if out else torch.zeros(0, n_img, 2 * grid.numel() + 1, dtype=torch.long)


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
    n_img, n_tgt, n_w, n_pos = x.shape
    eps = flip_all_bits(w) - w.unsqueeze(-1)  # (T, J, 32)
    xt = x.transpose(0, 1)  # (T, I, J, P)
    vt = None if valid is None else valid.to(x.device).unsqueeze(1)  # (T, 1, J, P)
    if aggregate == "fault":
        xm = _largest(xt, vt)  # (T, I, J)
        keys = _raw_keys(eps.unsqueeze(1) * xm.unsqueeze(-1))  # (T, I, J, 32)
        if vt is None:
            return _count(keys.flatten(2), grid)
        m = vt.any(dim=-1, keepdim=True).expand_as(keys)  # a weight that meets only padding
        return _count(keys.flatten(2), grid, m.flatten(2))
    if vt is not None:  # padding: no error counted (removed from the counts below)
        xt = xt.masked_fill(~vt, 0.0)
    out = []
    per_img = n_w * 32 * n_pos
    step_i = max(1, min(n_img, _CHUNK_ELEMENTS // max(1, per_img)))
    for t in range(n_tgt):
        rows = []
        for a in range(0, n_img, step_i):
            err = eps[t, None, :, :, None] * xt[t, a : a + step_i, :, None, :]
            rows.append(_count(_raw_keys(err).flatten(1), grid))  # err: (i, J, 32, P)
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
