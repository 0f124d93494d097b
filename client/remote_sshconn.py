"""The SSH connection under ``SSHRemote``: one Fabric ``Connection`` to a Host alias of the
user's SSH config, opened with retries on transient network errors, and the channels on it.

SSH host keys are checked: known_hosts is loaded and an unknown host is refused unless the
caller passes ``trust_new_host=True``, which records the key (Fabric's own default silently
accepts it). Users and keys come only from the SSH config and the ssh-agent; tether stores no
key material. Agent forwarding is off whatever the SSH config says.
"""

from __future__ import annotations

import contextlib
import errno
import threading
import time
from pathlib import Path

import paramiko
from fabric import Config, Connection
from paramiko.ssh_exception import NoValidConnectionsError

from .errors import ConnectionLost, HostKeyError, RemoteError
from .remote_common import backoff_s

OPEN_ATTEMPTS = 3  # open() tries this many times on transient network errors
CHANNEL_ERRORS = (OSError, EOFError, paramiko.SSHException)
_TRANSIENT_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EPIPE,
    }
)


def is_transient(exc: BaseException) -> bool:
    """A network failure worth another attempt: timeout, refused, reset, closed mid-handshake.
    Never host-key or authentication errors."""
    if isinstance(exc, paramiko.AuthenticationException | paramiko.BadHostKeyException):
        return False
    if isinstance(exc, TimeoutError | ConnectionError | EOFError | NoValidConnectionsError):
        return True
    if isinstance(exc, OSError):
        return exc.errno in _TRANSIENT_ERRNOS
    if isinstance(exc, paramiko.SSHException):
        # The server hung up during the handshake (sshd restarting, MaxStartups throttling).
        return "protocol banner" in str(exc) or _is_transient_cause(exc)
    return False


def _is_transient_cause(exc: BaseException) -> bool:
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_transient(cause)


class SSHConnection:
    """One connection to ``host`` carrying every command, stream, tunnel and SFTP session.
    It opens on first use; a dropped one is opened again by the next ``open()``."""

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
        # Agent forwarding stays off: the explicit argument beats `ForwardAgent yes` in the SSH
        # config, and commands run on channels tether opens without asking for it.
        overrides = {"forward_agent": False}
        config = (
            Config(overrides=overrides, runtime_ssh_path=str(path))
            if path.is_file()
            else Config(overrides=overrides)
        )
        self._conn = Connection(
            host,
            config=config,
            connect_timeout=int(max(1, connect_timeout)),
            forward_agent=False,
        )
        self._connect_timeout = connect_timeout
        self._lock = threading.RLock()
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

    # ------------------------------------------------------------------ open and close

    def open(self) -> None:
        """Connect, unless connected. Transient network failures (timeout, refused, reset)
        are tried again, ``OPEN_ATTEMPTS`` attempts in all with backoff; host-key and
        authentication failures are not. Raises ``HostKeyError``, ``ConnectionLost`` (the
        head could not be reached) or ``RemoteError``."""
        with self._lock:
            if self._conn.is_connected:
                return
            self.discard()  # a dropped transport, if any
            for attempt in range(OPEN_ATTEMPTS):
                try:
                    self._open_once(attempts=attempt + 1)
                    return
                except ConnectionLost:
                    self.discard()
                    if attempt + 1 == OPEN_ATTEMPTS:
                        raise
                    time.sleep(backoff_s(attempt))

    def _open_once(self, *, attempts: int) -> None:
        try:
            self._conn.open()
        except paramiko.BadHostKeyException as exc:
            raise HostKeyError(
                f"host key of {self.name} ({self.address}) does NOT match known_hosts: "
                "the head was replaced, or someone is in the middle",
                hint=f"if the head was rebuilt, remove the old key: ssh-keygen -R "
                f"'[{self._conn.host}]:{self._conn.port}' and connect again",
            ) from exc
        except paramiko.AuthenticationException as exc:
            raise RemoteError(
                f"SSH to {self.name} ({self.address}): authentication failed ({exc})",
                hint="tether uses only the keys your SSH config (IdentityFile) and ssh-agent "
                f"offer: check that `ssh {self.name} true` works from this shell",
            ) from exc
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise HostKeyError(
                    f"host key of {self.name} ({self.address}) is not in known_hosts "
                    f"({', '.join(map(str, self._known_hosts))}); refusing to connect",
                    hint=f"verify the head's fingerprint and run `ssh {self.name}` once, "
                    "or pass --trust-new-host to record it",
                ) from exc
            if is_transient(exc):
                raise self._unreachable(exc, attempts) from exc
            raise RemoteError(
                f"SSH to {self.name} ({self.address}) failed: {exc}",
                hint=f"check that `ssh {self.name} true` works from this shell",
            ) from exc
        except (OSError, EOFError) as exc:
            if is_transient(exc):
                raise self._unreachable(exc, attempts) from exc
            raise RemoteError(
                f"cannot reach {self.name} ({self.address}): {exc}",
                hint=f"check HostName/Port for {self.name} in your SSH config",
            ) from exc

    def _unreachable(self, exc: BaseException, attempts: int) -> ConnectionLost:
        cause = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        return ConnectionLost(
            f"cannot reach {self.name} ({self.address}){tries}: {cause}",
            hint="is the head node up? `ray up cluster.yaml` starts it; "
            f"check HostName/Port for {self.name} in your SSH config",
        )

    def discard(self) -> None:
        """Drop the connection and its SFTP session without raising (it may be dead)."""
        with self._lock:
            with contextlib.suppress(Exception):
                self._conn.close()
            with contextlib.suppress(Exception):
                self._conn.client.close()  # Fabric skips this when the transport is dead

    def reconnect(self) -> None:
        """Close the connection and open it again (after a ``ConnectionLost``)."""
        with self._lock:
            self.discard()
            self.open()

    # ------------------------------------------------------------------ channels

    def lost(self, command: str, exc: BaseException | None) -> ConnectionLost:
        """The error for ``command`` cut by a dropped connection (``exc``: the cause)."""
        cause = (str(exc) or type(exc).__name__) if exc is not None else "the connection closed"
        return ConnectionLost(
            f"SSH connection to {self.name} ({self.address}) lost while running "
            f"{command!r}: {cause}",
            hint=f"reconnect and try again; if it keeps dropping check the network and "
            f"`ssh {self.name} true`",
        )

    def dropped(self, command: str, exc: BaseException | None) -> ConnectionLost:
        """``lost``, after dropping the dead connection: paramiko closes its channels a moment
        before it marks the transport inactive, and the next command must not try the old
        one."""
        self.discard()
        return self.lost(command, exc)

    def sftp(self) -> paramiko.SFTPClient:
        """The SFTP session of the open connection (opened on first use, reused after)."""
        self.open()
        try:
            return self._conn.sftp()
        except CHANNEL_ERRORS as exc:
            raise self.lost("sftp", exc) from exc

    def session(self, command: str, *, window_size: int | None = None) -> paramiko.Channel:
        """A session channel running ``command`` (agent forwarding never requested);
        ``window_size``: a larger flow-control window, for bulk data."""
        self.open()
        transport = self._conn.transport
        chan = None
        try:
            chan = transport.open_session(window_size=window_size, timeout=self._connect_timeout)
            chan.exec_command(command)
            return chan
        except CHANNEL_ERRORS as exc:
            if chan is not None:
                chan.close()
            if transport.is_active():
                raise RemoteError(
                    f"{self.name} refused a new SSH session for {command!r}: {exc}",
                    hint="too many sessions at once? check MaxSessions in the head's sshd_config",
                ) from exc
            raise self.lost(command, exc) from exc

    def direct_channel(self, target: tuple[str, int], peer: tuple[str, int]) -> paramiko.Channel:
        """A direct-tcpip channel to ``target`` as seen from the head (a port forward)."""
        self.open()
        return self._conn.transport.open_channel(
            "direct-tcpip", target, peer, timeout=self._connect_timeout
        )
