"""The tile planner: cut one conv layer into kernel calls within the kernel's limits.

A layer ``H x W x C_in -> C_out`` (3x3 pad 1 or 1x1 pad 0) is cut into
output-channel groups (:func:`plan_groups`, independent of the image size) and
spatial tiles (:func:`plan_layer`).  Pure arithmetic: no packing, no device.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import datapath as dp
from .protocol import (
    DEFAULT_MAX_PACKET_BYTES,
    REQUANT_BYTES,
    STATUS_WORDS,
    WORD_BYTES,
    Flag,
    KernelInfo,
)


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


def plan_groups(
    c_in: int,
    c_out: int,
    kernel: int,
    info: KernelInfo,
    max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES,
) -> tuple[tuple[int, int], ...]:
    """Output-channel groups ``(co0, co1)``: one weight load each.

    At most ``max_cout`` channels (whole Pn groups when cut), and the weight and
    requant packets of a group within ``max_packet_bytes``.  Independent of the
    image size, so a compiled layer packs its load packets once.
    """
    limit = max_packet_bytes // WORD_BYTES * WORD_BYTES
    per_cout = max(info.weight_bytes_per_cout(c_in, kernel), REQUANT_BYTES)
    ct = min(c_out, info.max_cout, limit // per_cout)
    if ct < 1:
        raise ValueError(
            f"the weights of one output channel ({per_cout} bytes) exceed the "
            f"{max_packet_bytes}-byte packet limit"
        )
    if ct < c_out and ct >= info.pn:
        ct -= ct % info.pn  # whole Pn groups
    return tuple((c, min(c + ct, c_out)) for c in range(0, c_out, ct))


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
    within ``max_packet_bytes`` (the output packet counts its status word).  With a
    pool, tiles start on even conv rows and columns so that no 2x2 window is split.
    Raises ValueError when the layer cannot be cut (``c_in > max_cin``, or packets
    that cannot be made small enough).
    """
    pads = dict(dp.CONV_ENGINE_SHAPES)  # kernel -> its padding on the conv engine
    if kernel not in pads:
        raise ValueError(f"kernel {kernel} not supported (3x3 pad 1 or 1x1 pad 0)")
    if c_in > info.max_cin:
        raise ValueError(f"{c_in} input channels > MAX_CIN {info.max_cin}")
    p = pads[kernel]
    step = 2 if pool else 1
    out_h, out_w = dp.conv_output_hw(h, w, kernel, 1, p, pool)
    end_h, end_w = out_h * step, out_w * step  # conv positions the (pooled) output uses
    limit = max_packet_bytes // WORD_BYTES * WORD_BYTES
    groups = plan_groups(c_in, c_out, kernel, info, max_packet_bytes)
    ct = groups[0][1] - groups[0][0]
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
            and 2 * out_pixels * ct + STATUS_WORDS * WORD_BYTES <= limit  # + status word
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
    in_rows, in_cols = _in_range(rows[0], rows[1], p, h), _in_range(cols[0], cols[1], p, w)
    pads = (
        rows[0] - p < 0,
        rows[1] + p > h,
        cols[0] - p < 0,
        cols[1] + p > w,
    )
    out_rows = (rows[0] // step, rows[1] // step)
    out_cols = (cols[0] // step, cols[1] // step)
    return Tile(rows, cols, in_rows, in_cols, out_rows, out_cols, pads)
