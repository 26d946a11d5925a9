"""Image decoding and preprocessing (pynq_nbq.preprocess)."""

import io

import numpy as np
import pytest
from PIL import Image

from pynq_nbq.preprocess import (
    ImageError,
    ImageTooLarge,
    normalise,
    open_image,
    preprocess,
    to_mode,
)

SPEC = {"mode": "L", "channels": 1, "height": 4, "width": 4, "mean": [0.0], "std": [1.0]}


def png(img):
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_exif_orientation_is_applied():
    a = np.zeros((2, 4), np.uint8)
    a[0, 0] = 255  # top-left bright, landscape
    img = Image.fromarray(a, "L")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif, quality=100)
    out = open_image(buf.getvalue())
    assert out.size == (2, 4)  # portrait after the transpose


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "I;16", "I", "F"])
def test_every_common_mode_becomes_l_or_rgb(mode):
    base = Image.fromarray((np.arange(16).reshape(4, 4) * 16).astype(np.uint8), "L")
    img = base.convert(mode) if mode not in ("I;16",) else base.convert("I").convert("I;16")
    for target in ("L", "RGB"):
        assert to_mode(img, target).mode == target


def test_alpha_is_composited_onto_black():
    img = Image.new("RGBA", (2, 2), (255, 255, 255, 0))
    assert np.asarray(to_mode(img, "L")).max() == 0


def test_sixteen_bit_is_scaled_by_its_range():
    a = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    img = Image.fromarray(a)
    out = np.asarray(to_mode(img, "L"))
    assert out.min() == 0 and out.max() == 255


def test_stretch_crop_invert_normalise():
    a = np.zeros((4, 8), np.uint8)
    a[:, 2:6] = 255  # bright centre band
    img = Image.fromarray(a, "L")
    stretched = preprocess(img, SPEC)
    assert stretched.shape == (1, 4, 4) and stretched.dtype == np.uint8
    cropped = preprocess(img, {**SPEC, "resize": "center-crop"})
    assert cropped.min() == 255  # the crop keeps only the bright centre
    inverted = preprocess(img, {**SPEC, "resize": "center-crop", "invert": True})
    assert inverted.max() == 0
    spec = {**SPEC, "mean": [0.5], "std": [0.25]}
    assert normalise(cropped, spec).max() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="resize"):
        preprocess(img, {**SPEC, "resize": "zoom"})


def test_sixteen_and_thirty_two_bit_stretch_is_integer_exact():
    a = np.array([[0, 1], [65534, 65535]], dtype=np.uint16)
    out = np.asarray(to_mode(Image.fromarray(a), "L"))
    assert out.tolist() == [[0, 0], [254, 255]]  # floor((a - lo) * 255 / (hi - lo))
    f = np.array([[0.0, 0.5], [0.25, 1.0]], dtype=np.float32)
    assert np.asarray(to_mode(Image.fromarray(f, "F"), "L")).tolist() == [[0, 127], [63, 255]]


def _encoded(a: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    "a, fmt, want",
    [
        (np.array([[1000, 2000]], np.uint16), "PNG", [[0, 255]]),  # was [127, 255]
        (np.array([[-5, -3]], np.int32), "TIFF", [[0, 255]]),  # was [0, 102]
        (np.array([[-5, -4, -3]], np.int32), "TIFF", [[0, 127, 255]]),
        (np.array([[70000, 70001]], np.int32), "TIFF", [[0, 255]]),
        (np.array([[2.0, 3.0, 2.5]], np.float32), "TIFF", [[0, 255, 127]]),
        (np.array([[-1.0, -0.5]], np.float32), "TIFF", [[0, 255]]),
    ],
)
def test_wide_images_are_stretched_by_their_own_range(a, fmt, want):
    """docs/datapath.md section 2: lo and hi are the image's own extremes (issue 23)."""
    img = open_image(_encoded(a, fmt))
    assert np.asarray(to_mode(img, "L")).tolist() == want


@pytest.mark.parametrize(
    "a", [np.full((3, 3), 1234, np.uint16), np.full((2, 2), -7, np.int32), np.ones((2, 2), "f4")]
)
def test_constant_wide_images_become_zero(a):
    assert not np.asarray(to_mode(Image.fromarray(a), "L")).any()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_images_are_refused(bad):
    f = np.array([[0.0, 0.5], [bad, 1.0]], dtype=np.float32)
    with pytest.raises(ImageError, match="NaN or infinite"):
        to_mode(Image.fromarray(f, "F"), "L")


def test_errors_name_the_cause(tmp_path):
    with pytest.raises(ImageError, match="empty"):
        open_image(b"")
    with pytest.raises(ImageError, match="not an image"):
        open_image(b"hello world")
    data = png(Image.new("L", (50, 50)))
    with pytest.raises(ImageError, match="truncated|broken"):
        open_image(data[: len(data) // 2])
    with pytest.raises(ImageError, match="no such image file"):
        open_image(tmp_path / "missing.png")


def test_bombs_are_refused_before_decoding(monkeypatch):
    import pynq_nbq.preprocess as pp

    monkeypatch.setattr(pp, "MAX_PIXELS", 100)
    with pytest.raises(ImageTooLarge, match="too large"):
        open_image(png(Image.new("L", (20, 20))))
