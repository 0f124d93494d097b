"""The embedded local Ray cluster (``client/localcluster.py``) and ``tether cluster
status|stop``: every socket of every process of the cluster is on loopback, stopping it leaves
no process and no listener behind, and tether stops only a cluster it started."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from conftest import git
from ray.job_submission import JobStatus, JobSubmissionClient

from tether.client.errors import ClusterError
from tether.client.localcluster import (
    check_dashboard_port,
    cluster_processes,
    free_port,
    ray_version_at,
    start_local_cluster,
    stop_local_cluster,
)

TETHER = str(Path(sys.executable).with_name("tether"))


# --------------------------------------------------------------------------- the test's view


def _short_tmp(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))  # Ray puts unix sockets below it


def _names_path(text: str, root: str) -> bool:
    at = text.find(root)
    while at != -1:
        end = at + len(root)
        if end == len(text) or text[end] in "/ ,'\"":
            return True
        at = text.find(root, end)
    return False


def _processes_under(temp_dir: Path) -> list[psutil.Process]:
    """Every live process that names ``temp_dir`` in its argv or holds a file below it, and
    all their descendants: found here on its own, not with the code under test."""
    root = str(temp_dir)
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        if proc.pid == os.getpid() or not _alive(proc):
            continue
        try:
            holds = any(f.path.startswith(root + "/") for f in proc.open_files())
        except psutil.Error:
            holds = False
        if holds or _names_path(" ".join(proc.info["cmdline"] or []), root):
            found[proc.pid] = proc
    for proc in list(found.values()):
        try:
            for child in proc.children(recursive=True):
                if _alive(child):
                    found.setdefault(child.pid, child)
        except psutil.Error:
            pass
    return list(found.values())


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _listening(procs: list[psutil.Process]) -> list[tuple[str, str, int, int]]:
    """(process name, ip, port, socket type) of each TCP listener and unconnected UDP socket."""
    out = []
    for proc in procs:
        try:
            conns = proc.net_connections(kind="inet")
            name = proc.name()
        except psutil.Error:
            continue
        for c in conns:
            tcp_listen = c.type == socket.SOCK_STREAM and c.status == psutil.CONN_LISTEN
            udp_bound = c.type == socket.SOCK_DGRAM and not c.raddr
            if tcp_listen or udp_bound:
                out.append((name, c.laddr.ip, c.laddr.port, c.type))
    return out


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)
    return addr.is_loopback or (mapped is not None and mapped.is_loopback)


def _external_addresses() -> list[str]:
    """This machine's addresses other machines could reach it on."""
    found = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            ip = a.address.split("%")[0]
            inet = a.family in (socket.AF_INET, socket.AF_INET6)
            link_local = ip.lower().startswith("fe80")  # needs a scope to connect to
            if inet and not link_local and not _is_loopback(ip):
                found.append(ip)
    return found


def _refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=3).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return True  # unreachable counts as not reachable
    return False


def _assert_loopback_only(temp_dir: Path, *, dashboard_port: int) -> list[psutil.Process]:
    """The socket check: returns the cluster's processes (as this test finds them)."""
    procs = _processes_under(temp_dir)
    names = {p.name() for p in procs if _alive(p)}
    # The processes the issue names, retitled ones included, are in the view.
    for expected in ("gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent"):
        assert expected in names, names
    # The code under test finds every one of them (so stop_local_cluster stops them all).
    # (A process may end between the two listings, e.g. an idle worker Ray let go: only one
    # alive after the code's own listing counts as missed.)
    found = {p.pid for p in cluster_processes(temp_dir=temp_dir)}
    missed = [(p.pid, p.name()) for p in procs if p.pid not in found and _alive(p)]
    assert missed == [], missed
    sockets = _listening(procs)
    ports = {port for _, _, port, kind in sockets if kind == socket.SOCK_STREAM}
    assert dashboard_port in ports and len(ports) >= 8, sockets
    exposed = [s for s in sockets if not _is_loopback(s[1])]
    assert exposed == [], f"listening beyond loopback: {exposed}"
    for host in _external_addresses():
        for port in sorted(ports):
            assert _refused(host, port), f"{host}:{port} accepted a connection"
        assert ray_version_at(f"http://{host}:{dashboard_port}") is None  # a real HTTP request
    return procs


def _assert_all_gone(procs: list[psutil.Process], *, temp_dir: Path, ports: set[int]) -> None:
    survivors = [(p.pid, p.name()) for p in procs if _alive(p)]
    assert survivors == []
    assert cluster_processes(temp_dir=temp_dir) == []
    for port in sorted(ports):
        assert _refused("127.0.0.1", port), f"something still listens on {port}"


def _tcp_ports(procs: list[psutil.Process]) -> set[int]:
    return {port for _, _, port, kind in _listening(procs) if kind == socket.SOCK_STREAM}


def _wait_for(pred, *, what: str, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while not (value := pred()):
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.25)
    return value


# --------------------------------------------------------------------------- the cluster


HOLD_JOB = """
import pathlib, ray, time
ray.init()
@ray.remote
class Holder:
    def ping(self):
        return "pong"
h = Holder.remote()
print("task", ray.get(ray.remote(lambda: 7).remote()), "actor", ray.get(h.ping.remote()), flush=True)
print("READY", flush=True)
flag = pathlib.Path({flag!r})
while not flag.exists():
    time.sleep(0.1)
"""


def test_every_socket_of_the_cluster_is_on_loopback_and_stop_leaves_nothing(tmp_path):
    temp_dir = _short_tmp("tt-lc-")
    port = free_port()
    flag = tmp_path / "release"
    try:
        cluster = start_local_cluster(
            temp_dir=temp_dir, dashboard_port=port, num_cpus=2, num_gpus=1
        )
        # Load: a job whose driver holds an actor and ran a task (job supervisor, driver,
        # workers all up while the sockets are listed).
        script = tmp_path / "hold.py"
        script.write_text(HOLD_JOB.format(flag=str(flag)))
        client = JobSubmissionClient(cluster.dashboard_url)
        job = client.submit_job(entrypoint=f"{sys.executable} {script}")
        _wait_for(lambda: "READY" in client.get_job_logs(job), what="the job's actor and task")
        assert "task 7 actor pong" in client.get_job_logs(job)

        procs = _assert_loopback_only(temp_dir, dashboard_port=port)
        assert any(p.name() == "ray::Holder" for p in procs)  # the job's actor is in view
        ports = _tcp_ports(procs)
        gcs_port = int(cluster.gcs_address.rsplit(":", 1)[1])
        assert gcs_port in ports
        socket.create_connection(("127.0.0.1", gcs_port), timeout=3).close()  # control

        assert stop_local_cluster(temp_dir=temp_dir) >= len(procs)
        _assert_all_gone(procs, temp_dir=temp_dir, ports=ports)
        assert ray_version_at(cluster.dashboard_url) is None
    finally:
        stop_local_cluster(temp_dir=temp_dir, grace_s=3)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_a_dashboard_port_in_the_worker_port_range_is_refused_up_front(tmp_path):
    temp_dir = tmp_path / "c"
    for port in (10002, 18265, 19999):
        with pytest.raises(ClusterError) as info:
            start_local_cluster(temp_dir=temp_dir, dashboard_port=port)
        assert f"dashboard port {port} is inside Ray's worker port range 10002-19999" in str(
            info.value
        )
        assert "outside 10002-19999" in (info.value.hint or "")
    assert not temp_dir.exists()  # refused before anything was made or started
    for port in (8265, 10001, 20000):
        check_dashboard_port(port=port)


def test_a_temp_dir_that_is_a_link_is_refused(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(ClusterError, match="is not a folder owned by you"):
        start_local_cluster(temp_dir=link, dashboard_port=free_port())
    assert list(target.iterdir()) == []


def test_stop_takes_the_processes_naming_its_temp_dir_and_no_neighbour(tmp_path):
    temp_dir = tmp_path / "ray"
    temp_dir.mkdir()
    sleeper = "import time; time.sleep(600)"
    mine = subprocess.Popen([sys.executable, "-c", sleeper, f"--log-dir={temp_dir}/session/logs"])
    neighbour = subprocess.Popen([sys.executable, "-c", sleeper, f"{temp_dir}-other/logs"])
    try:
        found = {p.pid for p in cluster_processes(temp_dir=temp_dir)}
        assert mine.pid in found and neighbour.pid not in found
        assert stop_local_cluster(temp_dir=temp_dir, grace_s=5) == 1
        assert mine.wait(timeout=10) is not None
        assert neighbour.poll() is None  # still running
    finally:
        for p in (mine, neighbour):
            p.kill()
            p.wait()


# --------------------------------------------------------------------------- the CLI


def _tether(*args: str, cwd: Path, env: dict[str, str] | None = None):
    res = subprocess.run(
        [TETHER, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in res.stdout + res.stderr, res.stdout + res.stderr
    return res


WAITING_STAGE = """
import pathlib, time

def wait_for_flag(ctx):
    flag = pathlib.Path({flag!r})
    while not flag.exists():
        time.sleep(0.1)
    return "flag seen"
"""


def test_cluster_status_and_stop_for_the_cluster_tether_submit_started(git_repo, tmp_path):
    repo = git_repo.path
    tmp = _short_tmp("tt-lcT-")  # TMPDIR of the CLI: tether's own temp dir goes below it
    temp_dir = tmp / f"tether-ray-{os.getuid()}"
    env = {"TMPDIR": str(tmp)}
    port = free_port()
    flag = tmp_path / "release"
    (repo / "tether.toml").write_text(
        f'[profiles.local]\nkind = "local"\ndashboard_port = {port}\nnum_gpus = 1\n'
        "[heartbeat]\ninterval_s = 1\nstall_timeout_s = 30\n"
    )
    (repo / "waiting.py").write_text(WAITING_STAGE.format(flag=str(flag)))
    (repo / "exp.toml").write_text(
        'name = "exp"\n[[stages]]\nname = "wait"\nrun = "waiting:wait_for_flag"\n'
    )
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "experiment", cwd=repo)
    try:
        res = _tether("cluster", "status", cwd=repo, env=env)
        assert res.returncode == 1, res.stdout + res.stderr
        assert f"no local Ray cluster is running (http://127.0.0.1:{port})" in res.stdout
        res = _tether("cluster", "stop", cwd=repo, env=env)
        assert res.returncode == 0 and "no local Ray cluster is running" in res.stdout

        res = _tether("submit", "exp.toml", "--json", cwd=repo, env=env)  # starts the cluster
        assert res.returncode == 0, res.stdout + res.stderr
        job_id = json.loads(res.stdout)["job_id"]
        record = repo / ".tether" / "local-cluster.json"
        assert record.stat().st_mode & 0o777 == 0o600
        assert json.loads(record.read_text())["temp_dir"] == str(temp_dir)
        assert git("status", "--porcelain", cwd=repo) == ""

        res = _tether("cluster", "status", "--json", cwd=repo, env=env)
        assert res.returncode == 0, res.stdout + res.stderr
        status = json.loads(res.stdout)
        assert status["running"] and status["started_by_tether"]
        assert status["temp_dir"] == str(temp_dir)
        assert status["dashboard_url"] == f"http://127.0.0.1:{port}"
        assert status["gcs_address"].startswith("127.0.0.1:")
        assert (status["nodes"], status["gpus"]) == (1, 1.0) and status["cpus"] >= 1
        res = _tether("cluster", "status", cwd=repo, env=env)
        assert "local Ray cluster running, started by tether" in res.stdout
        assert f"temp dir   {temp_dir}" in res.stdout

        # The cluster tether started for the local profile is on loopback only as well.
        procs = _assert_loopback_only(temp_dir, dashboard_port=port)
        ports = _tcp_ports(procs)

        client = JobSubmissionClient(f"http://127.0.0.1:{port}")
        _wait_for(lambda: client.get_job_status(job_id) == JobStatus.RUNNING, what="the run")
        res = _tether("cluster", "stop", cwd=repo, env=env)  # a run is going: refused
        assert res.returncode == 2 and "1 run(s) still going" in res.stderr, res.stderr
        assert "--force" in res.stderr
        assert ray_version_at(f"http://127.0.0.1:{port}") is not None
        flag.write_text("go")
        _wait_for(lambda: client.get_job_status(job_id).is_terminal(), what="the run's end")
        assert client.get_job_status(job_id) == JobStatus.SUCCEEDED

        res = _tether("cluster", "stop", cwd=repo, env=env)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "stopped the local Ray cluster tether started" in res.stdout
        assert str(temp_dir) in res.stdout
        _assert_all_gone(procs, temp_dir=temp_dir, ports=ports)
        assert not record.exists()
        res = _tether("cluster", "status", cwd=repo, env=env)
        assert res.returncode == 1 and "no local Ray cluster is running" in res.stdout
    finally:
        stop_local_cluster(temp_dir=temp_dir, grace_s=3)
        shutil.rmtree(tmp, ignore_errors=True)


def test_cluster_stop_refuses_a_cluster_tether_did_not_start(git_repo, ray_cluster):
    repo = git_repo.path
    port = ray_cluster.dashboard_url.rsplit(":", 1)[1]
    (repo / "tether.toml").write_text(
        f'[profiles.local]\nkind = "local"\ndashboard_port = {port}\n'
    )
    res = _tether("cluster", "status", "--json", cwd=repo)
    assert res.returncode == 0, res.stdout + res.stderr
    status = json.loads(res.stdout)
    assert status["running"] and not status["started_by_tether"]
    assert status["temp_dir"] == str(ray_cluster.temp_dir)
    assert status["gcs_address"] == ray_cluster.gcs_address
    assert (status["nodes"], status["cpus"], status["gpus"]) == (1, 2.0, 4.0)

    res = _tether("cluster", "stop", cwd=repo)
    assert res.returncode == 2
    assert f"the Ray cluster at {ray_cluster.dashboard_url} was not started by tether" in res.stderr
    assert "tether stops only the cluster it started" in res.stderr
    assert ray_version_at(ray_cluster.dashboard_url) is not None  # untouched
    assert cluster_processes(temp_dir=ray_cluster.temp_dir)


def test_cluster_verbs_on_an_ssh_profile(git_repo, sshd, tmp_path):
    repo = git_repo.path
    (repo / "tether.toml").write_text(
        f"""
default_profile = "head"
[profiles.head]
kind = "ssh"
host = "{sshd.host_alias}"
ssh_config = "{sshd.ssh_config}"
python = "{tmp_path}/no-venv/bin/python"
"""
    )
    res = _tether("cluster", "stop", cwd=repo)
    assert res.returncode == 2
    assert "tether does not stop the cluster of the ssh profile 'head'" in res.stderr
    assert "run `ray down cluster.yaml`" in res.stderr

    res = _tether("cluster", "status", cwd=repo)  # over the real sshd: no Ray at that path
    assert res.returncode == 2
    assert f"Ray is not found on the head {sshd.host_alias}" in res.stderr, res.stderr
    assert "exited 127" in res.stderr and "no-venv/bin/python" in res.stderr


def test_the_local_profile_channel_keeps_ray_on_loopback_for_its_commands(
    git_repo, ray_cluster, monkeypatch
):
    """`python -m tether.cluster.stream` over the local profile's command channel reaches the
    loopback-only cluster even when the caller's environment lacks Ray's single-machine
    setting (without it, Ray swaps 127.0.0.1 for the machine's address and never connects)."""
    from conftest import write_local_profile

    from tether.client.config import load_config
    from tether.client.head import open_head

    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    repo = git_repo.path
    write_local_profile(repo, ray_cluster)
    config, _ = load_config(path=None, cwd=repo)
    head = open_head(config=config, profile_name=None, laptop_repo=repo)
    try:
        res = head.remote.run(
            f"{head.python} -m tether.cluster.stream missing-run "
            f"--address {ray_cluster.gcs_address}",
            timeout=120,
            check=False,
        )
    finally:
        head.close()
    assert res.exit_code == 2, res.stderr[-2000:]
    assert "stream: no run monitor for run 'missing-run'" in res.stderr
