"""Named kernel builds: every board's default vpe and svpe build as ``-D`` defines.

A build of ``hls/nbq_conv.cpp`` is its PE kind, svpe code width, parallelism (Pm input x
Pn output channels), buffer maxima (``NBQ_MAX_W/H/CIN/COUT``) and storage binding (which
buffers sit in UltraRAM: ``NBQ_URAM_WEIGHTS``, ``NBQ_URAM_LINES``; which small RAMs sit in
LUTRAM instead of block RAM: ``NBQ_LUTRAM_HIST``, ``NBQ_LUTRAM_INBUF``,
``NBQ_LUTRAM_PROW``).  :data:`TABLE` is the committed choice of the performance model
(``pynq_nbq.perfmodel.sizing``: sized for the embedded networks, the most arrays within
70 % LUT / 80 % BRAM and URAM; of the bindings that fit as many arrays, the one with the
fewest LUTs);
``tests/test_perf_sizing.py`` fails when the model would pick another.  The HLS flow
(``overlay/Makefile`` -> ``hls/run_hls.tcl``) and the simulated board take
:func:`defines`:

    python3 -m pynq_nbq.kernel.builds defines kv260 svpe   # NBQ_PM=... NBQ_PN=... ...

Regenerate the table with ``python3 -m pynq_nbq.perfmodel.sizing`` (prints it).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from ..datapath import PEKind
from .protocol import KernelInfo

#: UltraRAM switches of hls/nbq_conv.cpp: buffer name -> macro (perfmodel.kernel.URAM_SWITCHES
#: adds the source's variables; tests/test_perf_sizing.py checks they agree).
URAM_MACROS = {"line_buffers": "NBQ_URAM_LINES", "weights": "NBQ_URAM_WEIGHTS"}
#: LUTRAM switches of hls/nbq_conv.cpp: the small RAM (the source's variable) -> macro; 0
#: binds it to block RAM, 1 to LUTRAM (perfmodel.storage.LUTRAM_SWITCHES is this table).
LUTRAM_MACROS = {"hist": "NBQ_LUTRAM_HIST", "inbuf": "NBQ_LUTRAM_INBUF", "prow": "NBQ_LUTRAM_PROW"}
#: PE kinds by their build names: "svpe" is the board's default svpe build.
KINDS = ("vpe", "svpe", "svpe3", "svpe5")


@dataclass(frozen=True)
class KernelBuild:
    """One build of the kernel for one board: ``info``, what its read-only registers
    will report (PE kind, Pm x Pn, buffer maxima in pixels / channels, code width: one
    record with the driver's view of a loaded kernel), and where its buffers sit
    (``uram``: keys of URAM_MACROS bound to UltraRAM; ``lutram``: keys of LUTRAM_MACROS
    bound to LUTRAM)."""

    board: str
    info: KernelInfo
    uram: tuple[str, ...] = ()
    lutram: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """``vpe`` or ``svpe``."""
        return self.info.pe.value

    @property
    def build_name(self) -> str:
        """``vpe``, ``svpe3`` or ``svpe5``."""
        return "vpe" if self.kind == "vpe" else f"svpe{self.info.code_bits}"

    @property
    def name(self) -> str:
        """``<board>-<build>``, e.g. ``kv260-svpe3``."""
        return f"{self.board}-{self.build_name}"

    def defines(self) -> dict[str, int]:
        """The ``-D`` defines of this build (the PE kind itself is ``NBQ_PE_KIND``, which
        the flow sets from the kind; ``NBQ_CODE_BITS`` only for svpe)."""
        i = self.info
        out = {
            "NBQ_PM": i.pm,
            "NBQ_PN": i.pn,
            "NBQ_MAX_W": i.max_w,
            "NBQ_MAX_H": i.max_h,
            "NBQ_MAX_CIN": i.max_cin,
            "NBQ_MAX_COUT": i.max_cout,
        }
        if self.kind == "svpe":
            out["NBQ_CODE_BITS"] = i.code_bits
        for name, macro in URAM_MACROS.items():
            out[macro] = int(name in self.uram)
        for name, macro in LUTRAM_MACROS.items():
            out[macro] = int(name in self.lutram)
        return out


def _b(board: str, kind: str, bits: int, pm: int, pn: int, cin: int, cout: int, w: int,
       h: int, uram: tuple[str, ...] = (),
       lutram: tuple[str, ...] = ()) -> KernelBuild:  # fmt: skip
    pe = PEKind.parse(kind)
    info = KernelInfo(pe, pm, pn, max_h=h, max_w=w, max_cin=cin, max_cout=cout, weight_bits=bits)
    return KernelBuild(board, info, uram, lutram)


#: board -> build name -> KernelBuild: the model's choice (see module doc).
TABLE: dict[str, dict[str, KernelBuild]] = {
    "kv260": {
        "vpe": _b("kv260", "vpe", 16, 8, 4, 128, 128, 28, 28, (), ()),
        "svpe3": _b("kv260", "svpe", 3, 16, 4, 128, 128, 28, 28, (), ()),
        "svpe5": _b("kv260", "svpe", 5, 16, 2, 128, 128, 28, 28, (), ()),
    },
    "pynq-z2": {
        "vpe": _b("pynq-z2", "vpe", 16, 4, 4, 128, 128, 28, 28, (), ()),
        "svpe3": _b("pynq-z2", "svpe", 3, 8, 4, 128, 128, 28, 28, (), ()),
        "svpe5": _b("pynq-z2", "svpe", 5, 8, 1, 128, 128, 28, 28, (), ()),
    },
    "zcu102": {
        "vpe": _b("zcu102", "vpe", 16, 16, 4, 128, 128, 28, 28, (), ()),
        "svpe3": _b("zcu102", "svpe", 3, 32, 8, 128, 128, 28, 28, (), ()),
        "svpe5": _b("zcu102", "svpe", 5, 16, 4, 128, 128, 28, 28, (), ()),
    },
    "zcu104": {
        "vpe": _b("zcu104", "vpe", 16, 16, 4, 128, 128, 28, 28, (), ()),
        "svpe3": _b("zcu104", "svpe", 3, 32, 4, 128, 128, 28, 28, (), ()),
        "svpe5": _b("zcu104", "svpe", 5, 16, 4, 128, 128, 28, 28, (), ()),
    },
}
#: board -> the default svpe build (the narrowest that runs the embedded svpe bundles)
DEFAULT_SVPE: dict[str, str] = {
    "kv260": "svpe3",
    "pynq-z2": "svpe3",
    "zcu102": "svpe3",
    "zcu104": "svpe3",
}


def build(board: str, kind: str) -> KernelBuild:
    """The default build of ``kind`` (``vpe``, ``svpe``, ``svpe3``, ``svpe5``) on ``board``;
    ValueError names the known boards / kinds."""
    if board not in TABLE:
        raise ValueError(f"no builds for board {board!r}: known boards are {', '.join(TABLE)}")
    if kind not in KINDS:
        raise ValueError(f"unknown build kind {kind!r}: known kinds are {', '.join(KINDS)}")
    return TABLE[board][DEFAULT_SVPE[board] if kind == "svpe" else kind]


def defines(board: str, kind: str) -> dict[str, int]:
    """The ``-D`` defines (name -> value) of ``board``'s default build of ``kind``."""
    return build(board, kind).defines()


def main(argv: list[str] | None = None) -> int:
    """``defines BOARD KIND``: print the build's defines as ``NAME=value`` words."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] != "defines":
        print("usage: python3 -m pynq_nbq.kernel.builds defines BOARD KIND", file=sys.stderr)
        return 2
    try:
        print(" ".join(f"{k}={v}" for k, v in defines(args[1], args[2]).items()))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
