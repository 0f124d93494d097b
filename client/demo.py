"""``tether demo``: the main job on the embedded local default (no cloud, no GPU).

Starts a local Ray cluster when none is running (with 4 logical GPUs unless the local
profile sets ``num_gpus``), writes a comparison spec (the four extractors, one trial each,
one logical GPU per trial) into the git-ignored ``.tether/``, submits the entrypoint with it
as an ordinary Ray job through the Jobs API, follows its log, and shows the comparison it
wrote in ``results/<run-id>/compare/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ray.job_submission import JobStatus, JobSubmissionClient

from tether.ml.atomic import write_bytes_atomic

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
from .localstate import run_results_dir, state_dir
from .repo import repo_root
from .runid import new_run_id

DEMO_GPUS = 4  # logical GPUs of a cluster the demo starts, so the fan-out is real


@dataclass(frozen=True)
class DemoResult:
    run_id: str
    run_dir: Path
    status: JobStatus
    records: list  # tether.ml.comparison_report.TrialRecord, one per trial


def demo_spec(*, quick: bool) -> str:
    """The demo's experiment spec: a compare stage over the four built-in extractors."""
    size, epochs, n = ("tiny", 1, 64) if quick else ("small", 8, 1500)
    return (
        'name = "demo"\n\n'
        "[train]\n"
        f"epochs = {epochs}\n"
        f'extractor = {{ name = "i3d", size = "{size}" }}\n'
        f"track = {{ train_size = {n}, val_size = {max(16, n // 5)}, "
        f"test_size = {max(16, n // 5)} }}\n\n"
        "[compare]\n"
        'extractors = ["i3d", "slowfast", "magvit", "transformer"]\n'
        "seeds = [0]\n"
        "gpus_per_trial = 1\n"
        "cpus_per_trial = 0.5\n\n"
        '[[stages]]\nname = "compare"\n'
    )


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
            num_gpus=DEMO_GPUS if profile.num_gpus is None else profile.num_gpus,
        )
        record_cluster(repo=root, cluster=started)  # `tether cluster stop` finds it
    else:
        echo(f"using the local Ray cluster at {url}")
    try:
        client = JobSubmissionClient(url)
        spec = state_dir(root) / f"{run_id}.toml"  # git-ignored
        write_bytes_atomic(spec, demo_spec(quick=quick).encode())
        entrypoint = (
            f"cd {shlex.quote(str(root))} && {shlex.quote(sys.executable)} "
            "-m tether.cluster.entrypoint --no-commit "
            f"--run-id {run_id} --run-dir {shlex.quote(str(run_dir))} "
            f"--spec {shlex.quote(str(spec))}"
        )
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
    from tether.ml.comparison_report import read_trials

    records = read_trials(run_dir / "compare")
    return DemoResult(run_id=run_id, run_dir=run_dir, status=status, records=records)


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
