"""IEEE-754 bit-level fault models as pure tensor functions.

Bit numbering is LSB = 0 everywhere: for float32, bit 31 is the sign, bits 30..23 the
exponent and bits 22..0 the mantissa. float16 has sign 15, exponent 14..10, mantissa 9..0;
bfloat16 has sign 15, exponent 14..7, mantissa 6..0.

Flips are exact: the tensor is reinterpreted as a same-width signed integer (``int32`` for
float32, ``int16`` for float16/bfloat16), XOR-ed with a one-hot mask and reinterpreted back.
No arithmetic touches the float value, so NaN payloads, signed zeros, subnormals and
infinities come out bit for bit.

Example:
    >>> import torch
    >>> flip_bit(torch.tensor([1.0, 1.5, 0.0, 0.0]), torch.tensor([30, 30, 31, 30]))
    tensor([inf, nan, -0., 2.])
    >>> bit_field(30), msb_first(31)
    ('exponent', 0)
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "SUPPORTED_DTYPES",
    "bit_field",
    "bit_width",
    "flip_all_bits",
    "flip_bit",
    "lsb_first",
    "msb_first",
    "stuck_at",
]

# dtype -> (integer view dtype, width, number of mantissa bits)
_LAYOUT: dict[torch.dtype, tuple[torch.dtype, int, int]] = {
    torch.float32: (torch.int32, 32, 23),
    torch.float16: (torch.int16, 16, 10),
    torch.bfloat16: (torch.int16, 16, 7),
}

SUPPORTED_DTYPES: tuple[torch.dtype, ...] = tuple(_LAYOUT)
"""Floating dtypes the bit functions accept."""

BitField = Literal["sign", "exponent", "mantissa"]


def _layout(dtype: torch.dtype) -> tuple[torch.dtype, int, int]:
    if dtype not in _LAYOUT:
        supported = ", ".join(str(d) for d in SUPPORTED_DTYPES)
        raise TypeError(f"unsupported dtype {dtype} for bit faults; supported: {supported}")
    return _LAYOUT[dtype]


def bit_width(dtype: torch.dtype) -> int:
    """Number of bits of one value of a supported floating dtype.

    Args:
        dtype: ``torch.float32``, ``torch.float16`` or ``torch.bfloat16``.

    Returns:
        32 or 16.

    Raises:
        TypeError: for any other dtype.
    """
    return _layout(dtype)[1]


def _check_bits(bit: int | Tensor, width: int) -> None:
    if isinstance(bit, Tensor):
        if bit.dtype.is_floating_point or bit.dtype.is_complex or bit.dtype == torch.bool:
            raise TypeError(f"expected an integer bit tensor, got dtype {bit.dtype}")
        if bit.numel() and (int(bit.min()) < 0 or int(bit.max()) >= width):
            raise ValueError(
                f"expected bit indices in [0, {width - 1}] (LSB = 0), "
                f"got values in [{int(bit.min())}, {int(bit.max())}]"
            )
    elif isinstance(bit, bool) or not isinstance(bit, int):
        raise TypeError(f"expected bit as int or integer Tensor, got {type(bit).__name__}")
    elif not 0 <= bit < width:
        raise ValueError(f"expected bit in [0, {width - 1}] (LSB = 0), got {bit}")


def _mask(bit: int | Tensor, width: int, int_dtype: torch.dtype, device: torch.device) -> Tensor:
    """One-hot masks ``1 << bit`` as signed ``int_dtype`` (the top bit is ``-2**(width-1)``)."""
    shifts = torch.as_tensor(bit, dtype=torch.int64, device=device)
    mask = torch.bitwise_left_shift(torch.ones_like(shifts), shifts)
    mask = torch.where(mask >= 2 ** (width - 1), mask - 2**width, mask)
    return mask.to(int_dtype)


def flip_bit(x: Tensor, bit: int | Tensor) -> Tensor:
    """Flip one bit of every element of ``x`` (an exact IEEE-754 bit flip).

    Args:
        x: float32, float16 or bfloat16 tensor.
        bit: bit index (LSB = 0), an int or an integer tensor broadcastable against ``x``.

    Returns:
        A new tensor of ``x``'s dtype and the broadcast shape of ``x`` and ``bit``.

    Raises:
        TypeError: for an unsupported dtype of ``x`` or a non-integer ``bit``.
        ValueError: for a bit index outside ``[0, width)``.
    """
    int_dtype, width, _ = _layout(x.dtype)
    _check_bits(bit, width)
    mask = _mask(bit, width, int_dtype, x.device)
    return torch.bitwise_xor(x.view(int_dtype), mask).view(x.dtype)


def flip_all_bits(x: Tensor) -> Tensor:
    """Every single-bit flip of every element of ``x`` at once.

    Args:
        x: float32, float16 or bfloat16 tensor.

    Returns:
        Tensor of shape ``(*x.shape, width)``; ``out[..., b]`` is ``x`` with bit ``b`` flipped.
    """
    int_dtype, width, _ = _layout(x.dtype)
    bits = torch.arange(width, device=x.device)
    mask = _mask(bits, width, int_dtype, x.device)
    return torch.bitwise_xor(x.view(int_dtype).unsqueeze(-1), mask).view(x.dtype)


def stuck_at(x: Tensor, bit: int | Tensor, value: int) -> Tensor:
    """Force one bit of every element of ``x`` to ``value`` (stuck-at-0 or stuck-at-1).

    Args:
        x: float32, float16 or bfloat16 tensor.
        bit: bit index (LSB = 0), an int or an integer tensor broadcastable against ``x``.
        value: 0 or 1.

    Returns:
        A new tensor; elements whose bit already equals ``value`` are unchanged.

    Raises:
        ValueError: when ``value`` is not 0 or 1, or ``bit`` is out of range.
    """
    if isinstance(value, bool) or value not in (0, 1):
        raise ValueError(f"expected stuck-at value 0 or 1, got {value!r}")
    int_dtype, width, _ = _layout(x.dtype)
    _check_bits(bit, width)
    mask = _mask(bit, width, int_dtype, x.device)
    ints = x.view(int_dtype)
    out = torch.bitwise_or(ints, mask) if value else torch.bitwise_and(ints, ~mask)
    return out.view(x.dtype)


def _check_width(width: int) -> None:
    if width not in (16, 32):
        raise ValueError(f"expected width 16 or 32, got {width}")


def msb_first(bit: int | Tensor, width: int = 32) -> int | Tensor:
    """Convert an LSB = 0 bit index to MSB = 0 numbering (as in PyTorchALFI / TorchFI).

    The conversion is its own inverse: ``msb_first(msb_first(b)) == b``.

    Args:
        bit: LSB-first index (int or integer tensor).
        width: 32 or 16.

    Returns:
        ``width - 1 - bit``, of the same type as ``bit``.
    """
    _check_width(width)
    _check_bits(bit, width)
    return width - 1 - bit


def lsb_first(bit: int | Tensor, width: int = 32) -> int | Tensor:
    """Convert an MSB = 0 bit index back to this package's LSB = 0 numbering.

    Args:
        bit: MSB-first index (int or integer tensor).
        width: 32 or 16.

    Returns:
        ``width - 1 - bit``, of the same type as ``bit``.
    """
    return msb_first(bit, width)


def bit_field(bit: int, dtype: torch.dtype = torch.float32) -> BitField:
    """Name the IEEE-754 field a bit (LSB = 0) belongs to.

    Args:
        bit: bit index.
        dtype: the floating dtype the index refers to (float32 by default).

    Returns:
        ``"sign"``, ``"exponent"`` or ``"mantissa"``.
    """
    _, width, mantissa = _layout(dtype)
    _check_bits(bit, width)
    if bit == width - 1:
        return "sign"
    return "exponent" if bit >= mantissa else "mantissa"
