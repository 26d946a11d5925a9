"""The fast exact conv layer: a small C kernel (``nbq_native.c``) built at first use.

:func:`conv_layer` is bit-identical to :func:`pynq_nbq.ops.conv_layer` (the numpy
reference) and several times faster: int16 x int16 products summed in int32 SIMD
lanes (x86 ``vpmaddwd``/``vpdpwssd``, aarch64 NEON ``smlal``, armv7 NEON
``vmlal.s16``) instead of float64
matrix products.  How a layer is summed exactly is chosen here, per layer, from its
actual weights (see :class:`LayerPlan`):

* **int32** when every partial sum fits: ``datapath.accumulator_bits(fan_in, max|w|)
  <= 32`` (the datapath's bound holds both +V and -V);
* **split** otherwise (vpe, 5-bit svpe with a large fan-in): each weight is written
  ``w = 256*wh + wl`` with ``wh, wl`` in [-128, 128], both halves are summed in int32
  over blocks of ``kblock`` terms that cannot overflow, and combined in int64.

Layers the kernel does not take (groups > 1, weights outside int16, empty outputs)
run in the numpy reference.  Whole networks that are a chain of conv, linear and
global-average-pool layers run in one call (:mod:`pynq_nbq.native.network`).

Build
-----
The library is compiled on first use with the system C compiler (``$CC``, else
``cc``/``gcc``) for the machine it runs on (``-O3 -march=native`` on x86,
``-mcpu=native`` on Arm, plus ``-mfpu=neon -mfloat-abi=hard`` on a 32-bit armhf
system whose CPU has NEON; fewer flags if the compiler refuses them:
:func:`arch_targets`) and
cached next to the csim library (``$NBQ_CACHE_DIR``, else
``~/.cache/pynq_nbq/native``), named by a hash of the source, the compiler, its
flags and this CPU's model and feature flags, so a cache shared between machines
never hands one CPU another's build.  ``NBQ_NATIVE=0`` turns the fast path off
(``auto`` then picks the numpy engine).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sysconfig
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path

import numpy as np

from .. import buildcache
from .. import datapath as dp
from ..errors import NbqError
from ..ops import ConvSpec
from ..ops import conv_layer as numpy_conv_layer

SOURCE = Path(__file__).resolve().parent / "nbq_native.c"
ABI_VERSION = 2  #: nbq_native_abi_version() this module speaks
BASE_FLAGS = ("-O3", "-std=c11", "-pthread", "-shared", "-fPIC", "-fvisibility=default", "-w")
#: int32 accumulation when the layer's accumulator needs at most this many bits
INT32_ACC_BITS = 32
#: |wh|, |wl| of a split weight are at most this (w = 256*wh + wl, w in int16)
SPLIT_PART_MAX = 128


class NativeError(NbqError):
    """The native kernel cannot be built or loaded (no compiler, a failed build, off).

    An :class:`~pynq_nbq.errors.NbqError`: the CLI and the server report it in one
    line, and ``auto`` falls back to the numpy engine with this message.
    """


# --- building -------------------------------------------------------------------------
def c_compiler() -> str:
    """The C compiler: ``$CC``, else ``cc`` or ``gcc`` on PATH; NativeError if none."""
    names = [os.environ["CC"]] if os.environ.get("CC") else ["cc", "gcc"]
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise NativeError(
        f"native engine: no C compiler ({' or '.join(names)}) on PATH; install one "
        "(e.g. `apt-get install gcc`) or set CC"
    )


#: NEON on 32-bit Arm (armv7l, e.g. the PYNQ-Z2's Cortex-A9): armhf compilers default
#: to VFPv3-D16 without NEON, so the build asks for it (with :func:`float_abi`)
ARMV7_NEON_FLAGS = ("-mfpu=neon",)


def cpu_features(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """This CPU's feature flags from ``cpuinfo`` (x86 ``flags``, Arm ``Features``, e.g.
    a Zynq-7000's ``half thumb fastmult vfp edsp neon vfpv3 tls vfpd32``; lower case);
    empty where it cannot be read."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    return set(value.lower().split())
    except OSError:
        pass
    return set()


def float_abi() -> str:
    """The float ABI of this Python on 32-bit Arm: "hard" for an armhf build (Debian and
    Ubuntu ``arm-linux-gnueabihf``, e.g. the PYNQ-Z2 image), else "softfp" (armel)."""
    names = (sysconfig.get_config_var(v) or "" for v in ("MULTIARCH", "HOST_GNU_TYPE"))
    return "hard" if any(n.endswith("hf") for n in names) else "softfp"


def arch_targets(
    machine: str | None = None, features: set[str] | None = None
) -> list[tuple[str, ...]]:
    """Code-generation flag sets to try for this CPU, best first, ending with ``()``
    (plain C, the build every C compiler takes): x86 ``-march=native``; aarch64
    ``-mcpu=native`` (NEON is part of the base ISA); 32-bit Arm (armv7l, armv8l)
    ``-mcpu=native`` with :data:`ARMV7_NEON_FLAGS` and ``-mfloat-abi=`` :func:`float_abi`
    only when /proc/cpuinfo lists ``neon`` (or ``asimd``); without, only the compiler's
    defaults (the distribution's baseline, no NEON), so that a CPU without NEON gets the
    plain-C kernel rather than an illegal instruction.  ``machine``,
    ``features``: default this machine's (``platform.machine()``, :func:`cpu_features`).
    """
    machine = (machine or platform.machine()).lower()
    if machine in ("x86_64", "amd64", "i686", "i386"):
        return [("-march=native",), ()]
    if machine.startswith("aarch64") or machine == "arm64":
        return [("-mcpu=native",), ()]
    if machine.startswith("arm"):  # 32-bit Arm: armv7l, armv8l (32-bit userland), armv6l
        features = cpu_features() if features is None else features
        if features & {"neon", "asimd"}:
            neon = (*ARMV7_NEON_FLAGS, f"-mfloat-abi={float_abi()}")
            return [("-mcpu=native", *neon), neon, ()]
        return [()]  # not -mcpu=native: with -mfpu=auto it turns NEON on for any A9
    return [()]


def _cpu_identity() -> str:
    """This CPU's machine type, model and feature flags (for the cache key)."""
    lines = [platform.machine()]
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":", 1)[0].strip().lower()
                if key in ("model name", "flags", "features", "cpu part", "cpu implementer"):
                    lines.append(line.strip())
                if len(lines) > 6:
                    break
    except OSError:
        lines.append(platform.processor())
    return "\n".join(lines)


def compile_command(output: Path, cc: str, target: tuple[str, ...]) -> list[str]:
    """The compiler command that builds the library at ``output`` with ``target`` flags."""
    return [cc, *BASE_FLAGS, *target, str(SOURCE), "-o", str(output)]


def build(target: tuple[str, ...] | None = None) -> Path:
    """Build the library (or find it in the cache); returns its path.

    ``target``: code-generation flags, e.g. ``("-mavx2",)`` or ``()`` for plain C;
    None = the first of :func:`arch_targets` the compiler takes (tuned for this CPU,
    down to plain C).
    """
    if not SOURCE.is_file():
        raise NativeError(f"native engine: kernel source {SOURCE} is missing")
    cc = c_compiler()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    errors = []
    targets = [target] if target is not None else arch_targets()
    for flags in targets:
        cmd = compile_command(Path("OUT"), cc, flags)
        h = hashlib.sha256(SOURCE.read_bytes())
        for part in (version, " ".join(cmd[1:-2]), _cpu_identity()):
            h.update(b"\0" + part.encode())
        out = buildcache.cache_dir("native") / f"nbq_native_{h.hexdigest()[:20]}.so"
        try:
            return buildcache.build_once(
                out,
                partial(compile_command, cc=cc, target=flags),
                "the native kernel",
                NativeError,
            )
        except NativeError as exc:
            errors.append(str(exc))
    raise NativeError("native engine: " + "\n".join(errors))


_PTR = ctypes.c_void_p  #: arrays are passed as their data address (see _addr)


class Library:
    """The loaded kernel: its ISA, packing parameters and the conv entry point."""

    def __init__(self, path: Path) -> None:
        self.path = path
        lib = ctypes.CDLL(str(path))
        if lib.nbq_native_abi_version() != ABI_VERSION:
            raise NativeError(f"{path}: C ABI version mismatch (clear the cache to rebuild)")
        lib.nbq_native_isa.restype = ctypes.c_char_p
        lib.nbq_native_packed_len.restype = ctypes.c_long
        lib.nbq_native_packed_len.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.nbq_native_pack.argtypes = [_PTR, ctypes.c_int, ctypes.c_int, _PTR]
        lib.nbq_native_pack.restype = None
        i = ctypes.c_int
        lib.nbq_native_conv.argtypes = [_PTR, i, i, i, i, _PTR, i, i, i, i, i, i]
        lib.nbq_native_conv.argtypes += [_PTR, _PTR, _PTR, i, i, _PTR]
        lib.nbq_native_conv.restype = ctypes.c_int
        lib.nbq_native_net_new.argtypes = [i, _PTR, _PTR, i]
        lib.nbq_native_net_new.restype = _PTR
        lib.nbq_native_net_run.argtypes = [_PTR, _PTR, i, _PTR]
        lib.nbq_native_net_run.restype = ctypes.c_int
        lib.nbq_native_net_free.argtypes = [_PTR]
        lib.nbq_native_net_free.restype = None
        lib.nbq_native_reads_in_place.argtypes = [i] * 8
        lib.nbq_native_reads_in_place.restype = i
        for name in ("nbq_native_net_in_len", "nbq_native_net_out_len"):
            getattr(lib, name).argtypes = [_PTR]
            getattr(lib, name).restype = ctypes.c_int
        self.lib = lib
        self.isa: str = lib.nbq_native_isa().decode()
        self.k_unit: int = int(lib.nbq_native_k_unit())
        self._plans: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._plans_lock = threading.Lock()

    def plan(self, spec: ConvSpec) -> LayerPlan | None:
        """:func:`plan_layer` of ``spec`` for this library, computed once per spec."""
        with self._plans_lock:
            if spec not in self._plans:
                self._plans[spec] = plan_layer(spec, self)
            return self._plans[spec]

    def reads_in_place(self, spec: ConvSpec, h: int, w: int) -> bool:
        """True when the kernel reads this layer's patches from a padded copy of its
        (h, w) input instead of copying every patch (stride 1, int32 accumulation,
        whole packed units per patch row, few wasted pixels); False also for layers
        the kernel does not take."""
        plan = self.plan(spec)
        if plan is None:
            return False
        args = (h, w, spec.in_channels, spec.out_channels, spec.kernel, spec.stride)
        return bool(self.lib.nbq_native_reads_in_place(*args, spec.padding, plan.mode == "split"))

    def pack(self, w: np.ndarray) -> np.ndarray:
        """Row-major int16 (cols, K) weights -> the kernel's packed panels."""
        w = np.ascontiguousarray(w, dtype=np.int16)
        out = np.empty(int(self.lib.nbq_native_packed_len(*w.shape)), dtype=np.int16)
        self.lib.nbq_native_pack(_addr(w), w.shape[0], w.shape[1], _addr(out))
        return out


def _addr(a: np.ndarray) -> int:
    """The data address of a C-contiguous array (cheaper than ``a.ctypes``; the caller
    keeps ``a`` alive during the call)."""
    return a.__array_interface__["data"][0]


_LIB: Library | None = None
_LIB_ERROR: NativeError | None = None
_LIB_LOCK = threading.Lock()


def library() -> Library:
    """The process-wide kernel library (built and loaded once); NativeError if unavailable."""
    global _LIB, _LIB_ERROR
    with _LIB_LOCK:
        if _LIB is None and _LIB_ERROR is None:
            try:
                if os.environ.get("NBQ_NATIVE", "1") == "0":
                    raise NativeError("native engine: turned off (NBQ_NATIVE=0)")
                _LIB = Library(build())
            except NativeError as exc:
                _LIB_ERROR = exc
            except OSError as exc:  # a library that will not load
                _LIB_ERROR = NativeError(f"native engine: cannot load the kernel: {exc}")
        if _LIB is None:
            raise _LIB_ERROR  # type: ignore[misc]
        return _LIB


def reset() -> None:
    """Forget the loaded library or the reason it was unavailable (tests, env changes)."""
    global _LIB, _LIB_ERROR
    with _LIB_LOCK:
        _LIB, _LIB_ERROR = None, None


# --- one layer ------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerPlan:
    """How the kernel runs one :class:`ConvSpec`.

    Attributes:
        mode: "int32" (every partial sum fits int32) or "split" (w = 256*wh + wl,
            int32 blocks of ``kblock`` terms combined in int64).
        packed: the kernel's packed int16 weights (cols = C_out, or 2*C_out if split).
        kblock: terms summed in int32 before an int64 flush (the fan-in when int32).
        mult, offset, shift: int64 (C_out,) requantisation, ``offset = bias + half``
            (:func:`pynq_nbq.datapath.half`): the kernel computes
            ``(acc * mult + offset) >> shift``.
    """

    mode: str
    packed: np.ndarray
    kblock: int
    mult: np.ndarray
    offset: np.ndarray
    shift: np.ndarray

    @cached_property
    def addresses(self) -> tuple[int, int, int, int]:
        """Data addresses of packed, mult, offset, shift (the plan keeps them alive)."""
        return (_addr(self.packed), _addr(self.mult), _addr(self.offset), _addr(self.shift))


def layer_rows(spec: ConvSpec) -> tuple[str, np.ndarray, int] | None:
    """(mode, int16 weight rows, kblock) of ``spec`` for the kernel, or None when the
    numpy reference must run it (groups > 1, no weights, weights beyond int16).

    Rows are (C_out, K) with k in (ky, kx, ci) order, or (2*C_out, K) for "split":
    the high parts ``wh`` then the low parts ``wl``.  ``kblock`` is the fan-in
    ("int32") or the most terms whose int32 sum cannot overflow ("split").
    """
    w = spec.weights
    if spec.groups != 1 or w.size == 0:
        return None
    i16 = np.iinfo(np.int16)
    if w.min() < i16.min or w.max() > i16.max:  # beyond int16 (no datapath weight is)
        return None
    max_w = int(np.abs(w).max())
    rows = w.transpose(0, 2, 3, 1).reshape(spec.out_channels, -1)  # k in (ky, kx, ci)
    if dp.accumulator_bits(spec.fan_in, max_w) <= INT32_ACC_BITS:
        return "int32", rows.astype(np.int16), spec.fan_in
    low = ((rows + 128) & 255) - 128  # in [-128, 127]
    high = (rows - low) >> 8  # in [-128, 128]
    # the most terms whose int32 sum cannot overflow: kblock * 2^15 * 128 <= 2^31 - 1
    kblock = ((1 << (INT32_ACC_BITS - 1)) - 1) // dp.accumulator_bound(1, SPLIT_PART_MAX)
    return "split", np.concatenate([high, low]).astype(np.int16), kblock


def plan_layer(spec: ConvSpec, lib: Library) -> LayerPlan | None:
    """The kernel's plan for ``spec`` (:func:`layer_rows`, packed for ``lib``), or None."""
    got = layer_rows(spec)
    if got is None:
        return None
    mode, rows, kblock = got
    mult, offset, shift = (
        np.ascontiguousarray(a, dtype=np.int64)
        for a in (spec.mult, spec.bias + dp.half(spec.shift), spec.shift)
    )
    return LayerPlan(mode, lib.pack(rows), kblock - kblock % lib.k_unit, mult, offset, shift)


def fastest_conv() -> Callable[[np.ndarray, ConvSpec], np.ndarray]:
    """The fastest exact conv layer here: :func:`conv_layer` when the kernel builds and
    loads, else the numpy reference :func:`pynq_nbq.ops.conv_layer`.  For backends
    whose ARM-side layers should run fast (``arm_conv``, e.g. on the board)."""
    try:
        library()
    except NativeError:
        return numpy_conv_layer
    return conv_layer


def conv_layer(x: np.ndarray, spec: ConvSpec, lib: Library | None = None) -> np.ndarray:
    """A whole conv layer, int16 NHWC in and out: exactly :func:`pynq_nbq.ops.conv_layer`.

    Runs in the C kernel ``lib`` (default: :func:`library`; the GIL is released during
    the call, so threads overlap); layers the kernel does not take run in the numpy
    reference.  NativeError if the kernel is unavailable.
    """
    if x.ndim != 4 or x.shape[3] != spec.in_channels:
        raise ValueError(
            f"{spec.name}: input must be NHWC with {spec.in_channels} channels, got {x.shape}"
        )
    lib = lib or library()
    plan = lib.plan(spec)
    n, h, w, _ = x.shape
    oh, ow = spec.output_hw(h, w)
    if plan is None or oh <= 0 or ow <= 0 or n == 0:
        return numpy_conv_layer(x, spec)
    x = np.ascontiguousarray(x, dtype=np.int16)
    y = np.empty((n, oh, ow, spec.out_channels), dtype=np.int16)
    packed, mult, offset, shift = plan.addresses
    rc = lib.lib.nbq_native_conv(
        _addr(x),
        n,
        h,
        w,
        spec.in_channels,
        packed,
        spec.out_channels,
        spec.kernel,
        spec.stride,
        spec.padding,
        int(plan.mode == "split"),
        plan.kblock,
        mult,
        offset,
        shift,
        int(spec.relu),
        int(spec.pool),
        _addr(y),
    )
    if rc:
        raise MemoryError(f"{spec.name}: the native kernel could not allocate its buffers")
    return y
