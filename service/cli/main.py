"""The `colorize-service` command (placeholder until subcommands land)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from service import __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="colorize-service")
    parser.add_argument("--version", action="version", version=f"colorize-service {__version__}")
    parser.parse_args(argv)
    return 0
