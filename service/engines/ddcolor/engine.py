"""The DDColor engines: ddcolor (DDColor-L), ddcolor-artistic (DDColor-L) and ddcolor-tiny.

`prepare` resizes the photo to the square render size and makes it grey RGB (CPU); the network
predicts ab at the render size; the join resizes ab to the photo and joins it with the photo's
own full-resolution L, in bands (where it runs is NetworkEngine's choice). The render size is
per request (`ColorizeRequest.render_size`, else the engine's default) and is the batch key, so
a forward pass only ever stacks inputs of one size.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from service.engines import weights
from service.engines.base import (
    ColorizeRequest,
    EngineNotReady,
    InvalidRequest,
    MemoryModel,
    RenderLimits,
)
from service.engines.ddcolor import memory
from service.engines.ddcolor.checkpoint import (
    CheckpointCorrupt,
    CheckpointMismatch,
    load_checkpoint,
)
from service.engines.ddcolor.network import DDColor, Variant
from service.engines.ddcolor.pipeline import AB_LIMIT, join, render_input
from service.engines.fast import Accelerated, FastPath
from service.engines.loaded import NetworkEngine, check_image
from service.imaging.lab import lab_to_rgb

logger = logging.getLogger(__name__)

PROBE_RENDER_SIZE = 128
"""The precision probe's render size: small enough for a CPU load, large enough for the
decoder's attention to see several tokens per scale."""


class DDColorEngine(NetworkEngine[torch.Tensor]):
    """DDColor at a per-request render size; subclasses name the checkpoint and the variant."""

    takes_render_size = True
    variant: ClassVar[Variant]

    def __init__(
        self,
        device: torch.device,
        weights_dir: Path,
        fast: FastPath | None = None,
        render: RenderLimits | None = None,
    ) -> None:
        fast = fast or FastPath()
        note = ""
        if fast.precision == "fp16":
            # float16 overflows in DDColor's attention and positional embedding upstream; the
            # published ports run it in float32 or bfloat16 only.
            logger.warning(
                "COLORIZE_PRECISION=fp16: %s does not run in float16 (its attention overflows); "
                "using fp32",
                self.name,
            )
            fast = dataclasses.replace(fast, precision="fp32")
            note = "fp16 refused: DDColor's attention overflows in float16; "
        super().__init__(device, weights_dir, fast)
        self.precision_note = note
        self.render = render or RenderLimits()

    # -- loading -----------------------------------------------------------------------------

    def build_network(self) -> nn.Module:
        return DDColor(self.variant)

    def read_state(self) -> dict[str, torch.Tensor]:
        try:
            path = weights.locate(self.name, self.weights_dir)
        except weights.WeightsError as exc:
            raise EngineNotReady(self.name, str(exc)) from exc
        fix = f"run `{weights.fix_command(self.name, path.parent)}` to replace it"
        try:
            return load_checkpoint(path, self.variant)
        except CheckpointCorrupt as exc:
            raise EngineNotReady(
                self.name, f"{self.name} weights unreadable: {exc}; {fix}"
            ) from exc
        except CheckpointMismatch as exc:
            raise EngineNotReady(self.name, f"{self.name} weights: {exc}; {fix}") from exc

    def probe(self, network: nn.Module, lightness: torch.Tensor) -> torch.Tensor:
        """ab for the fast path's probe L (N,1,256,256), rendered at PROBE_RENDER_SIZE."""
        small = F.interpolate(
            lightness, size=(PROBE_RENDER_SIZE, PROBE_RENDER_SIZE), mode="bilinear"
        )
        grey = lab_to_rgb(torch.cat((small, torch.zeros_like(small).expand(-1, 2, -1, -1)), 1))
        ab: torch.Tensor = network(grey)
        return ab

    # -- requests ------------------------------------------------------------------------------

    @property
    def render_limits(self) -> RenderLimits:
        return self.render

    def render_size(self, request: ColorizeRequest) -> int:
        """The side the network renders `request` at: its own, else the engine's default."""
        return self.render.default if request.render_size is None else request.render_size

    def validate(self, request: ColorizeRequest) -> None:
        check_image(request)
        super().validate(request)
        if request.reference is not None:
            raise InvalidRequest(f"engine {self.name!r} does not take a reference")

    def batch_key(self, request: ColorizeRequest) -> object:
        return self.render_size(request)

    # -- memory --------------------------------------------------------------------------------

    @property
    def memory_model(self) -> MemoryModel:
        """At the default render size; `estimate` follows each request's own."""
        return MemoryModel(
            per_item_bytes=memory.item_bytes(self.variant, self.render.default),
            per_pixel_bytes=memory.POST_PIXEL_BYTES,
            notes=(
                f"at the default render size {self.render.default}; the per-item bytes grow with "
                "the render size squared (service/engines/ddcolor/memory.py)"
            ),
        )

    def estimate(self, request: ColorizeRequest, batch: int = 1) -> int:
        """The forward pass at the request's render size plus the full-resolution join."""
        w, h = request.size
        return self.forward_bytes(request, batch) + batch * memory.POST_PIXEL_BYTES * w * h

    def forward_bytes(self, request: ColorizeRequest, batch: int = 1) -> int:
        return memory.forward_bytes(self.variant, self.render_size(request), batch)

    def join_bytes(self, request: ColorizeRequest) -> int:
        # The whole-image tensors plus one band, which is at most one forward item's bytes.
        w, h = request.size
        # A band is at least one row, and never more than the whole photo.
        band = max(memory.BAND_PIXEL_BYTES * w, self._band_bytes(request, None))
        return memory.POST_PIXEL_BYTES * w * h + min(band, memory.BAND_PIXEL_BYTES * w * h)

    def largest_render_size(
        self, budget: int, image_size: tuple[int, int] | None = None
    ) -> int | None:
        pixels = 0 if image_size is None else image_size[0] * image_size[1]
        join = memory.POST_PIXEL_BYTES * pixels
        for size in range(self.render.maximum, self.render.minimum - 1, -self.render.multiple):
            if memory.forward_bytes(self.variant, size, 1) + join <= budget:
                return size
        return None

    def _band_bytes(self, request: ColorizeRequest, chunk_bytes: int | None) -> int:
        item = memory.item_bytes(self.variant, self.render_size(request))
        return item if chunk_bytes is None else min(item, chunk_bytes)

    # -- the stages ----------------------------------------------------------------------------

    def prepare(self, request: ColorizeRequest) -> torch.Tensor:
        """The photo resized to the render size as grey RGB (1, 3, S, S), on the CPU."""
        return render_input(request.image, self.render_size(request))

    def predict_ab(
        self,
        network: nn.Module,
        accelerated: Accelerated,
        requests: Sequence[ColorizeRequest],
        inputs: Sequence[torch.Tensor],
    ) -> torch.Tensor:
        sizes = {self.render_size(r) for r in requests}
        if len(sizes) != 1:
            raise InvalidRequest(f"one forward pass takes one render size, got {sorted(sizes)}")
        grey = torch.cat(list(inputs)).to(self.device)
        if self.fast.channels_last:
            grey = grey.contiguous(memory_format=torch.channels_last)
        with accelerated.autocast():
            ab: torch.Tensor = network(grey)
        # Clamped here, so that ab handed to `finish` never lies beyond Lab's range (the join
        # clamps again, for ab from anywhere else).
        return ab.float().clamp_(*AB_LIMIT)

    def join(
        self, request: ColorizeRequest, ab: torch.Tensor, chunk_bytes: int | None
    ) -> np.ndarray:
        return banded_join(request.image, ab, self._band_bytes(request, chunk_bytes))


def banded_join(image: np.ndarray, ab: torch.Tensor, band_bytes: int) -> np.ndarray:
    """`pipeline.join` of the photo and its ab (1,2,S,S), in bands of rows within `band_bytes`.

    Only the resized ab and the output span the whole image; the colour conversion's
    temporaries (memory.BAND_PIXEL_BYTES per pixel) are one band's. Every step after the resize
    is per pixel, so the bands give exactly what one whole-image `join` gives.
    """
    image = np.ascontiguousarray(image)
    height, width = image.shape[:2]
    ab_full = F.interpolate(
        ab.float().clamp(*AB_LIMIT), size=(height, width), mode="bilinear", align_corners=False
    )
    out = np.empty((height, width, 3), dtype=np.uint8)
    rows = max(1, band_bytes // (memory.BAND_PIXEL_BYTES * width))
    for top in range(0, height, rows):
        band = slice(top, top + rows)
        out[band] = join(image[band], ab_full[:, :, band])
    return out


class DDColorLarge(DDColorEngine):
    """DDColor-L trained on ImageNet (ModelScope's release)."""

    name = "ddcolor"
    variant = "large"


class DDColorArtistic(DDColorEngine):
    """DDColor-L fine-tuned for vivid, artistic colour (more saturated, less conservative)."""

    name = "ddcolor-artistic"
    variant = "large"


class DDColorTiny(DDColorEngine):
    """DDColor-T: the ConvNeXt-T encoder, about a quarter of DDColor-L's weights."""

    name = "ddcolor-tiny"
    variant = "tiny"
