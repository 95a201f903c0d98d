"""`python -m tests.support.scripted_server`: the service as `colorize-service serve` runs it
(DrainingServer, create_app, COLORIZE_* settings), with scripted engines, on a loopback port.
tests/support/servers.py's `server_process` starts it.

Prints `LISTENING <port>` once it accepts connections. Extra knobs, for the tests only:

- SCRIPTED_DELAY_S: seconds each scripted run takes (a slow device, so queues fill).
- SCRIPTED_GATE_FILE: the eccv16 engine holds every run until this file exists.
- SCRIPTED_REAL_EXEMPLAR=1: "exemplar" is the real ExemplarEngine, not a scripted one.
- SCRIPTED_CHEAP=1: the scripted networks tint in uint8 (milliseconds at 16 megapixels) and
  estimate 8 bytes per pixel: for floods where memory, not compute, is under test.

It also answers `GET /_test/heap` (this wrapper's route, not the service's): what the soak needs
to tell a leak from a fragmented heap.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import psutil
import torch
import uvicorn
from fastapi import FastAPI
from fastapi.routing import APIRoute

from service.api.app import create_app
from service.cli.serve import DrainingServer
from service.engines.base import ColorizeRequest, Engine
from service.engines.exemplar import ExemplarEngine
from service.memory import heap
from service.settings import load_settings
from tests.support.engines import ScriptedEngine
from tests.support.servers import loopback_socket


class SlowEngine(ScriptedEngine):
    """A ScriptedEngine whose every forward pass takes at least `delay_s` (a busy device)."""

    def __init__(self, *args: object, delay_s: float = 0.0, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.delay_s = delay_s

    def forward(
        self,
        requests: Sequence[ColorizeRequest],
        prepared: Sequence[object | None],
        chunk_bytes: int | None = None,
    ) -> list[object]:
        started = time.monotonic()
        outputs = super().forward(requests, prepared, chunk_bytes)
        time.sleep(max(0.0, self.delay_s - (time.monotonic() - started)))
        return outputs


def open_gate_when(path: Path, engine: ScriptedEngine) -> None:
    """Close `engine`'s gate now; open it once `path` exists (the test creates it)."""
    engine.gate.clear()

    def watch() -> None:
        while not path.exists():
            time.sleep(0.02)
        engine.gate.set()

    threading.Thread(target=watch, name="gate-file", daemon=True).start()


def build_engines(device: torch.device) -> dict[str, Engine]:
    delay = float(os.environ.get("SCRIPTED_DELAY_S", "0"))
    cheap = os.environ.get("SCRIPTED_CHEAP") == "1"
    sized = {"cheap": True, "per_pixel_bytes": 8} if cheap else {}
    eccv16 = SlowEngine(device, "eccv16", delay_s=delay, **sized)
    engines: dict[str, Engine] = {
        "eccv16": eccv16,
        "siggraph17": SlowEngine(device, "siggraph17", takes_hints=True, delay_s=delay, **sized),
        "exemplar": (
            ExemplarEngine(device)
            if os.environ.get("SCRIPTED_REAL_EXEMPLAR") == "1"
            else SlowEngine(
                device, "exemplar", batchable=False, needs_reference=True, delay_s=delay
            )
        ),
    }
    gate = os.environ.get("SCRIPTED_GATE_FILE")
    if gate:
        open_gate_when(Path(gate), eccv16)
    return engines


class MallInfo2(ctypes.Structure):
    """glibc's `struct mallinfo2` (glibc >= 2.33)."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def malloc_in_use() -> int | None:
    """Bytes the C heap has handed out and not had back (heap blocks plus mmapped blocks)."""
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except AttributeError:
        return None
    mallinfo2.restype = MallInfo2
    info = mallinfo2()
    return int(info.uordblks + info.hblkhd)


def add_heap_route(app: FastAPI) -> None:
    """`GET /_test/heap`: RSS, C heap in use, tracked Python objects, /jobs records and result
    bytes kept."""

    def heap() -> dict[str, int | None]:
        return {
            "rss": int(psutil.Process().memory_info().rss),
            "malloc_in_use": malloc_in_use(),
            "python_objects": len(gc.get_objects()),
            "jobs_kept": len(app.state.svc.store),
            "results_kept_bytes": app.state.svc.store.result_bytes(),
        }

    # Ahead of the web page's mount at "/", which would otherwise answer first.
    app.router.routes.insert(0, APIRoute("/_test/heap", heap, methods=["GET"]))


def main() -> None:
    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    heap.tune(settings.malloc_arenas, settings.malloc_mmap_threshold_bytes)  # as `serve` does
    app = create_app(settings, engines=build_engines(torch.device("cpu")))
    add_heap_route(app)
    sock = loopback_socket()
    config = uvicorn.Config(
        app,
        log_level=settings.log_level,
        log_config=None,
        access_log=settings.log_level == "debug",
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) or None,
    )
    server = DrainingServer(config, app, settings)
    # Announce the port once uvicorn is up, from a thread that polls its `started` flag.
    port = sock.getsockname()[1]

    def announce() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.01)
        print(f"LISTENING {port}", flush=True)

    threading.Thread(target=announce, name="announce", daemon=True).start()
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
