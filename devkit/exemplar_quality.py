"""PSNR of the exemplar engine against the true colours, on photo pairs bundled with scikit-image.

`python -m bench.exemplar_quality` prints the Markdown table shown in docs/exemplar.md, and
tests/engines/test_exemplar.py checks the engine and that table with this module, so the table
and the test measure one thing.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from devkit.photos import DATA_DIR
from service.engines.base import ColorizeRequest
from service.engines.colour_transfer import (
    SOFT_MATCH,
    WELSH_2002,
    TransferOptions,
    lab_to_rgb_in_gamut,
)
from service.engines.exemplar import ExemplarEngine
from service.imaging.lab import lab_to_rgb, rgb_to_lab

REDUCE = 2
"""Photos are averaged over REDUCE x REDUCE blocks first: a quarter of the pixels keeps the suite
fast; baseline, ours and the 2002 recipe rank the same as at full size (checked once)."""

NO_POSITION = dataclasses.replace(SOFT_MATCH, position_weight=0.0)
"""Ablation: our defaults without the vertical-position feature."""

Crop = Callable[[np.ndarray], np.ndarray]


def _whole(image: np.ndarray) -> np.ndarray:
    return image


def _left(image: np.ndarray) -> np.ndarray:
    return image[:, : image.shape[1] // 2]


def _right(image: np.ndarray) -> np.ndarray:
    return image[:, image.shape[1] // 2 :]


@dataclass(frozen=True)
class Pair:
    """A target whose true colours are known and a reference showing the same scene in colour."""

    name: str
    target_file: str
    target_crop: Crop
    reference_file: str
    reference_crop: Crop
    description: str

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """(true-colour target, reference), RGB uint8."""
        return (
            self.target_crop(photo(self.target_file)),
            self.reference_crop(photo(self.reference_file)),
        )


PAIRS = (
    Pair(
        "motorcycle",
        "motorcycle_left.png",
        _whole,
        "motorcycle_right.png",
        _whole,
        "stereo pair: left view coloured from the right view",
    ),
    Pair(
        "astronaut",
        "astronaut.png",
        _left,
        "astronaut.png",
        _right,
        "left half coloured from the right half",
    ),
    Pair("coffee", "coffee.png", _left, "coffee.png", _right, "left half from the right half"),
    Pair("chelsea", "chelsea.png", _left, "chelsea.png", _right, "left half from the right half"),
    Pair("rocket", "rocket.jpg", _left, "rocket.jpg", _right, "left half from the right half"),
)


@dataclass(frozen=True)
class Row:
    """PSNR (dB) of each method on one pair, and our engine's wall time."""

    pair: str
    baseline: float
    ours: float
    no_position: float
    welsh: float
    seconds: float


def photo(name: str) -> np.ndarray:
    """A bundled scikit-image photo as RGB uint8, reduced by REDUCE."""
    with Image.open(DATA_DIR / name) as im:
        return np.array(im.convert("RGB").reduce(REDUCE))


def psnr(image: np.ndarray, truth: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two RGB uint8 images, in dB."""
    mse = np.mean((image.astype(np.float64) - truth.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def grayscale(rgb: np.ndarray) -> np.ndarray:
    """The image a user would upload: its CIE L only, as gray RGB uint8."""
    lab = rgb_to_lab(torch.tensor(rgb).permute(2, 0, 1).double() / 255.0)
    lab[1:] = 0.0
    gray = lab_to_rgb(lab).mul(255.0).round().to(torch.uint8)
    return gray.permute(1, 2, 0).numpy()


def mean_chroma(target: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The baseline: the target's luminance with the reference's mean chroma everywhere."""
    lab = rgb_to_lab(torch.tensor(target).permute(2, 0, 1).double() / 255.0)
    ref = rgb_to_lab(torch.tensor(reference).permute(2, 0, 1).double() / 255.0)
    lab[1:] = ref[1:].mean(dim=(1, 2), keepdim=True)
    # The engine's own conversion, so both keep the target's L where the chroma does not fit.
    rgb = lab_to_rgb_in_gamut(lab).mul(255.0).round().to(torch.uint8)
    return rgb.permute(1, 2, 0).numpy()


def colorize(
    target: np.ndarray, reference: np.ndarray, options: TransferOptions = SOFT_MATCH
) -> np.ndarray:
    """The exemplar engine on CPU with `options`."""
    engine = ExemplarEngine(torch.device("cpu"), options)
    engine.load()
    return engine.run([ColorizeRequest(image=target, reference=reference)])[0]


def evaluate(pair: Pair) -> Row:
    """PSNR of the baseline, our engine, it without position prior and the 2002 recipe."""
    truth, reference = pair.load()
    gray = grayscale(truth)
    started = time.perf_counter()
    ours = colorize(gray, reference)
    seconds = time.perf_counter() - started
    return Row(
        pair=pair.name,
        baseline=psnr(mean_chroma(gray, reference), truth),
        ours=psnr(ours, truth),
        no_position=psnr(colorize(gray, reference, NO_POSITION), truth),
        welsh=psnr(colorize(gray, reference, WELSH_2002), truth),
        seconds=seconds,
    )


TABLE_HEADER = (
    "| pair | target / reference | baseline | ours | ours, no position | Welsh 2002 |\n"
    "| --- | --- | ---: | ---: | ---: | ---: |"
)
COLUMNS = ("baseline", "ours", "no_position", "welsh")


def markdown_table(rows: list[Row]) -> str:
    """The docs table: one line per pair."""
    described = {p.name: p.description for p in PAIRS}
    lines = [TABLE_HEADER]
    for r in rows:
        lines.append(
            f"| {r.pair} | {described[r.pair]} | {r.baseline:.2f} | {r.ours:.2f} "
            f"| {r.no_position:.2f} | {r.welsh:.2f} |"
        )
    return "\n".join(lines)


def parse_table(markdown: str) -> dict[str, dict[str, float]]:
    """PSNR per pair and column from a document containing `markdown_table`'s output."""
    names = {p.name for p in PAIRS}
    found: dict[str, dict[str, float]] = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 + len(COLUMNS) and cells[0] in names:
            found[cells[0]] = {c: float(v) for c, v in zip(COLUMNS, cells[2:], strict=True)}
    return found
