"""The published checkpoints: which file each model needs, where it comes from, where it lives."""

from __future__ import annotations

import shlex
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from service.engines.weights.errors import UnknownModel, WeightsNotFound

RICHZHANG_SOURCE = "https://colorizers.s3.us-east-2.amazonaws.com"
"""richzhang/colorization's bucket: the eccv16 and siggraph17 checkpoints."""
DDCOLOR_SOURCE = "https://huggingface.co/piddnad/DDColor-models/resolve/main"
"""DDColor's Hugging Face repository, piddnad/DDColor-models."""


@dataclass(frozen=True)
class WeightsFile:
    """One published checkpoint: its model, official file name, size, SHA-256 and source."""

    model: str
    filename: str
    size: int
    sha256: str
    source: str
    """The official base URL: the file is `<source>/<filename>` unless a mirror is named."""

    def url(self, base_url: str | None = None) -> str:
        """The download URL: under `base_url` (a mirror of every file) if set, else the source."""
        return f"{(base_url or self.source).rstrip('/')}/{self.filename}"


OFFICIAL: Mapping[str, WeightsFile] = MappingProxyType(
    {
        "eccv16": WeightsFile(
            "eccv16",
            "colorization_release_v2-9b330a0b.pth",
            128_976_165,
            "9b330a0bae53f4ded77b1e23defbf78beaa09c10ebc4c4999e8e4f4a160b93f9",
            RICHZHANG_SOURCE,
        ),
        "siggraph17": WeightsFile(
            "siggraph17",
            "siggraph17-df00044c.pth",
            136_787_426,
            "df00044c0a4d7c3edcecf6f75437ce346a66e7a42612d9b968e1a7e17dbc6f66",
            RICHZHANG_SOURCE,
        ),
        "ddcolor": WeightsFile(
            "ddcolor",
            "ddcolor_modelscope.pth",
            911_950_059,
            "17c460d7e55b32a598370621d77173be59e03c24b0823f06821db23a50c263ce",
            DDCOLOR_SOURCE,
        ),
        "ddcolor-artistic": WeightsFile(
            "ddcolor-artistic",
            "ddcolor_artistic.pth",
            911_950_059,
            "a591ee5beedad36de703d8977e92d0c30c1eedc6453fd1b300f3b460842a23a9",
            DDCOLOR_SOURCE,
        ),
        "ddcolor-tiny": WeightsFile(
            "ddcolor-tiny",
            "ddcolor_paper_tiny.pth",
            220_393_145,
            "81dd643904f4664c3718513e3320ae3db0c567f0d3e18398606659adee7bfc17",
            DDCOLOR_SOURCE,
        ),
    }
)
"""Every published checkpoint, by engine name: richzhang/colorization's and DDColor's."""

DEFAULT_FETCH = ("eccv16", "siggraph17", "ddcolor-tiny")
"""What `fetch-weights` installs when no model is named (486 MB); the two large DDColor files
(912 MB each) come only by name or with --all."""


def fix_command(model: str, weights_dir: Path) -> str:
    """The shell command that installs `model`'s checkpoint into `weights_dir`, runnable as
    printed: the console script by its full path when it is not on PATH (a virtual environment
    that is not activated, as after `./scripts/serve.sh`)."""
    return f"{_program()} fetch-weights {model} --weights-dir {shlex.quote(str(weights_dir))}"


def offline_routes(model: str, weights_dir: Path) -> str:
    """How to install `model`'s checkpoint without reaching its source: by hand, or a mirror."""
    name = entry_for(model).filename
    return (
        f"offline, copy {name} into {weights_dir}, or set COLORIZE_WEIGHTS_BASE_URL to a mirror "
        "that holds it (http(s):// or file://)"
    )


def _program() -> str:
    if shutil.which("colorize-service"):
        return "colorize-service"
    script = Path(sys.executable).with_name("colorize-service")
    if script.is_file():
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m service"


def entry_for(model: str, manifest: Mapping[str, WeightsFile] = OFFICIAL) -> WeightsFile:
    """The manifest entry of `model`; UnknownModel names the known ones."""
    try:
        return manifest[model]
    except KeyError:
        raise UnknownModel(
            f"no weights for model {model!r}; known: {', '.join(manifest)}"
        ) from None


def weights_path(
    model: str, weights_dir: Path, manifest: Mapping[str, WeightsFile] = OFFICIAL
) -> Path:
    """Where `model`'s checkpoint belongs in `weights_dir` (under its official file name)."""
    return Path(weights_dir) / entry_for(model, manifest).filename


def locate(model: str, weights_dir: Path, manifest: Mapping[str, WeightsFile] = OFFICIAL) -> Path:
    """The checkpoint's path; WeightsNotFound names the file, the directory and the fix."""
    path = weights_path(model, weights_dir, manifest)
    if not path.is_file():
        raise WeightsNotFound(
            f"{model} weights not found: no file {path.name!r} in {path.parent}; "
            f"run `{fix_command(model, path.parent)}`, or {offline_routes(model, path.parent)}"
        )
    return path
