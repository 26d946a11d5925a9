"""The C++ side of the contract: ``hls/nbq_params.h`` and Vitis's generated register header.

``python3 -m pynq_nbq.kernel check-header xnbq_conv_hw.h`` verifies a Vitis build.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from .protocol import HLS_DIR, PORT_NAMES, READ_REGISTERS, REGISTERS, WRITE_REGISTERS

_DEFINE = re.compile(r"^\s*#define\s+(NBQ_\w+)\s+(.+?)\s*(//.*)?$")


def parse_params_header(path: str | Path | None = None) -> dict[str, int]:
    """The integer ``#define NBQ_*`` values of ``hls/nbq_params.h``.

    Only plain integer expressions are evaluated (literals, other NBQ_ names,
    ``<< | ( ) + - *`` and ``/`` as C's integer division of non-negative values); a name
    defined twice (an ``#if`` default) keeps its first value.
    """
    text = Path(path or HLS_DIR / "nbq_params.h").read_text()
    values: dict[str, int] = {}
    for line in text.splitlines():
        m = _DEFINE.match(line)
        if not m or m.group(1) in values:
            continue
        expr = re.sub(r"\b(0x[0-9a-fA-F]+|\d+)[uU]\b", r"\1", m.group(2))
        expr = re.sub(r"\bNBQ_\w+\b", lambda t: str(values.get(t.group(0), t.group(0))), expr)
        if re.fullmatch(r"[0-9a-fA-Fx()<|+*/\s-]+", expr):
            expr = expr.replace("/", "//")
            values[m.group(1)] = int(eval(expr, {"__builtins__": {}}))  # noqa: S307
    return values


def check_vitis_header(text: str) -> list[str]:
    """Compare a Vitis-generated ``x<top>_hw.h`` with :data:`REGISTERS`.

    Run it on ``.../impl/misc/drivers/nbq_conv_v1_0/src/xnbq_conv_hw.h`` after
    ``run_hls.tcl``; returns the mismatches (empty: the map is as documented).
    """
    found = {}
    for m in re.finditer(r"#define\s+XNBQ_CONV_CTRL_ADDR_(\w+)_DATA\s+0x([0-9a-fA-F]+)", text):
        found[m.group(1).lower()] = int(m.group(2), 16)
    problems = []
    for reg in (*WRITE_REGISTERS, *READ_REGISTERS):
        port = PORT_NAMES[reg]
        if port not in found:
            problems.append(f"{reg}: no XNBQ_CONV_CTRL_ADDR_{port.upper()}_DATA in the header")
        elif found[port] != REGISTERS[reg]:
            problems.append(
                f"{reg}: Vitis put it at 0x{found[port]:x}, pynq_nbq expects 0x{REGISTERS[reg]:x}"
            )
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 -m pynq_nbq.kernel check-header xnbq_conv_hw.h``: verify a Vitis build."""
    import argparse

    ap = argparse.ArgumentParser(prog="python3 -m pynq_nbq.kernel")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ch = sub.add_parser("check-header", help="compare Vitis's xnbq_conv_hw.h with REGISTERS")
    ch.add_argument("header")
    args = ap.parse_args(argv)
    problems = check_vitis_header(Path(args.header).read_text())
    for p in problems:
        print(p)
    if not problems:
        print(f"{args.header}: every register where pynq_nbq expects it")
    return 1 if problems else 0
