#!/usr/bin/env python
"""Why the fast engine is a C kernel: the candidates of issue 16 on the same layers.

For conv layers of the embedded svpe bundle, at batch 64, on one thread, in one
process, interleaved (``--rounds`` rounds, each timing every candidate in turn):

* ``numpy``: the reference :func:`pynq_nbq.ops.conv_layer` (float64 matrix products);
* ``native``: :func:`pynq_nbq.native.conv_layer` (the C kernel, int16 x int16 -> int32);
* ``ort``: onnxruntime ``ConvInteger`` (uint8 x int8 -> int32, MLAS's VNNI kernels)
  twice, on the int16 activations split into a signed high byte and an unsigned low
  byte (``x = 256*xh + xl``; ``xh`` stored as uint8 with zero point 128), the two
  accumulators combined in int64 (``256*acc_h + acc_l``), then requantised, ReLU'd,
  saturated and pooled in numpy (:func:`pynq_nbq.datapath.requantize`);
* ``ort-conv-only``: the two ``ConvInteger`` calls alone (a lower bound on that
  design: the layout transposes and requantisation cost extra);
* ``ort-matmul-only``: the two byte halves as ``MatMulInteger`` (uint8 x int8 ->
  int32) on column matrices built beforehand (a lower bound on an im2col design:
  building the columns, combining and requantising cost extra).

All candidates are checked equal to the reference first.  Needs ``onnxruntime``
and ``onnx`` (``pip install onnxruntime onnx``).

    python -m experiments.bench_candidates
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

from pynq_nbq import api, native, ops  # noqa: E402
from pynq_nbq import datapath as dp  # noqa: E402
from scripts.bench_engine import machine  # noqa: E402


def ort_session(spec: ops.ConvSpec, zero_point: int):
    """An onnxruntime session: ConvInteger(uint8 NCHW x with this zero point) with the
    layer's int8 weights (OIHW), int32 output, one thread."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    if np.abs(spec.weights).max() > 127:
        raise ValueError(f"{spec.name}: weights do not fit int8")
    w = numpy_helper.from_array(spec.weights.astype(np.int8), "w")
    zp = numpy_helper.from_array(np.array(zero_point, np.uint8), "xzp")
    node = helper.make_node(
        "ConvInteger",
        ["x", "w", "xzp"],
        ["y"],
        pads=[spec.padding] * 4,
        strides=[spec.stride] * 2,
        kernel_shape=[spec.kernel] * 2,
    )
    graph = helper.make_graph(
        [node],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, None)],
        [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
        [w, zp],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def ort_matmul(spec: ops.ConvSpec, x: np.ndarray):
    """A callable: the two MatMulInteger products of ``x``'s byte halves (columns built
    here, outside the timed call), one thread."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    k = spec.kernel
    wm = spec.weights.transpose(2, 3, 1, 0).reshape(-1, spec.out_channels).astype(np.int8)
    node = helper.make_node("MatMulInteger", ["a", "b", "azp"], ["y"])
    graph = helper.make_graph(
        [node],
        "mm",
        [
            helper.make_tensor_value_info("a", TensorProto.UINT8, None),
            helper.make_tensor_value_info("azp", TensorProto.UINT8, None),
        ],
        [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
        [numpy_helper.from_array(wm, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    cols = ops.im2col(x, k, spec.stride, spec.padding).reshape(-1, wm.shape[0])
    hi = ((cols >> 8) + 128).astype(np.uint8)
    lo = (cols & 255).astype(np.uint8)
    z128, z0 = np.array(128, np.uint8), np.array(0, np.uint8)

    def run() -> None:
        sess.run(None, {"a": hi, "azp": z128})
        sess.run(None, {"a": lo, "azp": z0})

    return run


def ort_layer(spec: ops.ConvSpec, conv_only: bool = False):
    """int16 NHWC -> the layer via two uint8 ConvInteger calls (see the module docstring)."""

    sess_hi, sess_lo = ort_session(spec, 128), ort_session(spec, 0)

    def run(x: np.ndarray) -> np.ndarray | None:
        xc = x.transpose(0, 3, 1, 2)
        hi = ((xc >> 8) + 128).astype(np.uint8)  # signed high byte, zero point 128
        lo = (xc & 255).astype(np.uint8)  # unsigned low byte, zero point 0
        a_hi = sess_hi.run(None, {"x": hi})[0]
        a_lo = sess_lo.run(None, {"x": lo})[0]
        if conv_only:
            return None
        acc = 256 * a_hi.astype(np.int64) + a_lo
        y = dp.requantize(acc.transpose(0, 2, 3, 1), spec.mult, spec.bias, spec.shift, spec.relu)
        return ops.maxpool(y) if spec.pool else y

    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="fmnist-svpe")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")
    model = api.load_model(args.model, "numpy")
    shape = model.bundle.tensors[model.engine.input_name]["shape"]
    x = np.random.default_rng(0).standard_normal((args.batch, *shape)).astype(np.float32)
    _, env = model.engine.run(model.engine.quantize_input(x), keep=True)
    res: dict = {"machine": machine(), "batch": args.batch, "threads": 1, "layers": {}}
    res["native_kernel"] = native.library().isa
    for step in model.engine.steps:
        spec = step.spec
        if spec is None or spec.fan_in < 100:
            continue
        xi = env[step.layer.inputs[0]]
        full, conv_only = ort_layer(spec), ort_layer(spec, True)
        cands = {
            "numpy": lambda xi=xi, s=spec: ops.conv_layer(xi, s),
            "native": lambda xi=xi, s=spec: native.conv_layer(xi, s),
            "ort": lambda xi=xi, f=full: f(xi),
            "ort-conv-only": lambda xi=xi, f=conv_only: f(xi),
            "ort-matmul-only": ort_matmul(spec, xi),
        }
        want = ops.conv_layer(xi, spec)
        for name in ("native", "ort"):
            if not np.array_equal(cands[name](), want):
                raise SystemExit(f"{spec.name}: {name} differs from the reference")
        times: dict[str, list[float]] = {k: [] for k in cands}
        for _ in range(args.rounds):
            for name, fn in cands.items():
                n, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < args.seconds:
                    fn()
                    n += 1
                times[name].append((time.perf_counter() - t0) / n)
        med = {k: float(np.median(v)) for k, v in times.items()}
        res["layers"][spec.name] = {
            "ms": {k: 1e3 * v for k, v in med.items()},
            "speedup_over_numpy": {k: med["numpy"] / v for k, v in med.items()},
        }
        print(
            f"{spec.name:12s} "
            + "  ".join(f"{k} {1e3 * v:7.2f} ms" for k, v in med.items())
            + f"  (native/ort {med['ort'] / med['native']:.1f}x faster)",
            file=sys.stderr,
        )
    res["machine"]["load_average_end"] = list(__import__("os").getloadavg())
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
