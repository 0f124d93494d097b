"""Laptop side of tether: CLI, config, remotes, embedded local cluster, doctor.

This package never imports torch (see docs/architecture.md).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tether")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
