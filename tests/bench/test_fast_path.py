"""The fast path (service/engines/fast.py): each step guarded by device, precision within tolerance.

On the CPU: channels_last changes outputs by rounding only; bf16 autocast runs (convolutions in
bf16, the first block in fp32, ab back in fp32) and is refused when its outputs leave the stated
tolerance of fp32, which they do for these networks with generated weights. On CUDA (gpu-marked):
fp16 stays within the tolerance on the probe and on photos, and uploads go through pinned memory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from bench.fastpath import forward_of, photos_lightness
from service.engines.fast import (
    TOLERANCE,
    FastPath,
    Tolerance,
    precision_error,
    probe_lightness,
)
from service.engines.weights import make_random_network

LOOSE = Tolerance(mean_ab=20.0, p99_ab=120.0)
"""Wide enough to accept bf16 here, so that its mechanics can be checked."""


def network(model: str, device: torch.device) -> nn.Module:
    return make_random_network(model).to(device).eval()


bf16_cpu = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(), reason="no oneDNN: no bf16 CPU kernels"
)


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


def test_fp32_changes_nothing(cpu: torch.device) -> None:
    net = network("eccv16", cpu)
    acc = FastPath().prepare(net, cpu, forward_of("eccv16"))
    assert acc.precision == "fp32" and acc.probe_error is None and acc.network is net
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


# --- bf16 on the CPU ----------------------------------------------------------------------------


@bf16_cpu
def test_bf16_is_refused_beyond_the_tolerance(
    cpu: torch.device, caplog: pytest.LogCaptureFixture
) -> None:
    net = network("eccv16", cpu)
    before = [name for name, _ in net.named_modules()]
    with caplog.at_level(logging.WARNING, logger="service.engines.fast"):
        acc = FastPath(precision="bf16").prepare(net, cpu, forward_of("eccv16"))
    assert acc.precision == "fp32" and acc.dtype is None
    assert acc.probe_error is not None and not TOLERANCE.admits(acc.probe_error)
    assert "beyond the tolerance" in caplog.text and "using fp32" in caplog.text
    # The float32 wrappers tried for bf16 are gone again: the network is as it was loaded.
    assert [name for name, _ in net.named_modules()] == before


@pytest.fixture(scope="module")
def bf16_eccv16() -> Iterator[tuple[nn.Module, nn.Module]]:
    cpu = torch.device("cpu")
    reference, fast = network("eccv16", cpu), network("eccv16", cpu)
    acc = FastPath(precision="bf16", tolerance=LOOSE).prepare(fast, cpu, forward_of("eccv16"))
    assert acc.precision == "bf16"
    yield reference, acc.network


@bf16_cpu
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


@bf16_cpu
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
