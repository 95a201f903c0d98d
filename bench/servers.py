"""The servers under test, each in its own process on loopback: ours and the naive baseline.

Ours is started exactly as an operator would (`colorize-service serve`, configured by COLORIZE_*
variables); the naive one is `python -m bench.naive_server`. Both read the same generated
checkpoints. Each server's peak memory is the kernel's RSS high-water mark of its process, reset
before every cell (writing 5 to /proc/PID/clear_refs), so a cell's peak is its own.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from devkit.checkpoints import save_random_checkpoint
from service.engines import weights

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 180.0
"""Loading two networks on a busy 2-core machine takes a while; a GPU machine is faster."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_weights(directory: Path, models: Iterable[str]) -> Path:
    """Generated checkpoints of `models` (official names) in `directory`; existing ones are kept."""
    directory.mkdir(parents=True, exist_ok=True)
    for model in models:
        path = weights.weights_path(model, directory)
        if path.is_file():
            continue
        if model.startswith("ddcolor"):
            from devkit.ddcolor_checkpoints import save_random_checkpoint as save_ddcolor

            save_ddcolor(path, "tiny" if model == "ddcolor-tiny" else "large")
        else:
            save_random_checkpoint(model, directory)
    return directory


def subset_weights(source: Path, directory: Path, models: Iterable[str]) -> Path:
    """A directory holding only `models`' checkpoints from `source` (hard links where possible)."""
    directory.mkdir(parents=True, exist_ok=True)
    for model in models:
        src = weights.weights_path(model, source)
        dst = weights.weights_path(model, directory)
        if not dst.exists():
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
    return directory


def service_command(port: int) -> list[str]:
    """`colorize-service serve` from this interpreter's environment (or `-m service`)."""
    script = Path(sys.executable).with_name("colorize-service")
    if script.is_file():
        return [str(script), "serve", "--port", str(port)]
    return [sys.executable, "-m", "service", "serve", "--port", str(port)]


def naive_command(port: int) -> list[str]:
    return [sys.executable, "-m", "bench.naive_server", "--port", str(port)]


@dataclass
class Server:
    """A running server process; `kind` is "ours" or "naive"."""

    kind: str
    label: str
    base: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    # -- memory of the process ------------------------------------------------------------------

    def _status_kb(self, key: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise KeyError(key)

    def rss(self) -> int:
        return self._status_kb("VmRSS") * 1024

    def reset_peak(self) -> bool:
        """Reset the RSS high-water mark to the current RSS; False where the kernel refuses."""
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def peak_rss(self) -> int:
        return self._status_kb("VmHWM") * 1024

    def cpu_seconds(self) -> float:
        """User and system CPU time the process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    # -- metrics --------------------------------------------------------------------------------

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics keyed by (name, sorted labels); {} for the naive server."""
        if self.kind != "ours":
            return {}
        text = httpx.get(f"{self.base}/metrics", timeout=30).text
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                samples[key] = float(sample.value)
        return samples

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def launch(
    kind: str,
    label: str,
    weights_dir: Path,
    device: str,
    log_dir: Path,
    overrides: Mapping[str, str] | None = None,
) -> Server:
    """Start a server process (not waiting for it to be ready)."""
    port = free_port()
    env = {
        "COLORIZE_WEIGHTS_DIR": str(weights_dir),
        "COLORIZE_DEVICE": device,
        "COLORIZE_LOG_LEVEL": "warning",
        **(overrides or {}),
    }
    command = service_command(port) if kind == "ours" else naive_command(port)
    log_path = log_dir / f"{label}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Server(kind, label, f"http://127.0.0.1:{port}", proc, log_path, env)


def wait_ready(server: Server, timeout: float = START_TIMEOUT_S) -> None:
    """Until /readyz (ours) or /healthz (naive) answers 200; the log tail if it never does."""
    path = "/readyz" if server.kind == "ours" else "/healthz"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"{server.label} exited with {server.proc.returncode}:\n{server.log_tail()}"
            )
        try:
            if httpx.get(server.base + path, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{server.label} not ready in {timeout:.0f} s:\n{server.log_tail()}")


@contextmanager
def running(
    specs: Iterable[tuple[str, str, Path, Mapping[str, str]]], device: str
) -> Iterator[dict[str, Server]]:
    """Start several servers at once (kind, label, weights dir, env) and stop them all after."""
    log_dir = Path(tempfile.mkdtemp(prefix="colorize-bench-logs-"))
    stack = ExitStack()
    stack.callback(shutil.rmtree, log_dir, ignore_errors=True)
    with stack:
        servers: dict[str, Server] = {}
        for kind, label, weights_dir, overrides in specs:
            server = launch(kind, label, weights_dir, device, log_dir, overrides)
            stack.callback(server.stop)
            servers[label] = server
        for server in servers.values():
            wait_ready(server)
        yield servers
