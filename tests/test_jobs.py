"""client/jobs.py on a real local Ray cluster: submit, list, status, logs, stop, and a log
follow that survives a real dropped connection (a TCP proxy whose sockets are cut)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from tether.client.errors import ClusterError, TetherError
from tether.client.jobs import JobRecord, JobsClient
from tether.client.localcluster import LocalCluster, free_port, stop_local_cluster

# Ray's own websocket call in JobSubmissionClient.tail_job_logs, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:ssl=None is deprecated:DeprecationWarning")

RAY_CLI = str(Path(sys.executable).with_name("ray"))


def new_run_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def counting_job(*, lines: int, sleep_s: float) -> str:
    """An entrypoint printing ``line 0`` .. ``line N-1``, unbuffered, with small sleeps."""
    code = f"import time; [(print(f'line {{i}}'), time.sleep({sleep_s})) for i in range({lines})]"
    return f"{shlex.quote(sys.executable)} -u -c {shlex.quote(code)}"


def printed(text: str) -> list[str]:
    """The job's own lines (Ray adds lines of its own, e.g. 'Runtime env is setting up')."""
    return [ln for ln in text.splitlines() if ln.startswith("line ")]


def wait_terminal(client: JobsClient, run_id: str, *, timeout_s: float = 45) -> JobRecord:
    deadline = time.monotonic() + timeout_s
    while True:
        record = client.status(run_id=run_id)
        if record.is_terminal():
            return record
        assert time.monotonic() < deadline, f"run {run_id} still {record.status}"
        time.sleep(0.2)


@pytest.fixture
def jobs(ray_cluster: LocalCluster) -> JobsClient:
    return JobsClient(address=ray_cluster.dashboard_url)


# --------------------------------------------------------------------------- a cuttable proxy


class CuttableProxy:
    """A TCP proxy on 127.0.0.1 to ``target_port``; ``cut()`` closes every open connection
    (both sides), as a dying SSH tunnel would. New connections are accepted afterwards."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self.accepted = 0
        self.cut_connections = 0
        self._stopped = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self._stopped:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                downstream.close()
                continue
            with self._lock:
                self.accepted += 1
                self._open += [downstream, upstream]
            for src, dst in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                self._close(s)

    def _close(self, s: socket.socket) -> None:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()
        with self._lock:
            if s in self._open:
                self._open.remove(s)

    def cut(self) -> int:
        """Close every open connection; returns how many connections were cut."""
        with self._lock:
            victims = list(self._open)
        for s in victims:
            self._close(s)
        self.cut_connections += len(victims) // 2
        return len(victims) // 2

    def close(self) -> None:
        self._stopped = True
        self._listener.close()
        self.cut()


# --------------------------------------------------------------------------- tests


def test_submit_then_list_status_logs_and_ray_cli_sees_it(jobs: JobsClient, ray_cluster):
    run_id = new_run_id("jobs-basic")
    metadata = {"branch": f"tether/demo/{run_id}", "commit": "0123abcd" * 5, "spec": "demo",
                "dirty": "true"}  # fmt: skip
    sid = jobs.submit(
        entrypoint=counting_job(lines=5, sleep_s=0.05), run_id=run_id, metadata=metadata
    )
    assert sid == f"tether-{run_id}"

    record = wait_terminal(jobs, run_id)
    assert record.status == "SUCCEEDED", record.message
    assert record.run_id == run_id and record.submission_id == sid
    assert record.metadata == {**metadata, "tether_run": run_id}
    assert record.start_time and record.end_time and record.end_time >= record.start_time
    assert "-u -c" in record.entrypoint

    listed = {r.run_id: r for r in jobs.runs()}
    assert listed[run_id].metadata == record.metadata
    assert listed[run_id].status == "SUCCEEDED"
    assert all(r.metadata.get("tether_run") == r.run_id for r in listed.values())

    assert printed(jobs.logs(run_id=run_id)) == [f"line {i}" for i in range(5)]

    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run(
        [RAY_CLI, "job", "list", "--address", ray_cluster.dashboard_url],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert sid in out.stdout
    assert metadata["commit"] in out.stdout and metadata["branch"] in out.stdout


def test_stop_ends_a_long_job_as_stopped(jobs: JobsClient):
    run_id = new_run_id("jobs-stop")
    jobs.submit(entrypoint=counting_job(lines=600, sleep_s=0.1), run_id=run_id, metadata={})
    deadline = time.monotonic() + 30
    while jobs.status(run_id=run_id).status == "PENDING":  # stop a job that really runs
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert jobs.stop(run_id=run_id) is True
    record = wait_terminal(jobs, run_id, timeout_s=30)
    assert record.status == "STOPPED"
    assert jobs.stop(run_id=run_id) is False  # already ended


def test_follow_logs_survives_a_cut_connection_without_losing_or_repeating_a_line(
    ray_cluster: LocalCluster,
):
    target_port = int(ray_cluster.dashboard_url.rsplit(":", 1)[1])
    proxy = CuttableProxy(target_port)
    try:
        client = JobsClient(address=proxy.url, timeout_s=10)
        run_id = new_run_id("jobs-follow")
        client.submit(entrypoint=counting_job(lines=40, sleep_s=0.1), run_id=run_id, metadata={})

        pieces: list[str] = []
        cut_at: list[str] = []
        reconnects: list[JobsClient] = []

        def on_text(text: str) -> None:
            pieces.append(text)
            so_far = "".join(pieces)
            if not cut_at and "line 8\n" in so_far:
                cut_at.append(so_far)
                assert proxy.cut() >= 1

        def reconnect() -> JobsClient:
            fresh = JobsClient(address=proxy.url, timeout_s=10)
            reconnects.append(fresh)
            return fresh

        status = client.follow_logs(run_id=run_id, on_text=on_text, reconnect=reconnect)
    finally:
        proxy.close()

    assert status == "SUCCEEDED"
    assert cut_at, "the proxy was never cut"
    assert proxy.cut_connections >= 1
    assert "line 39" not in cut_at[0], "the cut came after the job had printed everything"
    assert reconnects, "follow_logs never reconnected"
    text = "".join(pieces)
    assert printed(text) == [f"line {i}" for i in range(40)]
    direct = JobsClient(address=ray_cluster.dashboard_url)
    assert text == direct.logs(run_id=run_id)


def test_follow_logs_gives_up_after_its_reconnects_with_a_clear_error(
    jobs: JobsClient, ray_cluster: LocalCluster
):
    proxy = CuttableProxy(int(ray_cluster.dashboard_url.rsplit(":", 1)[1]))
    run_id = new_run_id("jobs-gone")
    try:
        client = JobsClient(address=proxy.url, timeout_s=5)
        client.submit(entrypoint=counting_job(lines=30, sleep_s=0.1), run_id=run_id, metadata={})
        with pytest.raises(ClusterError, match="could not get it back in 2 reconnect") as info:
            # the tunnel dies for good at the first text: new connections are refused
            client.follow_logs(run_id=run_id, on_text=lambda _: proxy.close(), max_reconnects=2)
        assert f"lost the log stream of run {run_id} at {proxy.url}" in str(info.value)
        assert "tether doctor" in (info.value.hint or "")
    finally:
        proxy.close()
        jobs.stop(run_id=run_id)


def test_follow_logs_of_a_finished_run_delivers_the_whole_log(jobs: JobsClient):
    run_id = new_run_id("jobs-done")
    jobs.submit(entrypoint=counting_job(lines=3, sleep_s=0), run_id=run_id, metadata={})
    wait_terminal(jobs, run_id)
    pieces: list[str] = []
    assert jobs.follow_logs(run_id=run_id, on_text=pieces.append) == "SUCCEEDED"
    text = "".join(pieces)
    assert printed(text) == ["line 0", "line 1", "line 2"]
    assert text == jobs.logs(run_id=run_id)


def test_a_duplicate_run_id_is_refused(jobs: JobsClient):
    run_id = new_run_id("jobs-dup")
    jobs.submit(entrypoint="true", run_id=run_id, metadata={})
    with pytest.raises(TetherError, match=f"run with id {run_id} .*already exists") as info:
        jobs.submit(entrypoint="true", run_id=run_id, metadata={})
    assert "new run id" in (info.value.hint or "")


def test_env_vars_in_runtime_env_are_refused_and_nothing_is_submitted(jobs: JobsClient):
    run_id = new_run_id("jobs-env")
    with pytest.raises(TetherError, match="env_vars") as info:
        jobs.submit(
            entrypoint="true",
            run_id=run_id,
            metadata={},
            runtime_env={"env_vars": {"ANTHROPIC_API_KEY": "sk-not-a-real-key"}},
        )
    assert "secrets file" in (info.value.hint or "")
    assert "sk-not-a-real-key" not in str(info.value)
    with pytest.raises(TetherError, match=f"no run {run_id}"):
        jobs.status(run_id=run_id)


@pytest.mark.parametrize(
    ("run_id", "metadata"),
    [("../etc", {}), ("", {}), ("ok", {"epochs": 3}), ("ok", {"tether_run": "other"})],
)
def test_malformed_submissions_are_refused_before_the_cluster(jobs, run_id, metadata):
    with pytest.raises(ValueError):
        jobs.submit(entrypoint="true", run_id=run_id, metadata=metadata)


def test_an_unknown_run_is_a_clear_error(jobs: JobsClient):
    with pytest.raises(TetherError, match="no run nope-123") as info:
        jobs.status(run_id="nope-123")
    assert f"ray job list --address {jobs.address}" in (info.value.hint or "")
    with pytest.raises(TetherError, match="no run nope-123"):
        jobs.logs(run_id="nope-123")


def test_an_unreachable_address_is_a_cluster_error_naming_it():
    address = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ClusterError, match=f"cannot reach the Ray dashboard at {address}") as info:
        JobsClient(address=address, timeout_s=5)
    assert "tether doctor" in (info.value.hint or "")
    assert "tunnel" in (info.value.hint or "")


def test_a_silent_address_times_out_as_a_cluster_error():
    listener = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    try:
        address = f"http://127.0.0.1:{listener.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(ClusterError, match=f"{address} did not answer within 1s"):
            JobsClient(address=address, timeout_s=1)
        assert time.monotonic() - start < 5
    finally:
        listener.close()


@pytest.fixture
def token_cluster():
    """A second real Ray head, started with RAY_AUTH_MODE=token and a token given in the
    environment of the starting process only (so no ~/.ray/auth_token is written and this
    test process stays in auth-disabled mode). Yields (dashboard_url, token)."""
    token = secrets.token_hex(16)
    # Short path: Ray puts unix sockets below it.
    temp_dir = Path(tempfile.mkdtemp(prefix="tt-tok-", dir="/tmp"))
    code = (
        "import json, pathlib\n"
        "from tether.client.localcluster import start_local_cluster, free_port\n"
        f"c = start_local_cluster(temp_dir=pathlib.Path({str(temp_dir)!r}), "
        "dashboard_port=free_port(), num_cpus=1, auth_mode='token')\n"
        "print(json.dumps({'url': c.dashboard_url}))\n"
    )
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    env.pop("RAY_ADDRESS", None)
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        yield json.loads(out.stdout.strip().splitlines()[-1])["url"], token
    finally:
        stop_local_cluster(temp_dir=temp_dir, grace_s=3)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_token_auth_sends_the_bearer_token_on_requests_and_the_log_stream(token_cluster):
    url, token = token_cluster
    default_token_file = Path.home() / ".ray" / "auth_token"
    had_token_file = default_token_file.exists()

    with pytest.raises(ClusterError, match=f"dashboard at {url} refused") as info:
        JobsClient(address=url)
    assert "token" in (info.value.hint or "")
    with pytest.raises(ClusterError, match="Invalid authentication token") as info:
        JobsClient(address=url, token="not-the-token")
    assert "not-the-token" not in str(info.value)

    client = JobsClient(address=url, token=token)
    assert token not in repr(client)
    run_id = new_run_id("jobs-token")
    client.submit(entrypoint=counting_job(lines=3, sleep_s=0.3), run_id=run_id, metadata={})
    pieces: list[str] = []
    assert client.follow_logs(run_id=run_id, on_text=pieces.append) == "SUCCEEDED"
    assert printed("".join(pieces)) == ["line 0", "line 1", "line 2"]
    assert [r.run_id for r in client.runs()] == [run_id]
    assert token not in client.logs(run_id=run_id)
    assert default_token_file.exists() == had_token_file
