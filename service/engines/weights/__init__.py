"""The published checkpoints: where they live (manifest), how they are read strictly (loading)
and fetched whole and verified (download), and what goes wrong with them (errors).

Callers use the package: `weights.locate(...)`, `weights.fetch(...)`, `weights.WeightsError`.
"""

from service.engines.weights.download import fetch, file_sha256, part_path
from service.engines.weights.errors import (
    DownloadError,
    IntegrityError,
    StorageError,
    UnknownModel,
    WeightsCorrupt,
    WeightsError,
    WeightsMismatch,
    WeightsNotFound,
)
from service.engines.weights.loading import (
    NETWORKS,
    check_state_dict,
    layout_problems,
    load_state_dict,
    network_for,
)
from service.engines.weights.manifest import (
    DDCOLOR_SOURCE,
    DEFAULT_FETCH,
    OFFICIAL,
    RICHZHANG_SOURCE,
    WeightsFile,
    entry_for,
    fix_command,
    locate,
    weights_path,
)

__all__ = [
    "DDCOLOR_SOURCE",
    "DEFAULT_FETCH",
    "NETWORKS",
    "OFFICIAL",
    "RICHZHANG_SOURCE",
    "DownloadError",
    "IntegrityError",
    "StorageError",
    "UnknownModel",
    "WeightsCorrupt",
    "WeightsError",
    "WeightsFile",
    "WeightsMismatch",
    "WeightsNotFound",
    "check_state_dict",
    "entry_for",
    "fetch",
    "file_sha256",
    "fix_command",
    "layout_problems",
    "load_state_dict",
    "locate",
    "network_for",
    "part_path",
    "weights_path",
]
