"""Run a QONNX graph with a peer's tool and compare it with our engine.

* :func:`qonnx_run` - the ``qonnx`` package's own executor (after its ``cleanup_model``
  and ``InferShapes``), node by node in float32/float64 numpy and ONNX Runtime.
* :func:`hls4ml_model` - hls4ml's conversion of our ``fused`` export, compiled with g++
  (its C++ emulation of the HLS; no Vivado).
* :func:`agreement` - top-1 agreement and logit error in LSBs of the output format.

``qonnx`` and ``hls4ml`` are optional (``pip install pynq-nbq[interop]``) and imported
inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from .. import datapath as dp
from ..bundle import Bundle, array_sha256
from ..engine import Engine


def dequantized_input(engine: Engine, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int16 input, float32 real input ``q * 2**-f_in``) of uint8 pixels (N, C, H, W):
    the graph's input that reproduces the engine's (the pixel table is exact, the
    graph's float normalisation would not be)."""
    q = engine.quantize_input(pixels)
    return q, (q.astype(np.float64) * 2.0**-engine.input_frac).astype(np.float32)


def qonnx_prepare(model: onnx.ModelProto | str | Path):
    """``cleanup_model`` + ``InferShapes`` of the qonnx package (a ``ModelWrapper``)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.cleanup import cleanup_model

    m = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    return cleanup_model(ModelWrapper(m)).transform(InferShapes())


def qonnx_run(model, x: np.ndarray) -> np.ndarray:
    """The graph's output for input ``x`` with qonnx's executor (``execute_onnx``).

    ``model``: a prepared ``ModelWrapper`` (:func:`qonnx_prepare`) whose input batch is
    ``len(x)``."""
    from qonnx.core.onnx_exec import execute_onnx

    iname, oname = model.graph.input[0].name, model.graph.output[0].name
    return execute_onnx(model, {iname: x})[oname]


@dataclass(frozen=True)
class Agreement:
    """Peer logits vs the engine's, both in LSBs of the output format.

    ``top1``: share of images with the same class (argmax, ties to the lowest index);
    ``exact``: share of images whose logits are all identical; ``max_lsb``/``mean_lsb``:
    largest and mean |difference| over all logits; ``off_grid``: largest distance of a
    peer logit from the int16 grid (0 when the peer's last op is a Quant)."""

    images: int
    top1: float
    exact: float
    max_lsb: float
    mean_lsb: float
    off_grid: float

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def agreement(peer_real: np.ndarray, engine_q: np.ndarray, frac: int) -> Agreement:
    """Compare a peer's real logits (N, K) with the engine's int16 logits (N, K) of
    ``frac`` fractional bits."""
    p = np.asarray(peer_real, dtype=np.float64).reshape(engine_q.shape) * 2.0**frac
    d = np.abs(p - engine_q.astype(np.float64))
    return Agreement(
        images=len(engine_q),
        top1=float(np.mean(np.argmax(p, axis=1) == np.argmax(engine_q, axis=1))),
        exact=float(np.mean(np.all(d == 0, axis=1))),
        max_lsb=float(d.max()),
        mean_lsb=float(d.mean()),
        off_grid=float(np.abs(p - np.round(p)).max()),
    )


def engine_logits(bundle: Bundle, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int16 logits, real graph input) of uint8 pixels on the numpy engine."""
    engine = Engine(bundle)
    q, real = dequantized_input(engine, pixels)
    return engine.run(q), real


def fused_bundle(bundle: Bundle) -> Bundle:
    """The bundle whose numbers the ``fused`` export states: every requantisation bias
    replaced by the float32-rounded offset of :func:`qonnx_export.fused_constants`
    (mult and shift unchanged).  Exact integer arithmetic on these numbers is what a
    peer computing the fused graph exactly (hls4ml's fixed point) must reproduce.
    Raises ValueError if an offset is not a whole number of the layer's 2**-shift units
    (it then has no bundle form)."""
    from ..bundle import validate
    from .qonnx_export import fused_constants, weight_format

    arrays = dict(bundle.arrays)
    for layer in bundle.view.layers:
        if not layer.weighted:
            continue
        arrs = bundle.layer_arrays(layer)
        shift = arrs["shift"]
        acc_exp = layer.in_fracs[0] - weight_format(layer)[1]
        _, b = fused_constants(arrs["mult"], arrs["bias"], shift, acc_exp, layer.out_frac)
        total = b.astype(np.float64) * 2.0 ** (shift + layer.out_frac).astype(np.float64)
        if np.any(total != np.round(total)) or np.abs(total).max() >= dp.FLOAT64_EXACT:
            raise ValueError(f"{layer.name}: the float32 offset is not a whole bias")
        arrays[layer.array_name("bias")] = total.astype(np.int64) - dp.half(shift)
    copy = Bundle(bundle.manifest, arrays, None)
    copy.manifest = {**bundle.manifest, "arrays": {
        k: {**v, "sha256": array_sha256(arrays[k])} for k, v in bundle.manifest["arrays"].items()
    }}  # fmt: skip
    validate(copy)
    return copy


# --- hls4ml -------------------------------------------------------------------------------------
def exact_fixed(values: np.ndarray) -> tuple[int, int]:
    """(width, integer bits) of the narrowest signed fixed-point type that holds every
    value of ``values`` exactly (binary floats: finitely many bits each)."""
    v = np.abs(np.asarray(values, dtype=np.float64).ravel())
    v = v[v != 0]
    if v.size == 0:
        return 2, 1
    mant, exp = np.frexp(v)  # v = mant * 2**exp, mant in [0.5, 1)
    m = (mant * 2.0**53).astype(np.int64)
    low = np.array([(int(x) & -int(x)).bit_length() - 1 for x in m]) + exp - 53  # lsb exponent
    integer = int(exp.max()) + 1  # |v| < 2**exp.max(); one more bit for the sign
    return integer - int(low.min()), integer


def _hls4ml_graph(bundle: Bundle):
    """Our ``fused`` export prepared for hls4ml's ONNX front end (a qonnx ModelWrapper).

    qonnx's channels-last conversion and Gemm -> MatMul; per-channel constants lose
    their batch axis (hls4ml broadcasts without it); a half-LSB ``Add`` before a FLOOR
    ``Quant`` (gap, align) becomes a ROUND ``Quant`` whose rounding is then set to
    round half up (``RND``) in hls4ml; the final ``Flatten`` goes (hls4ml's io_stream
    output cannot end in one; predict() returns flat rows anyway).  Returns the model
    and the names of the Quant nodes that must round half up."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    from .qonnx_export import export_qonnx

    m = cleanup_model(ModelWrapper(export_qonnx(bundle, "fused", batch=1)))
    m = cleanup_model(m.transform(ConvertToChannelsLastAndClean()).transform(GemmToMatMul()))
    g = m.graph
    for node in g.node:
        if node.op_type in ("Mul", "Add"):
            for name in node.input:
                v = m.get_initializer(name)
                if v is not None and v.ndim == 4 and v.shape[0] == 1:
                    m.set_initializer(name, v.reshape(v.shape[1:]))
    half_up: list[str] = []
    for node in list(g.node):
        c = m.get_initializer(node.input[1]) if node.op_type == "Add" else None
        q = m.find_consumer(node.output[0]) if c is not None else None
        if c is None or q is None or q.op_type != "Quant" or c.size != 1:
            continue
        scale = float(m.get_initializer(q.input[1]))
        if float(c) != scale / 2:
            continue
        q.input[0] = node.input[0]
        for a in q.attribute:
            if a.name == "rounding_mode":
                a.s = b"ROUND"
        g.node.remove(node)
        half_up.append(q.name)
    last = g.node[-1]
    if last.op_type == "Flatten" and last.output[0] == g.output[0].name:
        vi = m.get_tensor_valueinfo(last.input[0])
        g.value_info.remove(vi)
        g.output.remove(g.output[0])
        g.output.append(vi)
        g.node.remove(last)
    return cleanup_model(m), half_up


#: the global pool's sum and mean in hls4ml (configure=True): 48 bits, 24 of them integer
POOL_SUM = (48, 24)


def _fixed(width: int, integer: int, rounding: str = "TRN", saturation: str = "WRAP") -> str:
    return f"fixed<{width},{integer},{rounding},{saturation}>"


def _exact_precisions(model, layers: dict, input_frac: int) -> None:
    """Per-node hls4ml precisions (``LayerName`` config) that the graph implies exactly."""
    layers[model.graph.input[0].name]["Precision"]["result"] = _fixed(
        dp.ACT_BITS, dp.ACT_BITS - input_frac, "RND", "SAT"
    )
    consts = {}
    for node in model.graph.node:
        if node.op_type in ("Mul", "Add"):
            vals = [model.get_initializer(i) for i in node.input]
            consts[node.name] = next((v for v in vals if v is not None), None)
    for node in model.graph.node:
        conf = layers.get(node.name)
        if conf is None:
            continue
        scale = consts.get(node.name)
        if node.op_type == "Mul" and scale is not None:
            # hls4ml folds Mul (scale) and the Add after it (offset) into one ApplyAlpha
            # that takes either node's config: state both types on both
            add = model.find_consumer(node.output[0])
            pair = [node] + ([add] if add is not None and add.op_type == "Add" else [])
            offset = consts.get(add.name) if len(pair) == 2 else None
            for n in pair:
                prec = layers.get(n.name, {}).setdefault("Precision", {})
                prec["scale"] = _fixed(*exact_fixed(scale))
                if offset is not None:
                    prec["bias"] = _fixed(*exact_fixed(offset))
        if node.op_type == "GlobalAveragePool":
            conf["Precision"]["accum"] = _fixed(*POOL_SUM)
            conf["Precision"]["result"] = _fixed(*POOL_SUM)


def hls4ml_model(
    bundle: Bundle,
    output_dir: str | Path,
    io_type: str = "io_stream",
    backend: str = "Vitis",
    configure: bool = True,
):
    """hls4ml's model of our exported bundle, compiled (g++) and ready to ``predict``.

    ``configure=False`` keeps hls4ml's defaults: ``default_precision`` fixed<16,6>
    wherever the graph states no format - the folded requantisation's scale and offset
    constants, the input layer, the global pool's accumulator (on the fmnist export its
    compiled emulation then died with SIGILL in ``predict``).  ``configure=True`` states
    what the graph implies (``docs/interop.md``): the input layer in the input's format
    (round, saturate); each ``Mul``/``Add`` constant pair in the narrowest fixed-point
    types that hold it exactly (:func:`exact_fixed`; hls4ml folds the pair into one
    ``ApplyAlpha`` and infers its result width itself); the global pool's accumulator and
    result :data:`POOL_SUM`; ap_fixed's ``RND`` (round half up) for the Quants our graph
    rounds half up (hls4ml maps ROUND to ``RND_CONV``, half to even); and it removes the
    channels-first ``Transpose`` qonnx leaves before a global pool (hls4ml's pool reads
    channels-last).  Mapped: conv/linear chains, max-pools and a final global average
    pool (the shipped models); other bundle ops are not tried here.
    """
    import hls4ml
    from hls4ml.model.types import RoundingMode

    model, half_up = _hls4ml_graph(bundle)
    cfg = hls4ml.utils.config.config_from_onnx_model(
        model, granularity="name", backend=backend, default_precision="fixed<16,6>"
    )
    if configure:
        _exact_precisions(model, cfg["LayerName"], bundle.view.input_frac)
    hm = hls4ml.converters.convert_from_onnx_model(
        model, output_dir=str(output_dir), io_type=io_type, backend=backend, hls_config=cfg
    )
    if configure:
        for layer in list(hm.get_layers()):
            if any(layer.name.startswith(q) for q in half_up):
                layer.get_output_variable().type.precision.rounding_mode = RoundingMode.RND
            if layer.class_name == "Transpose":
                users = [n for n in hm.get_layers() if layer.outputs[0] in n.inputs]
                if users and users[0].class_name == "GlobalPooling2D":
                    hm.remove_node(layer)
        hm.apply_flow(f"{backend.lower()}:apply_templates", reapply="single")
    hm.compile()
    return hm
