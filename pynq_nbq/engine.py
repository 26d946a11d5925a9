"""The host-side engine: runs a bundle layer by layer, in integers, on a backend.

It decides which layers go to the conv engine (the backend's ``run_conv``) and
which run on the ARM cores (numpy, :mod:`pynq_nbq.ops`), following
``docs/datapath.md`` section 3.  Feature maps travel as int16 NHWC arrays.

    engine = Engine(load_bundle(path), backend="numpy")
    logits_q = engine.run(engine.quantize_input(batch_nchw_float))

With ``threads=T > 1`` a batch is split into up to T shards that run the whole
network side by side in a thread pool (numpy releases the GIL in its matrix
products, copies and ufuncs); each image still goes through exactly the same
integer operations, so the logits are identical.  Pair it with a one-thread BLAS
(:func:`pynq_nbq.blas.limit_blas_threads`), or the shards' BLAS threads compete.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import cast

import numpy as np

from . import datapath as dp
from . import ops, opset
from .backends import (
    ArmBackend,
    Backend,
    CheckingBackend,
    NetworkBackend,
    capabilities_of,
    get_backend,
)
from .bundle import Bundle, LayerSpec

CONV_ENGINE = "conv-engine"
ARM = "arm"


@dataclass
class Step:
    """One compiled layer: its parsed description, where it runs, its op's entry in
    :mod:`pynq_nbq.opset`, and for conv/linear the integer weights and requantisation
    (:class:`ops.ConvSpec`) and the call that runs them on the layer's placement."""

    layer: LayerSpec
    placement: str
    op: opset.OpSpec
    spec: ops.ConvSpec | None = None
    conv: opset.ConvCall | None = None


class Engine:
    """Integer inference of a validated :class:`Bundle` on a backend.

    ``run`` takes the quantized input (int16, N x C x H x W) and returns the int16
    logits (N x classes) with ``self.output_frac`` fractional bits; ``run(...,
    keep=True)`` also returns every tensor (NHWC or N x C) by name.  ``timings``
    after a run holds seconds per placement (with shards: the mean over shards,
    which ran at the same time).

    ``threads``: worker threads a batch is split over (1 = run in the caller's
    thread).  Only backends that declare ``Capabilities.thread_safe`` are split; ``run``
    with ``keep=True`` always runs unsplit.

    ``on_layer``: None, or ``callable(name, placement, seconds)`` called after every
    layer of every shard (from the shard's thread) - the profiling hook ``nbq bench``
    uses for per-layer times.  Unused, it costs one attribute test per layer.
    """

    def __init__(self, bundle: Bundle, backend: str | Backend = "numpy", threads: int = 1) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.bundle = bundle
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self.backend: Backend = get_backend(backend) if isinstance(backend, str) else backend
        self.capabilities = capabilities_of(self.backend)  #: what the backend declares
        # ARM-side conv/linear layers: the backend's fast kernel if it declares one, else numpy
        self._arm_conv = (
            cast(ArmBackend, self.backend).arm_conv if self.capabilities.arm_ops else ops.conv_layer
        )
        spec = bundle.spec
        if spec is None:
            raise ValueError("the bundle has not been validated (use bundle.load_bundle)")
        if self.capabilities.checks_bundle:
            cast(CheckingBackend, self.backend).check_bundle(spec)
        self.parsed = spec  #: the manifest parsed into frozen descriptions (bundle.Manifest)
        #: the raw manifest tensors; TODO(issue 24): only tests/test_native.py reads it
        #: (use ``parsed.tensors``), then it goes
        self.tensors = bundle.manifest["tensors"]
        self.input_name = spec.input.tensor
        self.input_frac = spec.input_frac
        self.output_name = spec.output
        self.output_frac = spec.output_frac
        self.steps = [self._compile(layer) for layer in spec.layers]
        # declared capability: the whole network in one call (else layer by layer; its
        # time counts as conv-engine in timings)
        self._network = None
        if self.capabilities.whole_network:
            self._network = cast(NetworkBackend, self.backend).compile_network(
                [(s.layer, s.spec) for s in self.steps], self.input_name, self.output_name, threads
            )
        self.timings: dict[str, float] = {}
        self.on_layer: Callable[[str, str, float], None] | None = None

    def _compile(self, layer: LayerSpec) -> Step:
        placement = CONV_ENGINE if layer.on_conv_engine else ARM
        op = opset.get(layer.op)
        if not op.weighted:
            return Step(layer, placement, op)
        arrs = self.bundle.layer_arrays(layer)
        w, bits = arrs["weights"], layer.weight_bits
        if bits is None:
            raise ValueError(f"{layer.name}: a weighted layer without weight_bits")
        if self.parsed.pe is dp.PEKind.SVPE:
            ints, codes = dp.decode_svpe(w, bits), w
        else:
            ints, codes = w.astype(np.int64), None
        if w.ndim == 2:  # linear (C_out, C_in): a 1x1 conv on a 1x1 map
            ints = ints[:, :, None, None]
            codes = None if codes is None else codes[:, :, None, None]
        conv = ops.ConvSpec(
            name=layer.name,
            weights=ints,
            mult=arrs["mult"],
            bias=arrs["bias"],
            shift=arrs["shift"],
            stride=layer.stride,
            padding=layer.padding,
            groups=layer.groups,
            relu=layer.relu,
            pool=layer.pool,
            datapath=self.parsed.pe,
            n_bits=bits,
            codes=codes,
        )
        run = self.backend.run_conv if placement == CONV_ENGINE else self._arm_conv
        return Step(layer, placement, op, conv, partial(_call_conv, run, conv))

    @property
    def placements(self) -> list[tuple[str, str, str]]:
        """(layer name, op, placement) for every layer, in order."""
        return [(s.layer.name, s.layer.op, s.placement) for s in self.steps]

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Images (N, C, H, W) -> int16 with the input's frac.

        uint8 ``x`` are 8-bit pixels (``preprocess.preprocess``): quantised exactly, the
        contract's rule (``datapath.quantize_pixels``).  Float ``x`` are already
        normalised values (a torch-side batch): float64 round half up
        (``datapath.quantize_real``).  Other dtypes are refused."""
        x = np.asarray(x)
        shape = list(self.parsed.tensors[self.input_name].shape)
        if x.ndim != 4 or list(x.shape[1:]) != shape:
            raise ValueError(f"input must be (N, {', '.join(map(str, shape))}), got {x.shape}")
        if x.dtype == np.uint8:
            spec = self.parsed.input
            return dp.quantize_pixels(x, spec.mean, spec.std, self.input_frac)
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(
                f"input must be uint8 pixels or normalised floats, got {x.dtype} "
                "(int16 inputs that are already quantised go straight to Engine.run)"
            )
        return dp.quantize_real(x, self.input_frac)

    def run(self, x_q: np.ndarray, keep: bool = False):
        """int16 (N, C, H, W) -> int16 logits (N, classes) [, all tensors by name]."""
        if self._network and not keep and self.on_layer is None:  # all in the backend
            t0 = time.perf_counter()
            out = self._network(x_q)
            self.timings = {CONV_ENGINE: time.perf_counter() - t0, ARM: 0.0}
            return out
        shards = min(self.threads, len(x_q))
        if keep or shards < 2 or not self.capabilities.thread_safe:
            out, env, times = self._run_one(x_q, keep)
            self.timings = times
            return (out, env) if keep else out
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="nbq-engine")
        parts = list(self._pool.map(self._run_one, np.array_split(x_q, shards)))
        self.timings = {k: sum(p[2][k] for p in parts) / shards for k in parts[0][2]}
        return np.concatenate([p[0] for p in parts])

    def _run_one(self, x_q: np.ndarray, keep: bool = False):
        """One shard in this thread: (logits, tensors by name, seconds per placement)."""
        env: dict[str, np.ndarray] = {
            self.input_name: np.ascontiguousarray(
                x_q.astype(dp.ACT_DTYPE, copy=False).transpose(0, 2, 3, 1)
            )
        }
        times = {CONV_ENGINE: 0.0, ARM: 0.0}
        for step in self.steps:
            t0 = time.perf_counter()
            ins = [env[t] for t in step.layer.inputs]
            env[step.layer.output] = self._run_step(step, ins)
            dt = time.perf_counter() - t0
            times[step.placement] += dt
            if self.on_layer is not None:
                self.on_layer(step.layer.name, step.placement, dt)
            if not keep:
                self._release(env, step)
        return env[self.output_name], env, times

    def _release(self, env: dict, done: Step) -> None:
        """Drop tensors no later step reads (keeps peak memory to live tensors)."""
        later = {t for s in self.steps[done.layer.index + 1 :] for t in s.layer.inputs}
        for name in list(env):
            if name not in later and name != self.output_name:
                del env[name]

    def _run_step(self, step: Step, ins: list[np.ndarray]) -> np.ndarray:
        """One layer: its op's engine step (``opset.OpSpec.step``)."""
        return step.op.step(step.layer, ins, step.conv)

    def dequantize(self, name: str, q: np.ndarray) -> np.ndarray:
        """A tensor from :meth:`run` (keep=True) as float64 NCHW / (N, C) real values."""
        real = q.astype(np.float64) * 2.0 ** -self.parsed.tensors[name].frac
        return real.transpose(0, 3, 1, 2) if real.ndim == 4 else real


def _call_conv(
    run: Callable[[np.ndarray, ops.ConvSpec], np.ndarray], spec: ops.ConvSpec, x: np.ndarray
) -> np.ndarray:
    """``run(x, spec)``: a weighted layer's compiled call (bound with ``partial``)."""
    return run(x, spec)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
