"""Time from submit to job RUNNING: ``tether submit`` vs Ray's own ``ray job submit --no-wait``.

Both are run as the commands a user types (a fresh process each), on the same local Ray
cluster, interleaved, for the same entrypoint (tether's ``cd <worktree> && python -m
tether.cluster.entrypoint ...``; the baseline reuses a worktree tether made, with its own run id).
The clock starts before the process is spawned and stops when the Jobs API first reports the
job RUNNING (polled every 20 ms from this process). ``tether submit`` also validates the spec,
snapshots the repo onto a run branch, adds the run's worktree and writes the run record: that
is the overhead measured. Medians of ``--repeats`` runs. Goal: at most 1.5x Ray's time.

    .venv/bin/python bench/submit_latency.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from ray.job_submission import JobStatus, JobSubmissionClient

from tether.client.localcluster import free_port, start_local_cluster, stop_local_cluster

BIN = Path(sys.executable).parent
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "COLUMNS": "200"}


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=ENV
    ).stdout.strip()


def _until_running(client: JobSubmissionClient, job_id: str, start: float) -> float:
    while True:
        try:
            status = client.get_job_status(job_id)
        except Exception:  # not registered yet
            status = None
        if status in (JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED):
            return time.perf_counter() - start
        time.sleep(0.02)


def _stop(client: JobSubmissionClient, job_id: str) -> None:
    client.stop_job(job_id)
    deadline = time.monotonic() + 60
    while not client.get_job_status(job_id).is_terminal() and time.monotonic() < deadline:
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tb-sub-", dir="/tmp"))
    port = free_port()
    cluster = start_local_cluster(temp_dir=work / "ray", dashboard_port=port, num_cpus=2)
    client = JobSubmissionClient(cluster.dashboard_url)
    repo = work / "repo"
    repo.mkdir()
    _git("init", "-q", "-b", "main", cwd=repo)
    for k, v in {"user.name": "bench", "user.email": "bench@tether.invalid"}.items():
        _git("config", k, v, cwd=repo)
    (repo / "tether.toml").write_text(
        f'[profiles.local]\nkind = "local"\ndashboard_port = {port}\n'
    )
    (repo / "exp.toml").write_text(
        'name = "bench"\n[[stages]]\nname = "nap"\ncommand = "sleep 30"\n'
    )
    (repo / "train.py").write_text("print('train')\n")
    _git("add", "-A", cwd=repo)
    _git("commit", "-q", "-m", "bench", cwd=repo)
    (repo / "train.py").write_text("print('train, dirty')\n")  # a dirty tree, as users have

    ours, ray_times, worktree = [], [], None
    try:
        for i in range(args.repeats):
            start = time.perf_counter()
            res = subprocess.run(
                [str(BIN / "tether"), "submit", "exp.toml", "--json"],
                cwd=repo, capture_output=True, text=True, env=ENV, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            if res.returncode != 0:
                raise SystemExit(res.stderr)
            sub = json.loads(res.stdout)
            ours.append(_until_running(client, sub["job_id"], start))
            _stop(client, sub["job_id"])
            worktree = sub["worktree"]
            entry = sub["entrypoint"].replace(sub["run_id"], f"raybase-{i}-{uuid.uuid4().hex[:6]}")
            sid = f"raybase-{i}-{uuid.uuid4().hex[:6]}"
            start = time.perf_counter()
            res = subprocess.run(
                [str(BIN / "ray"), "job", "submit", "--no-wait", "--address",
                 cluster.dashboard_url, "--submission-id", sid, "--", "bash", "-c", entry],
                capture_output=True, text=True, env=ENV, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            if res.returncode != 0:
                raise SystemExit(res.stderr)
            ray_times.append(_until_running(client, sid, start))
            _stop(client, sid)
    finally:
        stop_local_cluster(temp_dir=work / "ray")
        shutil.rmtree(work, ignore_errors=True)

    mo, mr = statistics.median(ours), statistics.median(ray_times)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; worktree e.g. {worktree}")
    print("| command | runs | median s to RUNNING | min s | max s | vs ray job submit |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, xs in (("ray job submit --no-wait (baseline)", ray_times), ("tether submit", ours)):
        med = statistics.median(xs)
        print(
            f"| {name} | {len(xs)} | {med:.2f} | {min(xs):.2f} | {max(xs):.2f} | {med / mr:.2f}x |"
        )
    print(f"goal: tether <= 1.5x ray: {'met' if mo <= 1.5 * mr else 'NOT met'} ({mo / mr:.2f}x)")


if __name__ == "__main__":
    main()
