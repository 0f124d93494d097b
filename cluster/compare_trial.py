"""The body of one compare trial, inside its Ray task (``cluster.stage_task`` runs it).

Built-in: ``ml.train.fit`` on the trial's config with the run's reporter (events carry the
trial id) and checkpoints in the run's store under ``compare/<trial>/``, so a trial retried
after its worker or node died resumes from its last epoch on whichever node Ray puts it.

With ``[compare] run = "module:function"``: the user's function, called with the stage
context (``ctx.trial`` has name, extractor, seed, overrides and the merged config;
``ctx.reporter`` reports with the trial id; files written to ``ctx.out_dir`` are kept). It
returns its metrics as a dict, flat (``{"test.accuracy": 0.9}``) or nested
(``{"test": {"accuracy": 0.9}}``); the comparison's metric must be among them.

Either way the outcome's data holds ``metrics`` (flat, dotted names), ``val_curves``, the
device, the GPU ids Ray assigned, the host and the epoch a retry resumed from.
"""

from __future__ import annotations

import math
import socket
from typing import Any

from .stages import StageContext, StageError, StageOutcome, run_function


def run_trial(ctx: StageContext) -> StageOutcome:
    import ray

    trial, compare = ctx.trial, ctx.spec.compare
    assert trial is not None and compare is not None
    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    if compare.run is None:
        data = _builtin(ctx, gpus=compare.gpus_per_trial)
    else:
        data = _user(ctx, run=compare.run, metric=compare.metric)
    data.update(gpu_ids=gpu_ids, host=socket.gethostname())
    for name, v in data["metrics"].items():  # the trial's results as events: a live compare view
        if v is not None:
            ctx.reporter.metric(name, v)
    value = data["metrics"].get(compare.metric)
    shown = f"{compare.metric}={value:.4g}" if isinstance(value, float) else "no value"
    return StageOutcome(summary=f"{trial.name} {shown}", data=data)


def _builtin(ctx: StageContext, *, gpus: float) -> dict:
    from tether.ml.comparison_report.records import (
        metrics_from_training_results,
        val_curves_from_training_results,
    )
    from tether.ml.train import Callback, TrainConfig

    from .artifacts import checkpoint_store
    from .train_stage import train_with_store

    class StartEpoch(Callback):
        start = 1

        def on_train_start(self, *, config, start_epoch: int, total_epochs: int) -> None:
            StartEpoch.start = start_epoch

    store = checkpoint_store(
        run_id=ctx.run_id, head_root=ctx.checkpoint_root, uri=ctx.spec.checkpoint_uri
    )
    res = train_with_store(
        config=TrainConfig.from_dict(ctx.trial.config),
        out_dir=ctx.out_dir,
        store=store,
        key_prefix=ctx.files_prefix.replace("/trials/", "/"),  # compare/<trial>
        reporter=ctx.reporter,
        callbacks=[StartEpoch()],
    )
    results = res.to_json_dict()
    return {
        "metrics": metrics_from_training_results(results, gpus=gpus),
        "val_curves": val_curves_from_training_results(results),
        "device": res.device,
        "resumed_from_epoch": StartEpoch.start - 1 if StartEpoch.start > 1 else None,
    }


def _user(ctx: StageContext, *, run: str, metric: str) -> dict:
    from dataclasses import replace

    outcome = run_function(replace(ctx, stage=ctx.stage.model_copy(update={"run": run})))
    returned = outcome.data
    metrics = flat_metrics(returned)
    if metric not in metrics:
        got = ", ".join(sorted(metrics)) or "nothing numeric"
        raise StageError(
            f"trial {ctx.trial.name}: {run} returned no {metric!r} (it returned {got}): "
            "return a dict with the comparison's metric, e.g. {'test': {'accuracy': 0.9}}"
        )
    curves = returned.get("val_curves") if isinstance(returned.get("val_curves"), dict) else {}
    return {
        "metrics": metrics,
        "val_curves": {k: list(v) for k, v in curves.items() if isinstance(v, list)},
        "device": returned.get("device") if isinstance(returned.get("device"), str) else None,
        "resumed_from_epoch": None,
    }


def flat_metrics(value: Any, prefix: str = "") -> dict[str, float]:
    """The finite numbers of a nested dict by dotted name (lists and strings are skipped)."""
    out: dict[str, float] = {}
    if not isinstance(value, dict):
        return out
    for key, v in value.items():
        name = f"{prefix}{key}"
        if isinstance(v, dict):
            out.update(flat_metrics(v, prefix=f"{name}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[name] = float(v)
    return out
