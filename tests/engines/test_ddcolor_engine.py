"""The DDColor engines: loading through the engine, render sizes, batching, precision, memory."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from service.engines.base import (
    ColorizeRequest,
    EngineNotReady,
    Hint,
    InvalidRequest,
    RenderLimits,
)
from service.engines.catalog import ENGINE_NAMES
from service.engines.ddcolor import memory
from service.engines.ddcolor.engine import DDColorEngine, DDColorLarge, DDColorTiny
from service.engines.fast import FastPath, Tolerance
from service.engines.registry import create_engine
from service.engines.weights import OFFICIAL
from tests.support.cpu import lacks_native_bf16, needs_native_bf16
from tests.support.timing import bf16_faster

CPU = torch.device("cpu")
LIMITS = RenderLimits(default=64, maximum=512)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, ddcolor_tiny_checkpoint: Path) -> Path:
    directory = tmp_path_factory.mktemp("tiny-only")
    (directory / OFFICIAL["ddcolor-tiny"].filename).symlink_to(ddcolor_tiny_checkpoint)
    return directory


@pytest.fixture(scope="module")
def tiny(tiny_dir: Path) -> DDColorEngine:
    engine = DDColorTiny(CPU, tiny_dir, render=LIMITS)
    engine.load()
    return engine


# --- loading -------------------------------------------------------------------------------------


def test_the_three_engines_are_registered() -> None:
    assert {"ddcolor", "ddcolor-artistic", "ddcolor-tiny"} <= set(ENGINE_NAMES)
    engine = create_engine("ddcolor-artistic", CPU, Path("/nowhere"), render=LIMITS)
    assert isinstance(engine, DDColorEngine) and engine.variant == "large"
    assert engine.render_limits == LIMITS


def test_missing_weights_make_the_engine_not_ready_with_the_fetch_command(tmp_path: Path) -> None:
    engine = DDColorTiny(CPU, tmp_path)
    with pytest.raises(EngineNotReady) as caught:
        engine.load()
    reason = caught.value.reason
    assert "ddcolor_paper_tiny.pth" in reason
    assert f"colorize-service fetch-weights ddcolor-tiny --weights-dir {tmp_path}" in reason
    assert not engine.ready and engine.not_ready_reason == reason


def test_corrupt_weights_are_named_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "ddcolor_paper_tiny.pth").write_bytes(b"not a checkpoint")
    engine = DDColorTiny(CPU, tmp_path)
    with pytest.raises(EngineNotReady, match="not a readable checkpoint") as caught:
        engine.load()
    assert "fetch-weights ddcolor-tiny" in caught.value.reason
    assert "to replace it" in caught.value.reason


def test_a_tiny_checkpoint_under_a_large_name_lists_the_mismatch(
    tmp_path: Path, ddcolor_tiny_checkpoint: Path
) -> None:
    shutil.copyfile(ddcolor_tiny_checkpoint, tmp_path / "ddcolor_modelscope.pth")
    engine = DDColorLarge(CPU, tmp_path)
    with pytest.raises(EngineNotReady) as caught:
        engine.load()
    reason = caught.value.reason
    assert "does not fit DDColor-large" in reason
    assert "missing keys" in reason and "mis-shaped keys" in reason
    assert "fetch-weights ddcolor " in reason


# --- render sizes --------------------------------------------------------------------------------

PIXELS = np.zeros((48, 64, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("size", "ok"),
    [(64, True), (96, True), (512, True), (32, False), (100, False), (544, False), (0, False)],
    ids=["minimum", "multiple", "maximum", "below-minimum", "not-multiple", "above-max", "zero"],
)
def test_render_size_rule(tiny: DDColorEngine, size: int, ok: bool) -> None:
    request = ColorizeRequest(PIXELS, render_size=size)
    if ok:
        tiny.validate(request)
        assert tiny.prepare(request).shape == (1, 3, size, size)
    else:
        with pytest.raises(InvalidRequest, match="multiple of 32 from 64 to 512"):
            tiny.validate(request)


def test_hints_and_references_are_refused(tiny: DDColorEngine) -> None:
    with pytest.raises(InvalidRequest, match="hints"):
        tiny.validate(ColorizeRequest(PIXELS, hints=(Hint(1, 1, (255, 0, 0)),)))
    with pytest.raises(InvalidRequest, match="reference"):
        tiny.validate(ColorizeRequest(PIXELS, reference=PIXELS))


def test_render_size_is_the_batch_key(tiny: DDColorEngine) -> None:
    assert tiny.batch_key(ColorizeRequest(PIXELS)) == 64  # the default
    assert tiny.batch_key(ColorizeRequest(PIXELS, render_size=128)) == 128


def test_one_forward_pass_refuses_mixed_render_sizes(tiny: DDColorEngine) -> None:
    requests = [ColorizeRequest(PIXELS, render_size=64), ColorizeRequest(PIXELS, render_size=96)]
    with pytest.raises(InvalidRequest, match="one render size"):
        tiny.forward(requests, [None, None])


# --- outputs -------------------------------------------------------------------------------------


def test_output_is_a_colour_image_of_the_photo_size(
    tiny: DDColorEngine, coffee: np.ndarray
) -> None:
    out = tiny.run([ColorizeRequest(coffee, render_size=64)])[0]
    assert out.shape == coffee.shape and out.dtype == np.uint8
    spread = out.astype(int).max(axis=2) - out.astype(int).min(axis=2)
    assert spread.mean() > 4


def test_batch_gives_what_each_image_gives_alone(
    tiny: DDColorEngine, coffee: np.ndarray, astronaut: np.ndarray
) -> None:
    photos = [coffee[::2, ::2], astronaut[::4, ::4]]
    requests = [ColorizeRequest(p, render_size=64) for p in photos]
    together = tiny.run(requests)
    for request, ours in zip(requests, together, strict=True):
        alone = tiny.run([request])[0]
        assert np.abs(ours.astype(int) - alone.astype(int)).max() <= 1


def test_cpu_forward_hands_ab_to_finish(tiny: DDColorEngine, coffee: np.ndarray) -> None:
    request = ColorizeRequest(coffee, render_size=64)
    (ab,) = tiny.forward([request], [tiny.prepare(request)])
    assert isinstance(ab, torch.Tensor) and ab.shape == (1, 2, 64, 64)
    assert float(ab.abs().max()) <= 128
    assert tiny.finish(request, ab).shape == coffee.shape


# --- precision -----------------------------------------------------------------------------------


def test_fp16_is_refused_with_a_log_line(tiny_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        engine = DDColorTiny(CPU, tiny_dir, FastPath(precision="fp16"), LIMITS)
    assert engine.fast.precision == "fp32"
    assert "does not run in float16" in caplog.text


@needs_native_bf16
def test_bf16_is_used_where_the_probe_admits_it(tiny_dir: Path, coffee: np.ndarray) -> None:
    # The speed check is scripted (bf16 twice as fast): what is under test is what follows it.
    generous = Tolerance(mean_ab=1e3, p99_ab=1e3)
    fast = FastPath(precision="bf16", tolerance=generous, speed_check=bf16_faster())
    engine = DDColorTiny(CPU, tiny_dir, fast, LIMITS)
    engine.load()
    assert engine.precision == "bf16"
    assert engine.run([ColorizeRequest(coffee[::4, ::4])])[0].shape == coffee[::4, ::4].shape
    strict = Tolerance(mean_ab=0.0, p99_ab=0.0)
    fast = FastPath(precision="bf16", tolerance=strict, speed_check=bf16_faster())
    engine = DDColorTiny(CPU, tiny_dir, fast, LIMITS)
    engine.load()
    assert engine.precision == "fp32"


@lacks_native_bf16
def test_bf16_where_the_cpu_emulates_it_is_refused_quickly(tiny_dir: Path) -> None:
    engine = DDColorTiny(CPU, tiny_dir, FastPath(precision="bf16"), LIMITS)
    started = time.perf_counter()
    engine.load()
    assert time.perf_counter() - started < 30.0
    assert engine.precision == "fp32"
    assert engine.precision_reason.startswith("bf16 refused: not faster than fp32 on cpu")


# --- memory --------------------------------------------------------------------------------------


def test_estimates_grow_with_the_render_size_squared_and_the_batch(tiny: DDColorEngine) -> None:
    small, large = (ColorizeRequest(PIXELS, render_size=s) for s in (256, 512))
    assert tiny.device_estimate(large) == 4 * tiny.device_estimate(small)
    assert tiny.device_estimate(small, 2) == 2 * tiny.device_estimate(small)
    pixels = PIXELS.shape[0] * PIXELS.shape[1]
    assert tiny.estimate(small) == tiny.device_estimate(small) + memory.POST_PIXEL_BYTES * pixels


@pytest.mark.parametrize(
    ("budget", "largest"),
    [(10**12, 512), (memory.forward_bytes("tiny", 256), 256), (1, None)],
    ids=["roomy", "exactly-256", "nothing-fits"],
)
def test_largest_render_size_that_fits(
    tiny: DDColorEngine, budget: int, largest: int | None
) -> None:
    assert tiny.largest_render_size(budget) == largest
