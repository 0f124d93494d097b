"""Real parts for tests: a local Ray cluster, a multi-node Ray cluster, an OpenSSH sshd on
127.0.0.1, and real git repositories. Nothing here is a mock."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from sshdserver import SSHD, find_sshd, start_sshd, stop_sshd

from tether.client.localcluster import (
    LOOPBACK_ENV,
    LocalCluster,
    free_port,
    start_local_cluster,
    stop_local_cluster,
)

# Drivers in this process (and the subprocesses tests start) connect to the embedded cluster
# on 127.0.0.1: Ray's single-machine mode keeps a loopback address (see localcluster.py). Set
# before anything imports ray, which reads it once.
os.environ.update(LOOPBACK_ENV)

REPO_ROOT = Path(__file__).resolve().parents[1]
REQUIRE_SSHD = os.environ.get("TETHER_REQUIRE_SSHD") == "1"
MB = 1024 * 1024


def pytest_report_header(config: pytest.Config) -> list[str]:
    sshd = find_sshd()
    return [
        f"tether: sshd={sshd or 'MISSING'} TETHER_REQUIRE_SSHD={int(REQUIRE_SSHD)}",
        f"tether: python={sys.executable}",
    ]


REAL_PARTS = ("ray_cluster", "ray_driver", "multinode_cluster", "sshd", "git_repo", "head_repo")
_USED: dict[str, dict[str, int]] = {name: {} for name in REAL_PARTS}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        for name in set(getattr(item, "fixturenames", ())) & set(REAL_PARTS):
            counts = _USED[name]
            counts[report.outcome] = counts.get(report.outcome, 0) + 1
    return report


def pytest_terminal_summary(terminalreporter) -> None:
    """Show which real parts the run used, so a skipped sshd cannot hide in a green run."""
    terminalreporter.section("real parts used by tests")
    for name, counts in _USED.items():
        detail = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "unused"
        terminalreporter.write_line(f"{name:18} {detail}")


# --------------------------------------------------------------------------- Ray


@pytest.fixture(scope="session")
def ray_cluster() -> LocalCluster:
    """A real local Ray head (`ray start --head`): 2 CPUs, 4 logical GPUs, every port on
    127.0.0.1 (dashboard at a free port). Started once per test run; only its own processes
    are stopped."""
    # Short path: Ray puts unix sockets below it.
    temp_dir = Path(tempfile.mkdtemp(prefix="tt-ray-", dir="/tmp"))
    cluster = start_local_cluster(
        temp_dir=temp_dir,
        dashboard_port=free_port(),
        num_cpus=2,
        num_gpus=4,
        object_store_bytes=200 * MB,
    )
    try:
        yield cluster
    finally:
        import ray

        ray.shutdown()
        stop_local_cluster(temp_dir=temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def ray_driver(ray_cluster: LocalCluster):
    """This test process connected as a driver to ``ray_cluster``."""
    import ray

    ray.shutdown()
    ray.init(address=ray_cluster.gcs_address, log_to_driver=False)
    try:
        yield ray_cluster
    finally:
        ray.shutdown()


@pytest.fixture
def multinode_cluster():
    """`ray.cluster_utils.Cluster`: a head with no GPU and two 1-GPU worker nodes, this
    process connected as driver. Tests may remove and add nodes."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    node_args = {"num_cpus": 1, "object_store_memory": 100 * MB}
    cluster = Cluster(initialize_head=True, head_node_args={**node_args, "num_gpus": 0})
    try:
        for _ in range(2):
            cluster.add_node(**node_args, num_gpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


# --------------------------------------------------------------------------- sshd


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> SSHD:
    """A real OpenSSH sshd on 127.0.0.1 and a free port, with a temp host key, an authorized
    client key, an ssh_config naming it, and a known_hosts that trusts it."""
    binary = find_sshd()
    if binary is None:
        reason = (
            "NO sshd BINARY: the SSH tests did not run. Install openssh-server "
            "(`make test` does it when root)."
        )
        if REQUIRE_SSHD:
            pytest.fail(f"{reason} TETHER_REQUIRE_SSHD=1 makes this a failure.")
        print(f"\n*** {reason} ***", file=sys.stderr)
        pytest.skip(reason)
    sshd, proc = start_sshd(tmp_path_factory.mktemp("sshd"), binary)
    try:
        yield sshd
    finally:
        stop_sshd(proc)


# --------------------------------------------------------------------------- git


def git(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run git in ``cwd``; raise with its output when it fails."""
    res = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    if res.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} exited {res.returncode}: {res.stderr}")
    return res.stdout.strip()


_GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Tether Test",
    "GIT_AUTHOR_EMAIL": "test@tether.invalid",
    "GIT_COMMITTER_NAME": "Tether Test",
    "GIT_COMMITTER_EMAIL": "test@tether.invalid",
}


@dataclass(frozen=True)
class GitRepo:
    path: Path
    head: str  # commit sha of main


@pytest.fixture
def git_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> GitRepo:
    """A real laptop-side repository on branch ``main`` with one commit."""
    for k, v in _GIT_IDENTITY.items():
        monkeypatch.setenv(k, v)
    repo = tmp_path / "laptop"
    repo.mkdir()
    git("init", "-q", "-b", "main", cwd=repo)
    (repo / "train.py").write_text("print('training')\n")
    (repo / "README.md").write_text("# experiment\n")
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "initial commit", cwd=repo)
    return GitRepo(path=repo, head=git("rev-parse", "HEAD", cwd=repo))


@pytest.fixture
def head_repo(tmp_path: Path) -> Path:
    """A bare repository standing for the head node's repository."""
    path = tmp_path / "head.git"
    git("init", "-q", "--bare", "-b", "main", str(path), cwd=tmp_path)
    return path


def write_local_profile(repo: Path, cluster: LocalCluster) -> None:
    """A tether.toml in ``repo`` whose embedded local profile uses ``cluster`` (1 s beats)."""
    port = cluster.dashboard_url.rsplit(":", 1)[1]
    (repo / "tether.toml").write_text(
        f'[profiles.local]\nkind = "local"\ndashboard_port = {port}\n'
        "[heartbeat]\ninterval_s = 1\nstall_timeout_s = 30\n"
    )


# --------------------------------------------------------------------------- remotes


@pytest.fixture(params=["ssh", "local"])
def remote(request: pytest.FixtureRequest):
    """Each test twice: over the real sshd, and with the local remote."""
    from tether.client.remote import LocalRemote, SSHRemote

    if request.param == "local":
        r = LocalRemote()
    else:
        sshd = request.getfixturevalue("sshd")
        r = SSHRemote(host=sshd.host_alias, ssh_config=sshd.ssh_config)
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def ssh_remote(sshd):
    """An SSHRemote to the sshd fixture."""
    from tether.client.remote import SSHRemote

    r = SSHRemote(host=sshd.host_alias, ssh_config=sshd.ssh_config)
    try:
        yield r
    finally:
        r.close()
