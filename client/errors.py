"""Errors raised by the laptop side. Each says what happened and what to do next."""

from __future__ import annotations


class TetherError(Exception):
    """Base of every error the CLI shows to a user without a traceback.

    ``hint`` is the next step for the user (a command to run, a key to fix).
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


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


class ConnectionLost(RemoteError):
    """The network path to the head failed: the SSH connection dropped, or connecting timed
    out, was refused or reset. Transient: reconnect and resume a stream, or run an idempotent
    command again (``run(..., retries=N)`` does that)."""


class SyncError(TetherError):
    """Pulling a run's results failed: the run's folder is gone on the head, another pull
    holds the destination, or the head's sync agent failed or sent something malformed."""
