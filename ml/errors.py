"""The one error tree of tether, and the errors of the ML layer.

``TetherError`` is the base of every error tether shows a user. The CLI prints its
``message``, then ``hint:`` with what to do next, and never a traceback (``TETHER_DEBUG=1``
shows one). It lives here, in the lowest layer (no dependencies, no torch), so that each
package's errors subclass it: ``MLError`` below, ``tether.cluster.errors.ClusterRuntimeError``
and the laptop's errors in ``tether.client.errors``. Errors of the libraries underneath
(pydantic, ``OSError``, ``json``, paramiko) are turned into one of these where they cross into
tether (``tether.client.errors.from_library_error`` is the CLI's last line of that).
"""

from __future__ import annotations


class TetherError(Exception):
    """Base of every error the CLI shows to a user without a traceback.

    ``message`` says what is wrong; ``hint`` is the next step for the user (a command to run,
    a key to fix), or None. ``str()`` gives both, the hint on its own line.
    """

    def __init__(self, message: str = "", *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class MLError(TetherError):
    """Base of errors raised by ``ml``; messages say what to fix."""


class ConfigValueError(MLError, ValueError):
    """A config field has a bad value. ``key`` names the field (``"size"``) or a path below
    the config that raised it (``(2, "name")``), so a TOML loader can point at its line; a
    ``ValueError``, so pydantic reports it as a validation error at that config's location."""

    def __init__(self, message: str, *, key: str | int | tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.key: tuple[str | int, ...] = key if isinstance(key, tuple) else (key,)
