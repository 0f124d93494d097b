"""``LocalRemote``: the command channel of the embedded default, where the head is this
machine. Commands run with ``bash -c`` under ``subprocess``, each in its own session and
process group, so a timeout, an early close of a stream or Ctrl-C stops the command and its
children (``cd x && sleep 60`` forks; killing only bash would leave sleep behind).
"""

from __future__ import annotations

import contextlib
import io
import os
import select
import selectors
import subprocess
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from tether.ml.atomic import write_all
from tether.ml.process import stop_process_group

from .remote_common import (
    BINARY_BUFFER,
    CHUNK,
    LOOPBACK,
    BinaryStdin,
    CommandResult,
    LineBuffer,
    Stdin,
    as_bytes,
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


def _popen(
    command: str, *, stdin: int, env: dict[str, str] | None, bufsize: int = -1
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["bash", "-c", command],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        bufsize=bufsize,
        env=env,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop ``proc``'s process group if it still runs (TERM, then KILL after 2 s); close pipes."""
    stop_process_group(proc, grace_s=2.0, sweep=False)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


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
                raise silent(self._host, self._command, self._timeout)
        return os.readv(self._fd, [buf])


def _write_and_close(pipe, chunks: Iterable[bytes]) -> None:
    try:
        for chunk in chunks:
            write_all(pipe.fileno(), chunk)
    except OSError:
        pass  # the command exited without reading it all: its exit status tells
    finally:
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
        data = as_bytes(stdin)
        proc = _popen(
            command, stdin=subprocess.DEVNULL if data is None else subprocess.PIPE, env=self._env
        )
        try:
            out, err = proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise timed_out(self.name, command, timeout) from exc
        finally:
            _stop(proc)
        result = CommandResult(
            command=command, exit_code=proc.returncode, stdout=text(out), stderr=text(err)
        )
        return checked(result, check=check, host=self.name)

    def stream_lines(self, command: str, *, timeout: float | None = None) -> Iterator[str]:
        """Yield the stdout lines of ``command`` (no newline) as it prints them.

        Raises ``CommandFailed`` (with the last stderr lines) when it exits non-zero, and
        ``RemoteError`` when it prints nothing for ``timeout`` seconds (None: wait forever).
        Closing the iterator early stops the command. The command's stdin is empty.
        """
        proc = _popen(command, stdin=subprocess.DEVNULL, env=self._env)
        assert proc.stdout is not None and proc.stderr is not None
        lines, err = LineBuffer(), bytearray()
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(proc.stdout, selectors.EVENT_READ, "out")
                sel.register(proc.stderr, selectors.EVENT_READ, "err")
                deadline = deadline_after(timeout)
                while sel.get_map():
                    ready = sel.select(None if deadline is None else wait_s(deadline, cap=1.0))
                    if not ready and expired(deadline):
                        raise silent(self.name, command, timeout)
                    for key, _ in ready:
                        data = os.read(key.fd, CHUNK)
                        if not data:
                            sel.unregister(key.fileobj)
                            continue
                        deadline = deadline_after(timeout)
                        if key.data == "out":
                            yield from lines.feed(data)
                        else:
                            keep_tail(err, data)
            yield from lines.flush()
            code = proc.wait()
            if code != 0:
                raise failed(host=self.name, command=command, exit_code=code, stderr=err)
        finally:
            _stop(proc)

    @contextmanager
    def open_binary(
        self, command: str, *, stdin: BinaryStdin = None, timeout: float | None = None
    ) -> Iterator[BinaryIO]:
        """Run ``command`` and yield its stdout as a readable binary file (buffered).

        ``stdin`` (bytes, str sent as UTF-8, or an iterable of bytes chunks consumed as they
        come, e.g. a request that depends on what stdout said) is fed to the command from a
        thread, then closed.
        ``timeout``: seconds a read may wait for output (None: forever), then ``RemoteError``.
        Leaving the block normally reads what is left of stdout and checks the exit status:
        non-zero raises ``CommandFailed`` with the last lines of stderr. Leaving it with an
        exception stops the command and its children.
        """
        data = stdin_chunks(stdin)
        proc = _popen(
            command,
            stdin=subprocess.DEVNULL if data is None else subprocess.PIPE,
            env=self._env,
            bufsize=0,
        )
        assert proc.stdout is not None and proc.stderr is not None
        err = bytearray()
        threads = [
            threading.Thread(
                target=collect_tail,
                args=(proc.stderr.read, err),
                kwargs={"errors": (OSError, ValueError)},
                daemon=True,
            )
        ]
        if data is not None:
            threads.append(
                threading.Thread(target=_write_and_close, args=(proc.stdin, data), daemon=True)
            )
        for thread in threads:
            thread.start()
        raw = _PipeStdout(proc.stdout.fileno(), host=self.name, command=command, timeout=timeout)
        reader = io.BufferedReader(raw, buffer_size=BINARY_BUFFER)
        try:
            yield reader  # type: ignore[misc]
            discard_rest(reader)
            code = proc.wait()
            for thread in threads:
                thread.join(timeout=5)
            if code != 0:
                raise failed(host=self.name, command=command, exit_code=code, stderr=err)
        finally:
            _stop(proc)

    @contextmanager
    def forward_port(self, *, remote_port: int, remote_host: str = "127.0.0.1") -> Iterator[int]:
        """The head is this machine: yields ``remote_port`` itself, no tunnel."""
        if remote_host not in LOOPBACK:
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
        return expand_home(path, self.home)

    def reconnect(self) -> None:
        """Nothing to do: there is no connection to lose here (for the ``Remote`` protocol)."""

    def close(self) -> None:
        pass
