"""HEAD on any GET endpoint: answered as the GET would be, headers only (RFC 9110 §9.3.2)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        # The routes are declared for GET; the server knows the request was a HEAD and sends
        # no body either way, but the content-length stays the GET's.
        await self.app({**scope, "method": "GET"}, receive, headers_only)
