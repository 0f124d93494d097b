"""`tether demo` end to end on a real local Ray cluster: a Ray job that really trains."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ray.job_submission import JobStatus, JobSubmissionClient

TETHER = str(Path(sys.executable).with_name("tether"))


def test_demo_submits_a_ray_job_that_trains_and_writes_results(git_repo, ray_cluster):
    port = ray_cluster.dashboard_url.rsplit(":", 1)[1]
    (git_repo.path / "tether.toml").write_text(
        f'[profiles.local]\nkind = "local"\ndashboard_port = {port}\n'
    )
    res = subprocess.run(
        [TETHER, "demo"],
        cwd=git_repo.path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
        stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"using the local Ray cluster at {ray_cluster.dashboard_url}" in res.stdout
    runs = sorted((git_repo.path / "results").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("demo-")
    results = json.loads((runs[0] / "results.json").read_text())
    by_hidden = {t["config"]["hidden"]: t for t in results["trials"]}
    assert sorted(by_hidden) == [4, 16, 64]
    # Real training: capacity matters, the big model learns the spirals, losses fall.
    assert by_hidden[64]["test_accuracy"] >= 0.9
    assert by_hidden[4]["test_accuracy"] < by_hidden[64]["test_accuracy"]
    for t in by_hidden.values():
        assert t["train_loss"][-1] < t["train_loss"][0]
    assert results["best"]["hidden"] == 64
    # It was an ordinary Ray job carrying the run id, and the cluster we did not start is
    # still up afterwards.
    client = JobSubmissionClient(ray_cluster.dashboard_url)
    info = client.get_job_info(runs[0].name)
    assert info.status == JobStatus.SUCCEEDED
    assert info.metadata == {"tether_run": runs[0].name, "tether_spec": "demo"}
    assert "trial hidden=64: test_accuracy=" in res.stdout
