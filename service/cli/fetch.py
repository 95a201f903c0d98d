"""`colorize-service fetch-weights`: download and verify the published checkpoints."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

from service.engines import weights
from service.settings import SettingsError, load_settings

EXIT_OK = 0
EXIT_FAILED = 1
"""A download, verification or write failed."""
EXIT_USAGE = 2
"""Unknown model or bad configuration, as argparse uses for bad arguments."""
EXIT_INTERRUPTED = 130


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Register `fetch-weights`; its handler is `args.handler(args) -> exit code`."""
    parser = subparsers.add_parser(
        "fetch-weights",
        help="download the published checkpoints (eccv16, siggraph17, DDColor)",
        description=(
            "Download checkpoints into the weights directory, verifying size and SHA-256. "
            "Files already present and correct are skipped; a broken download resumes where "
            "it stopped (this run retries, a later run continues from the kept .part file); "
            "a file appears under its official name only once verified."
        ),
    )
    parser.add_argument(
        "models",
        nargs="*",
        metavar="MODEL",
        help=(
            f"models to fetch, from {', '.join(weights.OFFICIAL)} "
            f"(default: {', '.join(weights.DEFAULT_FETCH)}, 486 MB; "
            "ddcolor and ddcolor-artistic are 912 MB each)"
        ),
    )
    parser.add_argument(
        "--all", action="store_true", help="fetch every published checkpoint (2.3 GB)"
    )
    parser.add_argument(
        "--weights-dir",
        type=Path,
        default=None,
        help="destination (default: COLORIZE_WEIGHTS_DIR or the user cache directory)",
    )
    parser.add_argument(
        "--base-url",
        default=None,
        help=(
            "a mirror holding every file under this URL (default: COLORIZE_WEIGHTS_BASE_URL; "
            "unset, each file comes from its official source)"
        ),
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (it only shows on a TTY)"
    )
    parser.set_defaults(handler=fetch_weights_command)
    return parser


def fetch_weights_command(
    args: argparse.Namespace, manifest: Mapping[str, weights.WeightsFile] = weights.OFFICIAL
) -> int:
    """Run `fetch-weights`; one line on stderr and a non-zero code when something fails."""
    if args.all and args.models:
        return _fail(EXIT_USAGE, "name models or use --all, not both")
    models: list[str] = (
        list(manifest)
        if args.all
        else list(args.models) or [m for m in weights.DEFAULT_FETCH if m in manifest]
    )
    unknown = [m for m in models if m not in manifest]
    if unknown:
        return _fail(
            EXIT_USAGE,
            f"no downloadable weights for {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(manifest)}",
        )
    try:
        settings = load_settings()
    except SettingsError as exc:
        return _fail(EXIT_USAGE, str(exc))
    weights_dir: Path = args.weights_dir or settings.weights_dir
    base_url: str | None = args.base_url or settings.weights_base_url
    try:
        paths = weights.fetch(models, base_url, weights_dir, manifest, not args.no_progress)
    except weights.WeightsError as exc:
        return _fail(EXIT_FAILED, str(exc))
    except KeyboardInterrupt:
        return _fail(
            EXIT_INTERRUPTED, "interrupted; the next fetch-weights resumes where this one stopped"
        )
    for model, path in zip(models, paths, strict=True):
        sys.stdout.write(f"{model}: {path}\n")
    return EXIT_OK


def _fail(code: int, message: str) -> int:
    # Written directly, not logged: the message must reach the user whatever logging is set to.
    line = " ".join(message.split())
    sys.stderr.write(f"colorize-service fetch-weights: error: {line}\n")
    return code
