"""Real parts for tests: a local Ray cluster, a multi-node Ray cluster, an OpenSSH sshd on
127.0.0.1, and real git repositories. Nothing here is a mock."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from client.localcluster import LocalCluster, free_port, start_local_cluster, stop_local_cluster

REPO_ROOT = Path(__file__).resolve().parents[1]
REQUIRE_SSHD = os.environ.get("TETHER_REQUIRE_SSHD") == "1"
MB = 1024 * 1024


def pytest_report_header(config: pytest.Config) -> list[str]:
    sshd = _find_sshd()
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
    """A real local Ray head (`ray start --head`): 2 CPUs, 4 logical GPUs, dashboard on
    127.0.0.1 at a free port. Started once per test run; only its own processes are stopped."""
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


@dataclass(frozen=True)
class SSHD:
    host_alias: str  # Host in ssh_config
    port: int
    user: str
    ssh_config: Path  # HostName/Port/User/IdentityFile/UserKnownHostsFile for host_alias
    known_hosts: Path  # holds the server's host key
    client_key: Path
    host_public_key: str  # "ssh-ed25519 AAAA..."
    workdir: Path
    pid: int

    def ssh_command(self) -> str:
        """For GIT_SSH_COMMAND and friends."""
        return f"ssh -F {self.ssh_config}"


def _find_sshd() -> str | None:
    forced = os.environ.get("TETHER_SSHD_BINARY")  # lets a test play "no sshd here"
    candidates = (
        (forced,) if forced else (shutil.which("sshd"), "/usr/sbin/sshd", "/usr/local/sbin/sshd")
    )
    for cand in candidates:
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def _wait_for_banner(port: int, proc: subprocess.Popen, *, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited {proc.returncode}: {proc.stderr.read().decode()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"sshd did not answer on 127.0.0.1:{port} within {timeout}s")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> SSHD:
    """A real OpenSSH sshd on 127.0.0.1 and a free port, with a temp host key, an authorized
    client key, an ssh_config naming it, and a known_hosts that trusts it."""
    binary = _find_sshd()
    if binary is None:
        reason = (
            "NO sshd BINARY: the SSH tests did not run. Install openssh-server "
            "(`make test` does it when root)."
        )
        if REQUIRE_SSHD:
            pytest.fail(f"{reason} TETHER_REQUIRE_SSHD=1 makes this a failure.")
        print(f"\n*** {reason} ***", file=sys.stderr)
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("sshd")
    host_key = workdir / "host_ed25519"
    client_key = workdir / "client_ed25519"
    for key in (host_key, client_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (workdir / "authorized_keys").write_text(client_key.with_suffix(".pub").read_text())
    port = free_port()
    user = getpass.getuser()
    config = workdir / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"PidFile {workdir / 'sshd.pid'}",
                f"AuthorizedKeysFile {workdir / 'authorized_keys'}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "StrictModes no",
                "UsePAM no",
                "AllowTcpForwarding yes",
                "MaxStartups 100:30:200",
                "MaxSessions 50",
                "Subsystem sftp internal-sftp",
                "LogLevel VERBOSE",
                "",
            ]
        )
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
    proc = subprocess.Popen(
        [binary, "-D", "-e", "-f", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "sshd.log", "wb"),  # noqa: SIM115 - lives as long as sshd
    )
    try:
        _wait_for_banner(port, proc)
    except RuntimeError:
        proc.kill()
        raise
    host_public = " ".join(host_key.with_suffix(".pub").read_text().split()[:2])
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_public}\n")
    ssh_config = workdir / "ssh_config"
    alias = "tether-test-head"
    ssh_config.write_text(
        "\n".join(
            [
                f"Host {alias}",
                "  HostName 127.0.0.1",
                f"  Port {port}",
                f"  User {user}",
                f"  IdentityFile {client_key}",
                "  IdentitiesOnly yes",
                f"  UserKnownHostsFile {known_hosts}",
                "  StrictHostKeyChecking yes",
                "  BatchMode yes",
                "",
            ]
        )
    )
    try:
        yield SSHD(
            host_alias=alias,
            port=port,
            user=user,
            ssh_config=ssh_config,
            known_hosts=known_hosts,
            client_key=client_key,
            host_public_key=host_public,
            workdir=workdir,
            pid=proc.pid,
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


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
