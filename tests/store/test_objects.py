"""The object store facade against a real S3 API server (SeaweedFS)."""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from service.store import ObjectNotFound, ObjectStore, StoreMetrics, StoreUnavailable, Tracker
from service.store.objects import describe
from tests.support.servers import free_port
from tests.support.services import ACCESS_KEY, SECRET_KEY, SeaweedServer, aws_session
from tests.support.store import BUCKET

pytestmark = pytest.mark.anyio
MiB = 1024 * 1024
Factory = Callable[..., ObjectStore]


@pytest.fixture
async def make_store() -> AsyncIterator[Factory]:
    made: list[ObjectStore] = []

    def make(
        endpoint: str, bucket: str = BUCKET, session: boto3.Session | None = None, **kw: Any
    ) -> ObjectStore:
        tracker = Tracker(
            {"object_store": describe(endpoint, bucket)}, StoreMetrics(), [SECRET_KEY]
        )
        store = ObjectStore(
            endpoint, bucket, tracker=tracker, session=session or aws_session(), **kw
        )
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose kernel completes the TCP handshake and then nothing ever answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


async def test_a_missing_bucket_is_created_when_allowed(
    seaweed: SeaweedServer, make_store: Factory
) -> None:
    store = make_store(seaweed.endpoint, f"made-{secrets.token_hex(4)}")
    await store.ensure_bucket()
    await store.ensure_bucket()  # again: already there
    await store.check()


async def test_a_missing_bucket_is_an_error_naming_it_when_creation_is_off(
    seaweed: SeaweedServer, make_store: Factory
) -> None:
    bucket = f"absent-{secrets.token_hex(4)}"
    store = make_store(seaweed.endpoint, bucket, create_bucket=False)
    with pytest.raises(StoreUnavailable) as info:
        await store.ensure_bucket()
    assert (
        bucket in info.value.detail and "COLORIZE_OBJECT_STORE_CREATE_BUCKET" in info.value.detail
    )


async def test_bytes_and_a_large_file_go_in_and_stream_back(
    seaweed: SeaweedServer, make_store: Factory, tmp_path: Path
) -> None:
    store = make_store(seaweed.endpoint, multipart_bytes=5 * MiB, chunk_bytes=MiB)
    prefix = f"objects-{secrets.token_hex(4)}"
    assert await store.put(f"{prefix}/small", b"small", "text/plain") == 5
    assert await store.get_bytes(f"{prefix}/small") == b"small"

    big = tmp_path / "big.bin"
    payload = secrets.token_bytes(11 * MiB)
    big.write_bytes(payload)
    assert await store.put(f"{prefix}/big", big, "video/mp4") == len(payload)
    reader = await store.open(f"{prefix}/big")
    assert (reader.size, reader.content_type) == (len(payload), "video/mp4")
    chunks = [chunk async for chunk in reader.chunks()]
    assert b"".join(chunks) == payload and max(len(c) for c in chunks) <= MiB
    head = await asyncio.to_thread(store._client.head_object, Bucket=BUCKET, Key=f"{prefix}/big")
    assert str(head["ETag"]).strip('"').endswith("-3")  # uploaded in three parts

    await store.delete([f"{prefix}/small", f"{prefix}/big", f"{prefix}/never-was"])
    with pytest.raises(ObjectNotFound):
        await store.open(f"{prefix}/big")


async def test_a_presigned_url_reads_the_object_without_credentials(
    seaweed: SeaweedServer, make_store: Factory
) -> None:
    store = make_store(seaweed.endpoint)
    key = f"presign-{secrets.token_hex(4)}/result"
    await store.put(key, b"result bytes", "image/png")
    url = await store.presigned_get(key, expires_s=60)
    assert SECRET_KEY not in url
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
    assert body == b"result bytes"


async def test_wrong_credentials_are_an_outage_whose_message_hides_them(
    seaweed: SeaweedServer, make_store: Factory
) -> None:
    wrong = boto3.Session(
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY[::-1],
        region_name="us-east-1",
    )
    store = make_store(seaweed.endpoint, session=wrong)
    with pytest.raises(StoreUnavailable) as info:
        await store.put("denied/key", b"x")
    assert info.value.code in ("SignatureDoesNotMatch", "AccessDenied", "InvalidAccessKeyId")
    assert BUCKET in info.value.detail
    assert SECRET_KEY not in info.value.detail and SECRET_KEY[::-1] not in info.value.detail


DEAD = ["refused", "silent"]


@pytest.mark.parametrize("how", DEAD)
async def test_a_dead_store_answers_with_a_typed_error_in_seconds(
    make_store: Factory, silent_port: int, how: str
) -> None:
    port = free_port() if how == "refused" else silent_port
    store = make_store(f"http://127.0.0.1:{port}", timeout_s=0.5)
    for call, bound in ((store.check(), 2), (store.put("any/key", b"x"), 4)):
        start = time.monotonic()
        with pytest.raises(StoreUnavailable) as info:
            await call
        elapsed = time.monotonic() - start
        # Two attempts, each at most one timeout (a PUT waits for "100 Continue", then reads),
        # and the backoff before the retry (under 1 s).
        assert elapsed < bound * 0.5 + 1.5, elapsed
        assert f"127.0.0.1:{port}" in info.value.detail and info.value.store == "object_store"
