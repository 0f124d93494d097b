"""Shell-command stages: ``command = "python train.py"`` run under a reporter.

The child learns its run, trial and stage from ``TETHER_*`` variables and reports by printing
``TETHER {json}`` lines (the line protocol: :func:`format_tether_line`,
:func:`parse_tether_line`): ``get_reporter()`` in the child prints them to a pipe of its own
(``TETHER_REPORT_FD``), so they never land inside what the program prints; a shell script may
also ``echo "TETHER {...}"`` on stdout. :func:`run_command_stage` runs the command in its own
process group, forwards those lines as events (a child reporter keeps its own worker id, so
its heartbeats say its pid and RSS), keeps every other line as a ``log`` event, and kills the
whole group at the timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tether.ml.process import stop_process_group

from .batch_reporter import ReporterConfigError
from .capture import OutputLines, pump_lines
from .errors import ClusterRuntimeError
from .events import EVENT_KINDS, dumps

if TYPE_CHECKING:
    from .batch_reporter import Reporter

ENV_RUN_ID = "TETHER_RUN_ID"
ENV_TRIAL = "TETHER_TRIAL"
ENV_STAGE = "TETHER_STAGE"
ENV_REPORT_TO = "TETHER_REPORT_TO"  # "stdout": print TETHER lines (set by run_command_stage)
# A pipe of their own for those lines (set by run_command_stage), so a reporter thread's
# write can never land in the middle of a line the program prints on stdout.
ENV_REPORT_FD = "TETHER_REPORT_FD"
TETHER_PREFIX = "TETHER"
COMMAND_TIMEOUT_EXIT_CODE = 124  # what coreutils' timeout(1) returns
LAST_LINES = 50
_KILL_GRACE_S = 2.0
_MAX_BAD_LINE_ALERTS = 5


class TetherLineError(ClusterRuntimeError, ValueError):
    """A ``TETHER ...`` stdout line whose payload is not a valid event object."""


@dataclass(frozen=True)
class CommandOutcome:
    """How a shell-command stage ended."""

    exit_code: int  # the command's; 128+N when killed by signal N; 124 when it timed out
    last_lines: list[str]  # the last lines it printed (stdout and stderr), for error reports
    events_forwarded: int  # valid TETHER lines forwarded as events
    timed_out: bool = False
    log_lines: int = 0  # plain lines kept as log events
    bad_lines: int = 0  # TETHER lines that were malformed (kept as log events + alerts)


# --------------------------------------------------------------------------- the line protocol


def format_tether_line(event: Mapping) -> str:
    """``TETHER {json}``: how a shell-command stage reports an event on stdout (any program
    can print these; ``kind`` defaults to ``progress``)."""
    return f"{TETHER_PREFIX} {dumps(event)}"


def parse_tether_line(line: str) -> dict | None:
    """The event a ``TETHER {json}`` stdout line carries, or None for any other line.

    Missing ``kind`` means ``progress`` (and a progress event gets ``step``, ``epoch`` and
    ``metrics`` defaults); ``seq`` is dropped (the receiver assigns it). Raises
    :class:`TetherLineError` for a TETHER line whose payload is not a JSON object with a
    known kind."""
    text = line.rstrip("\r\n")
    if not text.startswith(TETHER_PREFIX):
        return None
    rest = text[len(TETHER_PREFIX) :]
    if rest and not rest[0].isspace():
        return None  # "TETHERED ...": not ours
    payload = rest.strip()
    if not payload:
        raise TetherLineError("TETHER line without a JSON object after it")
    try:
        obj = json.loads(payload)
    except ValueError as exc:
        raise TetherLineError(f"TETHER line is not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise TetherLineError(f"TETHER line holds a JSON {type(obj).__name__}, not an object")
    kind = obj.setdefault("kind", "progress")
    if kind not in EVENT_KINDS:
        raise TetherLineError(
            f"TETHER line has unknown kind {kind!r}; use one of {', '.join(sorted(EVENT_KINDS))}"
        )
    obj.pop("seq", None)
    if kind == "progress":
        obj.setdefault("step", None)
        obj.setdefault("epoch", None)
        metrics = obj.setdefault("metrics", {})
        if not isinstance(metrics, dict):
            raise TetherLineError("TETHER progress line: 'metrics' must be an object")
    return obj


# --------------------------------------------------------------------------- running a command


@dataclass
class _Forwarding:
    """What the pipes carried: forwarded events, malformed lines, the child reporters seen
    (worker id -> its last heartbeat's host/pid/rss/gpus)."""

    reporter: Reporter
    lines: OutputLines
    forwarded: int = 0
    bad_lines: int = 0
    children: dict[str, dict] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def stdout_line(self, line: str) -> None:
        try:
            event = parse_tether_line(line)
        except TetherLineError as exc:
            with self.lock:
                self.bad_lines += 1
                n_bad = self.bad_lines
            self.lines.keep(line, stream="stdout")
            if n_bad <= _MAX_BAD_LINE_ALERTS:
                self.reporter.alert(
                    f"malformed TETHER line on stdout: {exc} -- {line[:200]}",
                    level="warning",
                    code="reporter:bad_tether_line",
                )
            return
        if event is None:
            self.lines.add(line, stream="stdout")
            return
        self._note_child(event)
        self.reporter.forward(event)
        with self.lock:
            self.forwarded += 1

    def _note_child(self, event: dict) -> None:
        worker = event.get("worker")
        if not isinstance(worker, str) or not worker or worker == self.reporter.worker:
            return
        with self.lock:
            known = self.children.setdefault(worker, {})
            if event.get("kind") == "heartbeat":
                known.update({k: event.get(k) for k in ("host", "pid", "rss_mb", "gpus")})
                known["ended"] = bool(event.get("ended"))

    def end_children(self, exit_code: int) -> None:
        """The command ended: the last heartbeat of each child reporter that did not say so
        itself, with ``ended`` and the command's exit code (so the monitor marks that worker
        finished or failed instead of dead after two heartbeat intervals)."""
        with self.lock:
            children = dict(self.children)
        for worker, beat in children.items():
            if beat.get("pid") is None or beat.get("ended"):
                continue
            fields = {k: beat[k] for k in ("host", "pid", "rss_mb", "gpus")}
            self.reporter.forward(
                {"kind": "heartbeat", "worker": worker, **fields, "ended": True,
                 "exit_code": exit_code}
            )  # fmt: skip


def command_env(*, reporter: Reporter, env: Mapping[str, str] | None) -> dict[str, str]:
    """This process's environment plus ``env``, with the reporter's run, trial and stage and
    TETHER_REPORT_TO=stdout (PYTHONUNBUFFERED=1 unless ``env`` says otherwise)."""
    full_env = dict(os.environ)
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    full_env.update(env or {})
    full_env[ENV_REPORT_TO] = "stdout"
    for key, value in (
        (ENV_RUN_ID, reporter.run_id),
        (ENV_TRIAL, reporter.trial),
        (ENV_STAGE, reporter.stage_name),
    ):
        if value:
            full_env[key] = value
    return full_env


def run_command_stage(
    *,
    command: str,
    cwd: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    reporter: Reporter,
    timeout_s: float | None = None,
    echo: bool = False,
) -> CommandOutcome:
    """Run a shell-command stage (``bash -c command`` in ``cwd``) and report what it prints.

    ``env`` is added to this process's environment (:func:`command_env`), so
    ``get_reporter()`` in the command prints TETHER lines to a pipe of their own
    (TETHER_REPORT_FD). Each such line, and each stdout line ``TETHER {json}``, is forwarded
    as an event (kind defaults to progress); a malformed one becomes a log event plus a
    warning alert. Every other line of stdout and stderr becomes a log event. The last 50
    plain lines come back for error reports. After ``timeout_s`` the command's whole process
    group is terminated (then killed) and the outcome says ``timed_out`` with exit code 124.
    ``echo`` also prints the plain lines on this process's real stdout/stderr."""
    if timeout_s is not None and not timeout_s > 0:
        raise ReporterConfigError(f"timeout_s={timeout_s!r}: must be > 0 (or None)")
    full_env = command_env(reporter=reporter, env=env)
    events_r, events_w = os.pipe()  # the child's reporters write TETHER lines here
    full_env[ENV_REPORT_FD] = str(events_w)
    try:
        proc = subprocess.Popen(
            ["bash", "-c", command],
            cwd=os.fspath(cwd),
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(events_w,),
            start_new_session=True,  # its own process group: a timeout kills all of it
        )
    except BaseException:
        os.close(events_r)
        raise
    finally:
        os.close(events_w)
    lines = OutputLines(reporter, keep=LAST_LINES, echo=echo)
    fwd = _Forwarding(reporter=reporter, lines=lines)
    readers = [
        threading.Thread(target=pump_lines, args=(pipe, handle), daemon=True)
        for pipe, handle in (
            (proc.stdout, fwd.stdout_line),
            (proc.stderr, lambda line: lines.add(line, stream="stderr")),
            (os.fdopen(events_r, "rb"), fwd.stdout_line),
        )
    ]
    for t in readers:
        t.start()
    timed_out = _wait(proc, readers, timeout_s)
    rc = proc.returncode
    exit_code = COMMAND_TIMEOUT_EXIT_CODE if timed_out else (rc if rc >= 0 else 128 - rc)
    fwd.end_children(exit_code)
    if fwd.bad_lines > _MAX_BAD_LINE_ALERTS:
        reporter.alert(
            f"{fwd.bad_lines - _MAX_BAD_LINE_ALERTS} more malformed TETHER lines "
            "(kept as log events)",
            level="warning",
            code="reporter:bad_tether_line",
        )
    if timed_out:
        reporter.alert(
            f"command timed out after {timeout_s:g}s and was killed: {command}",
            level="critical",
            code="stage:timeout",
        )
    return CommandOutcome(
        exit_code=exit_code,
        last_lines=lines.last_lines(),
        events_forwarded=fwd.forwarded,
        timed_out=timed_out,
        log_lines=lines.count,
        bad_lines=fwd.bad_lines,
    )


def _wait(proc: subprocess.Popen, readers: list[threading.Thread], timeout_s: float | None) -> bool:
    """Wait for the command and its pipes to end; True when it ran past ``timeout_s`` (then
    its process group was killed)."""
    timed_out = False
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_process_group(proc)
    except BaseException:
        kill_process_group(proc)
        raise
    for t in readers:
        t.join(timeout=5.0)
    if any(t.is_alive() for t in readers):  # something it started still holds the pipes
        kill_process_group(proc)
        for t in readers:
            t.join(timeout=5.0)
    return timed_out


def kill_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, then SIGKILL it (children that outlived the leader too)."""
    stop_process_group(proc, grace_s=_KILL_GRACE_S, sweep=True)
