"""Export a trained checkpoint to a model bundle of the integer datapath.

Steps: trace the model with torch.fx (power-of-two layers are leaves), fuse
conv/linear + batch norm (+ ReLU) (+ 2x2 max-pool) into datapath layers, run
calibration images through the float fake-quant model to choose every tensor's
fixed-point format, fold batch norm into integer requantisation, write the bundle
(``pynq_nbq.bundle.save_bundle``), then run the numpy engine on report images
and compare every tensor with the torch model (SQNR, saturation).

``svpe`` needs a power-of-two checkpoint (its weights become n-bit codes);
``vpe`` takes any checkpoint and stores the weights the model evaluates with as
int16 with a per-layer power-of-two exponent (the paper's 16-bit baseline).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.fx
from torch import nn

from pynq_nbq import datapath as dp
from pynq_nbq import opset
from pynq_nbq.bundle import ROLES, Bundle, load_bundle, save_bundle, weighted_fields
from pynq_nbq.engine import Engine

from .data import load_dataset
from .fuse import ExportError, _Layer, _Tracer, fuse_graph
from .train import load_checkpoint, model_from_checkpoint, normalise

#: fractional-bit headroom over the calibration maximum (x2 = one spare bit)
HEADROOM = 2.0


def _record(gm: torch.fx.GraphModule, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every node's output on input x (eval mode)."""
    vals: dict[str, torch.Tensor] = {}

    class Rec(torch.fx.Interpreter):
        def run_node(self, n):
            v = super().run_node(n)
            if isinstance(v, torch.Tensor):
                vals[n.name] = v.detach()
            return v

    with torch.no_grad():
        Rec(gm).run(x)
    return vals


def _weights_for(layer: _Layer, datapath: dp.PEKind) -> tuple[np.ndarray, int, int, np.ndarray]:
    """(integer weight array, weight_exp e_w, weight_bits, channel factor) of a
    conv/linear layer.

    Channel c's real weights are ``ints[c] * 2**e_w * factor[c]``.  The factor is 1
    except for svpe layers trained with per-channel scales: there ``e_w`` belongs to the
    largest integer exponent (``floor(max e)``) and ``factor[c] = 2**(e_c - floor(max
    e))``, which :func:`export` multiplies into batch norm's per-channel scale, so that
    it lands in the requantisation multiplier/shift: for power-of-two scales exactly (a
    power of two only moves the shift, factor <= 1); continuous scales (``scale_steps``
    > 1, factor < 2) change the multiplier itself, rounded like any batch-norm scale.
    The codes stay n-bit, so the accumulator bound is the per-layer one.
    """
    m = layer.module
    ones = np.ones(m.weight.shape[0])
    if datapath is dp.PEKind.SVPE:
        if m.method == "float":
            raise ExportError(
                f"{layer.name}: svpe needs a power-of-two checkpoint "
                "(this one was trained as float; export it as vpe)"
            )
        codes, e = m.codes()  # integers from the quantizer, never re-derived from floats
        n = m.n_bits
        codes = codes.numpy().astype(np.int8)
        if isinstance(e, int):
            return codes, dp.layer_exponent(e, n), n, ones
        e_top = math.floor(float(e.max()))
        factor = np.exp2(e.double().numpy() - e_top)  # a power of two for integer exponents
        return codes, dp.layer_exponent(e_top, n), n, factor
    w = m.effective_weight() if m.method != "float" else m.weight
    w = w.detach().double().numpy()
    mx = float(np.abs(w).max())
    e_w = 0 if mx == 0 else math.ceil(math.log2(mx / dp.VPE_WEIGHT_MAX))
    ints = np.clip(dp.round_half_up(w * 2.0**-e_w), dp.VPE_WEIGHT_MIN, dp.VPE_WEIGHT_MAX)
    return ints.astype(np.int16), int(e_w), dp.VPE_WEIGHT_BITS, ones


def _bn_affine(bn: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    var = bn.running_var.double().numpy()
    mean = bn.running_mean.double().numpy()
    g = bn.weight.double().detach().numpy() if bn.affine else np.ones_like(var)
    b = bn.bias.double().detach().numpy() if bn.affine else np.zeros_like(var)
    scale = g / np.sqrt(var + bn.eps)
    return scale, b - mean * scale


def _shape(t: torch.Tensor) -> list[int]:
    return list(t.shape[1:])


def _tensor_formats(
    fused: list[_Layer], vals: dict[str, torch.Tensor], inp: str, input_shape, mean, std
) -> tuple[dict[str, dict], dict[str, str]]:
    """Every tensor's shape and fixed-point format from the calibration values, and the
    fx node -> tensor name map (``input`` for the model's input)."""
    lo = (0.0 - np.array(mean)) / np.array(std)
    hi = (1.0 - np.array(mean)) / np.array(std)
    in_max = float(max(np.abs(lo).max(), np.abs(hi).max()))
    tensors: dict[str, dict] = {
        "input": {"shape": list(input_shape), "frac": dp.choose_frac(in_max)}
    }
    rename = {inp: "input"}
    for lay in fused:
        t = vals[lay.output]
        tname = lay.name.replace(".", "_")
        rename[lay.output] = tname
        shape = _shape(t)[:1] if lay.op == "gap" else _shape(t)
        if opset.get(lay.op).keeps_format:  # cannot rescale: keep the input's format
            frac = tensors[rename[lay.inputs[0]]]["frac"]
        else:
            frac = dp.choose_frac(float(t.abs().max()), HEADROOM)
        tensors[tname] = {"shape": shape, "frac": frac}
    return tensors, rename


def _weighted_entry(
    lay: _Layer, datapath: dp.PEKind, f_in: int, f_out: int
) -> tuple[dict, dict[str, np.ndarray]]:
    """A conv/linear layer's manifest fields (weight_bits, weight_exp, acc_bits, arrays)
    and its arrays: integer weights, batch norm folded into (mult, bias, shift)."""
    ints, e_w, bits, factor = _weights_for(lay, datapath)
    fields = weighted_fields(datapath, bits, ints.shape)
    overflow = dp.accumulator_problem(fields["fan_in"], dp.max_abs_weight(datapath, bits))
    if overflow:
        raise ExportError(f"{lay.name}: {overflow}; refusing to export")
    if lay.bn is None:
        raise ExportError(f"{lay.name}: no batch norm to fold")
    scale, offset = _bn_affine(lay.bn)
    scale = scale * factor  # per-channel weight scales (else 1)
    mult, bias, shift = dp.fold_requant(scale, offset, e_w - f_in, f_out, fields["acc_bound"])
    key = lay.name
    arrays = dict(zip((f"{key}.{r}" for r in ROLES), (ints, mult, bias, shift)))
    entry = {
        "weight_bits": bits,
        "weight_exp": e_w,
        "acc_bits": fields["acc_bits"],
        "arrays": {r: f"{key}.{r}" for r in ROLES},
    }
    return entry, arrays


def _layer_entries(
    fused: list[_Layer], tensors: dict[str, dict], rename: dict[str, str], datapath: dp.PEKind
) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The manifest's ``layers`` and the bundle's arrays."""
    arrays: dict[str, np.ndarray] = {}
    layers: list[dict] = []
    for lay in fused:
        tname = rename[lay.output]
        ins = [rename[i] for i in lay.inputs]
        entry = {
            "name": lay.name,
            "op": lay.op,
            "inputs": ins,
            "output": tname,
            "in_shape": tensors[ins[0]]["shape"],
            "out_shape": tensors[tname]["shape"],
            **lay.attrs,
        }
        if opset.get(lay.op).weighted:
            f_in, f_out = tensors[ins[0]]["frac"], tensors[tname]["frac"]
            fields, arrs = _weighted_entry(lay, datapath, f_in, f_out)
            entry.update(fields)
            arrays.update(arrs)
        layers.append(entry)
    return layers, arrays


def _input_block(input_shape, mean, std) -> dict:
    c, h, w = input_shape
    return {
        "tensor": "input",
        "channels": c,
        "height": h,
        "width": w,
        "mode": "L" if c == 1 else "RGB",
        "mean": list(mean),
        "std": list(std),
        "resize": "stretch",
        "invert": False,
    }


def export(
    ckpt_path: str,
    out_path: str,
    datapath: str = "svpe",
    calib_images: int = 512,
    report_images: int = 256,
    data_dir: str | None = None,
    name: str | None = None,
    log=print,
) -> tuple[Bundle, dict]:
    """Export ``ckpt_path`` to a bundle at ``out_path``; returns (bundle, report)."""
    try:
        pe = dp.PEKind.parse(datapath)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    ck = load_checkpoint(ckpt_path)
    model, cfg = model_from_checkpoint(ck)
    if cfg.act_bits:
        raise ExportError(
            "models with quantized activations (--act-bits) cannot be exported: "
            "the datapath's activations are 16-bit fixed point"
        )
    ds = load_dataset(ck["dataset"], data_dir or cfg.data_dir)
    mean, std = ck["mean"], ck["std"]
    gm = torch.fx.GraphModule(model, _Tracer().trace(model))
    gm.eval()
    fused, inp, outp = fuse_graph(gm)

    # calibration: first images of a fixed permutation of the training split
    perm = np.random.RandomState(1234).permutation(len(ds.train_y))
    calib = normalise(torch.from_numpy(ds.train_x[np.sort(perm[:calib_images])].copy()), mean, std)
    tensors, rename = _tensor_formats(fused, _record(gm, calib), inp, ck["input_shape"], mean, std)
    layers, arrays = _layer_entries(fused, tensors, rename, pe)
    widths = [ly["weight_bits"] for ly in layers if "weight_bits" in ly]
    manifest = {
        "name": name or Path(out_path).name,
        "datapath": pe.value,
        # the bundle's weight width is its widest layer's (docs/datapath.md section 4)
        "weight_bits": max(widths, default=dp.VPE_WEIGHT_BITS),
        "classes": list(ck["classes"]),
        "input": _input_block(ck["input_shape"], mean, std),
        "tensors": tensors,
        "layers": layers,
        "output": rename[outp],
        "provenance": {
            "checkpoint": Path(ckpt_path).name,
            "dataset": ck["dataset"],
            "method": cfg.method,
            "rule": cfg.rule,
            "epochs": cfg.epochs,
            "seed": cfg.seed,
            "calibration_images": calib_images,
            "headroom": HEADROOM,
            "tool": "pynq-nbq export",
        },
    }
    save_bundle(manifest, arrays, out_path)
    bundle = load_bundle(out_path)
    report = layer_report(bundle, gm, rename, ds.train_x[np.sort(perm[-report_images:])], mean, std)
    _print_report(report, log)
    return bundle, report


def layer_report(bundle: Bundle, gm, rename: dict, images_u8: np.ndarray, mean, std) -> dict:
    """Per layer: weight-level histogram, saturation rate, SQNR (dB) of the engine's
    tensor against the torch fake-quant model's on the same images."""
    x = normalise(torch.from_numpy(images_u8.copy()), mean, std)
    ref = _record(gm, x)
    eng = Engine(bundle, "numpy")
    _, env = eng.run(eng.quantize_input(np.ascontiguousarray(images_u8)), keep=True)
    back = {v: k for k, v in rename.items()}
    rows = []
    for layer in bundle.view.layers:
        t = layer.output
        r = ref[back[t]].double().numpy().reshape(env[t].shape[0], -1)
        e = eng.dequantize(t, env[t]).reshape(len(r), -1)
        q = env[t].astype(np.int64)
        noise = float(((r - e) ** 2).sum())
        sqnr = float("inf") if noise == 0 else 10 * math.log10(float((r**2).sum()) / noise)
        row = {
            "name": layer.name,
            "op": layer.op,
            "frac": layer.out_frac,
            "saturation_rate": float(((q == dp.ACT_MAX) | (q == dp.ACT_MIN)).mean()),
            "sqnr_db": sqnr,
        }
        if layer.weighted:
            w = bundle.arrays[layer.array_name("weights")]
            vals, counts = np.unique(w, return_counts=True)
            row["weight_histogram"] = {int(v): int(n) for v, n in zip(vals, counts)}
            row["acc_bits"] = layer.acc_bits
        rows.append(row)
    out = bundle.view.output
    logits_ref = ref[back[out]].numpy().reshape(len(images_u8), -1)
    logits_eng = env[out]
    agree = float((logits_ref.argmax(1) == logits_eng.argmax(1)).mean())
    return {"layers": rows, "top1_agreement": agree, "images": int(len(images_u8))}


def _print_report(report: dict, log) -> None:
    log(f"{'layer':22s} {'op':8s} {'frac':>4s} {'acc':>4s} {'sat %':>7s} {'SQNR dB':>8s}  levels")
    for r in report["layers"]:
        hist = " ".join(f"{k}:{v}" for k, v in r.get("weight_histogram", {}).items())
        if len(hist) > 60:
            hist = f"{len(r['weight_histogram'])} distinct values"
        log(
            f"{r['name']:22s} {r['op']:8s} {r['frac']:4d} {r.get('acc_bits', ''):>4} "
            f"{100 * r['saturation_rate']:7.3f} {r['sqnr_db']:8.1f}  {hist}"
        )
    log(
        f"top-1 agreement engine vs torch on {report['images']} images: "
        f"{100 * report['top1_agreement']:.2f}%"
    )
