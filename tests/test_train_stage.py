"""The train stage on a real Ray cluster: a worker killed mid-epoch is retried, resumes from
the checkpoint store, and ends with exactly the weights of an uninterrupted run; its
progress reaches the run monitor."""

from __future__ import annotations

import os
import signal
import sys
import uuid
from pathlib import Path

import ray
import torch

from tether.cluster.artifacts import HeadCheckpointStore
from tether.cluster.monitor import start_monitor, stop_monitor
from tether.cluster.reporter import get_reporter
from tether.cluster.train_stage import train_with_store
from tether.ml.data import TrackConfig
from tether.ml.models import ExtractorConfig
from tether.ml.train import Callback, TrainConfig

# Workers cannot import this test module: ship its classes and constants by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

CONFIG = TrainConfig(
    extractor=ExtractorConfig(name="i3d", size="tiny"),
    track=TrackConfig(train_size=48, val_size=16, test_size=16),
    epochs=4,
    batch_size=16,
    patience=10,
)


class KillOnce(Callback):
    """SIGKILL this worker process in the middle of epoch 3, on the first attempt only."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def on_step(self, *, epoch, step, loss) -> None:
        if epoch == 3 and step == 8 and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)


@ray.remote(num_gpus=1, num_cpus=0, max_retries=2)
def train_task(run_id: str, root: str, out: str, marker: str) -> dict:
    reporter = get_reporter(run_id=run_id, trial="i3d", stage="train", heartbeat_s=1)
    try:
        store = HeadCheckpointStore(run_id=run_id, root=Path(root))
        res = train_with_store(
            config=CONFIG, out_dir=Path(out), store=store, key_prefix="train/i3d",
            reporter=reporter, callbacks=[KillOnce(Path(marker))],
        )  # fmt: skip
    finally:
        reporter.close()
    return {"history": res.train_history.series(), "attempt_pid": os.getpid()}


def _run(run_id: str, tmp: Path, name: str, marker: Path) -> dict:
    return ray.get(
        train_task.remote(run_id, str(tmp / name / "ckpt"), str(tmp / name / "out"), str(marker)),
        timeout=240,
    )


def test_worker_killed_mid_epoch_resumes_from_the_store_with_identical_weights(
    ray_driver, tmp_path
):
    # The uninterrupted reference runs the same way (a Ray worker, same thread settings):
    # float results depend on the thread count, so only like may be compared with like.
    ref_id = f"ts-{uuid.uuid4().hex[:8]}"
    ref_marker = tmp_path / "never"
    ref_marker.write_text("pre-set: never kill")
    start_monitor(run_id=ref_id, run_dir=tmp_path / "ref-run", heartbeat_s=1)
    try:
        straight = _run(ref_id, tmp_path, "straight", ref_marker)
    finally:
        stop_monitor(run_id=ref_id)
    run_id = f"ts-{uuid.uuid4().hex[:8]}"
    monitor = start_monitor(run_id=run_id, run_dir=tmp_path / "run", heartbeat_s=1)
    try:
        marker = tmp_path / "killed"
        out = _run(run_id, tmp_path, "killed-run", marker)
        assert marker.exists(), "the first attempt was never killed"
        assert out["attempt_pid"] != int(marker.read_text())  # a second attempt finished
        assert out["history"] == straight["history"]
        stored, ref = (
            torch.load(tmp_path / name / "ckpt" / "train" / "i3d" / "checkpoint.pt",
                       weights_only=False)["model"]
            for name in ("killed-run", "straight")
        )  # fmt: skip
        assert stored.keys() == ref.keys()
        assert all(torch.equal(stored[k], ref[k]) for k in ref)
        events = ray.get(monitor.events.remote(since_seq=0, limit=10000))
        epochs = [e["epoch"] for e in events if e["kind"] == "progress" and e.get("epoch_end")]
        assert sorted(set(epochs)) == [1, 2, 3, 4]
        assert 4 in epochs and epochs.count(3) == 1  # epoch 3 finished once (second attempt)
        assert any(e["kind"] == "heartbeat" for e in events)
        # The retry says so: its attempt and the checkpoint's epoch; the killed worker is dead
        # (told by the retry, or by its missing heartbeats, whichever came first).
        killed_pid = int(marker.read_text())
        killed = {
            e["worker"] for e in events if e["kind"] == "heartbeat" and e["pid"] == killed_pid
        }
        assert len(killed) == 1
        retry = [e for e in events if e["kind"] == "stage" and e.get("attempt") == 2]
        assert [(e["trial"], e["stage"], e["status"], e["resumed_from_epoch"]) for e in retry] == [
            ("i3d", "train", "started", 2)
        ]
        assert retry[0]["worker"] not in killed
        assert killed <= {e["worker"] for e in events if e.get("code") == "health:dead"}
    finally:
        stop_monitor(run_id=run_id)
