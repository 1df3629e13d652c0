"""The installed package's version, read from its metadata (one source: ``pyproject.toml``)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("xkd")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"
