"""The pipeline shared by the fixed-input networks (eccv16, siggraph17).

Each image is stretched to 256x256 (Pillow bicubic) and its L predicts ab at 256x256; the ab is
resized bilinearly back to the input size and joined with the input's own full-resolution L, as
richzhang/colorization's `preprocess_img`/`postprocess_tens` do. Only the 256x256 part runs
batched: full-resolution work happens one image at a time, so its memory is one image's.
"""

from __future__ import annotations

import functools
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from service.engines import weights
from service.engines.base import (
    ColorizeRequest,
    EngineNotReady,
    InvalidRequest,
    MemoryModel,
)
from service.engines.fast import Accelerated
from service.engines.loaded import NetworkEngine, check_image
from service.engines.networks import INPUT_SIZE
from service.imaging.lab import lab_to_rgb, rgb_to_lab

# Memory constants, measured on CPU (float32, torch 2.13) as the peak bytes of live tensor
# storages, tracked op by op with a TorchDispatchMode while `run` executes (resident weights not
# included). `python -m tests.engines.test_fixed` re-measures them; its tests check every
# estimate against the measured peak. Raw figures:
#   forward pass with its 256x256 pre-processing, per item, whatever the input size:
#     eccv16 21.50 MB, siggraph17 139.46 MB;
#   whole-image tensors: 11.0 bytes/pixel (resized ab float32 8, output uint8 3);
#   colour-conversion temporaries: 99.0 bytes per pixel of the current band.
# Margins: +25% on the forward (GPU convolutions also take workspace that no tensor shows) and
# +27% on the whole-image bytes (allocator rounding). A band gets the item's bytes, free again by
# then, sized at BAND_PIXEL_BYTES (+21%). Measured estimate/peak: 1.19 to 1.33 from 8x8 to
# 2048x1536, batches of 1 and 2. Not yet measured on a GPU (max_memory_allocated).
ECCV16_ITEM_BYTES = 26 * 1024 * 1024
SIGGRAPH17_ITEM_BYTES = 166 * 1024 * 1024
POST_PIXEL_BYTES = 14
BAND_PIXEL_BYTES = 120
"""Bytes per pixel of a band's colour conversion, to size bands from `chunk_bytes`."""

HINT_SIZE = 3
"""Side, in cells of the 256x256 network grid, of the square each hint colours (clipped)."""

_PROBE_REQUEST = ColorizeRequest(np.zeros((1, 1, 3), dtype=np.uint8))
"""Stands for each item of the precision probe (no hints): `predict` only reads its hints."""


class FixedInputEngine(NetworkEngine[np.ndarray]):
    """A published network with a fixed 256x256 input; subclasses build it and call it."""

    item_bytes: ClassVar[int]
    """Measured activation bytes of one item's forward pass (see the module constants)."""

    @abstractmethod
    def predict(
        self, network: nn.Module, lightness: torch.Tensor, requests: Sequence[ColorizeRequest]
    ) -> torch.Tensor:
        """ab (N,2,256,256) for the batch's L (N,1,256,256) on the device."""

    @property
    def memory_model(self) -> MemoryModel:
        return MemoryModel(
            per_item_bytes=self.item_bytes,
            per_pixel_bytes=POST_PIXEL_BYTES,
            notes="measured peak of live tensors plus margin; see service/engines/fixed.py",
        )

    def read_state(self) -> dict[str, torch.Tensor]:
        try:
            return weights.load_state_dict(self.name, self.weights_dir)
        except weights.WeightsError as exc:
            raise EngineNotReady(self.name, str(exc)) from exc

    def probe(self, network: nn.Module, lightness: torch.Tensor) -> torch.Tensor:
        return self.predict(network, lightness, [_PROBE_REQUEST] * lightness.shape[0])

    def validate(self, request: ColorizeRequest) -> None:
        check_image(request)
        if request.render_size is not None:
            raise InvalidRequest(
                f"engine {self.name!r} renders at a fixed 256x256 and takes no render size"
            )
        super().validate(request)

    def prepare(self, request: ColorizeRequest) -> np.ndarray:
        """The photo stretched to the network input (Pillow bicubic), on the CPU."""
        return _resize_rgb(request.image)

    def predict_ab(
        self,
        network: nn.Module,
        accelerated: Accelerated,
        requests: Sequence[ColorizeRequest],
        inputs: Sequence[np.ndarray],
    ) -> torch.Tensor:
        lightness = _lightness(accelerated.upload(np.stack(inputs)))
        with accelerated.autocast():
            return self.predict(network, lightness, requests)

    def join(
        self, request: ColorizeRequest, ab: torch.Tensor, chunk_bytes: int | None
    ) -> np.ndarray:
        _, accelerated = self.loaded()
        band_bytes = self.item_bytes if chunk_bytes is None else chunk_bytes
        return _full_resolution_rgb(request.image, ab, band_bytes, accelerated.upload)

    def forward_bytes(self, request: ColorizeRequest, batch: int = 1) -> int:
        return batch * self.item_bytes

    def join_bytes(self, request: ColorizeRequest) -> int:
        # The whole-image tensors plus one band, which may use what one forward item used.
        w, h = request.size
        return POST_PIXEL_BYTES * w * h + self.item_bytes


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A tensor of `array` on `device`; read-only arrays (decoded images often are) are copied."""
    # torch.from_numpy warns on read-only memory, since the tensor could be written through.
    writable = array if array.flags.writeable else array.copy()
    return torch.from_numpy(writable).to(device)


def _resize_rgb(image: np.ndarray) -> np.ndarray:
    """RGB uint8 stretched to the network size with Pillow's bicubic filter, as published."""
    resized = Image.fromarray(np.ascontiguousarray(image)).resize(
        (INPUT_SIZE, INPUT_SIZE), Image.Resampling.BICUBIC
    )
    return np.asarray(resized)


def _lightness(rgb: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 on the device -> L (N, 1, H, W) float32, its own storage."""
    rgb_float = rgb.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
    lab = rgb_to_lab(rgb_float)
    del rgb_float
    # A copy, so the a and b channels' memory is freed now rather than with L.
    return lab[:, :1].clone(memory_format=torch.contiguous_format)


def _full_resolution_rgb(
    image: np.ndarray,
    ab: torch.Tensor,
    band_bytes: int,
    upload: Callable[[np.ndarray], torch.Tensor] | None = None,
) -> np.ndarray:
    """Join the input's own L with `ab` (1,2,256,256) resized to the input: RGB uint8 (H,W,3).

    `upload` moves a band of the image to the device (pinned memory on CUDA: Accelerated.upload).
    """
    if upload is None:
        upload = functools.partial(_to_device, device=ab.device)
    # The colour conversion runs in bands of rows so that its temporaries (about 99 bytes per
    # pixel) stay within `band_bytes`; only the resized ab and the output span the whole image.
    image = np.ascontiguousarray(image)
    height, width = image.shape[:2]
    ab_full = F.interpolate(ab, size=(height, width), mode="bilinear", align_corners=False)
    out = torch.empty((height, width, 3), dtype=torch.uint8)
    rows = max(1, band_bytes // (BAND_PIXEL_BYTES * width))
    for top in range(0, height, rows):
        band = slice(top, top + rows)
        lightness = _lightness(upload(image[band])[None])
        lab = torch.cat((lightness, ab_full[:, :, band]), dim=1)
        del lightness
        rgb = lab_to_rgb(lab)
        del lab
        rgb_u8 = rgb.mul_(255.0).round_().to(torch.uint8)
        del rgb
        out[band].copy_(rgb_u8[0].permute(1, 2, 0))
    return out.numpy()
