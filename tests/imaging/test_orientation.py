"""EXIF orientation at upload: read from the header, never by decoding the pixels."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from service.imaging.decode import decode_image, probe_header
from service.imaging.errors import UndecodableImage
from service.imaging.orientation import png_exif
from service.settings import INPUT_FORMATS
from tests.support.images import photo

MAX_PIXELS = 50_000_000


def chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def exif_payload(turn: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = turn
    return exif.tobytes()


def png_with_exif_after_pixels(rgb: np.ndarray, turn: int) -> bytes:
    """A PNG whose eXIf chunk follows IDAT (Pillow finds it only by decoding)."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG")
    data = buffer.getvalue()
    iend = data.rindex(b"IEND") - 4
    return data[:iend] + chunk(b"eXIf", exif_payload(turn)) + data[iend:]


def truncated_pixels(data: bytes) -> bytes:
    """The same PNG with its pixel data cut short: any decode fails, the header stays readable."""
    start = data.index(b"IDAT") - 4
    length = int.from_bytes(data[start : start + 4], "big")
    idat = data[start + 8 : start + 8 + length]
    short = chunk(b"IDAT", idat[: len(idat) // 4])
    return data[:start] + short + data[start + 12 + length :]


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.ascontiguousarray(photo("astronaut.png")[:96, :64])


def test_a_png_whose_exif_follows_its_pixels_is_turned_by_probe_and_decode_alike(
    rgb: np.ndarray,
) -> None:
    data = png_with_exif_after_pixels(rgb, 6)
    header = probe_header(data, allowed_formats=INPUT_FORMATS, max_pixels=MAX_PIXELS)
    decoded = decode_image(data, allowed_formats=INPUT_FORMATS, max_pixels=MAX_PIXELS)
    assert header.rotated and (header.width, header.height) == (96, 64)
    assert decoded.shape == (header.height, header.width, 3)


def test_the_probe_reads_orientation_without_decoding_pixels(rgb: np.ndarray) -> None:
    data = truncated_pixels(png_with_exif_after_pixels(rgb, 8))
    with pytest.raises(UndecodableImage):
        decode_image(data, allowed_formats=INPUT_FORMATS, max_pixels=MAX_PIXELS)
    header = probe_header(data, allowed_formats=INPUT_FORMATS, max_pixels=MAX_PIXELS)
    assert header.rotated and (header.width, header.height) == (96, 64)


def test_png_exif_walks_the_chunks(rgb: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG")
    assert png_exif(buffer.getvalue()) is None
    assert png_exif(png_with_exif_after_pixels(rgb, 3)) == exif_payload(3)
    assert png_exif(buffer.getvalue()[:20]) is None  # cut inside the first chunk
