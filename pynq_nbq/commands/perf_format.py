"""Small number formatters shared by ``nbq perf``'s reports."""

from __future__ import annotations

PES = ("vpe", "svpe")  #: the two PE kinds a report sets side by side, baseline first


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or None when either is missing or zero."""
    return a / b if a and b else None


def num(value: float | None, fmt: str) -> str:
    """``value`` formatted with ``fmt``; a missing value as ``-`` in the same width."""
    if value is None:
        width = "".join(ch for ch in fmt.split(".")[0] if ch.isdigit())
        return "-".rjust(int(width or 0))
    return format(value, fmt)
