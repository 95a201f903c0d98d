"""Generated DDColor checkpoints in the published layout, calibrated so their colours vary.

A freshly initialised DDColor paints grey (ConvNeXt's residual scale starts at 1e-6) or explodes
(fresh spectral-norm vectors), so these set the residual scale, converge the spectral norms and
calibrate the last layers on synthetic photos. The files carry what the published ones carry
(`{'params': ...}` with the unused classifier head), so the production loader reads them as it
reads the real ones.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from devkit.checkpoints import save_atomically
from service.engines.ddcolor.checkpoint import HEAD_CLS_KEYS, PARAMS_KEY, load_checkpoint
from service.engines.ddcolor.convnext import Block
from service.engines.ddcolor.network import ENCODERS, DDColor, Variant
from service.engines.ddcolor.spectral import SIGMA_EPS, SpectralConv2d

HEAD_CLS_CLASSES = 4
"""The ModelScope ConvNeXt's classifier head: a Linear from the last stage to 4 classes."""
GENERATED_AB_STD = 25.0
"""Spread of a generated network's ab output on test images: lively, rarely past the gamut."""
GENERATED_LAYER_SCALE = 0.5
"""ConvNeXt residual scale for generated weights (1e-6 at init would leave the blocks silent)."""
CALIBRATION_SIZES = (64, 128)
"""Render sizes the generated network is calibrated at (BatchNorm statistics and ab spread)."""
CALIBRATION_BATCH = 2


def load_network(path: Path, variant: Variant, device: torch.device | str = "cpu") -> DDColor:
    """An eval-mode DDColor on `device` with the checkpoint's weights (read strictly).

    Built on the meta device first: random initialisation of DDColor-L's 228M parameters would
    cost seconds and be overwritten by the checkpoint, which holds every tensor.
    """
    with torch.device("meta"):
        network = DDColor(variant)
    network.to_empty(device=device)
    network.load_state_dict(load_checkpoint(path, variant), strict=True)
    return network.eval()


def save_random_checkpoint(path: Path, variant: Variant, seed: int = 0) -> Path:
    """Write a generated checkpoint in the published layout (`{'params': ...}`, head included)."""
    network = make_random_network(variant, seed)
    state = published_state_dict(network, seed)
    return save_atomically({PARAMS_KEY: state}, Path(path))


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


@torch.no_grad()
def set_singular_vectors(conv: SpectralConv2d) -> float:
    """Set `conv`'s u and v to its weight's top singular vectors; return the singular value.

    A trained checkpoint's u and v have converged over many power-iteration steps, so sigma is
    the true spectral norm. Fresh random u and v underestimate it and inflate the weight (eval
    outputs explode), and plain power iteration converges slowly on random matrices, whose top
    singular values lie close together: an eigendecomposition of the smaller Gram matrix is
    exact and costs less. Float32 is enough: sigma, a Rayleigh quotient, is second-order
    accurate in the vectors' error.
    """
    matrix = conv.weight_orig.detach().flatten(1).to(torch.float32)
    if matrix.shape[0] <= matrix.shape[1]:
        u = torch.linalg.eigh(matrix @ matrix.t()).eigenvectors[:, -1]
        v = F.normalize(torch.mv(matrix.t(), u), dim=0, eps=SIGMA_EPS)
    else:
        v = torch.linalg.eigh(matrix.t() @ matrix).eigenvectors[:, -1]
        u = F.normalize(torch.mv(matrix, v), dim=0, eps=SIGMA_EPS)
    conv.weight_u.copy_(u)
    conv.weight_v.copy_(v)
    return float(torch.dot(u, torch.mv(matrix, v)))
