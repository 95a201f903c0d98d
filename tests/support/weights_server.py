"""Generated checkpoints in the official layout, and a loopback HTTP server that serves them.

The server speaks enough HTTP range requests to test resuming (206 with Content-Range, 416), can
ignore them as some servers do, and can cut a connection once after a given number of bytes.
"""

from __future__ import annotations

import dataclasses
import random
import re
import socket
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from devkit.checkpoints import save_random_checkpoint
from service.engines import weights
from service.engines.weights import WeightsFile

MODELS = tuple(weights.NETWORKS)
"""The models this repository can generate checkpoints for: eccv16, siggraph17."""
UNSERVED = "http://127.0.0.1:9/unserved"
"""The source of an entry no test server holds: loopback, nothing listens (port 9, discard)."""
SENT_CHUNK = 64 * 1024


def make_weights_dir(path: Path, seed: int = 0) -> Path:
    """Write a generated checkpoint of every model into `path` under its official name."""
    for model in MODELS:
        save_random_checkpoint(model, path, seed=seed)
    return path


def write_random_weights(directory: Path, model: str, size: int, seed: int = 0) -> Path:
    """`size` random bytes under `model`'s official file name: enough for download tests."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / weights.OFFICIAL[model].filename
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def entry_of(model: str, path: Path, source: str = UNSERVED) -> WeightsFile:
    """A manifest entry describing the file at `path` (its size and SHA-256), from `source`."""
    return WeightsFile(model, path.name, path.stat().st_size, weights.file_sha256(path), source)


def manifest_for(directory: Path, source: str = UNSERVED) -> dict[str, WeightsFile]:
    """An entry for each official file name present in `directory`, with the file's own hash."""
    return {
        model: entry_of(model, directory / entry.filename, source)
        for model, entry in weights.OFFICIAL.items()
        if (directory / entry.filename).is_file()
    }


def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Served:
    """One answered GET: the path, the Range header asked, the status and body bytes sent.

    Logged before the headers go out, so a client that reacts to them finds it already there.
    """

    path: str
    range: str | None
    status: int
    sent: int


@dataclass
class WeightsServer:
    """A running server: its base URL, the directory it serves and what it was asked for."""

    base_url: str
    directory: Path
    manifest: dict[str, WeightsFile]
    """Each served file's entry, with this server as its source."""
    requested: list[str] = field(default_factory=list)
    log: list[Served] = field(default_factory=list)
    honour_range: bool = True
    """False: answer a Range request with the whole file and 200, as some servers do."""
    cut_after: dict[str, int] = field(default_factory=dict)
    """File name -> body bytes after which the next response for it is cut (once)."""

    def sent(self, filename: str) -> int:
        """Body bytes sent for `filename` over every request."""
        return sum(s.sent for s in self.log if s.path == f"/{filename}")


RANGE = re.compile(r"bytes=(\d+)-$")


class _Handler(BaseHTTPRequestHandler):
    """Serves the directory's files with Range support; records each request."""

    server: _Server

    def do_GET(self) -> None:
        state = self.server.state
        state.requested.append(self.path)
        path = state.directory / self.path.lstrip("/")
        asked = self.headers.get("Range")
        if "/" in self.path.lstrip("/") or not path.is_file():
            self._answer(404, asked, {"Content-Length": "0"})
            return
        size = path.stat().st_size
        start = 0
        match = RANGE.match(asked or "")
        if match and state.honour_range:
            start = int(match.group(1))
            if start >= size:
                self._answer(
                    416, asked, {"Content-Range": f"bytes */{size}", "Content-Length": "0"}
                )
                return
            headers = {"Content-Range": f"bytes {start}-{size - 1}/{size}"}
            status = 206
        else:
            headers, status = {}, 200
        headers["Content-Length"] = str(size - start)
        served = self._answer(status, asked, headers)
        limit = state.cut_after.pop(path.name, None)
        with open(path, "rb") as f:
            f.seek(start)
            while chunk := f.read(
                SENT_CHUNK if limit is None else min(SENT_CHUNK, limit - served.sent)
            ):
                # Counted first: a client that has read everything finds the count complete.
                served.sent += len(chunk)
                self.wfile.write(chunk)
        if limit is not None:
            # Cut: the client sees the connection close before Content-Length bytes arrived.
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    def _answer(self, status: int, asked: str | None, headers: Mapping[str, str]) -> Served:
        served = Served(self.path, asked, status, 0)
        self.server.state.log.append(served)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        return served

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: WeightsServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that stops reading (a download aborted on purpose) is not a server failure.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextmanager
def serve_weights(directory: Path) -> Iterator[WeightsServer]:
    """Serve `directory` over HTTP on 127.0.0.1 in a background thread."""
    server = _Server(("127.0.0.1", 0), _Handler)
    host, port = server.server_address[:2]
    base_url = f"http://{host!s}:{port}"
    server.state = WeightsServer(base_url, directory, manifest_for(directory, base_url))
    thread = threading.Thread(target=server.serve_forever, name="weights-server", daemon=True)
    thread.start()
    try:
        yield server.state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def with_entry(
    manifest: Mapping[str, WeightsFile], model: str, **changes: Any
) -> dict[str, WeightsFile]:
    """A copy of `manifest` whose `model` entry has `changes` (a wrong hash, size or name)."""
    return {**manifest, model: dataclasses.replace(manifest[model], **changes)}
