"""Errors of the ML layer."""


class MLError(Exception):
    """Base of errors raised by ``ml``; messages say what to fix."""
