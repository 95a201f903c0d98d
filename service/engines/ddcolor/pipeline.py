"""DDColor's published pre- and post-processing, as pure functions on tensors.

Follows piddnad/DDColor `ddcolor/pipeline.py` (`ColorizationPipeline.process`), which does:

1. `img / 255` as float32; the full-resolution L comes from this image's Lab.
2. The *RGB* image is resized to the square render size (`cv2.resize`, bilinear, no
   antialiasing), and only then converted to Lab; its L with a = b = 0 goes back to RGB: a grey
   RGB image in [0, 1], which the network normalises itself. So the order is resize, then Lab
   (not Lab, then resize the lightness): the two differ slightly because Lab is non-linear.
3. The predicted ab (render size) is resized to the photo's size, joined with the full-resolution
   L, converted to RGB, scaled by 255 and rounded.

Two deliberate differences, both invisible where the photo is the render size:

- Upstream resizes ab with `F.interpolate`'s default, nearest neighbour, which gives blocky
  colour edges once the photo is larger than the render size; we resize bilinearly.
- We clamp the predicted ab to the Lab range before converting (`AB_LIMIT`): trained DDColor
  models sometimes predict far outside it and users see colour blotches where they do
  (piddnad/DDColor#54). `lab_to_rgb` then clips RGB to [0, 1] as well, so no value can wrap
  around when it becomes uint8.

Colour conversions are the project's (`service.imaging.lab`, scikit-image's formulas) instead of
OpenCV's; tests/support/ddcolor.py runs the OpenCV original to bound the difference.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from service.imaging.lab import lab_to_rgb, rgb_to_lab, to_tensor, to_uint8

AB_LIMIT = (-128.0, 127.0)
"""The a and b range of 8-bit Lab: every sRGB colour lies well inside it (|a|, |b| < 110)."""


def grey_input(rgb: torch.Tensor, render_size: int) -> torch.Tensor:
    """RGB (N, 3, H, W) in [0, 1] -> the network's input (N, 3, S, S): its lightness as grey RGB.

    Any size resizes; which sizes a request may ask for is the engine's RenderLimits.
    """
    # align_corners=False without antialiasing is cv2.resize's INTER_LINEAR, the upstream call.
    resized = F.interpolate(
        rgb, size=(render_size, render_size), mode="bilinear", align_corners=False
    )
    lightness = rgb_to_lab(resized.clamp(0.0, 1.0))[:, :1]
    grey_lab = torch.cat((lightness, torch.zeros_like(lightness).expand(-1, 2, -1, -1)), dim=1)
    return lab_to_rgb(grey_lab)


def colorize(rgb: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Photos (N, 3, H, W) in [0, 1] and their predicted ab (N, 2, S, S) -> RGB like the photos."""
    if ab.ndim != 4 or ab.shape[1] != 2 or ab.shape[0] != rgb.shape[0]:
        raise ValueError(
            f"expected ab (N, 2, S, S) for {rgb.shape[0]} images, got {tuple(ab.shape)}"
        )
    height, width = rgb.shape[-2:]
    # Clamped before resizing: a bilinear mix of in-range values stays in range, and the render
    # size is usually the smaller grid.
    ab = ab.to(torch.float32).clamp(*AB_LIMIT)
    if ab.shape[-2:] != (height, width):
        ab = F.interpolate(ab, size=(height, width), mode="bilinear", align_corners=False)
    lightness = rgb_to_lab(rgb)[:, :1]
    return lab_to_rgb(torch.cat((lightness, ab), dim=1))


def render_input(
    image: np.ndarray, render_size: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> the network's input (1, 3, S, S); `torch.cat` these to batch."""
    return grey_input(to_tensor(image, torch.device(device)).unsqueeze(0), render_size)


def join(image: np.ndarray, ab: torch.Tensor) -> np.ndarray:
    """The photo, RGB uint8 (H, W, 3), and its predicted ab (1, 2, S, S) -> RGB uint8 (H, W, 3).

    Runs on `ab`'s device; for a batch, call it per image with `ab[i : i + 1]`.
    """
    rgb = to_tensor(image, ab.device).unsqueeze(0)
    return to_uint8(colorize(rgb, ab)[0])
