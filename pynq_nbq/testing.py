"""Small random bundles for tests and demos (numpy only, no torch).

:func:`random_bundle` writes a valid bundle whose numbers are random but legal:
conv3x3 (+ReLU, fused 2x2 max-pool) -> conv1x1 (+ReLU) -> conv1x1 classes -> global
average pool.  It exercises the whole path from preprocessing to logits without a
trained model.
"""

from __future__ import annotations

import os

import numpy as np

from . import datapath as dp
from .bundle import Bundle, save_bundle


def random_weights(rng: np.random.Generator, shape, datapath: str, n_bits: int) -> np.ndarray:
    """Random legal weights: svpe int8 codes or vpe int16."""
    if datapath == "svpe":
        mc = dp.max_code(n_bits)
        codes = rng.integers(-mc, mc + 1, size=shape)
        if n_bits == 1:
            codes = np.where(codes >= 0, 1, -1)
        return codes.astype(np.int8)
    return rng.integers(-2000, 2001, size=shape).astype(np.int16)


def random_requant(rng: np.random.Generator, c_out: int, acc_scale: float) -> dict:
    """mult/bias/shift that map accumulators of magnitude ~acc_scale to ~2**12."""
    shift = np.full(c_out, 16, dtype=np.int64)
    mult = rng.integers(1000, 3000, size=c_out).astype(np.int64)
    gain = 2.0**12 / max(acc_scale, 1.0) * 2.0**16 / 2000
    mult = np.clip(np.round(mult * gain / 1.0), 1, dp.REQUANT_MULT_MAX).astype(np.int64)
    bias = rng.integers(-(1 << 27), 1 << 27, size=c_out).astype(np.int64)
    return {"mult": mult, "bias": bias, "shift": shift}


def random_bundle(
    path: str | os.PathLike,
    datapath: str = "svpe",
    n_bits: int = 3,
    seed: int = 0,
    channels: int = 1,
    size: int = 28,
    width: int = 8,
    classes: list[str] | None = None,
) -> Bundle:
    """Write a random bundle at ``path`` and return it (validated)."""
    rng = np.random.default_rng(seed)
    classes = classes or [f"class{i}" for i in range(10)]
    k = len(classes)
    bits = n_bits if datapath == "svpe" else dp.VPE_WEIGHT_BITS
    half = size // 2
    tensors = {
        "input": {"shape": [channels, size, size], "frac": 12},
        "c1": {"shape": [width, half, half], "frac": 10},
        "c2": {"shape": [width, half, half], "frac": 10},
        "c3": {"shape": [k, half, half], "frac": 9},
        "gap": {"shape": [k], "frac": 9},
    }
    plan = [
        ("c1", "input", channels, width, 3, 1, True, 2),
        ("c2", "c1", width, width, 1, 0, True, 0),
        ("c3", "c2", width, k, 1, 0, False, 0),
    ]
    arrays: dict[str, np.ndarray] = {}
    layers = []
    for name, src, cin, cout, ker, pad, relu, pool in plan:
        w = random_weights(rng, (cout, cin, ker, ker), datapath, n_bits)
        fan_in = cin * ker * ker
        max_w = dp.max_abs_weight(datapath, bits)
        rq = random_requant(rng, cout, fan_in * 4096 * float(np.abs(w).mean() + 1))
        arrays[f"{name}.weights"] = w
        for role, a in rq.items():
            arrays[f"{name}.{role}"] = a
        layers.append(
            {
                "name": name,
                "op": "conv",
                "inputs": [src],
                "output": name,
                "in_shape": tensors[src]["shape"],
                "out_shape": tensors[name]["shape"],
                "kernel": ker,
                "stride": 1,
                "padding": pad,
                "groups": 1,
                "relu": relu,
                "pool": pool,
                "weight_bits": bits,
                "weight_exp": -8,
                "acc_bits": dp.accumulator_bits(fan_in, max_w),
                "arrays": {r: f"{name}.{r}" for r in ("weights", "mult", "bias", "shift")},
            }
        )
    layers.append(
        {
            "name": "gap",
            "op": "gap",
            "inputs": ["c3"],
            "output": "gap",
            "in_shape": tensors["c3"]["shape"],
            "out_shape": [k],
        }
    )
    manifest = {
        "name": f"random-{datapath}",
        "datapath": datapath,
        "weight_bits": bits,
        "classes": classes,
        "input": {
            "tensor": "input",
            "channels": channels,
            "height": size,
            "width": size,
            "mode": "L" if channels == 1 else "RGB",
            "mean": [0.5] * channels,
            "std": [0.5] * channels,
            "resize": "stretch",
            "invert": False,
        },
        "tensors": tensors,
        "layers": layers,
        "output": "gap",
        "provenance": {"tool": "pynq_nbq.testing.random_bundle", "seed": seed},
    }
    return save_bundle(manifest, arrays, path)
