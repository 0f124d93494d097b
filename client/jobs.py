"""tether's Ray Jobs client: submit a run, list runs, stop one, read and follow its log.

A thin layer over Ray's own ``ray.job_submission.JobSubmissionClient`` (the Jobs REST API is
not reimplemented here). What it adds:

- a run is a Ray job with submission id ``tether-<run_id>`` and ``tether_run`` in its
  metadata, so a run is found by its id and ``ray job list`` shows the same jobs;
- a resumed run (``tether resume``) is a new Ray job of the same run, since Ray refuses a
  reused submission id: ``tether-<run_id>.r<N>`` for the N-th resume, with ``tether_attempt``
  N in its metadata. ``status``, ``stop``, ``logs`` and ``follow_logs`` address the run's
  newest job, ``attempts`` lists them all, ``runs`` gives one record per run (its newest job);
- secrets never travel in a job: a ``runtime_env`` with ``env_vars`` is refused;
- every call is bounded by ``timeout_s`` and every failure is a ``TetherError`` that names
  the dashboard address and the next step;
- ``follow_logs`` survives dropped connections (an SSH tunnel that dies mid-run): it
  reconnects, skips the part of the replayed log it already delivered, and delivers the
  rest exactly once.

Token auth (Ray 2.60 ``RAY_AUTH_MODE=token``): the dashboard accepts the cluster token as
``Authorization: Bearer <token>`` (see ``ray/_private/authentication/
http_token_authentication.py``); ``JobsClient`` passes that header through
``JobSubmissionClient(headers=...)``, which sends it on every HTTP request and on the log
websocket. The token is kept out of reprs and error messages.

Longer than the ~400 lines modules aim for (about 600): the resumable log follow (its
async stream, cursor and drop detection, about 170 lines) is a method of the one client
because it shares its Ray client, its bounded calls, its run lookup (the newest of a run's
jobs) and its error translation; split apart, each half would reach into the other's private
state.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import requests
from ray.exceptions import AuthenticationError
from ray.job_submission import JobDetails, JobStatus, JobSubmissionClient

from .errors import ClusterError, DashboardRefused, TetherError
from .runid import RUN_ID_RULE, is_run_id

RUN_METADATA_KEY = "tether_run"
ATTEMPT_METADATA_KEY = "tether_attempt"  # absent on a run's first job (attempt 0)
SUBMISSION_PREFIX = "tether-"
RESUME_INFIX = ".r"  # tether-<run_id>.r<N>: the N-th resume of the run
# Ray lets these environment variables override an explicit address, silently.
_ADDRESS_ENV_VARS = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
_ENV_LOCK = threading.Lock()
# Reconnect backoff of follow_logs: 0.25 s, 0.5 s, 1 s, ... capped.
_BACKOFF_FIRST_S = 0.25
_BACKOFF_MAX_S = 5.0

T = TypeVar("T")


def submission_id_for(run_id: str, *, attempt: int = 0) -> str:
    """The Ray submission id of a run's job: ``tether-<run_id>`` for its first job (attempt
    0), ``tether-<run_id>.r<N>`` for its N-th resume."""
    return SUBMISSION_PREFIX + run_id + (f"{RESUME_INFIX}{attempt}" if attempt else "")


def _attempt_of(metadata: dict[str, str]) -> int:
    value = metadata.get(ATTEMPT_METADATA_KEY, "0")
    return int(value) if value.isdigit() else 0


@dataclass(frozen=True)
class JobRecord:
    """One Ray job of a tether run as the Ray Jobs API reports it.

    ``status`` is a Ray ``JobStatus`` value (``PENDING``, ``RUNNING``, ``STOPPED``,
    ``SUCCEEDED``, ``FAILED``); times are seconds since the epoch (``None`` until known);
    ``attempt`` is 0 for the run's first job and N for its N-th resume.
    """

    run_id: str
    submission_id: str
    status: str
    entrypoint: str
    metadata: dict[str, str] = field(default_factory=dict)
    start_time: float | None = None
    end_time: float | None = None
    message: str | None = None
    attempt: int = 0

    def is_terminal(self) -> bool:
        """True once the job can change no more (stopped, succeeded or failed)."""
        return JobStatus(self.status).is_terminal()

    @classmethod
    def from_details(cls, details: JobDetails) -> JobRecord:
        metadata = dict(details.metadata or {})
        return cls(
            run_id=metadata.get(RUN_METADATA_KEY, ""),
            submission_id=details.submission_id or "",
            status=JobStatus(details.status).value,
            entrypoint=details.entrypoint,
            metadata=metadata,
            start_time=details.start_time / 1000 if details.start_time else None,
            end_time=details.end_time / 1000 if details.end_time else None,
            message=details.message,
            attempt=_attempt_of(metadata),
        )


class _StreamDropped(Exception):
    """The log stream broke (or could not be opened); follow_logs reconnects."""


class _Cursor:
    """How much of a job's log has been delivered; turns a replayed stream into new text.

    Ray's log tail always starts at the beginning of the log file, and the file only grows,
    so the first ``delivered`` characters of every stream are ones already delivered.
    """

    def __init__(self) -> None:
        self.delivered = 0
        self._stream_pos = 0

    def new_stream(self) -> None:
        self._stream_pos = 0

    def take(self, chunk: str) -> str:
        start = self._stream_pos
        self._stream_pos += len(chunk)
        fresh = chunk[max(0, self.delivered - start) :]
        self.delivered += len(fresh)
        return fresh


class JobsClient:
    """Submit and watch tether runs on a Ray cluster through its Jobs API.

    Args:
        address: The dashboard URL, e.g. ``http://127.0.0.1:8265`` (for an SSH head, the
            local end of the tunnel to its dashboard port). ``RAY_ADDRESS`` and
            ``RAY_API_SERVER_ADDRESS`` do not override it.
        token: The cluster's Ray auth token when it runs with ``RAY_AUTH_MODE=token``; sent
            as ``Authorization: Bearer <token>``.
        timeout_s: The most any one request to the dashboard may take.

    Raises:
        ValueError: If ``address`` is not an ``http(s)://`` URL.
        ClusterError: If nothing answers at ``address`` within ``timeout_s``, or the
            cluster rejects the token.
    """

    def __init__(self, *, address: str, token: str | None = None, timeout_s: float = 30) -> None:
        if not re.match(r"https?://", address):
            raise ValueError(
                f"address must be the dashboard URL (http://host:port), got {address!r}"
            )
        self.address = address.rstrip("/")
        self.timeout_s = timeout_s
        self._token = token
        headers = {"Authorization": f"Bearer {token}"} if token else None
        self._client: JobSubmissionClient = self._call("connecting", self._new_ray_client, headers)

    def __repr__(self) -> str:  # never shows the token
        return f"JobsClient(address={self.address!r}, timeout_s={self.timeout_s})"

    def _new_ray_client(self, headers: dict[str, str] | None) -> JobSubmissionClient:
        with _ENV_LOCK:
            saved = {k: os.environ.pop(k) for k in _ADDRESS_ENV_VARS if k in os.environ}
            try:
                return JobSubmissionClient(self.address, headers=headers)
            finally:
                os.environ.update(saved)

    # ------------------------------------------------------------------ requests

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one blocking Ray client call, bounded by ``timeout_s`` (Ray's client sets no
        request timeout), turning its failures into ``TetherError``s."""
        box: dict[str, Any] = {}
        done = threading.Event()

        def target() -> None:
            try:
                box["value"] = fn(*args, **kwargs)
            except BaseException as exc:
                box["error"] = exc
            finally:
                done.set()

        threading.Thread(target=target, name=f"tether-jobs {what}", daemon=True).start()
        if not done.wait(self.timeout_s):
            raise ClusterError(
                f"the Ray dashboard at {self.address} did not answer within "
                f"{self.timeout_s:g}s while {what}",
                hint=self._reach_hint(),
            )
        if "error" in box:
            error = box["error"]
            translated = self._translate(error, what)
            if translated is error:
                raise error
            raise translated from error
        return box["value"]

    def _reach_hint(self) -> str:
        return (
            f"is the cluster up and its dashboard reachable at {self.address} (for an SSH "
            "head: is the tunnel to the dashboard port open)? run `tether doctor`"
        )

    def _translate(self, exc: BaseException, what: str) -> BaseException:
        if isinstance(exc, AuthenticationError):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "rejected"
            return DashboardRefused(
                f"the Ray dashboard at {self.address} refused tether's request while {what}: "
                f"{first}",
                hint="the cluster uses token auth: pass its token (`ray get-auth-token` on the "
                "head node); run `tether doctor`",
            )
        if isinstance(exc, (requests.exceptions.ConnectionError, ConnectionError)):
            return ClusterError(
                f"cannot reach the Ray dashboard at {self.address} while {what}",
                hint=self._reach_hint(),
            )
        if isinstance(exc, (requests.exceptions.RequestException, OSError)):
            return ClusterError(
                f"request to the Ray dashboard at {self.address} failed while {what}: {exc}",
                hint=self._reach_hint(),
            )
        return exc

    def _not_found(self, exc: BaseException) -> bool:
        text = str(exc)
        return isinstance(exc, RuntimeError) and ("404" in text or "does not exist" in text)

    def _job(self, run_id: str, sid: str) -> JobDetails | None:
        """The job ``sid``, or None when Ray has no such job."""
        try:
            return self._call(f"reading run {run_id}", self._client.get_job_info, sid)
        except RuntimeError as exc:
            if self._not_found(exc):
                return None
            raise

    def _jobs_of(self, run_id: str) -> list[JobDetails]:
        """The run's jobs, first to newest: ``tether-<run_id>``, then ``.r1``, ``.r2``, ...
        up to the first that does not exist or belongs to another run (a run id ending in
        ``.r<N>`` of its own)."""
        first = self._job(run_id, submission_id_for(run_id))
        if first is None:
            raise self._no_such_run(run_id)
        found = [first]
        while True:
            job = self._job(run_id, submission_id_for(run_id, attempt=len(found)))
            if job is None or (job.metadata or {}).get(RUN_METADATA_KEY) != run_id:
                return found
            found.append(job)

    def _details(self, run_id: str) -> JobDetails:
        """The run's newest job."""
        return self._jobs_of(run_id)[-1]

    def _details_of(self, run_id: str, sid: str) -> JobDetails:
        """The job ``sid`` of run ``run_id``; it must exist."""
        job = self._job(run_id, sid)
        if job is None:
            raise self._no_such_run(run_id)
        return job

    def _no_such_run(self, run_id: str) -> TetherError:
        return TetherError(
            f"no run {run_id} (Ray job {submission_id_for(run_id)}) on the cluster at "
            f"{self.address}",
            hint=f"check the run id; `ray job list --address {self.address}` lists the jobs",
        )

    # ------------------------------------------------------------------ public API

    def submit(
        self,
        *,
        entrypoint: str,
        run_id: str,
        metadata: dict[str, str],
        runtime_env: dict[str, Any] | None = None,
        attempt: int = 0,
    ) -> str:
        """Submit a run's job: its first (submission id ``tether-<run_id>``), or with
        ``attempt`` N its N-th resume (``tether-<run_id>.r<N>``).

        Args:
            entrypoint: The shell command the job runs on the head node.
            run_id: The run's id (letters, digits, ``.``, ``_``, ``-``).
            metadata: String metadata stored with the job (branch, commit, spec...);
                ``tether_run: run_id`` is added, and ``tether_attempt: N`` for a resume.
            runtime_env: Ray runtime environment for the job, without ``env_vars``.
            attempt: 0 for a new run; N >= 1 for the N-th resume of an existing one.

        Returns:
            The submission id.

        Raises:
            ValueError: If ``run_id`` is malformed, ``attempt`` is not an int >= 0, or a
                metadata value is not a string or contradicts ``run_id``/``attempt``.
            TetherError: If ``runtime_env`` has ``env_vars`` (secrets go through the
                secrets file, never the job), or the run already has a job of this attempt.
            ClusterError: If the dashboard cannot be reached or refuses the job.
        """
        if not is_run_id(run_id):
            raise ValueError(f"run id {run_id!r} must be {RUN_ID_RULE}")
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 0:
            raise ValueError(f"attempt must be an int >= 0, got {attempt!r}")
        bad = sorted(k for k, v in metadata.items() if not isinstance(v, str))
        if bad:
            raise ValueError(f"job metadata values must be strings; not: {', '.join(bad)}")
        if metadata.get(RUN_METADATA_KEY, run_id) != run_id:
            raise ValueError(f"metadata[{RUN_METADATA_KEY!r}] differs from run_id {run_id!r}")
        if metadata.get(ATTEMPT_METADATA_KEY, str(attempt)) != str(attempt):
            raise ValueError(f"metadata[{ATTEMPT_METADATA_KEY!r}] differs from attempt {attempt}")
        if runtime_env and "env_vars" in runtime_env:
            raise TetherError(
                f"refusing to submit run {run_id}: its runtime_env sets env_vars, which Ray "
                "stores with the job where anyone with dashboard access can read them",
                hint="put secrets (API keys) in the secrets file on the head node, and other "
                "settings in the experiment spec",
            )
        sid = submission_id_for(run_id, attempt=attempt)
        full = {**metadata, RUN_METADATA_KEY: run_id}
        if attempt:
            full[ATTEMPT_METADATA_KEY] = str(attempt)
        try:
            return self._call(
                f"submitting run {run_id}",
                self._client.submit_job,
                entrypoint=entrypoint,
                submission_id=sid,
                metadata=full,
                runtime_env=runtime_env,
            )
        except RuntimeError as exc:
            if "already exists" in str(exc) and attempt:
                raise TetherError(
                    f"run {run_id} already has a job for resume {attempt} (Ray job {sid}) on "
                    f"the cluster at {self.address}",
                    hint=f"another resume came first: `tether status {run_id}` shows it",
                ) from exc
            if "already exists" in str(exc):
                raise TetherError(
                    f"a run with id {run_id} (Ray job {sid}) already exists on the cluster at "
                    f"{self.address}",
                    hint="run ids are unique per cluster: submit with a new run id",
                ) from exc
            raise ClusterError(
                f"the Ray dashboard at {self.address} refused run {run_id}: {exc}",
                hint="look at the dashboard's job logs on the head node; run `tether doctor`",
            ) from exc

    def runs(self) -> list[JobRecord]:
        """Every tether run on the cluster (jobs with ``tether_run`` metadata), one record
        per run: its newest job (highest attempt). Oldest first, by that job's start.

        Raises:
            ClusterError: If the dashboard cannot be reached.
        """
        jobs = self._call("listing jobs", self._client.list_jobs)
        records = [
            JobRecord.from_details(job)
            for job in jobs
            if job.metadata and RUN_METADATA_KEY in job.metadata
        ]
        newest: dict[str, JobRecord] = {}
        for rec in sorted(records, key=lambda r: (r.attempt, r.start_time or 0.0)):
            newest[rec.run_id] = rec  # a later attempt replaces an earlier one
        return sorted(newest.values(), key=lambda r: (r.start_time or 0.0, r.run_id))

    def attempts(self, *, run_id: str) -> list[JobRecord]:
        """Every job of the run, first (attempt 0) to newest (its last resume).

        Raises:
            TetherError: If there is no such run on the cluster.
            ClusterError: If the dashboard cannot be reached.
        """
        return [JobRecord.from_details(job) for job in self._jobs_of(run_id)]

    def status(self, *, run_id: str) -> JobRecord:
        """The record of the run's newest job (after a resume: the resume's job).

        Raises:
            TetherError: If there is no such run on the cluster.
            ClusterError: If the dashboard cannot be reached.
        """
        return JobRecord.from_details(self._details(run_id))

    def stop(self, *, run_id: str) -> bool:
        """Ask Ray to stop the run's newest job; returns False when it had already ended.

        The job turns ``STOPPED`` shortly after; poll ``status`` to see it.

        Raises:
            TetherError: If there is no such run on the cluster.
            ClusterError: If the dashboard cannot be reached.
        """
        sid = self._details(run_id).submission_id or submission_id_for(run_id)
        try:
            return self._call(f"stopping run {run_id}", self._client.stop_job, sid)
        except RuntimeError as exc:
            if self._not_found(exc):
                raise self._no_such_run(run_id) from exc
            raise

    def logs(self, *, run_id: str) -> str:
        """The whole log so far (stdout and stderr of its entrypoint) of the run's newest job.

        Raises:
            TetherError: If there is no such run on the cluster.
            ClusterError: If the dashboard cannot be reached.
        """
        return self._logs(run_id, self._details(run_id).submission_id or submission_id_for(run_id))

    def _logs(self, run_id: str, sid: str) -> str:
        try:
            return self._call(f"reading the log of run {run_id}", self._client.get_job_logs, sid)
        except RuntimeError as exc:
            if self._not_found(exc):
                raise self._no_such_run(run_id) from exc
            raise

    def follow_logs(
        self,
        *,
        run_id: str,
        on_text: Callable[[str], None],
        reconnect: Callable[[], JobsClient] | None = None,
        max_reconnects: int = 20,
        poll_s: float = 0.5,
    ) -> str:
        """Stream the log of the run's newest job to ``on_text`` as it grows, until that
        job is terminal.

        Every character of the log reaches ``on_text`` exactly once and in order, also when
        the connection drops: the stream is reopened (through ``reconnect()``, e.g. a client
        on a new SSH tunnel, or this client when ``reconnect`` is None), the part of the
        replayed log already delivered is skipped, and after the job ends a final full read
        delivers whatever the stream had not. While the stream is silent the job status is
        checked every ``poll_s`` seconds, which also notices a connection that hangs.

        Runs its own event loop (``asyncio.run``): call it from a worker thread, not from
        inside a running event loop.

        Args:
            run_id: The run to follow.
            on_text: Called with each new piece of log text (not split into lines).
            reconnect: Returns a fresh client after a drop; called in a worker thread.
            max_reconnects: Reconnect attempts in a row without new log text before giving up.
            poll_s: Seconds between status checks while following.

        Returns:
            The job's final status (``SUCCEEDED``, ``FAILED`` or ``STOPPED``).

        Raises:
            TetherError: If there is no such run on the cluster.
            ClusterError: If the connection cannot be re-established within
                ``max_reconnects`` attempts, or the cluster rejects the token.
        """
        # A missing run fails here, not after the reconnects; the job followed is fixed here.
        sid = self._details(run_id).submission_id or submission_id_for(run_id)
        return asyncio.run(
            self._follow(
                run_id=run_id,
                sid=sid,
                on_text=on_text,
                reconnect=reconnect,
                max_reconnects=max_reconnects,
                poll_s=poll_s,
            )
        )

    # ------------------------------------------------------------------ following

    async def _follow(
        self,
        *,
        run_id: str,
        sid: str,
        on_text: Callable[[str], None],
        reconnect: Callable[[], JobsClient] | None,
        max_reconnects: int,
        poll_s: float,
    ) -> str:
        cursor = _Cursor()
        client: JobsClient = self
        failures = 0  # in a row, without new text
        last_error = ""
        while True:
            if failures:
                await asyncio.sleep(min(_BACKOFF_FIRST_S * 2 ** (failures - 1), _BACKOFF_MAX_S))
            delivered_before = cursor.delivered
            try:
                if failures and reconnect is not None:
                    try:
                        client = await asyncio.to_thread(reconnect)
                    except DashboardRefused:
                        raise
                    except (TetherError, OSError) as exc:
                        raise _StreamDropped(f"reconnecting failed: {exc}") from exc
                status = await client._stream(
                    run_id=run_id, sid=sid, cursor=cursor, on_text=on_text, poll_s=poll_s
                )
                try:
                    log = await asyncio.to_thread(client._logs, run_id, sid)
                except DashboardRefused:
                    raise
                except ClusterError as exc:
                    raise _StreamDropped(f"reading the final log failed: {exc.message}") from exc
                tail = log[cursor.delivered :]
                if tail:
                    cursor.delivered += len(tail)
                    on_text(tail)
                return status
            except _StreamDropped as exc:
                last_error = str(exc)
                failures = 1 if cursor.delivered > delivered_before else failures + 1
                if failures > max_reconnects:
                    raise ClusterError(
                        f"lost the log stream of run {run_id} at {client.address} and could not "
                        f"get it back in {max_reconnects} reconnect attempts "
                        f"(last: {last_error}); {cursor.delivered} characters of log were shown",
                        hint="the job itself may still be running: check the tunnel or cluster "
                        f"(`tether doctor`), then `ray job logs {sid} "
                        f"--address <dashboard URL>`",
                    ) from exc

    async def _status_or_drop(self, run_id: str, sid: str) -> JobStatus:
        try:
            details = await asyncio.to_thread(self._details_of, run_id, sid)
        except DashboardRefused:
            raise
        except ClusterError as exc:
            raise _StreamDropped(f"status check failed: {exc.message}") from exc
        return JobStatus(details.status)

    async def _stream(
        self,
        *,
        run_id: str,
        sid: str,
        cursor: _Cursor,
        on_text: Callable[[str], None],
        poll_s: float,
    ) -> str:
        """Follow one log stream until the job is terminal; returns its status.

        Raises ``_StreamDropped`` when the stream breaks, ends while the job still runs, or
        the status cannot be read."""
        status = await self._status_or_drop(run_id, sid)
        if status.is_terminal():  # nothing more will be written: the final read has it all
            return status.value
        cursor.new_stream()
        consumer = asyncio.create_task(self._consume(run_id, sid, cursor, on_text))
        try:
            while True:
                done, _ = await asyncio.wait({consumer}, timeout=poll_s)
                if done:
                    consumer.result()  # raises _StreamDropped or on_text's error
                status = await self._status_or_drop(run_id, sid)
                if status.is_terminal():
                    # The log is complete now; the caller's final full read delivers what
                    # the stream has not (Ray's stream takes seconds to notice the end).
                    return status.value
                if done:
                    raise _StreamDropped("the log stream ended while the job was still running")
        finally:
            if not consumer.done():
                consumer.cancel()
                await asyncio.gather(consumer, return_exceptions=True)

    async def _consume(
        self, run_id: str, sid: str, cursor: _Cursor, on_text: Callable[[str], None]
    ) -> None:
        stream = self._client.tail_job_logs(sid)
        try:
            while True:
                try:
                    chunk = await stream.__anext__()
                except StopAsyncIteration:
                    return
                except aiohttp.WSServerHandshakeError as exc:
                    if exc.status in (401, 403):
                        raise DashboardRefused(
                            f"the Ray dashboard at {self.address} refused the log stream of "
                            f"run {run_id} (HTTP {exc.status})",
                            hint="the cluster uses token auth: pass its token; run `tether doctor`",
                        ) from exc
                    raise _StreamDropped(f"opening the log stream failed: {exc}") from exc
                except (RuntimeError, aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                    raise _StreamDropped(f"{type(exc).__name__}: {exc}") from exc
                fresh = cursor.take(chunk)
                if fresh:
                    on_text(fresh)
        finally:
            await stream.aclose()
