"""Items <-> stream words: the one packing implementation of ``csim`` and ``fpga``.

Layouts (docs/datapath.md section 5): activations int16, 8 a word; weights in the
kernel's order - per output channel, per input group of Pm channels, per tap, one
vector of Pm lanes padded to whole words (svpe one byte ``(sign << 4) | m`` a lane,
vpe int16);
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
    weight_vector_words,
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


def _vectors(shape: tuple[int, ...], pm: int) -> tuple[int, int, int, int]:
    """(C_out, input groups, taps, lanes) of the kernel-order weight array."""
    c_out, c_in, kh, kw = shape
    if kh != kw or pm < 1:
        raise ValueError(f"weights must be (C_out, C_in, k, k) and Pm >= 1, got {shape}, {pm}")
    return c_out, -(-c_in // pm), kh * kw, pm


def pack_weights(w: np.ndarray, pe: dp.PEKind | str, pm: int) -> np.ndarray:
    """Weights ``(C_out, C_in, k, k)`` -> weight packet bytes for a kernel of ``pm`` lanes.

    Order (protocol 3.0): for each output channel, each input group of ``pm`` channels,
    each tap ``t = ky * k + kx``, one vector of ``pm`` lanes (lane m = input channel
    ``g * pm + m``, zero past C_in), padded to :func:`weight_vector_words` whole words.
    ``w`` holds svpe codes for ``PEKind.SVPE`` and int16-range integers for ``VPE``;
    ``pe`` may also be the string "svpe"/"vpe" (ValueError for anything else).
    """
    kind = dp.PEKind.parse(pe)
    w = np.asarray(w)
    c_out, groups, taps, lanes = _vectors(w.shape, pm)
    dtype: np.dtype  # one code byte (svpe) or one little-endian int16 (vpe) a weight
    if kind is dp.PEKind.SVPE:
        items, dtype = encode_svpe_codes(w), np.dtype(np.uint8)
    else:
        w64 = w.astype(np.int64)
        if w64.size and (w64.min() < dp.VPE_WEIGHT_MIN or w64.max() > dp.VPE_WEIGHT_MAX):
            raise ValueError("vpe weights must be in the int16 range")
        items, dtype = w64.astype("<i2"), np.dtype("<i2")
    full = np.zeros((c_out, groups * lanes, taps), dtype=dtype)  # channels padded to Pm
    full[:, : w.shape[1]] = items.reshape(c_out, w.shape[1], taps)
    vec = full.reshape(c_out, groups, lanes, taps).transpose(0, 1, 3, 2)  # co, g, t, lane
    raw = np.ascontiguousarray(vec).view(np.uint8).reshape(c_out * groups * taps, -1)
    out = np.zeros((len(raw), weight_vector_words(kind, pm) * WORD_BYTES), dtype=np.uint8)
    out[:, : raw.shape[1]] = raw
    return out.reshape(-1)


def unpack_weights(
    buf: np.ndarray, shape: tuple[int, ...], pe: dp.PEKind | str, pm: int
) -> np.ndarray:
    """Weight packet bytes (:func:`pack_weights`' layout) -> int64 integer weights of
    ``shape`` (decoded svpe codes)."""
    kind = dp.PEKind.parse(pe)
    c_out, groups, taps, lanes = _vectors(tuple(shape), pm)
    item = 1 if kind is dp.PEKind.SVPE else 2
    vec_bytes = weight_vector_words(kind, pm) * WORD_BYTES
    raw = np.asarray(buf, dtype=np.uint8)[: c_out * groups * taps * vec_bytes]
    raw = raw.reshape(c_out, groups, taps, vec_bytes)[..., : lanes * item]
    if kind is dp.PEKind.SVPE:
        vals = dp.decode_svpe(decode_svpe_bytes(raw), dp.SVPE_MAX_BITS).astype(np.int64)
    else:
        vals = np.ascontiguousarray(raw).view("<i2").astype(np.int64)
    vals = vals.reshape(c_out, groups, taps, lanes).transpose(0, 1, 3, 2)
    return vals.reshape(c_out, groups * lanes, taps)[:, : shape[1]].reshape(shape)


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
