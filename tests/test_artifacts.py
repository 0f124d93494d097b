"""Artifacts and checkpoints reach the head through head-pinned actors, never a shared disk."""

from __future__ import annotations

import hashlib
import time
import uuid
from pathlib import Path

import pytest
import ray

from tether.cluster.artifacts import (
    ArtifactError,
    HeadCheckpointStore,
    UriCheckpointStore,
    get_sink,
    safe_relpath,
    ship_artifacts,
)


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@ray.remote(num_cpus=0)
def produce_and_ship(run_id: str, run_dir: str) -> tuple[list, list, str]:
    import tempfile

    work = Path(tempfile.mkdtemp())  # this task's own disk
    (work / "plots").mkdir()
    (work / "training_results.json").write_text('{"accuracy": 0.9}\n')
    (work / "plots" / "curves.png").write_bytes(bytes(range(256)) * 4000)  # > 1 chunk
    (work / "model.pt").write_bytes(b"\0" * 1000)
    (work / "huge.log").write_bytes(b"x" * (2 * 1024 * 1024))
    sink = get_sink(run_id=run_id, root=Path(run_dir))
    res = ship_artifacts(
        sink=sink, root=work, prefix="i3d", include=["*.json", "*.png", "*.log"],
        exclude=["*.pt"], max_file_mb=1,
    )  # fmt: skip
    return res.sent, res.skipped, str(work)


def test_task_files_arrive_in_the_head_run_dir_verified_and_filtered(ray_driver, tmp_path):
    run_id = f"t-{uuid.uuid4().hex[:8]}"
    run_dir = tmp_path / "run"
    sent, skipped, work = ray.get(produce_and_ship.remote(run_id, str(run_dir)), timeout=120)
    assert sent == ["i3d/plots/curves.png", "i3d/training_results.json"]
    assert sorted(skipped) == ["huge.log", "model.pt"]
    for rel in sent:
        assert _digest(run_dir / rel) == _digest(Path(work) / rel.removeprefix("i3d/"))
    assert not list(run_dir.rglob("*.part")) and not (run_dir / "i3d" / "model.pt").exists()
    sink = ray.get_actor(f"sink:{run_id}", namespace="tether")
    with pytest.raises(ray.exceptions.RayTaskError, match="must be relative, without"):
        ray.get(sink.begin.remote("../escape.json", 1, "0" * 64))
    with pytest.raises(ray.exceptions.RayTaskError, match="size or hash mismatch"):
        h = ray.get(sink.begin.remote("bad.json", 3, "0" * 64))
        ray.get(sink.write.remote(h, b"abc"))
        ray.get(sink.commit.remote(h))
    assert not (run_dir / "bad.json").exists()
    ray.kill(sink)


def test_safe_relpath_refuses_escapes():
    for bad in ("/etc/passwd", "../x", "a/../../x", "", "a\nb", "~/x"):
        with pytest.raises(ArtifactError):
            safe_relpath(bad)
    assert str(safe_relpath("a/b.json")) == "a/b.json"


@ray.remote(num_cpus=0)
def save_then_fetch(run_id: str, root: str) -> bytes:
    import tempfile

    d = Path(tempfile.mkdtemp())
    (d / "checkpoint.pt").write_bytes(b"weights-v1" * 1000)
    store = HeadCheckpointStore(run_id=run_id, root=Path(root))
    store.save(key="train/i3d/checkpoint.pt", path=d / "checkpoint.pt")
    assert store.fetch(key="train/i3d/missing.pt", dest=d / "m.pt") is False
    store.fetch(key="train/i3d/checkpoint.pt", dest=d / "back.pt")
    return (d / "back.pt").read_bytes()


def test_checkpoint_stores_round_trip(ray_driver, tmp_path):
    run_id = f"c-{uuid.uuid4().hex[:8]}"
    assert ray.get(save_then_fetch.remote(run_id, str(tmp_path / "ckpt")), timeout=60) == (
        b"weights-v1" * 1000
    )
    assert (tmp_path / "ckpt" / "train" / "i3d" / "checkpoint.pt").stat().st_size == 10_000
    ray.kill(ray.get_actor(f"ckpt:{run_id}", namespace="tether"))

    src = tmp_path / "c.pt"
    src.write_bytes(b"abc" * 100)
    store = UriCheckpointStore(uri=(tmp_path / "bucket").as_uri())
    store.save(key="run/x/checkpoint.pt", path=src)
    assert (tmp_path / "bucket" / "run" / "x" / "checkpoint.pt").read_bytes() == b"abc" * 100
    assert store.fetch(key="run/x/checkpoint.pt", dest=tmp_path / "back.pt")
    assert (tmp_path / "back.pt").read_bytes() == b"abc" * 100
    assert not store.fetch(key="run/x/none.pt", dest=tmp_path / "none.pt")
    with pytest.raises(ArtifactError, match="cannot open checkpoint store"):
        UriCheckpointStore(uri="nosuchscheme://x")


@ray.remote(num_gpus=1, num_cpus=0, max_retries=3)
def gpu_stage(run_id: str, run_dir: str, marker: str) -> str:
    import tempfile

    node = ray.get_runtime_context().get_node_id()
    earlier = list(Path(marker).parent.glob(Path(marker).name + ".*"))
    Path(marker).with_suffix(f".{node}").write_text("started")
    if not earlier:
        time.sleep(120)  # the first attempt waits here until its node is removed
    work = Path(tempfile.mkdtemp())
    (work / "result.json").write_text(f'{{"node": "{node}"}}\n')
    ship_artifacts(sink=get_sink(run_id=run_id, root=Path(run_dir)), root=work, include=["*.json"])
    return node


def test_removing_the_worker_node_running_a_task_moves_it_and_artifacts_still_arrive(
    multinode_cluster, tmp_path
):
    cluster = multinode_cluster
    run_id = f"m-{uuid.uuid4().hex[:8]}"
    run_dir = tmp_path / "run"
    marker = tmp_path / "attempt"
    ref = gpu_stage.remote(run_id, str(run_dir), str(marker))
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("attempt.*")):
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.1)
    first_node = next(tmp_path.glob("attempt.*")).suffix[1:]
    victim = next(n for n in cluster.worker_nodes if n.node_id == first_node)
    cluster.remove_node(victim)
    final_node = ray.get(ref, timeout=180)
    assert final_node != first_node
    assert (run_dir / "result.json").read_text().strip() == f'{{"node": "{final_node}"}}'
    ray.kill(ray.get_actor(f"sink:{run_id}", namespace="tether"))
