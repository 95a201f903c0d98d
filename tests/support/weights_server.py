"""Generated checkpoints in the official layout, and a loopback HTTP server that serves them."""

from __future__ import annotations

import dataclasses
import functools
import socket
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from service.engines import weights
from service.engines.weights import WeightsFile

MODELS = tuple(weights.OFFICIAL)
"""The models with published checkpoints: eccv16, siggraph17."""


def make_weights_dir(path: Path, seed: int = 0) -> Path:
    """Write a generated checkpoint of every model into `path` under its official name."""
    for model in MODELS:
        weights.save_random_checkpoint(model, path, seed=seed)
    return path


def manifest_for(directory: Path) -> dict[str, WeightsFile]:
    """Official file names with the size and SHA-256 of the generated files in `directory`."""
    manifest = {}
    for model in MODELS:
        path = directory / weights.OFFICIAL[model].filename
        digest = weights.file_sha256(path)
        manifest[model] = WeightsFile(model, path.name, path.stat().st_size, digest)
    return manifest


def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class WeightsServer:
    """A running server: its base URL, the directory it serves and the paths it was asked for."""

    base_url: str
    directory: Path
    manifest: dict[str, WeightsFile]
    requested: list[str] = field(default_factory=list)


class _Handler(SimpleHTTPRequestHandler):
    """Serves files quietly and records each requested path."""

    requested: list[str]

    def do_GET(self) -> None:
        self.requested.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that stops reading (a download aborted on purpose) is not a server failure.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextmanager
def serve_weights(directory: Path) -> Iterator[WeightsServer]:
    """Serve `directory` over HTTP on 127.0.0.1 in a background thread."""
    requested: list[str] = []
    handler = functools.partial(
        type("Handler", (_Handler,), {"requested": requested}), directory=str(directory)
    )
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="weights-server", daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield WeightsServer(
            base_url=f"http://{host!s}:{port}",
            directory=directory,
            manifest=manifest_for(directory),
            requested=requested,
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def with_entry(
    manifest: Mapping[str, WeightsFile], model: str, **changes: Any
) -> dict[str, WeightsFile]:
    """A copy of `manifest` whose `model` entry has `changes` (a wrong hash, size or name)."""
    return {**manifest, model: dataclasses.replace(manifest[model], **changes)}
