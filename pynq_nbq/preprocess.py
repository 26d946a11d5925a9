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


def reduce_factor(size: tuple[int, int], fit: tuple[int, int] | None) -> int:
    """The integer factor an image of ``size`` (w, h) can be shrunk by while both sides stay
    >= ``REDUCE_GAP`` x the larger side of ``fit`` (the model's input, w, h); 1 = keep.

    The same factor serves ``stretch`` and ``center-crop`` and survives an EXIF rotation,
    because it compares the shorter image side with the longer target side."""
    if fit is None:
        return 1
    need = REDUCE_GAP * max(int(fit[0]), int(fit[1]), 1)
    return max(1, min(size) // need)


def open_image(
    source: bytes | str | os.PathLike | Image.Image,
    fit: tuple[int, int] | None = None,
    max_pixels: int | None = None,
) -> Image.Image:
    """Decode ``source`` (bytes, a path or a PIL image), refusing bombs and truncated files,
    and apply its EXIF orientation.

    ``fit`` = (width, height) of the model's input: the image is decoded no larger than it
    must be (memory is what a 4 GB board runs out of first).  JPEG decodes at 1/2, 1/4 or
    1/8 scale in the decoder itself (Pillow's ``draft``); other formats decode in full and
    are shrunk at once by an integer box ``reduce`` (:func:`reduce_factor`), so the large
    raster lives only for the decode.  ``max_pixels`` bounds the pixels the header may
    declare (decompression bombs; default :data:`MAX_PIXELS`), checked before decoding."""
    if max_pixels is None:
        max_pixels = MAX_PIXELS
    if isinstance(source, Image.Image):
        img = source
    else:
        if isinstance(source, (bytes, bytearray, memoryview)):
            if len(source) == 0:
                raise ImageError("empty image data")
            fp: io.BytesIO | Path = io.BytesIO(bytes(source))
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
            img = Image.open(fp)
            w, h = img.size
            if w * h > max_pixels:
                raise ImageTooLarge(f"image too large: {w}x{h} pixels (limit {max_pixels})")
            if fit is not None and img.format == "JPEG":
                need = REDUCE_GAP * max(fit)
                img.draft(None, (need, need))  # DCT scaling: never below the request
            img.load()
            img = _shrink(img, reduce_factor(img.size, fit))
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLarge(f"image too large: {exc}") from exc
        except UnidentifiedImageError as exc:
            raise ImageError("not an image Pillow can read") from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageError(f"broken or truncated image: {exc}") from exc
    try:
        return ImageOps.exif_transpose(img) or img
    except Exception:  # a malformed EXIF block must not stop classification
        return img


def _shrink(img: Image.Image, factor: int) -> Image.Image:
    """``img`` box-reduced by ``factor`` (its EXIF block kept), a strip of rows at a time.

    Whole-image ``reduce`` would copy the full raster first (RGBA/LA are premultiplied
    into a copy; palette, bilevel and 16-bit modes must be converted, as their values
    cannot be averaged): strips of ~:data:`STRIP_PIXELS`, aligned to ``factor``, keep that
    copy small.  Each output pixel depends only on its own ``factor`` x ``factor`` block,
    so the result equals the whole-image reduce."""
    if factor <= 1:
        return img
    w, h = img.size
    mode = _CONVERT_BEFORE_REDUCE.get(img.mode, img.mode)
    out = Image.new(mode, (-(-w // factor), -(-h // factor)))
    step = factor * max(1, STRIP_PIXELS // (w * factor))
    for y0 in range(0, h, step):
        strip = img.crop((0, y0, w, min(h, y0 + step)))
        if strip.mode != mode:
            strip = strip.convert(mode)
        out.paste(strip.reduce(factor), (0, y0 // factor))
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
        a = 255 - a
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def normalise(pixels: np.ndarray, spec: dict) -> np.ndarray:
    """uint8 pixels (..., C, H, W) -> float32 ``(p/255 - mean)/std`` per channel: the float
    view of the input (what a torch model sees); the engine quantises the pixels exactly."""
    mean = np.asarray(spec["mean"], dtype=np.float32)[:, None, None]
    std = np.asarray(spec["std"], dtype=np.float32)[:, None, None]
    return (np.asarray(pixels, dtype=np.float32) / 255.0 - mean) / std
