"""Colour from a reference photo: soft matching of luminance and local texture statistics.

The idea is Welsh, Ashikhmin & Mueller, "Transferring Color to Greyscale Images" (SIGGRAPH 2002):
describe each pixel by its luminance and the statistics of its neighbourhood, find reference
pixels that look alike, and copy their chroma. What this adds to it is in docs/exemplar.md. The
exemplar engine (service/engines/exemplar.py) runs it within a memory budget.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from service.imaging.lab import lab_to_rgb, rgb_to_lab


@dataclass(frozen=True)
class TransferOptions:
    """How target pixels are matched to reference samples and how the chroma is smoothed."""

    samples: int = 2048
    """Reference pixels drawn on a jittered grid; matching costs target pixels x samples."""
    window: int = 5
    """Side of the square neighbourhood whose mean and standard deviation describe texture."""
    weights: tuple[float, float, float] = (1.0, 1.0, 8.0)
    """Squared-distance weights of luminance, local mean and local standard deviation."""
    position_weight: float = 0.02
    """Weight of the vertical position (0 at the top, 100 at the bottom) as a feature."""
    temperature: float = 3.0
    """Softmax temperature in squared feature units; 0 means hard nearest-neighbour matching."""
    remap_luminance: bool = True
    """Shift and scale the reference's luminance to the target's mean and standard deviation."""
    smooth_radius: int = 8
    """Guided-filter radius (pixels) for the chroma, guided by the target's L (0: no smoothing)."""
    smooth_eps: float = 25.0
    """Guided-filter regulariser in squared L units: edges weaker than about sqrt(eps) blur."""
    seed: int = 0
    """Seed of the sample positions: the same inputs always give the same output."""


SOFT_MATCH = TransferOptions()
"""The exemplar engine's default, tuned on the pairs in bench/exemplar_quality.py."""

WELSH_2002 = TransferOptions(
    samples=200, weights=(1.0, 0.0, 1.0), position_weight=0.0, temperature=0.0, smooth_radius=0
)
"""The paper's recipe: ~200 jittered samples, hard match on L and local std, no smoothing."""

# How chunks and stripes are sized from `chunk_bytes`: the temporaries per pixel of one matching
# chunk beyond its (pixels x samples) float32 logits, and per pixel of a row stripe in each stage.
# Measured with tests/engines/test_exemplar.py's LiveTensorBytes on one chunk or stripe: matching
# 36-40 (soft) and 48 (hard) bytes, lightness 75, local statistics 20, guided filter and Lab to
# RGB 107 (172 when every pixel is out of gamut and bisected); rounded up so a chunk's working
# set stays within `chunk_bytes`.
_CHUNK_PIXEL_OVERHEAD = 64
_LIGHTNESS_STRIPE_BYTES = 96
_STATS_STRIPE_BYTES = 32
_COMPOSE_STRIPE_BYTES = 192

_GAMUT_STEPS = 10
"""Bisection steps of an out-of-gamut pixel's chroma scale: within 1/1024 of the largest fit."""


def transfer_colour(
    target: torch.Tensor, reference: torch.Tensor, options: TransferOptions, chunk_bytes: int
) -> torch.Tensor:
    """(H, W, 3) uint8 target and (h, w, 3) uint8 reference -> (H, W, 3) uint8 coloured target.

    The output's L is the target's own; only the chroma comes from the reference. Full-size
    tensors are a few planes; all other work runs in row stripes or pixel chunks of at most
    `chunk_bytes`, so memory grows by a fixed number of bytes per pixel whatever the size.
    """
    generator = torch.Generator().manual_seed(options.seed)
    lightness = _lightness(target, chunk_bytes)
    target_stats = _stats(lightness) if options.remap_luminance else None
    samples, samples_ab = _reference_samples(
        reference, options, chunk_bytes, generator, target_stats
    )
    mean, std = _local_stats(lightness, options.window // 2, chunk_bytes)
    ab = _match((lightness, mean, std), samples, samples_ab, options, chunk_bytes)
    del mean, std
    return _compose(lightness, ab, options, chunk_bytes)


def _stats(values: torch.Tensor) -> tuple[float, float]:
    return float(values.mean()), float(values.std(correction=0))


def _stripes(
    height: int, width: int, chunk_bytes: int, bytes_per_pixel: int, halo: int = 0
) -> Iterator[tuple[int, int]]:
    """(top, bottom) row ranges whose rows, plus `halo` rows each side, fit `chunk_bytes`."""
    step = max(1, chunk_bytes // (width * bytes_per_pixel) - 2 * halo)
    for top in range(0, height, step):
        yield top, min(top + step, height)


def _lightness(rgb: torch.Tensor, chunk_bytes: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (H, W) float32 L."""
    height, width, _ = rgb.shape
    out = torch.empty((height, width), dtype=torch.float32, device=rgb.device)
    for top, bottom in _stripes(height, width, chunk_bytes, _LIGHTNESS_STRIPE_BYTES):
        stripe = rgb[top:bottom].permute(2, 0, 1).float().div_(255.0)
        out[top:bottom] = rgb_to_lab(stripe)[0]
        del stripe  # before the next stripe is made: only one stripe's temporaries at a time
    return out


def _local_stats(
    lightness: torch.Tensor, radius: int, chunk_bytes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of L over (2r+1)^2 windows, edges replicated."""
    height, width = lightness.shape
    mean = torch.empty_like(lightness)
    std = torch.empty_like(lightness)
    for top, bottom in _stripes(height, width, chunk_bytes, _STATS_STRIPE_BYTES, radius):
        # Rows read beyond the stripe make its own rows exact; the box filter's replicate
        # padding then only ever acts at the image's true top and bottom.
        lo, hi = max(0, top - radius), min(height, bottom + radius)
        window = lightness[lo:hi]
        m = _box(window, radius)
        s = _box(window.square(), radius).sub_(m.square()).clamp_min_(0.0).sqrt_()
        mean[top:bottom] = m[top - lo : bottom - lo]
        std[top:bottom] = s[top - lo : bottom - lo]
        del m, s
    return mean, std


def _compose(
    lightness: torch.Tensor, ab: torch.Tensor, options: TransferOptions, chunk_bytes: int
) -> torch.Tensor:
    """L (H, W) and matched ab (2, H, W) -> (H, W, 3) uint8 RGB, chroma smoothed on the way."""
    height, width = lightness.shape
    radius = options.smooth_radius
    # A guided filter is two box filters deep, so a stripe's rows are exact given 2r more rows.
    halo = 2 * radius
    out = torch.empty((height, width, 3), dtype=torch.uint8, device=lightness.device)
    for top, bottom in _stripes(height, width, chunk_bytes, _COMPOSE_STRIPE_BYTES, halo):
        lo, hi = max(0, top - halo), min(height, bottom + halo)
        chroma = ab[:, lo:hi]
        if radius > 0:
            chroma = _guided_filter(lightness[lo:hi], chroma, radius, options.smooth_eps)
        rows = slice(top - lo, bottom - lo)
        lab = torch.cat((lightness[top:bottom].unsqueeze(0), chroma[:, rows]))
        out[top:bottom] = (
            lab_to_rgb_in_gamut(lab).mul_(255.0).round_().to(torch.uint8).permute(1, 2, 0)
        )
        del chroma, lab
    return out


def lab_to_rgb_in_gamut(lab: torch.Tensor) -> torch.Tensor:
    """(3, H, W) Lab -> sRGB in [0, 1], scaling chroma down where it is out of gamut.

    Clipping each RGB channel, as lab_to_rgb does, changes lightness (a dark pixel given a strong
    chroma comes out brighter), so such pixels keep their L and hue and lose just enough chroma
    to fit, found by bisection. Neutral grey is always in gamut, so a fit always exists.
    """
    rgb = lab_to_rgb(lab)
    # lab_to_rgb clips to exactly 0 and 1; a channel there marks a clipped pixel (or one exactly
    # on the gamut's boundary, which loses at most 1/1024 of its chroma).
    ys, xs = _clipped(rgb).nonzero(as_tuple=True)
    if len(ys) == 0:
        return rgb
    wanted = lab[:, ys, xs]
    inside = torch.zeros_like(wanted[0])
    outside = torch.ones_like(wanted[0])
    for _ in range(_GAMUT_STEPS):
        middle = (inside + outside) / 2
        fits = ~_clipped(lab_to_rgb(_scale_chroma(wanted, middle)))[:, 0]
        inside = torch.where(fits, middle, inside)
        outside = torch.where(fits, outside, middle)
    rgb[:, ys, xs] = lab_to_rgb(_scale_chroma(wanted, inside))[..., 0]
    return rgb


def _clipped(rgb: torch.Tensor) -> torch.Tensor:
    return ((rgb == 0.0) | (rgb == 1.0)).any(0)


def _scale_chroma(lab: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(3, N) Lab with chroma times (N,) `scale`, as a (3, N, 1) image."""
    return torch.stack((lab[0], lab[1] * scale, lab[2] * scale)).unsqueeze(-1)


def _box(planes: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over (2r+1)^2 windows of (..., H, W) planes, edges replicated; two 1-D passes."""
    k = 2 * radius + 1
    x = planes.reshape(-1, 1, *planes.shape[-2:])
    x = F.avg_pool2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), (k, 1), stride=1)
    x = F.avg_pool2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), (1, k), stride=1)
    return x.reshape(planes.shape)


def _reference_samples(
    reference: torch.Tensor,
    options: TransferOptions,
    chunk_bytes: int,
    generator: torch.Generator,
    target_stats: tuple[float, float] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (n, 4) and chroma (n, 2) of reference pixels drawn on a jittered grid."""
    height, width, _ = reference.shape
    lightness = _lightness(reference, chunk_bytes)
    ys, xs = (
        t.to(reference.device) for t in _jittered_grid(height, width, options.samples, generator)
    )
    radius = options.window // 2
    offsets = torch.arange(-radius, radius + 1, device=reference.device)
    # Clamped coordinates reproduce the replicate padding of the target's box filter, and only
    # the samples' windows are read: no full-size feature planes for the reference.
    py = (ys[:, None, None] + offsets[None, :, None]).clamp_(0, height - 1)
    px = (xs[:, None, None] + offsets[None, None, :]).clamp_(0, width - 1)
    patches = lightness[py, px].flatten(1)
    mean = patches.mean(1)
    std = patches.square().mean(1).sub_(mean.square()).clamp_min_(0.0).sqrt_()
    features = torch.stack((lightness[ys, xs], mean, std, _row_position(ys, height)), dim=1)
    if target_stats is not None:
        # Welsh et al.: move the reference's luminance histogram onto the target's, so a darker
        # or lower-contrast reference still matches; L and the mean shift, the std only scales.
        ref_mean, ref_std = _stats(lightness)
        target_mean, target_std = target_stats
        scale = target_std / ref_std if ref_std > 1e-6 else 1.0
        features[:, :2].sub_(ref_mean).mul_(scale).add_(target_mean)
        features[:, 2].mul_(scale)
    pixels = reference[ys, xs].float().div_(255.0)
    ab = rgb_to_lab(pixels.T.unsqueeze(-1))[1:, :, 0].T.contiguous()
    return features, ab


def _row_position(rows: torch.Tensor, height: int) -> torch.Tensor:
    """Row index scaled to 0 (top) .. 100 (bottom), on L's scale."""
    return rows.float().mul_(100.0 / max(1, height - 1))


def _jittered_grid(
    height: int, width: int, count: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and columns of one random pixel per cell of a grid of about `count` cells."""
    if height * width <= count:
        flat = torch.arange(height * width)
        return flat // width, flat % width
    rows = max(1, min(height, round(math.sqrt(count * height / width))))
    cols = max(1, min(width, round(count / rows)))
    y0 = torch.arange(rows + 1) * height // rows
    x0 = torch.arange(cols + 1) * width // cols
    jy = torch.rand((rows, cols), generator=generator)
    jx = torch.rand((rows, cols), generator=generator)
    ys = y0[:-1, None] + (jy * (y0[1:] - y0[:-1])[:, None]).long()
    xs = x0[None, :-1] + (jx * (x0[1:] - x0[:-1])[None, :]).long()
    return ys.flatten(), xs.flatten()


def _match(
    planes: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    samples: torch.Tensor,
    samples_ab: torch.Tensor,
    options: TransferOptions,
    chunk_bytes: int,
) -> torch.Tensor:
    """Chroma (2, H, W) for the target's L, local mean and std planes, chunk by chunk."""
    height, width = planes[0].shape
    pixels = height * width
    device = planes[0].device
    weights = torch.tensor((*options.weights, options.position_weight), device=device).sqrt()
    keys = samples * weights
    # -|q - k|^2 / T = (2 q.k - |k|^2 - |q|^2) / T. The |q|^2 term is the same for every key of a
    # query, so neither softmax nor argmax sees it, and the rest is one matrix product once the
    # keys carry |k|^2 and the queries a constant column.
    keys = torch.cat((keys, keys.square().sum(1, keepdim=True)), dim=1)
    scale = 1.0 / options.temperature if options.temperature > 0 else 1.0
    query_scale = torch.cat((weights * (2.0 * scale), torch.tensor([-scale], device=device)))
    ones = torch.ones(len(keys), device=device)
    chroma = [samples_ab[:, 0].contiguous(), samples_ab[:, 1].contiguous()]
    out = torch.empty((2, pixels), dtype=torch.float32, device=device)
    flat = [p.flatten() for p in planes]
    chunk = min(pixels, max(1, chunk_bytes // (4 * len(keys) + _CHUNK_PIXEL_OVERHEAD)))
    # One buffer for every chunk: allocating afresh costs page faults (CPU) or allocator churn.
    logits_buffer = torch.empty((chunk, len(keys)), device=device)
    peak_buffer = torch.empty((chunk, 1), device=device)
    for start in range(0, pixels, chunk):
        stop = min(start + chunk, pixels)
        rows = _row_position(torch.arange(start, stop, device=device) // width, height)
        constant = torch.ones_like(rows)
        query = torch.stack([p[start:stop] for p in flat] + [rows, constant], dim=1)
        logits = torch.mm(query.mul_(query_scale), keys.T, out=logits_buffer[: stop - start])
        if options.temperature <= 0:
            out[:, start:stop] = samples_ab[logits.argmax(1)].T
        else:
            peak = torch.amax(logits, 1, keepdim=True, out=peak_buffer[: stop - start])
            # exp(-80) ~ 2e-35 is still a normal float32: no slow denormal path, and such
            # weights are nothing next to the best match's 1.
            weight = logits.sub_(peak).clamp_min_(-80.0).exp_()
            total = torch.mv(weight, ones)
            for channel, values in enumerate(chroma):
                torch.mv(weight, values, out=out[channel, start:stop]).div_(total)
            del weight, total, peak
        del logits, query, rows, constant
    return out.view(2, height, width)


def _guided_filter(
    guide: torch.Tensor, planes: torch.Tensor, radius: int, eps: float
) -> torch.Tensor:
    """Edge-aware smoothing of (C, H, W) planes guided by (H, W) L (He, Sun & Tang 2010)."""
    mean_g = _box(guide, radius)
    var_g = _box(guide.square(), radius).sub_(mean_g.square()).add_(eps)
    mean_p = _box(planes, radius)
    a = _box(planes * guide, radius).sub_(mean_p * mean_g).div_(var_g)
    b = mean_p.sub_(a * mean_g)
    return _box(a, radius).mul_(guide).add_(_box(b, radius))
