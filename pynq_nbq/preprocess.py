"""Image decoding and preprocessing with Pillow, as a bundle's ``input`` block says.

Any format Pillow reads, any common mode (1, L, P, RGB, RGBA, LA, CMYK, I;16, I, F),
EXIF orientation applied.  Transparent pixels are composited onto black (the
background of the training images).

The result of :func:`preprocess` is the network's input as **8-bit pixels**, uint8
(C, H, W): converted, resized (or centre-cropped) and inverted, all on integers.
The engine quantises those pixels exactly (``datapath.pixel_table``:
``floor((p/255 - mean)/std * 2**f + 1/2)`` in rational arithmetic), so the int16
input does not depend on float precision.  :func:`normalise` gives the float view
(``(p/255 - mean)/std``) for plotting or a torch model.  ``docs/datapath.md``
section 2 ("Input") specifies every step.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .bundle import RESIZE_MODES
from .errors import NbqError

#: Bilinear resampling: Image.Resampling since Pillow 9.1; Pillow 9.0.1 (the PYNQ 3.0 image's,
#: Ubuntu 22.04) has only the module constant.
BILINEAR = getattr(Image, "Resampling", Image).BILINEAR
#: largest decoded image accepted (pixels); more is treated as a decompression bomb
MAX_PIXELS = 40_000_000


class ImageError(NbqError):
    """The input is not a usable image; the message says why."""


class ImageTooLarge(ImageError):
    """The image has more pixels than allowed (a decompression-bomb guard)."""


#: decoding stops shrinking an image once it is this many times the model's input per side;
#: the bilinear resize that follows then works from >= 3x the target (Pillow's own advice
#: for ``reducing_gap``: from 3 on, the result is indistinguishable from a full resize)
REDUCE_GAP = 3
#: modes whose pixels cannot be box-averaged as they are (bits, palette indices, 16-bit)
_CONVERT_BEFORE_REDUCE = {"1": "L", "P": "RGBA", "PA": "RGBA", "I;16": "I", "I;16B": "I"}
_CONVERT_BEFORE_REDUCE["I;16L"] = "I"
#: pixels per strip when shrinking (bounds the transient copy: 16 MB for RGBA)
STRIP_PIXELS = 4_000_000
#: JPEG DCT scales Pillow's ``draft`` chooses from (libjpeg decodes at 1/s)
JPEG_SCALES = (8, 4, 2, 1)


def shrink_target(fit: tuple[int, int]) -> int:
    """The side (pixels) an image is not shrunk below: ``REDUCE_GAP`` x the larger side of
    ``fit`` (the model's input, w, h); the same on both axes, so it survives EXIF rotation."""
    return REDUCE_GAP * max(int(fit[0]), int(fit[1]), 1)


def jpeg_draft_scale(size: tuple[int, int], fit: tuple[int, int] | None) -> int:
    """The DCT scale ``s`` a JPEG of ``size`` (w, h) is decoded at (1/s per axis): the
    largest of 8, 4, 2, 1 with ``s <= min(w // n, h // n)``, n = :func:`shrink_target`;
    what Pillow's ``draft(None, (n, n))`` picks.  The decoded size is ``ceil(w/s)`` x
    ``ceil(h/s)``."""
    if fit is None:
        return 1
    n = shrink_target(fit)
    scale = min(size[0] // n, size[1] // n)
    return next(s for s in JPEG_SCALES if scale >= s or s == 1)


def reduce_factors(
    size: tuple[int, int], fit: tuple[int, int] | None, resize: str = "stretch"
) -> tuple[int, int]:
    """The integer box-reduce factors (fx, fy) for an image of ``size`` (w, h) as decoded;
    (1, 1) = keep.  n = :func:`shrink_target`:

    * ``stretch``: per axis, ``fx = max(1, w // n)``, ``fy = max(1, h // n)`` (the resize
      ignores the aspect ratio anyway, and a 1 x 39,000,000 image shrinks to 1 x 84
      instead of being resized from its full size);
    * ``center-crop``: one factor for both axes, ``max(1, min(w, h) // n)``, so the aspect
      ratio, and with it the crop box, is kept.

    After the reduce every side that was shrunk is in [n, 2n) (docs/datapath.md section 2)."""
    if fit is None:
        return 1, 1
    n = shrink_target(fit)
    if resize == "center-crop":
        f = max(1, min(size) // n)
        return f, f
    return max(1, size[0] // n), max(1, size[1] // n)


def reduce_factor(size: tuple[int, int], fit: tuple[int, int] | None) -> int:
    """The single factor of ``center-crop`` (:func:`reduce_factors`)."""
    return reduce_factors(size, fit, "center-crop")[0]


def reduced_size(size: tuple[int, int], factors: tuple[int, int]) -> tuple[int, int]:
    """Pillow's ``reduce`` output size: ``ceil(w / fx)`` x ``ceil(h / fy)`` (the last,
    partial block of a row or column averages the pixels it has)."""
    return -(-size[0] // factors[0]), -(-size[1] // factors[1])


def tile_shape(size: tuple[int, int], factors: tuple[int, int]) -> tuple[int, int]:
    """The (columns, rows) of the tiles :func:`_shrink` reduces one at a time: whole
    ``fx`` x ``fy`` blocks, ~:data:`STRIP_PIXELS` or fewer unless one block is larger."""
    w, h = size
    fx, fy = factors
    step_y = fy * max(1, STRIP_PIXELS // (w * fy))  # rows per strip
    step_x = fx * max(1, STRIP_PIXELS // (min(step_y, h) * fx))  # and columns (wide images)
    return min(step_x, w), min(step_y, h)


def open_image(
    source: bytes | str | os.PathLike | Image.Image,
    fit: tuple[int, int] | None = None,
    max_pixels: int | None = None,
    resize: str = "stretch",
    formats: tuple[str, ...] | None = None,
) -> Image.Image:
    """Decode ``source`` (bytes, a path or a PIL image), refusing bombs and truncated files,
    and apply its EXIF orientation.

    ``fit`` = (width, height) of the model's input and ``resize`` its resize mode: the
    image is decoded no larger than it must be (memory is what a 4 GB board runs out of
    first).  JPEG decodes at 1/2, 1/4 or 1/8 scale in the decoder itself
    (:func:`jpeg_draft_scale`, Pillow's ``draft``); then every format is shrunk at once by
    an integer box ``reduce`` (:func:`reduce_factors`), so the large raster lives only for
    the decode.  ``max_pixels`` bounds the pixels the header may declare (decompression
    bombs; default :data:`MAX_PIXELS`), checked before decoding.  ``formats``: the Pillow
    format names accepted (None: any Pillow reads); others are :class:`ImageError`."""
    if max_pixels is None:
        max_pixels = MAX_PIXELS
    if resize not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {resize!r} (one of {RESIZE_MODES})")
    if isinstance(source, Image.Image):
        img = source
    else:
        if isinstance(source, (bytes, bytearray, memoryview)):
            if len(source) == 0:
                raise ImageError("empty image data")
            fp: io.BytesIO | Path = io.BytesIO(source)
        else:
            fp = Path(source)
            if fp.is_dir():
                raise ImageError(f"{fp}: a directory, not an image file")
            if not fp.is_file():
                raise ImageError(f"{fp}: no such image file")
        try:
            # Image.open reads only the header: refuse bombs before decoding.  (MAX_PIXELS
            # is below Pillow's own warning threshold, so no global warning filter is
            # needed, which would not be thread-safe under a threaded server.)
            img = Image.open(fp, formats=pillow_formats(formats))
            w, h = img.size
            if w * h > max_pixels:
                raise ImageTooLarge(f"image too large: {w}x{h} pixels (limit {max_pixels})")
            if fit is not None and img.format == "JPEG":
                n = shrink_target(fit)
                img.draft(None, (n, n))  # DCT scaling: jpeg_draft_scale
            img.load()
            img = _shrink(img, reduce_factors(img.size, fit, resize))
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLarge(f"image too large: {exc}") from exc
        except UnidentifiedImageError as exc:
            if formats is not None:
                raise ImageError(
                    f"not an image in an accepted format ({', '.join(formats)})"
                ) from exc
            raise ImageError("not an image Pillow can read") from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageError(f"broken or truncated image: {exc}") from exc
    try:
        return ImageOps.exif_transpose(img) or img
    except Exception:  # a malformed EXIF block must not stop classification
        return img


def pillow_formats(formats: tuple[str, ...] | None) -> list[str] | None:
    """``formats`` as Pillow's ``open`` takes them (MPO is found by its JPEG opener)."""
    if formats is None:
        return None
    out = [f for f in formats if f != "MPO"]
    return out + ["JPEG"] if "MPO" in formats and "JPEG" not in out else out


def _shrink(img: Image.Image, factors: tuple[int, int] | int) -> Image.Image:
    """``img`` box-reduced by ``factors`` (fx, fy) (its EXIF block kept), a tile of at
    most ~:data:`STRIP_PIXELS` at a time (strips of rows; wide rows are cut into columns).

    Whole-image ``reduce`` would copy the full raster first (RGBA/LA are premultiplied
    into a copy; palette, bilevel and 16-bit modes must be converted, as their values
    cannot be averaged): tiles aligned to whole ``fx`` x ``fy`` blocks keep that copy
    small.  Each output pixel depends only on its own ``fx`` x ``fy`` block, so the
    result equals the whole-image ``convert`` then ``reduce``."""
    fx, fy = (factors, factors) if isinstance(factors, int) else factors
    if fx <= 1 and fy <= 1:
        return img
    w, h = img.size
    mode = _CONVERT_BEFORE_REDUCE.get(img.mode, img.mode)
    out = Image.new(mode, reduced_size((w, h), (fx, fy)))
    step_x, step_y = tile_shape((w, h), (fx, fy))
    for y0 in range(0, h, step_y):
        for x0 in range(0, w, step_x):
            tile = img.crop((x0, y0, min(w, x0 + step_x), min(h, y0 + step_y)))
            if tile.mode != mode:
                tile = tile.convert(mode)
            out.paste(tile.reduce((fx, fy)), (x0 // fx, y0 // fy))
            del tile
    exif = img.getexif()
    if exif:
        out.info["exif"] = exif.tobytes()
    img.close()
    return out


def to_mode(img: Image.Image, mode: str) -> Image.Image:
    """Convert any Pillow mode to ``"L"`` or ``"RGB"`` (alpha onto black, 16-bit, 32-bit
    and float scaled to 8 bits by their range: :func:`_stretch_to_8bit`).  RGB -> L is
    Pillow's ITU-R 601-2 luma ``L = (R*299 + G*587 + B*114) / 1000`` (its fixed-point
    rounding)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        img = Image.fromarray(_stretch_to_8bit(np.asarray(img)), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(bg, rgba)
    return img.convert(mode)


def _stretch_to_8bit(a: np.ndarray) -> np.ndarray:
    """Scale an image's values to uint8 by **its own range** [lo, hi] (lo = its smallest,
    hi = its largest value): ``floor((a - lo) * 255 / (hi - lo))``.

    Integer images (16- and 32-bit) in exact integer arithmetic; float images in float64,
    evaluated in that order (subtract, multiply by 255, divide; IEEE round-to-nearest at
    each step, then floor).  A constant image (hi == lo) becomes all 0.  A float image
    with a NaN or an infinity is refused (:class:`ImageError`): it has no range.
    (docs/datapath.md section 2.)"""
    if np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
        if not np.isfinite(a).all():
            raise ImageError(
                "float image with NaN or infinite values: it has no range to scale to 8 bits"
            )
        if a.size == 0:
            return np.zeros(a.shape, np.uint8)
        lo, hi = float(a.min()), float(a.max())
        if not hi > lo:
            return np.zeros(a.shape, np.uint8)
        return np.floor((a - lo) * 255.0 / (hi - lo)).clip(0, 255).astype(np.uint8)
    v = a.astype(np.int64)
    if v.size == 0:
        return np.zeros(a.shape, np.uint8)
    lo, hi = int(v.min()), int(v.max())
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return ((v - lo) * 255 // (hi - lo)).astype(np.uint8)


def preprocess(img: Image.Image, spec: dict) -> np.ndarray:
    """A decoded image -> uint8 pixels (C, H, W) per a bundle's ``input`` block.

    ``mode``: convert to ``"L"`` or ``"RGB"`` (:func:`to_mode`).  ``resize``:
    ``"stretch"`` (Pillow's ``resize`` to width x height with the BILINEAR filter,
    aspect not kept; skipped when the size already matches) or ``"center-crop"``
    (``ImageOps.fit`` with BILINEAR: the largest centred box of the output's aspect
    ratio, resized).  ``invert``: ``p -> 255 - p`` (for models trained on
    light-on-dark images, like Fashion-MNIST, fed dark-on-light photos).
    Quantise the result with ``Engine.quantize_input`` (exact, from pixels)."""
    img = to_mode(img, spec["mode"])
    size = (int(spec["width"]), int(spec["height"]))
    resize = spec.get("resize", "stretch")
    if resize not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {resize!r} (one of {RESIZE_MODES})")
    if img.size != size:
        if resize == "center-crop":
            img = ImageOps.fit(img, size, BILINEAR)
        else:
            img = img.resize(size, BILINEAR)
    a = np.asarray(img, dtype=np.uint8)
    if a.ndim == 2:
        a = a[:, :, None]
    if spec.get("invert"):
        a = np.uint8(255) - a  # stays uint8 (no wrap: a <= 255)
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def normalise(pixels: np.ndarray, spec: dict) -> np.ndarray:
    """uint8 pixels (..., C, H, W) -> float32 ``(p/255 - mean)/std`` per channel: the float
    view of the input (what a torch model sees); the engine quantises the pixels exactly."""
    mean = np.asarray(spec["mean"], dtype=np.float32)[:, None, None]
    std = np.asarray(spec["std"], dtype=np.float32)[:, None, None]
    return (np.asarray(pixels, dtype=np.float32) / 255.0 - mean) / std
