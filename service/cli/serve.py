"""`colorize-service serve`: one uvicorn process, one worker thread, draining on SIGTERM."""

from __future__ import annotations

import argparse
import logging
from types import FrameType

import uvicorn
from fastapi import FastAPI

from service.api.app import create_app
from service.api.http11 import RefusingH11Protocol
from service.settings import load_settings

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """On SIGTERM/SIGINT, stop admitting and fail queued jobs before uvicorn's own shutdown.

    It speaks HTTP/1.1 through RefusingH11Protocol unless the config names another protocol.
    """

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        if config.http in ("auto", "h11"):
            config.http = RefusingH11Protocol
        super().__init__(config)
        self.colorize_app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        svc = getattr(self.colorize_app.state, "svc", None)
        if svc is not None and not svc.worker.draining:
            log.info(
                "signal %d: draining (queued jobs fail with 503, the running one finishes)", sig
            )
            svc.worker.drain(f"the service is shutting down (signal {sig})")
        super().handle_exit(sig, frame)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("serve", help="run the HTTP service")
    p.add_argument("--host", help="bind address (COLORIZE_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (COLORIZE_PORT, default 8000)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = load_settings(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.captureWarnings(True)  # Pillow's warnings about odd files belong in the log
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) or None,
        workers=1,
        log_config=None,
    )
    DrainingServer(config, app).run()
    return 0
