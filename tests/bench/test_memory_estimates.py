"""On a GPU every estimate bounds the real peak, and not loosely: peak <= estimate <= 1.25 x peak.

The real peak is the CUDA caching allocator's: `reset_peak_memory_stats`, one `run`, then
`max_memory_allocated` minus what was allocated before (weights, cuBLAS/cuDNN handles). Sizes go
from 64x64 to the pixel limit (COLORIZE_MAX_PIXELS, 40 MP by default), squares and a wide strip;
the exemplar engine gets a 512x512 colour reference. Each engine runs once at 64x64 first, so
one-off allocations (library handles, workspaces kept for the process's life) are not counted.
`python -m bench.memory` makes the same table on a CPU, from RSS growth and live tensors.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.servers import make_weights
from service.engines.base import ColorizeRequest, Engine
from service.engines.registry import create_engine
from service.settings import Settings

pytestmark = pytest.mark.gpu

MAX_PIXELS = Settings.model_fields["max_pixels"].default
LIMIT_SIDE = math.isqrt(MAX_PIXELS)
SHAPES = [
    (64, 64),
    (256, 256),
    (1024, 1024),
    (2048, 2048),
    (4096, 4096),
    (LIMIT_SIDE, LIMIT_SIDE),
    (MAX_PIXELS // 4000, 4000),
]
"""(height, width): small to the pixel limit, and a 4000-pixel-wide strip at the limit."""
ENGINES = ("eccv16", "siggraph17", "exemplar")
REFERENCE_SIDE = 512
HEADROOM = 1.25


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Engine]]:
    cuda = torch.device("cuda")
    weights_dir: Path = make_weights(tmp_path_factory.mktemp("weights"), ENGINES[:2])
    loaded = {}
    reference = _image(REFERENCE_SIDE, REFERENCE_SIDE, seed=1)
    for name in ENGINES:
        engine = create_engine(name, cuda, weights_dir)
        engine.load()
        engine.run([ColorizeRequest(_image(64, 64), reference=reference)])  # one-off set-up
        loaded[name] = engine
    yield loaded
    loaded.clear()
    gc.collect()
    torch.cuda.empty_cache()


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    # Smooth gradients plus noise: real content for the exemplar's matching, cheap to make.
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    base = (y + x) / 2 + rng.normal(0, 12, (height, width, 1)).astype(np.float32)
    return np.clip(base, 0, 255).astype(np.uint8).repeat(3, axis=2)


def _cuda_peak(engine: Engine, request: ColorizeRequest) -> int:
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    engine.run([request])
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated() - before)


@pytest.mark.parametrize("shape", SHAPES, ids=[f"{h}x{w}" for h, w in SHAPES])
@pytest.mark.parametrize("model", ENGINES)
def test_estimate_bounds_the_cuda_peak_within_a_quarter(
    model: str, shape: tuple[int, int], engines: dict[str, Engine]
) -> None:
    engine = engines[model]
    height, width = shape
    reference = _image(REFERENCE_SIDE, REFERENCE_SIDE, seed=1) if model == "exemplar" else None
    request = ColorizeRequest(_image(height, width), reference=reference)
    estimate = engine.estimate(request)
    peak = _cuda_peak(engine, request)
    ratio = estimate / peak
    detail = f"{model} {width}x{height}: peak {peak} B, estimate {estimate} B (x{ratio:.2f})"
    assert peak <= estimate, "the estimate did not hold: " + detail
    assert estimate <= HEADROOM * peak, "the estimate is loose: " + detail
