"""encode_image writes pixels only, in the asked format and quality, with the right media type."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from service.imaging.decode import decode_image
from service.imaging.encode import CONTENT_TYPES, DEFAULT_QUALITY, PNG_COMPRESS_LEVEL, encode_image
from service.settings import INPUT_FORMATS, OUTPUT_FORMATS
from tests.support.bad_inputs import save
from tests.support.images import photo

FORMATS = list(CONTENT_TYPES)
PILLOW_NAMES = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    return photo("chelsea.png")


def reopen(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def png_chunk_types(data: bytes) -> list[bytes]:
    types, i = [], 8
    while i < len(data):
        length = struct.unpack(">I", data[i : i + 4])[0]
        types.append(data[i + 4 : i + 8])
        i += 12 + length
    return types


def test_content_types_cover_the_output_formats() -> None:
    assert tuple(CONTENT_TYPES) == OUTPUT_FORMATS
    for fmt, media_type in CONTENT_TYPES.items():
        assert Image.MIME[PILLOW_NAMES[fmt]] == media_type


@pytest.mark.parametrize(
    ("fmt", "max_mean_error"), [("png", 0.0), ("jpeg", 2.0), ("webp", 3.0)], ids=FORMATS
)
def test_round_trip_keeps_size_and_pixels(
    fmt: str, max_mean_error: float, chelsea: np.ndarray
) -> None:
    image = reopen(encode_image(chelsea, fmt))
    assert image.format == PILLOW_NAMES[fmt]
    assert image.mode == "RGB" and image.size == (451, 300)
    error = np.abs(np.asarray(image).astype(int) - chelsea).mean()
    assert error <= max_mean_error


@pytest.mark.parametrize("fmt", FORMATS)
def test_format_name_is_case_insensitive(fmt: str, chelsea: np.ndarray) -> None:
    assert encode_image(chelsea, fmt.upper()) == encode_image(chelsea, fmt)


def test_strided_views_are_encoded_as_seen(chelsea: np.ndarray) -> None:
    mirrored = chelsea[::2, ::-1]
    assert np.array_equal(np.asarray(reopen(encode_image(mirrored, "png"))), mirrored)


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_quality_is_applied_with_a_default(fmt: str, chelsea: np.ndarray) -> None:
    assert encode_image(chelsea, fmt) == encode_image(chelsea, fmt, DEFAULT_QUALITY[fmt])
    low, high = (len(encode_image(chelsea, fmt, q)) for q in (10, 95))
    assert low < high / 2


def test_png_ignores_quality_and_uses_a_fast_level(chelsea: np.ndarray) -> None:
    data = encode_image(chelsea, "png", quality=5)
    assert data == encode_image(chelsea, "png")
    # zlib header FLEVEL: 0 fastest (levels 0-1), 1 fast (2-5), 2 default (6), 3 maximum (7-9).
    idat = data.index(b"IDAT") + 4
    assert data[idat + 1] >> 6 == 1 and PNG_COMPRESS_LEVEL == 3


@pytest.mark.parametrize(
    "quality",
    [0, 101, -5, 1000, 90.0, True, "90"],
    ids=["zero", "101", "negative", "huge", "float", "bool", "string"],
)
@pytest.mark.parametrize("fmt", FORMATS)
def test_quality_outside_1_to_100_is_refused(
    fmt: str, quality: object, chelsea: np.ndarray
) -> None:
    with pytest.raises(ValueError, match="quality must be an integer from 1 to 100"):
        encode_image(chelsea, fmt, quality)  # type: ignore[arg-type]


@pytest.mark.parametrize("quality", [1, 100])
def test_quality_bounds_are_inclusive(quality: int, chelsea: np.ndarray) -> None:
    assert reopen(encode_image(chelsea, "jpeg", quality)).size == (451, 300)


@pytest.mark.parametrize(
    ("rgb", "fmt", "message"),
    [
        (np.zeros((4, 4, 3), np.uint8), "tiff", "choose from \\['jpeg', 'png', 'webp'\\]"),
        (np.zeros((4, 4, 3), np.uint8), "jpg", "unknown output format 'jpg'"),
        (np.zeros((4, 4), np.uint8), "png", "RGB uint8"),
        (np.zeros((4, 4, 4), np.uint8), "png", "RGB uint8"),
        (np.zeros((4, 4, 3), np.float32), "png", "RGB uint8"),
        (np.zeros((0, 4, 3), np.uint8), "png", "RGB uint8"),
    ],
    ids=["tiff", "jpg-alias", "2d", "rgba", "float", "empty"],
)
def test_bad_arguments_are_refused(rgb: np.ndarray, fmt: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_image(rgb, fmt)


def _photo_with_metadata() -> bytes:
    """A JPEG carrying EXIF (orientation, camera), an ICC profile and XMP, as phones write."""
    exif = Image.Exif()
    exif[0x0112] = 1
    exif[0x010F] = "SecretCam"
    icc = b"\x00" * 128 + b"acspICCSECRET" + b"\x00" * 64
    return save(
        Image.fromarray(photo("astronaut.png")[:64, :64]),
        "JPEG",
        exif=exif,
        icc_profile=icc,
        xmp=b"<x:xmpmeta>SecretXMP</x:xmpmeta>",
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_metadata_from_the_upload_reaches_the_output(fmt: str) -> None:
    upload = _photo_with_metadata()
    with Image.open(io.BytesIO(upload)) as original:
        assert {"exif", "icc_profile", "xmp"} <= set(original.info)  # the input does carry them
    rgb = decode_image(upload, allowed_formats=INPUT_FORMATS, max_pixels=10**6)
    data = encode_image(rgb, fmt)
    image = reopen(data)
    assert not {"exif", "icc_profile", "xmp", "transparency"} & set(image.info)
    for secret in (b"SecretCam", b"SECRET", b"SecretXMP", b"Exif"):
        assert secret not in data
    if fmt == "jpeg":
        assert isinstance(image, JpegImagePlugin.JpegImageFile)
        assert [marker for marker, _ in image.applist] == ["APP0"]  # JFIF only
    elif fmt == "png":
        types = png_chunk_types(data)
        assert types[0] == b"IHDR" and types[-1] == b"IEND"
        assert set(types) == {b"IHDR", b"IDAT", b"IEND"}
    else:
        assert data[12:16] == b"VP8 "  # simple lossy WebP: no VP8X, so no EXIF/ICCP/XMP chunks
