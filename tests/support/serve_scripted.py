"""Serve the real app around scripted engines in its own process, for tests of process-level
behaviour (SIGTERM, client disconnects). Jobs wait until `--gate-file` exists.

    python -m tests.support.serve_scripted --port 8123 --gate-file /tmp/open
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import torch
import uvicorn

from service.api.app import create_app
from service.cli.serve import DrainingServer
from service.settings import Settings
from tests.support.engines import ScriptedEngine


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--gate-file", type=Path, required=True)
    parser.add_argument("--grace", type=float, default=5.0)
    parser.add_argument("--queue-size", type=int, default=8)
    args = parser.parse_args()

    engine = ScriptedEngine(torch.device("cpu"), "eccv16", batchable=False)
    engine.gate.clear()

    def open_gate_when_file_appears() -> None:
        while not args.gate_file.exists():
            time.sleep(0.02)
        engine.gate.set()

    threading.Thread(target=open_gate_when_file_appears, daemon=True).start()
    settings = Settings(
        port=args.port, shutdown_grace_s=args.grace, queue_size=args.queue_size, batch_max_size=1
    )
    app = create_app(settings, engines={"eccv16": engine})
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        timeout_graceful_shutdown=int(args.grace),
    )
    DrainingServer(config, app).run()


if __name__ == "__main__":
    main()
