"""A photo's EXIF orientation read from its header, never by decoding its pixels.

Pillow's `getexif()` on a PNG decodes the whole image first, in case an eXIf chunk follows the
pixel data: at upload that was a full decode on the event loop (36 ms for a 2048 px photo, every
request waiting behind it). A PNG's chunks are walked instead, which finds eXIf wherever it is.
"""

from __future__ import annotations

from PIL import ExifTags, Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_exif(data: bytes) -> bytes | None:
    """The payload of the PNG's eXIf chunk, wherever it lies, or None (no pixel is decoded)."""
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"eXIf":
            return data[pos + 8 : pos + 8 + length]
        if kind == b"IEND":
            return None
        pos += 12 + length  # length, type, data, CRC
    return None


def orientation(im: Image.Image, data: bytes) -> int:
    """The EXIF orientation (1-8; 1 when there is none) of `im`, opened from `data`, unloaded.

    Raises whatever Pillow raises for unreadable EXIF.
    """
    if im.format == "PNG":
        raw = png_exif(data)
        if raw is None:
            return 1
        exif = Image.Exif()
        exif.load(raw)
    else:
        exif = im.getexif()  # the other formats read EXIF with the header
    value = exif.get(ExifTags.Base.Orientation, 1)
    return value if isinstance(value, int) else 1
