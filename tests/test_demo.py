"""`tether demo` end to end on a real local Ray cluster: an ordinary Ray job that trains the
four extractors side by side, one (logical) GPU each."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from ray.job_submission import JobStatus, JobSubmissionClient

from tether.ml.results import read_training_results

TETHER = str(Path(sys.executable).with_name("tether"))


def test_demo_submits_a_ray_job_that_compares_the_extractors(git_repo, ray_cluster):
    port = ray_cluster.dashboard_url.rsplit(":", 1)[1]
    (git_repo.path / "tether.toml").write_text(
        f'[profiles.local]\nkind = "local"\ndashboard_port = {port}\n'
    )
    res = subprocess.run(
        [TETHER, "demo", "--quick"],
        cwd=git_repo.path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200"},
        stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"using the local Ray cluster at {ray_cluster.dashboard_url}" in res.stdout
    runs = sorted((git_repo.path / "results").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("demo-")
    run = runs[0]
    names = ["i3d", "slowfast", "magvit", "transformer"]
    comparison = json.loads((run / "comparison.json").read_text())
    assert [t["model"] for t in comparison["trials"]] == names
    for name in names:
        results = read_training_results(run / name / "training_results.json")
        assert results.model == name and results.num_epochs == 1
        assert results.test_results.kind == "classification"
        # Results folders hold no checkpoints; those live in the git-ignored .tether/.
        assert not list((run / name).glob("*.pt"))
        assert (
            git_repo.path / ".tether" / "checkpoints" / run.name / name / "checkpoint.pt"
        ).exists()
        assert f"[{name}] epoch 1: train_loss=" in res.stdout
    # Each trial asked for one GPU: each got one of the cluster's four logical GPUs.
    gpus = re.findall(r"\] started on node \w+ gpus=\[(\d)\]", res.stdout)
    assert len(gpus) == 4 and set(gpus) <= {"0", "1", "2", "3"}, res.stdout
    # The user's repo does not see tether's local state as untracked files.
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=git_repo.path, capture_output=True, text=True
    ).stdout
    assert ".tether" not in status
    client = JobSubmissionClient(ray_cluster.dashboard_url)
    info = client.get_job_info(run.name)
    assert info.status == JobStatus.SUCCEEDED
    assert info.metadata == {"tether_run": run.name, "tether_spec": "demo"}
    assert "extractor comparison" in res.stdout
