"""``TrainConfig``: everything a training run depends on, stored inside every checkpoint.

Torch-free (``ml.train`` runs it), so an experiment spec's ``[train]`` table can be
validated on the laptop, where the client never imports torch.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from .errors import MLError
from .models.config import ExtractorConfig, HeadConfig, LSTMConfig
from .workloads import FrequencyConfig, TrackConfig

Task = Literal["track_persistence", "frequency_extraction"]


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

    def __post_init__(self) -> None:
        if self.task not in ("track_persistence", "frequency_extraction"):
            raise MLError(
                f"unknown task {self.task!r}; use track_persistence or frequency_extraction"
            )
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise MLError("epochs, batch_size and patience must be >= 1")
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip <= 0 or self.min_delta < 0:
            raise MLError("need lr > 0, weight_decay >= 0, grad_clip > 0, min_delta >= 0")

    @property
    def model_name(self) -> str:
        return self.extractor.name if self.task == "track_persistence" else "lstm"

    def to_dict(self) -> dict:
        """Plain JSON types (tuples become lists), as stored in checkpoints and results."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Inverse of ``to_dict`` (nested configs, JSON lists back to tuples)."""
        return _from_dict(cls, data)


def _from_dict(cls: type, data: dict) -> Any:
    kwargs = {}
    hints = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in data.items():
        if key not in hints:
            raise MLError(f"unknown {cls.__name__} key {key!r}")
        default = hints[key].default_factory  # type: ignore[misc]
        if isinstance(value, dict) and default is not dataclasses.MISSING:
            value = _from_dict(type(default()), value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)
