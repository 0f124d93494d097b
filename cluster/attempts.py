"""Which attempt of a Ray task this process runs: 1 the first, 2 the first retry (after its
worker or node died, or an application error with ``retry_exceptions``), and so on."""

from __future__ import annotations

import sys


def task_attempt() -> int | None:
    """The attempt number of the Ray task this process is running, or None outside a Ray
    task (or where this Ray version does not say)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    try:
        # Ray keeps the number in the task's spec; there is no public accessor (Ray 2.x).
        worker = ray._private.worker
        if worker.global_worker.mode != worker.WORKER_MODE:
            return None  # the driver, not a task
        n = worker.global_worker.core_worker.get_current_task_attempt_number()
    except Exception:
        return None
    return n + 1 if isinstance(n, int) and n >= 0 else None
