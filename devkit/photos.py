"""scikit-image's bundled photos (a dev dependency): where they are and one as RGB uint8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import skimage
from PIL import Image

DATA_DIR = Path(skimage.__file__).parent / "data"


def photo(name: str) -> np.ndarray:
    """A bundled scikit-image photo as RGB uint8."""
    with Image.open(DATA_DIR / name) as im:
        return np.asarray(im.convert("RGB"))
