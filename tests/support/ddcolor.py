"""DDColor's published pre- and post-processing, written independently with OpenCV.

Follows piddnad/DDColor `ddcolor/pipeline.py` (`ColorizationPipeline.process`) step for step:
float32 `img / 255`, `cv2.cvtColor` to Lab for the full-resolution L, `cv2.resize` (bilinear) of
the RGB image to the render size, its L with zero ab back to RGB as the network input, and the
predicted ab resized with `F.interpolate`'s default (nearest) before joining the full L and
converting back. Only the network module is shared with the service.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def published_input(image: np.ndarray, render_size: int) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> the network input (1, 3, S, S) as the published pipeline makes it."""
    img = (image / 255.0).astype(np.float32)
    resized = cv2.resize(img, (render_size, render_size))
    lightness = cv2.cvtColor(resized, cv2.COLOR_RGB2Lab)[:, :, :1]
    grey_lab = np.concatenate((lightness, np.zeros_like(lightness), np.zeros_like(lightness)), -1)
    grey_rgb = cv2.cvtColor(grey_lab, cv2.COLOR_Lab2RGB)
    return torch.from_numpy(grey_rgb.transpose(2, 0, 1)).float().unsqueeze(0)


def published_join(image: np.ndarray, ab: torch.Tensor) -> np.ndarray:
    """The photo, RGB uint8, and predicted ab (1, 2, S, S) -> RGB uint8, as published."""
    height, width = image.shape[:2]
    img = (image / 255.0).astype(np.float32)
    lightness = cv2.cvtColor(img, cv2.COLOR_RGB2Lab)[:, :, :1]
    ab_full = F.interpolate(ab.float(), size=(height, width))[0].numpy().transpose(1, 2, 0)
    rgb = cv2.cvtColor(np.concatenate((lightness, ab_full), axis=-1), cv2.COLOR_Lab2RGB)
    out: np.ndarray = (rgb * 255.0).round().astype(np.uint8)
    return out


@torch.inference_mode()
def published_colorize(image: np.ndarray, network: nn.Module, render_size: int) -> np.ndarray:
    """The whole published pipeline around `network`: RGB uint8 in, RGB uint8 out."""
    ab = network(published_input(image, render_size))
    return published_join(image, ab)
