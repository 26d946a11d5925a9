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
import operator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.fx
from torch import nn

from pynq_nbq import datapath as dp
from pynq_nbq import opset
from pynq_nbq.bundle import ROLES, Bundle, load_bundle, save_bundle, weighted_fields
from pynq_nbq.engine import Engine
from pynq_nbq.errors import NbqError

from . import layers as L
from .data import load_dataset
from .train import load_checkpoint, model_from_checkpoint, normalise

#: fractional-bit headroom over the calibration maximum (x2 = one spare bit)
HEADROOM = 2.0


class ExportError(NbqError):
    """The model cannot be expressed in the datapath; the message says why."""


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, L.PowerOfTwoMixin):
            return True
        return super().is_leaf_module(m, qualname)


@dataclass
class _Layer:
    """A datapath layer under construction."""

    name: str
    op: str
    inputs: list[str]
    output: str  # fx node name of the tensor the layer produces
    attrs: dict
    module: nn.Module | None = None
    bn: nn.Module | None = None


def _users(node: torch.fx.Node) -> list[torch.fx.Node]:
    return list(node.users)


def _single_user(node, pred) -> torch.fx.Node | None:
    us = _users(node)
    return us[0] if len(us) == 1 and pred(us[0]) else None


def _first(v):
    """A PyTorch size argument's first element (an int or a tuple)."""
    return v if isinstance(v, int) else v[0]


class _FuseContext:
    """The state of :func:`fuse_graph`: the traced modules, the layers built so far, the
    nodes already folded into a layer, and fx names that alias another tensor.

    A graph handler (``handler(ctx, node) -> bool``; the built-in ones below, or an op's
    ``opset.OpSpec.export`` hook) appends to ``layers``, marks folded nodes ``consumed``
    and returns True when it took the node."""

    def __init__(self, gm: torch.fx.GraphModule) -> None:
        self.mods = dict(gm.named_modules())
        self.alias: dict[str, str] = {}
        self.consumed: set[str] = set()
        self.layers: list[_Layer] = []

    def is_mod(self, n: torch.fx.Node, cls) -> bool:
        return n.op == "call_module" and isinstance(self.mods[n.target], cls)

    def is_relu(self, n: torch.fx.Node) -> bool:
        return self.is_mod(n, nn.ReLU) or (
            n.op == "call_function" and n.target in (torch.relu, torch.nn.functional.relu)
        )

    def is_pool2(self, n: torch.fx.Node) -> bool:
        """A 2x2, stride 2, unpadded floor-mode max-pool (the conv's fused pool)."""
        if not self.is_mod(n, nn.MaxPool2d):
            return False
        p = self.mods[n.target]
        return (_first(p.kernel_size), _first(p.stride), _first(p.padding)) == (2, 2, 0) and (
            not p.ceil_mode
        )

    def is_flatten(self, n: torch.fx.Node) -> bool:
        return self.is_mod(n, nn.Flatten) or (n.op == "call_function" and n.target is torch.flatten)

    def src(self, n: torch.fx.Node) -> str:
        """The tensor that holds node ``n``'s value."""
        return self.alias.get(n.name, n.name)

    def fold_relu(self, node: torch.fx.Node) -> torch.fx.Node | None:
        """The ReLU that is ``node``'s only user (marked consumed), or None."""
        relu = _single_user(node, self.is_relu)
        if relu is not None:
            self.consumed.add(relu.name)
        return relu


def _power_of_two_layer(ctx: _FuseContext, node: torch.fx.Node) -> bool:
    """conv/linear + its batch norm (+ ReLU) (+ a fused 2x2/2 max-pool)."""
    if node.op != "call_module" or not isinstance(ctx.mods[node.target], L.PowerOfTwoMixin):
        return False
    m = ctx.mods[node.target]
    is_conv = isinstance(m, nn.Conv2d)
    bn_cls = nn.BatchNorm2d if is_conv else nn.BatchNorm1d
    bn = _single_user(node, lambda u: ctx.is_mod(u, bn_cls))
    if bn is None:
        raise ExportError(
            f"{node.target}: a batch norm must follow every "
            "power-of-two layer (and be its only user)"
        )
    ctx.consumed.add(bn.name)
    relu = ctx.fold_relu(bn)
    last = relu or bn
    attrs: dict = {"relu": relu is not None}
    if is_conv:
        pool = _single_user(last, ctx.is_pool2)
        if pool is not None:
            ctx.consumed.add(pool.name)
            last = pool
        attrs.update(
            kernel=m.kernel_size[0],
            stride=m.stride[0],
            padding=m.padding[0],
            groups=m.groups,
            pool=2 if pool is not None else 0,
        )
    op = "conv" if is_conv else "linear"
    src = [ctx.src(node.args[0])]
    ctx.layers.append(_Layer(node.target, op, src, last.name, attrs, m, ctx.mods[bn.target]))
    return True


def _add(ctx: _FuseContext, node: torch.fx.Node) -> bool:
    if node.op != "call_function" or node.target not in (operator.add, torch.add):
        return False
    args = [a for a in node.args if isinstance(a, torch.fx.Node)]
    if len(args) != 2 or len(node.args) != 2:
        raise ExportError(f"{node.name}: only tensor + tensor additions are supported")
    relu = ctx.fold_relu(node)
    out = (relu or node).name
    ins = [ctx.src(a) for a in args]
    ctx.layers.append(_Layer(node.name, "add", ins, out, {"relu": relu is not None}))
    return True


def _concat(ctx: _FuseContext, node: torch.fx.Node) -> bool:
    if node.op != "call_function" or node.target is not torch.cat:
        return False
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    if dim != 1:
        raise ExportError(f"{node.name}: only channel concatenation (dim=1) is supported")
    ins = [ctx.src(a) for a in node.args[0]]
    ctx.layers.append(_Layer(node.name, "concat", ins, node.name, {}))
    return True


def _maxpool(ctx: _FuseContext, node: torch.fx.Node) -> bool:
    if not ctx.is_mod(node, nn.MaxPool2d):
        return False
    p = ctx.mods[node.target]
    if _first(p.padding) or p.ceil_mode or p.dilation not in (1, (1, 1)):
        raise ExportError(f"{node.target}: max-pool padding/ceil/dilation unsupported")
    attrs = {"kernel": _first(p.kernel_size), "stride": _first(p.stride)}
    ctx.layers.append(_Layer(node.target, "maxpool", [ctx.src(node.args[0])], node.name, attrs))
    return True


def _gap(ctx: _FuseContext, node: torch.fx.Node) -> bool:
    """Global average pooling; a flatten right after it is an alias (gap yields [C])."""
    if not ctx.is_mod(node, nn.AdaptiveAvgPool2d):
        return False
    if ctx.mods[node.target].output_size not in (1, (1, 1)):
        raise ExportError(f"{node.target}: only global average pooling is supported")
    ctx.layers.append(_Layer(node.target, "gap", [ctx.src(node.args[0])], node.name, {}))
    flat = _single_user(node, ctx.is_flatten)
    if flat is not None:
        ctx.consumed.add(flat.name)
        ctx.alias[flat.name] = node.name
    return True


def _flatten(ctx: _FuseContext, node: torch.fx.Node) -> bool:
    if not ctx.is_flatten(node):
        return False
    ctx.layers.append(_Layer(node.name, "flatten", [ctx.src(node.args[0])], node.name, {}))
    return True


def _identity(ctx: _FuseContext, node: torch.fx.Node) -> bool:
    """Dropout and Identity vanish: their output aliases their input."""
    if not (ctx.is_mod(node, nn.Dropout) or ctx.is_mod(node, nn.Identity)):
        return False
    ctx.alias[node.name] = ctx.src(node.args[0])
    return True


#: the built-in graph handlers, tried in order after the ops' own ``export`` hooks
HANDLERS = (_power_of_two_layer, _add, _concat, _maxpool, _gap, _flatten, _identity)


def _handlers() -> list:
    """The registered ops' export hooks (``opset.OpSpec.export``), then :data:`HANDLERS`."""
    hooks = [opset.get(name).export for name in opset.names()]
    return [h for h in hooks if h is not None] + list(HANDLERS)


def _no_handler(ctx: _FuseContext, node: torch.fx.Node) -> ExportError:
    if ctx.is_relu(node):
        return ExportError(f"{node.name}: a ReLU must directly follow a batch norm or an add")
    what = node.target if node.op == "call_module" else getattr(node.target, "__name__", node)
    return ExportError(f"{node.name}: operation {what!r} ({node.op}) has no datapath form")


def fuse_graph(gm: torch.fx.GraphModule) -> tuple[list[_Layer], str, str]:
    """Datapath layers of a traced model: (layers, input node name, output node name).

    Each node goes to the first graph handler that takes it (:func:`_handlers`); a node
    no handler takes is refused, naming it."""
    ctx = _FuseContext(gm)
    handlers = _handlers()
    inp = out = None
    for node in gm.graph.nodes:
        if node.name in ctx.consumed:
            continue
        if node.op == "placeholder":
            if inp is not None:
                raise ExportError("the model must take exactly one input")
            inp = node.name
        elif node.op == "output":
            out = ctx.src(node.args[0])
        elif not any(handler(ctx, node) for handler in handlers):
            raise _no_handler(ctx, node)
    if inp is None or out is None:
        raise ExportError("the traced model has no input or output")
    unknown = sorted({lay.op for lay in ctx.layers} - set(opset.names()))
    if unknown:
        raise ExportError(f"graph handlers produced ops the datapath has not registered: {unknown}")
    return ctx.layers, inp, out


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
    channel with the largest exponent and ``factor[c] = 2**(e_c - max e) <= 1``, which
    :func:`export` multiplies into batch norm's per-channel scale, so that it lands in
    the requantisation multiplier/shift (exactly: a power of two only moves the shift).
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
        e_top = int(e.max())
        factor = np.ldexp(1.0, (e - e_top).numpy().astype(np.int64))
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
        datapath = dp.PEKind.parse(datapath)
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
    vals = _record(gm, calib)
    c, h, w = ck["input_shape"]
    lo = (0.0 - np.array(mean)) / np.array(std)
    hi = (1.0 - np.array(mean)) / np.array(std)
    in_max = float(max(np.abs(lo).max(), np.abs(hi).max()))
    tensors: dict[str, dict] = {"input": {"shape": [c, h, w], "frac": dp.choose_frac(in_max)}}
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
            ints, e_w, bits, factor = _weights_for(lay, datapath)
            fields = weighted_fields(datapath, bits, ints.shape)
            overflow = dp.accumulator_problem(fields["fan_in"], dp.max_abs_weight(datapath, bits))
            if overflow:
                raise ExportError(f"{lay.name}: {overflow}; refusing to export")
            scale, offset = _bn_affine(lay.bn)
            scale = scale * factor  # per-channel power-of-two weight scales (else 1)
            f_in = tensors[ins[0]]["frac"]
            mult, bias, shift = dp.fold_requant(
                scale, offset, e_w - f_in, tensors[tname]["frac"], fields["acc_bound"]
            )
            key = lay.name
            arrays.update(
                {
                    f"{key}.weights": ints,
                    f"{key}.mult": mult,
                    f"{key}.bias": bias,
                    f"{key}.shift": shift,
                }
            )
            entry.update(
                weight_bits=bits,
                weight_exp=e_w,
                acc_bits=fields["acc_bits"],
                arrays={r: f"{key}.{r}" for r in ROLES},
            )
        layers.append(entry)

    manifest = {
        "name": name or Path(out_path).name,
        "datapath": datapath.value,
        "weight_bits": (ck["config"]["bits"] if datapath is dp.PEKind.SVPE else dp.VPE_WEIGHT_BITS),
        "classes": list(ck["classes"]),
        "input": {
            "tensor": "input",
            "channels": c,
            "height": h,
            "width": w,
            "mode": "L" if c == 1 else "RGB",
            "mean": list(mean),
            "std": list(std),
            "resize": "stretch",
            "invert": False,
        },
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
    if datapath is dp.PEKind.SVPE:
        bits_used = {ly["weight_bits"] for ly in layers if "weight_bits" in ly}
        if len(bits_used) > 1:
            manifest["weight_bits"] = max(bits_used)
    bundle = save_bundle(manifest, arrays, out_path)
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
    for layer in bundle.layers:
        t = layer["output"]
        r = ref[back[t]].double().numpy().reshape(env[t].shape[0], -1)
        e = eng.dequantize(t, env[t]).reshape(len(r), -1)
        q = env[t].astype(np.int64)
        noise = float(((r - e) ** 2).sum())
        sqnr = float("inf") if noise == 0 else 10 * math.log10(float((r**2).sum()) / noise)
        row = {
            "name": layer["name"],
            "op": layer["op"],
            "frac": bundle.tensors[t]["frac"],
            "saturation_rate": float(((q == dp.ACT_MAX) | (q == dp.ACT_MIN)).mean()),
            "sqnr_db": sqnr,
        }
        if layer["op"] in ("conv", "linear"):
            w = bundle.arrays[layer["arrays"]["weights"]]
            vals, counts = np.unique(w, return_counts=True)
            row["weight_histogram"] = {int(v): int(n) for v, n in zip(vals, counts)}
            row["acc_bits"] = layer["acc_bits"]
        rows.append(row)
    logits_ref = ref[back[bundle.manifest["output"]]].numpy().reshape(len(images_u8), -1)
    logits_eng = env[bundle.manifest["output"]]
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
