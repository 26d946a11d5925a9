"""Items <-> stream words: the one packing implementation of ``csim`` and ``fpga``.

Layouts (docs/datapath.md section 5): activations int16, 4 a word; svpe weights
one byte ``(sign << 4) | m`` a code, 8 a word; vpe weights int16, 4 a word;
requant two words per output channel, ``bias`` (int64) then ``mult | shift << 16``.
Every packet is whole 64-bit little-endian words, the last zero-padded.
"""

from __future__ import annotations

import numpy as np

from .. import datapath as dp
from .protocol import (
    CODE_MAG_BITS,
    CODE_SIGN,
    MAX_CODE_MAG,
    REQUANT_WORDS,
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
            f"{CODE_MAG_BITS}-bit field (max {MAX_CODE_MAG}, i.e. n <= 5)"
        )
    return (np.where(c < 0, CODE_SIGN, 0) | mag).astype(np.uint8)


def decode_svpe_bytes(b: np.ndarray) -> np.ndarray:
    """Code bytes -> svpe codes (int8); bits 7..5 are ignored, as in the kernel."""
    b = np.asarray(b, dtype=np.uint8)
    mag = (b & MAX_CODE_MAG).astype(np.int8)
    return np.where(b & CODE_SIGN, -mag, mag).astype(np.int8)


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
        return dp.decode_svpe(decode_svpe_bytes(raw[:count]), dp.SVPE_MAX_BITS).reshape(shape)
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
