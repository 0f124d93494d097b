"""``TrainConfig``: everything a training run depends on, stored inside every checkpoint.

Torch-free (``ml.train`` runs it), so an experiment spec's ``[train]`` table can be
validated on the laptop, where the client never imports torch. Dicts (a spec's table, a
checkpoint's stored config) are validated by pydantic against the dataclass fields, the nested
configs' included: an unknown key, a wrong type and a bad value each name their key path.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Literal

from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config

from .errors import ConfigValueError, MLError
from .models.config import ExtractorConfig, HeadConfig, LSTMConfig
from .tomlfile import error_lines
from .workloads import FrequencyConfig, TrackConfig

Task = Literal["track_persistence", "frequency_extraction"]


@with_config(ConfigDict(extra="forbid"))  # nested configs inherit it: no unknown keys anywhere
@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; stored inside every checkpoint."""

    task: Task = "track_persistence"
    extractor: ExtractorConfig = field(default_factory=lambda: ExtractorConfig(name="i3d"))
    head: HeadConfig = field(default_factory=HeadConfig)
    lstm: LSTMConfig = field(default_factory=LSTMConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    frequency: FrequencyConfig = field(default_factory=FrequencyConfig)
    epochs: int = 20
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    patience: int = 5
    min_delta: float = 1e-4
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", "mps"
    amp: bool = True  # mixed precision, used on CUDA only
    eval_batch_size: int = 64
    # the weights the test split sees: the best epoch's (by val loss) or the last epoch's
    test_weights: Literal["best", "last"] = "best"

    def __post_init__(self) -> None:
        if self.task not in ("track_persistence", "frequency_extraction"):
            raise ConfigValueError(
                f"unknown task {self.task!r}; use track_persistence or frequency_extraction",
                key="task",
            )
        checks = (
            (("epochs", "batch_size", "patience", "eval_batch_size"), ">= 1", lambda v: v >= 1),
            (("lr", "grad_clip"), "> 0", lambda v: v > 0),
            (("weight_decay", "min_delta"), ">= 0", lambda v: v >= 0),
        )
        for names, bound, ok in checks:
            for name in names:
                if not ok(value := getattr(self, name)):
                    raise ConfigValueError(f"{name} must be {bound} (got {value!r})", key=name)

    @property
    def model_name(self) -> str:
        return self.extractor.name if self.task == "track_persistence" else "lstm"

    def to_dict(self) -> dict:
        """Plain JSON types (tuples become lists), as stored in checkpoints and results."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Inverse of ``to_dict`` (nested configs, JSON lists back to tuples); raises MLError
        with one ``key: problem`` per bad key."""
        try:
            return train_config_adapter().validate_python(data)
        except ValidationError as exc:
            lines = error_lines(exc, model=cls, data=data, source="TrainConfig")
            raise MLError("invalid " + "; ".join(lines)) from None


@cache
def train_config_adapter() -> TypeAdapter[TrainConfig]:
    """The pydantic validator of ``TrainConfig`` dicts (built once)."""
    return TypeAdapter(TrainConfig)
