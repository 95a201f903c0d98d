"""The `colorize-service` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from service import __version__
from service.settings import SettingsError


def build_parser() -> argparse.ArgumentParser:
    from service.cli import colorize, fetch, serve

    parser = argparse.ArgumentParser(
        prog="colorize-service",
        description="Colorize grayscale photos: an HTTP service and a batch command.",
    )
    parser.add_argument("--version", action="version", version=f"colorize-service {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve.add_parser(sub)
    colorize.add_parser(sub)
    fetch.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 0
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.handler(args)
    except SettingsError as exc:
        sys.stderr.write(f"colorize-service: {exc}\n")
        return 2
    return code
