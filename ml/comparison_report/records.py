"""The records a comparison is built from: one ``TrialRecord`` per trial (extractor x seed).

The compare stage writes one per trial as ``<run_dir>/compare/trials/<trial>/trial.json``
(beside the trial's ``training_results.json`` when it ran the built-in training), and the
report, ``tether analyze --compare`` and the TUI read them back. Torch-free.

A record's ``metrics`` is flat, by dotted name: ``test.accuracy``, ``test.f1``,
``test.precision``, ``test.recall``, ``test.early_decision_rate``,
``test.mean_decision_frame``, ``test.compute_saved_pct``, ``test.latency_ms``, ``test.mse``,
``test.mae``, ``parameters``, ``train_seconds``, ``gpu_hours``, ``best_epoch``, ``epochs``
(for the built-in training, from its ``training_results.json``; a user's trial function
returns its own). ``val_curves`` holds the validation series per epoch (``loss``,
``accuracy``...), for the curves plot.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import MLError

TRIAL_FILE = "trial.json"
RESULTS_FILE = "training_results.json"
TrialStatus = Literal["pending", "running", "finished", "failed"]


class ComparisonRecordError(MLError):
    """A trial record cannot be read."""


class TrialRecord(BaseModel):
    """One trial of a comparison, as the compare stage recorded it."""

    model_config = ConfigDict(extra="forbid")

    trial: str  # "<extractor>-s<seed>"
    extractor: str
    seed: int
    status: TrialStatus = "pending"
    overrides: dict = Field(default_factory=dict)  # the TrainConfig fields set for this one
    config_hash: str | None = None  # sha256 of the trial's full config, first 16 hex digits
    metrics: dict[str, float | None] = Field(default_factory=dict)
    val_curves: dict[str, list[float | None]] = Field(default_factory=dict)
    error: str | None = None
    last_lines: list[str] = Field(default_factory=list)
    device: str | None = None  # "cuda:0", "cpu"
    gpu_ids: list[str] = Field(default_factory=list)  # as Ray assigned them
    node: str | None = None
    host: str | None = None
    attempts: int = 0  # Ray task attempts seen (1 = no retry)
    resumed_from_epoch: int | None = None
    started: float | None = None
    ended: float | None = None
    gpus: float = 0.0  # the trial's GPU share (gpus_per_trial)

    def value(self, metric: str) -> float | None:
        """The trial's value of ``metric``; None when it has none (or not a finite one)."""
        v = self.metrics.get(metric)
        return float(v) if v is not None and math.isfinite(float(v)) else None


def trial_id(*, extractor: str, seed: int) -> str:
    return f"{extractor}-s{seed}"


def config_hash(config: dict) -> str:
    """A short digest of a trial's whole config (sorted JSON): same config, same hash."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def metrics_from_training_results(results: dict, *, gpus: float) -> dict[str, float | None]:
    """The flat metrics of a built-in trial from its ``training_results.json`` (as a dict)."""
    test = results.get("test_results") or {}
    early = test.get("early_decision") or {}
    timings = results.get("timings") or {}
    train_s = timings.get("train_seconds")
    out: dict[str, float | None] = {
        "test.accuracy": test.get("accuracy"),
        "test.f1": test.get("f1"),
        "test.precision": test.get("precision"),
        "test.recall": test.get("recall"),
        "test.early_decision_rate": early.get("early_stop_rate"),
        "test.mean_decision_frame": early.get("mean_decision_frame"),
        "test.compute_saved_pct": early.get("compute_savings_pct"),
        "test.latency_ms": test.get("latency_ms_per_clip"),
        "test.mse": test.get("mse"),
        "test.mae": test.get("mae"),
        "parameters": results.get("parameters"),
        "train_seconds": train_s,
        "gpu_hours": train_s * gpus / 3600 if train_s is not None else None,
        "best_epoch": results.get("best_epoch"),
        "epochs": results.get("num_epochs"),
    }
    return {k: (float(v) if v is not None else None) for k, v in out.items()}


def val_curves_from_training_results(results: dict) -> dict[str, list[float | None]]:
    val = results.get("val_history") or {}
    return {k: list(v) for k, v in val.items() if isinstance(v, list)}


def read_trial(path: Path) -> TrialRecord:
    try:
        return TrialRecord.model_validate_json(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ComparisonRecordError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ComparisonRecordError(
            f"{path} is not a trial record ({str(exc).splitlines()[0]})",
            hint="rerun the compare stage (`tether resume RUN`), or remove the trial's folder",
        ) from None
