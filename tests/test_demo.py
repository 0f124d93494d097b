"""`tether demo` end to end on a real local Ray cluster: an ordinary Ray job whose spec's
compare stage trains the four extractors side by side, one (logical) GPU each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ray.job_submission import JobStatus, JobSubmissionClient

from tether.ml.comparison_report import read_trial
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
    trials = run / "compare" / "trials"
    records = [read_trial(trials / f"{name}-s0" / "trial.json") for name in names]
    assert [r.status for r in records] == ["finished"] * 4
    for name in names:
        results = read_training_results(trials / f"{name}-s0" / "training_results.json")
        assert results.model == name and results.num_epochs == 1
        assert results.test_results.kind == "classification"
        # Results folders hold no checkpoints; those live in the git-ignored .tether/.
        assert not list((trials / f"{name}-s0").glob("*.pt"))
        ckpt = git_repo.path / ".tether" / "checkpoints" / run.name / "compare" / f"{name}-s0"
        assert (ckpt / "checkpoint.pt").exists()
    # Each trial asked for one GPU: each got its own of the cluster's four logical GPUs.
    gpus = [r.gpu_ids for r in records]
    assert all(len(g) == 1 for g in gpus) and {g[0] for g in gpus} == {"0", "1", "2", "3"}
    for name in ("comparison.json", "comparison.md", "comparison.html"):
        assert (run / "compare" / name).exists()
    assert f"comparison: {run / 'compare' / 'comparison.html'}" in res.stdout
    assert "stage compare: finished 4/4 trials, best" in res.stdout  # the job log
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
