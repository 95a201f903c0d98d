"""The fixed-input pipeline: output size, determinism, batching, hints, readiness, and memory.

Run as `python -m tests.engines.test_fixed` to re-measure the memory constants of
service/engines/fixed.py (prints the raw figures its comment quotes).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from skimage import color

from devkit.tensor_memory import LiveTensorBytes
from service.engines import fixed
from service.engines.base import ColorizeRequest, EngineNotReady, Hint, InvalidRequest
from service.engines.eccv16 import Eccv16Engine
from service.engines.fast import FastPath, Tolerance
from service.engines.fixed import FixedInputEngine
from service.engines.registry import create_engine
from service.engines.siggraph17 import Siggraph17Engine, grid_cell, hint_planes
from service.engines.weights import OFFICIAL
from tests.support.cpu import lacks_native_bf16, needs_native_bf16
from tests.support.engine_outputs import PIXEL, AloneOutputs
from tests.support.timing import bf16_faster
from tests.support.weights_server import make_weights_dir

ENGINES: dict[str, Callable[[torch.device, Path], FixedInputEngine]] = {
    "eccv16": Eccv16Engine,
    "siggraph17": Siggraph17Engine,
}


# --- measuring: the peak bytes of live tensors ---------------------------------------------------


def measured_peak(engine: FixedInputEngine, images: list[np.ndarray], **kwargs: Any) -> int:
    with LiveTensorBytes() as tracker:
        engine.run([ColorizeRequest(image) for image in images], **kwargs)
    return tracker.peak


def noise_image(height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(height * 7919 + width)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


# --- what comes out ------------------------------------------------------------------------------


def test_output_is_rgb_of_the_input_size(engine: FixedInputEngine, alone: AloneOutputs) -> None:
    assert alone(engine, "coffee").shape == (400, 600, 3)
    assert alone(engine, "coffee").dtype == np.uint8
    assert alone(engine, "pixel").shape == (1, 1, 3)
    assert alone(engine, "pixel").dtype == np.uint8


def test_output_keeps_the_inputs_own_lightness(
    engine: FixedInputEngine, alone: AloneOutputs, coffee: np.ndarray
) -> None:
    # The full-resolution L is the input's, so fine detail survives the 256x256 network. Only
    # colours outside the sRGB gamut, clipped on the way back, move L, and only a little.
    theirs = color.rgb2lab(coffee)[..., 0]
    ours = color.rgb2lab(alone(engine, "coffee"))[..., 0]
    assert np.median(np.abs(ours - theirs)) < 0.5


def test_same_request_gives_identical_output(
    engine: FixedInputEngine, alone: AloneOutputs, coffee: np.ndarray
) -> None:
    again = engine.run([ColorizeRequest(coffee)])[0]
    assert np.array_equal(again, alone(engine, "coffee"))


def test_batch_gives_what_each_image_gives_alone(
    engine: FixedInputEngine, alone: AloneOutputs, coffee: np.ndarray
) -> None:
    # Allowed: one level, for convolution kernels that sum in another order for another batch
    # size (cuDNN may pick another algorithm); on this CPU the outputs are bit-identical.
    pixel, photo = engine.run([ColorizeRequest(PIXEL), ColorizeRequest(coffee)])
    for ours, theirs in ((pixel, alone(engine, "pixel")), (photo, alone(engine, "coffee"))):
        assert ours.shape == theirs.shape
        assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1


def test_banded_colour_conversion_matches_default_bands(
    eccv16: Eccv16Engine, alone: AloneOutputs, coffee: np.ndarray
) -> None:
    # 4 MiB bands are 58 rows of the 600-pixel-wide photo (7 bands, the last one short), the
    # default ones 379 rows (2 bands). Both engines share this code; the conversion is per pixel.
    banded = eccv16.run([ColorizeRequest(coffee)], chunk_bytes=4 << 20)[0]
    assert np.abs(banded.astype(int) - alone(eccv16, "coffee").astype(int)).max() <= 1


def test_empty_batch_runs_nothing(engine: FixedInputEngine) -> None:
    assert engine.run([]) == []


# --- hints ---------------------------------------------------------------------------------------

RED = (255, 0, 0)


def test_hint_colours_its_neighbourhood(
    siggraph17: Siggraph17Engine, alone: AloneOutputs, coffee: np.ndarray
) -> None:
    no_hint = alone(siggraph17, "coffee")
    hinted = siggraph17.run([ColorizeRequest(coffee, (Hint(450, 100, RED),))])[0]
    change = np.abs(hinted.astype(int) - no_hint.astype(int)).sum(axis=2)
    near = (slice(90, 111), slice(440, 461))
    far = (slice(300, 400), slice(0, 200))
    assert change[near].mean() > 30
    assert change[near].mean() > 50 * change[far].mean()
    redness = (
        color.rgb2lab(hinted[near])[..., 1].mean() - color.rgb2lab(no_hint[near])[..., 1].mean()
    )
    assert redness > 10


@pytest.mark.parametrize(
    ("x", "y", "width", "height", "cell", "rows", "cols"),
    [
        (0, 0, 600, 400, (0, 0), slice(0, 2), slice(0, 2)),
        (599, 399, 600, 400, (255, 255), slice(254, 256), slice(254, 256)),
        (300, 200, 600, 400, (128, 128), slice(127, 130), slice(127, 130)),
        (0, 0, 1, 1, (128, 128), slice(127, 130), slice(127, 130)),
        (2, 0, 3, 5, (213, 25), slice(24, 27), slice(212, 215)),
    ],
    ids=["top-left-clipped", "bottom-right-clipped", "centre", "one-pixel-image", "tiny-image"],
)
def test_hint_marks_a_square_of_the_network_grid(
    x: int,
    y: int,
    width: int,
    height: int,
    cell: tuple[int, int],
    rows: slice,
    cols: slice,
) -> None:
    hint = Hint(x, y, RED)
    request = ColorizeRequest(np.zeros((height, width, 3), np.uint8), (hint,))
    assert grid_cell(hint, width, height) == cell
    ab, mask = hint_planes([request], torch.device("cpu"))
    expected_mask = torch.zeros(256, 256)
    expected_mask[rows, cols] = 1.0
    assert torch.equal(mask[0, 0], expected_mask)
    red_ab = torch.tensor(color.rgb2lab(np.array([[RED]], np.uint8))[0, 0, 1:], dtype=torch.float32)
    torch.testing.assert_close(
        ab[0, :, rows, cols],
        red_ab.view(2, 1, 1).expand(2, *ab[0, 0, rows, cols].shape),
        atol=1e-3,
        rtol=0,
    )
    assert not ab[0][:, mask[0, 0] == 0].any()


@pytest.mark.parametrize(
    ("hints", "message"),
    [
        ((Hint(-1, 0, RED),), "hint 0 at (-1, 0) is outside the 600x400 image"),
        ((Hint(10, 10, RED), Hint(600, 0, RED)), "hint 1 at (600, 0) is outside the 600x400 image"),
        ((Hint(0, 400, RED),), "hint 0 at (0, 400) is outside the 600x400 image"),
        ((Hint(5, 5, (0, 256, 0)),), "hint 0 at (5, 5) has colour (0, 256, 0); expected three"),
    ],
    ids=["left-of-image", "past-right-edge", "below-image", "colour-out-of-range"],
)
def test_bad_hint_is_rejected_by_name(
    siggraph17: Siggraph17Engine, hints: tuple[Hint, ...], message: str
) -> None:
    request = ColorizeRequest(np.zeros((400, 600, 3), np.uint8), hints)
    with pytest.raises(InvalidRequest) as caught:
        siggraph17.validate(request)
    assert str(caught.value).startswith(message)


def test_eccv16_takes_no_hints(eccv16: Eccv16Engine) -> None:
    request = ColorizeRequest(np.zeros((4, 4, 3), np.uint8), (Hint(1, 1, RED),))
    with pytest.raises(InvalidRequest, match="engine 'eccv16' does not take hints"):
        eccv16.validate(request)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((4, 4), np.uint8),
        np.zeros((4, 4, 4), np.uint8),
        np.zeros((4, 4, 3), np.float32),
        np.zeros((0, 4, 3), np.uint8),
    ],
    ids=["gray-2d", "rgba", "float", "empty"],
)
def test_non_rgb8_image_is_rejected(engine: FixedInputEngine, image: np.ndarray) -> None:
    with pytest.raises(InvalidRequest):
        engine.validate(ColorizeRequest(image))


# --- readiness -----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["eccv16", "siggraph17"])
def test_missing_weights_make_the_engine_not_ready_with_the_fix(model: str, tmp_path: Path) -> None:
    engine = ENGINES[model](torch.device("cpu"), tmp_path)
    fix = f"colorize-service fetch-weights {model} --weights-dir {tmp_path}"
    assert not engine.ready
    assert fix in (engine.not_ready_reason or "")
    with pytest.raises(EngineNotReady) as caught:
        engine.load()
    assert caught.value.name == model
    assert fix in caught.value.reason and str(tmp_path) in caught.value.reason
    with pytest.raises(EngineNotReady):
        engine.run([ColorizeRequest(PIXEL)])


@pytest.mark.parametrize("model", ["eccv16", "siggraph17"])
def test_registry_builds_an_engine_that_loads(model: str, weights_dir: Path) -> None:
    engine = create_engine(model, torch.device("cpu"), weights_dir)
    assert isinstance(engine, ENGINES[model])
    assert engine.batchable
    path = weights_dir / OFFICIAL[model].filename
    assert engine.not_ready_reason == f"weights at {path} are not loaded yet"
    engine.load()
    assert engine.ready and engine.not_ready_reason is None


# --- the fast path (service/engines/fast.py; its own tests are in tests/bench/test_fast_path.py) -


@pytest.mark.parametrize("model", ["eccv16", "siggraph17"])
def test_channels_last_output_is_within_one_level_of_the_default(
    model: str,
    weights_dir: Path,
    alone: AloneOutputs,
    coffee: np.ndarray,
    request: pytest.FixtureRequest,
) -> None:
    default = alone(request.getfixturevalue(model), "coffee")
    engine = ENGINES[model](torch.device("cpu"), weights_dir, FastPath(channels_last=True))
    engine.load()
    assert engine.precision == "fp32"
    ours = engine.run([ColorizeRequest(coffee)])[0]
    assert np.abs(ours.astype(int) - default.astype(int)).max() <= 1


@needs_native_bf16
def test_bf16_beyond_the_tolerance_leaves_the_engine_in_fp32(
    weights_dir: Path, eccv16: Eccv16Engine, alone: AloneOutputs, coffee: np.ndarray
) -> None:
    # With generated weights bf16 moves ab by ~4.7 units on average (tolerance 1.0): refused.
    fast = FastPath(precision="bf16", speed_check=bf16_faster())
    engine = Eccv16Engine(torch.device("cpu"), weights_dir, fast)
    engine.load()
    assert engine.precision == "fp32"
    assert "beyond the tolerance" in engine.precision_reason
    assert np.array_equal(engine.run([ColorizeRequest(coffee)])[0], alone(eccv16, "coffee"))


@lacks_native_bf16
def test_bf16_where_the_cpu_emulates_it_is_refused_and_loads_quickly(
    weights_dir: Path, eccv16: Eccv16Engine, alone: AloneOutputs, coffee: np.ndarray
) -> None:
    # Issue 13: the probe used to run a whole forward pass in emulated bf16 (minutes) at load.
    engine = Eccv16Engine(torch.device("cpu"), weights_dir, FastPath(precision="bf16"))
    started = time.perf_counter()
    engine.load()
    assert time.perf_counter() - started < 20.0
    assert engine.precision == "fp32"
    assert engine.precision_reason.startswith("bf16 refused: not faster than fp32 on cpu")
    assert np.array_equal(engine.run([ColorizeRequest(coffee)])[0], alone(eccv16, "coffee"))


@needs_native_bf16
def test_bf16_within_its_tolerance_runs_in_bf16(weights_dir: Path, coffee: np.ndarray) -> None:
    loose = FastPath(
        precision="bf16",
        tolerance=Tolerance(mean_ab=20.0, p99_ab=120.0),
        speed_check=bf16_faster(),
    )
    engine = Siggraph17Engine(torch.device("cpu"), weights_dir, loose)
    engine.load()
    assert engine.precision == "bf16"
    assert engine.precision_reason.startswith("bf16: ")
    assert "faster than fp32" in engine.precision_reason
    out = engine.run([ColorizeRequest(coffee)])[0]
    assert out.shape == coffee.shape and out.dtype == np.uint8


# --- memory --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "sizes"),
    [
        ("eccv16", [(768, 1024)]),
        ("eccv16", [(8, 8), (8, 8)]),
        ("siggraph17", [(8, 8)]),
        ("siggraph17", [(1536, 2048)]),
    ],
    ids=["eccv16-0.8MP", "eccv16-batch-of-2", "siggraph17-tiny", "siggraph17-3MP"],
)
def test_estimate_bounds_the_measured_peak_tightly(
    model: str, sizes: list[tuple[int, int]], request: pytest.FixtureRequest
) -> None:
    engine: FixedInputEngine = request.getfixturevalue(model)
    images = [noise_image(h, w) for h, w in sizes]
    peak = measured_peak(engine, images)
    height, width = sizes[0]
    estimate = engine.memory_model.estimate(width, height, batch=len(sizes))
    assert peak <= estimate <= 1.5 * peak, f"peak {peak}, estimate {estimate}"


def test_bands_keep_a_large_image_within_chunk_bytes(eccv16: Eccv16Engine) -> None:
    # 16 MiB bands (136 rows of 1024): the whole-image tensors (resized ab, output) and one band's
    # temporaries, where converting the image in one go would take 110 bytes per pixel (87 MB).
    image = noise_image(768, 1024)
    chunk = 16 << 20
    peak = measured_peak(eccv16, [image], chunk_bytes=chunk)
    assert peak <= fixed.POST_PIXEL_BYTES * image.shape[0] * image.shape[1] + chunk


def remeasure() -> None:
    """Print the raw figures behind the constants in service/engines/fixed.py."""
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        weights_dir = make_weights_dir(Path(tmp))
        for model, cls in ENGINES.items():
            engine = cls(cpu, weights_dir)
            engine.load()
            peak = measured_peak(engine, [noise_image(8, 8)])
            print(f"{model} forward incl. pre-processing: {peak / 1e6:.2f} MB")
        ab = torch.randn(1, 2, 256, 256)
        for height, width in ((512, 384), (1024, 768)):
            image = noise_image(height, width)
            pixels = height * width
            rows = 16
            with torch.inference_mode():
                with LiveTensorBytes() as whole:
                    fixed._full_resolution_rgb(image, ab, 1 << 40)
                with LiveTensorBytes() as banded:
                    fixed._full_resolution_rgb(image, ab, fixed.BAND_PIXEL_BYTES * width * rows)
            # peak = whole-image bytes/px x pixels + band bytes/px x band pixels, for both runs.
            band_pixels = rows * width
            per_band_pixel = (whole.peak - banded.peak) / (pixels - band_pixels)
            per_pixel = (banded.peak - per_band_pixel * band_pixels) / pixels
            print(
                f"{width}x{height}: whole-image tensors {per_pixel:.1f} B/px, "
                f"band temporaries {per_band_pixel:.1f} B per band pixel"
            )


if __name__ == "__main__":
    remeasure()
