"""Register decoding against Python's `struct`, for every data type and byte/word order."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.sources.modbus_codec import (
    ORDERS,
    STRUCT_CODES,
    decode_numbers,
    decode_string,
    encode_number,
    encode_string,
    to_raw,
)

INT_RANGES = {"int16": (-(2**15), 2**15 - 1), "uint16": (0, 2**16 - 1),
              "int32": (-(2**31), 2**31 - 1), "uint32": (0, 2**32 - 1),
              "int64": (-(2**53), 2**53)}  # float64 holds integers exactly up to 2**53


def reference_words(value: float | int, dtype: str, order: str) -> list[int]:
    """Independent encoder: struct big-endian bytes, then the order's permutation by name."""
    data = struct.pack(">" + STRUCT_CODES[dtype], value)
    if len(data) == 2:
        letters = "AB" if order in ("ABCD", "CDAB") else "BA"
    else:
        # extend the 4-letter pattern to n bytes: word order from CD|AB, byte order from B|A
        pairs = [data[i: i + 2] for i in range(0, len(data), 2)]
        if order in ("CDAB", "DCBA"):
            pairs = pairs[::-1]
        if order in ("BADC", "DCBA"):
            pairs = [p[::-1] for p in pairs]
        return [struct.unpack(">H", p)[0] for p in pairs]
    if letters == "BA":
        data = data[::-1]
    return [struct.unpack(">H", data)[0]]


def test_the_four_orders_of_one_float32() -> None:
    # 0x41 0x20 0x00 0x00 = 10.0; as the four common device layouts
    assert reference_words(10.0, "float32", "ABCD") == [0x4120, 0x0000]
    assert reference_words(10.0, "float32", "CDAB") == [0x0000, 0x4120]
    assert reference_words(10.0, "float32", "BADC") == [0x2041, 0x0000]
    assert reference_words(10.0, "float32", "DCBA") == [0x0000, 0x2041]
    for order in ORDERS:
        w = np.array([reference_words(10.0, "float32", order)])
        assert decode_numbers(w, "float32", order)[0] == 10.0


@st.composite
def typed_values(draw: st.DrawFn) -> tuple[str, str, float | int]:
    dtype = draw(st.sampled_from(sorted(STRUCT_CODES)))
    order = draw(st.sampled_from(ORDERS))
    if dtype in INT_RANGES:
        lo, hi = INT_RANGES[dtype]
        v: float | int = draw(st.integers(lo, hi))
    elif dtype == "float32":
        v = draw(st.floats(width=32, allow_nan=False))
    else:
        v = draw(st.floats(allow_nan=False))
    return dtype, order, v


@given(typed_values())
@settings(max_examples=400, deadline=None)
def test_round_trip_every_type_and_order_against_struct(case: tuple[str, str, float]) -> None:
    dtype, order, v = case
    words = encode_number(v, dtype, order)
    assert words == reference_words(v, dtype, order)
    assert all(0 <= w <= 0xFFFF for w in words)
    got = decode_numbers(np.array([words]), dtype, order)[0]
    assert got == float(v) or (math.isinf(v) and got == v)


@settings(deadline=None)
@given(st.lists(typed_values(), min_size=1, max_size=20))
def test_vectorised_decoding_equals_one_by_one(cases: list[tuple[str, str, float]]) -> None:
    dtype, order, _ = cases[0]
    same = [c[2] for c in cases if c[0] == dtype and c[1] == order]
    words = np.array([encode_number(v, dtype, order) for v in same])
    np.testing.assert_array_equal(decode_numbers(words, dtype, order),
                                  np.array([float(v) for v in same]))


@settings(deadline=None)
@given(st.binary(min_size=0, max_size=64), st.sampled_from(ORDERS),
       st.sampled_from(sorted(STRUCT_CODES)))
def test_any_register_contents_decode_without_raising(raw: bytes, order: str, dtype: str) -> None:
    n = struct.calcsize(STRUCT_CODES[dtype]) // 2
    k = len(raw) // (2 * n)
    words = np.frombuffer(raw[: k * 2 * n], dtype=">u2").reshape(k, n)
    out = decode_numbers(words, dtype, order)
    assert out.shape == (k,)
    decode_string(np.frombuffer(raw[: len(raw) // 2 * 2], dtype=">u2"), order)


@settings(deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=16),
       st.sampled_from(ORDERS))
def test_strings_round_trip(text: str, order: str) -> None:
    assert decode_string(np.array(encode_string(text, 8, order)), order) == text


@pytest.mark.parametrize(("dtype", "value", "scale", "offset", "raw"), [
    ("int16", 1.23, 0.01, 0.0, 123),
    ("int16", -400.0, 0.01, 0.0, -32768),  # clipped
    ("uint16", 55.5, 0.1, -20.0, 755),
    ("float32", 2.5, 0.5, 1.0, 3.0),
])
def test_engineering_value_to_raw(
    dtype: str, value: float, scale: float, offset: float, raw: float
) -> None:
    assert to_raw(value, dtype, scale, offset) == raw
