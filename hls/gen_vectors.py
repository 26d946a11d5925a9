#!/usr/bin/env python3
"""Write test vectors for the C++ testbench (hls/tb_nbq_conv.cpp).

Random conv layers (every n for svpe, int16 for vpe, 3x3 and 1x1, ReLU, pool,
edge values, shapes that need tiling) are cut into kernel calls by the host
scheduler (pynq_nbq.kernel.scheduler) and answered by the numpy reference
(pynq_nbq.sim.reference.ReferenceDevice); the calls and their expected outputs go to the file.

    python3 hls/gen_vectors.py --pe svpe --out tb_vectors.bin [--max-w 64 ...]

The limits must be those of the kernel the testbench is built with (defaults:
hls/nbq_params.h); the testbench checks them and refuses a mismatch.
Also importable: :func:`random_spec` is what the csim tests use.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's pynq_nbq

from pynq_nbq import datapath as dp  # noqa: E402
from pynq_nbq.kernel.header import parse_params_header  # noqa: E402
from pynq_nbq.kernel.protocol import KernelInfo  # noqa: E402
from pynq_nbq.kernel.scheduler import run_conv  # noqa: E402
from pynq_nbq.ops import ConvSpec  # noqa: E402
from pynq_nbq.sim.reference import RecordingDevice, ReferenceDevice  # noqa: E402
from pynq_nbq.sim.vectors import write_vectors  # noqa: E402


def random_spec(
    rng: np.random.Generator,
    pe: str,
    c_in: int,
    c_out: int,
    kernel: int = 3,
    pool: int = 0,
    relu: bool = True,
    n_bits: int = 3,
    edge: bool = False,
    name: str = "rand",
) -> ConvSpec:
    """A random conv-engine layer whose accumulator fits ACC_BITS.

    ``edge``: push values to the limits - the largest shifts (svpe) or +-32768
    weights (vpe), many zero weights, requant that saturates both ways, shift 0
    and large shifts, zero multipliers.
    """
    shape = (c_out, c_in, kernel, kernel)
    if pe == "svpe":
        r = dp.max_code(n_bits)
        if edge:  # mostly the largest magnitude, some zeros
            mag = np.where(rng.random(shape) < 0.7, r, rng.integers(0, r + 1, shape))
        else:
            mag = rng.integers(0, r + 1, shape)
        if n_bits == 1:
            mag = np.ones(shape, dtype=np.int64)
        codes = (mag * rng.choice([-1, 1], shape)).astype(np.int8)
        weights = dp.decode_svpe(codes, n_bits)
    else:
        codes, n_bits = None, 16
        if edge:
            weights = rng.choice([-(1 << 15), (1 << 15) - 1, 0, 1, -1], shape)
        else:
            weights = rng.integers(dp.VPE_WEIGHT_MIN, dp.VPE_WEIGHT_MAX + 1, shape)
    fan_in = c_in * kernel * kernel
    acc_max = fan_in * (1 << 15) * max(int(np.abs(weights).max(initial=0)), 1)
    if edge:
        mult = rng.choice([dp.REQUANT_MULT_MIN, dp.REQUANT_MULT_MAX, 0, 1, -1], c_out)
        shift = rng.choice([0, 1, 15, 40, dp.MAX_REQUANT_SHIFT], c_out)
    else:
        mult = rng.integers(dp.REQUANT_MULT_MIN, dp.REQUANT_MULT_MAX + 1, c_out)
        # typical |acc * mult| ~ sqrt(fan_in) * 2^14 * mean|w| * 2^14: shift it to ~2^13
        typical = np.sqrt(fan_in) * 2.0**28 * max(float(np.abs(weights).mean()), 1.0)
        shift = int(np.log2(typical)) - 13 + rng.integers(-2, 3, c_out)
        shift = np.clip(shift, 0, dp.MAX_REQUANT_SHIFT)
    # bias: outputs of about +-2^13, kept inside REQUANT_BITS next to acc*mult
    room = float((1 << (dp.REQUANT_BITS - 2)) - acc_max * (1 << 15))
    bias = rng.normal(0.0, 1.0, c_out) * 2.0 ** (np.asarray(shift, np.float64) + 13)
    bias = np.clip(bias, -room, room).astype(np.int64)
    return ConvSpec(
        name,
        weights.astype(np.int64),
        np.asarray(mult, np.int64),
        bias,
        np.asarray(shift, np.int64),
        stride=1,
        padding=(kernel - 1) // 2,
        relu=relu,
        pool=pool,
        datapath=pe,
        n_bits=n_bits,
        codes=codes,
    )


def random_input(rng: np.random.Generator, n: int, h: int, w: int, c: int, edge=False):
    """int16 NHWC; ``edge`` mixes in -32768, 32767 and zeros."""
    x = rng.integers(dp.ACT_MIN, dp.ACT_MAX + 1, (n, h, w, c))
    if edge:
        pick = rng.random(x.shape)
        x = np.where(pick < 0.3, dp.ACT_MIN, np.where(pick < 0.5, dp.ACT_MAX, x))
        x = np.where(rng.random(x.shape) < 0.1, 0, x)
    return x.astype(np.int16)


def vector_layers(info: KernelInfo, rng: np.random.Generator):
    """(spec, input) pairs covering the kernel's features for one PE kind."""
    bits = tuple(range(1, info.code_bits + 1)) if info.pe == "svpe" else (16,)
    cases = []
    for i, n in enumerate(bits * 2):
        k = (3, 1)[i % 2]
        pool = 2 * (i // 2 % 2)
        cin = int(rng.integers(1, min(info.max_cin, 2 * info.pm + 3) + 1))
        cout = int(rng.integers(1, min(info.max_cout, 2 * info.pn + 3) + 1))
        h, w = int(rng.integers(2, 9)), int(rng.integers(2, 9))
        edge = i % 3 == 2
        spec = random_spec(rng, info.pe, cin, cout, k, pool, bool(i % 2), n, edge)
        cases.append((spec, random_input(rng, 1, h, w, cin, edge)))
    # a layer over the buffer limits: wider than MAX_W, more outputs than MAX_COUT
    cin = min(info.max_cin, 3)
    spec = random_spec(rng, info.pe, cin, info.max_cout + 3, 3, 2, True, bits[-1])
    cases.append((spec, random_input(rng, 1, 5, info.max_w + 5, cin)))
    return cases


def main(argv=None) -> int:
    defaults = parse_params_header()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pe", choices=("svpe", "vpe"), required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pm", type=int, help="default: nbq_params.h's for the PE kind")
    ap.add_argument("--pn", type=int)
    for lim in ("max_h", "max_w", "max_cin", "max_cout"):
        ap.add_argument(
            f"--{lim.replace('_', '-')}", type=int, default=defaults[f"NBQ_{lim.upper()}"]
        )
    ap.add_argument(
        "--max-packet-bytes", type=int, default=4096, help="small, so that rows are tiled too"
    )
    ap.add_argument(
        "--code-bits",
        type=int,
        choices=(3, 5),
        default=defaults["NBQ_CODE_BITS"],
        help="svpe builds: the kernel's NBQ_CODE_BITS (vectors use n <= it; default the header's)",
    )
    a = ap.parse_args(argv)
    # nbq_params.h's per-kind defaults (svpe: those of the build's code width)
    kind = f"SVPE{a.code_bits}" if a.pe == "svpe" else "VPE"
    pm = a.pm or defaults[f"NBQ_{kind}_PM"]
    pn = a.pn or defaults[f"NBQ_{kind}_PN"]
    bits = a.code_bits if a.pe == "svpe" else None
    info = KernelInfo(a.pe, pm, pn, a.max_h, a.max_w, a.max_cin, a.max_cout, weight_bits=bits)
    rng = np.random.default_rng(a.seed)
    rec = RecordingDevice(ReferenceDevice(info))
    for spec, x in vector_layers(info, rng):
        run_conv(rec, x, spec, a.max_packet_bytes)
    write_vectors(a.out, info, rec.calls)
    print(f"{a.out}: {len(rec.calls)} calls for {a.pe} (Pm={pm}, Pn={pn})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
