"""What this CPU runs natively: tests that need native bf16 skip with a reason where it lacks it.

Without native bf16 (x86-64 before AVX-512 BF16 / AMX, e.g. AVX2-only machines) oneDNN emulates
bf16 convolutions, about 300x slower than fp32 (issue 13: one 256-channel 3x3 convolution on
64x64 took 0.11 s in fp32 and 18.7 s in bf16), so a forward pass in bf16 takes minutes. Such a
CPU runs the refusal tests instead (`lacks_native_bf16`). To imitate one on an AVX-512 machine:
`ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2` (docs/performance.md).
"""

from __future__ import annotations

import time
from functools import cache

import pytest
import torch

IMITATE = "ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2"


@cache
def native_bf16() -> bool:
    """Whether bf16 convolutions run natively here, as oneDNN decides (ONEDNN_MAX_CPU_ISA too)."""
    if not torch.backends.mkldnn.is_available():
        return False
    # oneDNN's own answer: the ISA it will dispatch to has bf16 instructions.
    supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if supported is not None:
        return bool(supported())
    return _bf16_conv_is_not_emulated()


def _bf16_conv_is_not_emulated() -> bool:
    """Time a small convolution both ways: emulated bf16 is two orders of magnitude slower."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).eval()
    sample = torch.randn(1, 64, 16, 16)

    def best(dtype: torch.dtype | None) -> float:
        times = []
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            for _ in range(3):
                start = time.perf_counter()
                conv(sample)
                times.append(time.perf_counter() - start)
        return min(times)

    return best(torch.bfloat16) < 10 * best(None)


def _capability() -> str:
    return f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}"


needs_native_bf16 = pytest.mark.skipif(
    not native_bf16(),
    reason=f"this CPU has no native bf16 ({_capability()}): a bf16 forward pass takes minutes; "
    "the tests marked lacks_native_bf16 check that it is refused here instead",
)
"""For tests that run a whole network in bf16."""

lacks_native_bf16 = pytest.mark.skipif(
    native_bf16(),
    reason=f"this CPU has native bf16 ({_capability()}); run with {IMITATE} to imitate one without",
)
"""For tests of what happens where bf16 is emulated: it is refused as slower than fp32."""
