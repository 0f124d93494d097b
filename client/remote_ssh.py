"""``SSHRemote``: the command channel to a head node reached over SSH (Fabric opens and
configures the connection, ``remote_sshconn.py``; host keys are checked there).

Commands run on paramiko channels of that connection rather than through invoke's ``run``,
whose ``in_stream`` feeds one byte per 10 ms and decodes each byte on its own, so binary or
multi-byte input arrives corrupted.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import select
import shlex
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import paramiko

from .errors import ConnectionLost, RemoteError
from .portforward import PortForward
from .remote_common import (
    BINARY_BUFFER,
    CHUNK,
    BinaryStdin,
    CommandResult,
    LineBuffer,
    Stdin,
    as_bytes,
    backoff_s,
    checked,
    collect_tail,
    deadline_after,
    discard_rest,
    expand_home,
    expired,
    failed,
    keep_tail,
    silent,
    stdin_chunks,
    text,
    timed_out,
    wait_s,
)
from .remote_sshconn import CHANNEL_ERRORS, SSHConnection

_log = logging.getLogger(__name__)

_BINARY_WINDOW = 16 * 1024 * 1024  # SSH flow-control window of a binary session (default 2 MiB)

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


def _feed_chunks(chan: paramiko.Channel, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to the command's stdin as they come, then EOF. A thread: the command
    may fill its output window before it reads its input."""
    try:
        for chunk in chunks:
            chan.sendall(chunk)
        chan.shutdown_write()
    except CHANNEL_ERRORS:
        pass  # the command exited or the connection dropped: the reader reports which


class _ChannelStdout(io.RawIOBase):
    """Raw reads from an SSH channel's stdout. The end of the data is an EOF only when the
    head sent one; a channel closed under us (the connection dropped) raises what
    ``dropped(cause)`` returns instead, so a cut transfer never looks like a short, complete
    one. ``quiet()``: the error for ``timeout`` seconds without output."""

    def __init__(
        self,
        chan: paramiko.Channel,
        *,
        dropped: Callable[[BaseException | None], ConnectionLost],
        quiet: Callable[[], RemoteError],
    ) -> None:
        super().__init__()
        self._chan, self._dropped, self._quiet = chan, dropped, quiet

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[override]
        try:
            data = self._chan.recv(len(buf))
        except TimeoutError as exc:
            raise self._quiet() from exc
        except CHANNEL_ERRORS as exc:
            raise self._dropped(exc) from exc
        if not data:
            if not self._chan.eof_received:
                transport = self._chan.get_transport()
                raise self._dropped(transport.get_exception() if transport is not None else None)
            return 0
        n = len(data)
        buf[:n] = data
        return n


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
        self._link = SSHConnection(
            host=host,
            ssh_config=ssh_config,
            trust_new_host=trust_new_host,
            connect_timeout=connect_timeout,
        )
        self._home: str | None = None

    @property
    def address(self) -> str:
        return self._link.address

    def open(self) -> None:
        """Connect, unless connected (see ``SSHConnection.open``: transient failures are
        tried again; ``HostKeyError``, ``ConnectionLost`` or ``RemoteError``)."""
        self._link.open()

    def reconnect(self) -> None:
        """Close the connection and open it again (after a ``ConnectionLost``)."""
        self._link.reconnect()

    def close(self) -> None:
        self._link.discard()

    def sftp(self) -> paramiko.SFTPClient:
        """The SFTP session of the open connection (opened on first use, reused after)."""
        return self._link.sftp()

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
        data = as_bytes(stdin)
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
                self._link.discard()
                time.sleep(backoff_s(attempt))
        return checked(result, check=check, host=self.name)

    def _run_once(
        self, command: str, *, timeout: float | None, stdin: bytes | None
    ) -> CommandResult:
        chan = self._link.session(command)
        transport = chan.get_transport()
        out, err = bytearray(), bytearray()
        deadline = deadline_after(timeout)
        try:
            if stdin:
                feed = threading.Thread(target=_feed_chunks, args=(chan, (stdin,)), daemon=True)
                feed.start()
            else:
                chan.shutdown_write()
            while True:
                while chan.recv_ready():
                    out += chan.recv(CHUNK)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(CHUNK)
                ended = chan.eof_received or chan.closed
                if ended and not (chan.recv_ready() or chan.recv_stderr_ready()):
                    if chan.exit_status_ready():
                        break
                    # Output is over; the exit status follows (or the command closed its
                    # output and still runs).
                    chan.status_event.wait(wait_s(deadline))
                elif not ended:
                    select.select([chan], [], [], wait_s(deadline))
                if expired(deadline):
                    raise timed_out(self.name, command, timeout)
        except (OSError, EOFError) as exc:  # a read failed under us
            raise self._link.lost(command, exc) from exc
        finally:
            chan.close()
        code = chan.exit_status
        if code == -1 and not transport.is_active():
            raise self._link.lost(command, transport.get_exception())
        return CommandResult(command=command, exit_code=code, stdout=text(out), stderr=text(err))

    def stream_lines(self, command: str, *, timeout: float | None = None) -> Iterator[str]:
        """Yield the stdout lines of the long-lived ``command`` (no newline) as they arrive.

        The command runs under ``bash`` on the head with an empty stdin, in its own process
        group; closing the iterator early (or a dropped connection) stops it.

        Raises ``CommandFailed`` (with the last stderr lines) when it exits non-zero,
        ``ConnectionLost`` when the connection drops mid-stream (reconnect and resume), and
        ``RemoteError`` when it prints nothing for ``timeout`` seconds (None: wait forever).
        """
        chan = self._link.session(_stream_command(command))
        transport = chan.get_transport()
        lines, err = LineBuffer(), bytearray()
        deadline = deadline_after(timeout)
        try:
            while True:
                got = False
                while chan.recv_ready():
                    got = True
                    yield from lines.feed(chan.recv(CHUNK))
                while chan.recv_stderr_ready():
                    got = True
                    keep_tail(err, chan.recv_stderr(CHUNK))
                if got:
                    deadline = deadline_after(timeout)
                    continue
                if chan.eof_received or chan.closed:
                    if chan.exit_status_ready():
                        break
                    chan.status_event.wait(wait_s(deadline))
                else:
                    select.select([chan], [], [], wait_s(deadline))
                if expired(deadline):
                    raise silent(self.name, command, timeout)
            code = chan.exit_status
            if code == -1 and not transport.is_active():
                raise self._link.lost(command, transport.get_exception())
            yield from lines.flush()
            if code != 0:
                raise failed(host=self.name, command=command, exit_code=code, stderr=err)
        except (OSError, EOFError) as exc:
            raise self._link.lost(command, exc) from exc
        finally:
            chan.close()

    @contextmanager
    def open_binary(
        self, command: str, *, stdin: BinaryStdin = None, timeout: float | None = None
    ) -> Iterator[BinaryIO]:
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
        data = stdin_chunks(stdin)
        chan = self._link.session(command, window_size=_BINARY_WINDOW)
        err = bytearray()
        try:
            chan.settimeout(timeout)
            if data is not None:
                threading.Thread(target=_feed_chunks, args=(chan, data), daemon=True).start()
            else:
                chan.shutdown_write()
            drain = threading.Thread(
                target=collect_tail,
                args=(chan.recv_stderr, err),
                kwargs={"errors": (*CHANNEL_ERRORS, ValueError)},
                daemon=True,
            )
            drain.start()
            raw = _ChannelStdout(
                chan,
                dropped=functools.partial(self._link.dropped, command),
                quiet=functools.partial(silent, self.name, command, timeout),
            )
            reader = io.BufferedReader(raw, buffer_size=BINARY_BUFFER)
            yield reader  # type: ignore[misc]
            discard_rest(reader)
            code = self._exit_code(chan, command)
            drain.join(timeout=5)
            if code != 0:
                raise failed(host=self.name, command=command, exit_code=code, stderr=err)
        finally:
            with contextlib.suppress(*CHANNEL_ERRORS):  # on a dead connection close() raises
                chan.close()

    def _exit_code(self, chan: paramiko.Channel, command: str) -> int:
        """The command's exit status; ``ConnectionLost`` when the connection dropped first."""
        transport = chan.get_transport()
        while not chan.status_event.wait(0.5):
            if not transport.is_active():
                break
        if chan.exit_status != -1:
            return chan.exit_status
        # No exit status: the channel closed because the transport died (give its thread a
        # moment to say so), or the head closed it without one (a command killed by a signal).
        deadline = time.monotonic() + 1.0
        while transport.is_active() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not transport.is_active():
            raise self._link.dropped(command, transport.get_exception())
        return -1

    # ------------------------------------------------------------------ tunnels and paths

    @contextmanager
    def forward_port(self, *, remote_port: int, remote_host: str = "127.0.0.1") -> Iterator[int]:
        """Yield a port on 127.0.0.1 here whose connections reach ``remote_host:remote_port``
        as seen from the head (like ``ssh -L``). The port is free and bound before it is
        yielded; a connection made after a drop reconnects first. Used for the Ray dashboard
        and Jobs API."""
        self._link.open()
        forward = PortForward(
            open_channel=self._link.direct_channel,
            name=self.name,
            target=(remote_host, remote_port),
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
        return expand_home(path, self.home)
