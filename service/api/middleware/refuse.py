"""How a middleware answers before the app: the outcome's status and error code from the one
table, a JSON body, and a closed connection (the body was not read)."""

from __future__ import annotations

import json

from starlette.types import Scope, Send

from service.api.lease import lease_of
from service.api.outcomes import answer
from service.outcomes import Outcome


async def refuse(
    scope: Scope,
    send: Send,
    outcome: Outcome,
    detail: str,
    headers: dict[str, str] | None = None,
    retry_after: int | None = None,
) -> None:
    """Answer `outcome` with `detail` and record it on the request's lease."""
    chosen = answer(outcome)
    lease = lease_of(scope)
    if lease is not None:
        lease.outcome = outcome
    body = json.dumps({"error": chosen.error, "detail": detail}).encode()
    extra = dict(headers or {})
    wait = retry_after if retry_after is not None else chosen.retry_after
    if wait is not None:
        extra["retry-after"] = str(wait)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
    # Close the connection: the unread body would otherwise be parsed as the next request.
    raw.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": chosen.status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
