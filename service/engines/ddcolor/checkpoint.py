"""DDColor checkpoint files: strict loading of the published layout, and generated stand-ins.

The published files (`ddcolor_modelscope.pth`, `ddcolor_artistic.pth`, `ddcolor_paper.pth`,
`ddcolor_paper_tiny.pth`) are BasicSR saves, `{'params': state_dict}`. Besides the network's
keys they carry the ConvNeXt classifier head `encoder.arch.head_cls` (a Linear from the last
stage to 4 classes in the ModelScope ConvNeXt the models were trained with), which the published
architecture no longer has; exactly those two keys may be extra. The `mean`/`std` buffers may
be absent (they are ImageNet constants, filled in). Every other difference is an error that
lists the keys, because upstream's `load_state_dict(strict=False)` would otherwise run a
half-random network without a word.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from service.engines.ddcolor.convnext import Block
from service.engines.ddcolor.network import (
    ENCODERS,
    DDColor,
    Variant,
    build_ddcolor,
    normalisation_buffers,
)
from service.engines.ddcolor.spectral import SpectralConv2d, set_singular_vectors
from service.engines.weights import layout_problems

PARAMS_KEY = "params"
"""BasicSR saves the network's state dict under this key."""
HEAD_CLS_CLASSES = 4
HEAD_CLS_KEYS = ("encoder.arch.head_cls.weight", "encoder.arch.head_cls.bias")
"""Unused by the network, present in the published files: accepted and dropped."""
CONSTANT_KEYS = ("mean", "std")
"""The ImageNet normalisation buffers: constants, so a file without them still loads."""
GENERATED_AB_STD = 25.0
"""Spread of a generated network's ab output on test images: lively, rarely past the gamut."""
GENERATED_LAYER_SCALE = 0.5
"""ConvNeXt residual scale for generated weights (1e-6 at init would leave the blocks silent)."""
CALIBRATION_SIZES = (64, 128)
"""Render sizes the generated network is calibrated at (BatchNorm statistics and ab spread)."""
CALIBRATION_BATCH = 2


class CheckpointError(ValueError):
    """A DDColor checkpoint cannot be used."""


class CheckpointCorrupt(CheckpointError):
    """The file is not a readable checkpoint of tensors."""


class CheckpointMismatch(CheckpointError):
    """The state dict's keys or shapes differ from the network's."""


def expected_state(variant: Variant) -> dict[str, torch.Tensor]:
    """The network's keys and shapes (meta tensors: no memory, no initialisation time)."""
    with torch.device("meta"):
        return DDColor(variant).state_dict()


def check_state_dict(state: Mapping[str, torch.Tensor], variant: Variant, source: str) -> None:
    """Raise CheckpointMismatch listing missing, unexpected and mis-shaped keys of `state`."""
    problems = layout_problems(state, expected_state(variant), CONSTANT_KEYS, HEAD_CLS_KEYS)
    if problems:
        raise CheckpointMismatch(f"{source} does not fit DDColor-{variant}: " + "; ".join(problems))


def load_checkpoint(path: Path, variant: Variant) -> dict[str, torch.Tensor]:
    """Read a checkpoint on the CPU: the state dict `DDColor(variant)` loads with strict=True.

    Accepts BasicSR's `{'params': state_dict}` and a bare state dict; drops the unused
    classifier head; fills in `mean`/`std` if a file lacks them.
    """
    try:
        # weights_only: a checkpoint is data; never let it run code through pickle.
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointCorrupt(
            f"{path} is not a readable checkpoint ({type(exc).__name__}: {_first_line(exc)})"
        ) from exc
    if isinstance(loaded, Mapping) and PARAMS_KEY in loaded:
        loaded = loaded[PARAMS_KEY]
    if not isinstance(loaded, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()
    ):
        raise CheckpointCorrupt(f"{path} does not hold a state dict of tensors")
    state = dict(loaded)
    check_state_dict(state, variant, str(path))
    for key in HEAD_CLS_KEYS:
        state.pop(key, None)
    for key, value in normalisation_buffers().items():
        state.setdefault(key, value)
    return state


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def load_network(path: Path, variant: Variant, device: torch.device | str = "cpu") -> DDColor:
    """An eval-mode DDColor on `device` with the checkpoint's weights."""
    network = build_ddcolor(variant, device)
    network.load_state_dict(load_checkpoint(path, variant), strict=True)
    return network


# --- generated checkpoints -----------------------------------------------------------------------


def save_random_checkpoint(path: Path, variant: Variant, seed: int = 0) -> Path:
    """Write a generated checkpoint in the published layout (`{'params': ...}`, head included)."""
    network = make_random_network(variant, seed)
    state = published_state_dict(network, seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed, so an interrupted run never leaves half a file under the name.
    partial = path.with_name(f".{path.name}.generating")
    try:
        torch.save({PARAMS_KEY: state}, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def published_state_dict(network: DDColor, seed: int = 0) -> dict[str, torch.Tensor]:
    """`network`'s state dict with the classifier head the published files carry, in their order."""
    channels = ENCODERS[network.variant].dims[-1]
    generator = torch.Generator().manual_seed(seed)
    head = {
        HEAD_CLS_KEYS[0]: torch.randn(HEAD_CLS_CLASSES, channels, generator=generator) * 0.02,
        HEAD_CLS_KEYS[1]: torch.zeros(HEAD_CLS_CLASSES),
    }
    state: dict[str, torch.Tensor] = {}
    for key, value in network.state_dict().items():
        state[key] = value
        if key == "encoder.arch.norm.bias":
            # ConvNeXt registers the head right after its final norm.
            state.update(head)
    return state


def make_random_network(variant: Variant, seed: int = 0) -> DDColor:
    """A DDColor with seeded random weights, calibrated so its colours vary and stay in range."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = DDColor(variant)
        with torch.no_grad():
            for module in network.modules():
                if isinstance(module, Block):
                    module.gamma.fill_(GENERATED_LAYER_SCALE)
                elif isinstance(module, SpectralConv2d):
                    # A trained file's u and v have converged; fresh ones make eval explode.
                    set_singular_vectors(module)
            images = [_synthetic_grey(CALIBRATION_BATCH, size) for size in CALIBRATION_SIZES]
            _calibrate(network, images)
    return network.eval()


def _synthetic_grey(batch: int, size: int) -> torch.Tensor:
    """Photo-like random grey images (N, 3, size, size) in [0, 1]: blobs, edges and grain."""
    total = torch.zeros(batch, 1, size, size)
    for cells in (2, 8):
        noise = torch.rand(batch, 1, cells, cells)
        total += nn.functional.interpolate(noise, size=(size, size), mode="bicubic")
    # Hard-edged rectangles: real photos have object boundaries, not only smooth shading.
    rows = torch.arange(size).view(1, size, 1)
    cols = torch.arange(size).view(1, 1, size)
    for _ in range(6):
        top, left = torch.randint(0, size, (2, batch, 1, 1))
        extent = torch.randint(size // 8, size // 2, (2, batch, 1, 1))
        inside = (
            (rows >= top) & (rows < top + extent[0]) & (cols >= left) & (cols < left + extent[1])
        )
        total += inside.unsqueeze(1) * (torch.rand(batch, 1, 1, 1) - 0.5)
    total += 0.05 * torch.randn(batch, 1, size, size)
    total -= total.amin(dim=(2, 3), keepdim=True)
    total /= total.amax(dim=(2, 3), keepdim=True)
    return total.expand(-1, 3, -1, -1).contiguous()


@torch.no_grad()
def _calibrate(network: DDColor, images: list[torch.Tensor]) -> None:
    """Set BatchNorm statistics from the images, then scale the last layers for lively ab.

    ab = R_q q + R_x x + b, where q are the colour decoder's query maps (linear in the last
    layer of its colour-embedding MLP), x the normalised input and R the spectral-normed
    refinement weight. Scaling R's query rows evens out the two channels; scaling the MLP's
    last layer sets the overall spread; the bias centres ab on grey.
    """
    norms = [m for m in network.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        # momentum=None: running stats become the exact average over the calibration batches.
        norm.momentum = None
        norm.reset_running_stats()
    network.train()
    for batch in images:
        network(batch)
    network.eval()
    for norm in norms:
        norm.momentum = 0.1
    last = network.get_submodule("decoder.color_decoder.color_embed.layers.2")
    refine = network.get_submodule("refine_net.0.0")
    if not isinstance(last, nn.Linear) or not isinstance(refine, SpectralConv2d):
        raise TypeError("unexpected DDColor layout")
    inputs = [(batch - network.mean) / network.std for batch in images]
    query_maps = [network.decoder(network.encoder(x)) for x in inputs]
    queries = query_maps[0].shape[1]

    def query_part() -> torch.Tensor:
        """R_q q for every calibration pixel, as (2, pixels)."""
        weight = refine.normalised_weight()[:, :queries]
        parts = [
            torch.einsum("oq,nqhw->onhw", weight[:, :, 0, 0], q).flatten(1) for q in query_maps
        ]
        return torch.cat(parts, dim=1)

    spread = query_part().std(dim=1)
    refine.weight_orig[:, :queries] /= spread.view(2, 1, 1, 1)
    set_singular_vectors(refine)
    factor = GENERATED_AB_STD / float(query_part().std(dim=1).mean())
    last.weight.mul_(factor)
    last.bias.mul_(factor)
    ab = torch.cat([network(batch).flatten(2) for batch in images], dim=2)
    if refine.bias is None:
        raise TypeError("DDColor's refinement conv has a bias")
    refine.bias.sub_(ab.mean(dim=(0, 2)))
