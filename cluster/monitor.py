"""The run monitor: one detached, restartable Ray actor per run, pinned to the head node
(``MonitorCore`` of ``cluster.monitor_core`` as the actor ``run:<run-id>`` in namespace
``tether``).

Crash safety. Ray restarts the actor (``max_restarts=-1``) and retries the calls that were in
flight (``max_task_retries=-1``); the restarted actor rebuilds its state from
``events.jsonl`` and answers the retried pushes idempotently, so seq continues with no gap and
no duplicate.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import ray

from .events import NAMESPACE, monitor_name
from .monitor_core import EVENTS_FILE, WINDOW, MonitorCore, MonitorError, parse_goals

__all__ = [
    "EVENTS_FILE",
    "HEAD_NODE_RESOURCE",
    "NAMESPACE",
    "MonitorCore",
    "MonitorError",
    "MonitorNotFoundError",
    "RunMonitor",
    "get_monitor",
    "start_monitor",
    "stop_monitor",
]

HEAD_NODE_RESOURCE = "node:__internal_head__"  # ray._common.constants.HEAD_NODE_RESOURCE_NAME


class MonitorNotFoundError(MonitorError):
    """No monitor actor exists for the run id."""


RunMonitor = ray.remote(MonitorCore)


def start_monitor(
    *,
    run_id: str,
    run_dir: str | os.PathLike,
    heartbeat_s: float = 30.0,
    stall_timeout_s: float = 300.0,
    targets: Sequence[str] = (),
    milestones: Sequence[str] = (),
    check_every_s: float | None = None,
    window: int = WINDOW,
    clock: Callable[[], float] = time.time,
    ready_timeout_s: float = 120.0,
) -> ray.actor.ActorHandle:
    """Create the run's monitor (named ``run:<run_id>`` in namespace ``tether``, detached,
    restartable, on the head node), or return the existing one. Waits until it answers.
    ``check_every_s``: seconds between periodic health checks (None: ``heartbeat_s / 2``;
    0: none, health is then judged only on pushes and ``check_health`` calls). The other
    arguments only matter when this call creates the actor."""
    if not run_id or not isinstance(run_id, str):
        raise MonitorError("run_id must be a non-empty string")
    if not ray.is_initialized():
        raise MonitorError("not connected to Ray: call ray.init(address=...) before start_monitor")
    parse_goals(targets=targets, milestones=milestones)  # fail here, not in the actor
    if check_every_s is None:
        check_every_s = min(max(heartbeat_s / 2, 0.2), 15.0)
    handle = RunMonitor.options(
        name=monitor_name(run_id=run_id),
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        max_task_retries=-1,
        num_cpus=0,
        resources={HEAD_NODE_RESOURCE: 0.001},
    ).remote(
        run_id=run_id,
        run_dir=str(Path(run_dir).resolve()),
        heartbeat_s=heartbeat_s,
        stall_timeout_s=stall_timeout_s,
        targets=tuple(targets),
        milestones=tuple(milestones),
        check_every_s=check_every_s,
        window=window,
        clock=clock,
    )
    try:
        ray.get(handle.ready.remote(), timeout=ready_timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise MonitorError(
            f"the monitor of run {run_id!r} did not start within {ready_timeout_s:.0f} s: is "
            "the head node up (`ray status`)?"
        ) from None
    except ray.exceptions.RayActorError as exc:
        raise MonitorError(f"the monitor of run {run_id!r} could not start: {exc}") from None
    return handle


def get_monitor(*, run_id: str) -> ray.actor.ActorHandle:
    """The handle of a running monitor; :class:`MonitorNotFoundError` when there is none."""
    if not ray.is_initialized():  # ray.get_actor would start a throwaway local Ray instead
        raise MonitorError("not connected to Ray: call ray.init(address=...) first")
    name = monitor_name(run_id=run_id)
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        raise MonitorNotFoundError(
            f"no run monitor for run {run_id!r} on this Ray cluster (actor {name!r} in "
            f"namespace {NAMESPACE!r}): check the run id, and that this is the cluster the "
            "run was submitted to"
        ) from None


def stop_monitor(*, run_id: str) -> bool:
    """End the run's monitor for good (events.jsonl stays); False when there was none."""
    try:
        handle = get_monitor(run_id=run_id)
    except MonitorNotFoundError:
        return False
    ray.kill(handle, no_restart=True)
    return True
