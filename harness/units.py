"""Parsing of human-sized quantities (memory sizes, rates, durations)."""

from __future__ import annotations

import re

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(i?B?)?\s*$", re.IGNORECASE)
_SCALE = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str | int, what: str = "size") -> int:
    """Return bytes for '256M', '1G', '4096' (binary units); ValueError names `what`."""
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"{what}: {text} is negative")
        return text
    match = _SIZE_RE.match(str(text))
    if not match:
        raise ValueError(f"{what}: {text!r} is not a size such as 256M or 1G")
    return int(match.group(1)) * _SCALE[match.group(2).upper()]

