"""Settings: every knob from COLORIZE_*, validated at start-up, errors naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.engines.catalog import ENGINE_NAMES
from service.settings import Settings, SettingsError, default_weights_dir, load_settings

BAD = [
    ("COLORIZE_MEMORY_THRESHOLD", "1.5"),
    ("COLORIZE_MEMORY_THRESHOLD", "0"),
    ("COLORIZE_QUEUE_SIZE", "0"),
    ("COLORIZE_DEVICE", "tpu"),
    ("COLORIZE_DEVICE", "cuda:x"),
    ("COLORIZE_DEFAULT_MODEL", "dalle"),
    ("COLORIZE_ALLOWED_FORMATS", "PNG,SVG"),
    ("COLORIZE_MAX_PIXELS", "999999999"),
    ("COLORIZE_PORT", "70000"),
    ("COLORIZE_CLEAR_CACHE", "sometimes"),
    ("COLORIZE_WEIGHTS_BASE_URL", "mirror.example.com/weights"),
    ("COLORIZE_FETCH_MISSING", "perhaps"),
    ("COLORIZE_FETCH_MISSING_TIMEOUT_S", "0"),
]


@pytest.mark.parametrize(("var", "value"), BAD, ids=[f"{v}={x}" for v, x in BAD])
def test_a_bad_variable_fails_fast_naming_it(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert var in str(info.value) and repr(value) in str(info.value)


def test_an_unknown_default_model_lists_every_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLORIZE_DEFAULT_MODEL", "dalle")
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "COLORIZE_DEFAULT_MODEL" in message and "unknown model 'dalle'" in message
    assert "choose from " + ", ".join(ENGINE_NAMES) in message


def test_every_engine_can_be_the_default() -> None:
    assert [Settings(default_model=name).default_model for name in ENGINE_NAMES] == list(
        ENGINE_NAMES
    )


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COLORIZE_QUEUE_SIZE", "3")
    monkeypatch.setenv("COLORIZE_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("COLORIZE_ALLOWED_FORMATS", "jpg, png")
    monkeypatch.setenv("COLORIZE_API_KEY", "")
    s = load_settings()
    assert (s.queue_size, s.weights_dir, s.allowed_formats) == (3, tmp_path, ("JPEG", "PNG"))
    assert s.api_key is None


def test_default_weights_dir_follows_xdg_cache_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_weights_dir() == tmp_path / "colorize-service"
    assert Settings().weights_dir == tmp_path / "colorize-service"


def test_api_key_is_never_shown_in_repr() -> None:
    s = Settings(api_key="hunter2")  # type: ignore[arg-type]
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        (" https://mirror.example.com/w ", "https://mirror.example.com/w"),
        ("file:///srv/weights", "file:///srv/weights"),
    ],
    ids=["unset", "empty", "https", "file"],
)
def test_weights_base_url_unset_means_each_files_own_source(
    value: str | None, expected: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLORIZE_WEIGHTS_BASE_URL", raising=False)
    if value is not None:
        monkeypatch.setenv("COLORIZE_WEIGHTS_BASE_URL", value)
    assert load_settings().weights_base_url == expected


def test_a_video_upload_larger_than_a_jobs_disk_is_refused_at_start() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(video_max_upload_bytes=2 * 1024**3, video_max_job_disk_bytes=1024**3)
    message = str(caught.value)
    assert "COLORIZE_VIDEO_MAX_UPLOAD_BYTES" in message
    assert "COLORIZE_VIDEO_MAX_JOB_DISK_BYTES" in message


def test_video_jobs_settings_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("COLORIZE_VIDEO_WORKERS", "2")
    monkeypatch.setenv("COLORIZE_VIDEO_QUEUE_SIZE", "0")
    monkeypatch.setenv("COLORIZE_VIDEO_SPOOL_DIR", str(tmp_path))
    settings = load_settings()
    assert (settings.video_workers, settings.video_queue_size) == (2, 0)
    assert settings.video_spool_dir == tmp_path
    assert settings.video_max_upload_bytes == 4 * 1024**3
