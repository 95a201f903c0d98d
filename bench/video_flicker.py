"""Flicker of video results, frame by frame against stabilised, per engine (issue 21, item 3).

Run: `python -m bench.video_flicker [engine ...] [--frames N]` (CPU, about 4 minutes for the
default four engines). Engines: jitter (devkit's deterministic flickering engine), exemplar
(one reference for the whole film), eccv16, siggraph17 and ddcolor-tiny with generated weights
(no download; seeded and calibrated, see devkit/checkpoints.py). Each engine colours every
frame once; both results are then made from those same colours by colorize_video, stabilize off
and on, and measured on the decoded MP4s: CDC (TCVC's, lower is steadier) and the mean
|delta ab| of pixels whose luminance held.

The clip: a pan across the astronaut, a cut at two thirds to a pan across the coffee, 160x96.
Updates bench/results/cpu-2core/video_flicker.json (one row per engine) and prints each row.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import av
import numpy as np
import torch

from bench.servers import make_weights
from devkit.clips import make_clip, with_spec
from devkit.engines import JitterEngine
from devkit.photos import photo
from service.engines.base import ColorizeRequest, Engine
from service.video import VideoLimits, cdc, colorize_video, probe, static_delta_ab

RESULTS = Path(__file__).parent / "results" / "cpu-2core" / "video_flicker.json"
CPU = torch.device("cpu")


def build(name: str, weights: Path) -> Engine:
    if name == "jitter":
        return JitterEngine(CPU)
    from service.engines.registry import create_engine

    if name != "exemplar":
        make_weights(weights, [name])
    engine = create_engine(name, CPU, weights)
    engine.load()
    return engine


def frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as video:
        return [f.to_ndarray(format="rgb24") for f in video.decode(video=0)]


def measure(name: str, frames: int, directory: Path) -> dict[str, object]:
    engine = build(name, directory / "weights")
    reference = photo("astronaut.png")[::4, ::4].copy() if name == "exemplar" else None
    kept: dict[bytes, np.ndarray] = {}
    seconds = 0.0

    def colorize(images: list[np.ndarray]) -> list[np.ndarray]:
        nonlocal seconds
        missing = [i for i in images if i.tobytes() not in kept]
        started = time.monotonic()
        outputs = engine.run([ColorizeRequest(i, reference=reference) for i in missing])
        seconds += time.monotonic() - started
        kept.update((i.tobytes(), o) for i, o in zip(missing, outputs, strict=True))
        return [kept[i.tobytes()].copy() for i in images]

    spec = with_spec(frames=frames, cut_at=frames * 2 // 3)
    source = make_clip(directory / f"{name}-source.mp4", spec)
    info = probe(source, VideoLimits())
    row: dict[str, object] = {"engine": name, "frames": frames, "size": "160x96"}
    for stabilize in (False, True):
        target = directory / f"{name}-{stabilize}.mp4"
        colorize_video(
            source, target, info, colorize, batch=8, stabilize=stabilize,
            reserve=lambda n, purpose: nullcontext(),
        )  # fmt: skip
        result = frames_of(target)
        key = "stabilised" if stabilize else "frame_by_frame"
        row[key] = {
            "cdc": round(cdc(result), 5),
            "static_delta_ab": round(static_delta_ab(result), 3),
        }
    row["engine_seconds_per_frame"] = round(seconds / frames, 3)
    return row


def main() -> None:
    args = sys.argv[1:]
    frames = 48
    if "--frames" in args:
        at = args.index("--frames")
        frames = int(args[at + 1])
        del args[at : at + 2]
    names = args or ["jitter", "exemplar", "eccv16", "ddcolor-tiny"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            row = measure(name, frames, Path(tmp))
            rows.append(row)
            print(json.dumps(row), flush=True)
    # Rows of engines not measured this time are kept: one file holds every engine's figures.
    kept = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    merged = [r for r in kept if r["engine"] not in names] + rows
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(merged, indent=2) + "\n")


if __name__ == "__main__":
    main()
