"""Measure a video job's memory: the decoder, libx264 and whole jobs of growing length.

Run: `python -m bench.video_memory` (CPU; a few minutes on two cores). Every measurement runs in
a fresh subprocess, as in bench/calibrate_memory.py, so that memory freed and kept by the C
allocator in one does not hide growth in the next; the peak is the kernel's RSS high-water mark
(MemoryManager.measure on the CPU backend).

- `decoder`: peak RSS growth while decoding a clip to upright RGB frames, per pixel, against
  plan.py's DECODER_* model.
- `encoder`: peak RSS growth while encoding, per pixel, for two look-aheads, against
  encode.py's encoder_bytes.
- `job`: peak RSS growth of colorize_video (a cheap tint engine, stabilised), after one short
  warm-up job, for films of 100, 1,000 and 3,000 frames of 640x360 and 100 of 1280x720: it must
  be flat in the length, and inside the plan's reservations.

Writes bench/results/cpu-2core/video_memory.json and prints it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "cpu-2core" / "video_memory.json"

_MAKE = r"""
import sys
from fractions import Fraction
import av, numpy as np
from PIL import Image
from devkit.photos import DATA_DIR
path, width, height, frames = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
photo = Image.open(DATA_DIR / "astronaut.png").convert("L").resize((width + 200, height))
photo = np.asarray(photo)
out = av.open(path, "w", format="mp4")
stream = out.add_stream("libx264", rate=25, options={"preset": "ultrafast", "crf": "23"})
stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
for i in range(frames):
    x = abs((i * 2) % 400 - 200)  # back and forth across the photo, forever
    gray = np.ascontiguousarray(photo[:, x : x + width])
    frame = av.VideoFrame.from_ndarray(np.repeat(gray[:, :, None], 3, axis=2), format="rgb24")
    out.mux(stream.encode(frame))
out.mux(stream.encode(None))
out.close()
"""

_MEASURE = r"""
import json, sys, threading
from contextlib import nullcontext
from pathlib import Path
import numpy as np, torch
from service.memory import MemoryManager
from service.video import VideoLimits, VideoMemoryPlan, colorize_video, probe
from service.video.decode import VideoSource
from service.video.encode import VideoEncoder, encoder_bytes

mode, path = sys.argv[1], Path(sys.argv[2])
lookahead = int(sys.argv[3])
limits = VideoLimits(encoder_lookahead=lookahead)
info = probe(path, limits)
manager = MemoryManager(torch.device("cpu"))
frames = []
if mode == "encoder":  # decoded beforehand, outside the measurement
    with VideoSource(path, info, limits) as source:
        frames = [(f.image, f.pts) for f in source.frames()][:60]

def tint(images):
    out = []
    for image in images:
        tinted = image.copy()
        tinted[:, :, 0] //= 2
        tinted[:, :, 2] = 255 - tinted[:, :, 2] // 2
        out.append(tinted)
    return out

torch.set_num_threads(1)
if mode == "job":
    # A short job first: code pages, thread pools and allocator arenas that a running service
    # has set up once are not this job's memory.
    warm = Path(sys.argv[4])
    colorize_video(warm, warm.with_suffix(".out.mp4"), probe(warm, limits), tint, batch=8,
                   stabilize=True, reserve=lambda n, purpose: nullcontext(), limits=limits)
with manager.measure() as m:
    if mode == "decoder":
        with VideoSource(path, info, limits) as source:
            for frame in source.frames():
                pass
        model = VideoMemoryPlan.for_video(info, 1, False, limits).decoder
    elif mode == "encoder":
        with VideoEncoder(path.with_suffix(".out.mp4"), info, [], limits) as encoder:
            for image, pts in frames:
                encoder.write(image, pts)
        model = encoder_bytes(info.width, info.height, limits)
    else:
        plan = VideoMemoryPlan.for_video(info, 8, True, limits)
        colorize_video(path, path.with_suffix(".out.mp4"), info, tint, batch=8, stabilize=True,
                       reserve=lambda n, purpose: nullcontext(), limits=limits)
        model = plan.total
print(json.dumps({"mode": mode, "width": info.width, "height": info.height, "frames": info.frames,
                  "lookahead": lookahead, "peak_bytes": m.peak_bytes, "model_bytes": model,
                  "peak_per_pixel": m.peak_bytes / info.pixels,
                  "model_over_peak": model / max(m.peak_bytes, 1)}))
"""


def _run(code: str, *args: object) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], check=True, capture_output=True, text=True
    )
    return done.stdout


def main() -> None:
    paths = [a for a in sys.argv[1:] if not a.startswith("--")]
    directory = Path(paths[0] if paths else "/tmp/video-memory-bench")
    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    only_jobs = "--jobs" in sys.argv
    for width, height in () if only_jobs else ((640, 360), (1920, 1080)):
        clip = directory / f"{width}x{height}.mp4"
        if not clip.exists():
            _run(_MAKE, clip, width, height, 60)
        rows.append(json.loads(_run(_MEASURE, "decoder", clip, 10)))
        for lookahead in (0, 10, 40):
            rows.append(json.loads(_run(_MEASURE, "encoder", clip, lookahead)))
    for (width, height), lengths in (((640, 360), (100, 1000, 3000)), ((1280, 720), (100,))):
        warm = directory / f"warm-{width}x{height}.mp4"
        if not warm.exists():
            _run(_MAKE, warm, width, height, 16)
        for frames in lengths:
            clip = directory / f"film-{width}x{height}-{frames}.mp4"
            if not clip.exists():
                _run(_MAKE, clip, width, height, frames)
            rows.append(json.loads(_run(_MEASURE, "job", clip, 10, warm)))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=2) + "\n")
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
