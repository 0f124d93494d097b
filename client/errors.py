"""Errors raised by the laptop side. Each says what happened and what to do next.

They are ``TetherError``s, the one base of tether's error tree (``tether.ml.errors``; the
cluster runtime's errors derive from it too), which the CLI prints as ``error: <message>``
and ``hint: <what to do>``. ``from_library_error`` maps the errors of the libraries below
(``OSError``, ``json``, pydantic, paramiko) that reach the CLI to the same form.
"""

from __future__ import annotations

from tether.ml.errors import TetherError

__all__ = [
    "ClusterError",
    "CommandFailed",
    "ConfigError",
    "ConnectionLost",
    "DashboardRefused",
    "HostKeyError",
    "RemoteError",
    "SyncError",
    "TetherError",
    "from_library_error",
]


class ConfigError(TetherError):
    """``tether.toml`` (or an experiment spec) is missing, malformed or invalid."""


class RemoteError(TetherError):
    """A command on the head node (or the local remote) could not be run."""


class HostKeyError(RemoteError):
    """The head's SSH host key is unknown or does not match known_hosts."""


class CommandFailed(RemoteError):
    """A remote command ran and exited non-zero; carries the command, code and last lines."""

    def __init__(
        self, *, command: str, exit_code: int, output: str, host: str, tail_lines: int = 10
    ) -> None:
        last = "\n".join(output.rstrip().splitlines()[-tail_lines:])
        message = f"command on {host} exited {exit_code}: {command}"
        if last:
            message += "\n  last output:\n" + "\n".join("    " + ln for ln in last.splitlines())
        super().__init__(message)
        self.command = command
        self.exit_code = exit_code
        self.output = output
        self.host = host


class ClusterError(TetherError):
    """The Ray cluster (embedded or remote) could not be started or reached."""


class DashboardRefused(ClusterError):
    """The Ray dashboard rejected tether's credentials (HTTP 401/403): retrying cannot help;
    the hint says how to pass the cluster's token."""


class ConnectionLost(RemoteError):
    """The network path to the head failed: the SSH connection dropped, or connecting timed
    out, was refused or reset. Transient: reconnect and resume a stream, or run an idempotent
    command again (``run(..., retries=N)`` does that)."""


class StreamSilent(RemoteError):
    """A streamed command printed nothing for its timeout: it may be stuck, or the
    connection half-open (a reader that expects regular output may run it again)."""


class SyncError(TetherError):
    """Pulling a run's results failed: the run's folder is gone on the head, another pull
    holds the destination, or the head's sync agent failed or sent something malformed."""


def from_library_error(exc: BaseException) -> TetherError | None:
    """The ``TetherError`` a user should see for an error of a library below tether that got
    as far as the CLI, or None for anything else (a bug: the CLI shows its traceback).

    ``OSError`` (a missing file, a folder that cannot be written), ``json`` errors, pydantic
    ``ValidationError`` and paramiko's ``SSHException`` become one message and a hint.
    """
    if isinstance(exc, TetherError):
        return exc
    if isinstance(exc, OSError):
        return _os_error(exc)
    if isinstance(exc, UnicodeDecodeError):
        return TetherError(
            f"a file is not UTF-8 text ({exc.reason} at byte {exc.start})",
            hint="give a UTF-8 text file",
        )
    import json

    if isinstance(exc, json.JSONDecodeError):
        return TetherError(
            f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
            hint="fix the file, or give the JSON file tether wrote",
        )
    module = type(exc).__module__.split(".")[0]
    if module in ("pydantic", "pydantic_core"):  # pydantic's ValidationError lives in its core
        return _validation_error(exc)
    if module == "paramiko":
        return RemoteError(
            f"SSH to the head failed: {type(exc).__name__}: {_first_line(exc)}",
            hint="check the profile's host and that the head is up: `tether doctor`",
        )
    return None


def _os_error(exc: OSError) -> TetherError:
    where = f"{exc.filename}: " if exc.filename else ""
    what = exc.strerror or _first_line(exc) or type(exc).__name__
    if isinstance(exc, FileNotFoundError):
        hint = "check the path (relative paths start from the current folder)"
    elif isinstance(exc, PermissionError):
        hint = "check the permissions, or choose a folder you can write (e.g. --out)"
    elif isinstance(exc, IsADirectoryError | NotADirectoryError | FileExistsError):
        hint = "give a file where a file is expected and a folder where a folder is"
    elif isinstance(exc, ConnectionError | TimeoutError):
        return RemoteError(f"{where}{what}", hint="check the network and the head: `tether doctor`")
    else:
        hint = "rerun with TETHER_DEBUG=1 for the full traceback if the cause is unclear"
    return TetherError(f"{where}{what}", hint=hint)


def _validation_error(exc: BaseException) -> TetherError:
    errors = getattr(exc, "errors", lambda: [])()
    lines = [
        f"{'.'.join(str(p) for p in e.get('loc', ())) or '(top level)'}: {e.get('msg', '')}"
        for e in errors[:5]
    ]
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    title = getattr(exc, "title", "input")
    return TetherError(
        f"{title} is invalid: " + "; ".join(lines) + more,
        hint="fix the named fields; the formats are in docs/",
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
