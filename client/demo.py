"""``tether demo``: the main job on the embedded local default (no cloud, no GPU).

Starts a local Ray cluster when none is running, submits the run as an ordinary Ray job
through the Jobs API, follows its log, and shows the results it wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ray.job_submission import JobStatus, JobSubmissionClient

from .config import LocalProfile, TetherConfig
from .errors import ClusterError
from .localcluster import (
    LocalCluster,
    default_temp_dir,
    forget_cluster,
    ray_version_at,
    record_cluster,
    start_local_cluster,
    stop_local_cluster,
)
from .localstate import run_results_dir
from .repo import repo_root
from .runid import new_run_id


@dataclass(frozen=True)
class DemoResult:
    run_id: str
    run_dir: Path
    status: JobStatus
    results: dict


def run_demo(
    *,
    cwd: Path,
    config: TetherConfig,
    echo: Callable[[str], None],
    keep_cluster: bool = False,
    quick: bool = False,
    timeout_s: float = 1800.0,
) -> DemoResult:
    _, profile = config.profile("local")
    assert isinstance(profile, LocalProfile)
    root = repo_root(cwd)
    run_id = new_run_id("demo")
    run_dir = run_results_dir(repo=root, results_dir=config.results_dir, run_id=run_id)

    url = f"http://127.0.0.1:{profile.dashboard_port}"
    started: LocalCluster | None = None
    if ray_version_at(url) is None:
        echo(f"starting a local Ray cluster (dashboard {url}) ...")
        started = start_local_cluster(
            temp_dir=default_temp_dir(),
            dashboard_port=profile.dashboard_port,
            num_gpus=profile.num_gpus,
        )
        record_cluster(repo=root, cluster=started)  # `tether cluster stop` finds it
    else:
        echo(f"using the local Ray cluster at {url}")
    try:
        client = JobSubmissionClient(url)
        entrypoint = (
            f"cd {shlex.quote(str(root))} && {shlex.quote(sys.executable)} "
            "-m tether.cluster.entrypoint "
            f"--run-id {run_id} --run-dir {shlex.quote(str(run_dir))}"
        )
        if quick:  # seconds, not minutes: tiny models, one epoch, a few clips
            entrypoint += " --size tiny --epochs 1 --train-size 64"
        job_id = client.submit_job(
            entrypoint=entrypoint,
            submission_id=run_id,
            metadata={"tether_run": run_id, "tether_spec": "demo"},
        )
        echo(f"submitted Ray job {job_id}; following its log")
        status, log = _follow(client, job_id, echo=echo, timeout_s=timeout_s)
    finally:
        if started is not None and not keep_cluster:
            echo("stopping the local Ray cluster tether started")
            stop_local_cluster(temp_dir=started.temp_dir)
            forget_cluster(repo=root)
    if status != JobStatus.SUCCEEDED:
        tail = "\n".join(log.strip().splitlines()[-15:])
        raise ClusterError(
            f"demo job {job_id} ended {status.value}; last log lines:\n{tail}",
            hint="rerun with TETHER_DEBUG=1, or look at `ray job logs` for the job",
        )
    results = json.loads((run_dir / "comparison.json").read_text())
    return DemoResult(run_id=run_id, run_dir=run_dir, status=status, results=results)


def _follow(
    client: JobSubmissionClient, job_id: str, *, echo: Callable[[str], None], timeout_s: float
) -> tuple[JobStatus, str]:
    """Stream the job log until the job ends; returns (status, full log).

    The log tail can end early when its connection drops, so whatever it missed is printed
    from the full log at the end, after the lines already shown.
    """
    shown = 0

    async def tail() -> None:
        nonlocal shown
        async for chunk in client.tail_job_logs(job_id):
            for line in chunk.splitlines():
                echo(line)
            shown += len(chunk)

    deadline = time.monotonic() + timeout_s
    with contextlib.suppress(TimeoutError, ConnectionError, OSError):
        asyncio.run(asyncio.wait_for(tail(), timeout=timeout_s))
    while not (status := client.get_job_status(job_id)).is_terminal():
        if time.monotonic() > deadline:
            client.stop_job(job_id)
            raise ClusterError(f"demo job {job_id} did not finish in {timeout_s:.0f}s; stopped it")
        time.sleep(0.5)
    log = client.get_job_logs(job_id)
    for line in log[shown:].splitlines():
        echo(line)
    return status, log
