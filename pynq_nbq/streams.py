"""The conv engine's registers and stream protocol, and the host-side tile scheduler.

Written once and used by every backend that drives the HLS kernel (``hls/``):
the ``csim`` backend (the kernel compiled with g++) and the ``fpga`` backend (the
kernel on the board behind an AXI DMA).  A backend only has to provide a
:class:`ConvDevice` - something that writes the five layer registers, sends
packets, receives one packet and reads the STATUS register; everything else
(checking a layer against the kernel's limits, cutting it into tiles, packing
words, placing results) happens here.  ``docs/datapath.md`` section 5 is the
prose specification; ``hls/nbq_params.h`` is the C++ side of the same contract
(``tests/test_streams.py`` parses it and fails if the two drift apart).

Words and packets
-----------------
A stream word is 64 bits, little-endian (byte 0 = bits 7..0).  A packet is a run
of items packed into words, lane 0 in the low bits, the last word zero-padded,
TLAST on the last word only (a DMA transfer ends a packet).  Items:

* activations: int16, 4 per word;
* svpe weights: one byte per code, ``(sign << 4) | m`` (m = |code| in 0..15), 8 per word;
* vpe weights: int16, 4 per word;
* requant: 2 words per output channel, ``bias`` (int64) then ``mult | shift << 16``.

One kernel call (one tile) carries, on the input stream, ``[weights, requant]``
when ``FLAGS.LOAD`` is set, then the feature map; on the output stream, the
output feature map.  Feature maps are in raster order with channels innermost
(NHWC without N); weights in PyTorch order ``(C_out, C_in, ky, kx)``.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntFlag
from pathlib import Path
from typing import Protocol

import numpy as np

from . import datapath as dp
from .errors import NbqError
from .ops import ConvSpec, conv_layer

#: The kernel's C++ sources (a source checkout); ``hls/nbq_params.h`` mirrors this module.
HLS_DIR = Path(__file__).resolve().parent.parent / "hls"

# --- identification -------------------------------------------------------------------
KERNEL_ID = 0x4E425143  #: HW_ID register: "NBQC"
VERSION_MAJOR = 1  #: protocol version; a kernel with another major version is refused
VERSION_MINOR = 0
VERSION = (VERSION_MAJOR << 16) | VERSION_MINOR
PE_KINDS = {"svpe": 1, "vpe": 2}  #: PE_KIND register values
PE_NAMES = {v: k for k, v in PE_KINDS.items()}

# --- words ----------------------------------------------------------------------------
WORD_BITS = 64  #: AXI-Stream TDATA width
WORD_BYTES = WORD_BITS // 8
ACT_LANES = 4  #: int16 activations per word
SVPE_LANES = 8  #: svpe code bytes per word
VPE_LANES = 4  #: vpe int16 weights per word
CODE_MAG_BITS = 4  #: svpe code byte: bit 4 sign, bits 3..0 magnitude
CODE_SIGN = 1 << CODE_MAG_BITS
MAX_CODE_MAG = (1 << CODE_MAG_BITS) - 1  #: 15: shifts up to 14, i.e. n <= 5
REQUANT_WORDS = 2  #: words per output channel in the requant packet
MAX_SHIFT_FIELD = 63  #: 6-bit shift field (the datapath allows 0..62)

#: Largest DMA transfer the scheduler plans by default: a 26-bit AXI DMA length
#: register (PYNQ's default width is 14 bits = 16 KiB; pass ``max_packet_bytes``).
DEFAULT_MAX_PACKET_BYTES = (1 << 26) - WORD_BYTES

# --- AXI-Lite registers (byte offsets, bundle "ctrl") ---------------------------------
#: Every register is 32 bits on an 8-byte boundary.  0x00-0x0C: Vitis's ap_ctrl_hs
#: block (AP_CTRL bit 0 ap_start, 1 ap_done, 2 ap_idle, 3 ap_ready; GIE; IER; ISR).
REGISTERS: dict[str, int] = {
    "AP_CTRL": 0x00,
    "IN_H": 0x10,
    "IN_W": 0x18,
    "C_IN": 0x20,
    "C_OUT": 0x28,
    "FLAGS": 0x30,
    "STATUS": 0x38,
    "HW_ID": 0x40,
    "HW_VERSION": 0x48,
    "PE_KIND": 0x50,
    "PM": 0x58,
    "PN": 0x60,
    "MAX_H": 0x68,
    "MAX_W": 0x70,
    "MAX_CIN": 0x78,
    "MAX_COUT": 0x80,
    "ACC_BITS": 0x88,
    "WORD_BITS": 0x90,
}
#: Registers the host writes before ap_start, in offset order.
WRITE_REGISTERS = ("IN_H", "IN_W", "C_IN", "C_OUT", "FLAGS")
#: Registers the kernel writes on every call, in offset order.
READ_REGISTERS = (
    "STATUS",
    "HW_ID",
    "HW_VERSION",
    "PE_KIND",
    "PM",
    "PN",
    "MAX_H",
    "MAX_W",
    "MAX_CIN",
    "MAX_COUT",
    "ACC_BITS",
    "WORD_BITS",
)
#: The C++ port name of each register (Vitis names its generated macros after them).
PORT_NAMES = {
    "IN_H": "in_h",
    "IN_W": "in_w",
    "C_IN": "c_in",
    "C_OUT": "c_out",
    "FLAGS": "flags",
    **{r: r.lower() for r in READ_REGISTERS},
}


class Flag(IntFlag):
    """Bits of the FLAGS register."""

    K3 = 1 << 0  #: 3x3 kernel (else 1x1)
    RELU = 1 << 1  #: ReLU after requantisation
    POOL = 1 << 2  #: fused 2x2 max-pool, stride 2, floor mode
    LOAD = 1 << 3  #: weight + requant packets precede the feature map
    PAD_TOP = 1 << 4  #: zero row above the tile (3x3 only)
    PAD_BOTTOM = 1 << 5
    PAD_LEFT = 1 << 6
    PAD_RIGHT = 1 << 7
    PROBE = 1 << 8  #: only write the read-only registers; no stream is touched


FLAG_ALL = 0x1FF


class Status(IntFlag):
    """Bits of the STATUS register (0: the call ran)."""

    BAD_CONFIG = 1 << 0
    NO_WEIGHTS = 1 << 1
    TLAST_EARLY = 1 << 2
    TLAST_MISSING = 1 << 3


STATUS_TEXT = {
    Status.BAD_CONFIG: "shape over the kernel's limits or bad FLAGS (no stream touched)",
    Status.NO_WEIGHTS: "no LOAD and the held weights are for another shape",
    Status.TLAST_EARLY: "TLAST before the last word of an input packet",
    Status.TLAST_MISSING: "no TLAST on the last word of an input packet",
}


def describe_status(status: int) -> str:
    """Human-readable STATUS: ``"ok"`` or the names and meanings of the set bits."""
    if status == 0:
        return "ok"
    parts = [f"{b.name} ({text})" for b, text in STATUS_TEXT.items() if status & b]
    unknown = status & ~int(sum(STATUS_TEXT))
    if unknown:
        parts.append(f"unknown bits 0x{unknown:x}")
    return f"0x{status:x}: " + "; ".join(parts)


class KernelError(NbqError):
    """The kernel refused or broke a call (STATUS != 0, or a stream protocol fault)."""


# --- what the kernel is ---------------------------------------------------------------
@dataclass(frozen=True)
class KernelInfo:
    """The kernel's read-only registers: what a bitstream (or csim build) can run.

    Attributes: ``pe`` ("svpe"/"vpe"); ``pm``, ``pn`` input/output channels per cycle;
    ``max_h``, ``max_w`` input tile rows/columns; ``max_cin`` input channels (never
    tiled); ``max_cout`` output channels per call; ``acc_bits`` accumulator width;
    ``word_bits`` stream width; ``version`` the HW_VERSION register.
    """

    pe: str
    pm: int
    pn: int
    max_h: int
    max_w: int
    max_cin: int
    max_cout: int
    acc_bits: int = dp.ACC_BITS
    word_bits: int = WORD_BITS
    version: int = VERSION

    @classmethod
    def from_registers(cls, regs: Mapping[str, int]) -> KernelInfo:
        """Validate and decode the read-only registers (names as in :data:`REGISTERS`).

        Raises ValueError when the IP is not this kernel or speaks another protocol.
        """
        if regs["HW_ID"] != KERNEL_ID:
            raise ValueError(
                f"not an nbq_conv kernel: HW_ID register reads 0x{regs['HW_ID']:08x}, "
                f"expected 0x{KERNEL_ID:08x}"
            )
        major = regs["HW_VERSION"] >> 16
        if major != VERSION_MAJOR:
            raise ValueError(
                f"nbq_conv protocol version {major}.{regs['HW_VERSION'] & 0xFFFF} is not "
                f"supported by this pynq_nbq (speaks {VERSION_MAJOR}.x): rebuild the "
                "bitstream from this checkout's hls/ or install the matching pynq_nbq"
            )
        if regs["PE_KIND"] not in PE_NAMES:
            raise ValueError(f"unknown PE_KIND register value {regs['PE_KIND']}")
        if regs["WORD_BITS"] != WORD_BITS:
            raise ValueError(f"stream width {regs['WORD_BITS']} bits, expected {WORD_BITS}")
        return cls(
            pe=PE_NAMES[regs["PE_KIND"]],
            pm=regs["PM"],
            pn=regs["PN"],
            max_h=regs["MAX_H"],
            max_w=regs["MAX_W"],
            max_cin=regs["MAX_CIN"],
            max_cout=regs["MAX_COUT"],
            acc_bits=regs["ACC_BITS"],
            word_bits=regs["WORD_BITS"],
            version=regs["HW_VERSION"],
        )

    def registers(self, status: int = 0) -> dict[str, int]:
        """The read-only register values this kernel reports."""
        return {
            "STATUS": status,
            "HW_ID": KERNEL_ID,
            "HW_VERSION": self.version,
            "PE_KIND": PE_KINDS[self.pe],
            "PM": self.pm,
            "PN": self.pn,
            "MAX_H": self.max_h,
            "MAX_W": self.max_w,
            "MAX_CIN": self.max_cin,
            "MAX_COUT": self.max_cout,
            "ACC_BITS": self.acc_bits,
            "WORD_BITS": self.word_bits,
        }


class ConvDevice(Protocol):
    """What a backend provides to run tiles: the kernel behind its registers and DMA.

    ``call`` writes :data:`WRITE_REGISTERS` from ``regs``, sends each packet of
    ``packets`` as one DMA transfer (TLAST on its last word), receives one packet
    of ``out_nbytes`` bytes, waits for ap_done and returns ``(bytes, STATUS)``.
    It raises :class:`KernelError` on a stream protocol fault (a packet the
    kernel did not consume exactly, an output packet of the wrong length or
    without TLAST on its last word).  When STATUS is not 0 the output is empty.
    """

    info: KernelInfo

    def call(
        self, regs: Mapping[str, int], packets: Sequence[np.ndarray], out_nbytes: int
    ) -> tuple[np.ndarray, int]: ...


# --- packing --------------------------------------------------------------------------
def words_for(nbytes: int) -> int:
    """Stream words that hold ``nbytes`` bytes."""
    return -(-int(nbytes) // WORD_BYTES)


def _pad_to_words(raw: bytes) -> np.ndarray:
    buf = np.zeros(words_for(len(raw)) * WORD_BYTES, dtype=np.uint8)
    buf[: len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return buf


def pack_activations(x: np.ndarray) -> np.ndarray:
    """int16 activations (any shape, C order: HWC for a feature map) -> packet bytes."""
    if x.dtype != np.int16:
        raise TypeError(f"activations must be int16, got {x.dtype}")
    return _pad_to_words(np.ascontiguousarray(x, dtype="<i2").tobytes())


def unpack_activations(buf: np.ndarray, count: int) -> np.ndarray:
    """Packet bytes -> the first ``count`` int16 activations."""
    return np.frombuffer(np.asarray(buf, dtype=np.uint8).tobytes(), dtype="<i2", count=count)


def encode_svpe_codes(codes: np.ndarray) -> np.ndarray:
    """svpe codes (``sign*m``, any int dtype) -> code bytes ``(sign << 4) | m``."""
    c = np.asarray(codes).astype(np.int64)
    mag = np.abs(c)
    if mag.size and mag.max() > MAX_CODE_MAG:
        raise ValueError(
            f"svpe code magnitude {int(mag.max())} does not fit the kernel's "
            f"{CODE_MAG_BITS}-bit field (max {MAX_CODE_MAG}, i.e. n <= 5)"
        )
    return (np.where(c < 0, CODE_SIGN, 0) | mag).astype(np.uint8)


def decode_svpe_bytes(b: np.ndarray) -> np.ndarray:
    """Code bytes -> svpe codes (int8); bits 7..5 are ignored, as in the kernel."""
    b = np.asarray(b, dtype=np.uint8)
    mag = (b & MAX_CODE_MAG).astype(np.int8)
    return np.where(b & CODE_SIGN, -mag, mag).astype(np.int8)


def codes_from_weights(weights: np.ndarray) -> np.ndarray:
    """Integer svpe weights (0 or +-2**s, s <= 14) -> codes ``sign*(s+1)`` (int8)."""
    w = np.asarray(weights).astype(np.int64)
    mag = np.abs(w)
    s = np.zeros(w.shape, dtype=np.int64)
    nz = mag > 0
    s[nz] = np.round(np.log2(mag[nz])).astype(np.int64)
    if np.any(nz & ((s > MAX_CODE_MAG - 1) | (np.left_shift(1, np.clip(s, 0, 62)) != mag))):
        raise ValueError("svpe weights must be 0 or +-2**s with s <= 14")
    return (np.sign(w) * np.where(nz, s + 1, 0)).astype(np.int8)


def pack_weights(w: np.ndarray, pe: str) -> np.ndarray:
    """Weights ``(C_out, C_in, k, k)`` -> weight packet bytes.

    ``w`` holds svpe codes for ``pe == "svpe"`` and int16-range integers for "vpe".
    """
    if pe == "svpe":
        return _pad_to_words(encode_svpe_codes(w).tobytes())
    if pe == "vpe":
        w64 = np.asarray(w).astype(np.int64)
        if w64.size and (w64.min() < dp.VPE_WEIGHT_MIN or w64.max() > dp.VPE_WEIGHT_MAX):
            raise ValueError("vpe weights must be in the int16 range")
        return _pad_to_words(w64.astype("<i2").tobytes())
    raise ValueError(f"unknown PE kind {pe!r} (expected 'svpe' or 'vpe')")


def unpack_weights(buf: np.ndarray, shape: tuple[int, ...], pe: str) -> np.ndarray:
    """Weight packet bytes -> int64 integer weights of ``shape`` (decoded svpe codes)."""
    count = int(np.prod(shape))
    raw = np.asarray(buf, dtype=np.uint8)
    if pe == "svpe":
        return dp.decode_svpe(decode_svpe_bytes(raw[:count]), 5).reshape(shape)
    return np.frombuffer(raw.tobytes(), dtype="<i2", count=count).astype(np.int64).reshape(shape)


def pack_requant(mult: np.ndarray, bias: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Per-channel (mult, bias, shift) -> requant packet bytes (2 words a channel)."""
    mult, bias, shift = (np.asarray(a).astype(np.int64) for a in (mult, bias, shift))
    if mult.size and (mult.min() < dp.REQUANT_MULT_MIN or mult.max() > dp.REQUANT_MULT_MAX):
        raise ValueError("requant mult must be in the int16 range")
    if shift.size and (shift.min() < 0 or shift.max() > dp.MAX_REQUANT_SHIFT):
        raise ValueError(f"requant shift must be in 0..{dp.MAX_REQUANT_SHIFT}")
    words = np.empty((mult.size, REQUANT_WORDS), dtype="<u8")
    words[:, 0] = bias.astype("<i8").view("<u8")
    words[:, 1] = (mult & 0xFFFF).astype(np.uint64) | (shift.astype(np.uint64) << np.uint64(16))
    return words.view(np.uint8).reshape(-1)


def unpack_requant(buf: np.ndarray, c_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Requant packet bytes -> int64 (mult, bias, shift) of ``c_out`` channels."""
    words = np.frombuffer(np.asarray(buf, dtype=np.uint8).tobytes(), dtype="<u8")
    words = words[: REQUANT_WORDS * c_out].reshape(c_out, REQUANT_WORDS)
    bias = words[:, 0].view("<i8").astype(np.int64)
    mult = (words[:, 1] & np.uint64(0xFFFF)).astype(np.uint16).view(np.int16).astype(np.int64)
    shift = ((words[:, 1] >> np.uint64(16)) & np.uint64(0x3F)).astype(np.int64)
    return mult, bias, shift


# --- what the kernel takes ------------------------------------------------------------
def conv_weights_for(spec: ConvSpec, info: KernelInfo) -> np.ndarray:
    """Check ``spec`` against the kernel and return what the weight packet carries.

    Returns svpe codes (int8) or vpe weights (int64).  Raises ValueError naming the
    first limit the layer breaks (PE kind, conv shape, input channels, accumulator
    width, code range, requant range).
    """
    where = f"layer {spec.name!r}"
    if spec.datapath != info.pe:
        raise ValueError(
            f"{where} is {spec.datapath} but the kernel's PE_KIND register says {info.pe}"
        )
    if not dp.conv_engine_takes(spec.kernel, spec.stride, spec.padding, spec.groups):
        raise ValueError(
            f"{where}: the conv engine runs 3x3 pad 1 or 1x1 pad 0, stride 1, groups 1; "
            f"got {spec.kernel}x{spec.kernel} pad {spec.padding} stride {spec.stride} "
            f"groups {spec.groups}"
        )
    if spec.in_channels > info.max_cin:
        raise ValueError(
            f"{where} has {spec.in_channels} input channels; the kernel's MAX_CIN register "
            f"allows {info.max_cin} (input channels are never tiled)"
        )
    max_w = int(np.abs(spec.weights).max(initial=0))
    bits = dp.accumulator_bits(spec.fan_in, max(max_w, 1))
    if bits > info.acc_bits:
        raise ValueError(
            f"{where} needs a {bits}-bit accumulator; the kernel's ACC_BITS register is "
            f"{info.acc_bits}"
        )
    for name, arr, lo, hi in (
        ("mult", spec.mult, dp.REQUANT_MULT_MIN, dp.REQUANT_MULT_MAX),
        ("shift", spec.shift, 0, dp.MAX_REQUANT_SHIFT),
    ):
        if arr.size and (arr.min() < lo or arr.max() > hi):
            raise ValueError(f"{where}: requant {name} outside {lo}..{hi}")
    if info.pe == "svpe":
        codes = spec.codes if spec.codes is not None else codes_from_weights(spec.weights)
        if np.abs(codes.astype(np.int64)).max(initial=0) > MAX_CODE_MAG:
            raise ValueError(f"{where}: svpe codes beyond +-{MAX_CODE_MAG} (n > 5)")
        if not np.array_equal(dp.decode_svpe(codes, 5), spec.weights):
            raise ValueError(f"{where}: svpe codes and weights disagree")
        return np.asarray(codes)
    w = spec.weights.astype(np.int64)
    if w.size and (w.min() < dp.VPE_WEIGHT_MIN or w.max() > dp.VPE_WEIGHT_MAX):
        raise ValueError(f"{where}: vpe weights outside the int16 range")
    return w


def check_manifest(manifest: Mapping, info: KernelInfo) -> None:
    """Refuse a bundle this kernel cannot run, with one message listing every reason.

    Checks the bundle's ``datapath`` against PE_KIND and each conv layer the engine
    takes (see :func:`datapath.conv_engine_takes`) against MAX_CIN, ACC_BITS and the code width.
    """
    problems = []
    datapath = manifest.get("datapath")
    name = manifest.get("name", "?")
    if datapath != info.pe:
        problems.append(
            f"the bundle's datapath is {datapath!r} but the kernel's PE_KIND register says "
            f"{info.pe!r} (use the {datapath} bitstream/build, or a {info.pe} bundle)"
        )
    bits = manifest.get("weight_bits")
    if datapath == "svpe" and isinstance(bits, int) and bits > 1 + CODE_MAG_BITS:
        problems.append(f"svpe weight_bits {bits} > {1 + CODE_MAG_BITS}")
    for layer in manifest.get("layers", []):
        if layer.get("op") != "conv":
            continue
        k = int(layer.get("kernel", 0))
        if not dp.conv_engine_takes(
            k,
            int(layer.get("stride", 1)),
            int(layer.get("padding", 0)),
            int(layer.get("groups", 1)),
        ):
            continue  # runs on the ARM cores
        cin = int(layer["in_shape"][0])
        if cin > info.max_cin:
            problems.append(
                f"layer {layer.get('name')!r}: {cin} input channels > MAX_CIN {info.max_cin}"
            )
        acc = layer.get("acc_bits")
        if acc is not None and int(acc) > info.acc_bits:
            problems.append(
                f"layer {layer.get('name')!r}: acc_bits {acc} > ACC_BITS {info.acc_bits}"
            )
    if problems:
        raise ValueError(
            f"bundle {name!r} cannot run on this nbq_conv kernel ({info.pe}, Pm={info.pm}, "
            f"Pn={info.pn}, MAX_CIN={info.max_cin}, ACC_BITS={info.acc_bits}): "
            + "; ".join(problems)
        )


# --- tiling ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Tile:
    """One call's spatial window.  Ranges are half-open ``(start, stop)``.

    ``conv_rows``/``conv_cols``: conv outputs computed (before the pool);
    ``in_rows``/``in_cols``: input pixels sent (the halo included, padding not);
    ``out_rows``/``out_cols``: where the call's output lands in the layer output;
    ``pads``: (top, bottom, left, right) zero padding the kernel inserts.
    """

    conv_rows: tuple[int, int]
    conv_cols: tuple[int, int]
    in_rows: tuple[int, int]
    in_cols: tuple[int, int]
    out_rows: tuple[int, int]
    out_cols: tuple[int, int]
    pads: tuple[bool, bool, bool, bool]

    @property
    def flags(self) -> int:
        bits = (Flag.PAD_TOP, Flag.PAD_BOTTOM, Flag.PAD_LEFT, Flag.PAD_RIGHT)
        return int(sum(b for b, on in zip(bits, self.pads, strict=True) if on))


@dataclass(frozen=True)
class LayerPlan:
    """How one layer is cut into calls: output-channel groups x spatial tiles.

    For each group the weights are loaded once (FLAGS.LOAD on its first call) and
    then every image and every tile runs against them.
    """

    h: int
    w: int
    c_in: int
    c_out: int
    kernel: int
    pool: int
    out_h: int
    out_w: int
    groups: tuple[tuple[int, int], ...]
    tiles: tuple[Tile, ...]


def _in_range(c0: int, c1: int, p: int, size: int) -> tuple[int, int]:
    return max(c0 - p, 0), min(c1 + p, size)


def _split(end: int, step: int, fits) -> list[tuple[int, int]]:
    """Cut conv positions [0, end) into runs [c0, c1) whose lengths are multiples of ``step``.

    Each run is the longest one ``fits(c0, c1)`` accepts (``fits`` is monotone in c1;
    ``end`` is a multiple of ``step``).  Raises ValueError if not even one step fits.
    """
    runs, c0 = [], 0
    while c0 < end:
        if not fits(c0, c0 + step):
            raise ValueError("one step does not fit")
        lo, hi = 1, (end - c0) // step  # steps: lo fits; find the largest that fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits(c0, c0 + mid * step):
                lo = mid
            else:
                hi = mid - 1
        runs.append((c0, c0 + lo * step))
        c0 += lo * step
    return runs


def plan_layer(
    h: int,
    w: int,
    c_in: int,
    c_out: int,
    kernel: int,
    pool: int,
    info: KernelInfo,
    max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES,
) -> LayerPlan:
    """Cut a conv layer (``h x w x c_in`` in, ``c_out`` out) into kernel calls.

    Every call respects the kernel's registers (``max_h``, ``max_w``, ``max_cout``)
    and keeps every packet (weights, requant, feature map in, feature map out)
    within ``max_packet_bytes``.  With a pool, tiles start on even conv rows and
    columns so that no 2x2 window is split.  Raises ValueError when the layer
    cannot be cut (``c_in > max_cin``, or packets that cannot be made small enough).
    """
    if kernel not in (1, 3):
        raise ValueError(f"kernel {kernel} not supported (3x3 pad 1 or 1x1 pad 0)")
    if c_in > info.max_cin:
        raise ValueError(f"{c_in} input channels > MAX_CIN {info.max_cin}")
    p = (kernel - 1) // 2
    step = 2 if pool else 1
    end_h, end_w = (h // 2 * 2, w // 2 * 2) if pool else (h, w)
    out_h, out_w = end_h // step, end_w // step
    limit = max_packet_bytes // WORD_BYTES * WORD_BYTES
    w_item = 1 if info.pe == "svpe" else 2

    # output-channel groups: weights and requant packets within limits
    per_cout = max(c_in * kernel * kernel * w_item, REQUANT_WORDS * WORD_BYTES)
    ct = min(c_out, info.max_cout, limit // per_cout)
    if ct < 1:
        raise ValueError(
            f"the weights of one output channel ({per_cout} bytes) exceed the "
            f"{max_packet_bytes}-byte packet limit"
        )
    if ct < c_out and ct >= info.pn:
        ct -= ct % info.pn  # whole Pn groups
    groups = tuple((c, min(c + ct, c_out)) for c in range(0, c_out, ct))
    if out_h == 0 or out_w == 0:
        return LayerPlan(h, w, c_in, c_out, kernel, pool, out_h, out_w, groups, ())

    def span(a: int, b: int, size: int) -> int:  # input pixels needed for conv [a, b)
        lo, hi = _in_range(a, b, p, size)
        return hi - lo

    def fits_counts(in_h: int, in_w: int, out_pixels: int) -> bool:
        return (
            in_h <= info.max_h
            and in_w <= info.max_w
            and 2 * in_h * in_w * c_in <= limit
            and 2 * out_pixels * ct <= limit
        )

    def fits(rows: tuple[int, int], cols: tuple[int, int]) -> bool:
        out_pixels = (rows[1] - rows[0]) // step * ((cols[1] - cols[0]) // step)
        return fits_counts(span(*rows, h), span(*cols, w), out_pixels)

    # columns: as wide as MAX_W and the thinnest interior row band (one step of conv
    # rows plus the halo) allow; then rows: as many as fit
    band = min(step + 2 * p, h)
    try:
        col_runs = _split(
            end_w, step, lambda a, b: fits_counts(band, span(a, b, w), (b - a) // step)
        )
    except ValueError:
        raise ValueError(
            f"layer {h}x{w}x{c_in} -> {c_out}: no tile fits the kernel (MAX_H {info.max_h}, "
            f"MAX_W {info.max_w}) and a {max_packet_bytes}-byte packet"
        ) from None
    tiles = []
    for cols in col_runs:
        for rows in _split(end_h, step, lambda a, b, c=cols: fits((a, b), c)):
            tiles.append(_make_tile(rows, cols, p, h, w, step))
    return LayerPlan(h, w, c_in, c_out, kernel, pool, out_h, out_w, groups, tuple(tiles))


def _make_tile(rows, cols, p, h, w, step) -> Tile:
    in_rows, in_cols = _in_range(*rows, p, h), _in_range(*cols, p, w)
    pads = (
        rows[0] - p < 0,
        rows[1] + p > h,
        cols[0] - p < 0,
        cols[1] + p > w,
    )
    out_rows = (rows[0] // step, rows[1] // step)
    out_cols = (cols[0] // step, cols[1] // step)
    return Tile(rows, cols, in_rows, in_cols, out_rows, out_cols, pads)


# --- the scheduler --------------------------------------------------------------------
def run_conv(
    device: ConvDevice,
    x: np.ndarray,
    spec: ConvSpec,
    max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES,
) -> np.ndarray:
    """Run one conv layer on the kernel: int16 NHWC in, int16 NHWC out.

    Bit-exact with :func:`pynq_nbq.ops.conv_layer`.  Raises ValueError if the
    kernel cannot take the layer and :class:`KernelError` if a call fails.
    """
    info = device.info
    w = conv_weights_for(spec, info)
    if x.dtype != np.int16 or x.ndim != 4 or x.shape[3] != spec.in_channels:
        raise ValueError(
            f"layer {spec.name!r}: input must be int16 NHWC with {spec.in_channels} "
            f"channels, got {x.dtype} {x.shape}"
        )
    n, h, wd, _ = x.shape
    k = spec.kernel
    plan = plan_layer(
        h, wd, spec.in_channels, spec.out_channels, k, spec.pool, info, max_packet_bytes
    )
    out = np.zeros((n, plan.out_h, plan.out_w, spec.out_channels), dtype=np.int16)
    if not plan.tiles or n == 0:
        return out
    base = (Flag.K3 if k == 3 else 0) | (Flag.RELU if spec.relu else 0)
    base |= Flag.POOL if spec.pool else 0
    step = 2 if spec.pool else 1
    for co0, co1 in plan.groups:
        load_packets = [
            pack_weights(w[co0:co1], info.pe),
            pack_requant(spec.mult[co0:co1], spec.bias[co0:co1], spec.shift[co0:co1]),
        ]
        load = True
        for i in range(n):
            for t in plan.tiles:
                (r0, r1), (c0, c1) = t.in_rows, t.in_cols
                fm = pack_activations(x[i, r0:r1, c0:c1, :])
                oh = (t.conv_rows[1] - t.conv_rows[0]) // step
                ow = (t.conv_cols[1] - t.conv_cols[0]) // step
                regs = {
                    "IN_H": r1 - r0,
                    "IN_W": c1 - c0,
                    "C_IN": spec.in_channels,
                    "C_OUT": co1 - co0,
                    "FLAGS": int(base | t.flags | (Flag.LOAD if load else 0)),
                }
                packets = [*load_packets, fm] if load else [fm]
                out_count = oh * ow * (co1 - co0)
                data, status = device.call(regs, packets, words_for(2 * out_count) * WORD_BYTES)
                if status:
                    raise KernelError(
                        f"layer {spec.name!r}: kernel call {regs} failed: "
                        f"STATUS {describe_status(status)}"
                    )
                y = unpack_activations(data, out_count).reshape(oh, ow, co1 - co0)
                out[i, t.out_rows[0] : t.out_rows[1], t.out_cols[0] : t.out_cols[1], co0:co1] = y
                load = False
    return out


# --- a numpy model of one kernel call -------------------------------------------------
class ReferenceDevice:
    """The kernel's behaviour per call, in numpy: a :class:`ConvDevice` for tests.

    Decodes the packets, runs :func:`pynq_nbq.ops.conv_layer` on the (padded) tile
    and packs the result - the expected output of the HLS kernel for the same
    call.  It mirrors the kernel's STATUS codes for bad configurations and raises
    :class:`KernelError` for packets of the wrong size.
    """

    def __init__(self, info: KernelInfo):
        self.info = info
        self._held: tuple | None = None  # (c_in, c_out, k3, weights, mult, bias, shift)

    def call(
        self, regs: Mapping[str, int], packets: Sequence[np.ndarray], out_nbytes: int
    ) -> tuple[np.ndarray, int]:
        info, f = self.info, int(regs["FLAGS"])
        if f & Flag.PROBE:
            return np.zeros(0, np.uint8), 0
        in_h, in_w, c_in, c_out = (int(regs[r]) for r in ("IN_H", "IN_W", "C_IN", "C_OUT"))
        k3, pool = bool(f & Flag.K3), bool(f & Flag.POOL)
        pt, pb, pl, pr = (
            bool(f & b) for b in (Flag.PAD_TOP, Flag.PAD_BOTTOM, Flag.PAD_LEFT, Flag.PAD_RIGHT)
        )
        k = 3 if k3 else 1
        vh, vw = in_h + pt + pb, in_w + pl + pr
        ok = (
            1 <= in_h <= info.max_h
            and 1 <= in_w <= info.max_w
            and 1 <= c_in <= info.max_cin
            and 1 <= c_out <= info.max_cout
            and vh >= k + pool
            and vw >= k + pool
            and not f & ~FLAG_ALL
            and (k3 or not (pt or pb or pl or pr))
        )
        if not ok:
            return np.zeros(0, np.uint8), int(Status.BAD_CONFIG)
        packets = list(packets)
        if f & Flag.LOAD:
            if len(packets) != 3:
                raise KernelError(f"LOAD call needs 3 packets, got {len(packets)}")
            w_item = 1 if info.pe == "svpe" else 2
            self._expect(packets[0], c_out * c_in * k * k * w_item, "weight")
            self._expect(packets[1], c_out * REQUANT_WORDS * WORD_BYTES, "requant")
            wts = unpack_weights(packets[0], (c_out, c_in, k, k), info.pe)
            self._held = (c_in, c_out, k3, wts, *unpack_requant(packets[1], c_out))
            packets = packets[2:]
        elif self._held is None or self._held[:3] != (c_in, c_out, k3):
            return np.zeros(0, np.uint8), int(Status.NO_WEIGHTS)
        if len(packets) != 1:
            raise KernelError(f"expected 1 feature-map packet, got {len(packets)}")
        self._expect(packets[0], in_h * in_w * c_in * 2, "feature-map")
        x = unpack_activations(packets[0], in_h * in_w * c_in).reshape(1, in_h, in_w, c_in)
        x = np.pad(x, ((0, 0), (int(pt), int(pb)), (int(pl), int(pr)), (0, 0)))
        _, _, _, wts, mult, bias, shift = self._held
        spec = ConvSpec(
            "tile",
            wts,
            mult,
            bias,
            shift,
            padding=0,
            relu=bool(f & Flag.RELU),
            pool=2 if pool else 0,
            datapath=info.pe,
            n_bits=5 if info.pe == "svpe" else 16,
        )
        y = pack_activations(conv_layer(x, spec)[0])
        if len(y) != out_nbytes:
            raise KernelError(f"output packet is {len(y)} bytes, the host expects {out_nbytes}")
        return y, 0

    @staticmethod
    def _expect(packet: np.ndarray, nbytes: int, what: str) -> None:
        if len(packet) != words_for(nbytes) * WORD_BYTES:
            raise KernelError(
                f"{what} packet is {len(packet)} bytes, the kernel reads "
                f"{words_for(nbytes) * WORD_BYTES}"
            )


class RecordingDevice:
    """Wraps a device and records every call (for test-vector files)."""

    def __init__(self, inner: ConvDevice):
        self.inner = inner
        self.info = inner.info
        self.calls: list[tuple[dict[str, int], list[np.ndarray], int, np.ndarray]] = []

    def call(self, regs, packets, out_nbytes):
        data, status = self.inner.call(regs, packets, out_nbytes)
        self.calls.append((dict(regs), [np.asarray(p) for p in packets], status, data))
        return data, status


# --- test-vector files for the C++ testbench (hls/tb_nbq_conv.cpp) --------------------
VECTOR_MAGIC = b"NBQV"
VECTOR_VERSION = 1


def write_vectors(path: str | Path, info: KernelInfo, calls) -> None:
    """Write recorded calls (see :class:`RecordingDevice`) as a testbench vector file.

    Little-endian: ``"NBQV"``, u32 version, u32 PE_KIND, PM, PN, MAX_H, MAX_W,
    MAX_CIN, MAX_COUT, u32 calls; per call u32 IN_H, IN_W, C_IN, C_OUT, FLAGS,
    u32 packets, per packet u32 words + the words, u32 expected STATUS,
    u32 output words + the words.
    """
    out = bytearray(VECTOR_MAGIC)
    head = (
        VECTOR_VERSION,
        PE_KINDS[info.pe],
        info.pm,
        info.pn,
        info.max_h,
        info.max_w,
        info.max_cin,
        info.max_cout,
        len(calls),
    )
    out += struct.pack("<9I", *head)
    for regs, packets, status, data in calls:
        out += struct.pack("<5I", *(int(regs[r]) for r in WRITE_REGISTERS))
        out += struct.pack("<I", len(packets))
        for p in packets:
            out += struct.pack("<I", len(p) // WORD_BYTES) + bytes(np.asarray(p, np.uint8))
        out += struct.pack("<II", status, len(data) // WORD_BYTES) + bytes(
            np.asarray(data, np.uint8)
        )
    Path(path).write_bytes(bytes(out))


# --- the C++ side of the contract -----------------------------------------------------
_DEFINE = re.compile(r"^\s*#define\s+(NBQ_\w+)\s+(.+?)\s*(//.*)?$")


def parse_params_header(path: str | Path | None = None) -> dict[str, int]:
    """The integer ``#define NBQ_*`` values of ``hls/nbq_params.h``.

    Only plain integer expressions are evaluated (literals, other NBQ_ names,
    ``<< | ( )``); a name defined twice (an ``#if`` default) keeps its first value.
    """
    text = Path(path or HLS_DIR / "nbq_params.h").read_text()
    values: dict[str, int] = {}
    for line in text.splitlines():
        m = _DEFINE.match(line)
        if not m or m.group(1) in values:
            continue
        expr = re.sub(r"\b(0x[0-9a-fA-F]+|\d+)[uU]\b", r"\1", m.group(2))
        expr = re.sub(r"\bNBQ_\w+\b", lambda t: str(values.get(t.group(0), t.group(0))), expr)
        if re.fullmatch(r"[0-9a-fA-Fx()<|+\s-]+", expr):
            values[m.group(1)] = int(eval(expr, {"__builtins__": {}}))  # noqa: S307
    return values


def check_vitis_header(text: str) -> list[str]:
    """Compare a Vitis-generated ``x<top>_hw.h`` with :data:`REGISTERS`.

    Run it on ``.../impl/misc/drivers/nbq_conv_v1_0/src/xnbq_conv_hw.h`` after
    ``run_hls.tcl``; returns the mismatches (empty: the map is as documented).
    """
    found = {}
    for m in re.finditer(r"#define\s+XNBQ_CONV_CTRL_ADDR_(\w+)_DATA\s+0x([0-9a-fA-F]+)", text):
        found[m.group(1).lower()] = int(m.group(2), 16)
    problems = []
    for reg in (*WRITE_REGISTERS, *READ_REGISTERS):
        port = PORT_NAMES[reg]
        if port not in found:
            problems.append(f"{reg}: no XNBQ_CONV_CTRL_ADDR_{port.upper()}_DATA in the header")
        elif found[port] != REGISTERS[reg]:
            problems.append(
                f"{reg}: Vitis put it at 0x{found[port]:x}, pynq_nbq expects 0x{REGISTERS[reg]:x}"
            )
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pynq_nbq.streams check-header xnbq_conv_hw.h``: verify a Vitis build."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m pynq_nbq.streams")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ch = sub.add_parser("check-header", help="compare Vitis's xnbq_conv_hw.h with REGISTERS")
    ch.add_argument("header")
    args = ap.parse_args(argv)
    problems = check_vitis_header(Path(args.header).read_text())
    for p in problems:
        print(p)
    print("register map: " + ("MISMATCH" if problems else "ok"))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
