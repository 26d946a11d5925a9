"""The runtimes a user would pick instead of the exact engine, built from the same checkpoint.

Used by ``scripts/bench_engine.py``; each builder returns a callable factory
``make(x_float32_nchw) -> zero-argument callable running one batch`` and a
``predict(x) -> logits`` for agreement and accuracy, or raises :class:`Unavailable`
naming what is missing:

* :func:`ort_fp32`: ONNX Runtime, fp32, the checkpoint exported to ONNX (BatchNorm
  folded by the exporter), all graph optimisations on;
* :func:`ort_int8`: ONNX Runtime int8, QOperator format (QLinearConv), weights int8
  per channel, activations uint8, static quantisation calibrated on
  ``calibration`` training images (MinMax);
* :func:`torch_int8`: PyTorch int8 post-training quantisation, FX graph mode, the
  ``x86`` backend and its default qconfig (conv + BatchNorm + ReLU fused), the same
  calibration images;
* :func:`int16_peak`: this CPU's int16 multiply-accumulate peak (``peak_int16.c``,
  built with the machine's compiler at run time), in G MAC/s.

Every network is the checkpoint the bundle was exported from with the staircase
weights baked in (:func:`float_net`): the same function as the PyTorch fp32 contender.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

PEAK_SOURCE = Path(__file__).resolve().parent / "peak_int16.c"


class Unavailable(RuntimeError):
    """A contender cannot run here (a package is missing, the CPU lacks the instructions)."""


def float_net(checkpoint: Path):
    """The checkpoint as a plain fp32 torch network in eval mode: every power-of-two
    layer replaced by an ordinary ``nn.Conv2d``/``nn.Linear`` holding its staircase
    weights (what the bundle's integers came from)."""
    import torch
    from torch import nn

    from host_train import layers as L
    from host_train.train import load_checkpoint, model_from_checkpoint

    net, _ = model_from_checkpoint(load_checkpoint(checkpoint))
    with torch.no_grad():
        for name, m in L.pow2_layers(net):
            w = m.effective_weight().detach().clone()
            if isinstance(m, nn.Conv2d):
                plain = nn.Conv2d(
                    m.in_channels,
                    m.out_channels,
                    m.kernel_size,
                    m.stride,
                    m.padding,
                    m.dilation,
                    m.groups,
                    bias=m.bias is not None,
                )
            else:
                plain = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
            plain.weight.copy_(w)
            if m.bias is not None:
                plain.bias.copy_(m.bias)
            parent = net.get_submodule(name.rpartition(".")[0]) if "." in name else net
            setattr(parent, name.rpartition(".")[2], plain)
    return net.eval()


def _onnx_bytes(net, shape: tuple[int, ...]) -> bytes:
    """``net`` exported to ONNX (TorchScript exporter, opset 17, dynamic batch)."""
    import torch

    f = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            net,
            torch.zeros(1, *shape),
            f,
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
            opset_version=17,
        )
    return f.getvalue()


def _ort():
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError as exc:
        raise Unavailable(
            f"onnxruntime/onnx not installed ({exc}); `pip install -e .[bench]`"
        ) from exc
    return onnxruntime


def _session(model: bytes, threads: int):
    ort = _ort()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def _ort_runner(sess):
    def make(x: np.ndarray) -> Callable[[], object]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        return lambda: sess.run(None, {"x": x})

    def predict(x: np.ndarray) -> np.ndarray:
        return sess.run(None, {"x": np.ascontiguousarray(x, dtype=np.float32)})[0]

    return make, predict


def ort_fp32(net, shape: tuple[int, ...], threads: int):
    """ONNX Runtime fp32 of ``net`` (see the module docstring): (make, predict)."""
    _ort()
    return _ort_runner(_session(_onnx_bytes(net, shape), threads))


def ort_int8(net, shape: tuple[int, ...], threads: int, calibration: np.ndarray):
    """ONNX Runtime int8 (QOperator, per-channel int8 weights, uint8 activations,
    static MinMax calibration on ``calibration``, float32 NCHW): (make, predict)."""
    _ort()
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(np.array_split(calibration.astype(np.float32), 8))

        def get_next(self):
            b = next(self.batches, None)
            return None if b is None else {"x": b}

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(_onnx_bytes(net, shape))
        quantize_static(
            str(src),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QOperator,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        model = dst.read_bytes()
    return _ort_runner(_session(model, threads))


def torch_int8(net, shape: tuple[int, ...], threads: int, calibration: np.ndarray):
    """PyTorch int8 PTQ (FX graph mode, ``x86`` backend, its default qconfig mapping),
    calibrated on ``calibration`` (float32 NCHW): (make, predict)."""
    import copy

    import torch

    try:
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    except ImportError as exc:
        raise Unavailable(f"torch.ao.quantization unavailable ({exc})") from exc
    if "x86" not in torch.backends.quantized.supported_engines:
        raise Unavailable("this torch has no x86 quantized engine")
    torch.backends.quantized.engine = "x86"
    example = (torch.zeros(1, *shape),)
    prepared = prepare_fx(copy.deepcopy(net).eval(), get_default_qconfig_mapping("x86"), example)
    with torch.inference_mode():
        for b in np.array_split(calibration.astype(np.float32), 8):
            prepared(torch.from_numpy(b))
    qnet = convert_fx(prepared).eval()

    def run(xt):
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        with torch.inference_mode():
            return qnet(xt)

    def make(x: np.ndarray) -> Callable[[], object]:
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        return lambda: run(xt)

    def predict(x: np.ndarray) -> np.ndarray:
        return run(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

    return make, predict


class Int16Peak:
    """This CPU's measured int16 multiply-accumulate peak (``peak_int16.c``).

    Built once per process into a temporary directory with ``$CC``/``cc``/``gcc``
    (``-O2 -march=native -pthread``); Unavailable without a compiler or without
    AVX2.  :meth:`measure` returns G MAC/s over all ``threads`` threads.
    """

    def __init__(self) -> None:
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            raise Unavailable("no C compiler for the int16 peak microbenchmark")
        self._dir = tempfile.TemporaryDirectory(prefix="nbq-peak-")
        self.exe = Path(self._dir.name) / "peak_int16"
        cmd = [cc, "-O2", "-march=native", "-pthread", str(PEAK_SOURCE), "-o", str(self.exe)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise Unavailable(f"int16 peak microbenchmark did not build: {res.stderr[-300:]}")
        self.instruction = self._run(1, 0.01)[0]

    def _run(self, threads: int, seconds: float) -> tuple[str, float]:
        out = subprocess.run(
            [str(self.exe), str(threads), str(seconds)], capture_output=True, text=True, check=True
        ).stdout.split()
        return out[0], float(out[2])

    def measure(self, threads: int, seconds: float) -> float:
        """G multiply-accumulates per second of ``threads`` threads over ``seconds``."""
        return self._run(threads, seconds)[1]
