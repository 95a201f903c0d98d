"""A stand-in for the video side of /jobs in front of the real service, so that the page's
video flow can be driven in Chromium before (and independently of) the API that runs video
jobs: POST /jobs with a `video` part, GET /jobs/{id}, its result and DELETE answer with the
shapes of issue 21 (docs/web.md); every other request, photos included, goes to the service.

What a job does is scripted (`VideoScript`): refused at once, or queued, then running with
progress, then done (its result is `result`), failed, or held until cancelled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass
class Refusal:
    """An answer to the upload itself, as the service gives it: status and its JSON body."""

    status: int
    error: str
    detail: str
    retry_after: int | None = None


@dataclass
class VideoScript:
    """What the next video job does."""

    refuse: Refusal | None = None
    frames_total: int | None = 48
    frames_per_poll: int = 12
    fps: float = 24.0
    hold_at: int | None = None
    """Stay running at this many frames until a DELETE, then end cancelled."""
    fail: Refusal | None = None
    """End failed with this error (its status is what /colorize would have answered)."""
    result: bytes = b""


@dataclass
class FakeJob:
    id: str
    model: str
    polls: int = 0
    frames_done: int = 0
    state: str = "queued"
    cancel_requested: bool = False
    error: dict[str, Any] | None = None
    created: float = field(default_factory=time.time)


class FakeVideoJobs:
    """ASGI app: video jobs scripted here, the rest passed to `app`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.script = VideoScript()
        self.jobs: dict[str, FakeJob] = {}
        self.posts: list[dict[str, bytes]] = []
        """The fields of each video upload: a file part's bytes, a text field's UTF-8."""
        self.deleted: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        if method == "POST" and path == "/jobs":
            await self._post(scope, receive, send)
            return
        parts = path.strip("/").split("/")
        if parts[0] == "jobs" and len(parts) >= 2 and parts[1] in self.jobs:
            job = self.jobs[parts[1]]
            if method == "DELETE" and len(parts) == 2:
                response = self._delete(job)
            elif method == "GET" and len(parts) == 2:
                response = JSONResponse(self._poll(job))
            elif method == "GET" and parts[2:] == ["result"] and job.state == "done":
                response = Response(self.script.result, media_type="video/mp4")
            else:
                response = JSONResponse({"error": "not_found", "detail": "no such route"}, 404)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _post(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        fields: dict[str, bytes] = {}
        if b"multipart/form-data" in _header(scope, b"content-type"):
            async with Request(scope, replay).form() as form:
                for name, value in form.items():
                    if isinstance(value, UploadFile):
                        fields[name] = await value.read()
                    else:
                        fields[name] = str(value).encode()
        if "video" not in fields:
            sent = False  # a photo: the service reads the same body
            await self.app(scope, replay, send)
            return
        self.posts.append(fields)
        refusal = self.script.refuse
        if refusal is not None:
            headers = {"Retry-After": str(refusal.retry_after)} if refusal.retry_after else {}
            answer = {"error": refusal.error, "detail": refusal.detail}
            await JSONResponse(answer, refusal.status, headers=headers)(scope, replay, send)
            return
        job = FakeJob(id=f"video{len(self.jobs) + 1}", model=fields.get("model", b"").decode())
        self.jobs[job.id] = job
        response = JSONResponse(self._status(job), 202, headers={"Location": f"/jobs/{job.id}"})
        await response(scope, replay, send)

    def _poll(self, job: FakeJob) -> dict[str, Any]:
        """One GET: the job moves on by one step of its script."""
        script = self.script
        job.polls += 1
        if job.state in ("done", "failed", "cancelled"):
            return self._status(job)
        if job.cancel_requested and job.polls > 1:
            job.state = "cancelled"
        elif job.polls == 1:
            job.state = "queued"
        elif script.fail is not None and job.polls >= 3:
            job.state = "failed"
            job.error = {
                "error": script.fail.error,
                "detail": script.fail.detail,
                "status": script.fail.status,
            }
        else:
            job.state = "running"
            if job.polls > 2:
                job.frames_done += script.frames_per_poll
            if script.hold_at is not None:
                job.frames_done = min(job.frames_done, script.hold_at)
            total = script.frames_total
            if total is not None and job.frames_done >= total and script.hold_at is None:
                job.frames_done = total
                job.state = "done"
        return self._status(job)

    def _delete(self, job: FakeJob) -> Response:
        self.deleted.append(job.id)
        if job.state == "queued":
            job.state = "cancelled"
        elif job.state == "running":
            job.cancel_requested = True
        return JSONResponse(self._status(job))

    def _status(self, job: FakeJob) -> dict[str, Any]:
        script = self.script
        progress = None
        if job.state == "running":
            total = script.frames_total
            started = job.frames_done > 0
            left = (total - job.frames_done) / script.fps if total and started else None
            progress = {
                "frames_done": job.frames_done,
                "frames_total": total,
                "fps": script.fps if started else None,
                "seconds_left": left,
            }
        return {
            "id": job.id,
            "state": job.state,
            "model": job.model,
            "kind": "video",
            "position": 1 if job.state == "queued" else None,
            "timings": {},
            "error": job.error,
            "result_url": f"/jobs/{job.id}/result" if job.state == "done" else None,
            "result_note": None,
            "progress": progress,
            "cancel_requested": job.cancel_requested,
            "created": job.created,
        }


def _header(scope: Scope, name: bytes) -> bytes:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value)
    return b""


def posted_text(fields: dict[str, bytes]) -> dict[str, str]:
    """The text fields of an upload (the file parts left out)."""
    return {k: v.decode() for k, v in fields.items() if k not in ("video", "reference")}
