"""A whole network in one call of the native kernel (``nbq_native_net_*`` in ``nbq_native.c``).

:func:`compile_network` turns a chain of layers (conv, linear, global average pool,
and flattens that move nothing) into a :class:`Network`: the layer descriptors,
packed weights and requantisation arrays are built once, and the C side allocates
its activation and work buffers and starts its threads once.  A call
(:meth:`Network.run`) is then one ctypes call for the whole batch: no per-layer
Python, no per-call allocation besides the output.  With ``threads = T``, whole
images go to the threads while at least T are left; a smaller remainder (batch 1)
is shared by all T threads layer by layer (rows or output-channel panels), so both
cores work on one image.  Every value is computed by the same integer operations as
:func:`pynq_nbq.native.conv_layer`, hence exactly :func:`pynq_nbq.ops.conv_layer`.

Networks that are not such a chain (residual adds, concats, ARM-side max-pools,
grouped convs, a flatten of a spatial map) get None: the engine runs them layer by
layer instead.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence

import numpy as np

from ..bundle import LayerSpec
from ..ops import ConvSpec
from . import Library, _addr

NET_CONV, NET_GAP = 0, 1  #: op codes of nbq_native_net_new's descriptors
NET_DESC, NET_PTRS = 16, 4  #: int64 and pointers per layer descriptor
#: largest left/right shift of a global average pool the C side takes (2*S*2^up fits int64)
GAP_MAX_SHIFT = 30


def _describe(
    chain: Sequence[tuple[LayerSpec, ConvSpec | None]], input_name: str, output_name: str, lib
) -> tuple[np.ndarray, list[np.ndarray | None], list, tuple[int, ...]] | None:
    """(int64 descriptors, arrays the descriptors point into (None: a null pointer),
    plans, input shape CHW) of ``chain``, or None when it is not a chain the C side runs."""
    current: str = input_name
    shape: tuple[int, ...] | None = None
    rows: list[np.ndarray] = []
    keep: list[np.ndarray | None] = []
    plans: list = []
    for layer, spec in chain:
        if list(layer.inputs) != [current]:
            return None
        in_shape = layer.in_shape
        if shape is None:
            shape = tuple(in_shape)
        c, h, w = (
            (in_shape[0], in_shape[1], in_shape[2])
            if len(in_shape) == 3
            else (int(np.prod(in_shape)), 1, 1)
        )
        d = np.zeros(NET_DESC, np.int64)
        if layer.op in ("conv", "linear"):
            if spec is None:
                return None
            plan = lib.plan(spec)
            if plan is None or (layer.op == "conv" and len(in_shape) != 3):
                return None
            if layer.op == "linear":
                c, h, w = int(np.prod(in_shape)), 1, 1  # the engine's reshape(n, 1, 1, -1)
            d[:7] = [NET_CONV, h, w, c, spec.out_channels, spec.kernel, spec.stride]
            d[7:12] = [
                spec.padding,
                int(plan.mode == "split"),
                plan.kblock,
                int(spec.relu),
                spec.pool,
            ]
            keep += [plan.packed, plan.mult, plan.offset, plan.shift]
            plans.append(plan)
        elif layer.op == "gap" and len(in_shape) == 3:
            delta = layer.out_frac - layer.in_fracs[0]
            up, down = max(delta, 0), max(-delta, 0)
            if up > GAP_MAX_SHIFT or down > GAP_MAX_SHIFT:
                return None
            d[:4] = [NET_GAP, h, w, c]
            d[12:14] = [up, down]
            keep += [None] * 4
        elif layer.op == "flatten" and (len(in_shape) == 1 or in_shape[1:] == (1, 1)):
            current = layer.output  # NHWC and NCHW orders agree: nothing moves
            continue
        else:
            return None
        rows.append(d)
        current = layer.output
    if current != output_name or not rows or len(chain[-1][0].out_shape) != 1:
        return None  # not the whole network, or not ending in a (N, classes) vector
    assert shape is not None, "a chain with rows has an input shape"
    return np.stack(rows), keep, plans, shape


class Network:
    """A compiled chain of layers in the native kernel; see the module docstring.

    Thread-safe: each concurrent caller gets its own C network (buffers and threads),
    created on demand and kept for reuse; all are freed with this object.
    """

    def __init__(
        self,
        lib: Library,
        desc: np.ndarray,
        arrays: list,
        plans: list,
        in_shape: tuple[int, ...],
        threads: int,
    ) -> None:
        self.lib, self.threads, self.in_shape = lib, threads, in_shape
        self._desc = np.ascontiguousarray(desc, np.int64)
        self._arrays, self._plans = arrays, plans  # the C side points into these
        self._ptrs = np.array([0 if a is None else _addr(a) for a in arrays], np.uintp)
        self._free: list[int] = []
        self._all: list[int] = []
        self._lock = threading.Lock()
        handle = self._new()  # one now: fail early, learn the sizes
        self.in_len = int(lib.lib.nbq_native_net_in_len(handle))
        self.out_len = int(lib.lib.nbq_native_net_out_len(handle))
        self._free.append(handle)
        self._finalizer = weakref.finalize(self, _free_all, lib, self._all)

    def _new(self) -> int:
        handle = self.lib.lib.nbq_native_net_new(
            len(self._desc), _addr(self._desc), _addr(self._ptrs), self.threads
        )
        if not handle:
            raise MemoryError("the native network could not allocate its buffers or threads")
        self._all.append(handle)
        return handle

    def run(self, x_nchw: np.ndarray) -> np.ndarray:
        """int16 (N, C, H, W) (or (N, C) for a linear first layer) -> int16 (N, out)."""
        n = x_nchw.shape[0]
        x = x_nchw.astype(np.int16, copy=False)
        if x.ndim == 4:
            x = x.transpose(0, 2, 3, 1)
        x = np.ascontiguousarray(x)
        if x.size != n * self.in_len:
            raise ValueError(f"input of {x.shape} does not match the network's {self.in_shape}")
        y = np.empty((n, self.out_len), np.int16)
        with self._lock:
            handle = self._free.pop() if self._free else None
        if handle is None:
            handle = self._new()
        try:
            self.lib.lib.nbq_native_net_run(handle, _addr(x), n, _addr(y))
        finally:
            with self._lock:
                self._free.append(handle)
        return y

    def close(self) -> None:
        """Stop the C threads and free the buffers now (also done when collected)."""
        self._finalizer()


def _free_all(lib: Library, handles: list[int]) -> None:
    for h in handles:
        lib.lib.nbq_native_net_free(h)
    handles.clear()


def compile_network(
    chain: Sequence[tuple[LayerSpec, ConvSpec | None]],
    input_name: str,
    output_name: str,
    threads: int,
    lib: Library,
) -> Network | None:
    """``chain`` (every layer of a network, in order, with its ConvSpec for conv and
    linear) as one :class:`Network` on ``threads`` threads, or None when the C side
    cannot run all of it (see the module docstring)."""
    got = _describe(chain, input_name, output_name, lib)
    if got is None:
        return None
    desc, arrays, plans, in_shape = got
    return Network(lib, desc, arrays, plans, in_shape, threads)
