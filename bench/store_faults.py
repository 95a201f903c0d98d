"""`python -m bench.store_faults`: how the shared job store rides out a dead replica and a
restarted Redis, measured against a real redis-server and SeaweedFS on loopback.

claim: a replica process (devkit/store_worker.py) takes a job and is SIGKILLed; an idle
survivor in this process pulls with a long timeout. Reported: seconds from the kill to the
survivor holding the job, per trial, for the heartbeat and claim times given.

restart: jobs are accepted (one of them running), Redis (AOF on) is killed or stopped and
started again on the same port; reported: how many accepted jobs it still has, how long it
was down, and how long the first call after it was back took.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydantic import SecretStr

from devkit.services import (
    RedisServer,
    SeaweedServer,
    ToolMissing,
    aws_environment,
    aws_session,
)
from devkit.store_jobs import admit_all, image_record
from service.store import RecordState, SharedStore, StoreConfig

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "colorize-bench"


def config(redis: RedisServer, weed: SeaweedServer, prefix: str, **kw: float) -> StoreConfig:
    return StoreConfig(
        redis_url=SecretStr(redis.url),
        object_store_url=weed.endpoint,
        bucket=BUCKET,
        prefix=prefix,
        **kw,  # type: ignore[arg-type]
    )


async def claim_once(
    redis: RedisServer, weed: SeaweedServer, heartbeat: float, after: float
) -> float:
    cfg = config(
        redis, weed, f"claim-{time.monotonic_ns()}", heartbeat_s=heartbeat, claim_after_s=after
    )
    env = {
        **os.environ,
        "COLORIZE_REDIS_URL": redis.url,
        "COLORIZE_OBJECT_STORE_URL": weed.endpoint,
        "COLORIZE_OBJECT_STORE_BUCKET": BUCKET,
        "COLORIZE_SHARED_PREFIX": cfg.prefix,
        "COLORIZE_SHARED_HEARTBEAT_S": str(heartbeat),
        "COLORIZE_SHARED_CLAIM_AFTER_S": str(after),
        **aws_environment(),
    }
    api = SharedStore(cfg, session=aws_session())
    await api.open(consume=False)
    stored = await api.queue.submit(image_record(), b"x")
    child = subprocess.Popen(
        [sys.executable, "-m", "devkit.store_worker"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None
    line = await asyncio.to_thread(child.stdout.readline)
    assert line.startswith(f"holding {stored.id}"), line
    async with SharedStore(cfg, session=aws_session()) as survivor:  # idle, before the kill
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        killed = time.monotonic()
        delivery = await survivor.consumer.pull(admit_all, timeout_s=after + 10 * heartbeat + 30)
        latency = time.monotonic() - killed
        assert delivery is not None and delivery.claimed
        await survivor.consumer.complete(delivery, b"r", "image/png")
    await api.close()
    return latency


async def restart_once(
    redis: RedisServer, weed: SeaweedServer, sig: int, jobs: int
) -> dict[str, object]:
    cfg = config(redis, weed, f"restart-{time.monotonic_ns()}")
    async with SharedStore(cfg, session=aws_session()) as store:
        accepted = [await store.queue.submit(image_record(), b"x") for _ in range(jobs)]
        running = await store.consumer.pull(admit_all, timeout_s=5)
        assert running is not None
        down = redis.restart(sig)
        start = time.monotonic()
        records = [await store.queue.get(job.id) for job in accepted]
        first_call = time.monotonic() - start
        kept = sum(r is not None for r in records)
        states = [r.state.value for r in records if r is not None]
        done = await store.consumer.complete(running, b"r", "image/png")
        while (d := await store.consumer.pull(admit_all, timeout_s=2)) is not None:
            await store.consumer.complete(d, b"r", "image/png")
        finished = [await store.queue.get(job.id) for job in accepted]
        return {
            "signal": signal.Signals(sig).name,
            "fsync": redis.appendfsync,
            "accepted": jobs,
            "kept": kept,
            "states_after_restart": {s: states.count(s) for s in sorted(set(states))},
            "running_one_completed": done,
            "all_done": all(r is not None and r.state is RecordState.DONE for r in finished),
            "down_s": round(down, 3),
            "first_call_after_s": round(first_call, 3),
        }


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        for name in ("redis", "weed"):
            (base / name).mkdir()
        redis = RedisServer(base / "redis", appendonly=True, appendfsync="always").start()
        weed = SeaweedServer(base / "weed").start()
        try:
            weed.wait_writable(BUCKET)
            results: dict[str, object] = {}
            for heartbeat, after in args.timings:
                trials = [
                    await claim_once(redis, weed, heartbeat, after) for _ in range(args.trials)
                ]
                results[f"claim heartbeat={heartbeat:g}s claim_after={after:g}s"] = {
                    "seconds": [round(t, 2) for t in trials],
                    "median": round(statistics.median(trials), 2),
                    "max": round(max(trials), 2),
                }
            results["restart SIGKILL"] = await restart_once(redis, weed, signal.SIGKILL, args.jobs)
            redis.appendfsync = "everysec"
            redis.restart()
            results["restart SIGTERM"] = await restart_once(redis, weed, signal.SIGTERM, args.jobs)
            print(json.dumps(results, indent=2))
        finally:
            redis.stop()
            weed.stop()


def timing(text: str) -> tuple[float, float]:
    heartbeat, after = text.split("/")
    return float(heartbeat), float(after)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=50, help="jobs accepted before the restart")
    parser.add_argument(
        "--timings",
        type=timing,
        nargs="+",
        default=[(0.2, 1.0)],
        help="heartbeat/claim-after pairs in seconds (the defaults are 5/20)",
    )
    try:
        asyncio.run(main(parser.parse_args()))
    except ToolMissing as missing:
        sys.exit(f"bench.store_faults needs real servers: {missing}")
