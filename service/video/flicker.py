"""Flicker, measured: CDC and the mean ab change where the luminance did not change.

- **CDC** (colour distribution consistency), exactly as TCVC computes it (Liu et al., "Temporally
  Consistent Video Colorization with Deep Feature Propagation and Self-regularization Learning";
  `codes/compute_hist.py` and `eval_results.py`): for each of the three RGB channels a 256-bin
  histogram normalised by the pixel count; the Jensen-Shannon divergence (natural log, as
  `scipy.stats.entropy`) between frames t and t + d; its mean over t and over the channels; and
  the mean over the dilations d = 1, 2, 4 with equal weights. Lower is steadier; 0 is a still.
  A dilation longer than the clip has no pairs and is left out of the mean.
- **Static |delta ab|**: between consecutive frames, the mean Euclidean distance of the CIELAB
  (a, b) of the pixels whose L changed by less than `threshold` (L units, 0-100): colour that
  moved where nothing else did. Pixel-weighted over the whole clip.

Both meters take frames one at a time and keep only what the next frame needs (four histograms;
one frame's L and ab), so a film of any length can be measured in a bounded memory.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import numpy as np
import torch

from service.imaging.lab import rgb_to_lab, to_tensor

DILATIONS = (1, 2, 4)
STATIC_THRESHOLD = 1.0
"""L units: below this change a pixel counts as static."""
_CPU = torch.device("cpu")


def _histograms(rgb: np.ndarray) -> np.ndarray:
    """(3, 256) per-channel histograms of RGB uint8, each summing to 1."""
    pixels = rgb.reshape(-1, 3)
    counts = np.stack([np.bincount(pixels[:, c], minlength=256) for c in range(3)])
    return counts / pixels.shape[0]


def _js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence of each row of p and q (natural log), as TCVC's JS_divergence."""
    m = (p + q) / 2

    def kl(x: np.ndarray) -> np.ndarray:
        # scipy.stats.entropy: terms with x = 0 contribute 0; m > 0 wherever x > 0.
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(x > 0, x * np.log(x / m), 0.0)
        return np.asarray(terms.sum(axis=-1))

    return np.asarray(0.5 * kl(p) + 0.5 * kl(q))


class CdcMeter:
    """Accumulates CDC over a stream of RGB uint8 frames."""

    def __init__(self, dilations: tuple[int, ...] = DILATIONS) -> None:
        self.dilations = dilations
        self._recent: deque[np.ndarray] = deque(maxlen=max(dilations))
        self._sums = dict.fromkeys(dilations, 0.0)
        self._counts = dict.fromkeys(dilations, 0)

    def add(self, rgb: np.ndarray) -> None:
        histograms = _histograms(rgb)
        for d in self.dilations:
            if len(self._recent) >= d:
                # Mean over the three channels of this pair's divergence.
                self._sums[d] += float(_js_divergence(self._recent[-d], histograms).mean())
                self._counts[d] += 1
        self._recent.append(histograms)

    @property
    def value(self) -> float:
        """The CDC so far (0.0 before two frames)."""
        means = [self._sums[d] / self._counts[d] for d in self.dilations if self._counts[d]]
        return float(np.mean(means)) if means else 0.0


class StaticAbMeter:
    """Accumulates the mean |delta ab| over static pixels of consecutive RGB uint8 frames."""

    def __init__(self, threshold: float = STATIC_THRESHOLD) -> None:
        self.threshold = threshold
        self.total = 0.0
        self.pixels = 0
        self._previous: torch.Tensor | None = None

    def add(self, rgb: np.ndarray) -> None:
        lab = rgb_to_lab(to_tensor(rgb, _CPU))
        previous, self._previous = self._previous, lab
        if previous is None or previous.shape != lab.shape:
            return
        static = (lab[0] - previous[0]).abs() < self.threshold
        change = torch.linalg.vector_norm(lab[1:] - previous[1:], dim=0)
        self.total += float(change[static].sum())
        self.pixels += int(static.sum())

    @property
    def value(self) -> float:
        """Mean |delta ab| (ab units) over the static pixels so far (0.0 if none)."""
        return self.total / self.pixels if self.pixels else 0.0


def cdc(frames: Iterable[np.ndarray], dilations: tuple[int, ...] = DILATIONS) -> float:
    """CDC of a sequence of RGB uint8 frames (TCVC's definition; lower is steadier)."""
    meter = CdcMeter(dilations)
    for frame in frames:
        meter.add(frame)
    return meter.value


def static_delta_ab(frames: Iterable[np.ndarray], threshold: float = STATIC_THRESHOLD) -> float:
    """Mean |delta ab| between consecutive frames where L changed by less than `threshold`."""
    meter = StaticAbMeter(threshold)
    for frame in frames:
        meter.add(frame)
    return meter.value
