"""Image decoding and preprocessing with Pillow, as a bundle's ``input`` block says.

Any format Pillow reads, any common mode (1, L, P, RGB, RGBA, LA, CMYK, I;16, I, F),
EXIF orientation applied.  Transparent pixels are composited onto black (the
background of the training images).  The result is float32 (C, H, W), normalised
with the bundle's per-channel mean/std of 0..1 pixels.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: largest decoded image accepted (pixels); more is treated as a decompression bomb
MAX_PIXELS = 40_000_000


class ImageError(ValueError):
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
    """Convert any Pillow mode to ``"L"`` or ``"RGB"`` (alpha onto black, 16-bit and
    float scaled to 8 bits by their range)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        img = Image.fromarray(np.clip((a - lo) * scale, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(bg, rgba)
    return img.convert(mode)


def preprocess(img: Image.Image, spec: dict) -> np.ndarray:
    """A decoded image -> float32 (C, H, W) per a bundle's ``input`` block.

    ``resize``: ``"stretch"`` (to width x height, aspect not kept) or ``"center-crop"``
    (scale the shorter side, crop the centre); ``invert`` flips 0..1 pixel values
    (for models trained on light-on-dark images, like Fashion-MNIST, fed dark-on-light
    photos)."""
    img = to_mode(img, spec["mode"])
    size = (int(spec["width"]), int(spec["height"]))
    resize = spec.get("resize", "stretch")
    if resize == "center-crop" and img.size != size:
        img = ImageOps.fit(img, size, Image.Resampling.BILINEAR)
    elif resize == "stretch":
        if img.size != size:
            img = img.resize(size, Image.Resampling.BILINEAR)
    elif resize != "center-crop":
        raise ValueError(f"unknown resize mode {resize!r} (stretch or center-crop)")
    a = np.asarray(img, dtype=np.float32) / 255.0
    if a.ndim == 2:
        a = a[:, :, None]
    if spec.get("invert"):
        a = 1.0 - a
    mean = np.asarray(spec["mean"], dtype=np.float32)
    std = np.asarray(spec["std"], dtype=np.float32)
    return ((a - mean) / std).transpose(2, 0, 1).copy()
