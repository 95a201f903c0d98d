"""The exemplar engine: a grayscale photo coloured from a colour photo of the same scene.

The transfer itself is service/engines/colour_transfer.py; this engine runs it on its device
within a memory budget (`chunk_bytes`), and says how many bytes a job needs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from service.engines.base import ColorizeRequest, Engine, MemoryModel
from service.engines.colour_transfer import SOFT_MATCH, TransferOptions, transfer_colour

DEFAULT_CHUNK_BYTES = 136 * 1024 * 1024
"""`chunk_bytes` when the caller gives none: what a job may use beyond its full-size planes."""

HEADROOM_BYTES = 8 * 1024 * 1024
"""Part of `chunk_bytes` kept for small tensors and kernel workspaces (at most an eighth); the
rest sizes the matching chunks and row stripes (128 MiB by default)."""

# The memory model. Measured by `python -m tests.engines.test_exemplar` (peak bytes of live tensor
# storages while `run` executes, tracked op by op with a TorchDispatchMode; CPU, torch 2.13,
# default options, default chunk):
#   target 500x500 .. 2000x2000, reference 64x64: 23.00 bytes per added target pixel (uint8
#     input 3, L 4, local mean 4 and std 4, matched ab 8), and 133,891,104 bytes at 0 pixels,
#     i.e. the 128 MiB of chunk buffers (the logits), a little under budget;
#   reference 500x500 .. 2000x2000, target 128x128: 3.00 bytes per added reference pixel (its
#     uint8 copy, alive for the whole job); while the samples are drawn its L (4 more) is alive
#     too, next to a lightness stripe instead of a matching chunk, so 7 bytes bind for a
#     reference much larger than the target (128x128 from 4000x4000: 216,814,688 bytes).
# Margins: +13% on target pixels (allocator rounding), 8 bytes per reference pixel, and the
# 8 MiB headroom on top of the chunk buffers. The worker passes fixed_bytes as `chunk_bytes`,
# which is the default, so the estimate covers that run. Estimate / measured peak: 1.07 to
# 1.09 on the suite's cases, 1.25 for that 4000x4000 reference; the estimate is loose only for
# targets under ~128x128, which do not fill a chunk.
PER_PIXEL_BYTES = 26
REFERENCE_PIXEL_BYTES = 8
FIXED_BYTES = DEFAULT_CHUNK_BYTES


class ExemplarEngine(Engine):
    """Colour a grayscale photo from a colour reference of the same scene."""

    name = "exemplar"
    batchable = False
    needs_weights = False
    takes_reference = True

    def __init__(self, device: torch.device, options: TransferOptions = SOFT_MATCH) -> None:
        super().__init__(device)
        self.options = options

    @property
    def memory_model(self) -> MemoryModel:
        return MemoryModel(
            per_item_bytes=0,
            per_pixel_bytes=PER_PIXEL_BYTES,
            reference_pixel_bytes=REFERENCE_PIXEL_BYTES,
            fixed_bytes=FIXED_BYTES,
            notes="full-resolution planes per target pixel; matching runs in bounded chunks",
        )

    def load(self) -> None:
        """Nothing to load: the engine has no weights."""

    @property
    def ready(self) -> bool:
        return True

    def forward(
        self,
        requests: Sequence[ColorizeRequest],
        prepared: Sequence[object | None],
        chunk_bytes: int | None = None,
    ) -> list[object]:
        """Each request's whole transfer in turn, on the device: the outputs are final images,
        so `prepare` and `finish` have nothing to do (no network input, no separate join)."""
        budget = DEFAULT_CHUNK_BYTES if chunk_bytes is None else chunk_bytes
        buffers = budget - min(HEADROOM_BYTES, budget // 8)
        results: list[object] = []
        for request in requests:
            self.validate(request)
            assert request.reference is not None  # validate() checked it
            with torch.inference_mode():
                target = _upload(request.image, self.device)
                reference = _upload(request.reference, self.device)
                out = transfer_colour(target, reference, self.options, buffers)
                del target, reference
                results.append(out.cpu().numpy())
        return results


def _upload(image: np.ndarray, device: torch.device) -> torch.Tensor:
    # torch.tensor copies, so read-only arrays (np.asarray of a PIL image) are fine.
    return torch.tensor(image, dtype=torch.uint8, device=device)
