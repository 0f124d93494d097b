"""Command channels to the head node: the ``Remote`` protocol, and where callers import the
two that implement it, ``SSHRemote`` (SSH, Fabric: ``remote_ssh.py`` on the connection of
``remote_sshconn.py``) and ``LocalRemote`` (this machine: ``remote_local.py``), with their
errors and ``CommandResult`` (shared pieces: ``remote_common.py``).

- ``run``: a shell command with a timeout; optional bytes on its standard input (how secret
  files reach the head without appearing on any command line); for commands the caller knows
  are idempotent, ``retries`` after a dropped connection.
- ``stream_lines``: the stdout lines of a long-lived command as they arrive; closing the
  iterator stops the command.
- ``open_binary``: a command's stdout as a readable binary file (bulk transfers, e.g. the
  result puller), its stdin fed from bytes or from an iterable of chunks as they come.
- ``forward_port``: a port on 127.0.0.1 here that reaches a port on the head (the Ray
  dashboard and Jobs API).
- ``home`` / ``expand``: the head's home directory, so paths can be made absolute and quoted.
- ``reconnect`` / ``close``: drop the connection and open it again (nothing to do locally) /
  release it.

SSH host keys are checked: known_hosts is loaded and an unknown host is refused unless the
caller passes ``trust_new_host=True``, which records the key. Users and keys come only from
the SSH config and the ssh-agent; tether stores no key material. Agent forwarding is off
whatever the SSH config says.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import BinaryIO, Protocol

from .errors import CommandFailed, ConnectionLost, HostKeyError, RemoteError
from .remote_common import BinaryStdin, CommandResult, Stdin, backoff_s
from .remote_local import LocalRemote
from .remote_ssh import SSHRemote
from .remote_sshconn import OPEN_ATTEMPTS

__all__ = [
    "OPEN_ATTEMPTS",
    "BinaryStdin",
    "CommandFailed",
    "CommandResult",
    "ConnectionLost",
    "HostKeyError",
    "LocalRemote",
    "Remote",
    "RemoteError",
    "SSHRemote",
    "Stdin",
    "backoff_s",
]


class Remote(Protocol):
    """A command channel to the head node (SSH) or to this machine (local)."""

    name: str

    def run(
        self,
        command: str,
        *,
        timeout: float | None = None,
        check: bool = True,
        stdin: Stdin = None,
        retries: int = 0,
    ) -> CommandResult: ...

    def stream_lines(self, command: str, *, timeout: float | None = None) -> Iterator[str]: ...

    def open_binary(
        self, command: str, *, stdin: BinaryStdin = None, timeout: float | None = None
    ) -> AbstractContextManager[BinaryIO]: ...

    def forward_port(
        self, *, remote_port: int, remote_host: str = "127.0.0.1"
    ) -> AbstractContextManager[int]: ...

    def home(self) -> str: ...

    def expand(self, path: str) -> str: ...

    def reconnect(self) -> None: ...

    def close(self) -> None: ...
