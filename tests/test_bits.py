"""Bit-level fault models against struct/numpy reference bit patterns."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pytorchfi_deepvigor.bits import (
    bit_field,
    bit_width,
    flip_all_bits,
    flip_bit,
    lsb_first,
    msb_first,
    stuck_at,
)

Tensor = torch.Tensor

SPECIALS = [0.0, -0.0, 1e-45, -1e-45, 1e-40, 1.17549435e-38, math.inf, -math.inf, math.nan, 1.0]


def f32_bits(value: float) -> int:
    return struct.unpack("<I", struct.pack("<f", value))[0]


def tensor_bits32(t: Tensor) -> list[int]:
    return [v & 0xFFFFFFFF for v in t.view(torch.int32).reshape(-1).tolist()]


def tensor_bits16(t: Tensor) -> list[int]:
    return [v & 0xFFFF for v in t.view(torch.int16).reshape(-1).tolist()]


float32s = st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True)


@settings(max_examples=200, deadline=None)
@given(value=float32s, bit=st.integers(0, 31))
def test_flip_bit_matches_struct(value: float, bit: int) -> None:
    x = torch.tensor([value], dtype=torch.float32)
    original = tensor_bits32(x)[0]
    if not math.isnan(value):  # NaN payloads are checked on raw patterns below
        assert original == f32_bits(value)
    assert tensor_bits32(flip_bit(x, bit)) == [original ^ (1 << bit)]


def test_flip_all_bits_on_random_raw_patterns_incl_nan_payloads() -> None:
    gen = torch.Generator().manual_seed(0)
    raw = torch.randint(-(2**31), 2**31, (50_000,), dtype=torch.int64, generator=gen)
    specials = torch.tensor([0x7F800001, 0x7FC00000, 0xFFFFFFFF, 0x00000001, 0x80000000])
    raw = torch.cat([raw, specials.where(specials < 2**31, specials - 2**32)]).to(torch.int32)
    out = flip_all_bits(raw.view(torch.float32)).view(torch.int32)
    masks = torch.tensor([1 << b if b < 31 else -(2**31) for b in range(32)], dtype=torch.int32)
    assert torch.equal(out, raw.unsqueeze(-1) ^ masks)


@settings(max_examples=100, deadline=None)
@given(values=st.lists(float32s, min_size=1, max_size=8))
def test_flip_all_bits_matches_struct(values: list[float]) -> None:
    x = torch.tensor(values, dtype=torch.float32)
    out = flip_all_bits(x)
    assert out.shape == (len(values), 32)
    expected = [v ^ (1 << b) for v in tensor_bits32(x) for b in range(32)]
    finite = [v for v in values if not math.isnan(v)]
    assert tensor_bits32(torch.tensor(finite, dtype=torch.float32)) == [f32_bits(v) for v in finite]
    assert tensor_bits32(out) == expected


@pytest.mark.parametrize("bit", range(32))
def test_flip_bit_specials_every_bit(bit: int) -> None:
    out = flip_bit(torch.tensor(SPECIALS, dtype=torch.float32), bit)
    assert tensor_bits32(out) == [f32_bits(v) ^ (1 << bit) for v in SPECIALS]


@pytest.mark.parametrize(
    ("value", "bit", "expected"),
    [(1.0, 30, math.inf), (0.0, 30, 2.0), (-2.0, 31, 2.0), (1.0, 23, 0.5)],
    ids=["1.0-bit30-inf", "0.0-bit30-2.0", "sign", "exp-lsb"],
)
def test_spec_examples(value: float, bit: int, expected: float) -> None:
    assert flip_bit(torch.tensor(value), bit).item() == expected


def test_spec_examples_nan_and_negative_zero() -> None:
    assert math.isnan(flip_bit(torch.tensor(1.5), 30).item())
    neg_zero = flip_bit(torch.tensor(0.0), 31)
    assert neg_zero.item() == 0.0 and math.copysign(1.0, neg_zero.item()) == -1.0


def test_flip_bit_broadcasts_tensor_bits() -> None:
    x = torch.tensor([[1.0], [2.0]])
    bits = torch.tensor([0, 31, 30])
    out = flip_bit(x, bits)
    assert out.shape == (2, 3)
    assert tensor_bits32(out) == [f32_bits(v) ^ (1 << b) for v in (1.0, 2.0) for b in (0, 31, 30)]


def test_flip_bit_twice_is_identity_and_input_untouched() -> None:
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    before = x.clone()
    bits = torch.randint(0, 32, (4, 5), generator=torch.Generator().manual_seed(1))
    assert torch.equal(flip_bit(flip_bit(x, bits), bits).view(torch.int32), x.view(torch.int32))
    assert torch.equal(x, before)


def test_flip_bit_non_contiguous() -> None:
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()
    assert torch.equal(flip_bit(x, 31), -x)


@settings(max_examples=100, deadline=None)
@given(value=st.floats(width=16), bit=st.integers(0, 15))
def test_flip_bit_float16_matches_struct(value: float, bit: int) -> None:
    x = torch.tensor([value], dtype=torch.float16)
    original = tensor_bits16(x)[0]
    if not math.isnan(value):  # NaN payloads may differ between converters
        assert original == struct.unpack("<H", struct.pack("<e", value))[0]
    assert tensor_bits16(flip_bit(x, bit)) == [original ^ (1 << bit)]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_flip_all_bits_exhaustive_16_bit_patterns(dtype: torch.dtype) -> None:
    patterns = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    out = flip_all_bits(patterns.view(dtype)).view(torch.int16).to(torch.int32) & 0xFFFF
    masks = 1 << torch.arange(16, dtype=torch.int32)
    expected = (patterns.to(torch.int32).unsqueeze(-1) & 0xFFFF) ^ masks
    assert torch.equal(out, expected)
    stuck = stuck_at(patterns.view(dtype), 15, 0).view(torch.int16).to(torch.int32) & 0xFFFF
    assert torch.equal(stuck, (patterns.to(torch.int32) & 0xFFFF) & 0x7FFF)


def test_flip_all_bits_float16_matches_numpy() -> None:
    values = np.array([0.0, -0.0, 1.0, 6e-8, 65504.0, np.inf, np.nan], dtype=np.float16)
    out = flip_all_bits(torch.from_numpy(values))
    expected = [int(u) ^ (1 << b) for u in values.view(np.uint16) for b in range(16)]
    assert out.shape == (7, 16) and tensor_bits16(out) == expected


@settings(max_examples=100, deadline=None)
@given(value=float32s, bit=st.integers(0, 15))
def test_flip_bit_bfloat16_matches_top_half_of_float32(value: float, bit: int) -> None:
    x = torch.tensor([value], dtype=torch.float32).to(torch.bfloat16)
    upper = f32_bits(x.float().item()) >> 16 if not math.isnan(value) else None
    got = tensor_bits16(flip_bit(x, bit))[0]
    original = tensor_bits16(x)[0]
    assert got == original ^ (1 << bit)
    if upper is not None:
        assert original == upper


def test_bfloat16_exponent_msb_of_one_is_inf_and_sign_bit() -> None:
    x = torch.tensor([1.0], dtype=torch.bfloat16)
    assert flip_bit(x, 14).item() == math.inf
    assert flip_bit(x, 15).item() == -1.0


@pytest.mark.parametrize("dtype", [torch.float64, torch.int32, torch.uint8], ids=str)
def test_unsupported_dtype_raises(dtype: torch.dtype) -> None:
    with pytest.raises(TypeError, match=r"unsupported dtype .*supported: torch.float32"):
        flip_bit(torch.zeros(2, dtype=dtype), 0)
    with pytest.raises(TypeError, match="unsupported dtype"):
        flip_all_bits(torch.zeros(2, dtype=dtype))
    with pytest.raises(TypeError, match="unsupported dtype"):
        bit_width(dtype)


@pytest.mark.parametrize(
    ("bit", "error", "match"),
    [
        (32, ValueError, r"expected bit in \[0, 31\]"),
        (-1, ValueError, r"expected bit in \[0, 31\]"),
        (1.0, TypeError, "expected bit as int"),
        (True, TypeError, "expected bit as int"),
        (torch.tensor([0, 32]), ValueError, r"bit indices in \[0, 31\]"),
        (torch.tensor([0.0]), TypeError, "integer bit tensor"),
    ],
    ids=["too-high", "negative", "float", "bool", "tensor-too-high", "float-tensor"],
)
def test_bad_bit_raises(bit: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        flip_bit(torch.zeros(2), bit)  # type: ignore[arg-type]


def test_float16_bit_range() -> None:
    with pytest.raises(ValueError, match=r"expected bit in \[0, 15\]"):
        flip_bit(torch.zeros(2, dtype=torch.float16), 16)


@settings(max_examples=100, deadline=None)
@given(value=float32s, bit=st.integers(0, 31), stuck=st.sampled_from([0, 1]))
def test_stuck_at_matches_struct(value: float, bit: int, stuck: int) -> None:
    out = stuck_at(torch.tensor([value], dtype=torch.float32), bit, stuck)
    pattern = f32_bits(value)
    expected = pattern | (1 << bit) if stuck else pattern & ~(1 << bit) & 0xFFFFFFFF
    assert tensor_bits32(out) == [expected]


def test_stuck_at_bad_value_raises() -> None:
    with pytest.raises(ValueError, match="expected stuck-at value 0 or 1, got 2"):
        stuck_at(torch.zeros(1), 3, 2)


def test_bit_width() -> None:
    assert bit_width(torch.float32) == 32
    assert bit_width(torch.float16) == bit_width(torch.bfloat16) == 16


def test_msb_lsb_conversion() -> None:
    assert msb_first(31) == 0 and msb_first(0) == 31 and lsb_first(0) == 31
    assert msb_first(15, width=16) == 0
    bits = torch.arange(32)
    assert torch.equal(lsb_first(msb_first(bits)), bits)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected width 16 or 32, got 8"):
        msb_first(0, width=8)


@pytest.mark.parametrize(
    ("bit", "dtype", "field"),
    [
        (31, torch.float32, "sign"),
        (30, torch.float32, "exponent"),
        (23, torch.float32, "exponent"),
        (22, torch.float32, "mantissa"),
        (0, torch.float32, "mantissa"),
        (15, torch.float16, "sign"),
        (10, torch.float16, "exponent"),
        (9, torch.float16, "mantissa"),
        (7, torch.bfloat16, "exponent"),
        (6, torch.bfloat16, "mantissa"),
    ],
)
def test_bit_field(bit: int, dtype: torch.dtype, field: str) -> None:
    assert bit_field(bit, dtype) == field
