"""`colorize-service serve`'s server: the HTTP/1.1 protocol it speaks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import uvicorn

from service.api.app import create_app
from service.api.http11 import RefusingH11Protocol
from service.cli.serve import DrainingServer, check_environment
from service.settings import Settings, SettingsError
from tests.support.apps import scripted_engines


@pytest.mark.parametrize("http", ["auto", "h11"])
def test_the_server_speaks_http_through_the_refusing_protocol(http: str) -> None:
    app = create_app(Settings(), engines=scripted_engines(torch.device("cpu")))
    config = uvicorn.Config(app, http=http, log_config=None)  # type: ignore[arg-type]
    DrainingServer(config, app)
    config.load()
    assert config.http_protocol_class is RefusingH11Protocol


def test_an_unwritable_video_spool_directory_stops_the_start_naming_it(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    with pytest.raises(SettingsError, match="COLORIZE_VIDEO_SPOOL_DIR: cannot create"):
        check_environment(Settings(video_spool_dir=blocked / "spool"))
    check_environment(Settings(video_spool_dir=tmp_path / "spool"))
    assert (tmp_path / "spool").is_dir()
