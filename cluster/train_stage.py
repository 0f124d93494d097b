"""The built-in train stage on Ray: ``ml.train.fit`` with the run's reporter plugged into its
callbacks and its checkpoints kept in the run's checkpoint store, so a retried task (after a
worker or node death) resumes from the last epoch on whichever node it lands.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from tether.ml.train import CHECKPOINT_NAME, Callback, TrainConfig, fit

from .attempts import task_attempt
from .batch_reporter import Reporter


class ReporterCallback(Callback):
    """Training progress as events: a progress event per step (loss, non-blocking), and per
    epoch the full train and ``val_`` metrics with ``epoch_end`` (what the monitor's live
    alerts read), flushed before the next epoch starts. A run that resumes from a checkpoint
    (a retried task, or a resumed run) says so first: a ``stage`` start with its attempt
    number and ``resumed_from_epoch``."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def on_train_start(self, *, config, start_epoch: int, total_epochs: int) -> None:
        attempt = task_attempt()
        if start_epoch > 1 or (attempt or 1) > 1:
            self.reporter.stage(
                self.reporter.stage_name or "train",
                "started",
                attempt=attempt,
                resumed_from_epoch=start_epoch - 1,
            )

    def on_step(self, *, epoch: int, step: int, loss: float) -> None:
        self.reporter.report(step=step, epoch=epoch, metrics={"loss": loss})

    def on_epoch_end(self, *, epoch, train, val, best_epoch) -> None:
        metrics = {**train, **{f"val_{k}": v for k, v in val.items()}}
        self.reporter.report(epoch=epoch, metrics=metrics, epoch_end=True)
        # Once per epoch, wait for the monitor's ack: an epoch summary must survive a worker
        # killed in the next epoch (queued events die with the process).
        self.reporter.flush(timeout=30)


class StoreCheckpoints(Callback):
    """After each epoch (``fit`` has written ``checkpoint.pt``), copy it to the store."""

    def __init__(self, *, store, key: str, local: Path) -> None:
        self.store, self.key, self.local = store, key, local

    def on_epoch_end(self, *, epoch, train, val, best_epoch) -> None:
        self.store.save(key=self.key, path=self.local / CHECKPOINT_NAME)


def train_with_store(
    *,
    config: TrainConfig,
    out_dir: Path,
    store,
    key_prefix: str,
    reporter: Reporter | None = None,
    callbacks: Sequence[Callback] = (),
):
    """Fetch the latest checkpoint from ``store`` (if any), train, and keep each epoch's
    checkpoint in the store. ``out_dir`` gets the lightweight results only."""
    local = Path(tempfile.mkdtemp(prefix="tether-ckpt-"))
    key = f"{key_prefix}/{CHECKPOINT_NAME}"
    store.fetch(key=key, dest=local / CHECKPOINT_NAME)  # False on a first attempt
    cbs: list[Callback] = [StoreCheckpoints(store=store, key=key, local=local)]
    if reporter is not None:
        cbs.append(ReporterCallback(reporter))
    return fit(config=config, out_dir=out_dir, checkpoint_dir=local, callbacks=[*cbs, *callbacks])
