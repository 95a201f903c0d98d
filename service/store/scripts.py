"""The Lua scripts that make each multi-key step of the shared store atomic.

Each script in `lua/` is loaded with `lib.lua` in front (helpers every script shares). Redis runs
a script as one command: no other client sees a record updated without its entry, or an entry
claimed without its record saying so. redis-py sends scripts by their SHA and loads them again
after a Redis restart (NOSCRIPT), so a restarted Redis needs nothing from us.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

NAMES = ("submit", "pull", "claim", "finish", "cancel", "touch", "tidy")


def source(name: str) -> str:
    """The full text of script `name`, helpers included."""
    lua = files("service.store") / "lua"
    return (lua / "lib.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


@dataclass(frozen=True)
class Scripts:
    """The registered scripts of one Redis client."""

    submit: AsyncScript
    pull: AsyncScript
    claim: AsyncScript
    finish: AsyncScript
    cancel: AsyncScript
    touch: AsyncScript
    tidy: AsyncScript

    @classmethod
    def register(cls, redis: Redis) -> Scripts:
        loaded: dict[str, Any] = {name: redis.register_script(source(name)) for name in NAMES}
        return cls(**loaded)


def pairs(flat: list[Any]) -> dict[str, str]:
    """A flat [field, value, ...] reply (HGETALL, an entry's fields) as a dict."""
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}
