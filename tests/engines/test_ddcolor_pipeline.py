"""Our DDColor pre- and post-processing give what the published pipeline gives.

The reference (tests/support/ddcolor.py) is the published OpenCV code path; only the network
module is shared. Where the photo is already the render size, the two must agree to within
rounding: the resizes are identities and only the colour conversions differ (OpenCV's float
Lab versus scikit-image's formulas in service/imaging/lab.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from service.engines.ddcolor.network import DDColor
from service.engines.ddcolor.pipeline import AB_LIMIT, colorize, join, render_input
from service.imaging.lab import rgb_to_lab
from tests.support.ddcolor import published_colorize, published_input

MAX_MEAN_ABS_DIFF = 1.5
"""On the 0-255 scale; rounding to uint8 alone accounts for about 0.25."""
MAX_INPUT_DIFF = 2e-3
"""Grey network input, [0, 1] scale: about half an 8-bit step."""


def square(photo: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(photo).resize((size, size), Image.Resampling.BICUBIC))


@pytest.mark.parametrize("size", [64, 128])
def test_grey_input_matches_published(astronaut: np.ndarray, size: int) -> None:
    ours = render_input(astronaut, size)
    theirs = published_input(astronaut, size)
    assert ours.shape == theirs.shape == (1, 3, size, size)
    # Grey: the three channels are equal.
    torch.testing.assert_close(ours[:, 0], ours[:, 2], atol=1e-4, rtol=0)
    assert (ours - theirs).abs().max() < MAX_INPUT_DIFF


@pytest.mark.parametrize("size", [64, 128])
@torch.inference_mode()
def test_output_matches_published_at_render_size(
    ddcolor_tiny: DDColor, astronaut: np.ndarray, size: int
) -> None:
    photo = square(astronaut, size)
    ours = join(photo, ddcolor_tiny(render_input(photo, size)))
    theirs = published_colorize(photo, ddcolor_tiny, size)
    assert ours.shape == theirs.shape == (size, size, 3)
    assert ours.dtype == np.uint8
    diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
    assert diff.mean() <= MAX_MEAN_ABS_DIFF, diff.mean()
    # The comparison sees colour, not two grey images.
    assert np.abs(ours.astype(np.int16) - ours.mean(axis=2, keepdims=True)).mean() > 5


@torch.inference_mode()
def test_output_keeps_the_photo_size_and_its_lightness(
    ddcolor_tiny: DDColor, coffee: np.ndarray
) -> None:
    photo = coffee[::5, ::5]  # 80x120: not square, not the render size
    out = join(photo, ddcolor_tiny(render_input(photo, 64)))
    assert out.shape == photo.shape
    lightness = rgb_to_lab(torch.from_numpy(np.stack([photo, out])).permute(0, 3, 1, 2) / 255.0)
    # Full-resolution L is the photo's own; gamut clipping moves it only a little.
    assert (lightness[0, 0] - lightness[1, 0]).abs().mean() < 2.0


@pytest.mark.parametrize("value", [1e4, -1e4, float("inf")], ids=["high", "low", "inf"])
def test_ab_far_outside_the_gamut_is_clamped(value: float) -> None:
    rgb = torch.full((1, 3, 8, 8), 0.5)
    ab = torch.full((1, 2, 4, 4), value)
    out = colorize(rgb, ab)
    clamped = colorize(rgb, torch.full((1, 2, 4, 4), AB_LIMIT[0 if value < 0 else 1]))
    assert torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(out, clamped)


def test_ab_inside_the_limits_is_untouched() -> None:
    rgb = torch.full((1, 3, 4, 4), 0.5)
    ab = torch.tensor([20.0, -30.0]).view(1, 2, 1, 1).expand(1, 2, 4, 4)
    lab = rgb_to_lab(colorize(rgb, ab))
    torch.testing.assert_close(lab[:, 1:], ab, atol=1e-2, rtol=0)


def test_batched_inputs_stack(astronaut: np.ndarray, coffee: np.ndarray) -> None:
    batch = torch.cat([render_input(astronaut, 64), render_input(coffee, 64)])
    assert batch.shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="for 2 images"):
        colorize(torch.zeros(2, 3, 8, 8), torch.zeros(1, 2, 8, 8))
