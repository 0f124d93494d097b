"""Command channels to the head node: ``SSHRemote`` (Fabric) and ``LocalRemote`` (invoke).

Both run a shell command with a timeout and return a ``CommandResult``. SSH host keys are
checked: known_hosts is loaded and an unknown host is refused unless the caller passes
``trust_new_host=True``, which records the key (Fabric's own default silently accepts it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import invoke
import paramiko
from fabric import Config, Connection

from .errors import CommandFailed, HostKeyError, RemoteError


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class Remote(Protocol):
    name: str

    def run(
        self, command: str, *, timeout: float | None = None, check: bool = True
    ) -> CommandResult: ...

    def close(self) -> None: ...


def _invoke(
    run: Callable[..., invoke.Result],
    name: str,
    command: str,
    *,
    timeout: float | None,
    check: bool,
) -> CommandResult:
    """Run ``command`` with invoke's or Fabric's ``run``; one result and error shape for both."""
    try:
        res = run(command, hide=True, warn=True, timeout=timeout, in_stream=False)
    except invoke.CommandTimedOut as exc:
        raise RemoteError(
            f"command on {name} timed out after {timeout}s: {command}",
            hint="raise the timeout or check what the command waits for",
        ) from exc
    out = CommandResult(command=command, exit_code=res.exited, stdout=res.stdout, stderr=res.stderr)
    if check and not out.ok:
        raise CommandFailed(
            command=command, exit_code=out.exit_code, output=out.stdout + out.stderr, host=name
        )
    return out


class LocalRemote:
    """The embedded default: the head node is this machine."""

    name = "localhost"

    def run(
        self, command: str, *, timeout: float | None = None, check: bool = True
    ) -> CommandResult:
        return _invoke(invoke.run, self.name, command, timeout=timeout, check=check)

    def close(self) -> None:
        pass


class SSHRemote:
    """A head node reached over SSH through a Host alias of the user's SSH config."""

    def __init__(
        self,
        *,
        host: str,
        ssh_config: str | Path | None = None,
        trust_new_host: bool = False,
        connect_timeout: float = 10.0,
    ) -> None:
        self.name = host
        path = Path(ssh_config).expanduser() if ssh_config else Path("~/.ssh/config").expanduser()
        config = Config(runtime_ssh_path=str(path)) if path.is_file() else Config()
        self._conn = Connection(host, config=config, connect_timeout=int(max(1, connect_timeout)))
        self._trust_new_host = trust_new_host
        self._known_hosts = self._known_hosts_files()
        client = self._conn.client
        for f in self._known_hosts:
            if f.is_file():
                client.load_host_keys(str(f))
        if trust_new_host:
            # AutoAddPolicy saves a new key to the file loaded last: the user's first one.
            self._known_hosts[0].parent.mkdir(parents=True, exist_ok=True)
            self._known_hosts[0].touch(exist_ok=True)
            client.load_host_keys(str(self._known_hosts[0]))
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        else:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())

    @property
    def address(self) -> str:
        return f"{self._conn.user}@{self._conn.host}:{self._conn.port}"

    def _known_hosts_files(self) -> list[Path]:
        files = self._conn.ssh_config.get("userknownhostsfile")
        if files:
            names = files if isinstance(files, list) else str(files).split()
            return [Path(n).expanduser() for n in names]
        return [Path("~/.ssh/known_hosts").expanduser()]

    def open(self) -> None:
        if self._conn.is_connected:
            return
        try:
            self._conn.open()
        except paramiko.BadHostKeyException as exc:
            raise HostKeyError(
                f"host key of {self.name} ({self.address}) does NOT match known_hosts: "
                "the head was replaced, or someone is in the middle",
                hint=f"if the head was rebuilt, remove the old key: ssh-keygen -R "
                f"'[{self._conn.host}]:{self._conn.port}' and connect again",
            ) from exc
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise HostKeyError(
                    f"host key of {self.name} ({self.address}) is not in known_hosts "
                    f"({', '.join(map(str, self._known_hosts))}); refusing to connect",
                    hint=f"verify the head's fingerprint and run `ssh {self.name}` once, "
                    "or pass --trust-new-host to record it",
                ) from exc
            raise RemoteError(
                f"SSH to {self.name} ({self.address}) failed: {exc}",
                hint=f"check that `ssh {self.name} true` works from this shell",
            ) from exc
        except (TimeoutError, OSError) as exc:
            raise RemoteError(
                f"cannot reach {self.name} ({self.address}): {exc.strerror or exc}",
                hint="is the head node up? `ray up cluster.yaml` starts it; "
                f"check HostName/Port for {self.name} in your SSH config",
            ) from exc

    def run(
        self, command: str, *, timeout: float | None = None, check: bool = True
    ) -> CommandResult:
        self.open()
        try:
            return _invoke(self._conn.run, self.name, command, timeout=timeout, check=check)
        except (OSError, paramiko.SSHException) as exc:
            raise RemoteError(
                f"SSH to {self.name} dropped while running {command!r}: {exc}",
                hint="run the command again; check the head with `tether doctor`",
            ) from exc

    def close(self) -> None:
        self._conn.close()
