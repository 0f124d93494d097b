"""Errors of the cluster layer: every one is a ``TetherError`` (``tether.ml.errors``), so the
CLI shows it as a message and a hint, like the laptop's own errors."""

from tether.ml.errors import TetherError


class ClusterRuntimeError(TetherError):
    """Base of errors raised inside a run; messages say what to fix."""
