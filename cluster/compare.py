"""Extractor comparison: one Ray task per extractor, one GPU each when the cluster has GPUs.

Each trial runs ``ml.train.fit`` on the same workload and seed; results land in
``<run_dir>/<extractor>/training_results.json`` and checkpoints in ``<checkpoint_dir>/
<extractor>/``, so a retried trial resumes from its last epoch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import ray

from tether.ml.atomic import write_json_atomic
from tether.ml.results import TrainingResults
from tether.ml.train import Callback, TrainConfig, fit


class _PrintProgress(Callback):
    """One line per epoch on stdout (it reaches the Ray job log)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def on_epoch_end(self, *, epoch, train, val, best_epoch) -> None:
        extra = f" val_acc={val['accuracy']:.3f}" if "accuracy" in val else ""
        print(
            f"[{self.name}] epoch {epoch}: train_loss={train['loss']:.4f} "
            f"val_loss={val['loss']:.4f}{extra}",
            flush=True,
        )


@ray.remote(max_retries=2)
def _trial(config: dict, out_dir: str, checkpoint_dir: str) -> dict:
    cfg = TrainConfig.from_dict(config)
    node = ray.get_runtime_context().get_node_id()[:8]
    print(f"[{cfg.model_name}] started on node {node} gpus={ray.get_gpu_ids()}", flush=True)
    res = fit(
        config=cfg,
        out_dir=Path(out_dir),
        checkpoint_dir=Path(checkpoint_dir),
        callbacks=[_PrintProgress(cfg.model_name)],
    )
    return res.to_json_dict()


def summarize(results: TrainingResults) -> dict:
    t = results.test_results
    row = {
        "model": results.model,
        "parameters": results.parameters,
        "best_epoch": results.best_epoch,
        "num_epochs": results.num_epochs,
        "train_seconds": results.timings.train_seconds,
        "accuracy": getattr(t, "accuracy", None),
        "f1": getattr(t, "f1", None),
    }
    early = getattr(t, "early_decision", None)
    if early is not None:
        row["compute_savings_pct"] = early.compute_savings_pct
        row["accuracy_at_decision"] = early.accuracy_at_decision
    return row


def compare_extractors(
    *,
    base: TrainConfig,
    extractors: Sequence[str],
    run_dir: Path,
    checkpoint_dir: Path,
    gpus_per_trial: float | None = None,
) -> list[dict]:
    """Train ``base`` once per extractor, in parallel; returns one summary row each.

    ``gpus_per_trial`` None means 1 when the cluster has GPUs, else 0.
    """
    if gpus_per_trial is None:
        gpus_per_trial = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    task = _trial.options(num_gpus=gpus_per_trial, num_cpus=1)
    refs = {}
    for name in extractors:
        cfg = dataclasses.replace(base, extractor=dataclasses.replace(base.extractor, name=name))
        refs[name] = task.remote(cfg.to_dict(), str(run_dir / name), str(checkpoint_dir / name))
    rows = [summarize(TrainingResults.model_validate(ray.get(ref))) for ref in refs.values()]
    write_json_atomic(run_dir / "comparison.json", {"trials": rows})
    return rows
