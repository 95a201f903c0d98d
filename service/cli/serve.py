"""`colorize-service serve`: one uvicorn process, draining on SIGTERM, speaking strict HTTP/1.1."""

from __future__ import annotations

import argparse
import logging
import os
import resource
from types import FrameType

import uvicorn
from fastapi import FastAPI

from service.api.app import create_app
from service.api.http11 import RefusingH11Protocol, protocol_for
from service.device import resolve_device
from service.memory import heap
from service.settings import Settings, SettingsError, load_settings

log = logging.getLogger(__name__)

RESERVED_DESCRIPTORS = 256
"""File descriptors kept beside the connections: weights, logs, the loop, the worker's files."""


class DrainingServer(uvicorn.Server):
    """On SIGTERM/SIGINT, stop admitting and fail queued jobs before uvicorn's own shutdown.

    It speaks HTTP/1.1 through RefusingH11Protocol (with `settings`' limits when given) unless
    the config names another protocol.
    """

    def __init__(self, config: uvicorn.Config, app: FastAPI, settings: Settings | None = None):
        if config.http in ("auto", "h11"):
            config.http = RefusingH11Protocol if settings is None else protocol_for(settings)
        super().__init__(config)
        self.colorize_app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        svc = getattr(self.colorize_app.state, "svc", None)
        if svc is not None and not svc.worker.draining:
            log.info(
                "signal %d: draining (queued jobs fail with 503, the running one finishes)", sig
            )
            svc.drain(f"the service is shutting down (signal {sig})")
        super().handle_exit(sig, frame)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("serve", help="run the HTTP service")
    p.add_argument("--host", help="bind address (COLORIZE_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (COLORIZE_PORT, default 8000)")
    p.set_defaults(handler=run)


def check_environment(settings: Settings) -> None:
    """What settings alone cannot tell: the device exists, the descriptors suffice. Raises
    SettingsError naming the variable (one line and exit 2, never a traceback)."""
    try:
        resolve_device(settings.device)
    except (ValueError, RuntimeError) as exc:
        raise SettingsError(f"COLORIZE_DEVICE: {exc}") from None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        # The soft limit is the process's own to raise: connections need one descriptor each.
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    spool = settings.video_spool_dir
    if spool is not None:
        try:
            spool.mkdir(parents=True, exist_ok=True)
            writable = os.access(spool, os.W_OK | os.X_OK)
        except OSError as exc:
            raise SettingsError(
                f"COLORIZE_VIDEO_SPOOL_DIR: cannot create {spool}: {exc.strerror or exc}"
            ) from None
        if not writable:
            raise SettingsError(f"COLORIZE_VIDEO_SPOOL_DIR: {spool} is not writable")
    need = settings.max_connections + RESERVED_DESCRIPTORS
    if soft != resource.RLIM_INFINITY and need > soft:
        raise SettingsError(
            f"COLORIZE_MAX_CONNECTIONS: {settings.max_connections} connections need about "
            f"{need} file descriptors but this process may open {soft} (ulimit -n); lower it "
            "or raise the limit"
        )


def run(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = load_settings(**overrides)
    check_environment(settings)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.captureWarnings(True)  # Pillow's warnings about odd files belong in the log
    # Before the stage threads start, so that they share the arenas (service/memory/heap.py).
    heap.tune(settings.malloc_arenas, settings.malloc_mmap_threshold_bytes)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) or None,
        timeout_keep_alive=max(1, round(settings.keepalive_timeout_s)),
        workers=1,
        log_config=None,
    )
    DrainingServer(config, app, settings).run()
    return 0
