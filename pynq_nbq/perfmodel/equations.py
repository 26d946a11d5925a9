"""The paper's hardware model (Eq. 35-44), one small function per equation.

Symbols as in the paper: a layer of H x W x M input, N output channels, k x k
kernel; Pm input and Pn output channels in parallel; ``freq_hz`` the array clock.
Times are seconds, bandwidths bits per second, operations counts (1 MAC = 2 ops).
:mod:`pynq_nbq.perfmodel.model` generalises these (strides, groups, pools, ARM
layers) and reduces to them on the paper's layers; the tests hold it to that.
"""

from __future__ import annotations

import math

M_FORMS = ("ceil", "literal")


def dsp_vpe(k: int, pm: int, pn: int) -> int:
    """Eq. 35: DSPs of Pm x Pn VPE arrays, (k^2 + k) each (multipliers + adder column)."""
    return (k * k + k) * pm * pn


def dsp_svpe(k: int, pm: int, pn: int) -> int:
    """Eq. 44: DSPs of Pm x Pn SVPE arrays, k each (only the adder column)."""
    return k * pm * pn


def dsp_per_array(pe: str, k: int) -> int:
    """DSPs of one k x k array of kind ``pe`` ("vpe" or "svpe")."""
    return dsp_vpe(k, 1, 1) if pe == "vpe" else dsp_svpe(k, 1, 1)


def tiles(channels: float, lanes: int, m_form: str) -> float:
    """Passes over ``channels`` with ``lanes`` in parallel.

    ``literal``: channels / lanes as Eq. 36 writes it (fractional when channels <
    lanes, crediting idle lanes with work).  ``ceil``: ceil(channels / lanes), the
    passes an array really makes.
    """
    if m_form == "literal":
        return channels / lanes
    if m_form == "ceil":
        return float(math.ceil(channels / lanes))
    raise ValueError(f"m_form must be one of {M_FORMS}, got {m_form!r}")


def t_compute(
    h: int, w: int, m: int, n: int, pm: int, pn: int, freq_hz: float, m_form: str
) -> float:
    """Eq. 36: (H W M/Pm N/Pn) / Freq, seconds; ``m_form`` picks M/Pm or ceil(M/Pm)."""
    return h * w * tiles(m, pm, m_form) * tiles(n, pn, m_form) / freq_hz


def t_transfer(m: int, n: int, k: int, w: int, words_per_s: float) -> float:
    """Eq. 37: (M N k^2 + k W M) / Bandwidth, with the bandwidth in words per second."""
    return (m * n * k * k + k * w * m) / words_per_s


def bw_min(pm: int, pn: int, m: int, n: int, b_compute: int, freq_hz: float) -> float:
    """Eq. 38: Pm Pn / min(N, M) * b_compute * Freq, bits per second.

    The larger of the input rate (H W M words over the run) and the output rate
    (H W N words) that keeps literal-form arrays busy.
    """
    return pm * pn / min(n, m) * b_compute * freq_hz


def t_init(m: int, n: int, k: int, w: int, b_weight: int, b_compute: int, bw_bps: float) -> float:
    """Eq. 39: M N k^2 b_weight / BW + W M k / BW * b_compute, seconds (weights + k lines)."""
    return (m * n * k * k * b_weight + w * m * k * b_compute) / bw_bps


def ops(h: int, w: int, m: int, n: int, k: int) -> int:
    """Eq. 40: 2 H W M N k^2 operations."""
    return 2 * h * w * m * n * k * k


def perf_eff(n_ops: float, t_compute_s: float, t_init_s: float) -> float:
    """Eq. 41-42: OPs / (T_compute + T_init), operations per second."""
    return n_ops / (t_compute_s + t_init_s)


def perf_eff_n(
    pm: int, pn: int, h: int, w: int, m: int, n: int, k: int, n_bits: int, freq_hz: float
) -> float:
    """Eq. 43: effective performance with n-bit weights, operations per second.

    Eq. 41 with the bandwidth set to Eq. 38's minimum for M <= N and 16-bit
    activations: 32 Freq Pm Pn H W N k^2 / (16 H W N + n M N k^2 + 16 W M k).
    """
    num = 32 * freq_hz * pm * pn * h * w * n * k * k
    return num / (16 * h * w * n + n_bits * m * n * k * k + 16 * w * m * k)
