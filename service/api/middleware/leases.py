"""Every request gets a lease (service/api/lease.py) and gives it back when it ends, whichever
way it ends: the body's memory as its answer starts, the result's once sent, and the upload's
answer counted once."""

from __future__ import annotations

from starlette.types import Message, Receive, Scope, Send

from service.api.lease import UPLOAD_PATHS, RequestLease, attach
from service.api.middleware.base import HttpMiddleware


class RequestLeases(HttpMiddleware):
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        svc = getattr(getattr(scope.get("app"), "state", None), "svc", None)
        client = scope.get("client")
        lease = RequestLease(
            upload=scope["method"] == "POST" and scope["path"] in UPLOAD_PATHS,
            client=str(client[0]) if client else "",
        )
        if svc is not None:
            lease.count = svc.stats.count_job
            lease.count_video = svc.stats.count_video_job
        lease.video = lease.upload and _content_type(scope).startswith(b"video/")
        attach(scope, lease)
        sent = False

        async def tracking(message: Message) -> None:
            nonlocal sent
            if message["type"] == "http.response.start":
                # Unless a job took it over, the body's bytes are not needed any more.
                lease.release_body()
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                sent = True

        try:
            await self.app(scope, receive, tracking)
        finally:
            lease.end(sent)


def _content_type(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bytes(value).strip().lower()
    return b""
