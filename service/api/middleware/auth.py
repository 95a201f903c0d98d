"""The API key, checked before a byte of the body is read."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.middleware.base import HttpMiddleware
from service.api.middleware.refuse import refuse
from service.outcomes import Outcome

OPEN_PATHS = ("/livez", "/readyz", "/docs", "/redoc", "/openapi.json", "/favicon.ico", "/")
OPEN_PREFIXES = ("/static/",)


class ApiKey(HttpMiddleware):
    """401 for a request to a protected path without `Authorization: Bearer <key>`."""

    def __init__(
        self,
        app: ASGIApp,
        api_key: str | None,
        protect_metrics: bool = False,
        open_paths: Iterable[str] = OPEN_PATHS,
    ) -> None:
        super().__init__(app)
        self.api_key = api_key.encode() if api_key else None
        self.open_paths = set(open_paths)
        if not protect_metrics:
            self.open_paths.add("/metrics")

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.api_key is not None
            and not self._is_open(scope["path"])
            and not self._authorized(scope)
        ):
            detail = "a valid 'Authorization: Bearer <key>' is required"
            await refuse(scope, send, Outcome.UNAUTHORIZED, detail, {"www-authenticate": "Bearer"})
            return
        await self.app(scope, receive, send)

    def _is_open(self, path: str) -> bool:
        return path in self.open_paths or path.startswith(OPEN_PREFIXES)

    def _authorized(self, scope: Scope) -> bool:
        assert self.api_key is not None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                # compare_digest takes the same time wherever the first difference is.
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    token.strip(), self.api_key
                )
        return False
