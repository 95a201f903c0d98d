"""First run: fetch the checkpoints the service needs at start-up when they are missing."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from service.engines import weights
from service.settings import Settings

logger = logging.getLogger(__name__)


def fetch_missing(
    settings: Settings,
    models: Iterable[str],
    weights_dir: Path | None = None,
    manifest: Mapping[str, weights.WeightsFile] | None = None,
) -> list[str]:
    """Download the checkpoints of `models` absent from the weights directory; return problems.

    Only missing files are fetched: a file present but wrong is the loader's to report, never
    silently replaced at start-up. Models without published weights (exemplar) are skipped.
    The whole call ends within `settings.fetch_missing_timeout_s`; a failure is logged with the
    command that fetches the file and returned, never raised, so the service still starts.
    """
    if not settings.fetch_missing:
        return []
    manifest = weights.OFFICIAL if manifest is None else manifest
    directory = Path(weights_dir or settings.weights_dir)
    wanted = [
        m
        for m in dict.fromkeys(models)
        if m in manifest and not weights.weights_path(m, directory, manifest).exists()
    ]
    deadline = time.monotonic() + settings.fetch_missing_timeout_s
    problems = []
    for model in wanted:
        entry = manifest[model]
        logger.info(
            "%s weights missing from %s; fetching %s (%d MB)",
            model,
            directory,
            entry.url(settings.weights_base_url),
            entry.size // 1_000_000,
        )
        try:
            weights.fetch(
                [model],
                settings.weights_base_url,
                directory,
                manifest,
                progress=False,
                deadline=deadline,
            )
        except weights.WeightsError as exc:
            problem = f"{exc}; run `{weights.fix_command(model, directory)}`"
            logger.warning("could not fetch %s weights: %s", model, problem)
            problems.append(problem)
    return problems
