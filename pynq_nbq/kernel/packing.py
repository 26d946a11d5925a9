"""Items <-> stream words: the one packing implementation of ``csim`` and ``fpga``.

Layouts (docs/datapath.md section 5): activations int16, 8 a word; svpe weights
one byte ``(sign << 4) | m`` a code, 16 a word; vpe weights int16, 8 a word;
requant 16 bytes (one word) per output channel, ``bias`` (int64) then
``mult | shift << 16`` (uint64).  Every packet is whole 128-bit little-endian words
(``protocol.WORD_BITS``), the last zero-padded.
"""

from __future__ import annotations

import numpy as np

from .. import datapath as dp
from .protocol import (
    CODE_MAG_BITS,
    CODE_SIGN,
    MAX_CODE_MAG,
    REQUANT_BYTES,
    WORD_BYTES,
    words_for,
)


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
            f"{CODE_MAG_BITS}-bit field (max {MAX_CODE_MAG}, i.e. n <= {dp.SVPE_MAX_BITS})"
        )
    return (np.where(c < 0, CODE_SIGN, 0) | mag).astype(np.uint8)


def decode_svpe_bytes(b: np.ndarray) -> np.ndarray:
    """Code bytes -> svpe codes (int8); bits 7..5 are ignored, as in the kernel."""
    b = np.asarray(b, dtype=np.uint8)
    mag = (b & MAX_CODE_MAG).astype(np.int8)
    return np.where(b & CODE_SIGN, -mag, mag).astype(np.int8)


def pack_weights(w: np.ndarray, pe: dp.PEKind | str) -> np.ndarray:
    """Weights ``(C_out, C_in, k, k)`` -> weight packet bytes.

    ``w`` holds svpe codes for ``PEKind.SVPE`` and int16-range integers for ``VPE``;
    ``pe`` may also be the string "svpe"/"vpe" (ValueError for anything else).
    """
    if dp.PEKind.parse(pe) is dp.PEKind.SVPE:
        return _pad_to_words(encode_svpe_codes(w).tobytes())
    w64 = np.asarray(w).astype(np.int64)
    if w64.size and (w64.min() < dp.VPE_WEIGHT_MIN or w64.max() > dp.VPE_WEIGHT_MAX):
        raise ValueError("vpe weights must be in the int16 range")
    return _pad_to_words(w64.astype("<i2").tobytes())


def unpack_weights(buf: np.ndarray, shape: tuple[int, ...], pe: dp.PEKind | str) -> np.ndarray:
    """Weight packet bytes -> int64 integer weights of ``shape`` (decoded svpe codes)."""
    count = int(np.prod(shape))
    raw = np.asarray(buf, dtype=np.uint8)
    if dp.PEKind.parse(pe) is dp.PEKind.SVPE:
        return dp.decode_svpe(decode_svpe_bytes(raw[:count]), dp.SVPE_MAX_BITS).reshape(shape)
    return np.frombuffer(raw.tobytes(), dtype="<i2", count=count).astype(np.int64).reshape(shape)


def pack_requant(mult: np.ndarray, bias: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Per-channel (mult, bias, shift) -> requant packet bytes (16 bytes a channel).

    ValueError listing every range the values break (:func:`datapath.requant_problems`).
    """
    mult, bias, shift = (np.asarray(a).astype(np.int64) for a in (mult, bias, shift))
    problems = dp.requant_problems(mult, bias, shift)
    if problems:
        raise ValueError("; ".join(problems))
    halves = np.empty((mult.size, REQUANT_BYTES // 8), dtype="<u8")
    halves[:, 0] = bias.astype("<i8").view("<u8")
    halves[:, 1] = (mult & 0xFFFF).astype(np.uint64) | (shift.astype(np.uint64) << np.uint64(16))
    return _pad_to_words(halves.tobytes())


def unpack_requant(buf: np.ndarray, c_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Requant packet bytes -> int64 (mult, bias, shift) of ``c_out`` channels."""
    words = np.frombuffer(np.asarray(buf, dtype=np.uint8).tobytes(), dtype="<u8")
    words = words[: REQUANT_BYTES // 8 * c_out].reshape(c_out, REQUANT_BYTES // 8)
    bias = words[:, 0].view("<i8").astype(np.int64)
    mult = (words[:, 1] & np.uint64(0xFFFF)).astype(np.uint16).view(np.int16).astype(np.int64)
    shift = ((words[:, 1] >> np.uint64(16)) & np.uint64(0x3F)).astype(np.int64)
    return mult, bias, shift
