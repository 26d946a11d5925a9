"""Synthesise the RTL twin (hls/rtl/) with yosys and write the cost report.

    python3 scripts/rtl_synth.py            # every design (the Pm = 32 lanes take
                                            # 10-30 min each on 2 busy cores)
    python3 scripts/rtl_synth.py --ci       # only the small designs a CI test re-checks
    python3 scripts/rtl_synth.py --only vpe_lane_pm32 requant --update
                                            # re-run some designs, keep the others

Writes ``pynq_nbq/perfmodel/yosys_report.json``: per design its top module,
parameters and cell counts by class (LUT, LUTRAM/SRL, FF, CARRY8, MUXF, DSP48E2,
BRAM) from ``yosys synth_xilinx -family xcup -flatten -noiopad`` (the ``*_xc7``
designs with ``-family xc7``: CARRY4, DSP48E1).  These are an
open-synthesis estimate (yosys, not Vivado).  With --ci the report is only compared,
not written.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "hls" / "rtl"))

import rtl_twin as R  # noqa: E402

from pynq_nbq.perfmodel import costs  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ci", action="store_true", help="only the CI designs; compare, not write")
    ap.add_argument("--only", nargs="+", metavar="DESIGN", help="only these designs")
    ap.add_argument(
        "--update", action="store_true", help="replace these designs in the existing report"
    )
    args = ap.parse_args(argv)
    names = costs.CI_DESIGNS if args.ci else tuple(args.only or costs.DESIGNS)
    unknown = sorted(set(names) - set(costs.DESIGNS))
    if unknown:
        ap.error(f"unknown designs {unknown}; known: {', '.join(costs.DESIGNS)}")
    if args.only and not args.update:
        ap.error("--only writes a partial report: add --update to merge it into the existing one")
    out = {}
    for name in names:
        spec = costs.DESIGNS[name]
        t0 = time.perf_counter()
        design = R.Design(name, spec["top"], spec["params"], family=costs.family_of(spec))
        cells = R.synthesize(design)
        print(f"{name:24s} {cells}  ({time.perf_counter() - t0:.1f} s)", flush=True)
        out[name] = {**spec, "cells": cells}
    if args.ci:
        old = costs.load_report()["designs"]
        diff = [n for n in names if old[n]["cells"] != out[n]["cells"]]
        print("differs from the committed report:" if diff else "matches the committed report",
              *diff)  # fmt: skip
        return 1 if diff else 0
    version = R.yosys_version()
    with open(Path(tempfile.gettempdir()) / "nbq_rtl_synth.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel --update runs merge one at a time
        designs = {}
        if args.update and costs.REPORT_PATH.is_file():
            old = json.loads(costs.REPORT_PATH.read_text())
            if old.get("yosys") != version:
                print(f"the report was made with {old.get('yosys')}, this is {version}: rerun all")
                return 1
            designs = old["designs"]
        designs.update(out)
        report = {
            "note": costs.COST_NOTE,
            "yosys": version,
            "command": "yosys synth_xilinx -family xcup -flatten -noiopad -noclkbuf "
            "(the *_xc7 designs: -family xc7)",
            "sources": [f"hls/rtl/{s}" for s in R.SOURCES],
            "designs": dict(sorted(designs.items())),
        }
        costs.REPORT_PATH.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    print(f"wrote {costs.REPORT_PATH.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
