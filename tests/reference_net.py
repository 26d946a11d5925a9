"""A whole network run from ``docs/datapath.md`` alone: Python ints, loops, no numpy maths.

Kept apart from the engine (it imports nothing from ``pynq_nbq``): the manifest is
a plain dict and the arrays plain nested lists, and every rule is written here again
as the doc states it - the input from 8-bit pixels in exact rational arithmetic,
svpe codes to shifts, conv as cross-correlation with symmetric zero padding,
requantisation with round half up, ReLU, saturation, the fused and standalone max
pools in floor mode, gap, add/concat alignment (round half up), flatten in C, H, W
order, linear.  3-D tensors are nested lists [H][W][C], vectors plain lists.
"""

from __future__ import annotations

import math
from fractions import Fraction

import reference_loops as ref


def input_from_pixels(pixels, mean, std, frac):
    """pixels [C][H][W] ints 0..255 -> [H][W][C] ints: sat(floor((p/255-m)/s * 2^f + 1/2))."""
    c, h, w = len(pixels), len(pixels[0]), len(pixels[0][0])
    scale = Fraction(2) ** frac

    def q(p, ch):
        real = (Fraction(p, 255) - Fraction(mean[ch])) / Fraction(std[ch])
        return ref.sat(math.floor(real * scale + Fraction(1, 2)))

    return [[[q(pixels[ch][y][x], ch) for ch in range(c)] for x in range(w)] for y in range(h)]


def weight_of(code, datapath):
    """svpe: 0 -> 0, +-m -> +-2^(m-1); vpe: the integer itself."""
    if datapath == "vpe" or code == 0:
        return code
    return (1 if code > 0 else -1) << (abs(code) - 1)


def _weights(a, datapath):
    if isinstance(a, list):
        return [_weights(v, datapath) for v in a]
    return weight_of(int(a), datapath)


def _maxpool(x, k, s):
    h, w, c = len(x), len(x[0]), len(x[0][0])
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    return [
        [
            [
                max(x[i * s + a][j * s + b][ch] for a in range(k) for b in range(k))
                for ch in range(c)
            ]
            for j in range(ow)
        ]
        for i in range(oh)
    ]


def _map(x, fn):
    """Apply fn to every int of a 3-D or 1-D tensor."""
    if isinstance(x[0], list):
        return [_map(v, fn) for v in x]
    return [fn(v) for v in x]


def run(manifest: dict, arrays: dict, x_in) -> list[int]:
    """Logits (ints) of one image; ``x_in`` is the input tensor [H][W][C] of ints."""
    dpk = manifest["datapath"]
    frac = {name: t["frac"] for name, t in manifest["tensors"].items()}
    env = {manifest["input"]["tensor"]: x_in}
    for layer in manifest["layers"]:
        op, ins = layer["op"], [env[t] for t in layer["inputs"]]
        fins = [frac[t] for t in layer["inputs"]]
        fout = frac[layer["output"]]
        if op in ("conv", "linear"):
            a = {r: arrays[n] for r, n in layer["arrays"].items()}
            w = _weights(a["weights"], dpk)
            mult, bias, shift = a["mult"], a["bias"], a["shift"]
            if op == "conv":
                y = ref.conv_layer(
                    ins[0], w, mult, bias, shift, layer["stride"], layer["padding"],
                    layer["groups"], layer["relu"], 0,
                )  # fmt: skip
                if layer["pool"]:
                    y = _maxpool(y, layer["pool"], layer["pool"])
            else:
                y = []
                for o in range(len(w)):
                    acc = sum(xi * wi for xi, wi in zip(ins[0], w[o]))
                    v = ref.rshift_round(acc * mult[o] + bias[o], shift[o])
                    y.append(ref.sat(max(v, 0) if layer["relu"] else v))
        elif op == "maxpool":
            y = _maxpool(ins[0], layer["kernel"], layer["stride"])
        elif op == "gap":
            y = ref.gap(ins[0], fins[0], fout)
        elif op == "flatten":
            x = ins[0]
            y = [
                x[i][j][c]
                for c in range(len(x[0][0]))
                for i in range(len(x))
                for j in range(len(x[0]))
            ]
        elif op == "add":
            al = [_map(x, lambda v, f=f, t=fout: ref.align(v, f, t)) for x, f in zip(ins, fins)]
            y = al[0]
            for other in al[1:]:
                y = _zip_add(y, other)
            relu = layer["relu"]
            y = _map(y, lambda v, r=relu: ref.sat(max(v, 0) if r else v))
        elif op == "concat":
            al = [
                _map(x, lambda v, f=f, t=fout: ref.sat(ref.align(v, f, t)))
                for x, f in zip(ins, fins)
            ]
            if isinstance(al[0][0], list):  # maps: per pixel, channels joined
                y = [
                    [sum((a[i][j] for a in al), []) for j in range(len(al[0][0]))]
                    for i in range(len(al[0]))
                ]
            else:
                y = sum(al, [])
        else:
            raise ValueError(f"unknown op {op}")
        env[layer["output"]] = y
    return env[manifest["output"]]


def _zip_add(a, b):
    if isinstance(a[0], list):
        return [_zip_add(x, y) for x, y in zip(a, b)]
    return [x + y for x, y in zip(a, b)]


# --- the loader's layer rules (docs/datapath.md section 4, "Validation") ---------------
COMMON = {"name", "op", "inputs", "output", "in_shape", "out_shape"}
WEIGHTED = {"weight_bits", "weight_exp", "acc_bits", "arrays"}
ATTRIBUTES = {  # op -> (attributes, inputs: an exact count or "2+")
    "conv": ({"kernel", "stride", "padding", "groups", "relu", "pool"} | WEIGHTED, 1),
    "linear": ({"relu"} | WEIGHTED, 1),
    "maxpool": ({"kernel", "stride"}, 1),
    "gap": (set(), 1),
    "flatten": (set(), 1),
    "concat": (set(), "2+"),
    "add": ({"relu"}, "2+"),
}


def _out_hw(size, k, s, p):
    return (size + 2 * p - k) // s + 1


def layer_problems(manifest: dict) -> list[str]:
    """What the doc's layer rules refuse in ``manifest``: unknown or missing fields, a
    stated in_shape/out_shape that is not its tensor's, an output shape off the op's
    rule, a bundle weight_bits that is not its widest layer's.  [] when none."""
    shapes = {name: t["shape"] for name, t in manifest["tensors"].items()}
    out = []
    for layer in manifest["layers"]:
        op, name = layer["op"], layer["name"]
        allowed, n_in = ATTRIBUTES[op]
        keys = set(layer)
        if keys - COMMON - allowed:
            out.append(f"{name}: fields {sorted(keys - COMMON - allowed)}")
        if (COMMON | allowed) - keys:
            out.append(f"{name}: missing {sorted((COMMON | allowed) - keys)}")
            continue
        ins = [shapes[t] for t in layer["inputs"]]
        if layer["in_shape"] != ins[0] or layer["out_shape"] != shapes[layer["output"]]:
            out.append(f"{name}: stated shape")
        o, x = shapes[layer["output"]], ins[0]
        if op == "conv":
            k, s, p = layer["kernel"], layer["stride"], layer["padding"]
            h, w = _out_hw(x[1], k, s, p), _out_hw(x[2], k, s, p)
            if layer["pool"]:
                h, w = h // 2, w // 2
            want = [o[0], h, w]
        elif op == "maxpool":
            want = [x[0], _out_hw(x[1], layer["kernel"], layer["stride"], 0),
                    _out_hw(x[2], layer["kernel"], layer["stride"], 0)]  # fmt: skip
        elif op == "gap":
            want = [x[0]]
        elif op == "flatten":
            want = [math.prod(x)]
        elif op == "concat":
            want = [sum(i[0] for i in ins), *x[1:]]
        else:  # add: its inputs' shape; linear: C_out from its weights
            want = list(x) if op == "add" else o
        if o != want or (n_in == 1) != (len(ins) == 1):
            out.append(f"{name}: output shape {o} != {want}")
    widths = [ly["weight_bits"] for ly in manifest["layers"] if "weight_bits" in ly]
    if widths and max(widths) != manifest["weight_bits"]:
        out.append("weight_bits: not the widest layer's")
    return out
