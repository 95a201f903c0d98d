"""An async API accepts what it can store durably, whatever this replica is busy with: 40
uploads of 16 MB to /jobs while a flood of large /colorize jobs runs on the same replica are all
accepted (once, 34 of 40 were refused: queued uploads competed with the flood for the host
budget), and the replica stays inside its 3 GB host budget."""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
from PIL import Image

from tests.support.servers import ServerProcess, server_process
from tests.support.store import SharedEnv

HOST_BYTES = 3_000_000_000


def noise_png(side: int, seed: int) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=0)
    return buf.getvalue()


def huge_grey_png() -> bytes:
    """4000x4000 (16 MP) in about 50 kB: what floods /colorize."""
    buf = io.BytesIO()
    Image.fromarray(np.full((4000, 4000), 90, np.uint8)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def peak_rss(server: ServerProcess) -> int:
    with open(f"/proc/{server.popen.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_forty_16_mb_uploads_are_accepted_during_a_colorize_flood(shared_env: SharedEnv) -> None:
    env = shared_env(COLORIZE_HOST_MEMORY_BYTES=str(HOST_BYTES), SCRIPTED_CHEAP="1")
    upload = noise_png(2310, 0)
    assert 15_000_000 < len(upload) < 17_000_000
    flood_image = huge_grey_png()
    stop = threading.Event()
    with server_process(env) as server:

        def flood() -> None:
            with httpx.Client(timeout=120) as client:
                while not stop.is_set():
                    client.post(f"{server.url}/colorize", files={"image": ("f.png", flood_image)})

        flooders = [threading.Thread(target=flood, daemon=True) for _ in range(6)]
        for thread in flooders:
            thread.start()

        def submit(i: int) -> tuple[int, str]:
            with httpx.Client(timeout=120) as client:
                r = client.post(f"{server.url}/jobs", files={"image": (f"{i}.png", upload)})
                return r.status_code, r.json().get("id", r.text[:200])

        try:
            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(submit, range(40)))
        finally:
            stop.set()
            for thread in flooders:
                thread.join(120)
        with httpx.Client(timeout=30) as client:
            for _, job_id in answers:  # no need to colour 640 MB of noise here
                client.delete(f"{server.url}/jobs/{job_id}")
        peak = peak_rss(server)
    assert [status for status, _ in answers] == [202] * 40, [a for a in answers if a[0] != 202]
    print(f"\nshared: 40 uploads of 16 MB accepted during the flood; peak RSS {peak / 1e9:.2f} GB")
    assert peak < HOST_BYTES
