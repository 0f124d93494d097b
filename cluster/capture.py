"""Output lines kept as ``log`` events: what a function stage prints (its ``sys.stdout`` and
``sys.stderr`` teed) and what a command stage's pipes carry, each complete line sent to the
reporter and kept in a window of the last lines for the error report."""

from __future__ import annotations

import collections
import contextlib
import io
import sys
import threading
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .batch_reporter import Reporter

MAX_LINE_BYTES = 1 << 20  # a longer line from a pipe is read (and reported) in pieces


class OutputLines:
    """The lines a stage printed: each one a ``log`` event on ``reporter``, the last ``keep``
    kept for error reports. ``echo``: also print them on this process's real stdout/stderr
    (in a Ray task: the job log). Safe to feed from several threads."""

    def __init__(self, reporter: Reporter, *, keep: int, echo: bool = False) -> None:
        self.reporter = reporter
        self.echo = echo
        self.count = 0  # lines added (not those only kept)
        self._last: collections.deque[str] = collections.deque(maxlen=keep)
        self._lock = threading.Lock()

    def add(self, line: str, *, stream: str) -> None:
        """A plain output line: a log event, echoed when asked, counted and kept."""
        self.reporter.log(line, stream=stream)
        if self.echo:  # the real stream, not a tee that would log the line twice
            out = sys.__stdout__ if stream == "stdout" else sys.__stderr__
            with contextlib.suppress(Exception):
                out.write(line + "\n")
                out.flush()
        with self._lock:
            self.count += 1
            self._last.append(line)

    def keep(self, line: str, *, stream: str) -> None:
        """A line that is not plain output (a malformed TETHER line): a log event and kept
        for the error report, neither echoed nor counted."""
        self.reporter.log(line, stream=stream)
        with self._lock:
            self._last.append(line)

    def last_lines(self) -> list[str]:
        with self._lock:
            return list(self._last)


class TeeLines(io.TextIOBase):
    """A text stream that writes through to ``original`` and adds each complete line to
    ``lines`` (for ``sys.stdout``/``sys.stderr`` while a function stage runs)."""

    def __init__(self, original: IO[str], lines: OutputLines, *, stream: str) -> None:
        self.original, self.lines, self.stream = original, lines, stream
        self._buf = ""

    def write(self, s: str) -> int:
        self.original.write(s)
        self._buf += s
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            self.lines.add(line, stream=self.stream)
        return len(s)

    def flush(self) -> None:
        self.original.flush()

    def isatty(self) -> bool:
        return False


def pump_lines(pipe: Any, handle: Callable[[str], None]) -> None:
    """Read a binary pipe line by line (decoded leniently, line ends stripped) until EOF,
    handing each line to ``handle``; closes the pipe."""
    with pipe:
        for raw in iter(lambda: pipe.readline(MAX_LINE_BYTES), b""):
            handle(raw.decode("utf-8", "replace").rstrip("\r\n"))
