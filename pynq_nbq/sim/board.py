"""A simulated board (any of ``design.BOARD_TARGETS``: PS8 or PS7) that runs the
unmodified ``pynq`` library (test and notebook code).

:class:`SimBoard` is a ``pynq.Device``: pynq's ``Overlay(..., download=False)``,
``MMIO``, ``allocate`` and ``pynq.lib.dma.DMA`` work on it exactly as on a board,
and the ``fpga`` driver runs unchanged.  The board's block design
(:mod:`pynq_nbq.kernel.design`) sets the ``.hwh`` (parsed as pynq parses a Zynq
UltraScale+ or a Zynq-7000 one), the register windows and the DMA's address width.
Behind the registers:

* **AXI DMA in simple mode** (Xilinx PG021, :mod:`.dma_model`): per channel DMACR
  (run/stop, reset), DMASR (halted, idle, internal/slave/decode error), address and
  LENGTH registers; the MSB address registers only on a 64-bit DMA (PS8).  A reset
  takes a few register reads and leaves both channels halted.
* **DDR and the CPU cache**: every ``allocate`` buffer has a CPU view (the numpy
  array) and a separate DDR copy; the DMA reads and writes DDR only, ``flush`` copies
  CPU -> DDR and ``invalidate`` DDR -> CPU, so a missing flush or invalidate gives
  wrong data here as on the board.  A fresh buffer's CPU view holds 0xA5 bytes.
* **The kernel**: its AXI-Lite register file (``protocol.REGISTERS``, ap_ctrl_hs)
  in front of the csim build of ``hls/`` (a private copy of the library, so its
  on-chip weights are its own).  The call registers are **latched at ap_start**, as
  Vitis's s_axilite block samples scalar arguments: a register written after
  ap_start is for the next call.  Sends move into the kernel's input stream once it
  is started; the kernel runs when the host polls (S2MM status or AP_CTRL) with the
  receive armed, and its output packet goes to the armed S2MM buffer: complete on
  TLAST, DMAIntErr when the packet is longer than the buffer.
* **Back-pressure**: while no receive is armed the kernel's output cannot drain; it
  holds :data:`OUT_FIFO_WORDS` words and then stops taking input, so the send of a
  feature map whose output is longer stays busy (MM2S not idle, as a stalled AXI
  stream leaves it) until the receive is armed.  Output sizes come from the latched
  registers and the kernel's geometry (``perfmodel.stages.geometry``).
* **LENGTH** registers keep their low ``c_sg_length_width`` (26) bits, as PG021's do.
* **Fault injection** (:meth:`SimBoard.inject`): ``decode_error`` (the next
  receive hits no memory), ``no_tlast`` (the kernel's next packet has no TLAST),
  ``bad_magic`` (its last word is not a status word),
  ``stall`` (the next receive never completes), ``reset_in_progress`` (a DMA reset
  is under way when the next call starts), ``stuck_reset`` (the DMA never leaves
  reset until :meth:`SimBoard.clear_faults`); and register overrides
  (``overrides={"HW_VERSION": 1 << 16}``, ``{"PE_KIND": 2}``) for a foreign bitstream.
* **A transaction log** (:meth:`SimBoard.record`): every register access of the
  host, in order, as ``(op, cell, register, value)``.

Entry point (stable for notebooks, other tests, ``NBQ_OVERLAY=sim``)::

    from pynq_nbq.sim.board import shared_board
    board = shared_board()                 # one simulated ZCU102 per process
    z2 = shared_board("pynq-z2")           # ... and one PYNQ-Z2 (PS7, 32-bit DMA)
    ol = board.load("svpe")                # pynq.Overlay + kernel + DMA (driver.Overlay)
    from pynq_nbq.backends.fpga import FpgaBackend
    backend = FpgaBackend("sim")           # or: NBQ_OVERLAY=sim nbq classify --backend fpga
    backend = FpgaBackend("sim:pynq-z2")   # another board

Limits of the model: one call's input is run when the host polls, not word by word
(back-pressure is decided per packet: a feature map is taken whole or held);
input words a kernel leaves unread are dropped when it finishes; no interrupts.
"""

from __future__ import annotations

import contextlib
import ctypes
import tempfile
import threading
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pynq
from pynq.buffer import PynqBuffer
from pynq.pl_server import hwh_parser

from .. import datapath as dp
from ..backends import csim
from ..kernel import axi_dma as A
from ..kernel import design
from ..kernel.protocol import (
    READ_REGISTERS,
    REGISTERS,
    WORD_BYTES,
    WRITE_REGISTERS,
    ApCtrl,
    Flag,
    words_for,
)
from .buffer import SimBuffer
from .dma_model import DmaModel
from .hwh import write_overlay_files
from .register_names import DMA_NAMES, KERNEL_NAMES

#: First physical address ``allocate`` hands out (inside the PS DDR of every board: the
#: PYNQ-Z2 has 512 MiB at 0); ``SimBoard(ddr_base=...)`` moves it, e.g. above 4 GiB
#: (0x8_0000_0000: the ZCU102's upper DDR) to exercise the 64-bit DMA's MSB registers.
DDR_BASE = 0x1000_0000
PAGE = 4096
STALE_BYTE = 0xA5  #: what a CPU view holds before the first invalidate
FIFO_WORDS = 64  #: stream words the kernel's input FIFO holds before ap_start
#: Output words the kernel holds while no receive is armed (the packer's buffer, the
#: stream's register slices): an estimate; past it the kernel stops taking input.
OUT_FIFO_WORDS = 16
FAULTS = ("decode_error", "no_tlast", "bad_magic", "stall", "reset_in_progress", "stuck_reset")
_CALL_OVERREAD = 1  # nbq_host_call.h: the kernel wanted more input than was sent
_CALL_OUT_OVERFLOW = 3
#: pynq's .hwh parser class per PS family (pynq 3.0.1 ``pynq.pl_server.hwh_parser``)
_HWH_PARSERS = {"ps8": "_HWHUltrascale", "ps7": "_HWHZynq"}


class SimBoard(pynq.Device, DmaModel):
    """A simulated board (see the module docstring).

    Args:
        board: a board of ``design.BOARD_TARGETS``: its ``.hwh``, register windows and
            DMA address width.
        defines: ``NBQ_*`` overrides of the csim kernel build for both PE kinds (e.g.
            small buffers); default: the build of ``hls/nbq_params.h``.
        overrides: read-only kernel registers to report instead of the build's.
        kind_defines: per PE kind, ``NBQ_*`` overrides applied over ``defines`` (a
            board's own kernel builds, e.g. ``{"svpe": {"NBQ_PM": 16}}``).
        ddr_base: first physical address ``allocate`` hands out (:data:`DDR_BASE`).
    """

    def __init__(
        self,
        board: str = design.DEFAULT_BOARD,
        defines: Mapping[str, int] | None = None,
        overrides: Mapping[str, int] | None = None,
        kind_defines: Mapping[str, Mapping[str, int]] | None = None,
        ddr_base: int = DDR_BASE,
    ):
        target = design.target(board)  # ValueError naming the known boards
        super().__init__(f"sim-{board}")
        self.name = board
        self.family = target.family
        self.capabilities = {"REGISTER_RW": True}
        self.defines = dict(defines or {})
        self.kind_defines: dict[str, dict[str, int]] = {
            str(dp.PEKind.parse(k)): {**self.defines, **v} for k, v in (kind_defines or {}).items()
        }
        self.overrides = dict(overrides or {})
        self.faults: dict[str, int] = {}
        self.allocations = 0  #: buffers allocated so far
        self.kernel_runs = 0  #: kernel calls run so far
        self._log: list | None = None
        self._lock = threading.RLock()
        self._ddr: dict[int, bytearray] = {}
        self._next_addr = ddr_base
        self._dir = Path(tempfile.mkdtemp(prefix="nbq_sim_overlays_"))
        self._kinds: dict[str, csim.CsimKernel] = {}
        self._kind: str | None = None
        self._windows = design.address_map(board)
        self._dma_setup(design.dma_parameters(board)["c_addr_width"])
        self._power_on()

    # --- the board as pynq sees it ----------------------------------------------------------
    def get_bitfile_metadata(self, bitfile_name: str):
        # the parser this board's pynq uses (pynq picks it by the CPU; here: x86)
        parser = getattr(hwh_parser, _HWH_PARSERS[self.family], hwh_parser.HWH)
        hwh = parser(hwh_name=hwh_parser.get_hwh_name(bitfile_name))
        hwh.systemgraph = None  # what pynq's own bitstream handler leaves without a graph
        return hwh

    def set_bitfile_name(self, bitfile_name: str) -> None:
        """What ``Overlay`` calls: parse the ``.hwh`` and 'configure' the fabric with it."""
        super().set_bitfile_name(bitfile_name)
        vlnv = self.ip_dict.get(design.KERNEL_CELL, {}).get("type", "")
        kinds = {design.kernel_vlnv(k): k for k in design.PE_KINDS}
        with self._lock:
            self._kind = kinds.get(vlnv)
            self._power_on()

    def overlay_path(self, kind: str) -> Path:
        """The ``nbq_<kind>.bit`` of this board (written on first use, ``.hwh`` beside)."""
        bit = self._dir / f"{design.bitstream_name(kind)}.bit"
        if not bit.exists():
            write_overlay_files(self._dir, kind, self.name)
        return bit

    def load(self, kind: str):
        """``driver.load_overlay`` on this board: ``pynq.Overlay(download=False)``."""
        from ..kernel.driver import load_overlay

        return load_overlay(kind, self.overlay_path(kind), download=False, device=self)

    # --- memory: DDR behind a CPU cache --------------------------------------------------------
    def allocate(self, shape, dtype, **kwargs) -> PynqBuffer:
        buf = SimBuffer(shape, dtype, device=self, coherent=False)
        nbytes = int(buf.nbytes)
        with self._lock:
            addr = self._next_addr
            self._next_addr += -(-max(nbytes, 1) // PAGE) * PAGE
            self._ddr[addr] = bytearray(nbytes)
            self.allocations += 1
        buf.device_address = addr
        buf.bo = addr
        buf.view(np.uint8).reshape(-1)[:] = STALE_BYTE
        weakref.finalize(buf, self._ddr.pop, addr, None)
        return buf

    def flush(self, bo, offset, ptr, size) -> None:
        """CPU cache -> DDR."""
        self._ddr[bo][offset : offset + size] = ctypes.string_at(ptr, size)

    def invalidate(self, bo, offset, ptr, size) -> None:
        """DDR -> CPU view."""
        ctypes.memmove(ptr, bytes(self._ddr[bo][offset : offset + size]), size)

    def _ddr_span(self, addr: int, nbytes: int) -> tuple[bytearray, int] | None:
        for base, mem in self._ddr.items():
            if base <= addr and addr + nbytes <= base + len(mem):
                return mem, addr - base
        return None

    # --- register access (what MMIO calls) ------------------------------------------------------
    def read_registers(self, address: int, length: int) -> bytes:
        with self._lock:
            cell, off = self._decode(address)
            value = self._dma_read(off) if cell == design.DMA_CELL else self._kernel_read(off)
            self._record("R", cell, off, value)
            return int(value & 0xFFFF_FFFF).to_bytes(length, "little")

    def write_registers(self, address: int, data: bytes) -> None:
        with self._lock:
            cell, off = self._decode(address)
            value = int.from_bytes(data, "little")
            self._record("W", cell, off, value)
            if cell == design.DMA_CELL:
                self._dma_write(off, value)
            else:
                self._kernel_write(off, value)

    def _decode(self, address: int) -> tuple[str, int]:
        for cell, (base, size) in self._windows.items():
            if base <= address < base + size:
                return cell, address - base
        raise RuntimeError(f"simulated board: no AXI slave at 0x{address:x} (a bus error)")

    def _record(self, op: str, cell: str, off: int, value: int) -> None:
        if self._log is not None:
            names = DMA_NAMES if cell == design.DMA_CELL else KERNEL_NAMES
            self._log.append((op, cell, names.get(off, f"0x{off:x}"), value))

    @contextlib.contextmanager
    def record(self) -> Iterator[list]:
        """Collect every register access inside the ``with`` block, in order."""
        log: list = []
        self._log = log
        try:
            yield log
        finally:
            self._log = None

    # --- faults ----------------------------------------------------------------------------------
    def inject(self, fault: str, count: int = 1) -> None:
        """Arm ``fault`` (one of :data:`FAULTS`) for the next ``count`` occasions."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {FAULTS}")
        with self._lock:
            self.faults[fault] = self.faults.get(fault, 0) + count
            if fault in ("reset_in_progress", "stuck_reset"):
                self._begin_reset()

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def _take(self, fault: str) -> bool:
        if self.faults.get(fault, 0) > 0:
            self.faults[fault] -= 1
            return True
        return False

    # --- the DMA (PG021, simple mode: :class:`.dma_model.DmaModel`) and the stream ----------
    def _power_on(self) -> None:
        self._dma_power_on()
        self._pending: list[bytes] = []  # sends waiting for room in the kernel's FIFO
        self._fifo: list[bytes] = []  # packets in the kernel's input stream
        self._regs = dict.fromkeys(WRITE_REGISTERS, 0)
        self._call_regs = dict(self._regs)  # latched at ap_start
        self._ro = dict.fromkeys(READ_REGISTERS, 0)
        self._running = False
        self._done = False

    def _feed(self) -> None:
        """Move sends into the kernel's input stream: all once it runs, else what fits;
        a feature map whose output cannot drain is held (back-pressure)."""
        while self._pending:
            words = sum(len(p) for p in self._fifo) // WORD_BYTES
            if not self._running and words + len(self._pending[0]) // WORD_BYTES > FIFO_WORDS:
                break
            if self._running and self._holds_output(len(self._fifo)):
                break  # the kernel stopped taking input: its output cannot leave
            self._fifo.append(self._pending.pop(0))
        if not self._pending:
            self._sr[A.MM2S] |= int(A.Status.IDLE)

    def _holds_output(self, packets_in: int) -> bool:
        """Whether the next packet (the ``packets_in``-th of the call) is a feature map
        the kernel cannot take: no receive armed and more output than it can hold."""
        if self._armed:
            return False
        regs = self._call_regs
        load = bool(regs["FLAGS"] & Flag.LOAD)
        if packets_in != (2 if load else 0):  # weight and requant packets make no output
            return False
        return self._output_words(regs) > OUT_FIFO_WORDS

    def _output_words(self, regs: Mapping[str, int]) -> int:
        """Words of the output packet a call with these registers writes (its status
        word alone when the registers are out of range)."""
        from ..perfmodel.stages import Call, geometry

        info = self._kernel().info
        f = int(regs["FLAGS"])
        k = 3 if f & Flag.K3 else 1
        top, bottom, left, right = (
            int(bool(f & b)) for b in (Flag.PAD_TOP, Flag.PAD_BOTTOM, Flag.PAD_LEFT, Flag.PAD_RIGHT)
        )
        pads = (top, bottom, left, right)
        h, w, ci, co = (int(regs[r]) for r in ("IN_H", "IN_W", "C_IN", "C_OUT"))
        if not (1 <= h <= info.max_h and 1 <= w <= info.max_w and 1 <= ci <= info.max_cin):
            return 1
        if not 1 <= co <= info.max_cout:
            return 1
        g = geometry(Call(h, w, ci, co, k, bool(f & Flag.POOL), pads), info.pm, info.pn)
        if g.oh < 1 or g.ow < 1:
            return 1
        return words_for(2 * g.oh * g.ow * co) + 1

    # --- the kernel ---------------------------------------------------------------------------
    def _kernel_read(self, off: int) -> int:
        if off == REGISTERS["AP_CTRL"]:
            self._advance()
            if self._running:
                return int(ApCtrl.START)
            bits = int(ApCtrl.IDLE)
            if self._done:
                bits |= int(ApCtrl.DONE)  # clear on read
                self._done = False
            return bits
        name = KERNEL_NAMES.get(off)
        if name is None:
            return 0  # an offset with no register reads as zero
        if name in self._ro:
            return self._ro[name]
        return self._regs.get(name, 0)

    def _kernel_write(self, off: int, value: int) -> None:
        name = KERNEL_NAMES.get(off)
        if name == "AP_CTRL":
            if value & ApCtrl.START and not self._running:
                if self._kind is None:
                    raise RuntimeError("simulated board: no overlay loaded")
                self._running = True
                self._done = False
                self._call_regs = dict(self._regs)  # sampled now, as s_axilite does
                self._feed()
        elif name in self._regs:
            self._regs[name] = value

    def _kernel(self) -> csim.CsimKernel:
        kind = self._kind
        if kind is None:
            raise RuntimeError("simulated board: no overlay loaded")
        if kind not in self._kinds:
            self._kinds[kind] = csim.CsimKernel(
                kind, self.kind_defines.get(kind, self.defines), private=True
            )
        return self._kinds[kind]

    def _advance(self) -> None:
        """Run the started kernel once the receive is armed and its input has arrived."""
        if not (self._running and self._armed) or self._reset_left:
            return
        words, last, ro, rc = self._kernel().raw_call(
            self._call_regs,
            [np.frombuffer(p, np.uint8) for p in self._fifo],
            self._length[A.S2MM],
        )
        if rc == _CALL_OVERREAD:
            return  # the kernel still waits for input words
        self.kernel_runs += 1
        self._fifo.clear()  # model limit: words it left unread are dropped
        self._running, self._done = False, True
        self._ro = {**ro, **self.overrides}
        self._deliver(words, last, overflow=rc == _CALL_OUT_OVERFLOW)

    def _deliver(self, words: np.ndarray, last: np.ndarray, overflow: bool) -> None:
        """The kernel's output packet into the armed S2MM buffer."""
        if self._take("no_tlast"):
            last = np.zeros_like(last)
        if self._take("bad_magic") and len(words):
            words = words.copy()
            # a kernel of another protocol: no "NBQS" in bits 63..32 of the last word
            words[len(words) - WORD_BYTES + 4 : len(words) - WORD_BYTES + 8] = 0
        if self._take("decode_error"):
            self._armed = False
            self._fail(A.S2MM, A.Status.DECODE_ERROR)
            return
        if self._stalled:
            return  # the receive never completes
        length = self._length[A.S2MM]
        ends = np.flatnonzero(last)
        n = (int(ends[0]) + 1) * WORD_BYTES if len(ends) else len(words)
        if n > length or (not len(ends) and (overflow or len(words) >= length)):
            self._armed = False
            self._fail(A.S2MM, A.Status.INTERNAL_ERROR)  # packet longer than the buffer
            return
        if not len(ends):
            return  # no TLAST: the receive waits forever
        span = self._ddr_span(self._addr[A.S2MM], n)
        if span is None:
            self._armed = False
            self._fail(A.S2MM, A.Status.DECODE_ERROR)
            return
        mem, at = span
        mem[at : at + n] = words[:n].tobytes()
        self._length[A.S2MM] = n  # S2MM LENGTH reads the bytes received
        self._armed = False
        self._sr[A.S2MM] |= int(A.Status.IDLE)


#: The simulated board of before the per-board designs (any board, default ZCU102).
SimZcu102 = SimBoard
_BOARDS: dict[tuple, SimBoard] = {}
_BOARDS_LOCK = threading.Lock()


def shared_board(
    board: str = design.DEFAULT_BOARD, kind_defines: Mapping[str, Mapping[str, int]] | None = None
) -> SimBoard:
    """The process-wide simulated board of that name and kernel builds (created on first
    use; ``kind_defines`` as for :class:`SimBoard`, default: today's build)."""
    key = (
        board,
        tuple(sorted((k, tuple(sorted(v.items()))) for k, v in (kind_defines or {}).items())),
    )
    with _BOARDS_LOCK:
        if key not in _BOARDS:
            _BOARDS[key] = SimBoard(board, kind_defines=kind_defines)
        return _BOARDS[key]
