"""Slow, obviously-correct integer reference of the datapath (Python ints, loops).

Used only by tests to prove the vectorised numpy engine (and the C-simulation)
exact.  Follows docs/datapath.md literally; no numpy arithmetic on the values.
"""

from __future__ import annotations

ACT_MIN, ACT_MAX = -32768, 32767


def sat(v: int) -> int:
    return max(ACT_MIN, min(ACT_MAX, v))


def rshift_round(v: int, s: int) -> int:
    return v if s == 0 else (v + (1 << (s - 1))) >> s  # Python >> is arithmetic (floor)


def conv_layer(x, w, mult, bias, shift, stride, padding, groups, relu, pool):
    """x: nested lists [H][W][C] of ints; w: [Cout][Cin/g][k][k] ints. Returns [H'][W'][Cout]."""
    h, wd = len(x), len(x[0])
    cout, cin_g, k = len(w), len(w[0]), len(w[0][0])
    cout_g = cout // groups
    oh = (h + 2 * padding - k) // stride + 1
    ow = (wd + 2 * padding - k) // stride + 1
    out = [[[0] * cout for _ in range(ow)] for _ in range(oh)]
    for oy in range(oh):
        for ox in range(ow):
            for co in range(cout):
                g = co // cout_g
                acc = 0
                for ci in range(cin_g):
                    for ky in range(k):
                        for kx in range(k):
                            iy = oy * stride + ky - padding
                            ix = ox * stride + kx - padding
                            if 0 <= iy < h and 0 <= ix < wd:
                                acc += x[iy][ix][g * cin_g + ci] * w[co][ci][ky][kx]
                y = rshift_round(acc * mult[co] + bias[co], shift[co])
                if relu:
                    y = max(y, 0)
                out[oy][ox][co] = sat(y)
    if pool:
        out = [
            [
                [
                    max(out[2 * i + a][2 * j + b][co] for a in (0, 1) for b in (0, 1))
                    for co in range(cout)
                ]
                for j in range(ow // 2)
            ]
            for i in range(oh // 2)
        ]
    return out


def align(v: int, f_from: int, f_to: int) -> int:
    d = f_to - f_from
    return v << d if d >= 0 else rshift_round(v, -d)


def gap(x, frac_in=0, frac_out=0):
    """Mean moved from frac_in to frac_out, round half up (exact rational arithmetic)."""
    import math
    from fractions import Fraction

    h, w, c = len(x), len(x[0]), len(x[0][0])
    out = []
    for ch in range(c):
        mean = Fraction(sum(x[i][j][ch] for i in range(h) for j in range(w)), h * w)
        out.append(sat(math.floor(mean * Fraction(2) ** (frac_out - frac_in) + Fraction(1, 2))))
    return out
