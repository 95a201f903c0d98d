"""Every limit and knob of the service, read from `COLORIZE_*` environment variables.

One `Settings`, composed of its parts by concern (core, clients, the shared store, video), each
validated where it is declared; `load_settings` turns every problem into one message that names
the variable.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

from service.settings.clients import ClientSettings
from service.settings.core import (
    INPUT_FORMATS,
    MIN_RENDER_SIZE,
    OUTPUT_FORMATS,
    RENDER_SIZE_MULTIPLE,
    WEIGHTS_URL_SCHEMES,
    CoreSettings,
    default_weights_dir,
)
from service.settings.shared import SharedStoreSettings
from service.settings.video import VIDEO_CONTAINERS, VideoSettings

SECRET_FIELDS = frozenset({"api_key", "redis_url"})
"""Settings whose value is never echoed in an error (it may carry a password)."""

__all__ = [
    "INPUT_FORMATS",
    "MIN_RENDER_SIZE",
    "OUTPUT_FORMATS",
    "RENDER_SIZE_MULTIPLE",
    "VIDEO_CONTAINERS",
    "WEIGHTS_URL_SCHEMES",
    "Settings",
    "SettingsError",
    "default_weights_dir",
    "load_settings",
]


class Settings(VideoSettings, SharedStoreSettings, ClientSettings, CoreSettings):
    """Service configuration; each field is read from `COLORIZE_<NAME>`."""

    # hide_input_in_errors: a ValidationError's text would otherwise echo a rejected value, and
    # COLORIZE_REDIS_URL carries the Redis password. load_settings() echoes non-secret values.
    model_config = SettingsConfigDict(
        env_prefix="COLORIZE_", extra="ignore", hide_input_in_errors=True
    )


def _shown(value: object) -> object:
    """`value` as an error may quote it: a URL's password (a misplaced credential) masked."""
    if isinstance(value, str) and "@" in value:
        url = urlsplit(value)
        if url.password:
            return value.replace(url.password, "***")
    return value


class SettingsError(RuntimeError):
    """A `COLORIZE_*` variable has an invalid value; the message names it."""


def load_settings(**overrides: object) -> Settings:
    """Build Settings, turning validation errors into one message naming each bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            if not err["loc"]:
                # A check across fields: its message names them; its input is every setting
                # (the API key included), so it is not echoed.
                problems.append(str(err["msg"]))
                continue
            field = str(err["loc"][0])
            got = "value hidden" if field in SECRET_FIELDS else f"got {_shown(err.get('input'))!r}"
            problems.append(f"COLORIZE_{field.upper()}: {err['msg']} ({got})")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None
    except SourceError as exc:  # a value the environment source could not even parse
        raise SettingsError(f"invalid configuration: {exc}") from None
