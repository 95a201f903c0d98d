"""Photos and image bytes for tests: scikit-image's bundled photos, PNG uploads made from them,
and reading a service's answer back as pixels."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from devkit.photos import DATA_DIR as DATA_DIR  # re-exported: devkit owns the photos
from devkit.photos import photo as photo


def png_bytes(rgb: np.ndarray, mode: str = "L") -> bytes:
    """Encode RGB uint8 as PNG, converted to `mode` (grayscale by default)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def is_colour(rgb: np.ndarray) -> bool:
    spread = rgb.astype(np.int16).max(axis=2) - rgb.astype(np.int16).min(axis=2)
    return bool(spread.mean() > 4)
