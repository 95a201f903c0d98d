"""Upload and result bytes in an S3-compatible object store, behind a small async facade.

The client is boto3 (not minio-py): it is the reference S3 client, it reads credentials the way
every AWS tool does (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, profiles, and the web-identity
and instance-role providers a Kubernetes pod gets on EKS), its transfer manager does multipart
uploads of large files, and its retries and timeouts are configurable per client. minio-py
speaks the same protocol but has its own credential chain and retry policy, which operators of
managed S3 would have to learn separately. Both are blocking; calls run in a small thread pool
of our own, so a slow store never occupies the threads of the event loop's default executor.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from service.store.errors import ObjectNotFound, StoreUnavailable
from service.store.tracking import Tracker

T = TypeVar("T")
Payload = bytes | Path
"""What can be stored: bytes in memory, or a file streamed from disk."""
NOT_FOUND = frozenset({"NoSuchKey", "NotFound", "404"})


def describe(endpoint: str, bucket: str) -> str:
    """How the store is named in messages: the bucket and the endpoint's host, nothing else."""
    url = urlsplit(endpoint)
    return f"object store bucket {bucket!r} at {url.scheme}://{url.hostname}:{url.port or ''}"


@dataclass
class ObjectReader:
    """An object being read back: its size and type are known before the first chunk."""

    key: str
    size: int
    content_type: str
    _body: Any
    _store: ObjectStore

    async def chunks(self) -> AsyncIterator[bytes]:
        """The object's bytes in chunks of the store's chunk size; closes the body at the end."""
        try:
            while True:
                chunk: bytes = await self._store._run(
                    "get", self._body.read, self._store.chunk_bytes
                )
                if not chunk:
                    return
                yield chunk
        finally:
            self._body.close()

    def close(self) -> None:
        """Let go of the connection without reading the rest (a client that left)."""
        self._body.close()


class ObjectStore:
    """One bucket of an S3-compatible store: put, stream back, delete, presign, check."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        *,
        tracker: Tracker,
        session: boto3.Session | None = None,
        region: str | None = None,
        timeout_s: float = 5.0,
        create_bucket: bool = True,
        multipart_bytes: int = 16 * 1024 * 1024,
        chunk_bytes: int = 1024 * 1024,
        threads: int = 8,
    ) -> None:
        self.endpoint = endpoint
        self.bucket = bucket
        self.create_bucket = create_bucket
        self.chunk_bytes = chunk_bytes
        self._tracker = tracker
        session = session or boto3.Session()
        config = Config(
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            # Two attempts in all, so a store that accepts connections and never answers fails a
            # call within 2 x timeout_s (4 x for an upload: PUT waits for "100 Continue" first);
            # one that refuses connections fails at once.
            retries={"total_max_attempts": 2, "mode": "standard"},
            max_pool_connections=threads,
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            # botocore 1.36 began sending CRC checksums that several S3-compatible stores reject
            # (boto/boto3#4392); checksums only where the operation requires them.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client: Any = session.client(
            "s3",
            endpoint_url=endpoint,
            region_name=region or session.region_name or "us-east-1",
            config=config,
        )
        self._transfer = TransferConfig(
            multipart_threshold=multipart_bytes,
            multipart_chunksize=multipart_bytes,
            use_threads=False,  # already on one of our threads; parts go one after another
        )
        self._multipart_bytes = multipart_bytes
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="object-store")

    def __repr__(self) -> str:
        return f"ObjectStore({describe(self.endpoint, self.bucket)})"

    async def _run(self, op: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async with self._tracker.call("object_store", op):
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(self._pool, partial(fn, *args, **kwargs))
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code in NOT_FOUND and "Key" in kwargs:
                    raise ObjectNotFound(str(kwargs["Key"])) from None
                if code in NOT_FOUND and op == "head_bucket":
                    code = "NoSuchBucket"  # HEAD has no body: S3 answers a bare 404
                raise self._tracker.unavailable("object_store", op, exc, code) from None
            except (BotoCoreError, ValueError) as exc:
                raise self._tracker.unavailable("object_store", op, exc) from None

    async def ensure_bucket(self) -> None:
        """Make sure the bucket exists, creating it if it is missing and that is allowed."""
        try:
            await self._run("head_bucket", self._client.head_bucket, Bucket=self.bucket)
            return
        except StoreUnavailable as exc:
            if exc.code != "NoSuchBucket":
                raise
            if not self.create_bucket:
                raise StoreUnavailable(
                    "object_store",
                    f"{describe(self.endpoint, self.bucket)}: the bucket does not exist "
                    "(COLORIZE_OBJECT_STORE_CREATE_BUCKET is off)",
                ) from None
        params: dict[str, Any] = {"Bucket": self.bucket}
        region = self._client.meta.region_name
        if region and region != "us-east-1":  # S3 wants the region named, except us-east-1
            params["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            await self._run("create_bucket", self._client.create_bucket, **params)
        except StoreUnavailable as exc:
            if exc.code != "BucketAlreadyOwnedByYou":  # another replica won the race
                raise

    async def put(
        self, key: str, data: Payload, content_type: str = "application/octet-stream"
    ) -> int:
        """Store `data` under `key` (a file is streamed, in parts when large); its size."""
        extra = {"ContentType": content_type}
        if isinstance(data, Path):
            size = data.stat().st_size
            await self._run(
                "put",
                self._client.upload_file,
                str(data),
                self.bucket,
                key,
                ExtraArgs=extra,
                Config=self._transfer,
            )
            return size
        if len(data) >= self._multipart_bytes:
            await self._run(
                "put",
                self._client.upload_fileobj,
                io.BytesIO(data),
                self.bucket,
                key,
                ExtraArgs=extra,
                Config=self._transfer,
            )
        else:
            await self._run(
                "put", self._client.put_object, Bucket=self.bucket, Key=key, Body=data, **extra
            )
        return len(data)

    async def open(self, key: str) -> ObjectReader:
        """Start reading `key`; raises ObjectNotFound before any byte is promised."""
        response = await self._run("get", self._client.get_object, Bucket=self.bucket, Key=key)
        return ObjectReader(
            key=key,
            size=int(response.get("ContentLength", 0)),
            content_type=str(response.get("ContentType") or "application/octet-stream"),
            _body=response["Body"],
            _store=self,
        )

    async def get_file(self, key: str, path: Path) -> int:
        """Write the object `key` to `path` (streamed, in parts when large, never whole in
        memory); its size. Raises ObjectNotFound."""
        await self._run(
            "get",
            self._client.download_file,
            Bucket=self.bucket,
            Key=key,
            Filename=str(path),
            Config=self._transfer,
        )
        return path.stat().st_size

    async def get_bytes(self, key: str) -> bytes:
        """The whole object (uploads, which the API already bounded in size)."""
        reader = await self.open(key)
        return b"".join([chunk async for chunk in reader.chunks()])

    async def delete(self, keys: Iterable[str]) -> None:
        """Delete `keys` (missing ones are fine), in one request."""
        objects = [{"Key": key} for key in keys]
        if not objects:
            return
        response = await self._run(
            "delete",
            self._client.delete_objects,
            Bucket=self.bucket,
            Delete={"Objects": objects, "Quiet": True},
        )
        failed = [e for e in response.get("Errors", []) if e.get("Code") not in NOT_FOUND]
        if failed:
            raise StoreUnavailable(
                "object_store",
                f"{describe(self.endpoint, self.bucket)}: could not delete {failed[0].get('Key')!r}"
                f": {failed[0].get('Code')}",
            )

    async def presigned_get(self, key: str, expires_s: int = 300) -> str:
        """A URL that reads `key` without credentials until it expires (signed locally)."""
        url: str = await self._run(
            "presign",
            self._client.generate_presigned_url,
            "get_object",
            Params={"Bucket": self.bucket, "Key": key},
            ExpiresIn=expires_s,
        )
        return url

    async def check(self) -> None:
        """A cheap round trip (HEAD on the bucket): raises StoreUnavailable if it fails."""
        await self._run("head_bucket", self._client.head_bucket, Bucket=self.bucket)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()
