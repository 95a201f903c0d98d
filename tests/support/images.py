"""Photos and image bytes for tests: scikit-image's bundled photos, PNG uploads made from them,
and reading a service's answer back as pixels."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

DATA_DIR = Path(__import__("skimage").__file__).parent / "data"


def photo(name: str) -> np.ndarray:
    """A bundled scikit-image photo as RGB uint8."""
    with Image.open(DATA_DIR / name) as im:
        return np.asarray(im.convert("RGB"))


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
