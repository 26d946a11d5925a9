#!/usr/bin/env python
"""The fpga driver's own per-call host overhead, on the simulated ZCU102.

A benchmark, not a test.  One tiny kernel call (a 1x1 conv on a 2x2x4 tile, so the
kernel itself costs almost nothing) is repeated ``--calls`` times through

* ``csim``: the kernel called directly (:class:`pynq_nbq.backends.csim.CsimKernel`);
* ``fpga``: the full driver - register writes, pooled buffers, DMA transfers,
  deadline polling - through the unmodified pynq library on
  :mod:`pynq_nbq.sim.board`.

The difference is the driver plus the simulated register file and DMA model; the
register accesses per call are counted exactly (on a board each is one AXI-Lite
transaction, roughly a microsecond - not measured here), and one simulated access is
timed, so the driver's own Python work is estimated as fpga - csim - accesses x
(one access).  Prints microseconds per
call (median of ``--repeats`` runs), the driver's own split (copy into DMA buffers;
register writes + sends; waiting, which includes the simulated kernel), and the
access counts.

    python -m scripts.bench_fpga_driver [--calls 2000] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

from pynq_nbq.backends.csim import get_kernel  # noqa: E402
from pynq_nbq.kernel.driver import FpgaConvDevice  # noqa: E402
from pynq_nbq.kernel.packing import pack_activations, pack_requant, pack_weights  # noqa: E402
from pynq_nbq.kernel.protocol import Flag  # noqa: E402
from pynq_nbq.sim.board import SimZcu102  # noqa: E402


def tiny_call(pe: str, pm: int):
    """Registers and packets of a LOAD call and of the repeated call (1x1, 2x2x4 -> 4)."""
    rng = np.random.default_rng(0)
    w = rng.integers(-3, 4, (4, 4, 1, 1)) if pe == "svpe" else rng.integers(-99, 99, (4, 4, 1, 1))
    rq = pack_requant(np.ones(4), np.zeros(4), np.full(4, 4))
    fm = pack_activations(rng.integers(-99, 99, (2, 2, 4)).astype(np.int16))
    regs = {"IN_H": 2, "IN_W": 2, "C_IN": 4, "C_OUT": 4, "FLAGS": int(Flag.RELU)}
    load = {**regs, "FLAGS": int(Flag.RELU | Flag.LOAD)}
    return (load, [pack_weights(w, pe, pm), rq, fm]), (regs, [fm]), 2 * 2 * 4 * 2


def per_call_us(device, call, calls: int) -> float:
    regs, packets, n = call
    t0 = time.perf_counter()
    for _ in range(calls):
        _, status = device.call(regs, packets, n)
        assert status == 0
    return 1e6 * (time.perf_counter() - t0) / calls


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pe", default="svpe", choices=("svpe", "vpe"))
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    board = SimZcu102()
    fpga = FpgaConvDevice(board.load(a.pe))
    csim = get_kernel(a.pe)
    (load, load_packets), (regs, packets), n = tiny_call(a.pe, csim.info.pm)
    for dev in (csim, fpga):
        assert dev.call(load, load_packets, n)[1] == 0
    with board.record() as log:
        fpga.call(regs, packets, n)
    writes = sum(1 for op, *_ in log if op == "W")
    reads = len(log) - writes
    results = {"csim": [], "fpga": [], "access": []}
    for _ in range(a.repeats):  # interleaved, so both see the same machine load
        results["csim"].append(per_call_us(csim, (regs, packets, n), a.calls))
        before = dict(fpga.timings)
        results["fpga"].append(per_call_us(fpga, (regs, packets, n), a.calls))
        t0 = time.perf_counter()
        for _ in range(a.calls):
            fpga.ip.read_register("HW_ID")  # one simulated AXI-Lite read through pynq's MMIO
        results["access"].append(1e6 * (time.perf_counter() - t0) / a.calls)
    phases = ("ready", "copy", "registers", "wait")
    split = {k: 1e6 * (fpga.timings[k] - before[k]) / a.calls for k in phases}
    med = {k: statistics.median(v) for k, v in results.items()}
    out = {
        "pe": a.pe,
        "calls": a.calls,
        "repeats": a.repeats,
        "csim_us_per_call": med["csim"],
        "fpga_sim_us_per_call": med["fpga"],
        "driver_plus_sim_overhead_us": med["fpga"] - med["csim"],
        "sim_register_access_us": med["access"],
        # estimate: what is left after the kernel and the simulated register accesses
        "driver_python_us_estimate": med["fpga"] - med["csim"] - (writes + reads) * med["access"],
        "fpga_split_us_last_repeat": split,
        "register_writes_per_call": writes,
        "register_reads_per_call": reads,
    }
    print(json.dumps(out, indent=1))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
