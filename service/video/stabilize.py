"""Temporal consistency: hold the colour of what does not move, reset at scene cuts, stay close.

Colourising a film frame by frame makes it flicker: the network sees each frame afresh and a
static wall comes out a slightly different hue every frame (DDColor's issues #4, #7, #35). This
stabiliser works on the frame-by-frame output alone (any engine, no optical flow):

1. **Scene cuts** reset everything. A cut is a jump in the luminance histogram of the source
   frames (sampled on a grid of about 16k pixels): half the L1 distance between consecutive
   frames' 64-bin L histograms (0: same,
   1: disjoint) over `cut_threshold`. A slow pan moves it by about 0.01; a cut to another shot by
   0.3 and more. The first frame of every shot is the frame-by-frame output, unchanged, so one
   shot's colours never smear into the next (All-In-One-Deflicker's failure on DDColor, its
   issue #33). A missed cut costs little: across a cut almost every pixel's luminance changes,
   so step 2 gives the old colours no weight there anyway, and step 4 bounds the rest.
2. **Within a shot**, each pixel's ab is blended with the previous *stabilised* ab, weighted by
   how little its source luminance changed: w = strength * exp(-(dL / sigma)^2). Where L did
   not move (dL ~ 0) the colour is held (w = strength, an exponential average over the shot);
   where something moved (dL >> sigma) the colour follows the new frame (w ~ 0).
3. **Warm start**: the first frame of a shot has no past, and showing it as the engine made it
   while the next ones are averaged makes a jump at frame two (a noisy engine's output is
   visibly calmer from there on). So where a shot starts inside a batch, the same blend first
   runs backwards over up to `warmup` of the shot's following frames in that batch, and the
   first frame starts from that state. (Measured on eccv16 with generated weights, whose output
   is per-pixel colour noise: CDC +68% over frame by frame without the warm start, +3% with it.)
4. **The bound**: the stabilised ab never differs from this frame's own ab by more than `bound`
   (Euclidean, in Lab ab units), clamped per pixel. However long a shot, the result cannot drift
   away from what the engine said about this frame. (After the conversion back to 8-bit RGB,
   rounding and gamut clipping add at most a few units: tests/video/test_stabilize.py measures.)

Memory: the state is one previous frame's L and stabilised ab, float32, 12 bytes per pixel
(`state_bytes`), plus a 64-bin histogram. The work on one frame (forwards or backwards) needs
`working_bytes`; the caller reserves both before the first frame. The batch itself is the
caller's: results replace the colourised frames one by one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from service.imaging.lab import lab_to_rgb, rgb_to_lab, to_tensor, to_uint8

_CPU = torch.device("cpu")

STATE_BYTES_PER_PIXEL = 12
"""float32 L (4) and stabilised a, b (8) of the previous frame."""
WORKING_BYTES_PER_PIXEL = 144
"""One frame's float32 RGB and Lab (of the output and of the source), the weights, the blend,
lab_to_rgb's temporaries and the uint8 result, and during a warm start the next frame's L.
Measured: a peak of 123 B/px of live tensors beyond the state held before, plus the 3 B/px
result (tests/video/test_stabilize.py checks the bound and that it is not loose)."""
_CUT_SAMPLES = 16384
"""Pixels the cut detector samples per frame (a regular grid): histograms need no more."""


@dataclass(frozen=True)
class StabilizerSettings:
    """The stabiliser's knobs (defaults measured on the generated clips; docs/video.md)."""

    strength: float = 0.85
    """Largest weight of the previous colour (0: off; on a still shot the colour is an
    exponential average over about 1 / (1 - strength) frames)."""
    sigma: float = 4.0
    """Luminance change (L units, 0-100) at which the weight has fallen to 1/e of `strength`;
    video noise after compression moves L by about 1."""
    bound: float = 12.0
    """Most the stabilised ab may differ from the frame's own ab (Euclidean ab units)."""
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
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")


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
        self._ab: torch.Tensor | None = None

    @staticmethod
    def state_bytes(width: int, height: int) -> int:
        """What the stabiliser keeps between frames of width x height."""
        return STATE_BYTES_PER_PIXEL * width * height

    @staticmethod
    def working_bytes(width: int, height: int) -> int:
        """What stabilising one frame of width x height allocates while it runs."""
        return WORKING_BYTES_PER_PIXEL * width * height

    def reset(self) -> None:
        self.cuts.reset()
        self._lightness = self._ab = None

    def stabilize(self, colored: list[np.ndarray], sources: Sequence[np.ndarray]) -> None:
        """Replace each frame of `colored` (the engine's RGB uint8 output for `sources`, the
        frames it was given) by its stabilised version, in place and in order."""
        if len(colored) != len(sources):
            raise ValueError(f"{len(colored)} colourised frames for {len(sources)} sources")
        starts = [self.cuts.is_cut(source) for source in sources]
        for i, source in enumerate(sources):
            if starts[i] or self._ab is None:
                self.shots += 1
                end = i + 1
                while end < len(sources) and end <= i + self.settings.warmup and not starts[end]:
                    end += 1
                colored[i] = self._start_shot(colored[i:end], sources[i:end])
            else:
                colored[i] = self._next(colored[i], source)

    def __call__(self, rgb: np.ndarray, source: np.ndarray) -> np.ndarray:
        """One frame's stabilised version (no warm start: no following frames are known)."""
        batch = [rgb]
        self.stabilize(batch, [source])
        return batch[0]

    def _blend(
        self,
        ab: torch.Tensor,
        lightness: torch.Tensor,
        held_ab: torch.Tensor,
        held_lightness: torch.Tensor,
    ) -> torch.Tensor:
        s = self.settings
        change = (lightness - held_lightness).div_(s.sigma)
        weight = change.square_().neg_().exp_().mul_(s.strength)
        blended = torch.lerp(ab, held_ab, weight)
        # The bound: scale each pixel's departure from this frame's own ab down to `bound`.
        departure = blended.sub_(ab)
        norm = torch.linalg.vector_norm(departure, dim=0).clamp_min_(1e-6)
        departure.mul_((s.bound / norm).clamp_max_(1.0))
        return departure.add_(ab)

    def _next(self, rgb: np.ndarray, source: np.ndarray) -> np.ndarray:
        assert self._ab is not None and self._lightness is not None
        lab = rgb_to_lab(to_tensor(rgb, _CPU))
        lightness = _lightness(source)
        stabilised = self._blend(lab[1:], lightness, self._ab, self._lightness)
        self._lightness, self._ab = lightness, stabilised
        return to_uint8(lab_to_rgb(torch.cat((lab[:1], stabilised))))

    def _start_shot(
        self, colored: Sequence[np.ndarray], sources: Sequence[np.ndarray]
    ) -> np.ndarray:
        """The first frame of a shot, from a state run backwards over the frames after it."""
        last = len(colored) - 1
        held_ab = rgb_to_lab(to_tensor(colored[last], _CPU))[1:]
        held_lightness = _lightness(sources[last])
        lab = None
        for j in range(last - 1, -1, -1):
            lab = rgb_to_lab(to_tensor(colored[j], _CPU))
            lightness = _lightness(sources[j])
            held_ab = self._blend(lab[1:], lightness, held_ab, held_lightness)
            held_lightness = lightness
        self._lightness = held_lightness
        # A view of the first frame's Lab when nothing followed: copied, as in _lightness.
        self._ab = held_ab.clone() if lab is None else held_ab
        if lab is None:
            return colored[0]  # nothing after it to warm up on: as the engine made it
        return to_uint8(lab_to_rgb(torch.cat((lab[:1], held_ab))))
