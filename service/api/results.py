"""Sending a finished job's image: in chunks, noticing a client that leaves mid-way, so the
request's lease counts it cancelled and gives the result's memory back at once."""

from __future__ import annotations

import asyncio

from starlette.responses import Response
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
