"""Temporal consistency: steady regional colour where nothing moved, the engine's own texture,
reset at scene cuts, never far from the frame-by-frame output.

Colourising a film frame by frame makes it flicker: the network sees each frame afresh and a
static wall comes out a slightly different hue every frame (DDColor's issues #4, #7, #35). This
stabiliser works on the frame-by-frame output alone (any engine, no optical flow).

**Why regional, and why not a per-pixel average.** The first version blended every pixel's ab
with the previous stabilised ab where the luminance held (an exponential average). On an engine
whose output has fine per-pixel colour texture (eccv16 with generated weights paints colour
noise), that average shrinks the texture's spread on the static pixels only: each frame became a
mixture of narrowed (static) and untouched (moving) colours, in proportions that change as a pan
goes on, so the colour histograms moved more than the engine's own (CDC +9% over frame by frame)
while the static pixels calmed down. Averaging two independent samples narrows their
distribution whatever the weights, so no choice of weights fixes that. The flicker that people
see, and that real engines have, is regional: a wall, the sky or the whole frame changes hue.
So the stabiliser smooths colour at the scale of regions and never touches finer texture:

1. **Scene cuts** reset everything. A cut is a jump in the luminance histogram of the source
   frames (sampled on a grid of about 16k pixels): half the L1 distance between consecutive
   frames' 64-bin L histograms (0: same, 1: disjoint) over `cut_threshold`. A slow pan moves it
   by about 0.01; a cut to another shot by 0.3 and more. The first frame of every shot starts
   from its own colours, so one shot's colours never smear into the next (All-In-One-Deflicker's
   failure on DDColor, its issue #33). A missed cut costs little: across a cut almost every
   pixel's luminance changes, so step 2 gives the old colours no weight there anyway, and step 4
   bounds the rest.
2. **Regions**: the frame is cut into square cells, `regions` of them across its short side
   (8x8 pixels at 160x96, 90x90 at 1920x1080: the scale follows the picture, as an engine's own
   colour resolution does). Each cell's mean ab is the region's colour; what the frame has
   around that mean inside the cell is its texture.
3. **Within a shot** each region's colour follows an exponential average over time, weighted by
   how little the source luminance changed there: w = strength * mean over the cell's pixels of
   exp(-(dL / sigma)^2), dL the change of the *source* luminance (no engine touches it). Where
   nothing moved (w = strength) the region's colour is held; where something moved (w ~ 0) it
   follows the new frame; a cell that is half moving is half held. The frame is then the
   engine's own ab plus, at every pixel, the difference between the stabilised and the frame's
   own regional colour (bilinear between cell centres, so no block edges): every pixel of a
   region moves by nearly the same amount, and the texture inside it, its spread and its shape,
   is exactly the engine's. Measured on eccv16's noise: CDC within 1% of frame by frame instead
   of +9%; on engines that flicker regionally (the jitter engine, ddcolor-tiny) CDC -25 to -50%.
4. **Warm start**: the first frame of a shot has no past, and showing it as the engine made it
   while the next ones are averaged would make a jump at frame two. So where a shot starts
   inside a batch, the same average first runs backwards over up to `warmup` of the shot's
   following frames in that batch (on the regional colours only), and the first frame starts
   from that state.
5. **The bound**: the stabilised ab never differs from the frame's own ab by more than `bound`
   (Euclidean, in Lab ab units: 12 by default), clamped per pixel, however long the shot. The
   result cannot drift away from what the engine said about this frame. (After the conversion
   back to 8-bit RGB, rounding and gamut clipping add at most a few units:
   tests/video/test_stabilize.py measures.)

What it does not do: per-pixel texture that changes from frame to frame while the luminance
holds (an engine painting noise) is left as it is. Holding it is possible only by departing from
the engine's colour by as much as the noise itself (on eccv16's generated weights, about 35 ab
units from frame to frame, three times the bound): its CDC falls by a clear margin only when a
held pixel may stray about 100 ab units from the engine's colour (docs/video.md, "Temporal
consistency", measures the alternatives).

Memory: the state is the previous source frame's L (float32, 4 bytes per pixel, `state_bytes`)
and each region's colour (8 bytes per cell); the work on one frame (`working_bytes`) is
measured. The caller reserves both before the first frame. The batch itself is the caller's:
results replace the colourised frames one by one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from service.imaging.lab import lab_to_rgb, rgb_to_lab, to_tensor, to_uint8

_CPU = torch.device("cpu")

STATE_BYTES_PER_PIXEL = 4
"""float32 L of the previous source frame (the regional colours, 8 bytes a cell, come on top)."""
WORKING_BYTES_PER_PIXEL = 104
"""One frame's float32 RGB and Lab (of the output and of the source, with rgb_to_lab's
temporaries), the weights, the offset and its norm, lab_to_rgb's temporaries and the uint8
result. Measured: a peak of 103 B/px of live tensors, the new state included, forwards and in a
warm start (tests/video/test_stabilize.py checks the bound and that it is not loose)."""
_CUT_SAMPLES = 16384
"""Pixels the cut detector samples per frame (a regular grid): histograms need no more."""


@dataclass(frozen=True)
class StabilizerSettings:
    """The stabiliser's knobs (defaults measured on the generated clips; docs/video.md)."""

    strength: float = 0.85
    """Largest weight of the previous colour (0: off; in a still region the colour is an
    exponential average over about 1 / (1 - strength) frames)."""
    sigma: float = 4.0
    """Luminance change (L units, 0-100) at which a pixel's weight has fallen to 1/e of
    `strength`; video noise after compression moves L by about 1."""
    bound: float = 12.0
    """Most the stabilised ab may differ from the frame's own ab (Euclidean ab units)."""
    regions: int = 12
    """Cells across the frame's short side: their mean colour is what is stabilised, finer
    texture is the engine's own (at least 2 pixels a cell)."""
    cut_threshold: float = 0.25
    """Histogram distance (0-1) above which two frames are in different shots. Measured on the
    generated clips: at most 0.012 between frames of a pan, 0.37-0.43 at a cut."""
    bins: int = 64
    warmup: int = 4
    """Following frames of a shot the backward warm start runs over (0: none)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength < 1.0:
            raise ValueError(f"strength must be in [0, 1), got {self.strength}")
        if self.sigma <= 0 or self.bound < 0 or not 0 < self.cut_threshold <= 1:
            raise ValueError("sigma must be > 0, bound >= 0 and cut_threshold in (0, 1]")
        if self.warmup < 0 or self.regions < 1:
            raise ValueError("warmup must be >= 0 and regions >= 1")

    def cell(self, width: int, height: int) -> int:
        """The side in pixels of a region of a width x height frame."""
        return max(2, math.ceil(min(width, height) / self.regions))


def _lightness(rgb: np.ndarray) -> torch.Tensor:
    # A copy: a view would keep the whole Lab frame (8 more bytes a pixel) alive in the state.
    return rgb_to_lab(to_tensor(rgb, _CPU))[0].clone()


class SceneCutDetector:
    """Says whether a frame starts a new shot, from its luminance histogram alone."""

    def __init__(self, bins: int = 64, threshold: float = 0.25) -> None:
        self.bins = bins
        self.threshold = threshold
        self.last_distance = 0.0
        self._previous: torch.Tensor | None = None

    def reset(self) -> None:
        self._previous = None

    def is_cut(self, rgb: np.ndarray) -> bool:
        """True for the first frame and for one whose histogram jumped; remembers this one."""
        step = max(1, math.isqrt(rgb.shape[0] * rgb.shape[1] // _CUT_SAMPLES))
        histogram = torch.histc(_lightness(rgb[::step, ::step]), self.bins, min=0.0, max=100.0)
        histogram /= histogram.sum().clamp_min(1.0)
        previous, self._previous = self._previous, histogram
        if previous is None:
            self.last_distance = 1.0
            return True
        self.last_distance = 0.5 * float((histogram - previous).abs().sum())
        return self.last_distance > self.threshold


class ChromaStabilizer:
    """Stabilises frame-by-frame colourised RGB frames, batch by batch, in order."""

    def __init__(self, settings: StabilizerSettings = StabilizerSettings()) -> None:
        self.settings = settings
        self.cuts = SceneCutDetector(settings.bins, settings.cut_threshold)
        self.shots = 0
        """Shots seen so far (the first frame starts one)."""
        self._lightness: torch.Tensor | None = None
        self._regions: torch.Tensor | None = None
        """(2, rows, columns): the stabilised mean ab of each cell of the previous frame."""

    @staticmethod
    def state_bytes(width: int, height: int) -> int:
        """What the stabiliser keeps between frames of width x height: the source L, and the
        regional colours (8 bytes a cell of at least 2x2 pixels: at most 2 bytes a pixel)."""
        return STATE_BYTES_PER_PIXEL * width * height + 2 * width * height

    @staticmethod
    def working_bytes(width: int, height: int) -> int:
        """What stabilising one frame of width x height allocates while it runs."""
        return WORKING_BYTES_PER_PIXEL * width * height

    def reset(self) -> None:
        self.cuts.reset()
        self._lightness = self._regions = None

    def stabilize(self, colored: list[np.ndarray], sources: Sequence[np.ndarray]) -> None:
        """Replace each frame of `colored` (the engine's RGB uint8 output for `sources`, the
        frames it was given) by its stabilised version, in place and in order."""
        if len(colored) != len(sources):
            raise ValueError(f"{len(colored)} colourised frames for {len(sources)} sources")
        starts = [self.cuts.is_cut(source) for source in sources]
        for i, source in enumerate(sources):
            if starts[i] or self._regions is None:
                self.shots += 1
                end = i + 1
                while end < len(sources) and end <= i + self.settings.warmup and not starts[end]:
                    end += 1
                self._start_shot(colored[i + 1 : end], sources[i + 1 : end])
            colored[i] = self._next(colored[i], source)

    def __call__(self, rgb: np.ndarray, source: np.ndarray) -> np.ndarray:
        """One frame's stabilised version (no warm start: no following frames are known)."""
        batch = [rgb]
        self.stabilize(batch, [source])
        return batch[0]

    def _cell(self, frame: torch.Tensor) -> int:
        return self.settings.cell(frame.shape[-1], frame.shape[-2])

    def _mean(self, values: torch.Tensor, cell: int) -> torch.Tensor:
        """(C, H, W) -> (C, rows, columns): the mean of each cell (edge cells are smaller)."""
        pooled = F.avg_pool2d(values[None], cell, ceil_mode=True, count_include_pad=False)
        return pooled[0]

    def _weight(self, lightness: torch.Tensor, held: torch.Tensor, cell: int) -> torch.Tensor:
        """Per cell, the weight of the held colour: the mean over its pixels of how little the
        source luminance changed, times `strength`."""
        change = (lightness - held).div_(self.settings.sigma)
        return self._mean(change.square_().neg_().exp_()[None], cell).mul_(self.settings.strength)

    def _start_shot(self, following: Sequence[np.ndarray], sources: Sequence[np.ndarray]) -> None:
        """A new shot: no past. Its regional colours start from an average run backwards over
        the shot's `following` frames of this batch (none: the first frame's own)."""
        self._lightness = self._regions = None
        for rgb, source in zip(reversed(following), reversed(sources), strict=True):
            ab = rgb_to_lab(to_tensor(rgb, _CPU))[1:]
            lightness = _lightness(source)
            cell = self._cell(ab)
            own = self._mean(ab, cell)
            if self._regions is not None and self._lightness is not None:
                own = torch.lerp(own, self._regions, self._weight(lightness, self._lightness, cell))
            self._regions, self._lightness = own, lightness

    def _next(self, rgb: np.ndarray, source: np.ndarray) -> np.ndarray:
        s = self.settings
        lab = rgb_to_lab(to_tensor(rgb, _CPU))
        ab = lab[1:]
        lightness = _lightness(source)
        cell = self._cell(ab)
        own = self._mean(ab, cell)
        if self._regions is None or self._lightness is None:
            # The first frame of a shot with nothing after it in this batch: as the engine made it.
            self._lightness, self._regions = lightness, own
            return rgb
        regions = torch.lerp(own, self._regions, self._weight(lightness, self._lightness, cell))
        self._lightness, self._regions = lightness, regions
        # Every pixel moves by its region's change of colour (bilinear between cell centres):
        # the texture inside a region stays the engine's own.
        offset = F.interpolate(
            (regions - own)[None], size=ab.shape[1:], mode="bilinear", align_corners=False
        )[0]
        # The bound: scale each pixel's departure from this frame's own ab down to `bound`.
        norm = torch.linalg.vector_norm(offset, dim=0).clamp_min_(1e-6)
        offset.mul_((s.bound / norm).clamp_max_(1.0))
        del norm
        lab[1:] += offset
        del offset
        return to_uint8(lab_to_rgb(lab))
