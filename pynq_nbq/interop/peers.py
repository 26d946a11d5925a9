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
from ..bundle import Bundle
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


def saturating_int16(real: np.ndarray, frac: int) -> np.ndarray:
    """Real values on the int16 grid of ``frac`` -> int16 (for peers' outputs)."""
    return dp.saturate(np.round(np.asarray(real, dtype=np.float64) * 2.0**frac))
