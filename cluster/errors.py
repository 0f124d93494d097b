"""Errors of the cluster layer."""


class ClusterRuntimeError(Exception):
    """Base of errors raised inside a run; messages say what to fix."""
