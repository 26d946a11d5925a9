"""The ``csim`` backend: the HLS kernel (``hls/``) compiled with g++ and called via ctypes.

The same C++ sources Vitis HLS synthesises are built into a shared library (the
C-simulation) and fed exactly the byte streams the board's AXI DMA would carry
(the host side in :mod:`pynq_nbq.kernel` packs them, cuts layers into tiles and checks every
call's STATUS register), so this backend is bit-exact with the numpy engine and
with the ``fpga`` backend that runs the same tiles on the board.

Builds
------
One library per PE kind (and per set of ``-D`` overrides), compiled on first
use and cached in ``$NBQ_CACHE_DIR``, else ``$XDG_CACHE_HOME/pynq_nbq/csim``,
else ``~/.cache/pynq_nbq/csim``, named by a hash of the sources, the headers,
the compiler and its flags.  Concurrent builds take a file lock and rename the
result into place atomically.  Needs a C++ compiler (``$CXX``, default ``g++``)
and Xilinx's Apache-2.0 ``ap_int`` headers: from the hls4ml wheel
(``pip install hls4ml`` or ``pynq-nbq[csim]``) or a directory in ``$NBQ_AP_INCLUDE``.
The kernel sources come from the checkout's ``hls/`` (or ``$NBQ_HLS_DIR``).

PE kind
-------
``CsimBackend()`` builds the kind each layer's ``spec.datapath`` asks for, lazily
(an svpe bundle only ever builds the svpe kernel), like a host that can load
either bitstream.  ``CsimBackend(pe="svpe")`` holds one kernel, like a board with
one bitstream, and refuses bundles and layers of the other kind.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .. import buildcache
from .. import datapath as dp
from ..bundle import Manifest
from ..errors import NbqError
from ..kernel import protocol
from ..kernel.checks import check_manifest
from ..kernel.scheduler import CompiledLayers
from ..ops import ConvSpec

#: Kernel sources compiled into the library (relative to the hls/ directory).
KERNEL_SOURCES = ("nbq_conv.cpp",)
BRIDGE_SOURCES = ("nbq_csim_bridge.cpp",)
TESTBENCH_SOURCES = ("tb_nbq_conv.cpp",)
#: Files whose contents key the cache (besides the compiler and its flags).
HASHED_GLOBS = ("*.h", "*.cpp", "csim_include/*.h")
CXX_STD = "-std=c++14"  #: what Vitis HLS compiles; the kernel must stay C++14
OPT_FLAGS = ("-O2",)
#: AddressSanitizer + UndefinedBehaviorSanitizer (any finding aborts).  C++20 because
#: Xilinx's ap_private sign-extends with left shifts of negative values, defined
#: behaviour only since C++20 (and what every compiler does); -O0 builds fastest.
SANITIZE_STD = "-std=c++20"
SANITIZE_FLAGS = (
    "-O0",
    "-g",
    "-fno-omit-frame-pointer",
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=all",
)
ABI_VERSION = 2  #: nbq_csim_abi_version() this module speaks (2: 16-byte words)


class CsimError(NbqError):
    """The csim library cannot be built or loaded (missing compiler, headers, sources).

    A :class:`~pynq_nbq.errors.NbqError`, so that the CLI and the server report it in
    one line.
    """


# --- where things are -----------------------------------------------------------------
REQUIRED_FILES = (
    *KERNEL_SOURCES,
    *BRIDGE_SOURCES,
    "nbq_conv.h",
    "nbq_params.h",
    "nbq_host_call.h",
    "csim_include/ap_axi_sdata.h",
)


def hls_dir() -> Path:
    """The kernel's C++ sources: ``$NBQ_HLS_DIR``, the checkout's ``hls/``, or a copy
    installed with the package (``pynq_nbq/hls_src/``)."""
    env = os.environ.get("NBQ_HLS_DIR")
    package_copy = Path(__file__).resolve().parent.parent / "hls_src"
    candidates = [Path(env)] if env else [protocol.HLS_DIR, package_copy]
    for d in candidates:
        if all((d / f).is_file() for f in REQUIRED_FILES):
            return d
    missing = [f for f in REQUIRED_FILES if not (candidates[0] / f).is_file()]
    raise CsimError(
        f"csim backend: HLS sources not found in {candidates[0]} (missing "
        f"{', '.join(missing)}); run from a source checkout of pynq-nbq or set "
        "NBQ_HLS_DIR to its hls/ directory"
    )


def ap_include_dir() -> Path:
    """Xilinx's ap_int headers: ``$NBQ_AP_INCLUDE`` or the hls4ml wheel's copy."""
    env = os.environ.get("NBQ_AP_INCLUDE")
    candidates = [Path(env)] if env else []
    spec = importlib.util.find_spec("hls4ml")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidates.append(Path(loc) / "templates" / "vivado" / "ap_types")
    for c in candidates:
        if (c / "ap_int.h").is_file() and (c / "hls_stream.h").is_file():
            return c
    where = f" (looked in {', '.join(map(str, candidates))})" if candidates else ""
    raise CsimError(
        "csim backend: Xilinx's ap_int.h/hls_stream.h headers not found" + where + "; "
        "install them with `pip install hls4ml` (or `pip install pynq-nbq[csim]`), or "
        "set NBQ_AP_INCLUDE to a directory that holds ap_int.h"
    )


def compiler() -> str:
    """The C++ compiler: ``$CXX`` or ``g++``; CsimError if it is not on PATH."""
    cxx = os.environ.get("CXX", "g++")
    path = shutil.which(cxx)
    if path is None:
        raise CsimError(
            f"csim backend: C++ compiler {cxx!r} not found on PATH; install g++ "
            "(e.g. `apt-get install g++`) or set CXX"
        )
    return path


def cache_dir() -> Path:
    """Where built csim libraries live (see :func:`pynq_nbq.buildcache.cache_dir`)."""
    return buildcache.cache_dir("csim")


# --- building -------------------------------------------------------------------------
def defines_for(
    pe: dp.PEKind | str, defines: Mapping[str, int] | None = None
) -> dict[str, int | str]:
    """``-D`` values of a build: the PE kind plus any ``NBQ_*`` overrides."""
    kind = dp.PEKind.parse(pe)
    out: dict[str, int | str] = {"NBQ_PE_KIND": f"NBQ_PE_{kind.value.upper()}"}
    for k, v in (defines or {}).items():
        if not k.startswith("NBQ_") or k == "NBQ_PE_KIND":
            raise ValueError(f"bad define {k!r}: overrides are NBQ_* parameters of nbq_params.h")
        out[k] = int(v)
    return out


def compile_command(
    output: Path,
    pe: str,
    defines: Mapping[str, int] | None = None,
    target: str = "library",
    sanitize: bool = False,
) -> list[str]:
    """The g++ command line of a build.

    ``target``: "library" (kernel + ctypes bridge, a shared object) or "testbench"
    (kernel + hls/tb_nbq_conv.cpp, an executable); ``sanitize``: ASan + UBSan.
    """
    src = hls_dir()
    inc = ap_include_dir()
    flags = (SANITIZE_STD, *SANITIZE_FLAGS) if sanitize else (CXX_STD, *OPT_FLAGS)
    cmd = [compiler(), *flags, "-w"]
    cmd += ["-I", str(src), "-I", str(src / "csim_include"), "-isystem", str(inc)]
    cmd += [f"-D{k}={v}" for k, v in defines_for(pe, defines).items()]
    sources = list(KERNEL_SOURCES)
    if target == "library":
        cmd += ["-shared", "-fPIC", "-fvisibility=hidden"]
        sources += BRIDGE_SOURCES
    elif target == "testbench":
        sources += TESTBENCH_SOURCES
    else:
        raise ValueError(f"unknown target {target!r}")
    return [*cmd, *(str(src / s) for s in sources), "-o", str(output)]


def _cache_key(cmd: Sequence[str]) -> str:
    h = hashlib.sha256()
    for d, globs in ((hls_dir(), HASHED_GLOBS), (ap_include_dir(), ("*.h", "*/*.h"))):
        for pattern in globs:
            for f in sorted(d.glob(pattern)):
                h.update(f.name.encode() + b"\0" + f.read_bytes())
    version = subprocess.run([cmd[0], "--version"], capture_output=True, text=True).stdout
    h.update(version.encode())
    h.update("\0".join(a for a in cmd[1:] if not a.startswith("/")).encode())
    return h.hexdigest()[:20]


def build(
    pe: str,
    defines: Mapping[str, int] | None = None,
    target: str = "library",
    sanitize: bool = False,
) -> Path:
    """Build (or find in the cache) a library or testbench; returns its path."""
    suffix = ".so" if target == "library" else ""
    probe = compile_command(Path("OUT"), pe, defines, target, sanitize)
    key = _cache_key(probe)
    name = f"nbq_{target}_{pe}{'_san' if sanitize else ''}_{key}{suffix}"
    return buildcache.build_once(
        cache_dir() / name,
        lambda tmp: compile_command(tmp, pe, defines, target, sanitize),
        f"the csim {pe} kernel",
        CsimError,
    )


# --- the kernel behind ctypes ---------------------------------------------------------
_U8P = ctypes.POINTER(ctypes.c_uint8)
_U32P = ctypes.POINTER(ctypes.c_uint32)
_U64P = ctypes.POINTER(ctypes.c_uint64)
_CALL_FAULTS = {
    1: "the kernel read past the end of its input packets (on the board: a DMA hang)",
    2: "the kernel left input words unread (on the board: a stalled DMA)",
    3: "the kernel wrote more output words than the host expects",
}


class CsimKernel:
    """One csim build of the kernel: a :class:`pynq_nbq.kernel.protocol.ConvDevice`.

    ``info`` is read from the kernel's read-only registers (a PROBE call).  Calls
    are serialised with a lock: the kernel, like the hardware, has one set of
    on-chip buffers.
    """

    def __init__(
        self,
        pe: dp.PEKind | str = dp.PEKind.SVPE,
        defines: Mapping[str, int] | None = None,
        private: bool = False,
    ):
        self.path = build(pe, defines)
        lib_path = self.path
        if private:  # a copy of the library: its own static state (held weights), like a
            # second FPGA; the simulated board uses this so no other user shares its kernel
            fd, tmp = tempfile.mkstemp(prefix="nbq_private_", suffix=".so", dir=cache_dir())
            os.close(fd)
            shutil.copyfile(self.path, tmp)
            lib_path = Path(tmp)
        self._lib = ctypes.CDLL(str(lib_path))
        if private:
            lib_path.unlink()  # the mapping stays valid; nothing is left behind
        if self._lib.nbq_csim_abi_version() != ABI_VERSION:
            raise CsimError(f"{self.path}: C ABI version mismatch (rebuild: clear the cache)")
        self._lib.nbq_csim_call.argtypes = [
            _U32P,
            _U8P,
            _U8P,
            ctypes.c_uint64,
            _U8P,
            _U8P,
            ctypes.c_uint64,
            _U64P,
            _U32P,
        ]
        self._lib.nbq_csim_call.restype = ctypes.c_int
        self._lock = threading.Lock()
        self.info = protocol.KernelInfo.from_registers(self.read_registers())
        if self.info.pe != pe:
            raise CsimError(f"{self.path}: built for {pe} but PE_KIND says {self.info.pe}")

    def read_registers(self) -> dict[str, int]:
        """All read-only registers, after a PROBE call (no stream touched)."""
        regs = dict.fromkeys(protocol.WRITE_REGISTERS, 0)
        regs["FLAGS"] = int(protocol.Flag.PROBE)
        _, ro = self._raw_call(regs, [], 0)
        return ro

    def call(
        self, regs: Mapping[str, int], packets: Sequence[np.ndarray], out_nbytes: int
    ) -> tuple[np.ndarray, int]:
        """One tile: see :class:`pynq_nbq.kernel.protocol.ConvDevice`."""
        data, ro = self._raw_call(regs, packets, out_nbytes)
        return data, ro["STATUS"]

    def _raw_call(self, regs, packets, out_nbytes):
        words, last_out, ro_regs, rc = self.raw_call(regs, packets, out_nbytes)
        if rc:
            raise protocol.KernelError(
                f"csim call {dict(regs)}: {_CALL_FAULTS.get(rc, f'fault {rc}')}"
            )
        n = len(last_out)
        if n == 0 or last_out[n - 1] != 1 or last_out[: n - 1].any():
            raise protocol.KernelError(
                f"csim call {dict(regs)}: TLAST is not on exactly the last of the {n} output words"
            )
        try:
            data, _ = protocol.split_output(words, out_nbytes, ro_regs["STATUS"])
        except protocol.KernelError as exc:
            raise protocol.KernelError(f"csim call {dict(regs)}: {exc}") from None
        return data, ro_regs

    def raw_call(
        self, regs: Mapping[str, int], packets: Sequence[np.ndarray], out_nbytes: int
    ) -> tuple[np.ndarray, np.ndarray, dict[str, int], int]:
        """One call, unchecked: (output bytes, TLAST flag per output word, read-only
        registers, fault code).

        Room is made for ``out_nbytes`` feature-map bytes, the status word and one
        spare word.  The fault code is 0 or one of ``NBQ_CALL_OVERREAD`` (1: the
        kernel wanted more input words than given), ``UNDERREAD`` (2: it left some
        unread) or ``OUT_OVERFLOW`` (3: it wrote past that room) of nbq_host_call.h.
        """
        parts = [np.asarray(p, dtype=np.uint8).reshape(-1) for p in packets]
        for i, p in enumerate(parts):
            if len(p) == 0 or len(p) % protocol.WORD_BYTES:
                raise protocol.KernelError(f"packet {i} is {len(p)} bytes, not whole words")
        data_in = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
        n_in = len(data_in) // protocol.WORD_BYTES
        last = np.zeros(n_in, dtype=np.uint8)
        ends = np.cumsum([len(p) // protocol.WORD_BYTES for p in parts], dtype=np.int64)
        last[ends - 1] = 1  # TLAST on every packet's last word, as the DMA sets it
        # feature map + status word + one spare word to notice an overrun
        cap = protocol.words_for(out_nbytes) + protocol.STATUS_WORDS + 1
        data_out = np.zeros(cap * protocol.WORD_BYTES, dtype=np.uint8)
        last_out = np.zeros(cap, dtype=np.uint8)
        n_out = ctypes.c_uint64(0)
        wregs = (ctypes.c_uint32 * len(protocol.WRITE_REGISTERS))(
            *(int(regs[r]) for r in protocol.WRITE_REGISTERS)
        )
        ro = (ctypes.c_uint32 * len(protocol.READ_REGISTERS))()
        data_in = np.ascontiguousarray(data_in)
        with self._lock:
            rc = self._lib.nbq_csim_call(
                wregs,
                data_in.ctypes.data_as(_U8P),
                last.ctypes.data_as(_U8P),
                n_in,
                data_out.ctypes.data_as(_U8P),
                last_out.ctypes.data_as(_U8P),
                cap,
                ctypes.byref(n_out),
                ro,
            )
        ro_regs = dict(zip(protocol.READ_REGISTERS, (int(v) for v in ro), strict=True))
        n = min(int(n_out.value), cap)
        return data_out[: n * protocol.WORD_BYTES], last_out[:n], ro_regs, int(rc)


_KERNELS: dict[tuple, CsimKernel] = {}
_KERNELS_LOCK = threading.Lock()


def get_kernel(pe: dp.PEKind | str, defines: Mapping[str, int] | None = None) -> CsimKernel:
    """The process-wide :class:`CsimKernel` of a build (built/loaded once)."""
    pe = dp.PEKind.parse(pe)
    key = (pe, tuple(sorted((defines or {}).items())))
    with _KERNELS_LOCK:
        if key not in _KERNELS:
            _KERNELS[key] = CsimKernel(pe, defines)
        return _KERNELS[key]


# --- the backend ----------------------------------------------------------------------
class CsimBackend:
    """Conv-engine layers in the HLS C-simulation (see the module docstring).

    Args:
        pe: None (build whatever kind each layer needs) or a ``PEKind`` / "svpe" / "vpe"
            (one kernel).
        defines: ``NBQ_*`` overrides of ``hls/nbq_params.h`` (e.g. small buffers).
        max_packet_bytes: largest DMA transfer the tiles may use.
    """

    name = "csim"

    def __init__(
        self,
        pe: dp.PEKind | str | None = None,
        defines: Mapping[str, int] | None = None,
        max_packet_bytes: int = protocol.DEFAULT_MAX_PACKET_BYTES,
    ):
        self.pe = None if pe is None else dp.PEKind.parse(pe)
        self.defines = dict(defines or {})
        self.max_packet_bytes = max_packet_bytes
        self._layers = CompiledLayers(max_packet_bytes)

    def kernel(self, pe: dp.PEKind | str) -> CsimKernel:
        """The kernel build for ``pe`` (built on first use)."""
        pe = dp.PEKind.parse(pe)
        if self.pe is not None and pe is not self.pe:
            raise ValueError(
                f"this csim backend holds the {self.pe} kernel (PE_KIND register) and cannot "
                f"run {pe} layers; use CsimBackend() or CsimBackend(pe='{pe}')"
            )
        return get_kernel(pe, self.defines)

    @property
    def description(self) -> str:
        """What runs the layers: the HLS kernel as a g++ C-simulation (emulated timings)."""
        kinds = "svpe/vpe" if self.pe is None else str(self.pe)
        try:  # the file it builds from: the checkout's hls/, or the wheel's pynq_nbq/hls_src/
            source = str(hls_dir() / KERNEL_SOURCES[0])
        except CsimError:
            source = f"{KERNEL_SOURCES[0]} (sources not found)"
        return f"HLS kernel {source} as a g++ C-simulation ({kinds}; emulated timings)"

    def check_bundle(self, manifest: Manifest) -> None:
        """ValueError with every reason if the kernel cannot run this bundle
        (``manifest`` is the validated ``bundle.spec``)."""
        kernel = self.kernel(self.pe or manifest.pe)
        check_manifest(manifest, kernel.info)

    def run_conv(self, x: np.ndarray, spec: ConvSpec) -> np.ndarray:
        """int16 NHWC in, int16 NHWC out: exactly :func:`pynq_nbq.ops.conv_layer`.

        The layer is checked and its weights packed on its first call (per spec
        object); later calls reuse them (compile once, run many).
        """
        kernel = self.kernel(spec.datapath)
        return self._layers.get(spec, kernel.info).run(kernel, x)
