"""The command-line suites' photos on disk: their size and where the session wrote them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SIZE = (128, 96)
"""(width, height) of the test photos: small enough for every engine to run in well under 1 s."""


@dataclass(frozen=True)
class Photos:
    """Grayscale inputs and a colour reference, written once per session."""

    folder: Path
    astronaut: Path
    """astronaut.png downscaled to SIZE, saved as an 8-bit grayscale PNG."""
    coffee: Path
    """coffee.png the same way, as a grayscale JPEG."""
    reference: Path
    """astronaut.png downscaled to SIZE, in colour: the exemplar engine's reference."""
