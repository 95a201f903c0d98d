"""The fast path (service/engines/fast.py and speed.py): each step guarded by device, precision
chosen by speed and accuracy.

On the CPU: channels_last changes outputs by rounding only; reduced precision is timed on one
piece of the network before anything else runs in it, and refused when it is not faster (where
the CPU emulates bf16) or when its outputs leave the stated tolerance of fp32 (which they do for
these networks with generated weights). Where the CPU has native bf16, bf16 autocast runs
(convolutions in bf16, the first block in fp32, ab back in fp32); where it lacks it, those tests
skip (tests/support/cpu.py) and the refusal is tested instead. A scripted timer makes the speed
decision testable on any CPU. On CUDA (gpu-marked): fp16 stays within the tolerance on the probe
and on photos, and uploads go through pinned memory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from bench.fastpath import forward_of, photos_lightness
from devkit.checkpoints import make_random_network
from service.engines.fast import (
    TOLERANCE,
    FastPath,
    Tolerance,
    precision_error,
    probe_lightness,
)
from service.engines.speed import Piece, SpeedCheck, heaviest_piece, measure_speed
from tests.support.cpu import lacks_native_bf16, needs_native_bf16
from tests.support.timing import ScriptedTimer, bf16_faster

LOOSE = Tolerance(mean_ab=20.0, p99_ab=120.0)
"""Wide enough to accept bf16 here, so that its mechanics can be checked."""


def network(model: str, device: torch.device) -> nn.Module:
    return make_random_network(model).to(device).eval()


def tiny_network() -> nn.Module:
    """Two small convolutions: cheap to run in bf16 even on a CPU that emulates it."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 3, padding=1))


def tiny_probe(net: nn.Module, lightness: torch.Tensor) -> torch.Tensor:
    out: torch.Tensor = net(lightness / 100.0)
    return out


# --- guards ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("precision", "device", "expected"),
    [
        ("fp32", "cpu", "fp32"),
        ("bf16", "cpu", "bf16"),
        ("fp16", "cpu", "fp32"),
        ("fp16", "mps", "fp32"),
        ("bf16", "mps", "fp32"),
        ("fp32", "cuda", "fp32"),
    ],
    ids=["fp32-cpu", "bf16-cpu", "fp16-cpu-refused", "fp16-mps-refused", "bf16-mps", "fp32-cuda"],
)
def test_precision_is_guarded_by_device_type(precision: str, device: str, expected: str) -> None:
    fast = FastPath(precision=precision)  # type: ignore[arg-type]
    assert fast.precision_for(torch.device(device)) == expected


def test_an_unsupported_precision_says_why_it_was_refused(cpu: torch.device) -> None:
    acc = FastPath(precision="fp16").prepare(tiny_network(), cpu, tiny_probe)
    assert acc.precision == "fp32" and acc.speed is None
    assert acc.reason == "fp16 refused: CPUs have no fast float16 convolutions"


def test_fp32_changes_nothing(cpu: torch.device) -> None:
    net = network("eccv16", cpu)
    acc = FastPath().prepare(net, cpu, forward_of("eccv16"))
    assert acc.precision == "fp32" and acc.probe_error is None and acc.network is net
    assert acc.reason == "fp32 requested (COLORIZE_PRECISION)" and acc.speed is None
    lightness = probe_lightness()
    with torch.inference_mode():
        plain = net(lightness)
        with acc.autocast():
            again = acc.network(lightness)
    assert torch.equal(plain, again)


# --- channels_last ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["eccv16", "siggraph17"])
def test_channels_last_changes_outputs_by_rounding_only(model: str, cpu: torch.device) -> None:
    reference = network(model, cpu)
    fast = network(model, cpu)
    acc = FastPath(channels_last=True).prepare(fast, cpu, forward_of(model))
    convs = [m for m in acc.network.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(
        c.weight.is_contiguous(memory_format=torch.channels_last)
        for c in convs
        if c.weight.ndim == 4
    )
    lightness = photos_lightness(cpu)
    with torch.inference_mode():
        error = precision_error(
            forward_of(model)(reference, lightness), forward_of(model)(acc.network, lightness)
        )
    # Measured 0.001-0.002 ab on average, 0.1 at most: summation order, far below one 8-bit level.
    assert error.mean_ab < 0.01 and error.max_ab < 0.5, error


# --- speed: reduced precision is timed on one piece before the network runs in it ---------------


def counted(probe: Callable[[nn.Module, torch.Tensor], torch.Tensor], calls: list[int]) -> Any:
    def run(net: nn.Module, lightness: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return probe(net, lightness)

    return run


@pytest.mark.parametrize(
    ("fp32_s", "bf16_s", "expected", "reason", "probe_runs"),
    [
        (0.001, 0.002, "fp32", "bf16 refused: not faster than fp32 on cpu", 0),
        (0.001, 0.001, "fp32", "bf16 refused: not faster than fp32 on cpu", 0),
        (0.002, 0.001, "bf16", "bf16: 2.00x faster than fp32", 2),
    ],
    ids=["slower-refused", "as-fast-refused", "faster-then-accurate-runs-bf16"],
)
def test_precision_is_chosen_by_speed_before_accuracy(
    cpu: torch.device,
    caplog: pytest.LogCaptureFixture,
    fp32_s: float,
    bf16_s: float,
    expected: str,
    reason: str,
    probe_runs: int,
) -> None:
    net = tiny_network()
    before = [name for name, _ in net.named_modules()]
    timer = ScriptedTimer(fp32=fp32_s, bf16=bf16_s)
    fast = FastPath(precision="bf16", tolerance=LOOSE, speed_check=SpeedCheck(timer=timer))
    probes: list[int] = []
    with caplog.at_level(logging.INFO, logger="service.engines.fast"):
        acc = fast.prepare(net, cpu, counted(tiny_probe, probes))

    assert acc.precision == expected
    assert acc.reason.startswith(reason) and reason in caplog.text
    assert acc.speed is not None and acc.speed.piece.startswith("2 (Conv2d 8->2, 3x3)")
    # A precision refused as slower never runs the network: no emulated forward pass at load.
    assert len(probes) == probe_runs
    if expected == "fp32":
        assert acc.dtype is None and acc.probe_error is None
        assert [name for name, _ in net.named_modules()] == before


@pytest.mark.parametrize(
    ("fp32_s", "bf16_s", "budget_s", "size", "calls"),
    [
        (0.002, 5.0, 1.0, 4, 2),
        (0.004, 0.06, 10.0, 4, 22),
        (0.001, 0.002, 0.05, 4, 22),
        (0.001, 0.0005, 1.0, 128, 62),
    ],
    ids=[
        "emulated-one-call-each-at-the-smallest-size",
        "long-enough-at-once-stops-growing",
        "next-size-over-budget-stops-growing",
        "fast-and-cheap-grows-to-the-largest-size",
    ],
)
def test_speed_check_grows_the_input_only_while_its_budget_allows(
    cpu: torch.device, fp32_s: float, bf16_s: float, budget_s: float, size: int, calls: int
) -> None:
    piece = heaviest_piece(tiny_network(), cpu)
    assert piece is not None
    timer = ScriptedTimer(fp32=fp32_s, bf16=bf16_s)
    check = SpeedCheck(budget_s=budget_s, timer=timer)
    speed = measure_speed(piece, cpu, torch.bfloat16, "bf16", check)
    assert (speed.size, len(timer.calls)) == (size, calls)
    assert timer.calls == ["fp32", "bf16"] * (calls // 2), "fp32 and bf16 interleave"
    assert (speed.fp32_s, speed.reduced_s) == (fp32_s, bf16_s)
    assert speed.elapsed_s == pytest.approx((fp32_s + bf16_s) * calls / 2)


@pytest.mark.parametrize(
    ("make", "skip", "name", "shape"),
    [
        (
            lambda: network("eccv16", torch.device("cpu")),
            ("model1",),
            "model4.2 (Conv2d 512->512, 3x3)",
            (1, 512, 8, 8),
        ),
        (
            lambda: nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 16)),
            (),
            "0 (Linear 16->64)",
            (1, 64, 16),
        ),
    ],
    ids=["eccv16-body", "linear-layers"],
)
def test_the_piece_timed_is_the_layer_with_most_weights(
    cpu: torch.device,
    make: Callable[[], nn.Module],
    skip: tuple[str, ...],
    name: str,
    shape: tuple[int, ...],
) -> None:
    piece = heaviest_piece(make(), cpu, skip=skip)
    assert piece is not None and piece.name == name
    assert tuple(piece.make_input(8).shape) == shape


def test_a_network_with_nothing_to_time_stays_fp32(cpu: torch.device) -> None:
    net = nn.Sequential(nn.ReLU())
    assert heaviest_piece(net, cpu) is None
    acc = FastPath(precision="bf16").prepare(net, cpu, tiny_probe)
    assert acc.precision == "fp32"
    assert acc.reason == "bf16 refused: no convolution or linear layer to time it on"


def test_an_engine_can_name_its_own_piece(cpu: torch.device) -> None:
    net = tiny_network()
    first = net.get_submodule("0")
    own = Piece("first conv", first, lambda size: torch.zeros(1, 1, size, size))
    timer = ScriptedTimer(fp32=0.001, bf16=0.1)
    fast = FastPath(precision="bf16", speed_check=SpeedCheck(timer=timer))
    acc = fast.prepare(net, cpu, tiny_probe, piece=own)
    assert acc.speed is not None and acc.speed.piece == "first conv"
    assert "(first conv at 4x4: bf16 100 ms vs fp32 1 ms (speed-up 0.01x;" in acc.reason


@needs_native_bf16
def test_bf16_is_faster_than_fp32_on_a_cpu_with_native_bf16(cpu: torch.device) -> None:
    piece = heaviest_piece(network("eccv16", cpu), cpu, skip=("model1",))
    assert piece is not None
    speed = measure_speed(piece, cpu, torch.bfloat16, "bf16", SpeedCheck())
    # Measured about 2x on AVX-512 BF16 (Zen 4), as for the whole network (docs/performance.md).
    assert speed.speedup > 1.0, speed


@lacks_native_bf16
def test_emulated_bf16_is_refused_as_slower_within_the_budget(
    cpu: torch.device, caplog: pytest.LogCaptureFixture
) -> None:
    probes: list[int] = []
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="service.engines.fast"):
        acc = FastPath(precision="bf16").prepare(
            network("eccv16", cpu), cpu, counted(forward_of("eccv16"), probes)
        )
    took = time.perf_counter() - started
    assert acc.precision == "fp32" and not probes
    assert "bf16 refused: not faster than fp32 on cpu" in acc.reason and acc.reason in caplog.text
    # The budget (1 s) plus the smallest size's calls; a forward pass in bf16 would take minutes.
    assert acc.speed is not None and acc.speed.elapsed_s < 2.0 and took < 10.0, (acc.speed, took)


# --- bf16 on the CPU ----------------------------------------------------------------------------


@needs_native_bf16
def test_bf16_is_refused_beyond_the_tolerance(
    cpu: torch.device, caplog: pytest.LogCaptureFixture
) -> None:
    net = network("eccv16", cpu)
    before = [name for name, _ in net.named_modules()]
    with caplog.at_level(logging.WARNING, logger="service.engines.fast"):
        acc = FastPath(precision="bf16", speed_check=bf16_faster()).prepare(
            net, cpu, forward_of("eccv16")
        )
    assert acc.precision == "fp32" and acc.dtype is None
    assert acc.probe_error is not None and not TOLERANCE.admits(acc.probe_error)
    assert "beyond the tolerance" in caplog.text and "using fp32" in caplog.text
    # The float32 wrappers tried for bf16 are gone again: the network is as it was loaded.
    assert [name for name, _ in net.named_modules()] == before


@pytest.fixture(scope="module")
def bf16_eccv16() -> Iterator[tuple[nn.Module, nn.Module]]:
    cpu = torch.device("cpu")
    reference, fast = network("eccv16", cpu), network("eccv16", cpu)
    loose = FastPath(precision="bf16", tolerance=LOOSE, speed_check=bf16_faster())
    acc = loose.prepare(fast, cpu, forward_of("eccv16"))
    assert acc.precision == "bf16"
    yield reference, acc.network


@needs_native_bf16
def test_bf16_runs_the_body_in_bf16_and_the_first_block_in_fp32(
    bf16_eccv16: tuple[nn.Module, nn.Module],
) -> None:
    _, fast = bf16_eccv16
    dtypes: dict[str, torch.dtype] = {}
    hooks = [
        getattr(fast, name).register_forward_hook(
            lambda _m, _i, out, name=name: dtypes.__setitem__(name, out.dtype)
        )
        for name in ("model1", "model2", "model8")
    ]
    try:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            ab = fast(probe_lightness())
    finally:
        for hook in hooks:
            hook.remove()
    assert dtypes == {
        "model1": torch.float32,
        "model2": torch.bfloat16,
        "model8": torch.bfloat16,
    }
    assert ab.shape == (1, 2, 256, 256)


@needs_native_bf16
def test_bf16_error_on_photos_is_what_the_probe_predicts(
    bf16_eccv16: tuple[nn.Module, nn.Module],
) -> None:
    # The probe stands in for photos at load time: its error must be of the same order.
    reference, fast = bf16_eccv16
    lightness = torch.cat((photos_lightness(torch.device("cpu")), probe_lightness()))
    with torch.inference_mode():
        exact = reference(lightness)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            reduced = fast(lightness).float()
    photos, probe = precision_error(exact[:2], reduced[:2]), precision_error(exact[2:], reduced[2:])
    assert LOOSE.admits(photos) and LOOSE.admits(probe)
    assert 0.25 < photos.mean_ab / probe.mean_ab < 4.0, (photos, probe)


def test_upload_copies_read_only_arrays_without_warning(cpu: torch.device) -> None:
    acc = FastPath().prepare(network("eccv16", cpu), cpu, forward_of("eccv16"))
    array = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    array.flags.writeable = False
    tensor = acc.upload(array)
    assert tensor.dtype == torch.uint8 and tensor.device == cpu
    assert np.array_equal(tensor.numpy(), array)


# --- CUDA -----------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("model", ["eccv16", "siggraph17"])
def test_cuda_fp16_stays_within_the_tolerance(model: str) -> None:
    cuda = torch.device("cuda")
    reference, fast = network(model, cuda), network(model, cuda)
    acc = FastPath(precision="fp16", channels_last=True).prepare(fast, cuda, forward_of(model))
    assert acc.precision == "fp16", acc.probe_error
    assert acc.probe_error is not None and TOLERANCE.admits(acc.probe_error)
    lightness = photos_lightness(cuda)
    with torch.inference_mode():
        exact = forward_of(model)(reference, lightness)
        with acc.autocast():
            reduced = forward_of(model)(acc.network, lightness)
    assert reduced.dtype in (torch.float16, torch.float32)
    error = precision_error(exact, reduced)
    assert TOLERANCE.admits(error), error


@pytest.mark.gpu
def test_cuda_upload_goes_through_pinned_memory_and_arrives_intact() -> None:
    cuda = torch.device("cuda")
    acc = FastPath().prepare(network("eccv16", cuda), cuda, forward_of("eccv16"))
    array = np.random.default_rng(0).integers(0, 256, (512, 384, 3), dtype=np.uint8)
    array.flags.writeable = False
    tensor = acc.upload(array)
    assert tensor.device.type == "cuda"
    assert np.array_equal(tensor.cpu().numpy(), array)


@pytest.mark.gpu
def test_cuda_fp16_cannot_be_told_apart_from_fp32_by_batching() -> None:
    # A batch under fp16 gives each item what it gets alone, within the same tolerance.
    cuda = torch.device("cuda")
    acc = FastPath(precision="fp16").prepare(network("eccv16", cuda), cuda, forward_of("eccv16"))
    lightness = torch.cat((photos_lightness(cuda), probe_lightness().to(cuda)))
    with torch.inference_mode(), acc.autocast():
        together = acc.network(lightness).float()
        alone = torch.cat([acc.network(lightness[i : i + 1]).float() for i in range(3)])
    assert TOLERANCE.admits(precision_error(alone, together))
