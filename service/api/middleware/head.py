"""HEAD on any GET endpoint: answered as the GET would be, headers only (RFC 9110 §9.3.2)."""

from __future__ import annotations

from starlette.types import Message, Receive, Scope, Send

from service.api.middleware.base import HttpMiddleware


class HeadAsGet(HttpMiddleware):
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        # The routes are declared for GET; the server knows the request was a HEAD and sends
        # no body either way, but the content-length stays the GET's.
        await self.app({**scope, "method": "GET"}, receive, headers_only)
