"""Sizes as users write them: bytes, or a number with a K/M/G/T suffix (powers of 1024)."""

from __future__ import annotations

import re

from ..errors import InvalidArgument

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?", re.IGNORECASE)


def parse_size(text: str | int, what: str = "size") -> int:
    """"64K" -> 65536, "1.5G" -> 1610612736, "4096" -> 4096. InvalidArgument otherwise."""
    if isinstance(text, int):
        if text < 0:
            raise InvalidArgument(f"{what} must not be negative: {text}")
        return text
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise InvalidArgument(
            f"{what} {text!r} is not a size (a number of bytes, or with K, M, G or T)")
    value = float(m.group(1)) * _UNITS[m.group(2).upper()]
    if value != int(value):
        raise InvalidArgument(f"{what} {text!r} is not a whole number of bytes")
    return int(value)


def format_size(n: int) -> str:
    """The shortest exact spelling: 65536 -> "64K", 1000 -> "1000"."""
    for unit in ("T", "G", "M", "K"):
        if n and n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}"
    return str(n)
