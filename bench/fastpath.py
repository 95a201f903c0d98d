"""Measure the fast-path steps: forward time and difference from float32, per network and variant.

Run: `python -m bench.fastpath [--device cpu|cuda] [--repeats N] [--out DIR]`. Variants: fp32,
channels_last, reduced precision (bf16 on CPU; fp16 and bf16 on CUDA), and both. Timings are
medians of interleaved repeats (one of each variant per round, so drift in machine load hits all
alike); differences are in ab (Lab) units against fp32 on the probe image and two bundled photos,
with the tolerance the engines apply at load (service/engines/fast.py).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.inputs import data_dir
from devkit.checkpoints import make_random_network
from service.engines import fixed
from service.engines.fast import TOLERANCE, FastPath, Tolerance, precision_error, probe_lightness

NO_LIMIT = Tolerance(math.inf, math.inf)
PHOTOS = ("astronaut.png", "coffee.png")


def photos_lightness(device: torch.device) -> torch.Tensor:
    """L at 256x256 of two bundled photos, pre-processed as the engines do."""
    from PIL import Image

    batch = []
    for name in PHOTOS:
        with Image.open(data_dir() / name) as im:
            batch.append(fixed._resize_rgb(np.asarray(im.convert("RGB"))))
    return fixed._lightness(torch.from_numpy(np.stack(batch))).to(device)


Forward = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def forward_of(model: str) -> Forward:
    """The network's forward pass on L alone (siggraph17: no hints)."""

    def forward(network: nn.Module, lightness: torch.Tensor) -> torch.Tensor:
        if model == "siggraph17":
            n, _, h, w = lightness.shape
            zeros = lightness.new_zeros
            out: torch.Tensor = network(lightness, zeros(n, 2, h, w), zeros(n, 1, h, w))
            return out
        out = network(lightness)
        return out

    return forward


def variants(device: torch.device) -> dict[str, FastPath]:
    reduced = ["bf16"] if device.type == "cpu" else ["fp16", "bf16"]
    table = {"fp32": FastPath(), "channels_last": FastPath(channels_last=True)}
    for precision in reduced:
        table[precision] = FastPath(precision=precision, tolerance=NO_LIMIT)  # type: ignore[arg-type]
        table[f"{precision}+channels_last"] = FastPath(
            precision=precision,  # type: ignore[arg-type]
            channels_last=True,
            tolerance=NO_LIMIT,
        )
    return table


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model: str, device: torch.device, repeats: int) -> dict[str, Any]:
    forward = forward_of(model)
    base = make_random_network(model).to(device).eval()
    probe = probe_lightness().to(device)
    photos = photos_lightness(device)
    single = photos[:1]
    prepared = {}
    for name, fast in variants(device).items():
        prepared[name] = fast.prepare(copy.deepcopy(base), device, forward)
    rows: dict[str, dict[str, Any]] = {}
    with torch.inference_mode():
        reference = {"probe": forward(base, probe), "photos": forward(base, photos)}
        for name, acc in prepared.items():
            with acc.autocast():
                got = {"probe": forward(acc.network, probe), "photos": forward(acc.network, photos)}
            errors = {k: precision_error(reference[k], got[k]) for k in got}
            rows[name] = {
                "precision": acc.precision,
                "error_probe": asdict(errors["probe"]),
                "error_photos": asdict(errors["photos"]),
                "within_tolerance": TOLERANCE.admits(errors["probe"])
                and TOLERANCE.admits(errors["photos"]),
                "times_s": [],
            }
            with acc.autocast():  # warm-up: kernels, oneDNN primitives, cuDNN plans
                forward(acc.network, single)
        for _ in range(repeats):
            for name, acc in prepared.items():
                _sync(device)
                started = time.perf_counter()
                with acc.autocast():
                    forward(acc.network, single)
                _sync(device)
                rows[name]["times_s"].append(time.perf_counter() - started)
    fp32 = statistics.median(rows["fp32"]["times_s"])
    for row in rows.values():
        row["median_s"] = statistics.median(row["times_s"])
        row["speedup_vs_fp32"] = fp32 / row["median_s"]
    return rows


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Forward pass, one 256x256 image, {result['device']}, median of {result['repeats']} "
        f"interleaved repeats; difference from fp32 in ab units (tolerance: mean <= "
        f"{TOLERANCE.mean_ab}, p99 <= {TOLERANCE.p99_ab}).",
        "",
        "| network | variant | forward s | speed-up | probe mean / p99 | photos mean / p99 "
        "| within tolerance |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for model, rows in result["networks"].items():
        for name, row in rows.items():
            probe, photos = row["error_probe"], row["error_photos"]
            lines.append(
                f"| {model} | {name} | {row['median_s']:.2f} | {row['speedup_vs_fp32']:.2f}x "
                f"| {probe['mean_ab']:.3f} / {probe['p99_ab']:.2f} "
                f"| {photos['mean_ab']:.3f} / {photos['p99_ab']:.2f} "
                f"| {'yes' if row['within_tolerance'] else 'no'} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", default="eccv16,siggraph17")
    parser.add_argument("--out", type=Path, help="directory for fastpath.json and fastpath.md")
    args = parser.parse_args()
    device = torch.device(args.device)
    result: dict[str, Any] = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "networks": {m: measure(m, device, args.repeats) for m in args.models.split(",")},
    }
    table = markdown(result)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "fastpath.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "fastpath.md").write_text(table)


if __name__ == "__main__":
    main()
