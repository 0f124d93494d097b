"""``training_results.json``: the record every training run writes, and its validated reader.

Schema: docs/training_results.md. Reading a malformed file raises ``ResultsError`` naming
the file and the key (``.../training_results.json: test_results.accuracy: ...``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .atomic import write_json_atomic
from .errors import MLError

SCHEMA_VERSION = 1
RESULTS_NAME = "training_results.json"


class ResultsError(MLError):
    """A training_results.json is missing, not JSON, or does not match the schema."""


# What to do about any of them (the CLI prints it as the error's hint).
RESULTS_HINT = (
    "give the training_results.json a run wrote (tether.ml.train); its schema is in "
    "docs/training_results.md"
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Per-epoch series; None stands for a value that was not finite (NaN/inf) in the run.
Series = list[float | None]


class History(BaseModel):
    """Per-epoch metrics: ``loss`` always; accuracy/f1 or mse/mae, lr, ... as the task has."""

    model_config = ConfigDict(extra="allow")
    loss: Series

    @model_validator(mode="after")
    def _series(self) -> History:
        n = len(self.loss)
        for key, value in (self.model_extra or {}).items():
            if not isinstance(value, list) or not all(
                v is None or isinstance(v, int | float) for v in value
            ):
                raise ValueError(f"{key} must be a list of numbers (one per epoch)")
            if len(value) != n:
                raise ValueError(f"{key} has {len(value)} values but loss has {n} epochs")
        return self

    def series(self) -> dict[str, Series]:
        return {"loss": self.loss, **(self.model_extra or {})}


class ClassStats(_Model):
    precision: float
    recall: float
    f1: float
    support: int


class EarlyDecision(_Model):
    threshold: float
    frames: int
    early_stop_rate: float
    mean_decision_frame: float
    compute_savings_pct: float
    accuracy_at_decision: float
    decision_frames: list[int]


class ClassificationResults(_Model):
    kind: Literal["classification"] = "classification"
    accuracy: float
    precision: float
    recall: float
    f1: float
    confusion_matrix: list[list[int]]
    class_names: list[str]
    per_class: dict[str, ClassStats]
    early_decision: EarlyDecision | None = None
    latency_ms_per_clip: float | None = None
    attention_mean: list[list[float]] | None = None  # (T, T) head attention, test-set mean

    @model_validator(mode="after")
    def _square(self) -> ClassificationResults:
        k = len(self.class_names)
        if len(self.confusion_matrix) != k or any(len(r) != k for r in self.confusion_matrix):
            raise ValueError(f"confusion_matrix must be {k}x{k} (one row per class name)")
        return self


class RegressionResults(_Model):
    kind: Literal["regression"] = "regression"
    mse: float
    mae: float
    per_group: dict[str, float]
    worst_group: str
    latency_ms_per_clip: float | None = None


class Timings(_Model):
    train_seconds: float
    eval_seconds: float
    epoch_seconds: list[float]
    samples_per_second: float


class TrainingResults(_Model):
    schema_version: int = SCHEMA_VERSION
    task: str
    model: str
    num_epochs: int = Field(ge=0)
    best_epoch: int = Field(ge=0)
    best_val_loss: float | None
    stopped_early: bool
    train_history: History
    val_history: History
    test_results: Annotated[ClassificationResults | RegressionResults, Field(discriminator="kind")]
    model_config_: dict = Field(alias="model_config")
    dataset_info: dict
    parameters: int
    device: str
    timings: Timings

    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())

    @model_validator(mode="after")
    def _epochs(self) -> TrainingResults:
        if len(self.train_history.loss) != self.num_epochs:
            raise ValueError(
                f"train_history has {len(self.train_history.loss)} epochs, "
                f"num_epochs says {self.num_epochs}"
            )
        if self.num_epochs and not 1 <= self.best_epoch <= self.num_epochs:
            raise ValueError(f"best_epoch {self.best_epoch} is outside 1..{self.num_epochs}")
        return self

    def to_json_dict(self) -> dict:
        return _finite(self.model_dump(by_alias=True))


def _finite(obj):
    """NaN/inf become None: JSON has no NaN, and readers of other tools reject it."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def write_training_results(path: Path, results: TrainingResults) -> None:
    write_json_atomic(path, results.to_json_dict())


def read_training_results(path: Path) -> TrainingResults:
    """Read and validate; ``ResultsError`` names the file and the offending key."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsError(f"{path}: not found", hint=RESULTS_HINT) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsError(
            f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})", hint=RESULTS_HINT
        ) from None
    return parse_training_results(data, source=str(path))


def parse_training_results(data: object, *, source: str) -> TrainingResults:
    try:
        return TrainingResults.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"] if p not in ("classification", "regression")]
            key = ".".join(loc) or "(top level)"
            if err["type"] == "missing":
                lines.append(f"{source}: missing key {key!r}")
            elif err["type"] == "extra_forbidden":
                lines.append(f"{source}: unknown key {key!r}")
            else:
                got = f" (got {err['input']!r})" if "input" in err else ""
                got = got if len(got) < 80 else got[:76] + "...)"
                lines.append(f"{source}: {key}: {err['msg']}{got}")
        raise ResultsError(
            "invalid training results:\n  " + "\n  ".join(lines), hint=RESULTS_HINT
        ) from None
