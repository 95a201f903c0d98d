"""Generated eccv16 and siggraph17 checkpoints: seeded random weights, calibrated to colour.

A plain random network paints an almost uniform grey, which would leave the tests that compare
our pipeline with the published one blind; these are calibrated on synthetic images so their
colours vary. They load like the official files (same keys and shapes) but have other hashes.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from service.engines.networks import ECCV16Net, SIGGRAPH17Net
from service.engines.weights import network_for, weights_path

ECCV16_LOGIT_STD = 4.0
"""Spread of a generated eccv16's bin logits: the softmax then favours a few bins per pixel."""
SIGGRAPH17_TANH_STD = 0.3
"""Spread of a generated siggraph17's pre-tanh output: ab covers the gamut, rarely saturating."""


def save_random_checkpoint(model: str, directory: Path, seed: int = 0) -> Path:
    """Write a generated checkpoint for `model` under its official name (not the official hash)."""
    network = make_random_network(model, seed)
    path = weights_path(model, directory)
    return save_atomically(network.state_dict(), path)


def save_atomically(data: object, path: Path) -> Path:
    """`torch.save` to `path`, written aside and renamed: an interrupted run never leaves half a
    file under the name (which a later run would take for a checkpoint)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.generating")
    try:
        torch.save(data, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def make_random_network(model: str, seed: int = 0) -> nn.Module:
    """A `model` network with seeded random weights, calibrated to give varied colours."""
    # Calibrated on synthetic images (BatchNorm statistics, output scale): a plain random init
    # gives an almost uniform grey, which would leave tests that compare pipelines blind.
    network_class = network_for(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = network_class()
        lightness = _synthetic_lightness(batch=2, size=128)
        _calibrate(network, lightness)
    return network.eval()


def _synthetic_lightness(batch: int, size: int) -> torch.Tensor:
    """Smooth random L images (N,1,size,size) in [0, 100]: blobs at several scales."""
    total = torch.zeros(batch, 1, size, size)
    for cells in (4, 16, size // 4):
        noise = torch.rand(batch, 1, cells, cells)
        total += nn.functional.interpolate(noise, size=(size, size), mode="bicubic")
    total -= total.amin(dim=(2, 3), keepdim=True)
    return 100.0 * total / total.amax(dim=(2, 3), keepdim=True)


@torch.no_grad()
def _calibrate(network: nn.Module, lightness: torch.Tensor) -> None:
    """Set BatchNorm statistics from one batch, then scale the last layer for lively colours."""
    norms = [m for m in network.modules() if isinstance(m, nn.BatchNorm2d)]
    momentum = [m.momentum for m in norms]
    for norm in norms:
        # momentum=None: running stats become this batch's exact mean and variance.
        norm.momentum = None
        norm.reset_running_stats()
    network.train()
    _forward_any(network, lightness)
    network.eval()
    for norm, value in zip(norms, momentum, strict=True):
        norm.momentum = value
    if isinstance(network, ECCV16Net):
        # Bin centres spread over the ab plane (the official ones are the in-gamut bins), and
        # logits sharp enough that the softmax picks distinct bins in different regions.
        network.model_out.weight.uniform_(-0.7, 0.7)
        _scale_output(network, network.model8[-1], lightness, target_std=ECCV16_LOGIT_STD)
    elif isinstance(network, SIGGRAPH17Net):
        # tanh input spread so ab spans much of the gamut without saturating.
        _scale_output(network, network.model_out[0], lightness, target_std=SIGGRAPH17_TANH_STD)


def _scale_output(
    network: nn.Module, layer: nn.Module, lightness: torch.Tensor, target_std: float
) -> None:
    """Rescale `layer`'s weight and bias so its output's standard deviation is `target_std`."""
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    try:
        _forward_any(network, lightness)
    finally:
        handle.remove()
    out = seen[0]
    mean = out.mean(dim=(0, 2, 3))
    factor = target_std / max(float((out - mean.view(1, -1, 1, 1)).std()), 1e-6)
    # Centre each output channel too, so no bin or colour dominates everywhere.
    if not isinstance(layer, nn.Conv2d) or layer.bias is None:
        raise TypeError(f"expected a Conv2d with a bias, got {layer!r}")
    layer.weight.mul_(factor)
    layer.bias.sub_(mean).mul_(factor)


def _forward_any(network: nn.Module, lightness: torch.Tensor) -> torch.Tensor:
    if isinstance(network, SIGGRAPH17Net):
        n, _, h, w = lightness.shape
        out: torch.Tensor = network(lightness, torch.zeros(n, 2, h, w), torch.zeros(n, 1, h, w))
        return out
    out = network(lightness)
    return out
