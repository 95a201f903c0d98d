"""Every call to Redis or the object store goes through `Tracker.call`: timed, counted, turned
into a typed error, and reflected in health (what `/readyz` shows while a store is down).

Health follows the calls themselves, so it turns red at the first failed call and green at the
first one that succeeds after the store came back: no separate prober to drift from reality.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from redis.exceptions import RedisError

from service.store.errors import StoreError, StoreName, StoreUnavailable, redact
from service.store.metrics import StoreMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Health:
    """Whether both stores answered their last call, and why not."""

    reasons: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.reasons


class Tracker:
    """Times calls, maps failures to StoreUnavailable, and remembers each store's last outcome."""

    def __init__(
        self,
        describe: dict[StoreName, str],
        metrics: StoreMetrics | None = None,
        secrets: Iterable[str | None] = (),
    ) -> None:
        self.describe = describe
        """How each store is named in messages: `redis at host:port`, `bucket b at http://...`."""
        self.metrics = metrics
        self._secrets = tuple(s for s in secrets if s)
        self._down: dict[StoreName, str] = {}

    def health(self) -> Health:
        return Health(tuple(f"{store}: {reason}" for store, reason in sorted(self._down.items())))

    def unavailable(
        self, store: StoreName, op: str, exc: BaseException, code: str | None = None
    ) -> StoreUnavailable:
        """`exc` (a client library's error) as a StoreUnavailable naming the store, not secrets."""
        if isinstance(exc, StoreUnavailable):
            return exc
        text = str(exc) or type(exc).__name__
        detail = redact(f"{self.describe[store]}: {op} failed: {text}", self._secrets)
        return StoreUnavailable(store, detail, code)

    def succeeded(self, store: StoreName) -> None:
        if self._down.pop(store, None) is not None:
            log.warning("%s is reachable again", self.describe[store])

    def failed(self, store: StoreName, error: StoreUnavailable) -> None:
        if store not in self._down:
            log.warning("%s", error.detail)
        self._down[store] = error.detail

    @asynccontextmanager
    async def call(self, store: StoreName, op: str) -> AsyncIterator[None]:
        """Run one operation on `store`; any connection-level failure becomes StoreUnavailable."""
        start = time.perf_counter()
        ok = True
        try:
            yield
        except StoreUnavailable as exc:
            ok = False
            self.failed(store, exc)
            raise
        except StoreError:
            self.succeeded(store)  # not found, queue full: the store answered
            raise
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            ok = False
            error = self.unavailable(store, op, exc)
            self.failed(store, error)
            raise error from None
        else:
            self.succeeded(store)
        finally:
            if self.metrics is not None:
                self.metrics.observe_call(store, op, time.perf_counter() - start, ok)
