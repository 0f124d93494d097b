"""Command channels to the head node: ``SSHRemote`` (SSH, Fabric) and ``LocalRemote`` (here).

Both implement ``Remote``:

- ``run``: a shell command with a timeout; optional bytes on its standard input (how secret
  files reach the head without appearing on any command line); for commands the caller knows
  are idempotent, ``retries`` after a dropped connection.
- ``stream_lines``: the stdout lines of a long-lived command as they arrive; closing the
  iterator stops the command.
- ``open_binary``: a command's stdout as a readable binary file (bulk transfers, e.g. the
  result puller), its stdin fed from bytes.
- ``forward_port``: a port on 127.0.0.1 here that reaches a port on the head (the Ray
  dashboard and Jobs API).
- ``home`` / ``expand``: the head's home directory, so paths can be made absolute and quoted.

SSH host keys are checked: known_hosts is loaded and an unknown host is refused unless the
caller passes ``trust_new_host=True``, which records the key (Fabric's own default silently
accepts it). Users and keys come only from the SSH config and the ssh-agent; tether stores no
key material. Agent forwarding is off whatever the SSH config says.

Fabric opens and configures the connection; commands run on paramiko channels of it (and
locally with ``subprocess``) rather than through invoke's ``run``, whose ``in_stream`` feeds
one byte per 10 ms and decodes each byte on its own, so binary or multi-byte input arrives
corrupted.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import select
import selectors
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import paramiko
from fabric import Config, Connection
from paramiko.ssh_exception import NoValidConnectionsError

from .errors import CommandFailed, ConnectionLost, HostKeyError, RemoteError
from .portforward import PortForward

_log = logging.getLogger(__name__)

OPEN_ATTEMPTS = 3  # SSHRemote.open tries this many times on transient network errors
BACKOFF_S = 0.5  # first wait before another attempt; doubles each time (0.5 s, 1 s, 2 s...)
_CHUNK = 65536
_STDERR_TAIL_BYTES = 64 * 1024  # what stream_lines keeps of stderr for CommandFailed
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
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
_CHANNEL_ERRORS = (OSError, EOFError, paramiko.SSHException)

Stdin = bytes | bytearray | memoryview | str | None
BinaryStdin = Stdin | Iterable[bytes]  # open_binary: an iterable is fed chunk by chunk


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

    def forward_port(
        self, *, remote_port: int, remote_host: str = "127.0.0.1"
    ) -> AbstractContextManager[int]: ...

    def home(self) -> str: ...

    def expand(self, path: str) -> str: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- helpers


def backoff_s(attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (0-based): 0.5, 1, 2, ..."""
    return BACKOFF_S * 2**attempt


def _as_bytes(stdin: Stdin) -> bytes | None:
    if stdin is None:
        return None
    if isinstance(stdin, str):
        return stdin.encode("utf-8")
    return bytes(stdin)


def _text(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", "replace")


def _expand(path: str, home: Callable[[], str]) -> str:
    if path == "~":
        return home()
    if path.startswith("~/"):
        return home().rstrip("/") + path[1:]
    return path


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _wait_s(deadline: float | None, *, cap: float = 0.5) -> float:
    """How long to block before looking again: at most ``cap``, never past ``deadline``."""
    if deadline is None:
        return cap
    return max(0.0, min(cap, deadline - time.monotonic()))


def _expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _keep_tail(buf: bytearray, data: bytes) -> None:
    buf += data
    if len(buf) > _STDERR_TAIL_BYTES:
        del buf[: len(buf) - _STDERR_TAIL_BYTES]


class _LineBuffer:
    """Splits a byte stream into text lines (no newline) as chunks arrive."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        *lines, rest = self._buf.split(b"\n")
        self._buf = rest
        return [_text(line).removesuffix("\r") for line in lines]

    def flush(self) -> list[str]:
        """The last line when the stream ended without a newline."""
        if not self._buf:
            return []
        line, self._buf = self._buf, bytearray()
        return [_text(line).removesuffix("\r")]


def _checked(result: CommandResult, *, check: bool, host: str) -> CommandResult:
    if check and not result.ok:
        raise CommandFailed(
            command=result.command,
            exit_code=result.exit_code,
            output=result.stdout + result.stderr,
            host=host,
        )
    return result


def _timed_out(host: str, command: str, timeout: float | None) -> RemoteError:
    return RemoteError(
        f"command on {host} timed out after {timeout}s: {command}",
        hint="raise the timeout or check what the command waits for",
    )


def _silent(host: str, command: str, timeout: float | None) -> RemoteError:
    return RemoteError(
        f"no output for {timeout}s from a stream on {host}: {command}",
        hint="the command stopped printing; check it on the head, or pass a longer timeout",
    )


def _is_transient(exc: BaseException) -> bool:
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
    return cause is not None and cause is not exc and _is_transient(cause)


# --------------------------------------------------------------------------- local


def _popen(
    command: str, *, stdin: int, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    # Own session and process group: a timeout or an early close stops the command's children
    # too (``cd x && sleep 60`` forks; killing only bash would leave sleep behind).
    return subprocess.Popen(
        ["bash", "-c", command],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env=env,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop ``proc``'s process group if it still runs (TERM, then KILL after 2 s); close pipes."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


class LocalRemote:
    """The embedded default: the head node is this machine.

    Commands run with ``bash -c`` in their own process group, so a timeout, an early close of
    a stream or Ctrl-C stops the command and its children.
    """

    name = "localhost"

    def __init__(self, *, env: Mapping[str, str] | None = None) -> None:
        """``env``: variables set for every command on top of this process's environment
        (the local profile passes the embedded cluster's loopback setting, so a command that
        connects to it, such as ``python -m tether.cluster.stream``, stays on 127.0.0.1)."""
        self._home: str | None = None
        self._env = {**os.environ, **env} if env else None

    def run(
        self,
        command: str,
        *,
        timeout: float | None = None,
        check: bool = True,
        stdin: Stdin = None,
        retries: int = 0,
    ) -> CommandResult:
        """Run ``command``; raise ``CommandFailed`` on a non-zero exit when ``check``.

        ``stdin`` (bytes, or str sent as UTF-8) is written to the command's standard input,
        which is then closed; without it the command reads an empty input. ``retries`` is
        accepted for the ``Remote`` protocol: here there is no connection to lose.
        """
        del retries
        data = _as_bytes(stdin)
        proc = _popen(
            command, stdin=subprocess.DEVNULL if data is None else subprocess.PIPE, env=self._env
        )
        try:
            out, err = proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise _timed_out(self.name, command, timeout) from exc
        finally:
            _stop(proc)
        result = CommandResult(
            command=command, exit_code=proc.returncode, stdout=_text(out), stderr=_text(err)
        )
        return _checked(result, check=check, host=self.name)

    def stream_lines(self, command: str, *, timeout: float | None = None) -> Iterator[str]:
        """Yield the stdout lines of ``command`` (no newline) as it prints them.

        Raises ``CommandFailed`` (with the last stderr lines) when it exits non-zero, and
        ``RemoteError`` when it prints nothing for ``timeout`` seconds (None: wait forever).
        Closing the iterator early stops the command. The command's stdin is empty.
        """
        proc = _popen(command, stdin=subprocess.DEVNULL, env=self._env)
        assert proc.stdout is not None and proc.stderr is not None
        lines, err = _LineBuffer(), bytearray()
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(proc.stdout, selectors.EVENT_READ, "out")
                sel.register(proc.stderr, selectors.EVENT_READ, "err")
                deadline = _deadline(timeout)
                while sel.get_map():
                    ready = sel.select(None if deadline is None else _wait_s(deadline, cap=1.0))
                    if not ready and _expired(deadline):
                        raise _silent(self.name, command, timeout)
                    for key, _ in ready:
                        data = os.read(key.fd, _CHUNK)
                        if not data:
                            sel.unregister(key.fileobj)
                            continue
                        deadline = _deadline(timeout)
                        if key.data == "out":
                            yield from lines.feed(data)
                        else:
                            _keep_tail(err, data)
            yield from lines.flush()
            code = proc.wait()
            if code != 0:
                raise CommandFailed(
                    command=command, exit_code=code, output=_text(err), host=self.name
                )
        finally:
            _stop(proc)

    def open_binary(
        self, command: str, *, stdin: BinaryStdin = None, timeout: float | None = None
    ) -> AbstractContextManager[BinaryIO]:
        """Run ``command`` and yield its stdout as a readable binary file (buffered).

        ``stdin`` (bytes, str sent as UTF-8, or an iterable of bytes chunks consumed as they
        come, e.g. a request that depends on what stdout said) is fed to the command from a
        thread, then closed.
        ``timeout``: seconds a read may wait for output (None: forever), then ``RemoteError``.
        Leaving the block normally reads what is left of stdout and checks the exit status:
        non-zero raises ``CommandFailed`` with the last lines of stderr. Leaving it with an
        exception stops the command and its children.
        """
        return _local_binary(self, command, stdin=stdin, timeout=timeout)

    @contextmanager
    def forward_port(self, *, remote_port: int, remote_host: str = "127.0.0.1") -> Iterator[int]:
        """The head is this machine: yields ``remote_port`` itself, no tunnel."""
        if remote_host not in _LOOPBACK:
            raise ValueError(
                f"LocalRemote forwards only loopback ports, not {remote_host}:{remote_port}"
            )
        yield remote_port

    def home(self) -> str:
        """This user's home directory."""
        if self._home is None:
            self._home = str(Path.home())
        return self._home

    def expand(self, path: str) -> str:
        """``~`` or a leading ``~/`` replaced by ``home()``; any other path unchanged."""
        return _expand(path, self.home)

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- SSH

# stream_lines runs its command through this bash wrapper: the command gets its own process
# group, and a watcher kills that group (TERM, KILL 3 s later) when the channel's stdin
# reaches EOF, which happens when we close the channel or the connection drops. Without a
# pty sshd never signals the command, so an idle `tail -f` or `sleep` would otherwise outlive
# the stream. `--norc`: the login shell already read ~/.bashrc; a bash started by sshd would
# read it again (slow with pyenv/conda init).
_STREAM_WRAPPER = (
    'exec 3<&0 </dev/null; set -m; bash --norc -c "$1" 3<&- & pid=$!; set +m; '
    '{ while IFS= read -r -u 3 -d "" _; do :; done; kill -TERM -- "-$pid"; sleep 3; '
    'kill -KILL -- "-$pid"; } >/dev/null 2>&1 & '
    'watcher=$!; wait "$pid"; rc=$?; kill "$watcher" 2>/dev/null; exit "$rc"'
)


def _stream_command(command: str) -> str:
    return f"bash --norc -c {shlex.quote(_STREAM_WRAPPER)} tether-stream {shlex.quote(command)}"


class SSHRemote:
    """A head node reached over SSH through a Host alias of the user's SSH config.

    One connection carries every command, stream, tunnel and SFTP session. It opens on first
    use; a dropped one is opened again by the next call (``reconnect()`` forces it).
    """

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
        self._home: str | None = None
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

    # ------------------------------------------------------------------ connection

    def open(self) -> None:
        """Connect, unless connected. Transient network failures (timeout, refused, reset)
        are tried again, ``OPEN_ATTEMPTS`` attempts in all with backoff; host-key and
        authentication failures are not. Raises ``HostKeyError``, ``ConnectionLost`` (the
        head could not be reached) or ``RemoteError``."""
        with self._lock:
            if self._conn.is_connected:
                return
            self._discard()  # a dropped transport, if any
            for attempt in range(OPEN_ATTEMPTS):
                try:
                    self._open_once(attempts=attempt + 1)
                    return
                except ConnectionLost:
                    self._discard()
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
            if _is_transient(exc):
                raise self._unreachable(exc, attempts) from exc
            raise RemoteError(
                f"SSH to {self.name} ({self.address}) failed: {exc}",
                hint=f"check that `ssh {self.name} true` works from this shell",
            ) from exc
        except (OSError, EOFError) as exc:
            if _is_transient(exc):
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

    def _discard(self) -> None:
        """Drop the connection and its SFTP session without raising (it may be dead)."""
        with self._lock:
            with contextlib.suppress(Exception):
                self._conn.close()
            with contextlib.suppress(Exception):
                self._conn.client.close()  # Fabric skips this when the transport is dead

    def reconnect(self) -> None:
        """Close the connection and open it again (after a ``ConnectionLost``)."""
        with self._lock:
            self._discard()
            self.open()

    def close(self) -> None:
        self._discard()

    def sftp(self) -> paramiko.SFTPClient:
        """The SFTP session of the open connection (opened on first use, reused after)."""
        self.open()
        try:
            return self._conn.sftp()
        except _CHANNEL_ERRORS as exc:
            raise self._lost("sftp", exc) from exc

    def _lost(self, command: str, exc: BaseException | None) -> ConnectionLost:
        cause = (str(exc) or type(exc).__name__) if exc is not None else "the connection closed"
        return ConnectionLost(
            f"SSH connection to {self.name} ({self.address}) lost while running "
            f"{command!r}: {cause}",
            hint=f"reconnect and try again; if it keeps dropping check the network and "
            f"`ssh {self.name} true`",
        )

    def _session(self, command: str, *, window_size: int | None = None) -> paramiko.Channel:
        """A session channel running ``command`` (agent forwarding never requested);
        ``window_size``: a larger flow-control window, for bulk data."""
        self.open()
        transport = self._conn.transport
        chan = None
        try:
            chan = transport.open_session(window_size=window_size, timeout=self._connect_timeout)
            chan.exec_command(command)
            return chan
        except _CHANNEL_ERRORS as exc:
            if chan is not None:
                chan.close()
            if transport.is_active():
                raise RemoteError(
                    f"{self.name} refused a new SSH session for {command!r}: {exc}",
                    hint="too many sessions at once? check MaxSessions in the head's sshd_config",
                ) from exc
            raise self._lost(command, exc) from exc

    def _direct_channel(self, target: tuple[str, int], peer: tuple[str, int]) -> paramiko.Channel:
        self.open()
        return self._conn.transport.open_channel(
            "direct-tcpip", target, peer, timeout=self._connect_timeout
        )

    # ------------------------------------------------------------------ commands

    def run(
        self,
        command: str,
        *,
        timeout: float | None = None,
        check: bool = True,
        stdin: Stdin = None,
        retries: int = 0,
    ) -> CommandResult:
        """Run ``command`` on the head with the login shell; wait ``timeout`` s at most.

        ``stdin`` (bytes, or str sent as UTF-8) is written to the command's standard input,
        which is then closed; send secrets this way, never on the command line. Without it
        the command reads an empty input.

        ``retries``: when the connection drops (or reconnecting times out, is refused or
        reset), reconnect and run the command again, up to ``retries`` more times, waiting
        0.5 s, 1 s, 2 s... in between. Pass it only for idempotent commands: a dropped
        command may have run in part. A non-zero exit is never retried.

        Raises ``CommandFailed`` on a non-zero exit when ``check``, ``ConnectionLost`` when
        the connection is still lost after the retries, ``RemoteError`` on a timeout.
        """
        data = _as_bytes(stdin)
        for attempt in range(retries + 1):
            try:
                result = self._run_once(command, timeout=timeout, stdin=data)
                break
            except ConnectionLost as exc:
                if attempt == retries:
                    if not retries:
                        raise
                    raise ConnectionLost(
                        f"{exc.message} (after {retries + 1} attempts)", hint=exc.hint
                    ) from exc
                _log.info("%s; retrying in %.1fs", exc.message, backoff_s(attempt))
                self._discard()
                time.sleep(backoff_s(attempt))
        return _checked(result, check=check, host=self.name)

    def _run_once(
        self, command: str, *, timeout: float | None, stdin: bytes | None
    ) -> CommandResult:
        chan = self._session(command)
        transport = chan.get_transport()
        out, err = bytearray(), bytearray()
        deadline = _deadline(timeout)
        try:
            if stdin:
                feed = threading.Thread(target=_feed_chunks, args=(chan, (stdin,)), daemon=True)
                feed.start()
            else:
                chan.shutdown_write()
            while True:
                while chan.recv_ready():
                    out += chan.recv(_CHUNK)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(_CHUNK)
                ended = chan.eof_received or chan.closed
                if ended and not (chan.recv_ready() or chan.recv_stderr_ready()):
                    if chan.exit_status_ready():
                        break
                    # Output is over; the exit status follows (or the command closed its
                    # output and still runs).
                    chan.status_event.wait(_wait_s(deadline))
                elif not ended:
                    select.select([chan], [], [], _wait_s(deadline))
                if _expired(deadline):
                    raise _timed_out(self.name, command, timeout)
        except (OSError, EOFError) as exc:  # a read failed under us
            raise self._lost(command, exc) from exc
        finally:
            chan.close()
        code = chan.exit_status
        if code == -1 and not transport.is_active():
            raise self._lost(command, transport.get_exception())
        return CommandResult(command=command, exit_code=code, stdout=_text(out), stderr=_text(err))

    def stream_lines(self, command: str, *, timeout: float | None = None) -> Iterator[str]:
        """Yield the stdout lines of the long-lived ``command`` (no newline) as they arrive.

        The command runs under ``bash`` on the head with an empty stdin, in its own process
        group; closing the iterator early (or a dropped connection) stops it.

        Raises ``CommandFailed`` (with the last stderr lines) when it exits non-zero,
        ``ConnectionLost`` when the connection drops mid-stream (reconnect and resume), and
        ``RemoteError`` when it prints nothing for ``timeout`` seconds (None: wait forever).
        """
        chan = self._session(_stream_command(command))
        transport = chan.get_transport()
        lines, err = _LineBuffer(), bytearray()
        deadline = _deadline(timeout)
        try:
            while True:
                got = False
                while chan.recv_ready():
                    got = True
                    yield from lines.feed(chan.recv(_CHUNK))
                while chan.recv_stderr_ready():
                    got = True
                    _keep_tail(err, chan.recv_stderr(_CHUNK))
                if got:
                    deadline = _deadline(timeout)
                    continue
                if chan.eof_received or chan.closed:
                    if chan.exit_status_ready():
                        break
                    chan.status_event.wait(_wait_s(deadline))
                else:
                    select.select([chan], [], [], _wait_s(deadline))
                if _expired(deadline):
                    raise _silent(self.name, command, timeout)
            code = chan.exit_status
            if code == -1 and not transport.is_active():
                raise self._lost(command, transport.get_exception())
            yield from lines.flush()
            if code != 0:
                raise CommandFailed(
                    command=command, exit_code=code, output=_text(err), host=self.name
                )
        except (OSError, EOFError) as exc:
            raise self._lost(command, exc) from exc
        finally:
            chan.close()

    def open_binary(
        self, command: str, *, stdin: BinaryStdin = None, timeout: float | None = None
    ) -> AbstractContextManager[BinaryIO]:
        """Run ``command`` on the head and yield its stdout as a readable binary file (buffered).

        ``stdin`` (bytes, str sent as UTF-8, or an iterable of bytes chunks consumed as they
        come, e.g. a request that depends on what stdout said) is fed to the command from a
        thread, then closed.
        ``timeout``: seconds a read may wait for output (None: forever), then ``RemoteError``.
        Reading raises ``ConnectionLost`` when the connection drops (never a short read that looks
        complete). Leaving the block normally reads what is left of stdout and checks the exit
        status: non-zero raises ``CommandFailed`` with the last lines of stderr. Leaving it with
        an exception closes the channel (the command then dies on its next write).
        """
        return _ssh_binary(self, command, stdin=stdin, timeout=timeout)

    @contextmanager
    def forward_port(self, *, remote_port: int, remote_host: str = "127.0.0.1") -> Iterator[int]:
        """Yield a port on 127.0.0.1 here whose connections reach ``remote_host:remote_port``
        as seen from the head (like ``ssh -L``). The port is free and bound before it is
        yielded; a connection made after a drop reconnects first. Used for the Ray dashboard
        and Jobs API."""
        self.open()
        forward = PortForward(
            open_channel=self._direct_channel, name=self.name, target=(remote_host, remote_port)
        )
        try:
            yield forward.port
        finally:
            forward.close()

    def home(self) -> str:
        """The remote user's home directory (asked once, then cached)."""
        if self._home is None:
            home = self.run('printf "%s" "$HOME"', timeout=30, retries=2).stdout.strip()
            if not home.startswith("/"):
                raise RemoteError(
                    f"cannot tell the home directory on {self.name}: $HOME is {home!r}",
                    hint=f"check the login environment with `ssh {self.name} 'echo $HOME'`",
                )
            self._home = home
        return self._home

    def expand(self, path: str) -> str:
        """``~`` or a leading ``~/`` replaced by ``home()``; any other path unchanged."""
        return _expand(path, self.home)


# --------------------------------------------------------------------------- binary streams
#
# ``open_binary`` (on both remotes): a command's stdout as a readable binary file, for bulk
# transfers (the result puller streams files through it). Bytes arrive as sent, nothing is
# decoded; reading never holds more than one buffer in memory.

BINARY_BUFFER = 1 << 20  # the reader's buffer
_BINARY_WINDOW = 16 * 1024 * 1024  # SSH flow-control window of a binary session (default 2 MiB)


class _PipeStdout(io.RawIOBase):
    """Raw reads from a local command's stdout pipe; ``timeout``: seconds of silence allowed."""

    def __init__(self, fd: int, *, host: str, command: str, timeout: float | None) -> None:
        super().__init__()
        self._fd, self._host, self._command, self._timeout = fd, host, command, timeout

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[override]
        if self._timeout is not None:
            ready, _, _ = select.select([self._fd], [], [], self._timeout)
            if not ready:
                raise _silent(self._host, self._command, self._timeout)
        return os.readv(self._fd, [buf])


class _ChannelStdout(io.RawIOBase):
    """Raw reads from an SSH channel's stdout. The end of the data is an EOF only when the
    head sent one; a channel closed under us (the connection dropped) raises ``ConnectionLost``
    instead, so a cut transfer never looks like a short, complete one."""

    def __init__(
        self, remote: SSHRemote, chan: paramiko.Channel, command: str, timeout: float | None
    ) -> None:
        super().__init__()
        self._remote, self._chan, self._command, self._timeout = remote, chan, command, timeout

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[override]
        try:
            data = self._chan.recv(len(buf))
        except TimeoutError as exc:
            raise _silent(self._remote.name, self._command, self._timeout) from exc
        except _CHANNEL_ERRORS as exc:
            raise self._lost(exc) from exc
        if not data:
            if not self._chan.eof_received:
                transport = self._chan.get_transport()
                raise self._lost(transport.get_exception() if transport is not None else None)
            return 0
        n = len(data)
        buf[:n] = data
        return n

    def _lost(self, cause: BaseException | None) -> ConnectionLost:
        # Drop the dead connection now: paramiko closes its channels a moment before it marks
        # the transport inactive, and the next command must not try the old one.
        self._remote._discard()
        return self._remote._lost(self._command, cause)


def _discard_rest(reader: BinaryIO) -> None:
    while reader.read(BINARY_BUFFER):
        pass


def _chunks(stdin: BinaryStdin) -> Iterable[bytes] | None:
    if stdin is None or isinstance(stdin, bytes | bytearray | memoryview | str):
        data = _as_bytes(stdin)
        return None if data is None else (data,)
    return stdin


def _write_and_close(pipe, chunks: Iterable[bytes]) -> None:
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                view = view[pipe.write(view) :]
    except OSError:
        pass  # the command exited without reading it all: its exit status tells
    finally:
        with contextlib.suppress(OSError):
            pipe.close()


def _feed_chunks(chan: paramiko.Channel, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to the command's stdin as they come, then EOF. A thread: the command
    may fill its output window before it reads its input."""
    try:
        for chunk in chunks:
            chan.sendall(chunk)
        chan.shutdown_write()
    except _CHANNEL_ERRORS:
        pass  # the command exited or the connection dropped: the reader reports which


def _collect_tail(read: Callable[[int], bytes], tail: bytearray) -> None:
    """Read a stream to its end (a thread), keeping its last ``_STDERR_TAIL_BYTES``."""
    while True:
        try:
            data = read(_CHUNK)
        except TimeoutError:
            continue
        except (*_CHANNEL_ERRORS, ValueError):
            return
        if not data:
            return
        _keep_tail(tail, data)


@contextmanager
def _local_binary(
    remote: LocalRemote, command: str, *, stdin: BinaryStdin, timeout: float | None
) -> Iterator[BinaryIO]:
    data = _chunks(stdin)
    proc = subprocess.Popen(
        ["bash", "-c", command],
        stdin=subprocess.DEVNULL if data is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        bufsize=0,
        env=remote._env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    err = bytearray()
    threads = [threading.Thread(target=_collect_tail, args=(proc.stderr.read, err), daemon=True)]
    if data is not None:
        threads.append(
            threading.Thread(target=_write_and_close, args=(proc.stdin, data), daemon=True)
        )
    for thread in threads:
        thread.start()
    raw = _PipeStdout(proc.stdout.fileno(), host=remote.name, command=command, timeout=timeout)
    reader = io.BufferedReader(raw, buffer_size=BINARY_BUFFER)
    try:
        yield reader  # type: ignore[misc]
        _discard_rest(reader)
        code = proc.wait()
        for thread in threads:
            thread.join(timeout=5)
        if code != 0:
            raise CommandFailed(
                command=command, exit_code=code, output=_text(err), host=remote.name
            )
    finally:
        _stop(proc)


def _ssh_exit_code(remote: SSHRemote, chan: paramiko.Channel, command: str) -> int:
    """The command's exit status; ``ConnectionLost`` when the connection dropped first."""
    transport = chan.get_transport()
    while not chan.status_event.wait(0.5):
        if not transport.is_active():
            break
    if chan.exit_status != -1:
        return chan.exit_status
    # No exit status: the channel closed because the transport died (give its thread a moment
    # to say so), or the head closed it without one (a command killed by a signal).
    deadline = time.monotonic() + 1.0
    while transport.is_active() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not transport.is_active():
        cause = transport.get_exception()
        remote._discard()
        raise remote._lost(command, cause)
    return -1


@contextmanager
def _ssh_binary(
    remote: SSHRemote, command: str, *, stdin: BinaryStdin, timeout: float | None
) -> Iterator[BinaryIO]:
    data = _chunks(stdin)
    chan = remote._session(command, window_size=_BINARY_WINDOW)
    err = bytearray()
    try:
        chan.settimeout(timeout)
        if data is not None:
            threading.Thread(target=_feed_chunks, args=(chan, data), daemon=True).start()
        else:
            chan.shutdown_write()
        drain = threading.Thread(target=_collect_tail, args=(chan.recv_stderr, err), daemon=True)
        drain.start()
        reader = io.BufferedReader(
            _ChannelStdout(remote, chan, command, timeout), buffer_size=BINARY_BUFFER
        )
        yield reader  # type: ignore[misc]
        _discard_rest(reader)
        code = _ssh_exit_code(remote, chan, command)
        drain.join(timeout=5)
        if code != 0:
            raise CommandFailed(
                command=command, exit_code=code, output=_text(err), host=remote.name
            )
    finally:
        with contextlib.suppress(*_CHANNEL_ERRORS):  # on a dead connection close() raises
            chan.close()
