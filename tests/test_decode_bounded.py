"""Decoding at reduced size (issue 15): ``open_image(..., fit=)`` keeps no more pixels
than the model needs, shrinks in strips equal to a whole-image reduce, keeps EXIF
orientation, and the offline API and the server decode the same way."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import pynq_nbq.preprocess as pp
from pynq_nbq.preprocess import REDUCE_GAP, open_image, reduce_factor, reduce_factors


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def noise(mode: str, w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65535, (h, w)).astype(np.uint16))
    if mode == "F":
        return Image.fromarray(rng.random((h, w)).astype(np.float32))
    if mode == "I":
        return Image.fromarray(rng.integers(-999, 999, (h, w)).astype(np.int32))
    return Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA").convert(mode)


def test_reduce_factor_keeps_the_gap():
    assert reduce_factor((6000, 6000), (28, 28)) == 6000 // (REDUCE_GAP * 28)
    assert reduce_factor((64, 48), (28, 28)) == 1
    assert reduce_factor((6000, 100), (28, 28)) == 1  # the short side decides
    assert reduce_factor((6000, 6000), (32, 16)) == 6000 // (REDUCE_GAP * 32)
    assert reduce_factor((6000, 6000), None) == 1
    for size in [(1000, 777), (333, 5000), (90, 90)]:
        f = reduce_factor(size, (28, 28))
        assert min(size) // f >= REDUCE_GAP * 28 or f == 1


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "I;16", "I", "F"])
def test_strips_equal_whole_image_reduce(mode, monkeypatch):
    for w, h, f in [(1000, 777, 7), (333, 1001, 10)]:
        base = noise(mode, w, h)
        whole_mode = pp._CONVERT_BEFORE_REDUCE.get(mode, mode)
        want = (base.convert(whole_mode) if whole_mode != mode else base).reduce(f)
        monkeypatch.setattr(pp, "STRIP_PIXELS", w * f * 2 + 5)  # strips of 2 output rows
        got = pp._shrink(base.copy(), f)
        assert got.mode == want.mode and got.size == want.size
        assert got.tobytes() == want.tobytes()


def test_large_png_decodes_small_and_keeps_exif_orientation():
    a = np.zeros((1200, 2400), np.uint8)
    a[:100, :100] = 255  # top-left mark
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encode(Image.fromarray(a, "L"), "PNG", exif=exif)
    im = open_image(data, fit=(28, 28))
    fx, fy = reduce_factors((2400, 1200), (28, 28))  # stretch: per axis
    assert (fx, fy) == (2400 // 84, 1200 // 84)
    assert im.size == (-(-1200 // fy), -(-2400 // fx))  # portrait after the transpose
    full = open_image(data)
    assert full.size == (1200, 2400)
    # the mark is at the top-right once rotated, in both
    assert np.asarray(im)[0, -1] > 200 and np.asarray(full)[0, -1] > 200


def test_jpeg_uses_draft_scaling():
    img = Image.fromarray(np.full((2000, 3000, 3), 90, np.uint8), "RGB")
    im = open_image(encode(img, "JPEG"), fit=(28, 28))
    assert max(im.size) <= 3000 // 8 and min(im.size) >= REDUCE_GAP * 28


def test_offline_api_and_server_decode_alike(tmp_path):
    """Large images classify identically offline and through the service."""
    from pynq_nbq import api
    from pynq_nbq.server import ServerConfig, create_app
    from pynq_nbq.testing import random_bundle

    random_bundle(tmp_path / "m", "svpe", seed=5)
    model = api.load_model(tmp_path / "m")
    app = create_app(ServerConfig(model=str(tmp_path / "m"), power="off"))
    try:
        c = app.test_client()
        for i, (mode, fmt) in enumerate([("RGBA", "PNG"), ("RGB", "JPEG"), ("P", "PNG")]):
            data = encode(noise(mode, 1500, 1100, seed=i), fmt)
            body = c.post("/v1/classify?top_k=100", data=data).get_json()
            p = model.classify([data])
            assert body["index"] == int(p.indices[0])
            got = {t["index"]: t["probability"] for t in body["top_k"]}
            assert got == dict(enumerate(float(v) for v in p.probabilities[0]))
            img = body["image"]
            assert (img["width"], img["height"]) == (1500, 1100)  # as the file declares
            assert max(img["decoded_width"], img["decoded_height"]) < 1500
    finally:
        app.extensions["nbq"].close()


def test_extreme_aspect_ratios_shrink_per_axis_or_are_over_budget():
    """Issue 22: a 1 x N PNG shrinks to 1 x [n, 2n) for a stretch model (decoding holds the
    full raster only); for a center-crop model it cannot shrink, and its charge exceeds the
    default budget, so the server refuses it (413) before decoding."""
    from pynq_nbq.decode_cost import Header, decode_bytes, read_header
    from pynq_nbq.preprocess import shrink_target
    from pynq_nbq.server.config import DECODE_BUDGET_BYTES
    from scripts.attack_payloads import aspect_png

    n = shrink_target((28, 28))
    for tall in (True, False):
        data = aspect_png(tall, 0.01)  # 1 x 390,000
        im = open_image(data, fit=(28, 28))
        assert min(im.size) == 1 and n <= max(im.size) < 2 * n
        assert decode_bytes(read_header(data), (28, 28)) < 64 << 20
    full = Header("PNG", "L", 1, 39_000_000, 76_000)
    assert decode_bytes(full, (28, 28)) < DECODE_BUDGET_BYTES
    assert decode_bytes(full, (28, 28), "center-crop") > DECODE_BUDGET_BYTES
