"""What the benchmark uploads: grayscale photos at fixed square sizes, and a mixed set.

Every image comes from the photos scikit-image bundles (nothing is downloaded). Fixed sizes are
the astronaut resized to a square; the mixed set is several photos at their own sizes, from
300x451 to 1411x1411. Uploads are grayscale PNGs, the way old photos arrive; the exemplar engine
also gets a colour reference.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

MIXED_PHOTOS = (
    "astronaut.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "hubble_deep_field.jpg",
    "motorcycle_left.png",
    "retina.jpg",
    "rocket.jpg",
)
"""The mixed set: portraits, animals, objects, a street scene, space, a medical scan."""

MIXED = "mixed"
"""The size name of the mixed set."""


@dataclass(frozen=True)
class Payload:
    """One upload: the image file, and a reference file for the exemplar engine."""

    name: str
    image: bytes
    width: int
    height: int
    reference: bytes | None = None

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def rgb(self) -> np.ndarray:
        """The upload decoded as the service sees it: RGB uint8 (H, W, 3)."""
        with Image.open(io.BytesIO(self.image)) as im:
            return np.asarray(im.convert("RGB"))

    def reference_rgb(self) -> np.ndarray | None:
        if self.reference is None:
            return None
        with Image.open(io.BytesIO(self.reference)) as im:
            return np.asarray(im.convert("RGB"))


def data_dir() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


@cache
def _photo(name: str) -> Image.Image:
    with Image.open(data_dir() / name) as im:
        return im.convert("RGB")


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    # Level 1: the harness should spend its CPU on requests, not on compressing uploads.
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def _payload(name: str, image: Image.Image, with_reference: bool) -> Payload:
    reference = _png(image) if with_reference else None
    return Payload(name, _png(image.convert("L")), image.width, image.height, reference)


@cache
def square(side: int, with_reference: bool = False) -> Payload:
    """The astronaut as a side x side grayscale PNG (with its colour original as reference)."""
    image = _photo("astronaut.png").resize((side, side), Image.Resampling.LANCZOS)
    return _payload(f"astronaut-{side}", image, with_reference)


@cache
def mixed(with_reference: bool = False) -> tuple[Payload, ...]:
    """The bundled photos at their own sizes, as grayscale PNGs."""
    return tuple(
        _payload(name.rsplit(".", 1)[0], _photo(name), with_reference) for name in MIXED_PHOTOS
    )


def payloads(size: int | str, with_reference: bool = False) -> tuple[Payload, ...]:
    """The uploads of a size: one square image, or the mixed set for `"mixed"`."""
    if size == MIXED:
        return mixed(with_reference)
    if isinstance(size, str):
        raise ValueError(f"unknown size {size!r}: a side in pixels or {MIXED!r}")
    return (square(size, with_reference),)
