"""Image bytes in and out: safe decoding, encoding, and the Lab colour space the engines work in."""

from service.imaging.decode import (
    GRAYSCALE_CHROMA,
    chroma_level,
    decode_image,
    identify_format,
    probe_size,
)
from service.imaging.encode import CONTENT_TYPES, encode_image
from service.imaging.errors import ImageError, ImageTooLarge, UndecodableImage, UnsupportedFormat
from service.imaging.lab import lab_to_rgb, rgb_to_lab, to_tensor, to_uint8

__all__ = [
    "CONTENT_TYPES",
    "GRAYSCALE_CHROMA",
    "ImageError",
    "ImageTooLarge",
    "UndecodableImage",
    "UnsupportedFormat",
    "chroma_level",
    "decode_image",
    "encode_image",
    "identify_format",
    "lab_to_rgb",
    "probe_size",
    "rgb_to_lab",
    "to_tensor",
    "to_uint8",
]
