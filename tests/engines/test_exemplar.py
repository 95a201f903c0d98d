"""The exemplar engine: its contract, colour quality against a baseline, determinism and memory.

Run as `python -m tests.engines.test_exemplar` to re-measure the memory constants of
service/engines/exemplar.py (prints the raw figures its comment quotes).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import color

from devkit import exemplar_quality as quality
from devkit.tensor_memory import LiveTensorBytes
from service.engines import colour_transfer
from service.engines.base import ColorizeRequest, Hint, InvalidRequest
from service.engines.exemplar import ExemplarEngine
from service.engines.registry import create_engine
from service.memory import MemoryManager
from tests.support.images import photo

DOCS = Path(__file__).resolve().parents[2] / "docs" / "exemplar.md"
CPU = torch.device("cpu")
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def engine() -> ExemplarEngine:
    built = ExemplarEngine(CPU)
    built.load()
    return built


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def small(image: np.ndarray, factor: int = 4) -> np.ndarray:
    """Every `factor`-th pixel: a fast stand-in photo with the same content."""
    return np.ascontiguousarray(image[::factor, ::factor])


def chroma(rgb: np.ndarray) -> np.ndarray:
    """CIELAB chroma per pixel."""
    lab = color.rgb2lab(rgb)
    return np.asarray(np.hypot(lab[..., 1], lab[..., 2]))


# --- the contract --------------------------------------------------------------------------------


def test_is_built_by_the_registry_without_weights() -> None:
    built = create_engine("exemplar", CPU, Path("/nonexistent"))
    assert isinstance(built, ExemplarEngine)
    assert (built.name, built.batchable, built.needs_weights) == ("exemplar", False, False)
    built.load()
    assert built.ready and built.not_ready_reason is None


REFUSED = [
    pytest.param(
        ColorizeRequest(noise(8, 8)),
        "the exemplar engine needs a reference image",
        id="no reference",
    ),
    pytest.param(
        ColorizeRequest(noise(8, 8), hints=(Hint(1, 1, (255, 0, 0)),), reference=noise(8, 8)),
        "engine 'exemplar' does not take hints",
        id="hints",
    ),
]


@pytest.mark.parametrize(("request_", "message"), REFUSED)
def test_validate_refuses(engine: ExemplarEngine, request_: ColorizeRequest, message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        engine.validate(request_)
    assert str(info.value) == message


@pytest.mark.parametrize(("request_", "message"), REFUSED)
def test_run_refuses_what_validate_refuses(
    engine: ExemplarEngine, request_: ColorizeRequest, message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        engine.run([request_])


# --- what comes out ------------------------------------------------------------------------------

SHAPES = [
    pytest.param((96, 128), (64, 80), id="photo-sized"),
    pytest.param((1, 1), (40, 30), id="1x1 target"),
    pytest.param((50, 70), (1, 1), id="1x1 reference"),
    pytest.param((1, 700), (30, 40), id="1-pixel strip"),
    pytest.param((300, 2), (90, 3), id="tall and thin"),
    pytest.param((40, 40), (20, 20), id="reference smaller than the sample count"),
]


@pytest.mark.parametrize(("target", "reference"), SHAPES)
def test_output_is_rgb_of_the_input_size(
    engine: ExemplarEngine, target: tuple[int, int], reference: tuple[int, int]
) -> None:
    [out] = engine.run([ColorizeRequest(noise(*target), reference=noise(*reference, seed=1))])
    assert out.shape == (*target, 3)
    assert out.dtype == np.uint8


def test_each_request_gets_its_own_result(engine: ExemplarEngine, coffee: np.ndarray) -> None:
    target, reference = small(coffee), small(photo("chelsea.png"))
    first = ColorizeRequest(target, reference=reference)
    second = ColorizeRequest(noise(10, 20), reference=reference)
    together = engine.run([first, second])
    assert [o.shape for o in together] == [(100, 150, 3), (10, 20, 3)]
    np.testing.assert_array_equal(together[0], engine.run([first])[0])


def test_output_keeps_the_inputs_own_lightness(engine: ExemplarEngine) -> None:
    # Only the chroma comes from the reference, and chroma that does not fit the gamut at the
    # pixel's L is scaled down rather than clipped: L moves by no more than 8-bit rounding.
    # (coffee: clipping would move L by 5 units at the 99th percentile.)
    truth, reference = quality.PAIRS[2].load()  # coffee: left half from the right half
    gray = quality.grayscale(small(truth, 2))
    [out] = engine.run([ColorizeRequest(gray, reference=small(reference, 2))])
    difference = np.abs(color.rgb2lab(out)[..., 0] - color.rgb2lab(gray)[..., 0])
    assert difference.max() < 0.5
    assert chroma(out).mean() > 10.0


def test_colour_comes_from_the_reference(engine: ExemplarEngine, astronaut: np.ndarray) -> None:
    # A reference of one colour can only give that colour: every match has the same chroma.
    gray = quality.grayscale(small(astronaut))
    teal = np.broadcast_to(np.array([40, 150, 140], dtype=np.uint8), (32, 32, 3))
    [out] = engine.run([ColorizeRequest(gray, reference=np.ascontiguousarray(teal))])
    ab = color.rgb2lab(out)[..., 1:]
    expected = color.rgb2lab(teal[:1, :1])[0, 0, 1:]
    # Median, not all pixels: near black and white the gamut clips any chroma.
    np.testing.assert_allclose(np.median(ab.reshape(-1, 2), axis=0), expected, atol=2.0)


def test_a_gray_reference_gives_a_gray_result(engine: ExemplarEngine, coffee: np.ndarray) -> None:
    target = small(coffee)
    [out] = engine.run([ColorizeRequest(target, reference=quality.grayscale(small(coffee)))])
    assert chroma(out).max() < 1.0
    assert chroma(target).mean() > 10.0  # the input had colour to lose: the test can fail


def test_same_inputs_give_the_same_output(coffee: np.ndarray) -> None:
    request = ColorizeRequest(quality.grayscale(small(coffee)), reference=small(coffee, 3))
    first = ExemplarEngine(CPU).run([request])[0]
    again = ExemplarEngine(CPU).run([request])[0]
    np.testing.assert_array_equal(first, again)


def test_the_seed_moves_the_samples(coffee: np.ndarray) -> None:
    # The sampling is random but seeded; another seed is another sample (so the test above
    # would notice unseeded sampling).
    request = ColorizeRequest(quality.grayscale(small(coffee)), reference=small(coffee, 3))
    reseeded = dataclasses.replace(colour_transfer.SOFT_MATCH, seed=1)
    first = ExemplarEngine(CPU).run([request])[0]
    other = ExemplarEngine(CPU, reseeded).run([request])[0]
    assert not np.array_equal(first, other)


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(colour_transfer.SOFT_MATCH, id="soft match"),
        pytest.param(colour_transfer.WELSH_2002, id="welsh 2002"),
    ],
)
@pytest.mark.parametrize("chunk_bytes", [256 * 1024, MiB], ids=["256 KiB", "1 MiB"])
def test_chunking_does_not_change_the_result(
    coffee: np.ndarray, options: colour_transfer.TransferOptions, chunk_bytes: int
) -> None:
    # Stripes read enough neighbouring rows for their own rows to be exact, and chunks of
    # pixels are matched independently: the budget changes memory and speed, never pixels.
    # 256 KiB leaves one row per stripe and ~200 pixels per chunk: every seam is exercised.
    # (256 samples: as many seams, a quarter of the work.)
    engine = ExemplarEngine(CPU, dataclasses.replace(options, samples=256))
    request = ColorizeRequest(quality.grayscale(small(coffee, 4)), reference=small(coffee, 3))
    whole = engine.run([request])[0]
    chunked = engine.run([request], chunk_bytes=chunk_bytes)[0]
    assert np.abs(whole.astype(int) - chunked).max() <= 1


# --- quality: PSNR against the true colours ------------------------------------------------

PAIR_IDS = [p.name for p in quality.PAIRS]


@functools.cache
def evaluated(name: str) -> quality.Row:
    """devkit/exemplar_quality.py's row for a pair, computed once per session."""
    return quality.evaluate(next(p for p in quality.PAIRS if p.name == name))


@pytest.mark.parametrize("pair", PAIR_IDS)
def test_beats_the_mean_chroma_baseline(pair: str) -> None:
    row = evaluated(pair)
    assert row.ours > row.baseline + 1.0, row


@pytest.mark.parametrize("pair", PAIR_IDS)
def test_beats_the_2002_recipe(pair: str) -> None:
    row = evaluated(pair)
    assert row.ours > row.welsh, row


@pytest.mark.parametrize("pair", PAIR_IDS)
def test_docs_table_matches_a_fresh_run(pair: str) -> None:
    documented = quality.parse_table(DOCS.read_text())
    assert pair in documented, f"{DOCS.name} has no row for {pair}"
    fresh = evaluated(pair)
    for column, value in documented[pair].items():
        assert abs(value - getattr(fresh, column)) <= 0.1, (column, value, fresh)


# --- memory: the estimate against the measured peak ----------------------------------------------


def measured_peak(
    target: tuple[int, int], reference: tuple[int, int], chunk_bytes: int | None = None
) -> int:
    engine = ExemplarEngine(CPU)
    request = ColorizeRequest(noise(*target), reference=noise(*reference, seed=1))
    with LiveTensorBytes() as tracker:
        engine.run([request], chunk_bytes=chunk_bytes)
    return tracker.peak


def estimate(target: tuple[int, int], reference: tuple[int, int]) -> int:
    return ExemplarEngine(CPU).estimate(
        ColorizeRequest(noise(*target), reference=noise(*reference))
    )


MEMORY_CASES = [
    pytest.param((256, 256), (256, 256), id="256x256 from 256x256"),
    pytest.param((200, 640), (48, 64), id="wide target, small reference"),
    pytest.param((120, 160), (768, 1024), id="small target, large reference"),
    pytest.param((360, 480), (240, 320), id="480x360 from 320x240"),
]


@pytest.mark.parametrize(("target", "reference"), MEMORY_CASES)
def test_estimate_is_a_tight_upper_bound(
    target: tuple[int, int], reference: tuple[int, int]
) -> None:
    # Run as the worker runs it: `chunk_bytes` is the model's fixed bytes (also the default).
    peak = measured_peak(target, reference, ExemplarEngine(CPU).memory_model.fixed_bytes)
    assert peak <= estimate(target, reference) <= 1.5 * peak


@pytest.mark.parametrize("chunk_bytes", [16 * MiB, 48 * MiB], ids=["16 MiB", "48 MiB"])
def test_chunk_bytes_bounds_the_working_set(chunk_bytes: int) -> None:
    # What the worker relies on when it retries with a smaller budget: beyond the full-size
    # planes, the job never holds more than `chunk_bytes` (the default budget, in the estimate,
    # replaced by the one given).
    target, reference = (240, 320), (240, 320)
    model = ExemplarEngine(CPU).memory_model
    planes = (
        model.per_pixel_bytes * target[0] * target[1]
        + model.reference_pixel_bytes * reference[0] * reference[1]
    )
    peak = measured_peak(target, reference, chunk_bytes)
    assert planes < peak <= planes + chunk_bytes
    assert peak > chunk_bytes // 2  # the budget is used, not just respected


@pytest.mark.gpu
@pytest.mark.parametrize(("target", "reference"), MEMORY_CASES)
def test_estimate_bounds_the_cuda_allocator_peak(
    target: tuple[int, int], reference: tuple[int, int]
) -> None:
    device = torch.device("cuda", torch.cuda.current_device())
    engine = ExemplarEngine(device)
    manager = MemoryManager(device)
    request = ColorizeRequest(noise(*target), reference=noise(*reference, seed=1))
    engine.run([request])  # kernels and cuBLAS workspace, once, as in a running service
    with manager.measure() as measured:
        engine.run([request])
    predicted = engine.estimate(request)
    assert measured.peak_bytes <= predicted <= 1.5 * measured.peak_bytes


def _report() -> None:
    """Print the figures behind exemplar.py's memory constants."""
    sides = [(500, 500), (1000, 1000), (1000, 2000), (2000, 2000)]
    print("target (reference 64x64): peak bytes, bytes per added pixel")
    previous: tuple[int, int] | None = None
    for side in sides:
        peak = measured_peak(side, (64, 64))
        pixels = side[0] * side[1]
        slope = "" if previous is None else f"{(peak - previous[1]) / (pixels - previous[0]):.2f}"
        print(f"  {side}: {peak} {slope}")
        previous = (pixels, peak)
    print("reference (target 128x128): peak bytes, bytes per added reference pixel")
    previous = None
    for side in sides:
        peak = measured_peak((128, 128), side)
        pixels = side[0] * side[1]
        slope = "" if previous is None else f"{(peak - previous[1]) / (pixels - previous[0]):.2f}"
        print(f"  {side}: {peak} {slope}")
        previous = (pixels, peak)
    print("intercept at 1000x1000 from 64x64:", measured_peak((1000, 1000), (64, 64)))


if __name__ == "__main__":
    _report()
