"""Option values as users write them: booleans and sizes, parsed the same way everywhere
(driver options, thin pool sizes, command-line flags). Each parser raises InvalidArgument that
names the option and what it expected.

On a container's boot path: it imports only re and storagekit.errors.
"""

from __future__ import annotations

import re

from .errors import InvalidArgument

TYPE_CHECKING = False  # the boot path's rule: see storagekit/bootpath.py
if TYPE_CHECKING:
    from collections.abc import Mapping

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?", re.IGNORECASE)


def parse_bool(key: str, text: str) -> bool:
    """"true"/"yes"/"on"/"1" or "false"/"no"/"off"/"0", in any case."""
    low = text.strip().lower()
    if low in TRUE:
        return True
    if low in FALSE:
        return False
    raise InvalidArgument(f"{key} must be true or false, not {text!r}")


def bool_option(options: Mapping[str, str], key: str, default: bool) -> bool:
    """The boolean option `key` of `options`, or `default` when it is not given."""
    value = options.get(key)
    return default if value is None else parse_bool(key, value)


def parse_size(text: str | int, what: str = "size") -> int:
    """"64K" -> 65536, "1.5G" -> 1610612736, "4096" -> 4096, "10GB" and "10GiB" -> 10 GiB
    (suffixes are powers of 1024). InvalidArgument otherwise."""
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
