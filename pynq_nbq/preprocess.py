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

#: Bilinear resampling: Image.Resampling since Pillow 9.1; Pillow 9.0.1 (the PYNQ 3.0 image's,
#: Ubuntu 22.04) has only the module constant.
BILINEAR = getattr(Image, "Resampling", Image).BILINEAR
#: largest decoded image accepted (pixels); more is treated as a decompression bomb
MAX_PIXELS = 40_000_000


class ImageError(ValueError):
    """The input is not a usable image; the message says why."""


class ImageTooLarge(ImageError):
    """The image has more pixels than allowed (a decompression-bomb guard)."""


def open_image(source: bytes | str | os.PathLike | Image.Image) -> Image.Image:
    """Decode ``source`` fully (bytes, a path or a PIL image), refusing bombs and
    truncated files, and apply its EXIF orientation."""
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
            if w * h > MAX_PIXELS:
                raise ImageTooLarge(f"image too large: {w}x{h} pixels (limit {MAX_PIXELS})")
            img.load()
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
        img = ImageOps.fit(img, size, BILINEAR)
    elif resize == "stretch":
        if img.size != size:
            img = img.resize(size, BILINEAR)
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
