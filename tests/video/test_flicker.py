"""The flicker metrics: CDC exactly as TCVC computes it, and |delta ab| on static pixels."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from service.imaging.lab import lab_to_rgb, to_uint8
from service.video import CdcMeter, StaticAbMeter, cdc, static_delta_ab


def tcvc_cdc(frames: list[np.ndarray]) -> float:
    """TCVC's codes/compute_hist.py, transcribed: per-channel 256-bin histograms over H*W,
    scipy's JS divergence, mean over pairs, then channels, then dilations 1, 2, 4."""

    def js(p: np.ndarray, q: np.ndarray) -> float:
        m = (p + q) / 2
        return float(0.5 * scipy.stats.entropy(p, m) + 0.5 * scipy.stats.entropy(q, m))

    def at(dilation: int) -> float:
        hists = [
            [np.bincount(f[:, :, c].ravel(), minlength=256) / (f.shape[0] * f.shape[1])]
            for f in frames
            for c in range(3)
        ]
        per_channel = []
        for c in range(3):
            channel = [h[0] for h in hists[c::3]]
            pairs = [js(channel[i], channel[i + dilation]) for i in range(len(channel) - dilation)]
            per_channel.append(np.mean(pairs))
        return float(np.mean(per_channel))

    return float(np.mean([at(d) for d in (1, 2, 4)]))


def noise_frames(count: int, drift: float) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [
        np.clip(rng.normal(110 + drift * i, 35, (36, 48, 3)), 0, 255).astype(np.uint8)
        for i in range(count)
    ]


@pytest.mark.parametrize("drift", [0.0, 4.0])
def test_cdc_is_tcvcs(drift: float) -> None:
    frames = noise_frames(9, drift)
    assert cdc(frames) == pytest.approx(tcvc_cdc(frames), rel=1e-9)


def test_cdc_is_zero_for_a_still_and_grows_with_flicker() -> None:
    still = [noise_frames(1, 0)[0]] * 6
    assert cdc(still) == 0.0
    assert 0 < cdc(noise_frames(6, 1.0)) < cdc(noise_frames(6, 6.0))


def test_a_clip_shorter_than_a_dilation_leaves_it_out() -> None:
    frames = noise_frames(3, 2.0)
    meter = CdcMeter()
    for f in frames:
        meter.add(f)
    assert meter.value == pytest.approx(np.mean([cdc(frames, (1,)), cdc(frames, (2,))]))


def lab_frame(lightness: np.ndarray, a: float, b: float) -> np.ndarray:
    """RGB uint8 of a picture with this L and one colour (a, b) everywhere."""
    plane = torch.from_numpy(lightness)
    lab = torch.stack((plane, torch.full_like(plane, a), torch.full_like(plane, b)))
    return to_uint8(lab_to_rgb(lab))


def test_static_delta_ab_counts_only_pixels_whose_luminance_held() -> None:
    lightness = np.full((32, 32), 60.0, dtype=np.float32)
    moved = lightness.copy()
    moved[:, 16:] = 30.0  # half the picture changes brightness (and colour, below)
    first = lab_frame(lightness, 10.0, 20.0)
    second = lab_frame(lightness, 16.0, 28.0)  # |delta ab| = 10 everywhere
    second[:, 16:] = lab_frame(moved, -30.0, 50.0)[:, 16:]
    meter = StaticAbMeter()
    meter.add(first)
    meter.add(second)
    assert meter.pixels == 32 * 16
    assert meter.value == pytest.approx(10.0, abs=0.6)  # 8-bit rounding of the two colours
    assert static_delta_ab([first, first, first]) == 0.0
