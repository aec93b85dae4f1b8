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

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_FAULT_MODEL",
    "FAULT_KINDS",
    "SUPPORTED_DTYPES",
    "FaultModel",
    "AnyFaultModel",
    "IntegerFlip",
    "QuantizedFlip",
    "bit_field",
    "bit_width",
    "flip_all_bits",
    "flip_bit",
    "lsb_first",
    "msb_first",
    "parse_fault_model",
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


# ----------------------------------------------------------------------------- fault models
FAULT_KINDS: tuple[str, ...] = ("flip", "stuck-at", "mbu2", "mbu3")
"""The kinds of fault a :class:`FaultModel` injects into one stored word:

* ``"flip"``: one bit inverted (a single-event upset);
* ``"stuck-at"``: one bit forced to 0 and, as another fault, to 1 (two faults per bit);
* ``"mbu2"``, ``"mbu3"``: 2 or 3 adjacent bits of the word inverted together (the common shape
  of a multi-bit upset: one particle strike across neighbouring cells).
"""

DEFAULT_FAULT_MODEL = "flip"
"""The default: single bit flips, every bit of the model's own float format."""

_DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def _field_bits(name: str, dtype: torch.dtype) -> range:
    _, width, mantissa = _layout(dtype)
    if name == "sign":
        return range(width - 1, width)
    if name == "exponent":
        return range(mantissa, width - 1)
    return range(0, mantissa)


def _parse_bits(text: str, dtype: torch.dtype) -> tuple[int, ...]:
    """``"exponent,31"`` or ``"23-30"`` -> the sorted bit positions (LSB = 0)."""
    width = bit_width(dtype)
    chosen: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if part in ("sign", "exponent", "mantissa"):
            chosen.update(_field_bits(part, dtype))
            continue
        lo, sep, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise ValueError(
                f"bad bit selection {part!r} in {text!r}: expected sign, exponent, mantissa, "
                "a bit (e.g. 30) or a range (e.g. 23-30), comma separated"
            ) from None
        a, b = min(a, b), max(a, b)
        if a < 0 or b >= width:
            raise ValueError(f"bit selection {part!r} outside [0, {width - 1}] for {dtype}")
        chosen.update(range(a, b + 1))
    if not chosen:
        raise ValueError(f"empty bit selection in {text!r}")
    return tuple(sorted(chosen))


def _ranges(bits: tuple[int, ...]) -> str:
    """``(23, 24, 25, 31)`` -> ``"23-25,31"``."""
    out, start = [], bits[0]
    for prev, cur in zip(bits, (*bits[1:], None), strict=True):
        if cur != prev + 1 if cur is not None else True:
            out.append(str(start) if start == prev else f"{start}-{prev}")
            if cur is not None:
                start = cur
    return ",".join(out)


def _signed(mask: int, width: int) -> int:
    return mask - 2**width if mask >= 2 ** (width - 1) else mask


@dataclass(frozen=True)
class FaultModel:
    """Which faulty values a fault writes into one stored word: shared by FI and the analysis.

    A fault model is a list of *patterns*: pattern ``p`` touches the bits of ``masks[p //
    multiplicity]`` of the word, by inversion (``flip``, ``mbu2``, ``mbu3``) or by forcing them
    to ``p % multiplicity`` (``stuck-at``: two patterns per bit). The word is the value in the
    model's own float format ``dtype`` (float32, float16 or bfloat16): a float16 model's weight
    is a 16-bit word. Every fault of a site is one pattern; a campaign's population is sites x
    patterns, and a VF is the critical fraction of those faults.

    Build one from its name with :func:`parse_fault_model` (``"flip"``, ``"stuck-at"``,
    ``"mbu2"``, ``"mbu3"``, each optionally restricted to some bits: ``"flip:exponent"``,
    ``"mbu2:23-30"``, ``"stuck-at:31"``).

    Attributes:
        kind: one of :data:`FAULT_KINDS`.
        dtype: the float format of the stored words.
        bits: the bits the faults may touch, ascending (LSB = 0); a multi-bit upset touches
            ``n`` adjacent bits that all lie in ``bits``.

    Example:
        >>> m = parse_fault_model("mbu2:29-31")
        >>> m.name, m.n_patterns, [m.pattern_bits(p) for p in range(m.n_patterns)]
        ('mbu2:29-31', 2, [(29, 30), (30, 31)])
        >>> m.faulty(torch.tensor([1.0]), torch.tensor([0]))  # 0x3F800000 -> 0x5F800000
        tensor([1.8447e+19])
    """

    kind: str
    dtype: torch.dtype = torch.float32
    bits: tuple[int, ...] = ()
    masks: tuple[int, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"expected a fault kind in {FAULT_KINDS}, got {self.kind!r}")
        width = bit_width(self.dtype)
        bits = tuple(sorted(set(self.bits))) if self.bits else tuple(range(width))
        if bits[0] < 0 or bits[-1] >= width:
            raise ValueError(f"bits {bits} outside [0, {width - 1}] for {self.dtype}")
        object.__setattr__(self, "bits", bits)
        span = {"mbu2": 2, "mbu3": 3}.get(self.kind, 1)
        chosen = set(bits)
        masks = tuple(
            ((1 << span) - 1) << b for b in bits if all(b + i in chosen for i in range(span))
        )
        if not masks:
            raise ValueError(
                f"{self.kind} needs {span} adjacent bits inside the selection {_ranges(bits)}"
            )
        object.__setattr__(self, "masks", masks)

    @property
    def width(self) -> int:
        """Bits of one stored word: 32 or 16."""
        return bit_width(self.dtype)

    @property
    def multiplicity(self) -> int:
        """Patterns per mask: 2 for stuck-at (0 and 1), else 1."""
        return 2 if self.kind == "stuck-at" else 1

    @property
    def n_patterns(self) -> int:
        """Faults per site."""
        return len(self.masks) * self.multiplicity

    @property
    def name(self) -> str:
        """The model's name as :func:`parse_fault_model` reads it (the format is separate)."""
        if self.bits == tuple(range(self.width)):
            return self.kind
        return f"{self.kind}:{_ranges(self.bits)}"

    @property
    def format(self) -> str:
        """``"fp32"``, ``"fp16"`` or ``"bf16"``."""
        return _DTYPE_NAMES[self.dtype]

    def __str__(self) -> str:
        return f"{self.name} ({self.format})"

    def with_dtype(self, dtype: torch.dtype) -> FaultModel:
        """The same kind and bits in another format (the bits must exist there)."""
        if dtype == self.dtype:
            return self
        if self.bits == tuple(range(self.width)):
            return FaultModel(self.kind, dtype)
        return FaultModel(self.kind, dtype, self.bits)

    def pattern_bits(self, pattern: int) -> tuple[int, ...]:
        """The bit positions pattern ``pattern`` touches (LSB = 0)."""
        mask = self.masks[pattern // self.multiplicity]
        return tuple(b for b in range(self.width) if mask >> b & 1)

    def pattern_value(self, pattern: int) -> int:
        """-1 for an inversion, else the level a stuck-at pattern forces (0 or 1)."""
        return pattern % 2 if self.kind == "stuck-at" else -1

    def _int_masks(self, device: torch.device) -> Tensor:
        int_dtype, width, _ = _layout(self.dtype)
        values = [_signed(m, width) for m in self.masks]
        return torch.tensor(values, dtype=torch.int64, device=device).to(int_dtype)

    def _check(self, x: Tensor) -> Tensor:
        if x.dtype != self.dtype:
            raise TypeError(
                f"the fault model {self} faults {self.dtype} words, got a {x.dtype} tensor"
            )
        return x

    def all_faulty(self, x: Tensor) -> Tensor:
        """Every pattern of every element: ``(*x.shape, n_patterns)``, in ``x``'s dtype."""
        ints = self._check(x).view(_layout(self.dtype)[0]).unsqueeze(-1)
        masks = self._int_masks(x.device)
        if self.kind != "stuck-at":
            return torch.bitwise_xor(ints, masks).view(self.dtype)
        low = torch.bitwise_and(ints, ~masks)
        high = torch.bitwise_or(ints, masks)
        return torch.stack([low, high], dim=-1).flatten(-2).view(self.dtype)

    def faulty(self, x: Tensor, pattern: Tensor) -> Tensor:
        """``x`` with pattern ``pattern[i]`` applied to element ``i`` (broadcast), x's dtype."""
        pattern = torch.as_tensor(pattern, device=x.device)
        if pattern.numel() and (int(pattern.min()) < 0 or int(pattern.max()) >= self.n_patterns):
            raise ValueError(f"patterns outside [0, {self.n_patterns}) of {self}")
        ints = self._check(x).view(_layout(self.dtype)[0])
        masks = self._int_masks(x.device)[pattern // self.multiplicity]
        if self.kind != "stuck-at":
            return torch.bitwise_xor(ints, masks).view(self.dtype)
        high = (pattern % 2).bool()
        out = torch.where(high, torch.bitwise_or(ints, masks), torch.bitwise_and(ints, ~masks))
        return out.view(self.dtype)

    def rows(self, index: Tensor) -> FaultModel:
        """The model for some rows (output channels) of a weight: the same for float words."""
        return self

    def deltas(self, x: Tensor) -> Tensor:
        """float32 ``faulty - x`` of every pattern: ``(*x.shape, n_patterns)``.

        float16 and bfloat16 values are exact in float32, so the difference is the change the
        fault makes, rounded once (an overflow to +-Inf is one, as in the model).
        """
        return self.all_faulty(x).float() - x.float().unsqueeze(-1)


@dataclass(frozen=True)
class QuantizedFlip:
    """PyTorchFI's own neuron bit flip (``single_bit_flip_func``): an 8-bit quantised flip.

    A stored activation ``v`` of a layer whose range is ``M`` (PyTorchFI's ``set_conv_max``) is
    quantised to ``q = trunc(v / M * 2^(n-1))`` (float32 arithmetic, as PyTorchFI computes it on
    the tensor), written as an ``n``-bit two's complement word, one bit flipped (LSB = 0), read
    back as signed and dequantised to ``q' * 2^-(n-1) * M`` (in float64, then the value's
    format). The faulty value includes the quantisation error: a flip of a bit that is
    irrelevant at 8 bits still moves ``v`` to its quantised value. It is the fault model of
    stored values (a layer's output), the only target PyTorchFI applies it to.

    One deliberate difference: PyTorchFI raises ``AssertionError`` when ``q`` does not fit in
    ``n`` bits (``v >= M``, or ``|v| > M``); here ``q`` saturates to ``[-2^(n-1), 2^(n-1) - 1]``.

    Attributes:
        dtype: the float format of the values.
        bits: the word width ``n`` (PyTorchFI's ``bits=``, default 8).
        ranges: ``M`` per layer, index = PyTorchFI layer number (what ``set_conv_max`` takes);
            ``None``: each layer's largest ``|output|`` on the analysis images.
        max_value: the range of the layer this instance is bound to (:meth:`bound`).

    Example:
        >>> m = QuantizedFlip().bound(4.0)
        >>> m.faulty(torch.tensor([1.0]), torch.tensor([6])), m.faulty(torch.tensor([1.0]), torch.tensor([7]))
        (tensor([3.]), tensor([-3.]))
    """

    dtype: torch.dtype = torch.float32
    bits: int = 8
    ranges: tuple[float, ...] | None = None
    max_value: float | None = None
    kind: str = field(default="pytorchfi-int8", init=False)

    def __post_init__(self) -> None:
        _layout(self.dtype)
        if (
            isinstance(self.bits, bool)
            or not isinstance(self.bits, int)
            or not 2 <= self.bits <= 16
        ):
            raise ValueError(f"expected bits in [2, 16], got {self.bits!r}")
        if self.ranges is not None:
            object.__setattr__(self, "ranges", tuple(float(r) for r in self.ranges))
        for m in (*(self.ranges or ()), *(() if self.max_value is None else (self.max_value,))):
            if not (m > 0.0 and m < float("inf")):
                raise ValueError(f"expected positive finite ranges (set_conv_max), got {m!r}")

    @property
    def masks(self) -> tuple[int, ...]:
        return tuple(1 << b for b in range(self.bits))

    @property
    def multiplicity(self) -> int:
        return 1

    @property
    def n_patterns(self) -> int:
        return self.bits

    @property
    def width(self) -> int:
        return self.bits

    @property
    def name(self) -> str:
        return "pytorchfi-int8" if self.bits == 8 else f"pytorchfi-int8:bits={self.bits}"

    @property
    def format(self) -> str:
        return _DTYPE_NAMES[self.dtype]

    def __str__(self) -> str:
        return f"{self.name} ({self.format} values)"

    def with_dtype(self, dtype: torch.dtype) -> QuantizedFlip:
        return QuantizedFlip(dtype, self.bits, self.ranges, self.max_value)

    def bound(self, profiled: float, layer_num: int | None = None) -> QuantizedFlip:
        """This model for one layer: its range from :attr:`ranges` (by PyTorchFI layer
        number) when given, else ``profiled`` (the layer's largest ``|output|``)."""
        if self.ranges is not None and layer_num is not None:
            if not 0 <= layer_num < len(self.ranges):
                raise ValueError(
                    f"ranges has {len(self.ranges)} entries, no range for layer {layer_num}: "
                    "give one per PyTorchFI layer (as set_conv_max takes)"
                )
            profiled = self.ranges[layer_num]
        if not (profiled > 0.0 and profiled < float("inf")):
            profiled = 1.0  # an all-zero layer: any range quantises it to 0
        return QuantizedFlip(self.dtype, self.bits, self.ranges, float(profiled))

    def pattern_bits(self, pattern: int) -> tuple[int, ...]:
        return (int(pattern),)

    def pattern_value(self, pattern: int) -> int:
        return -1

    def _words(self, x: Tensor) -> Tensor:
        if self.max_value is None:
            raise ValueError("the pytorchfi-int8 model needs the layer's range: call bound()")
        if x.dtype != self.dtype:
            raise TypeError(f"the fault model {self} faults {self.dtype} values, got {x.dtype}")
        half = 2 ** (self.bits - 1)
        q = torch.trunc(x.float() / self.max_value * float(half))
        q = q.nan_to_num(0.0).clamp(-half, half - 1).to(torch.int64)
        return torch.remainder(q, 2**self.bits)

    def _values(self, words: Tensor) -> Tensor:
        assert self.max_value is not None
        half = 2 ** (self.bits - 1)
        signed = torch.where(words >= half, words - 2**self.bits, words)
        return (signed.double() * (self.max_value / half)).to(self.dtype)

    def all_faulty(self, x: Tensor) -> Tensor:
        masks = torch.tensor(self.masks, dtype=torch.int64, device=x.device)
        return self._values(torch.bitwise_xor(self._words(x).unsqueeze(-1), masks))

    def faulty(self, x: Tensor, pattern: Tensor) -> Tensor:
        pattern = torch.as_tensor(pattern, device=x.device).to(torch.int64)
        if pattern.numel() and (int(pattern.min()) < 0 or int(pattern.max()) >= self.bits):
            raise ValueError(f"patterns outside [0, {self.bits}) of {self}")
        return self._values(torch.bitwise_xor(self._words(x), torch.bitwise_left_shift(1, pattern)))

    def rows(self, index: Tensor) -> QuantizedFlip:
        """The model for some rows of a weight: the same (it faults stored values only)."""
        return self

    def deltas(self, x: Tensor) -> Tensor:
        return self.all_faulty(x).float() - x.float().unsqueeze(-1)


@dataclass(frozen=True, eq=False)
class IntegerFlip:
    """A single bit flip in a stored 8-bit word of an int8 network (``torch.ao`` quantized).

    A value ``v`` of an int8 layer is stored as the integer ``q`` of ``v = (q - z) * s``: an
    int8 weight (``torch.qint8``, two's complement, a scale ``s`` per output channel or per
    tensor) or a ``quint8`` activation (unsigned, one scale and zero point ``z`` per tensor).
    Pattern ``b`` inverts bit ``b`` of that 8-bit word (LSB = 0; bit 7 is a weight's sign bit)
    and the faulty value is ``(q' - z) * s`` (float32, as ``dequantize`` computes it). Values
    are read as the engine keeps them: dequantized floats on the layer's grid, mapped back to
    ``q = round(v / s) + z``.

    The model is bound to a layer's words by the engine's quantized twin
    (:func:`~pytorchfi_deepvigor.quantized.bind_words`); :meth:`rows` picks the scales of
    some output channels of a weight (the rows of a ``(T, ...)`` tensor of them).

    Attributes:
        dtype: the float format of the dequantized values (float32).
        qdtype: ``torch.qint8`` or ``torch.quint8`` (``None``: not bound yet).
        scale, zero_point: per row (1-D) or one (0-D); the arithmetic of ``(q - z) * s`` is
            the scale's (``torch`` dequantizes per-channel tensors with float64 scales in
            float64, per-tensor ones in float32).

    Example:
        >>> m = IntegerFlip().bound(torch.qint8, torch.tensor(0.5), torch.tensor(0))
        >>> m.faulty(torch.tensor([1.5]), torch.tensor([7]))  # q = 3 = 0b00000011 -> -125
        tensor([-62.5000])
    """

    dtype: torch.dtype = torch.float32
    qdtype: torch.dtype | None = None
    scale: Tensor | None = None
    zero_point: Tensor | None = None
    kind: str = field(default="int8", init=False)

    def __post_init__(self) -> None:
        _layout(self.dtype)
        if self.qdtype not in (None, torch.qint8, torch.quint8):
            raise ValueError(f"expected qdtype torch.qint8 or torch.quint8, got {self.qdtype}")

    @property
    def masks(self) -> tuple[int, ...]:
        return tuple(1 << b for b in range(8))

    @property
    def multiplicity(self) -> int:
        return 1

    @property
    def n_patterns(self) -> int:
        return 8

    @property
    def width(self) -> int:
        return 8

    @property
    def name(self) -> str:
        return "int8"

    @property
    def format(self) -> str:
        return "int8"

    def __str__(self) -> str:
        return "int8 (8-bit stored words)"

    def with_dtype(self, dtype: torch.dtype) -> IntegerFlip:
        return IntegerFlip(dtype, self.qdtype, self.scale, self.zero_point)

    def bound(self, qdtype: torch.dtype, scale: Tensor, zero_point: Tensor) -> IntegerFlip:
        """This model for the words of one tensor: its integer type, scale(s), zero point(s)."""
        scale = torch.as_tensor(scale)  # float64 per channel: torch dequantizes those in float64
        scale = scale if scale.dtype == torch.float64 else scale.float()
        zero_point = torch.as_tensor(zero_point, dtype=torch.int64)
        if not bool(torch.isfinite(scale).all()) or not bool((scale > 0).all()):
            raise ValueError("expected positive finite scales")
        return IntegerFlip(self.dtype, qdtype, scale, zero_point)

    def rows(self, index: Tensor) -> IntegerFlip:
        """The model for rows ``index`` of a weight (their output channels' scales)."""
        if self.scale is None or self.scale.dim() == 0:
            return self
        assert self.zero_point is not None
        index = torch.as_tensor(index).long().cpu()
        return IntegerFlip(self.dtype, self.qdtype, self.scale[index], self.zero_point[index])

    def pattern_bits(self, pattern: int) -> tuple[int, ...]:
        return (int(pattern),)

    def pattern_value(self, pattern: int) -> int:
        return -1

    def _params(self, x: Tensor) -> tuple[Tensor, Tensor, int, int]:
        if self.qdtype is None or self.scale is None or self.zero_point is None:
            raise ValueError("the int8 model needs the layer's words: bind it (bound())")
        if x.dtype != self.dtype:
            raise TypeError(f"the fault model {self} reads {self.dtype} values, got {x.dtype}")
        s, z = self.scale.to(x.device), self.zero_point.to(x.device)
        if s.dim() == 1:
            if x.dim() == 0 or x.shape[0] != s.shape[0]:
                raise ValueError(
                    f"{s.shape[0]} rows of scales for values of shape {tuple(x.shape)}: "
                    "pick the rows of the values with rows()"
                )
            s = s.reshape(-1, *([1] * (x.dim() - 1)))
            z = z.reshape(-1, *([1] * (x.dim() - 1)))
        low, high = (-128, 127) if self.qdtype == torch.qint8 else (0, 255)
        return s, z, low, high

    def _words(self, x: Tensor, s: Tensor, z: Tensor, low: int, high: int) -> Tensor:
        q = torch.round(x.double() / s.double()).nan_to_num(0.0).long() + z
        return torch.remainder(q.clamp(low, high), 256)

    def _values(self, words: Tensor, s: Tensor, z: Tensor) -> Tensor:
        signed = words - 256 * (words >= 128).long() if self.qdtype == torch.qint8 else words
        return ((signed - z).to(s.dtype) * s).to(self.dtype)

    def all_faulty(self, x: Tensor) -> Tensor:
        s, z, low, high = self._params(x)
        masks = torch.tensor(self.masks, dtype=torch.int64, device=x.device)
        words = torch.bitwise_xor(self._words(x, s, z, low, high).unsqueeze(-1), masks)
        return self._values(words, s.unsqueeze(-1), z.unsqueeze(-1))

    def faulty(self, x: Tensor, pattern: Tensor) -> Tensor:
        s, z, low, high = self._params(x)
        pattern = torch.as_tensor(pattern, device=x.device).to(torch.int64)
        if pattern.numel() and (int(pattern.min()) < 0 or int(pattern.max()) >= 8):
            raise ValueError(f"patterns outside [0, 8) of {self}")
        words = torch.bitwise_xor(
            self._words(x, s, z, low, high), torch.bitwise_left_shift(1, pattern)
        )
        return self._values(words, s, z)

    def deltas(self, x: Tensor) -> Tensor:
        return self.all_faulty(x).float() - x.float().unsqueeze(-1)


AnyFaultModel = FaultModel | QuantizedFlip | IntegerFlip
"""A float word fault model, PyTorchFI's quantised activation flip, or an int8 word flip."""


def parse_fault_model(
    spec: str | FaultModel | QuantizedFlip | IntegerFlip = DEFAULT_FAULT_MODEL,
    dtype: torch.dtype = torch.float32,
) -> AnyFaultModel:
    """A :class:`FaultModel` from its name, in the float format ``dtype``.

    Args:
        spec: ``"<kind>"`` or ``"<kind>:<bits>"``, kind in :data:`FAULT_KINDS`, bits a comma
            list of ``sign``, ``exponent``, ``mantissa``, bit numbers and ranges ``a-b``
            (LSB = 0, in the format's own numbering: float16's exponent is 10-14). A
            :class:`FaultModel` is returned in ``dtype``. ``"pytorchfi-int8"``: PyTorchFI's
            quantised activation flip; ``"int8"``: a flip of an int8 network's stored 8-bit
            words (:class:`IntegerFlip`, bound per layer by the engine's quantized twins).
        dtype: float32, float16 or bfloat16: the format of the words the faults hit.

    Raises:
        ValueError: for an unknown kind or a bad bit selection, naming what is accepted.
    """
    _layout(dtype)
    if isinstance(spec, FaultModel | QuantizedFlip | IntegerFlip):
        return spec.with_dtype(dtype)
    if not isinstance(spec, str):
        raise TypeError(f"expected a fault model name (str), got {type(spec).__name__}")
    kind, sep, rest = spec.strip().partition(":")
    if kind == "pytorchfi-int8":
        bits = 8
        if sep:
            key, _, value = rest.partition("=")
            if key.strip() != "bits" or not value.strip().isdigit():
                raise ValueError(f"bad option {rest!r} of pytorchfi-int8: expected bits=N")
            bits = int(value)
        return QuantizedFlip(dtype, bits)
    if kind == "int8" and not sep:
        return IntegerFlip(dtype)
    if kind not in FAULT_KINDS:
        raise ValueError(
            f"unknown fault model {spec!r}: expected one of {', '.join(FAULT_KINDS)}, "
            "optionally with bits after a colon (e.g. 'flip:exponent', 'mbu2:23-30'), or "
            "pytorchfi-int8 (PyTorchFI's quantised activation flip), or int8 (an int8 network's "
            "stored words)"
        )
    if not sep:
        return FaultModel(kind, dtype)
    return FaultModel(kind, dtype, _parse_bits(rest, dtype))
