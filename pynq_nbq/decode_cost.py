"""What decoding an image will cost in memory, from its header alone (issue 22).

:func:`read_header` opens an image with Pillow restricted to :data:`ACCEPTED_FORMATS`
(Pillow's ``open`` reads only the header for those) and :func:`decode_bytes` turns what
the header declares - format, mode, width, height - into an upper bound on the bytes that
:func:`~pynq_nbq.preprocess.open_image` and :func:`~pynq_nbq.preprocess.preprocess` will
hold at their peak for it, following the same shrink rules
(:func:`~pynq_nbq.preprocess.jpeg_draft_scale`, :func:`~pynq_nbq.preprocess.reduce_factors`).
The server charges that sum against one memory budget before any pixel is decoded.

The per-format terms were measured with ``scripts/bench_server.py --attacks`` (peak RSS of
a server process, Pillow 13, glibc with the server's allocator settings) and are set above
what was measured; docs/server.md lists them.

Formats outside the allow-list are refused: ICO, CUR and ICNS hold embedded PNGs whose
real size is known only once decoded (Pillow decodes them inside ``Image.open``: a 560 KB
ICO whose directory says 256 x 256 held a 12000 x 12000 PNG, 552 MB); the many rarer
formats Pillow reads are left out because nobody has measured them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from .preprocess import (
    ImageError,
    ImageTooLarge,
    jpeg_draft_scale,
    pillow_formats,
    reduce_factors,
    reduced_size,
    tile_shape,
)

#: Pillow format names the service decodes (MPO: a JPEG with extra pictures; frame 0 only)
ACCEPTED_FORMATS = ("PNG", "JPEG", "MPO", "GIF", "BMP", "TIFF", "WEBP")
#: first bytes of formats refused on purpose, with the reason (named in the 415 answer)
REFUSED_SIGNATURES = {
    b"\x00\x00\x01\x00": "ICO",
    b"\x00\x00\x02\x00": "CUR",
    b"icns": "ICNS",
}
#: Pillow's bytes per stored pixel (RGB is stored as 4 bytes, like RGBA)
_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
#: WebP: libwebp's decode canvas, the RGBA bytes handed to Python and the image itself
#: (measured 15.3 bytes per pixel at 36 Mpixel)
WEBP_BYTES_PER_PIXEL = 16
#: what every decode holds besides pixels: decoder state, Python objects (bytes)
FIXED_BYTES = 2 << 20
#: copies of the kept image that conversion, compositing and resizing hold at once
POST_COPIES = 5


#: PNG text chunks (tEXt, zTXt, iTXt; also iCCP profiles): most bytes one may inflate to,
#: and most all of an image's may hold (Pillow's defaults: 1 MiB and 64 MiB)
MAX_TEXT_CHUNK = 256 << 10
MAX_TEXT_MEMORY = 1 << 20


def limit_metadata() -> str:
    """Cap what Pillow keeps of an image's metadata, process-wide (the server calls it at
    start): PNG text and ICC chunks to :data:`MAX_TEXT_CHUNK` each and
    :data:`MAX_TEXT_MEMORY` in all (more is a broken image, 400), truncated files refused
    (``LOAD_TRUNCATED_IMAGES`` off).  Returns a line saying so."""
    from PIL import ImageFile, PngImagePlugin

    PngImagePlugin.MAX_TEXT_CHUNK = MAX_TEXT_CHUNK
    PngImagePlugin.MAX_TEXT_MEMORY = MAX_TEXT_MEMORY
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    Image.init()  # import every format plugin now, not inside the first request
    return (
        f"images: {', '.join(ACCEPTED_FORMATS)}; PNG text chunks <= {MAX_TEXT_CHUNK >> 10} KiB "
        f"each, {MAX_TEXT_MEMORY >> 10} KiB in all"
    )


class RefusedFormat(ImageError):
    """An image format the service does not decode (answered 415)."""


@dataclass(frozen=True)
class Header:
    """What an image's header declares (pixels), and the body's length (bytes)."""

    format: str
    mode: str
    width: int
    height: int
    body_bytes: int

    def as_info(self) -> dict:
        w, h = self.width, self.height
        return {"format": self.format, "mode": self.mode, "width": w, "height": h}


def read_header(data: bytes) -> Header:
    """Open ``data``'s header (accepted formats only; nothing decoded).

    Raises :class:`RefusedFormat` for a refused container, :class:`ImageError` for
    anything Pillow cannot identify among the accepted formats."""
    kind = REFUSED_SIGNATURES.get(bytes(data[:4]))
    if kind is not None:
        raise RefusedFormat(
            f"{kind} images are not accepted: the size of the picture inside is known only "
            f"once decoded; send one of {', '.join(ACCEPTED_FORMATS)}"
        )
    try:
        with Image.open(io.BytesIO(data), formats=pillow_formats(ACCEPTED_FORMATS)) as im:
            (w, h), fmt, mode = im.size, str(im.format), im.mode
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"image too large: {exc}") from None
    except UnidentifiedImageError:
        raise ImageError(
            f"not an image in an accepted format ({', '.join(ACCEPTED_FORMATS)})"
        ) from None
    except ValueError as exc:
        if "MAX_TEXT" in str(exc):  # Pillow's caps on PNG text and ICC chunks
            raise ImageError(
                f"image metadata too large: PNG text chunks are capped at "
                f"{MAX_TEXT_CHUNK >> 10} KiB each and {MAX_TEXT_MEMORY >> 10} KiB in all ({exc})"
            ) from None
        raise ImageError(f"broken image header: {exc}") from None
    except (OSError, SyntaxError, EOFError) as exc:
        raise ImageError(f"broken image header: {exc}") from None
    return Header(fmt, mode, int(w), int(h), len(data))


def raster_bytes(size: tuple[int, int], mode: str) -> int:
    """Bytes of a Pillow image of ``size`` (w, h) in ``mode``: its pixels plus one row
    pointer (8 bytes) per row (a 1 x 39,000,000 image holds 312 MB of row pointers)."""
    w, h = size
    return w * h * _PIXEL_BYTES.get(mode, 4) + 8 * h


#: what a header's metadata may cost beyond the pixels (the caps of :func:`limit_metadata`)
METADATA_BYTES = MAX_TEXT_CHUNK + MAX_TEXT_MEMORY


def _components(mode: str) -> int:
    return {"1": 1, "L": 1, "CMYK": 4}.get(mode, 3)


def decode_bytes(header: Header, fit: tuple[int, int] | None, resize: str = "stretch") -> int:
    """An upper bound on the peak bytes that decoding and preprocessing ``header``'s image
    for a model input of ``fit`` (w, h) with ``resize`` will hold (the body included).

    decode (per format) + two shrink tiles (:func:`~pynq_nbq.preprocess.tile_shape`) +
    :data:`POST_COPIES` copies of the kept image (4 bytes a pixel) + the body +
    :data:`METADATA_BYTES` + :data:`FIXED_BYTES`:

    * JPEG/MPO: the raster at the DCT scale, plus libjpeg's whole-image coefficient buffer
      (w x h x components x 2 bytes; progressive and multi-scan files need it whatever the
      scale, and the header does not say which a file is);
    * WEBP: :data:`WEBP_BYTES_PER_PIXEL` per declared pixel;
    * PNG, GIF, BMP: the raster plus two file rows of up to 2 bytes a band (the decoder's);
    * TIFF: the raster plus an RGBA copy (libtiff's strip or tile buffers at worst)."""
    w, h = header.width, header.height
    fmt, mode = header.format, header.mode
    if fmt in ("JPEG", "MPO"):
        s = jpeg_draft_scale((w, h), fit)
        decoded = (-(-w // s), -(-h // s))
        decode = raster_bytes(decoded, mode) + w * h * _components(mode) * 2
    elif fmt == "WEBP":
        decoded = (w, h)
        decode = WEBP_BYTES_PER_PIXEL * w * h + 8 * h
    elif fmt == "TIFF":
        decoded = (w, h)
        decode = raster_bytes(decoded, mode) + raster_bytes(decoded, "RGBA")
    else:
        decoded = (w, h)
        decode = raster_bytes(decoded, mode) + 2 * (2 * Image.getmodebands(mode) * w + 1)
    factors = reduce_factors(decoded, fit, resize)
    kept = reduced_size(decoded, factors)
    shrink = 0  # a tile and its converted copy, and the reduced image
    if factors != (1, 1):
        shrink = 2 * raster_bytes(tile_shape(decoded, factors), "RGBA") + raster_bytes(kept, "RGBA")
    post = POST_COPIES * raster_bytes(kept, "RGBA")
    return decode + shrink + post + header.body_bytes + METADATA_BYTES + FIXED_BYTES
