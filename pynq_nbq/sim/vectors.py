"""Test-vector files for the C++ testbench (``hls/tb_nbq_conv.cpp``)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from ..kernel.protocol import PE_KINDS, WORD_BYTES, WRITE_REGISTERS, KernelInfo, status_word

VECTOR_MAGIC = b"NBQV"
VECTOR_VERSION = 3  #: 2: output packets end with the status word; 3: 16-byte words


def write_vectors(path: str | Path, info: KernelInfo, calls) -> None:
    """Write recorded calls (see :class:`RecordingDevice`) as a testbench vector file.

    Little-endian: ``"NBQV"``, u32 version, u32 PE_KIND, PM, PN, MAX_H, MAX_W,
    MAX_CIN, MAX_COUT, u32 calls; per call u32 IN_H, IN_W, C_IN, C_OUT, FLAGS,
    u32 packets, per packet u32 words + the words (``WORD_BYTES`` each), u32 expected STATUS,
    u32 output words + the words (the whole output packet: the feature map, then
    the status word).
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
        packet = bytes(np.asarray(data, np.uint8)) + bytes(status_word(status))
        out += struct.pack("<II", status, len(packet) // WORD_BYTES) + packet
    Path(path).write_bytes(bytes(out))
