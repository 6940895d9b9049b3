"""Vectorised conversions of Arrow arrays for ``batchd.stream.arrow_types``: casts that must
lose nothing, range checks, UUID text to bytes — numpy and pyarrow compute, with Python only for
the rows they reject (each with why)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# A converted column, and the rows it could not take: (chunk index, why).
Converted = tuple[pa.Array, list[tuple[int, str]]]
Convert = Callable[[pa.Array], Converted]

_HEX = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i
_UUID_HEX = np.array([i for i in range(36) if i not in (8, 13, 18, 23)])


def same(array: pa.Array) -> Converted:
    return array, []


def cast(out: pa.DataType) -> Convert:
    def convert(array: pa.Array) -> Converted:
        return array.cast(out), []
    return convert


def cast_only(out: pa.DataType) -> Callable[[pa.Array], pa.Array]:
    def convert(array: pa.Array) -> pa.Array:
        return array.cast(out)
    return convert


def _numbers(array: pa.Array) -> np.ndarray[Any, Any]:
    """The array's values as numpy (NULLs as 0), without going through floats."""
    storage = array
    if not (pa.types.is_integer(array.type) or pa.types.is_floating(array.type)):
        storage = array.view(pa.int64() if array.type.bit_width == 64 else pa.int32())
    return storage.fill_null(0).to_numpy(zero_copy_only=False)  # type: ignore[no-any-return]


def _drop(array: pa.Array, mask: np.ndarray[Any, Any], why: str, out: pa.DataType) -> Converted:
    """NULL at the rejected rows (their rows are dropped later), the rest cast exactly."""
    keep = pa.array(~mask)
    cleaned = pc.if_else(keep, array, pa.scalar(None, array.type)).cast(out)
    return cleaned, [(int(i), f"{_shown(array[int(i)])} is {why}") for i in np.flatnonzero(mask)]


def _shown(value: pa.Scalar) -> str:
    try:
        return repr(value.as_py())
    except (OverflowError, ValueError):  # a timestamp beyond Python's datetime: its integer
        return f"{value.type} {value.value}"


def in_range(out: pa.DataType, low: int, high: int, why: str) -> Convert:
    def convert(array: pa.Array) -> Converted:
        numbers = _numbers(array)
        if numbers.dtype.kind == "u":
            mask = numbers > np.uint64(high)
        else:
            mask = (numbers < np.int64(low)) | (numbers > np.int64(high))
        if not mask.any():
            return array.cast(out), []
        return _drop(array, mask, why, out)
    return convert


def whole(out: pa.DataType, factor: int, why: str) -> Convert:
    """A cast to a coarser unit that must lose nothing (ns -> us, date64 -> date32)."""
    def convert(array: pa.Array) -> Converted:
        mask = (_numbers(array) % factor) != 0
        if not mask.any():
            return array.cast(out), []
        return _drop(array, mask, f"{why} (not exact in PostgreSQL)", out)
    return convert


def uuid_from_text(array: pa.Array) -> Converted:
    """Strings "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (any case) to 16 bytes, in numpy."""
    if not pa.types.is_string(array.type):
        array = array.cast(pa.string())
    n = len(array)
    if n == 0:
        return pa.array([], pa.binary(16)), []
    lengths = pc.binary_length(array).fill_null(36).to_numpy(zero_copy_only=False)
    mask = lengths != 36
    valid = array.is_valid().to_numpy(zero_copy_only=False)
    text = pc.if_else(pa.array(mask), pa.scalar("0" * 36), array).fill_null("0" * 36)
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int32)[text.offset:text.offset + n + 1]
    data = np.frombuffer(text.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
    chars = data.reshape(n, 36)
    hexes = _HEX[chars[:, _UUID_HEX]]
    mask |= (hexes == 255).any(axis=1)
    mask |= (chars[:, [8, 13, 18, 23]] != ord("-")).any(axis=1)
    mask &= valid
    packed = (hexes[:, 0::2] << 4) | (hexes[:, 1::2] & 15)
    out = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(16), n, [pa.array(valid & ~mask).buffers()[1], pa.py_buffer(packed.tobytes())])
    bad = [(int(i), f"{_shown(array[int(i)])} is not a UUID (8-4-4-4-12 hex digits)")
           for i in np.flatnonzero(mask)]
    return out, bad
