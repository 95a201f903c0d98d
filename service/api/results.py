"""Sending a finished job's result: an image in chunks, noticing a client that leaves mid-way,
so the request's lease counts it cancelled and gives the result's memory back at once; a video
from its file."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path

from starlette.responses import FileResponse, Response
from starlette.types import Receive, Scope, Send

from service.api.bridge import disconnected

CHUNK_BYTES = 256 * 1024


class ResultResponse(Response):
    """The image bytes as a response that stops when the client is gone."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        gone = asyncio.ensure_future(disconnected(receive))
        try:
            body = memoryview(self.body)
            for start in range(0, max(1, len(body)), CHUNK_BYTES):
                if gone.done():
                    return  # no final message: the lease sees an answer that was never sent
                end = start + CHUNK_BYTES
                await send(
                    {
                        "type": "http.response.body",
                        "body": bytes(body[start:end]),
                        "more_body": end < len(body),
                    }
                )
        finally:
            gone.cancel()


class ResultFile(FileResponse):
    """A video result sent from its file (Range requests included, so a player can seek);
    `release` lets retention delete the file once the response is over, however it ends."""

    def __init__(
        self,
        path: Path,
        *,
        media_type: str,
        headers: Mapping[str, str],
        release: Callable[[], None] | None,
    ) -> None:
        super().__init__(path, media_type=media_type, headers=headers)
        self.release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.release is not None:
                self.release()
