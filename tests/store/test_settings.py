"""The shared store's settings: all three or none, validated at start-up, secrets never shown."""

from __future__ import annotations

import pytest

from service.settings import SettingsError, load_settings
from service.store import StoreConfig

REDIS = "redis://:hunter2-redis@redis.internal:6379/0"
STORE = "http://seaweed.internal:8333"

INCOMPLETE = [
    ({"COLORIZE_REDIS_URL": REDIS}, ["COLORIZE_OBJECT_STORE_URL", "COLORIZE_OBJECT_STORE_BUCKET"]),
    (
        {"COLORIZE_REDIS_URL": REDIS, "COLORIZE_OBJECT_STORE_URL": STORE},
        ["COLORIZE_OBJECT_STORE_BUCKET"],
    ),
    (
        {"COLORIZE_OBJECT_STORE_URL": STORE, "COLORIZE_OBJECT_STORE_BUCKET": "jobs"},
        ["COLORIZE_REDIS_URL"],
    ),
    ({"COLORIZE_OBJECT_STORE_BUCKET": "jobs"}, ["COLORIZE_REDIS_URL", "COLORIZE_OBJECT_STORE_URL"]),
]


@pytest.mark.parametrize(
    ("env", "missing"), INCOMPLETE, ids=["redis only", "no bucket", "no redis", "bucket only"]
)
def test_half_a_shared_configuration_fails_fast_naming_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], missing: list[str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert all(name in message.split(" missing")[0] for name in missing), message
    assert "hunter2" not in message


BAD = [
    ("COLORIZE_REDIS_URL", "http://:hunter2-redis@redis.internal:6379", "redis://"),
    ("COLORIZE_REDIS_URL", "hunter2-redis", "redis://"),
    ("COLORIZE_OBJECT_STORE_URL", "ftp://seaweed.internal", "http://"),
    ("COLORIZE_OBJECT_STORE_URL", "http://AKIA:hunter2-aws@s3.internal", "AWS_SECRET_ACCESS_KEY"),
    ("COLORIZE_OBJECT_STORE_BUCKET", "Jobs_Bucket", "bucket name"),
    ("COLORIZE_SHARED_PREFIX", "a:b", "letters"),
    ("COLORIZE_SHARED_QUEUE_JOBS", "0", "greater than or equal"),
    ("COLORIZE_SHARED_MAX_DELIVERIES", "0", "greater than or equal"),
    ("COLORIZE_SHARED_HEARTBEAT_S", "0", "greater than"),
]


@pytest.mark.parametrize(("var", "value", "says"), BAD, ids=[f"{v}={x}" for v, x, _ in BAD])
def test_a_bad_shared_setting_is_named_and_a_secret_is_not_echoed(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, says: str
) -> None:
    monkeypatch.setenv("COLORIZE_REDIS_URL", REDIS)
    monkeypatch.setenv("COLORIZE_OBJECT_STORE_URL", STORE)
    monkeypatch.setenv("COLORIZE_OBJECT_STORE_BUCKET", "jobs")
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert var in message and says in message, message
    assert "hunter2" not in message


def test_a_heartbeat_key_must_outlive_two_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLORIZE_SHARED_HEARTBEAT_S", "10")
    monkeypatch.setenv("COLORIZE_SHARED_CLAIM_AFTER_S", "15")
    with pytest.raises(SettingsError, match=r"COLORIZE_SHARED_CLAIM_AFTER_S .* twice"):
        load_settings()


def test_the_shared_store_is_off_by_default_and_on_with_all_three(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert not load_settings().shared_store
    monkeypatch.setenv("COLORIZE_REDIS_URL", REDIS.replace("redis://", "rediss://"))
    monkeypatch.setenv("COLORIZE_OBJECT_STORE_URL", STORE + "/")
    monkeypatch.setenv("COLORIZE_OBJECT_STORE_BUCKET", "jobs")
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    settings = load_settings()
    assert settings.shared_store and settings.object_store_url == STORE
    config = StoreConfig.from_settings(settings)
    assert (config.bucket, config.prefix, config.region) == ("jobs", "colorize", "eu-west-3")
    assert config.redis_url.get_secret_value().startswith("rediss://")
    # The defaults claim a dead replica's work within 30 s: key expiry plus one scan.
    assert config.claim_after_s + config.heartbeat_s <= 30
    for shown in (repr(settings), str(settings.model_dump()), repr(config)):
        assert "hunter2" not in shown
