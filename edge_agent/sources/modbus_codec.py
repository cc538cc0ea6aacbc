"""Modbus register values <-> numbers, for every data type and byte/word order.

Registers arrive as 16-bit words.  A value of n words is put back into big-endian bytes
according to its order, named after the 32-bit case with A the most significant byte:

- ABCD: words in order, high byte first (Modbus' own convention)
- CDAB: words reversed, high byte first ("word swap", common in PLCs and drives)
- BADC: words in order, low byte first ("byte swap")
- DCBA: words reversed, low byte first (little-endian throughout)

pymodbus' converters handle word order only, so the byte swapping is done here with numpy,
vectorised over every value of one type and order in a read.
"""

from __future__ import annotations

import struct

import numpy as np

# big-endian numpy dtype of each numeric type
NP_TYPES: dict[str, np.dtype] = {
    "int16": np.dtype(">i2"), "uint16": np.dtype(">u2"),
    "int32": np.dtype(">i4"), "uint32": np.dtype(">u4"),
    "int64": np.dtype(">i8"), "float32": np.dtype(">f4"), "float64": np.dtype(">f8"),
}
STRUCT_CODES = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "int64": "q",
                "float32": "f", "float64": "d"}
ORDERS = ("ABCD", "DCBA", "BADC", "CDAB")
_WORDS_REVERSED = {"CDAB", "DCBA"}
_LOW_BYTE_FIRST = {"BADC", "DCBA"}


def words_to_bytes(words: np.ndarray, order: str) -> np.ndarray:
    """(k, n) uint16 wire words -> (k, 2n) uint8 in big-endian (ABCD) byte order."""
    w = np.asarray(words, dtype=np.uint16)
    if w.ndim == 1:
        w = w[None, :]
    if order in _WORDS_REVERSED:
        w = w[:, ::-1]
    w = w.astype("<u2" if order in _LOW_BYTE_FIRST else ">u2")
    return np.ascontiguousarray(w).view(np.uint8).reshape(w.shape[0], w.shape[1] * 2)


def bytes_to_words(data: bytes, order: str) -> list[int]:
    """Big-endian bytes of one value -> wire words in `order` (the encoder's side)."""
    if len(data) % 2:
        data += b"\x00"
    fmt = "<" if order in _LOW_BYTE_FIRST else ">"
    words = list(struct.unpack(f"{fmt}{len(data) // 2}H", data))
    return words[::-1] if order in _WORDS_REVERSED else words


def decode_numbers(words: np.ndarray, dtype: str, order: str) -> np.ndarray:
    """(k, n) uint16 wire words of k values of one type -> float64 (k,)."""
    npt = NP_TYPES[dtype]
    raw = words_to_bytes(words, order)
    return raw.view(npt).reshape(raw.shape[0]).astype(np.float64)


def decode_string(words: np.ndarray, order: str) -> str:
    """Identification strings: ASCII, NUL/space padded; unprintable bytes escaped.

    Characters run in address order; only the byte order within a word varies (BADC/DCBA:
    low byte first), since "word order" means nothing for a run of characters.
    """
    raw = words_to_bytes(words, "BADC" if order in _LOW_BYTE_FIRST else "ABCD").tobytes()
    text = raw.rstrip(b"\x00 ").decode("ascii", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def encode_number(value: float, dtype: str, order: str) -> list[int]:
    """One raw value (already scaled to the register's integer domain) -> wire words."""
    code = STRUCT_CODES[dtype]
    v: float | int = value if code in "fd" else int(value)
    return bytes_to_words(struct.pack(">" + code, v), order)


def encode_string(text: str, n_words: int, order: str) -> list[int]:
    data = text.encode("ascii", "replace")[: 2 * n_words].ljust(2 * n_words, b"\x00")
    return bytes_to_words(data, "BADC" if order in _LOW_BYTE_FIRST else "ABCD")


def to_raw(value: float, dtype: str, scale: float, offset: float) -> float | int:
    """Engineering value -> the raw register number that decodes back to it (ints clipped)."""
    raw = (value - offset) / scale
    if dtype.startswith("float"):
        return raw
    info = np.iinfo(NP_TYPES[dtype])
    if not np.isfinite(raw):
        return 0
    return int(min(max(round(raw), int(info.min)), int(info.max)))
