"""Errors of the ML layer."""


class MLError(Exception):
    """Base of errors raised by ``ml``; messages say what to fix."""


class ConfigValueError(MLError, ValueError):
    """A config field has a bad value. ``key`` names the field (``"size"``) or a path below
    the config that raised it (``(2, "name")``), so a TOML loader can point at its line; a
    ``ValueError``, so pydantic reports it as a validation error at that config's location."""

    def __init__(self, message: str, *, key: str | int | tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.key: tuple[str | int, ...] = key if isinstance(key, tuple) else (key,)
