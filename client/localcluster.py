"""The embedded local Ray cluster: `ray start --head` on this machine, on demand.

Used by the ``local`` profile (the head node is this machine), by ``tether demo`` and by the
test suite. Each cluster keeps its files under its own ``temp_dir``, so stopping one stops
only its own processes (``ray stop`` would stop every Ray process on the machine).

Reachable from this machine only: every socket its processes listen on is bound to loopback.
Ray's servers follow the node's IP: the GCS, the raylet and every worker bind 127.0.0.1
exactly when the node IP is 127.0.0.1, and the dashboard agent, the runtime-env agent and the
metrics exporter bind loopback then too (``ray/dashboard/agent.py``, ``http_server_agent.py``).
``--node-ip-address=127.0.0.1`` alone is not enough on Linux: ``ray start`` swaps a loopback
address for the machine's (``services.resolve_ip_for_localhost``) unless
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, Ray's single-machine mode (its default on macOS and
Windows), keeps it. The dashboard gets ``--dashboard-host=127.0.0.1``.
``tests/test_localcluster.py`` checks every listening socket of every process.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from tether.ml.atomic import write_json_atomic
from tether.ml.process import dashboard_options

from .errors import ClusterError
from .localstate import STATE_DIR, state_dir

LOOPBACK = "127.0.0.1"
# Ray's default worker port range (`ray start --min-worker-port/--max-worker-port`): workers
# take ports from it, so a dashboard there can be taken by a worker, or refuse Ray's start.
WORKER_PORTS = range(10002, 20000)
# In the env of `ray start` (inherited by every process of the cluster): keep the node IP
# 127.0.0.1, so all of Ray's servers bind loopback (see the module docstring).
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
STATE_FILE = "local-cluster.json"  # in <repo>/.tether/: the cluster tether started there


@dataclass(frozen=True)
class LocalCluster:
    gcs_address: str  # host:port of the GCS, for ray.init(address=...)
    dashboard_url: str  # http://127.0.0.1:PORT, for the Jobs API
    temp_dir: Path | None  # None when tether did not start it


def default_temp_dir() -> Path:
    """Where tether's own embedded cluster keeps its files: short, because Ray puts unix
    sockets under it (path limit ~107 bytes), and one per user."""
    return Path(tempfile.gettempdir()) / f"tether-ray-{os.getuid()}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
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


def check_dashboard_port(*, port: int) -> None:
    """Refuse a dashboard port inside Ray's worker port range (10002-19999)."""
    if port in WORKER_PORTS:
        raise ClusterError(
            f"dashboard port {port} is inside Ray's worker port range "
            f"{WORKER_PORTS.start}-{WORKER_PORTS.stop - 1}, which Ray's workers take ports from",
            hint="set a dashboard_port outside 10002-19999 (e.g. 8265) in tether.toml "
            "[profiles.local]",
        )


def _private_dir(path: Path) -> None:
    """Create ``path`` (mode 700) or accept an existing one only if it is a real folder of
    this user that no one else can write: under a shared /tmp another user could have made
    it first, and the cluster's sockets, logs and session files live there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise ClusterError(
            f"{path} is not a folder owned by you; refusing to start Ray in it",
            hint=f"remove {path} (another user or a link put it there)",
        )
    if st.st_mode & 0o077:
        path.chmod(0o700)


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
    """Start a Ray head on this machine, every port of it on 127.0.0.1 only.

    ``auth_mode`` is passed as ``RAY_AUTH_MODE``: Ray 2.60 turns token auth on by itself
    whenever ``~/.ray/auth_token`` exists (e.g. after ``ray get-auth-token --generate`` for
    the EC2 cluster), which would make this loopback cluster reject tether's own Jobs client;
    the embedded cluster is explicit instead. Waits until the Jobs API accepts a job.
    Raises ClusterError (a dashboard port in the worker range, Ray not starting).
    """
    check_dashboard_port(port=dashboard_port)
    _private_dir(temp_dir)
    gcs_port = gcs_port or free_port()
    cmd = [
        _ray_cli(), "start", "--head",
        f"--node-ip-address={LOOPBACK}",
        f"--port={gcs_port}",
        f"--dashboard-host={LOOPBACK}",
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
    env = {
        **os.environ,
        **LOOPBACK_ENV,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": auth_mode,
        # The metrics servers of the autoscaler monitor and the dashboard (44217, 44227).
        "AUTOSCALER_METRIC_PORT": str(free_port()),
        "DASHBOARD_METRIC_PORT": str(free_port()),
    }
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-10:])
        stop_local_cluster(temp_dir=temp_dir)
        raise ClusterError(
            f"`ray start --head` exited {proc.returncode}:\n{tail}",
            hint=f"is port {dashboard_port} or {gcs_port} taken? set another dashboard_port "
            "in tether.toml [profiles.local]",
        )
    url = f"http://{LOOPBACK}:{dashboard_port}"
    cluster = LocalCluster(
        gcs_address=f"{LOOPBACK}:{gcs_port}", dashboard_url=url, temp_dir=temp_dir
    )
    _wait_for_jobs_api(
        url, agent_port=agent_port, deadline=time.monotonic() + timeout_s, temp_dir=temp_dir
    )
    return cluster


def _wait_for_jobs_api(url: str, *, agent_port: int, deadline: float, temp_dir: Path) -> None:
    """Block until the Jobs API can take a job: the dashboard answers and the head's job
    agent (which runs submitted jobs) listens on its port."""
    from ray.job_submission import JobSubmissionClient

    last = "no answer"
    while time.monotonic() < deadline:
        try:
            JobSubmissionClient(url).list_jobs()
            socket.create_connection((LOOPBACK, agent_port), timeout=1).close()
            return
        except Exception as exc:  # the dashboard raises several kinds while it starts
            last = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            time.sleep(0.25)
    stop_local_cluster(temp_dir=temp_dir)
    raise ClusterError(
        f"the local Ray cluster did not serve the Jobs API at {url}: {last}",
        hint=f"look at the logs under {temp_dir}/session_latest/logs",
    )


# --------------------------------------------------------------------------- its processes


def _names(temp_dir: Path) -> re.Pattern[str]:
    """Matches ``temp_dir`` (as given or resolved) as a whole path inside a command line."""
    paths = {str(temp_dir), str(temp_dir.resolve())}
    alts = "|".join(re.escape(p.rstrip("/")) for p in sorted(paths))
    return re.compile(rf"(?:^|[=\s'\"])(?:{alts})(?=$|[/\s'\",])")


def _alive(proc: psutil.Process) -> bool:
    """Running and not a zombie (an exited process its parent has not reaped yet)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _is_ray_process(cmdline: list[str]) -> bool:
    first = cmdline[0] if cmdline else ""
    return first.startswith(("ray::", "ray-dashboard-")) or any(
        f"{os.sep}ray{os.sep}" in part or part.startswith("ray.") for part in cmdline
    )


def cluster_processes(*, temp_dir: Path) -> list[psutil.Process]:
    """The live processes of the cluster whose files are under ``temp_dir``.

    Those whose command line names ``temp_dir`` (gcs_server, raylet, dashboard, monitor, log
    monitor, Ray client server), all their descendants (the dashboard agent, runtime-env
    agent and workers, which retitle themselves ``ray::...``, the dashboard's modules, job
    drivers), and any other Ray process still holding a file under ``temp_dir`` (a worker
    whose parent died). This process and its ancestors are never included.
    """
    pattern = _names(temp_dir)
    spare = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    prefixes = tuple({str(temp_dir).rstrip("/") + "/", str(temp_dir.resolve()) + "/"})
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        if proc.pid in spare or not _alive(proc):
            continue
        cmdline = proc.info["cmdline"] or []
        names_it = pattern.search(" ".join(cmdline)) is not None
        if names_it or (_is_ray_process(cmdline) and _holds_file_under(proc, prefixes)):
            found[proc.pid] = proc
    for proc in list(found.values()):
        with contextlib.suppress(psutil.Error):
            for child in proc.children(recursive=True):
                if child.pid not in spare and _alive(child):
                    found.setdefault(child.pid, child)
    return list(found.values())


def _holds_file_under(proc: psutil.Process, prefixes: tuple[str, ...]) -> bool:
    try:
        return any(f.path.startswith(prefixes) for f in proc.open_files())
    except psutil.Error:
        return False


def _signal_and_wait(procs: Iterable[psutil.Process], *, kill: bool, wait_s: float) -> list:
    procs = [p for p in procs if _alive(p)]
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            if kill:
                proc.kill()
            else:
                proc.terminate()
    deadline = time.monotonic() + wait_s
    while (alive := [p for p in procs if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def _tier(proc: psutil.Process) -> int:
    """Stop order, as ``ray stop`` does: raylets first (their workers and agents go with
    them), the GCS last (the others wait for it while they shut down)."""
    try:
        name = proc.name()
    except psutil.Error:
        return 1
    return {"raylet": 0, "gcs_server": 2}.get(name, 1)


def stop_local_cluster(*, temp_dir: Path, grace_s: float = 10.0) -> int:
    """Stop every process of the cluster under ``temp_dir`` (see ``cluster_processes``):
    SIGTERM, then SIGKILL what is left after ``grace_s``, raylet first and GCS last.
    Processes that appear while it stops (a worker the raylet was starting) are stopped
    too. Returns how many there were.
    """
    stopped: set[int] = set()
    for _ in range(3):
        procs = cluster_processes(temp_dir=temp_dir)
        if not procs:
            break
        stopped.update(p.pid for p in procs)
        for tier in (0, 1, 2):
            alive = _signal_and_wait(
                [p for p in procs if _tier(p) == tier], kill=False, wait_s=grace_s
            )
            _signal_and_wait(alive, kill=True, wait_s=5.0)
    return len(stopped)


def find_dashboard(*, port: int) -> tuple[Path | None, str | None] | None:
    """The Ray dashboard process of this user serving ``port``: ``(temp_dir, gcs_address)``
    from its command line, or None when no such process is found."""
    options = dashboard_options(port=port)
    if options is None:
        return None
    temp = options.get("temp-dir")
    return (Path(temp) if temp else None), options.get("gcs-address")


# --------------------------------------------------------------------------- its record


@dataclass(frozen=True)
class ClusterRecord:
    """What ``.tether/local-cluster.json`` says about the cluster tether started there."""

    gcs_address: str
    dashboard_url: str
    temp_dir: str
    started_at: float
    pids: list[int]  # its processes right after the start


def record_cluster(*, repo: Path, cluster: LocalCluster) -> Path:
    """Write ``<repo>/.tether/local-cluster.json`` (mode 600) for ``tether cluster status``
    and ``tether cluster stop``."""
    assert cluster.temp_dir is not None
    record = ClusterRecord(
        gcs_address=cluster.gcs_address,
        dashboard_url=cluster.dashboard_url,
        temp_dir=str(cluster.temp_dir),
        started_at=time.time(),
        pids=sorted(p.pid for p in cluster_processes(temp_dir=cluster.temp_dir)),
    )
    path = state_dir(repo) / STATE_FILE
    write_json_atomic(path, asdict(record))  # a mkstemp file: mode 600
    return path


def read_record(*, repo: Path) -> ClusterRecord | None:
    path = repo / STATE_DIR / STATE_FILE
    try:
        return ClusterRecord(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def forget_cluster(*, repo: Path) -> None:
    (repo / STATE_DIR / STATE_FILE).unlink(missing_ok=True)
