"""/jobs throughput with the shared job store against the in-process one, side by side.

Run: `python -m bench.shared_mode [--size 512] [--clients 4] [--seconds 20]
[--rounds 6] [--out bench/results/<machine>/shared_mode.json]`.

One service process per mode, with the same generated eccv16 checkpoint: in-process (no Redis)
and shared (a real redis-server with AOF `always` and a real SeaweedFS S3 server on loopback,
started here). `--clients` closed-loop clients each post a photo to /jobs, poll its status every
`--poll-ms` (10 by default: 100 polls a second per client, a load on the store of its own) until
it is done, and fetch the result; a round counts the jobs completed in `--seconds`. The service
process's own CPU time per job is read from /proc, and so is the stores' (redis-server and
SeaweedFS, during the shared rounds): they run on the same cores here, so the throughput ratio
includes their CPU too, which a deployment runs elsewhere.
The modes alternate round by round (A B, then B A) so a drifting machine moves both and neither
always goes first, and the ratio is taken per pair. The target: shared mode within 10 % of
in-process (ratio >= 0.90).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.inputs import square
from bench.servers import make_weights, running
from devkit.services import RedisServer, SeaweedServer, aws_environment

BUCKET = "colorize-bench"
TARGET = 0.90


def one_round(base: str, data: bytes, clients: int, seconds: float, poll_s: float) -> float:
    """Jobs per second completed by `clients` closed-loop /jobs clients over `seconds`."""
    done = [0] * clients
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        with httpx.Client(base_url=base, timeout=120) as c:
            while time.monotonic() < stop:
                r = c.post("/jobs", files={"image": ("p.png", data, "image/png")})
                if r.status_code != 202:
                    time.sleep(0.05)
                    continue
                url = r.headers["location"]
                while c.get(url).json()["state"] not in ("done", "failed", "cancelled"):
                    time.sleep(poll_s)
                if c.get(f"{url}/result").status_code == 200 and time.monotonic() < stop:
                    done[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / seconds


def cpu_seconds(*processes: psutil.Process) -> float:
    """User and system CPU time of `processes` and their children so far."""
    total = 0.0
    for process in processes:
        for p in [process, *process.children(recursive=True)]:
            times = p.cpu_times()
            total += times.user + times.system
    return total


def measure(size: int, clients: int, seconds: float, rounds: int, poll_s: float) -> dict[str, Any]:
    data = square(size).image
    with tempfile.TemporaryDirectory(prefix="colorize-shared-bench-") as tmp:
        root = Path(tmp)
        weights_dir = make_weights(root / "weights", ["eccv16"])
        redis = RedisServer(root / "redis", appendonly=True, appendfsync="always")
        redis.directory.mkdir()
        weed = SeaweedServer(root / "weed")
        weed.directory.mkdir()
        redis.start()
        weed.start()
        try:
            weed.wait_writable(BUCKET)
            common = {"COLORIZE_LOG_LEVEL": "warning", "COLORIZE_QUEUE_SIZE": "64"}
            shared = {
                **common,
                **aws_environment(),
                "COLORIZE_REDIS_URL": redis.url,
                "COLORIZE_OBJECT_STORE_URL": weed.endpoint,
                "COLORIZE_OBJECT_STORE_BUCKET": BUCKET,
            }
            specs = [
                ("ours", "local", weights_dir, common),
                ("ours", "shared", weights_dir, shared),
            ]
            assert redis.process is not None and weed.process is not None
            stores = (psutil.Process(redis.process.pid), psutil.Process(weed.process.pid))
            with running(specs, "cpu") as servers:
                for server in servers.values():  # warm-up
                    one_round(server.base, data, clients, 3.0, poll_s)
                local, remote = [], []
                cpu: dict[str, list[float]] = {"local": [], "shared": []}
                store_cpu: list[float] = []
                for i in range(rounds):
                    # A B, then B A: whatever the second of a pair inherits (the first one's
                    # idle-time heap clear, its connections closing) falls on each mode equally.
                    pair = (("local", local), ("shared", remote))
                    for mode, rates in reversed(pair) if i % 2 else pair:
                        server = servers[mode]
                        before, stores_before = server.cpu_seconds(), cpu_seconds(*stores)
                        rates.append(one_round(server.base, data, clients, seconds, poll_s))
                        jobs = max(rates[-1] * seconds, 1.0)
                        cpu[mode].append((server.cpu_seconds() - before) / jobs)
                        if mode == "shared":
                            store_cpu.append((cpu_seconds(*stores) - stores_before) / jobs)
                    print(
                        f"{'shared first: ' if i % 2 else 'local first:  '}"
                        f"local {local[-1]:.2f} jobs/s ({cpu['local'][-1]:.2f} CPU s/job), "
                        f"shared {remote[-1]:.2f} jobs/s ({cpu['shared'][-1]:.2f} CPU s/job, "
                        f"stores {store_cpu[-1]:.3f})",
                        flush=True,
                    )
        finally:
            redis.stop()
            weed.stop()
    ratios = [s / x for s, x in zip(remote, local, strict=True) if x > 0]
    by_order = {
        order: statistics.median(ratios[start::2]) if ratios[start::2] else None
        for order, start in (("local_first", 0), ("shared_first", 1))
    }
    return {
        "size": size,
        "clients": clients,
        "seconds": seconds,
        "rounds": rounds,
        "poll_s": poll_s,
        "local_jobs_per_s": local,
        "shared_jobs_per_s": remote,
        "service_cpu_s_per_job": {m: statistics.median(v) for m, v in cpu.items()},
        "stores_cpu_s_per_job": statistics.median(store_cpu),
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "ratio_median_by_order": by_order,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--poll-ms", type=float, default=10.0, help="status poll interval")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result = measure(args.size, args.clients, args.seconds, args.rounds, args.poll_ms / 1000)
    verdict = "within" if result["ratio_median"] >= TARGET else "NOT within"
    print(
        f"shared / in-process at {args.size} px, {args.clients} clients: "
        f"{result['ratio_median']:.3f} ({result['ratio_min']:.3f}-{result['ratio_max']:.3f}), "
        f"{verdict} 10 %"
    )
    orders = result["ratio_median_by_order"]
    print("by order: " + ", ".join(f"{k} {v:.3f}" for k, v in orders.items() if v is not None))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
