"""Turn uploaded bytes into an upright RGB uint8 array, refusing anything unsafe or unsupported.

The format is decided by the leading bytes (the file signature), never by the file name or the
declared content type:

- empty data -> UndecodableImage (422): there is nothing to identify.
- the signature of an allowed format -> that format; any later failure (bad header, truncation,
  corrupt data) is UndecodableImage (422). Data shorter than the signature that matches its first
  bytes (b"\\x89PN") is a truncated file of that format, also 422.
- anything else -> UnsupportedFormat (415): a known format that is not allowed (TIFF, PDF, a format
  the operator switched off), markup or text (SVG, HTML), or bytes with no signature at all. Random
  bytes therefore get 415, not 422: they are not in an allowed format, so 422's "allowed format but
  broken" does not apply. (A random buffer that happens to start with an allowed signature, e.g.
  b"BM", is treated as a broken file of that format: 422.)

The size is read from the header by the small parsers below, and checked against `max_pixels`
before Pillow is even given the data, because Pillow's WebP plugin allocates the whole canvas when
it opens a file.
"""

from __future__ import annotations

import io
import logging
import math
import re
import struct
from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np
import torch
from PIL import ExifTags, Image

from service.imaging.errors import ImageTooLarge, UndecodableImage, UnsupportedFormat
from service.imaging.lab import rgb_to_lab, to_tensor
from service.imaging.orientation import orientation

logger = logging.getLogger(__name__)

# A signature is a set of (offset, bytes) parts that must all match.
_Signature = tuple[tuple[int, bytes], ...]

SIGNATURES: dict[str, tuple[_Signature, ...]] = {
    "JPEG": (((0, b"\xff\xd8\xff"),),),
    "PNG": (((0, b"\x89PNG\r\n\x1a\n"),),),
    "GIF": (((0, b"GIF87a"),), ((0, b"GIF89a"),)),
    "WEBP": (((0, b"RIFF"), (8, b"WEBP")),),
    "BMP": (((0, b"BM"),),),
}
"""Pillow format name -> file signatures of every format `decode_image` can accept."""

# Formats we never accept, recognised only so the 415 message can say what was sent.
_OTHER_SIGNATURES: dict[str, tuple[_Signature, ...]] = {
    "TIFF": (
        ((0, b"II*\x00"),),
        ((0, b"MM\x00*"),),
        ((0, b"II+\x00"),),
        ((0, b"MM\x00+"),),
    ),
    "PDF": (((0, b"%PDF-"),),),
    "PostScript": (((0, b"%!PS"),),),
    "ICO": (((0, b"\x00\x00\x01\x00"),),),
    "PSD": (((0, b"8BPS"),),),
    "ISO media (HEIF, AVIF, MP4)": (((4, b"ftyp"),),),
    "JPEG 2000": (((0, b"\x00\x00\x00\x0cjP  \r\n\x87\n"),), ((0, b"\xff\x4f\xff\x51"),)),
    "JPEG XL": (((0, b"\xff\x0a"),), ((0, b"\x00\x00\x00\x0cJXL \r\n\x87\n"),)),
    "ZIP": (((0, b"PK\x03\x04"),),),
    "GZIP": (((0, b"\x1f\x8b"),),),
}
# Leading text of markup, after a byte-order mark and whitespace; checked most specific first.
_MARKUP = (("SVG", b"<svg"), ("HTML", b"<!doctype html"), ("HTML", b"<html"), ("XML", b"<?xml"))

_CHROMA_SAMPLE_PIXELS = 1 << 16

GRAYSCALE_CHROMA = 2.0
"""`chroma_level` below this is a grayscale image for practical purposes. Measured: gray images,
also after JPEG, < 0.01; a sepia tint 8-15; the bundled colour photos 18-43."""


def _match(data: bytes, signature: _Signature) -> bool | None:
    """True on a full match, None if `data` is a matching but too short prefix, else False."""
    short = False
    for offset, expected in signature:
        got = data[offset : offset + len(expected)]
        if got != expected[: len(got)]:
            return False
        short = short or len(got) < len(expected)
    return None if short else True


def _describe(data: bytes) -> str | None:
    """Name of a recognisable non-accepted format (for the 415 message), or None."""
    for name, signatures in _OTHER_SIGNATURES.items():
        if any(_match(data, s) for s in signatures):
            return name
    head = data[:1024].removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    for name, tag in _MARKUP:
        if head.startswith(tag) or (name == "SVG" and tag in head):
            return name
    return None


def _normalise(allowed_formats: Collection[str]) -> tuple[str, ...]:
    names = tuple(f.upper() for f in allowed_formats)
    unknown = [n for n in names if n not in SIGNATURES]
    if unknown:
        raise ValueError(f"cannot accept format(s) {unknown}; known: {list(SIGNATURES)}")
    return names


def identify_format(data: bytes, allowed_formats: Collection[str]) -> str:
    """Pillow name of `data`'s format from its signature; 415/422 by the rule in the module doc."""
    allowed = _normalise(allowed_formats)
    if not data:
        raise UndecodableImage("the file is empty")
    for name, signatures in SIGNATURES.items():
        if any(_match(data, s) for s in signatures):
            if name not in allowed:
                raise UnsupportedFormat(allowed, name)
            return name
    for name in allowed:
        if any(_match(data, s) is None for s in SIGNATURES[name]):
            raise UndecodableImage(f"truncated {name} file ({len(data)} bytes)")
    raise UnsupportedFormat(allowed, _describe(data))


def _png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _gif_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 10:
        return None
    width, height = struct.unpack("<HH", data[6:10])
    return width, height


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 26:
        return None
    header_size = int.from_bytes(data[14:18], "little")
    if header_size == 12:  # OS/2 BITMAPCOREHEADER: unsigned 16-bit sizes
        width, height = struct.unpack("<HH", data[18:22])
        return width, height
    if header_size >= 16:
        width, height = struct.unpack("<ii", data[18:26])
        # A negative height means rows are stored top-down; the size is its magnitude.
        return (width, abs(height)) if width > 0 else None
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        # The canvas, which an animation's frames are composed onto.
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


# Start-of-frame markers (baseline, extended, progressive, lossless, arithmetic); not DHT (C4),
# JPG (C8) or DAC (CC), which share the range.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i, n = 2, len(data)
    while i + 1 < n:
        if data[i] != 0xFF:  # junk between segments: skipped, as Pillow does
            i += 1
            continue
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker in (0x00, 0x01) or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        if marker in _JPEG_SOF:
            if i + 9 > n:
                return None
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        if i + 4 > n:
            return None
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


_HEADER_SIZE: dict[str, Callable[[bytes], tuple[int, int] | None]] = {
    "JPEG": _jpeg_size,
    "PNG": _png_size,
    "GIF": _gif_size,
    "WEBP": _webp_size,
    "BMP": _bmp_size,
}


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLarge(width, height, max_pixels)


def _probe(data: bytes, allowed_formats: Collection[str]) -> tuple[str, int, int]:
    fmt = identify_format(data, allowed_formats)
    size = _HEADER_SIZE[fmt](data)
    if size is None:
        raise UndecodableImage(f"truncated or corrupt {fmt} header")
    width, height = size
    if width <= 0 or height <= 0:
        raise UndecodableImage(f"the {fmt} header declares an empty image ({width}x{height})")
    return fmt, width, height


def probe_size(
    data: bytes, allowed_formats: Collection[str], *, max_pixels: int | None = None
) -> tuple[int, int]:
    """(width, height) as stored, from the header alone; raises 415/422 (413 over `max_pixels`)."""
    _, width, height = _probe(data, allowed_formats)
    if max_pixels is not None:
        _check_pixels(width, height, max_pixels)
    return width, height


@dataclass(frozen=True)
class ImageHeader:
    """What an image's headers say, before a pixel is decoded."""

    width: int
    """Width once upright (EXIF orientation applied), as `decode_image` returns it."""
    height: int
    mode: str
    """Pillow's mode of the stored pixels (RGB, L, P, RGBA, I;16...)."""
    rotated: bool
    """EXIF asks for a transpose (decoding then makes one more copy)."""
    transparent: bool
    """Alpha or a transparency key: decoding composites on white, in 16-bit arithmetic."""


def probe_header(data: bytes, *, allowed_formats: Collection[str], max_pixels: int) -> ImageHeader:
    """The upright size and pixel mode of `data`, without decoding a pixel.

    Raises what `decode_image` would for a bad header: 415, 413 over `max_pixels`, 422.
    """
    fmt, width, height = _probe(data, allowed_formats)
    _check_pixels(width, height, max_pixels)
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as im:
            _check_pixels(im.size[0], im.size[1], max_pixels)
            width, height = im.size
            mode = im.mode
            transparent = bool(im.has_transparency_data)
            try:
                turn = orientation(im, data)
            except Exception:
                turn = 1  # decode_image ignores broken EXIF too
    except ImageTooLarge:
        raise
    except Image.DecompressionBombError as exc:
        raise _bomb(exc, width, height, max_pixels) from exc
    except Exception as exc:
        logger.debug("unreadable %s header", fmt, exc_info=True)
        reason = _OBJECT_REPR.sub("the upload", str(exc))
        raise UndecodableImage(f"corrupt or truncated {fmt} file: {reason}") from exc
    rotated = turn in _ORIENTATION
    # Orientations 5-8 turn the picture a quarter: the upright image is the header's transpose.
    if turn in (5, 6, 7, 8):
        width, height = height, width
    return ImageHeader(width, height, mode, rotated, transparent)


_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")
_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


def decode_image(data: bytes, *, allowed_formats: Collection[str], max_pixels: int) -> np.ndarray:
    """Decode the first frame, upright, as C-contiguous RGB uint8 (H, W, 3); or raise ImageError."""
    fmt, width, height = _probe(data, allowed_formats)
    _check_pixels(width, height, max_pixels)
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as im:
            # Pillow's reading can exceed ours: a GIF frame larger than its logical screen grows
            # the canvas. Still before any pixel is decoded.
            _check_pixels(im.size[0], im.size[1], max_pixels)
            im.load()  # only the first frame of an animation
            return _to_rgb(_upright(im))
    except ImageTooLarge:
        raise
    except Image.DecompressionBombError as exc:
        raise _bomb(exc, width, height, max_pixels) from exc
    except MemoryError:
        raise
    except Exception as exc:
        # Pillow's decoders signal bad data with many types (OSError for truncation, SyntaxError,
        # ValueError, EOFError, struct.error, IndexError...); all of it is the client's data.
        # Their messages may carry object reprs with heap addresses: never send those.
        logger.debug("undecodable %s upload", fmt, exc_info=True)
        reason = _OBJECT_REPR.sub("the upload", str(exc))
        raise UndecodableImage(f"corrupt or truncated {fmt} file: {reason}") from exc


def _bomb(
    exc: Image.DecompressionBombError, width: int, height: int, max_pixels: int
) -> ImageTooLarge:
    # Pillow's own limit (2 x Image.MAX_IMAGE_PIXELS) applies when max_pixels is set above it,
    # and it also fires for a canvas that grows past the header's size: report Pillow's count.
    limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    counted = _BOMB_PIXELS.search(str(exc))
    pixels = int(counted.group(1)) if counted else None
    return ImageTooLarge(width, height, min(max_pixels, limit), pixels)


# EXIF orientation -> the transpose that makes the stored pixels upright (EXIF 2.32, tag 0x0112).
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _upright(im: Image.Image) -> Image.Image:
    try:
        orientation = im.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:
        # Broken EXIF should not cost the user their picture; show it as stored.
        logger.debug("unreadable EXIF ignored", exc_info=True)
        return im
    method = _ORIENTATION.get(orientation) if isinstance(orientation, int) else None
    return im if method is None else im.transpose(method)


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Any Pillow mode -> RGB uint8, transparency composited on white."""
    if im.mode == "F":
        # Pillow's convention for float pixels (as in its F -> L conversion): 0..255 scale.
        gray = np.rint(np.clip(np.asarray(im, dtype=np.float32), 0.0, 255.0)).astype(np.uint8)
        return _gray_to_rgb(gray)
    if im.mode == "I" or im.mode.startswith("I;16"):
        # Pillow's own I;16 -> L conversion clips at 255, turning almost every pixel white.
        # Scale the 16-bit range instead: 65535 / 255 = 257 exactly, rounded to nearest.
        samples = np.clip(np.asarray(im), 0, 65535).astype(np.uint32)
        gray = ((samples + 128) // 257).astype(np.uint8)
        key = im.info.get("transparency")
        if isinstance(key, int):
            gray[samples == key] = 255
        return _gray_to_rgb(gray)
    if im.has_transparency_data:
        rgba = np.asarray(im.convert("RGBA"))
        return _on_white(rgba)
    # np.array, not np.asarray: callers get a writable array (torch.from_numpy warns otherwise).
    return np.array(im.convert("RGB") if im.mode != "RGB" else im)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))


def _on_white(rgba: np.ndarray) -> np.ndarray:
    # out = c * a/255 + 255 * (1 - a/255), rounded; every term fits uint16 (max 65025 + 127).
    alpha = rgba[:, :, 3:].astype(np.uint16)
    color = rgba[:, :, :3].astype(np.uint16)
    out = (color * alpha + 255 * (255 - alpha) + 127) // 255
    return np.ascontiguousarray(out.astype(np.uint8))


def chroma_level(rgb: np.ndarray) -> float:
    """Mean CIELAB chroma sqrt(a*² + b*²) of RGB uint8 `rgb`, in Lab units; see GRAYSCALE_CHROMA."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.size == 0:
        raise ValueError(f"expected RGB uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    # A regular subsample (at most ~65k pixels) gives the mean within ~0.1 units on the bundled
    # photos and keeps this cheap for a 40-megapixel reference.
    step = max(1, math.ceil(math.sqrt(rgb.shape[0] * rgb.shape[1] / _CHROMA_SAMPLE_PIXELS)))
    lab = rgb_to_lab(to_tensor(rgb[::step, ::step], torch.device("cpu")))
    return float(torch.hypot(lab[1], lab[2]).mean())
