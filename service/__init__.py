"""A GPU colorization service that admits jobs by memory budget."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("colorize-service")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"
