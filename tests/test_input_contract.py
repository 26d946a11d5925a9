"""docs/datapath.md section 2 ("Input"), re-implemented from the text alone with Pillow
primitives (no pynq_nbq.preprocess code), must give the package's pixels bit for bit
from image bytes: PNG and JPEG, 8- and 16-bit, sizes that do and do not trigger the
early shrink (JPEG DCT scaling, per-axis box reduce), both resize modes, EXIF rotation
(issue 23, contract point 2)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

import pynq_nbq.preprocess as pp

BILINEAR = getattr(Image, "Resampling", Image).BILINEAR
_TRANSPOSE = getattr(Image, "Transpose", Image)
ORIENT = {
    2: _TRANSPOSE.FLIP_LEFT_RIGHT,
    3: _TRANSPOSE.ROTATE_180,
    4: _TRANSPOSE.FLIP_TOP_BOTTOM,
    5: _TRANSPOSE.TRANSPOSE,
    6: _TRANSPOSE.ROTATE_270,
    7: _TRANSPOSE.TRANSVERSE,
    8: _TRANSPOSE.ROTATE_90,
}


def reference(data: bytes, spec: dict) -> np.ndarray:
    """The input pixels (C, H, W) exactly as docs/datapath.md section 2 words them."""
    w, h = spec["width"], spec["height"]
    n = 3 * max(w, h)
    im = Image.open(io.BytesIO(data))
    orientation = im.getexif().get(0x0112, 1)
    if im.format in ("JPEG", "MPO"):
        big_w, big_h = im.size
        q = min(big_w // n, big_h // n)
        s = max(x for x in (8, 4, 2, 1) if x <= max(q, 1))
        im.draft(None, (n, n))
        assert im.size == (-(-big_w // s), -(-big_h // s))
    im.load()
    dw, dh = im.size
    if spec.get("resize", "stretch") == "center-crop":
        fx = fy = max(1, min(dw, dh) // n)
    else:
        fx, fy = max(1, dw // n), max(1, dh // n)
    if fx * fy > 1:
        conv = {"1": "L", "P": "RGBA", "PA": "RGBA", "I;16": "I", "I;16B": "I", "I;16L": "I"}
        if im.mode in conv:
            im = im.convert(conv[im.mode])
        im = im.reduce((fx, fy))
        assert im.size == (-(-dw // fx), -(-dh // fy))
    if orientation in ORIENT:
        im = im.transpose(ORIENT[orientation])
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im)
        if a.dtype.kind == "f":
            a = a.astype(np.float64)
            lo, hi = a.min(), a.max()
            u8 = np.zeros(a.shape, np.uint8) if hi == lo else np.floor((a - lo) * 255 / (hi - lo))
        else:
            a = a.astype(np.int64)
            lo, hi = int(a.min()), int(a.max())
            u8 = np.zeros(a.shape, np.int64) if hi == lo else (a - lo) * 255 // (hi - lo)
        im = Image.fromarray(np.asarray(u8, np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        im = Image.alpha_composite(Image.new("RGBA", im.size, (0, 0, 0, 255)), im.convert("RGBA"))
    im = im.convert(spec["mode"])
    if im.size != (w, h):
        if spec.get("resize", "stretch") == "center-crop":
            im = ImageOps.fit(im, (w, h), BILINEAR)
        else:
            im = im.resize((w, h), BILINEAR)
    a = np.asarray(im, np.uint8)
    a = a[:, :, None] if a.ndim == 2 else a
    if spec.get("invert"):
        a = 255 - a
    return a.transpose(2, 0, 1)


def package(data: bytes, spec: dict) -> np.ndarray:
    fit = (spec["width"], spec["height"])
    img = pp.open_image(data, fit=fit, resize=spec.get("resize", "stretch"))
    return pp.preprocess(img, spec)


def image(kind: str, w: int, h: int, seed: int) -> Image.Image:
    """Smooth gradients plus noise, so that every filter step shows."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = (xx * 255 // max(w - 1, 1) + yy * 255 // max(h - 1, 1)) // 2
    if kind == "I;16":
        a = base.astype(np.int64) * 200 + 1000 + rng.integers(0, 3000, (h, w))
        return Image.fromarray(a.astype(np.uint16))
    noise = rng.integers(-40, 40, (h, w, 4))
    rgba = np.clip(base[:, :, None] + noise, 0, 255).astype(np.uint8)
    rgba[:, :, 3] = np.where(rng.random((h, w)) < 0.2, 0, 255)
    im = Image.fromarray(rgba, "RGBA")
    return im if kind == "RGBA" else im.convert(kind)


def encode(im: Image.Image, fmt: str, orientation: int | None = None) -> bytes:
    buf = io.BytesIO()
    kw = {}
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kw["exif"] = exif
    if fmt == "JPEG":
        kw["quality"] = 90
    im.save(buf, fmt, **kw)
    return buf.getvalue()


SIZES = [(28, 28), (60, 45), (420, 300), (1500, 1100), (2000, 90), (90, 2000), (1, 5000)]
CASES = [
    ("PNG", "L"),
    ("PNG", "RGB"),
    ("PNG", "RGBA"),
    ("PNG", "P"),
    ("PNG", "I;16"),
    ("PNG", "1"),
    ("JPEG", "RGB"),
    ("JPEG", "L"),
]
SPECS = [
    {"mode": "L", "width": 28, "height": 28},
    {"mode": "RGB", "width": 32, "height": 24, "resize": "center-crop", "invert": True},
]


@pytest.mark.parametrize(
    "fmt, kind, size",
    [(f, k, s) for f, k in CASES for s in SIZES if f == "PNG" or min(s) >= 8],
    ids=lambda v: f"{v[0]}x{v[1]}" if isinstance(v, tuple) else str(v),
)
def test_the_documented_input_is_the_packages(fmt, kind, size, monkeypatch):
    w, h = size
    data = encode(image(kind, w, h, seed=w * 7 + h), fmt)
    monkeypatch.setattr(pp, "STRIP_PIXELS", 50_000)  # several tiles on the large ones
    for spec in SPECS:
        want = reference(data, spec)
        got = package(data, spec)
        assert got.shape == want.shape and got.dtype == np.uint8
        assert np.array_equal(got, want), (fmt, kind, size, spec, int((got != want).sum()))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_after_the_shrink(fmt, orientation):
    data = encode(image("RGB", 900, 400, seed=orientation), fmt, orientation)
    for spec in SPECS:
        assert np.array_equal(package(data, spec), reference(data, spec))


def test_the_shrink_is_what_the_doc_says():
    """A 420 x 300 RGB image for a 28 x 28 input: reduced 5 x 3 (stretch) or 3 x 3
    (center-crop) before the resize; a 4000 x 3000 JPEG is decoded at 1/8."""
    assert pp.reduce_factors((420, 300), (28, 28)) == (5, 3)
    assert pp.reduce_factors((420, 300), (28, 28), "center-crop") == (3, 3)
    assert pp.reduce_factors((1, 39_000_000), (28, 28)) == (1, 39_000_000 // 84)
    assert pp.jpeg_draft_scale((4000, 3000), (28, 28)) == 8
    assert pp.jpeg_draft_scale((300, 200), (28, 28)) == 2
    assert pp.jpeg_draft_scale((100, 100), (28, 28)) == 1
