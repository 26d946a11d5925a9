"""Small random bundles for tests and demos (numpy only, no torch).

:func:`random_bundle` writes a valid bundle whose numbers are random but legal:
conv3x3 (+ReLU, fused 2x2 max-pool) -> conv1x1 (+ReLU) -> conv1x1 classes -> global
average pool.  It exercises the whole path from preprocessing to logits without a
trained model.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from . import datapath as dp
from . import opset
from .bundle import (
    ROLES,
    Bundle,
    InputSpec,
    LayerSpec,
    Manifest,
    TensorSpec,
    save_bundle,
    weighted_fields,
)


def random_weights(
    rng: np.random.Generator, shape, datapath: dp.PEKind | str, n_bits: int
) -> np.ndarray:
    """Random legal weights: svpe int8 codes or vpe int16."""
    if dp.PEKind.parse(datapath) is dp.PEKind.SVPE:
        mc = dp.num_magnitudes(n_bits)
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


def _input_block(height: int, width: int, mean: list[float], std: list[float]) -> dict:
    """A manifest ``input`` block for tensor "input" (L for one channel, else RGB)."""
    channels = len(mean)
    return {
        "tensor": "input",
        "channels": channels,
        "height": height,
        "width": width,
        "mode": "L" if channels == 1 else "RGB",
        "mean": mean,
        "std": std,
        "resize": "stretch",
        "invert": False,
    }


def layer_entry(
    op: str, name: str, inputs: list[str], tensors: dict[str, dict], **attrs: Any
) -> dict[str, Any]:
    """A manifest layer of ``op`` writing tensor ``name``: ``in_shape``/``out_shape`` from
    ``tensors``, the op's attribute defaults (``opset``) filled in, ``attrs`` on top."""
    spec = opset.get(op)
    entry: dict[str, Any] = {"name": name, "op": op, "inputs": inputs, "output": name}
    entry["in_shape"], entry["out_shape"] = tensors[inputs[0]]["shape"], tensors[name]["shape"]
    entry.update({a.name: a.default for a in spec.attrs if a.default is not None})
    entry.update(attrs)
    return entry


def random_bundle(
    path: str | os.PathLike,
    datapath: dp.PEKind | str = dp.PEKind.SVPE,
    n_bits: int = 3,
    seed: int = 0,
    channels: int = 1,
    size: int = 28,
    width: int = 8,
    classes: list[str] | None = None,
) -> Bundle:
    """Write a random bundle at ``path`` and return it (validated)."""
    manifest, arrays = random_bundle_parts(datapath, n_bits, seed, channels, size, width, classes)
    return save_bundle(manifest, arrays, path)


def random_bundle_parts(
    datapath: dp.PEKind | str = dp.PEKind.SVPE,
    n_bits: int = 3,
    seed: int = 0,
    channels: int = 1,
    size: int = 28,
    width: int = 8,
    classes: list[str] | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The manifest (without its ``arrays`` checksums, which ``save_bundle`` adds) and the
    arrays of :func:`random_bundle`, for tests that edit them before saving."""
    rng = np.random.default_rng(seed)
    classes = classes or [f"class{i}" for i in range(10)]
    k = len(classes)
    bits = n_bits if dp.PEKind.parse(datapath) is dp.PEKind.SVPE else dp.VPE_WEIGHT_BITS
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
        fields = weighted_fields(datapath, bits, w.shape)
        rq = random_requant(rng, cout, fields["fan_in"] * 4096 * float(np.abs(w).mean() + 1))
        arrays[f"{name}.weights"] = w
        for role, a in rq.items():
            arrays[f"{name}.{role}"] = a
        layers.append(
            layer_entry(
                "conv",
                name,
                [src],
                tensors,
                kernel=ker,
                stride=1,
                padding=pad,
                groups=1,
                relu=relu,
                pool=pool,
                weight_bits=bits,
                weight_exp=-8,
                acc_bits=fields["acc_bits"],
                arrays={r: f"{name}.{r}" for r in ROLES},
            )  # fmt: skip
        )
    layers.append(layer_entry("gap", "gap", ["c3"], tensors))
    manifest = {
        "name": f"random-{datapath}",
        "datapath": datapath,
        "weight_bits": bits,
        "classes": classes,
        "input": _input_block(size, size, [0.5] * channels, [0.5] * channels),
        "tensors": tensors,
        "layers": layers,
        "output": "gap",
        "provenance": {"tool": "pynq_nbq.testing.random_bundle", "seed": seed},
    }
    return manifest, arrays


def _requant_arrays(rng: np.random.Generator, c_out: int, acc_scale: float, edge: bool) -> dict:
    """Random legal (mult, bias, shift) that put typical accumulators near 2**10, with a
    share of saturating channels when ``edge``."""
    shift = rng.integers(8, 30, size=c_out).astype(np.int64)
    target = 2.0**10 * 2.0**shift / max(acc_scale, 1.0)
    mult = np.clip(np.round(target * rng.uniform(0.25, 4.0, c_out)), 1, dp.REQUANT_MULT_MAX)
    mult *= rng.choice([-1, 1], size=c_out)
    if edge:  # extremes: the largest multipliers (saturate), zero, the most negative
        mult[: c_out // 2] = rng.choice([dp.REQUANT_MULT_MIN, dp.REQUANT_MULT_MAX, 0], c_out // 2)
    bias = rng.integers(-(1 << 20), 1 << 20, size=c_out) << rng.integers(0, 12, size=c_out)
    return {"mult": mult.astype(np.int64), "bias": bias.astype(np.int64), "shift": shift}


def random_graph_bundle(
    path: str | os.PathLike,
    datapath: dp.PEKind | str = dp.PEKind.SVPE,
    n_bits: int = 3,
    seed: int = 0,
    edge: bool = False,
) -> Bundle:
    """A small random bundle with every op of the datapath, written at ``path``.

    conv (3x3 pad 1 + fused pool; 1x1 + ReLU; 3x3 stride 2 groups 2; 5x5 pad 2
    depthwise), ``add`` (+ReLU), standalone ``maxpool`` (k 2, stride 1), ``concat`` of
    maps and of vectors, ``gap``, ``flatten`` and two ``linear`` layers, on a 3 x 8 x 7
    RGB input with per-tensor formats drawn so that ``align`` shifts both ways.  ``edge``:
    every weight at the largest magnitude or zero (svpe n >= 2) and extreme requant
    multipliers.  For exactness tests against a slow reference; the numbers mean
    nothing.
    """
    rng = np.random.default_rng(seed)
    bits = n_bits if dp.PEKind.parse(datapath) is dp.PEKind.SVPE else dp.VPE_WEIGHT_BITS
    classes = [f"class{i}" for i in range(5)]
    fr = lambda: int(rng.integers(7, 11))  # noqa: E731
    tensors: dict[str, dict] = {"input": {"shape": [3, 8, 7], "frac": fr()}}
    arrays: dict[str, np.ndarray] = {}
    layers: list[dict] = []

    def add_layer(name: str, op: str, inputs: list[str], shape: list[int], frac=None, **attrs):
        tensors[name] = {"shape": shape, "frac": fr() if frac is None else frac}
        layer = layer_entry(op, name, inputs, tensors, **attrs)
        if opset.get(op).weighted:
            cin = tensors[inputs[0]]["shape"][0]
            k, g = attrs.get("kernel", 1), attrs.get("groups", 1)
            wshape = (shape[0], cin // g, k, k) if op == "conv" else (shape[0], cin)
            w = random_weights(rng, wshape, datapath, n_bits)
            if edge:
                top = (
                    dp.num_magnitudes(n_bits)
                    if dp.PEKind.parse(datapath) is dp.PEKind.SVPE
                    else dp.VPE_WEIGHT_MIN
                )
                pick = rng.choice(
                    [-1, 1, 0]
                    if dp.PEKind.parse(datapath) is dp.PEKind.VPE or n_bits > 1
                    else [-1, 1],
                    wshape,
                )
                w = (pick * top).astype(w.dtype)
            fields = weighted_fields(datapath, bits, wshape)
            wint = (
                dp.decode_svpe(w, n_bits)
                if dp.PEKind.parse(datapath) is dp.PEKind.SVPE
                else w.astype(np.int64)
            )
            acc_scale = fields["fan_in"] * 2.0**12 * float(np.abs(wint).mean() + 1)
            rq = _requant_arrays(rng, shape[0], acc_scale, edge)
            arrays[f"{name}.weights"] = w
            arrays.update({f"{name}.{r}": a for r, a in rq.items()})
            layer.update(
                weight_bits=bits,
                weight_exp=-6,
                acc_bits=fields["acc_bits"],
                arrays={r: f"{name}.{r}" for r in ROLES},
            )
        layers.append(layer)

    conv = {"stride": 1, "groups": 1}
    add_layer("c1", "conv", ["input"], [4, 4, 3], kernel=3, padding=1, relu=False, pool=2, **conv)
    add_layer("c2", "conv", ["c1"], [4, 4, 3], kernel=1, padding=0, relu=True, pool=0, **conv)
    f_sum = min(tensors["c1"]["frac"], tensors["c2"]["frac"]) - int(rng.integers(0, 2))
    add_layer("sum", "add", ["c1", "c2"], [4, 4, 3], f_sum, relu=True)
    add_layer("c3", "conv", ["sum"], [4, 2, 2], kernel=3, padding=1, relu=True,
              stride=2, groups=2, pool=0)  # fmt: skip
    add_layer("c4", "conv", ["sum"], [4, 4, 3], kernel=5, padding=2, relu=False,
              stride=1, groups=4, pool=0)  # fmt: skip
    add_layer("mp", "maxpool", ["c4"], [4, 3, 2], tensors["c4"]["frac"], kernel=2, stride=1)
    add_layer("cat", "concat", ["sum", "c4"], [8, 4, 3])
    add_layer("gap", "gap", ["cat"], [8])
    add_layer("fl", "flatten", ["c3"], [16], tensors["c3"]["frac"])
    add_layer("flmp", "flatten", ["mp"], [24], tensors["mp"]["frac"])
    add_layer("vec", "concat", ["gap", "fl", "flmp"], [48])
    add_layer("fc1", "linear", ["vec"], [12], relu=True)
    add_layer("fc2", "linear", ["fc1"], [len(classes)], relu=False)
    manifest = {
        "name": f"random-graph-{datapath}{bits}",
        "datapath": datapath,
        "weight_bits": bits,
        "classes": classes,
        "input": _input_block(
            8, 7, [float(v) for v in rng.uniform(0, 1, 3)], rng.uniform(0.05, 1, 3).tolist()
        ),
        "tensors": tensors,
        "layers": layers,
        "output": "fc2",
        "provenance": {"tool": "pynq_nbq.testing.random_graph_bundle", "seed": seed},
    }
    return save_bundle(manifest, arrays, path)


def conv_manifest(
    datapath: str,
    weight_bits: int,
    convs: list[tuple[str, int, int, int, int | None]],
    name: str = "m",
    size: int = 8,
) -> Manifest:
    """A typed manifest of conv layers only, for checks that read no arrays
    (``kernel.checks.check_manifest``): each ``(name, c_in, kernel, padding, acc_bits)``
    is a stride-1 conv on a ``c_in x size x size`` input with 4 output channels."""
    layers = []
    for i, (lname, cin, k, pad, acc_bits) in enumerate(convs):
        oh, ow = dp.conv_output_hw(size, size, k, 1, pad)
        layers.append(
            LayerSpec(
                index=i,
                name=lname,
                op="conv",
                inputs=("x",),
                output=f"y{i}",
                in_shapes=((cin, size, size),),
                out_shape=(4, oh, ow),
                in_fracs=(0,),
                out_frac=0,
                kernel=k,
                padding=pad,
                weight_bits=weight_bits,
                acc_bits=acc_bits,
            )
        )
    cin = convs[0][1] if convs else 1
    return Manifest(
        name=name,
        pe=dp.PEKind.parse(datapath),
        weight_bits=weight_bits,
        classes=(),
        input=InputSpec("x", cin, size, size, "raw", (0.0,) * cin, (1.0,) * cin),
        tensors={"x": TensorSpec("x", (cin, size, size), 0)},
        layers=tuple(layers),
        output=layers[-1].output if layers else "x",
    )
