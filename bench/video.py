"""Video jobs through the service: peak memory against the film's length, and frame rate against
the image path's (issue 21, "Done when").

Run: `python -m bench.video [--lengths 100 1000 3000] [--size 640x360] [--images 60]
[--out bench/results/cpu-2core/video.json]` (CPU; about 15 minutes on two cores).

One `colorize-service serve` process with COLORIZE_HOST_MEMORY_BYTES=2000000000 on the CPU,
eccv16 with generated weights (devkit.checkpoints), the default batch sizes. Films are a slow pan
back and forth across a photo bundled with scikit-image, grayscale, H.264 at 25 fps with an AAC
track, made here with PyAV (nothing from tests/). Each film is posted to /jobs as a raw
video/mp4 body and followed to its end; before it the server's RSS high-water mark (VmHWM) is
reset (/proc/PID/clear_refs), so each job's peak is its own. A short film first warms the
process up (FFmpeg, libx264 and torch's kernels load once).

Memory: after the warm-up the films run back to back, nothing else in between (a burst of
photos leaves its own heap behind). The server runs with MALLOC_ARENA_MAX=2, as the Dockerfile
runs it.

Rate: the image path is the same engine on photos of the same size through POST /colorize, with
enough clients to keep every device lane busy (two on a CPU; COLORIZE_BATCH_MAX_SIZE auto is 1
on a CPU, for frames and photos alike). Bursts of photos bracket each of `--rate-runs` films of
`--rate-frames` frames, so that a shared machine whose load drifts moves both sides of a ratio
alike. A video job's rate is its frames over its running time (`timings.run`: reserving,
decoding, colouring, stabilising, encoding, the pipeline's fill and drain).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
from PIL import Image

from bench.inputs import data_dir
from bench.servers import Server, make_weights, running

BUDGET = 2_000_000_000
"""COLORIZE_HOST_MEMORY_BYTES of the issue's acceptance figure."""
FLAT = 0.10
"""Peak RSS of the longest and the shortest film within 10 % of each other."""
RATE = 0.10
"""A video job's frames per second within 10 % of the image path's."""
MODEL = "eccv16"


def make_film(path: Path, width: int, height: int, frames: int, rate: int = 25) -> Path:
    """A grayscale pan across a photo, back and forth, `frames` long, with a quiet AAC tone."""
    with Image.open(data_dir() / "astronaut.png") as im:
        photo = np.asarray(im.convert("L").resize((width + 200, height)))
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=rate, options={"preset": "ultrafast", "crf": "23"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = out.add_stream("aac", rate=44100)
        audio.layout = "mono"
        for i in range(frames):
            x = abs((i * 2) % 400 - 200)
            gray = np.ascontiguousarray(photo[:, x : x + width])
            picture = av.VideoFrame.from_ndarray(np.repeat(gray[:, :, None], 3, 2), "rgb24")
            out.mux(video.encode(picture))
        out.mux(video.encode(None))
        size = audio.codec_context.frame_size or 1024
        total = int(frames / rate * 44100)
        for start in range(0, total, size):
            n = min(size, total - start)
            t = np.arange(start, start + n) / 44100
            samples = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, start
            out.mux(audio.encode(frame))
        out.mux(audio.encode(None))
    return path


def photo_png(width: int, height: int) -> bytes:
    with Image.open(data_dir() / "astronaut.png") as im:
        gray = im.convert("L").resize((width, height))
    buffer = io.BytesIO()
    gray.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def image_rate(server: Server, png: bytes, count: int, clients: int) -> dict[str, float]:
    """Photos per second through /colorize with `clients` at once."""
    with httpx.Client(base_url=server.base, timeout=300) as client:
        # One first, outside the measurement: the first forward pass allocates its buffers.
        client.post("/colorize", files={"image": ("a.png", png)}, data={"model": MODEL})

        def one(_: int) -> float:
            started = time.monotonic()
            r = client.post("/colorize", files={"image": ("a.png", png)}, data={"model": MODEL})
            r.raise_for_status()
            return time.monotonic() - started

        started = time.monotonic()
        with ThreadPoolExecutor(clients) as pool:
            latencies = list(pool.map(one, range(count)))
        elapsed = time.monotonic() - started
    return {
        "images": count,
        "clients": clients,
        "seconds": elapsed,
        "images_per_second": count / elapsed,
        "median_latency_s": statistics.median(latencies),
    }


def video_job(server: Server, film: Path, poll_s: float = 0.25) -> dict[str, Any]:
    """Post `film`, follow it to its end; its rate, and the server's RSS while it ran."""
    rss: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.2):
            rss.append(server.rss())

    server.reset_peak()
    idle = server.rss()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with httpx.Client(base_url=server.base, timeout=300) as client:
        with open(film, "rb") as body:
            r = client.post(
                f"/jobs?model={MODEL}", content=body, headers={"content-type": "video/mp4"}
            )
        r.raise_for_status()
        url = r.headers["location"]
        while True:
            job = client.get(url).json()
            if job["state"] in ("done", "failed", "cancelled"):
                break
            time.sleep(poll_s)
        if job["state"] != "done":
            raise RuntimeError(f"the video job ended {job['state']}: {job['error']}")
        result = client.get(f"{url}/result")
        result.raise_for_status()
    stop.set()
    sampler.join()
    peak = server.peak_rss()
    frames = job["progress"]["frames_done"]
    run_s = job["timings"]["run"]
    return {
        "frames": frames,
        "run_seconds": run_s,
        "frames_per_second": frames / run_s,
        "idle_rss_bytes": idle,
        "peak_rss_bytes": peak,
        "peak_growth_bytes": peak - idle,
        "mean_rss_bytes": int(statistics.mean(rss)) if rss else None,
        "result_bytes": len(result.content),
    }


def measure(
    lengths: list[int], width: int, height: int, images: int, rate_frames: int, rate_runs: int
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="colorize-bench-video-") as tmp:
        return _measure(Path(tmp), lengths, width, height, images, rate_frames, rate_runs)


def _measure(
    work: Path,
    lengths: list[int],
    width: int,
    height: int,
    images: int,
    rate_frames: int,
    rate_runs: int,
) -> dict[str, Any]:
    weights = make_weights(work / "weights", [MODEL])
    films = {
        n: make_film(work / f"film-{n}.mp4", width, height, n)
        for n in sorted({16, rate_frames, *lengths})
    }
    env = {
        "COLORIZE_HOST_MEMORY_BYTES": str(BUDGET),
        "COLORIZE_DEFAULT_MODEL": MODEL,
        "COLORIZE_FETCH_MISSING": "false",
        "COLORIZE_VIDEO_SPOOL_DIR": str(work / "spool"),
        # As the Dockerfile runs the service: glibc's per-thread arenas otherwise keep freed
        # heap resident in as many arenas as threads ran (docs/reliability.md).
        "MALLOC_ARENA_MAX": "2",
    }
    png = photo_png(width, height)
    clients = 2 * 2  # two per device lane (COLORIZE_DEVICE_WORKERS auto: 2 on a CPU)
    with running([("ours", "video", weights, env)], "cpu") as servers:
        server = servers["video"]
        video_job(server, films[16])  # warm-up
        # Memory: the films back to back, nothing else between them.
        jobs = {n: video_job(server, films[n]) for n in lengths}
        # Rate: photo bursts bracket each film, so that a machine whose load drifts moves both
        # sides of a ratio alike; each film is compared with the mean of its two bursts.
        bursts = [image_rate(server, png, images, clients)]
        runs = []
        for _ in range(rate_runs):
            runs.append(video_job(server, films[rate_frames]))
            bursts.append(image_rate(server, png, images, clients))
    peaks = [jobs[n]["peak_rss_bytes"] for n in lengths]
    ratios = []
    for i, run in enumerate(runs):
        around = (bursts[i]["images_per_second"] + bursts[i + 1]["images_per_second"]) / 2
        run["image_path_frames_per_second"] = around
        run["ratio"] = run["frames_per_second"] / around
        ratios.append(run["ratio"])
    return {
        "size": f"{width}x{height}",
        "model": MODEL,
        "host_memory_bytes": BUDGET,
        "videos": {str(n): jobs[n] for n in lengths},
        "peak_spread": max(peaks) / min(peaks) - 1,
        "peak_inside_budget": max(peaks) < BUDGET,
        "flat": max(peaks) / min(peaks) - 1 <= FLAT,
        "rate_frames": rate_frames,
        "rate_runs": runs,
        "image_bursts": bursts,
        "video_over_image_rate": statistics.median(ratios),
        "rate_within": abs(statistics.median(ratios) - 1) <= RATE,
    }


def table(result: dict[str, Any]) -> str:
    mb = 1e6
    lines = [
        f"| film ({result['size']}) | peak RSS (MB) | RSS before the job (MB) | mean RSS while "
        "it ran (MB) | video frames/s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for n, job in result["videos"].items():
        mean = job["mean_rss_bytes"]
        lines.append(
            f"| {int(n):,} frames | {job['peak_rss_bytes'] / mb:.0f} | "
            f"{job['idle_rss_bytes'] / mb:.0f} | {mean / mb if mean else 0:.0f} | "
            f"{job['frames_per_second']:.2f} |"
        )
    lines.append("")
    lines.append(
        f"Peak spread {100 * result['peak_spread']:.1f}% (target <= {100 * FLAT:.0f}%); "
        f"inside the {result['host_memory_bytes'] / mb:.0f} MB budget: "
        f"{result['peak_inside_budget']}."
    )
    lines.append("")
    lines.append(
        f"| {result['rate_frames']}-frame film | video frames/s | photos/s (bursts around it) "
        "| ratio |"
    )
    lines.append("| --- | --- | --- | --- |")
    for i, run in enumerate(result["rate_runs"]):
        lines.append(
            f"| run {i + 1} | {run['frames_per_second']:.2f} | "
            f"{run['image_path_frames_per_second']:.2f} | {run['ratio']:.2f} |"
        )
    bursts = ", ".join(f"{b['images_per_second']:.2f}" for b in result["image_bursts"])
    lines.append("")
    lines.append(
        f"Photo bursts ({result['size']} PNG via /colorize), in order: {bursts}. Median ratio "
        f"{result['video_over_image_rate']:.2f}: within {100 * RATE:.0f}% of the image path's "
        f"rate: {result['rate_within']}."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", nargs="+", type=int, default=[100, 1000, 3000])
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--images", type=int, default=60, help="photos per burst")
    parser.add_argument("--rate-frames", type=int, default=300, help="film of the rate runs")
    parser.add_argument("--rate-runs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    result = measure(args.lengths, width, height, args.images, args.rate_frames, args.rate_runs)
    print(table(result))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
