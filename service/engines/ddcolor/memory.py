"""How many bytes a DDColor job needs: the forward pass by render size and batch, and the join.

Measured on CPU (float32, torch 2.13) as the peak bytes of live tensor storages, tracked op by
op with a TorchDispatchMode (tests/support/memory.py) while `forward` runs on prepared inputs,
resident weights not included. `python -m tests.engines.test_ddcolor_memory --sizes ...
--variants tiny,large` re-measures them; its tests check the estimates at 64 and 128. Raw
figures, peak MB at render size S for batches of 1 / 2:

    S      DDColor-T        DDColor-L
    64     16.9 / 26.8      24.3 / 27.2
    128    53.4 / 106.9     54.2 / 108.3
    256    213.2 / 426.4    216.1 / 432.3
    512    851.7 / 1703.4   (not measured: 3300 B/px x S^2 gives 865 / 1730)

Both variants peak at full render resolution, in the colour decoder's 100 query maps and the
refinement (about 3300 bytes per rendered pixel per item, 3253 for T and 3298 for L from the
batch-2 less batch-1 peaks): the encoders differ in weights, not in this peak. Small renders
peak earlier instead, at an allocation of the pass that does not grow with the batch (T 17 MB,
L 24 MB at S=64). So the estimate is the larger of the two: max(PASS_BYTES, batch x
SQUARE_BYTES x S^2), with +15% on the per-pixel term and +8% on the pass term; measured
estimate/peak is 1.12 to 1.17 everywhere above. Not yet measured on a GPU
(max_memory_allocated), where convolution workspaces come on top.

The join: the resized ab (float32, 8 bytes per photo pixel) and the uint8 output (3) span the
whole photo; the colour conversion's temporaries are 131 bytes per pixel of the current band.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

MiB = 1024 * 1024

SQUARE_BYTES = 3800
"""Forward-pass bytes per item per rendered pixel (S x S), margin included; both variants."""
PASS_BYTES: Mapping[str, int] = MappingProxyType({"tiny": 18 * MiB, "large": 26 * MiB})
"""The floor of a forward pass at small render sizes, by variant, margin included."""
POST_PIXEL_BYTES = 14
"""Whole-image tensors of the join per photo pixel: resized ab (float32, 8) and output (3)."""
BAND_PIXEL_BYTES = 160
"""Bytes per pixel of a band's colour conversion (131 measured), to size bands."""


def item_bytes(variant: str, render_size: int) -> int:
    """One item's forward-pass bytes at `render_size`."""
    return forward_bytes(variant, render_size, 1)


def forward_bytes(variant: str, render_size: int, batch: int = 1) -> int:
    """A forward pass of `batch` items at `render_size`: its inputs, activations and output."""
    return max(PASS_BYTES[variant], batch * SQUARE_BYTES * render_size * render_size)
