"""DDColor's memory estimates against the measured peak of live tensors.

Run as `python -m tests.engines.test_ddcolor_memory [--sizes 64,128,256,512] [--large]` to
re-measure the constants of service/engines/ddcolor/memory.py (prints the raw figures its
comment quotes, and estimate/measured for each).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from devkit.tensor_memory import LiveTensorBytes
from service.engines.base import ColorizeRequest, RenderLimits
from service.engines.ddcolor import memory
from service.engines.ddcolor.engine import DDColorEngine, DDColorLarge, DDColorTiny, banded_join
from service.engines.ddcolor.network import DDColor

BOUNDS = (1.0, 1.35)
"""estimate / measured peak must lie within these everywhere measured."""
PHOTO = (96, 128)
"""(height, width) of the photos the forward measurements use: the forward does not see it."""


def random_engine(cls: type[DDColorEngine], maximum: int = 1024) -> DDColorEngine:
    """The engine with a randomly initialised network: memory does not depend on the weights."""
    engine = cls(torch.device("cpu"), Path("/nonexistent"), render=RenderLimits(256, maximum))
    engine.load_state_dict(DDColor(cls.variant).state_dict())
    return engine


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def forward_peak(engine: DDColorEngine, render_size: int, batch: int) -> int:
    """Peak live bytes of one forward pass of `batch` photos at `render_size` (CPU device)."""
    requests = [
        ColorizeRequest(photo(*PHOTO, seed=i), render_size=render_size) for i in range(batch)
    ]
    prepared = [engine.prepare(r) for r in requests]
    with LiveTensorBytes() as tracker:
        engine.forward(requests, prepared)
    return int(tracker.peak)


@pytest.fixture(scope="module")
def tiny_engine() -> DDColorEngine:
    return random_engine(DDColorTiny)


@pytest.mark.parametrize("batch", [1, 2], ids=["batch-1", "batch-2"])
@pytest.mark.parametrize("render_size", [64, 128], ids=["render-64", "render-128"])
def test_tiny_forward_estimate_bounds_the_measured_peak(
    tiny_engine: DDColorEngine, render_size: int, batch: int
) -> None:
    peak = forward_peak(tiny_engine, render_size, batch)
    request = ColorizeRequest(photo(*PHOTO), render_size=render_size)
    estimate = tiny_engine.device_estimate(request, batch)
    low, high = BOUNDS
    assert low * peak <= estimate <= high * peak, f"peak {peak}, estimate {estimate}"


@pytest.mark.parametrize("size", [(384, 512), (1000, 37)], ids=["512x384", "37x1000-strip"])
def test_join_estimate_bounds_the_measured_peak(
    tiny_engine: DDColorEngine, size: tuple[int, int]
) -> None:
    request = ColorizeRequest(photo(*size), render_size=64)
    ab = torch.randn(1, 2, 64, 64) * 30
    with torch.inference_mode(), LiveTensorBytes() as tracker:
        tiny_engine.finish(request, ab)
    estimate = tiny_engine.finish_estimate(request)
    assert tracker.peak <= estimate <= 1.5 * tracker.peak + (1 << 20), (tracker.peak, estimate)


def test_bands_give_what_one_whole_image_join_gives() -> None:
    image = photo(300, 200)
    ab = torch.randn(1, 2, 64, 64) * 40
    whole = banded_join(image, ab, 1 << 40)
    banded = banded_join(image, ab, memory.BAND_PIXEL_BYTES * 200 * 7)
    assert np.array_equal(whole, banded)


# --- re-measuring --------------------------------------------------------------------------------


def remeasure(sizes: Sequence[int], variants: Sequence[str]) -> None:
    """Print peak bytes per render size and batch, the per-item fit, and estimate/measured."""
    classes = {"tiny": DDColorTiny, "large": DDColorLarge}
    for variant in variants:
        engine = random_engine(classes[variant], maximum=max(sizes))
        rows = []
        for size in sizes:
            for batch in (1, 2):
                started = time.monotonic()
                peak = forward_peak(engine, size, batch)
                took = time.monotonic() - started
                est = memory.forward_bytes(variant, size, batch)
                rows.append((size, batch, peak))
                print(
                    f"{variant} S={size} batch={batch}: peak {peak / 1e6:.1f} MB, "
                    f"estimate {est / 1e6:.1f} MB, ratio {est / peak:.3f} ({took:.1f} s)",
                    flush=True,
                )
        # Per item: the batch-2 peak less the batch-1 peak; fit a*S^2 + b to those.
        per_item = [
            (s, p2 - p1) for (s, b1, p1), (_, b2, p2) in zip(rows[::2], rows[1::2], strict=True)
        ]
        squares = np.array([s * s for s, _ in per_item], dtype=float)
        values = np.array([v for _, v in per_item], dtype=float)
        a, b = np.polyfit(squares, values, 1)
        single = np.array([p for _, batch, p in rows if batch == 1], dtype=float)
        a1, b1 = np.polyfit(squares, single, 1)
        print(f"{variant} per item (batch 2 - batch 1): {a:.2f} B/px x S^2 + {b / 1e6:.2f} MB")
        print(f"{variant} batch 1: {a1:.2f} B/px x S^2 + {b1 / 1e6:.2f} MB")
    image = photo(768, 1024)
    ab = torch.randn(1, 2, 256, 256) * 30
    pixels, band_rows = 768 * 1024, 16
    with torch.inference_mode():
        with LiveTensorBytes() as whole:
            banded_join(image, ab, 1 << 40)
        with LiveTensorBytes() as banded:
            banded_join(image, ab, memory.BAND_PIXEL_BYTES * 1024 * band_rows)
    band_pixels = band_rows * 1024
    per_band_pixel = (whole.peak - banded.peak) / (pixels - band_pixels)
    per_pixel = (banded.peak - per_band_pixel * band_pixels) / pixels
    print(f"join 1024x768: whole-image {per_pixel:.1f} B/px, band {per_band_pixel:.1f} B/px")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="64,128,256,512")
    parser.add_argument("--variants", default="tiny")
    args = parser.parse_args()
    remeasure([int(s) for s in args.sizes.split(",")], args.variants.split(","))
