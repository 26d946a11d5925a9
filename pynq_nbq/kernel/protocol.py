"""The conv kernel's protocol: identification, registers, FLAGS/STATUS bits, the status word.

One definition for every backend that drives the HLS kernel (``hls/``): the
``csim`` backend (the kernel compiled with g++) and the ``fpga`` backend (the
kernel on the board behind an AXI DMA).  ``docs/datapath.md`` section 5 is the
prose specification; ``hls/nbq_params.h`` is the C++ side of the same contract
(``tests/test_streams.py`` parses it and fails if the two drift apart).
Packing of words lives in :mod:`pynq_nbq.kernel.packing`.

Words and packets
-----------------
A stream word is :data:`WORD_BITS` = 128 bits (``kernel/design.py`` STREAM_BITS),
little-endian (byte 0 = bits 7..0).  A packet is one
DMA transfer: a run of items packed into words, lane 0 in the low bits, the last
word zero-padded, TLAST on the last word only.  One kernel call (one tile)
carries, on the input stream, ``[weights, requant]`` when ``FLAGS.LOAD`` is set,
then the feature map; on the output stream, the output feature map then one
status word (STATUS in bits 31..0, ``"NBQS"`` in bits 63..32, the rest zero, TLAST
on it alone).  A PROBE call or a call refused with BAD_CONFIG / NO_WEIGHTS
writes the status word alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntFlag
from pathlib import Path
from typing import Protocol

import numpy as np

from .. import datapath as dp
from ..errors import NbqError
from . import design

#: The kernel's C++ sources (a source checkout); ``hls/nbq_params.h`` mirrors this module.
HLS_DIR = Path(__file__).resolve().parent.parent.parent / "hls"

# --- identification -------------------------------------------------------------------
KERNEL_ID = 0x4E425143  #: HW_ID register: "NBQC"
#: protocol version; another major is refused.  2: every call ends with a status word;
#: 3: 128-bit stream words (8 activations, 16 svpe / 8 vpe weights a word) and one
#: requant word per output channel.
VERSION_MAJOR = 3
VERSION_MINOR = 0  #: 2.1 added the WEIGHT_BITS register (every 3.x kernel has it)
VERSION = (VERSION_MAJOR << 16) | VERSION_MINOR
#: PE_KIND register values (keys: datapath.PEKind, a str enum, so "svpe" works too)
PE_KINDS = {dp.PEKind.SVPE: 1, dp.PEKind.VPE: 2}
PE_NAMES = {v: k for k, v in PE_KINDS.items()}

# --- words ----------------------------------------------------------------------------
WORD_BITS = design.STREAM_BITS  #: AXI-Stream TDATA width (the one definition: design.py)
WORD_BYTES = WORD_BITS // 8
ACT_LANES = WORD_BITS // dp.ACT_BITS  #: int16 activations per word
SVPE_LANES = WORD_BYTES  #: svpe code bytes per word
VPE_LANES = WORD_BITS // dp.VPE_WEIGHT_BITS  #: vpe int16 weights per word
#: svpe code byte: bit 4 sign, bits 3..0 magnitude (the widest code, n = SVPE_MAX_BITS)
MAX_CODE_MAG = dp.max_code(dp.SVPE_MAX_BITS)  #: 15: shifts up to 14, i.e. n <= 5
CODE_MAG_BITS = MAX_CODE_MAG.bit_length()  #: 4
CODE_SIGN = 1 << CODE_MAG_BITS
#: bytes one weight takes in the weight packet (svpe: a code byte; vpe: an int16)
WEIGHT_ITEM_BYTES = {dp.PEKind.SVPE: 1, dp.PEKind.VPE: dp.VPE_WEIGHT_BITS // 8}
#: bytes per output channel in the requant packet: bias (int64) in bits 63..0, then
#: ``mult | shift << 16`` in bits 127..64 - one 128-bit word a channel
REQUANT_BYTES = 16
REQUANT_WORDS = REQUANT_BYTES // WORD_BYTES  #: words per output channel (1)
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
    "WEIGHT_BITS": 0x98,
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
    "WEIGHT_BITS",
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


class ApCtrl(IntFlag):
    """Bits of AP_CTRL (Vitis's ap_ctrl_hs block)."""

    START = 1 << 0  #: write 1 to start a call
    DONE = 1 << 1  #: the call finished (clears when read)
    IDLE = 1 << 2  #: not running
    READY = 1 << 3


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


def weight_vector_words(pe: dp.PEKind | str, pm: int) -> int:
    """Stream words one weight vector of ``pm`` lanes takes (protocol 3.0 weight packet:
    per output channel, per input group of Pm channels, per tap, one vector padded to
    whole words; ``hls/nbq_conv.cpp`` WV_WORDS)."""
    return -(-pm * WEIGHT_ITEM_BYTES[dp.PEKind.parse(pe)] // WORD_BYTES)


def words_for(nbytes: int) -> int:
    """Stream words that hold ``nbytes`` bytes."""
    return -(-int(nbytes) // WORD_BYTES)


#: Bits 63..32 of the status word that ends every output packet: "NBQS" (bits
#: WORD_BITS-1..64 are zero).
STATUS_MAGIC = 0x4E425153
STATUS_WORDS = 1  #: words the status word adds to every output packet


def status_word(status: int) -> np.ndarray:
    """The WORD_BYTES bytes of the status word a call with STATUS ``status`` ends with."""
    word = (STATUS_MAGIC << 32) | (int(status) & 0xFFFF_FFFF)
    return np.frombuffer(word.to_bytes(WORD_BYTES, "little"), dtype=np.uint8).copy()


def split_output(
    raw: np.ndarray, fm_nbytes: int, status_register: int | None = None
) -> tuple[np.ndarray, int]:
    """Check one received output packet and split it into (feature map, STATUS).

    ``raw`` is every byte the receive (S2MM) transfer delivered, up to and including
    the TLAST word; ``fm_nbytes`` the feature-map bytes the host expects (whole
    words).  The last word must be a status word (``STATUS_MAGIC`` in bits 63..32).
    A call refused with BAD_CONFIG or NO_WEIGHTS sends the status word alone; any
    other call sends exactly ``fm_nbytes`` first.  ``status_register``, if given, is
    the STATUS register read after the call and must equal the word's value.
    Returns ``(fm, status)``; ``fm`` is empty when ``status != 0``.  Raises
    :class:`KernelError` naming what was received when any of this does not hold.
    """
    raw = np.asarray(raw, dtype=np.uint8).reshape(-1)
    n = len(raw)
    if n < WORD_BYTES or n % WORD_BYTES:
        raise KernelError(
            f"protocol error: received {n} bytes, expected whole {WORD_BYTES}-byte words "
            "ending in a status word"
        )
    word = int.from_bytes(raw[-WORD_BYTES:].tobytes(), "little")
    magic, status = word >> 32, word & 0xFFFF_FFFF  # magic: every bit above 31
    if magic != STATUS_MAGIC:
        raise KernelError(
            f"protocol error: the last of {n // WORD_BYTES} received words is "
            f"0x{word:0{2 * WORD_BYTES}x}, not a status word (bits 63..32 must be "
            f'0x{STATUS_MAGIC:08x} "NBQS", the bits above zero): a kernel of another '
            "protocol, or the receive stopped early"
        )
    if status_register is not None and status_register != status:
        raise KernelError(
            f"protocol error: status word says {describe_status(status)} but the STATUS "
            f"register reads {describe_status(status_register)}"
        )
    refused = status & (Status.BAD_CONFIG | Status.NO_WEIGHTS)
    want = WORD_BYTES if refused else fm_nbytes + STATUS_WORDS * WORD_BYTES
    if n != want:
        what = "the status word alone" if refused else "feature map + status word"
        raise KernelError(
            f"protocol error: received {n} bytes with STATUS {describe_status(status)}, "
            f"expected {want} ({what})"
        )
    if status:
        return np.zeros(0, np.uint8), status
    return raw[:-WORD_BYTES], 0


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


class DeviceError(KernelError):
    """The board's DMA or kernel failed a call (a DMA error bit, a reset that never
    finished); the driver has reset the DMA, and the next call may succeed."""


class DeviceTimeout(DeviceError, TimeoutError):
    """A call did not finish within its deadline; the driver has reset the DMA."""


# --- what the kernel is ---------------------------------------------------------------
def widest_weight_bits(pe: dp.PEKind | str) -> int:
    """The widest weight a build of PE kind ``pe`` can have: svpe n = SVPE_MAX_BITS, vpe 16."""
    return dp.SVPE_MAX_BITS if dp.PEKind.parse(pe) is dp.PEKind.SVPE else dp.VPE_WEIGHT_BITS


@dataclass(frozen=True)
class KernelInfo:
    """The kernel's read-only registers: what a bitstream (or csim build) can run.

    Attributes: ``pe`` the :class:`~pynq_nbq.datapath.PEKind` (a string "svpe"/"vpe" is
    parsed into one); ``pm``, ``pn`` input/output channels per cycle;
    ``max_h``, ``max_w`` input tile rows/columns; ``max_cin`` input channels (never
    tiled); ``max_cout`` output channels per call; ``acc_bits`` accumulator width;
    ``word_bits`` stream width; ``version`` the HW_VERSION register; ``weight_bits``
    the widest weight the build runs (svpe: n of its code width, 3 or 5; vpe: 16;
    None means the widest of the PE kind).
    """

    pe: dp.PEKind
    pm: int
    pn: int
    max_h: int
    max_w: int
    max_cin: int
    max_cout: int
    acc_bits: int = dp.ACC_BITS
    word_bits: int = WORD_BITS
    version: int = VERSION
    weight_bits: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "pe", dp.PEKind.parse(self.pe))
        if self.weight_bits is None:
            object.__setattr__(self, "weight_bits", widest_weight_bits(self.pe))

    @property
    def code_bits(self) -> int:
        """``weight_bits`` as set (``__post_init__`` fills a None with the widest)."""
        return self.weight_bits if self.weight_bits is not None else widest_weight_bits(self.pe)

    @property
    def limits(self) -> dict[str, int]:
        """The buffer maxima as the performance model's ``limits`` dict."""
        return {
            "max_h": self.max_h,
            "max_w": self.max_w,
            "max_cin": self.max_cin,
            "max_cout": self.max_cout,
        }

    @property
    def weight_item_bytes(self) -> int:
        """Bytes one weight takes in this kernel's weight packet."""
        return WEIGHT_ITEM_BYTES[self.pe]

    @property
    def weight_vector_words(self) -> int:
        """Stream words of one weight vector (Pm lanes of one output channel, tap and
        input group) in the weight packet: ``ceil(Pm * item bytes / WORD_BYTES)``."""
        return weight_vector_words(self.pe, self.pm)

    def weight_bytes_per_cout(self, c_in: int, kernel: int) -> int:
        """Weight-packet bytes of one output channel: ``ceil(C_in / Pm) * k^2`` vectors."""
        return -(-c_in // self.pm) * kernel * kernel * self.weight_vector_words * WORD_BYTES

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
            weight_bits=regs["WEIGHT_BITS"],
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
            "WEIGHT_BITS": self.code_bits,
        }


class ConvDevice(Protocol):
    """What a backend provides to run tiles: the kernel behind its registers and DMA.

    ``call`` writes :data:`WRITE_REGISTERS` from ``regs``, arms the receive of one
    packet of ``out_nbytes`` feature-map bytes plus the status word, starts the
    kernel, sends each packet of ``packets`` as one DMA transfer (TLAST on its last
    word), waits for ap_done and returns ``(feature-map bytes, STATUS)`` (checked
    with :func:`split_output`).  It raises :class:`KernelError` on a stream
    protocol fault (a packet the kernel did not consume exactly, an output packet
    of the wrong length or without a status word).  When STATUS is not 0 the
    output is empty.
    """

    info: KernelInfo

    def call(
        self, regs: Mapping[str, int], packets: Sequence[np.ndarray], out_nbytes: int
    ) -> tuple[np.ndarray, int]: ...
