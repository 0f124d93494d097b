"""One import namespace: a user repository with its own ``ml/``, ``client/`` and ``cluster/``
packages runs its own ``run = "ml.train:main"`` stage, over the local profile and over the
test sshd, and inside that stage tether's modules and the user's each resolve to their own
files (before the namespace, such a repository failed every run before any stage started)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, git, write_local_profile
from ray.job_submission import JobStatus, JobSubmissionClient

from tether.client.cli import main as tether

# The user's own packages, named like ours. Their cluster/entrypoint.py and client/cli.py
# would break the run if `python -m tether.cluster.entrypoint` or our CLI ever loaded them.
USER_FILES = {
    "ml/__init__.py": "OWNER = 'user'\n",
    "ml/data.py": "def load():\n    return [1.0, 2.0, 3.0]\n",  # no TrackConfig here
    "ml/models.py": "def mean(xs):\n    return sum(xs) / len(xs)\n",
    "client/__init__.py": "OWNER = 'user'\n",
    "client/cli.py": "raise SystemExit('the user client/cli.py was imported')\n",
    "cluster/__init__.py": "OWNER = 'user'\n",
    "cluster/entrypoint.py": "raise SystemExit('the user cluster/entrypoint.py was imported')\n",
    "ml/train.py": """
import json
import sys
from pathlib import Path


def main(ctx):
    import client
    import cluster
    import ml
    from ml.data import load
    from ml.models import mean

    import tether.client
    import tether.cluster.stages
    import tether.ml.data

    where = {name: str(Path(sys.modules[name].__file__).resolve()) for name in (
        "ml", "ml.data", "ml.models", "client", "cluster",
        "tether.client", "tether.cluster.stages", "tether.ml.data")}
    worktree = Path.cwd().resolve()
    for name, path in where.items():
        ours = name.startswith("tether.")
        inside = Path(path).is_relative_to(worktree)
        assert inside != ours, f"{name} resolved to {path} (worktree {worktree})"
    assert ml.OWNER == client.OWNER == cluster.OWNER == "user"
    assert hasattr(tether.ml.data, "TrackConfig")
    (ctx.out_dir / "resolved.json").write_text(json.dumps({"worktree": str(worktree), **where}))
    return f"user model mean {mean(load()):.1f}"
""",
}


def _user_repo(repo: Path) -> None:
    for rel, text in USER_FILES.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    (repo / "exp.toml").write_text(
        'name = "mine"\n[[stages]]\nname = "mytrain"\nrun = "ml.train:main"\n'
    )


@pytest.fixture(params=["local", "ssh"])
def user_repo(request, git_repo, ray_cluster, sshd, tmp_path, monkeypatch) -> tuple[Path, Path]:
    """(laptop repo, head-side run worktrees folder) for the profile under test."""
    repo = git_repo.path
    _user_repo(repo)
    if request.param == "local":
        write_local_profile(repo, ray_cluster)
        runs = repo / ".tether" / "runs"
    else:
        port = ray_cluster.dashboard_url.rsplit(":", 1)[1]
        (repo / "tether.toml").write_text(
            f'default_profile = "head"\n[profiles.head]\nkind = "ssh"\n'
            f'host = "{sshd.host_alias}"\nssh_config = "{sshd.ssh_config}"\n'
            f'repo_path = "{tmp_path}/head/tether.git"\nruns_path = "{tmp_path}/head/runs"\n'
            f'python = "{sys.executable}"\ndashboard_port = {port}\n'
            "[heartbeat]\ninterval_s = 1\nstall_timeout_s = 30\n"
        )
        runs = tmp_path / "head" / "runs"
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "my experiment with my own ml/ client/ cluster/", cwd=repo)
    monkeypatch.chdir(repo)
    return repo, runs


def test_a_repo_with_its_own_ml_client_and_cluster_packages_runs_its_own_stage(
    user_repo, ray_cluster, capsys
):
    _, runs = user_repo
    capsys.readouterr()
    assert tether(["submit", "exp.toml", "--json"]) == 0
    sub = json.loads(capsys.readouterr().out)
    client = JobSubmissionClient(ray_cluster.dashboard_url)
    deadline = time.monotonic() + 240
    while not (status := client.get_job_status(sub["job_id"])).is_terminal():
        assert time.monotonic() < deadline
        time.sleep(0.5)
    logs = client.get_job_logs(sub["job_id"])
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert "was imported" not in logs

    worktree = (runs / sub["run_id"]).resolve()
    assert Path(sub["worktree"]).resolve() == worktree
    resolved = json.loads(
        (worktree / "results" / sub["run_id"] / "mytrain" / "resolved.json").read_text()
    )
    assert resolved.pop("worktree") == str(worktree)
    for name in ("ml", "ml.data", "ml.models", "client", "cluster"):
        rel = name.replace(".", "/") + ("/__init__.py" if name.count(".") == 0 else ".py")
        assert resolved[name] == str(worktree / rel), name
    assert resolved["tether.ml.data"] == str(REPO_ROOT / "ml" / "data.py")
    assert resolved["tether.client"] == str(REPO_ROOT / "client" / "__init__.py")
    assert resolved["tether.cluster.stages"] == str(REPO_ROOT / "cluster" / "stages.py")
    stage = json.loads(
        (worktree / "results" / sub["run_id"] / "mytrain" / "stage.json").read_text()
    )
    assert "user model mean 2.0" in json.dumps(stage)


def test_the_built_wheel_puts_everything_under_the_tether_name(tmp_path):
    """A regular install (a wheel, as pip builds it from this tree) adds no top-level
    `client`, `cluster` or `ml` to site-packages, and its entry point is tether's."""
    import shutil
    import zipfile

    src = tmp_path / "src"  # a copy: setuptools writes build/ beside the sources
    for name in ("client", "cluster", "ml"):
        shutil.copytree(REPO_ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, src / name)
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    (wheel,) = tmp_path.glob("tether-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"tether"}, tops
    # Every module of the tree is in it (a subpackage missing from pyproject's explicit
    # `packages` list would be left out of a regular install, yet work in the editable one).
    tree = {
        f"tether/{p.relative_to(src).as_posix()}"
        for folder in ("client", "cluster", "ml")
        for p in (src / folder).rglob("*.py")
    }
    assert len(tree) > 60 and tree <= set(names), sorted(tree - set(names))
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "tether = tether.client.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
