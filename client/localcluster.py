"""The embedded local Ray cluster: `ray start --head` on this machine, on demand.

Used by the ``local`` profile (the head node is this machine) and by the test suite. Each
cluster keeps its files under its own ``temp_dir``, so stopping one stops only its own
processes (``ray stop`` would stop every Ray process on the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

from .errors import ClusterError


@dataclass(frozen=True)
class LocalCluster:
    gcs_address: str  # host:port of the GCS, for ray.init(address=...)
    dashboard_url: str  # http://127.0.0.1:PORT, for the Jobs API
    temp_dir: Path | None  # None when tether did not start it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_version_at(dashboard_url: str, *, timeout: float = 2.0) -> str | None:
    """Ray version a dashboard reports, or None when nothing answers there."""
    try:
        with urllib.request.urlopen(f"{dashboard_url}/api/version", timeout=timeout) as r:
            return json.loads(r.read().decode())["ray_version"]
    except (OSError, ValueError, KeyError, urllib.error.URLError):
        return None


def _ray_cli() -> str:
    cli = Path(sys.executable).with_name("ray")
    return str(cli) if cli.exists() else "ray"


def start_local_cluster(
    *,
    temp_dir: Path,
    dashboard_port: int,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    gcs_port: int | None = None,
    object_store_bytes: int | None = None,
    auth_mode: str = "disabled",
    timeout_s: float = 90.0,
) -> LocalCluster:
    """Start a Ray head on this machine with its dashboard on 127.0.0.1 only.

    ``auth_mode`` is passed as ``RAY_AUTH_MODE``: Ray 2.60 turns token auth on by itself
    whenever ``~/.ray/auth_token`` exists (e.g. after ``ray get-auth-token --generate`` for
    the EC2 cluster), which would make this loopback cluster reject tether's own Jobs client;
    the embedded cluster is explicit instead. Waits until the Jobs API accepts a job.
    """
    temp_dir.mkdir(parents=True, exist_ok=True)
    gcs_port = gcs_port or free_port()
    cmd = [
        _ray_cli(), "start", "--head",
        f"--port={gcs_port}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard_port}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]  # fmt: skip
    # Every fixed default port (agent 52365, metrics, client server...) gets a free one, so
    # two clusters on one machine (a demo and the test suite) never fight over a port.
    agent_port = free_port()
    cmd.append(f"--dashboard-agent-listen-port={agent_port}")
    for flag in (
        "--dashboard-agent-grpc-port",
        "--metrics-export-port",
        "--runtime-env-agent-port",
        "--ray-client-server-port",
        "--node-manager-port",
        "--object-manager-port",
    ):
        cmd.append(f"{flag}={free_port()}")
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus}")
    if num_gpus is not None:
        cmd.append(f"--num-gpus={num_gpus}")
    if object_store_bytes is not None:
        cmd.append(f"--object-store-memory={object_store_bytes}")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": auth_mode}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-10:])
        stop_local_cluster(temp_dir=temp_dir)
        raise ClusterError(
            f"`ray start --head` exited {proc.returncode}:\n{tail}",
            hint=f"is port {dashboard_port} or {gcs_port} taken? set another dashboard_port "
            "in tether.toml [profiles.local]",
        )
    url = f"http://127.0.0.1:{dashboard_port}"
    cluster = LocalCluster(
        gcs_address=f"127.0.0.1:{gcs_port}", dashboard_url=url, temp_dir=temp_dir
    )
    _wait_for_jobs_api(
        url, agent_port=agent_port, deadline=time.monotonic() + timeout_s, temp_dir=temp_dir
    )
    return cluster


def _wait_for_jobs_api(url: str, *, agent_port: int, deadline: float, temp_dir: Path) -> None:
    """Block until the Jobs API can take a job: the dashboard answers and the head's job
    agent (which runs submitted jobs) listens on its port."""
    from ray.job_submission import JobSubmissionClient
    from ray.util import get_node_ip_address

    node_ip = get_node_ip_address()
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            JobSubmissionClient(url).list_jobs()
            socket.create_connection((node_ip, agent_port), timeout=1).close()
            return
        except Exception as exc:  # the dashboard raises several kinds while it starts
            last = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            time.sleep(0.25)
    stop_local_cluster(temp_dir=temp_dir)
    raise ClusterError(
        f"the local Ray cluster did not serve the Jobs API at {url}: {last}",
        hint=f"look at the logs under {temp_dir}/session_latest/logs",
    )


def _procs_using(temp_dir: Path) -> list[psutil.Process]:
    needle = str(temp_dir)
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if proc.pid == os.getpid():
            continue
        if any(needle in part for part in proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def stop_local_cluster(*, temp_dir: Path, grace_s: float = 10.0) -> int:
    """Stop the Ray processes of the cluster under ``temp_dir``; returns how many there were.

    Matches processes whose command line names ``temp_dir`` (gcs_server, raylet, dashboard,
    log monitor); workers exit with their raylet.
    """
    procs = _procs_using(temp_dir)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    return len(procs)
