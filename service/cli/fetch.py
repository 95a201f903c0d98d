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
        help="download the published eccv16/siggraph17 checkpoints",
        description=(
            "Download checkpoints into the weights directory, verifying size and SHA-256. "
            "Files already present and correct are skipped; nothing is left half-written."
        ),
    )
    parser.add_argument(
        "models",
        nargs="*",
        metavar="MODEL",
        help=f"models to fetch (default: all of {', '.join(weights.OFFICIAL)})",
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
        help="where the files are (default: COLORIZE_WEIGHTS_BASE_URL or the official bucket)",
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
    models: list[str] = list(args.models) or list(manifest)
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
    base_url: str = args.base_url or settings.weights_base_url
    try:
        paths = weights.fetch(models, base_url, weights_dir, manifest, not args.no_progress)
    except weights.WeightsError as exc:
        return _fail(EXIT_FAILED, str(exc))
    except KeyboardInterrupt:
        return _fail(EXIT_INTERRUPTED, "interrupted; no partial file was kept")
    for model, path in zip(models, paths, strict=True):
        sys.stdout.write(f"{model}: {path}\n")
    return EXIT_OK


def _fail(code: int, message: str) -> int:
    # Written directly, not logged: the message must reach the user whatever logging is set to.
    line = " ".join(message.split())
    sys.stderr.write(f"colorize-service fetch-weights: error: {line}\n")
    return code
