"""The Ray fixtures are real clusters: logical GPUs are scheduled, jobs run, nodes come and go."""

from __future__ import annotations

import sys
import time

import pytest
import ray
from ray.job_submission import JobStatus, JobSubmissionClient


@ray.remote(num_cpus=0)
class Gate:
    """Counts arrivals so tasks can prove they ran at the same time."""

    def __init__(self) -> None:
        self.n = 0

    def arrive(self) -> int:
        self.n += 1
        return self.n

    def count(self) -> int:
        return self.n


@ray.remote(num_gpus=1, num_cpus=0)
def hold_gpu(gate, expected: int) -> list[int]:
    ray.get(gate.arrive.remote())
    deadline = time.monotonic() + 60
    while ray.get(gate.count.remote()) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError("the other GPU tasks never started")
        time.sleep(0.05)
    return ray.get_gpu_ids()


def test_four_logical_gpus_run_four_tasks_at_once_each_on_its_own_gpu(ray_driver):
    assert ray.cluster_resources()["GPU"] == 4
    gate = Gate.remote()
    gpu_ids = ray.get([hold_gpu.remote(gate, 4) for _ in range(4)], timeout=90)
    assert sorted(i for ids in gpu_ids for i in ids) == [0, 1, 2, 3]


def test_a_fifth_gpu_task_waits_for_a_free_gpu(ray_driver):
    gate = Gate.remote()
    held = [hold_gpu.remote(gate, 5) for _ in range(4)]
    fifth = hold_gpu.remote(gate, 5)
    # Four arrive; the fifth cannot be scheduled while four GPUs are held, so the
    # gate never reaches 5 and all five time out waiting (the fifth never starts).
    deadline = time.monotonic() + 30
    while ray.get(gate.count.remote()) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    assert ray.get(gate.count.remote()) == 4
    assert ray.available_resources().get("GPU", 0) == 0
    for ref in [*held, fifth]:
        ray.cancel(ref, force=True)


def test_jobs_api_on_the_dashboard_runs_a_job_with_metadata(ray_cluster):
    client = JobSubmissionClient(ray_cluster.dashboard_url)
    assert ray_cluster.dashboard_url.startswith("http://127.0.0.1:")
    job = client.submit_job(
        entrypoint=f'{sys.executable} -c "import ray; ray.init(); '
        "print('gpus', ray.cluster_resources()['GPU'])\"",
        metadata={"tether_run": "fixture-check"},
    )
    deadline = time.monotonic() + 120
    while not (status := client.get_job_status(job)).is_terminal():
        assert time.monotonic() < deadline, "job did not finish in 120 s"
        time.sleep(0.5)
    assert status == JobStatus.SUCCEEDED, client.get_job_logs(job)
    assert "gpus 4.0" in client.get_job_logs(job)
    assert client.get_job_info(job).metadata["tether_run"] == "fixture-check"


@ray.remote(num_gpus=1, num_cpus=0)
def where() -> str:
    return ray.get_runtime_context().get_node_id()


def test_multinode_gpu_tasks_follow_the_worker_nodes_as_they_are_removed_and_added(
    multinode_cluster,
):
    cluster = multinode_cluster
    head_id = cluster.head_node.node_id
    workers = {n.node_id: n for n in cluster.worker_nodes}
    assert len(workers) == 2
    seen = set(ray.get([where.remote() for _ in range(6)], timeout=60))
    assert head_id not in seen, "a GPU task ran on the head, which has no GPU"
    assert seen <= set(workers)

    gone_id, gone = next(iter(workers.items()))
    cluster.remove_node(gone)
    _wait_alive(len(workers))  # head + one worker
    survivors = set(ray.get([where.remote() for _ in range(3)], timeout=60))
    assert survivors == set(workers) - {gone_id}

    new = cluster.add_node(num_cpus=1, num_gpus=1, object_store_memory=100 * 1024 * 1024)
    cluster.wait_for_nodes()
    gate = Gate.remote()
    ids = ray.get([_where_together.remote(gate) for _ in range(2)], timeout=90)
    assert set(ids) == (set(workers) - {gone_id}) | {new.node_id}


@ray.remote(num_gpus=1, num_cpus=0)
def _where_together(gate) -> str:
    ray.get(gate.arrive.remote())
    deadline = time.monotonic() + 60
    while ray.get(gate.count.remote()) < 2:
        if time.monotonic() > deadline:
            raise TimeoutError("the second GPU task never started")
        time.sleep(0.05)
    return ray.get_runtime_context().get_node_id()


def _wait_alive(expected: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while sum(n["Alive"] for n in ray.nodes()) != expected:
        if time.monotonic() > deadline:
            pytest.fail(f"cluster did not settle at {expected} live nodes: {ray.nodes()}")
        time.sleep(0.2)
