"""The ``[compare]`` table of an experiment spec, and the trials it stands for.

```toml
[compare]
extractors = ["i3d", "slowfast", "magvit", "transformer"]
seeds = [0, 1, 2]
gpus_per_trial = 1          # fractions allowed: 0.5 = two trials share a GPU
cpus_per_trial = 1
metric = "test.accuracy"    # what ranks them; mode "max" or "min"
mode = "max"
epoch = "best"              # test metrics of the best epoch (by val loss) or of the last
# run = "mylab.trials:train_one"   # compare your own code: called once per trial
[compare.overrides.magvit]  # per-extractor TrainConfig fields, over [train]
lr = 1e-3
```

One trial per extractor x seed. With the built-in training each trial's config is ``[train]``,
then the extractor's overrides (tables merged key by key), then ``extractor.name`` and
``seed``; every trial's config is validated here, so a bad combination is a spec error, not a
failed trial. With ``run`` the extractors are names of the user's choosing, handed to their
function with the seed and the overrides (``ctx.trial``). Torch-free (the laptop validates).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tether.ml.comparison_report.records import config_hash, trial_id
from tether.ml.errors import ConfigValueError, MLError
from tether.ml.models.config import EXTRACTOR_NAMES
from tether.ml.tomlfile import Table
from tether.ml.train_config import TrainConfig

# The metrics a built-in trial has (ml.comparison_report.records.metrics_from_training_results)
BUILTIN_METRICS = (
    "test.accuracy", "test.f1", "test.precision", "test.recall", "test.early_decision_rate",
    "test.mean_decision_frame", "test.compute_saved_pct", "test.latency_ms", "test.mse",
    "test.mae", "parameters", "train_seconds", "gpu_hours", "best_epoch", "epochs",
)  # fmt: skip
_FUNCTION = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"


@dataclass(frozen=True)
class TrialSpec:
    """One trial: what its task runs. ``config`` is the full TrainConfig dict (built-in
    training) or, with ``run``, the merged ``[train]`` table plus overrides."""

    name: str
    extractor: str
    seed: int
    overrides: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    @property
    def config_hash(self) -> str:
        return config_hash(self.config)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "extractor": self.extractor,
            "seed": self.seed,
            "overrides": self.overrides,
            "config": self.config,
        }

    @classmethod
    def from_dict(cls, data: dict) -> TrialSpec:
        return cls(**data)


def _with_extractor_name(override: dict) -> dict:
    """An override's ``extractor`` table without ``name`` (the trial sets it) still checks."""
    ext = override.get("extractor")
    if isinstance(ext, dict) and "name" not in ext:
        return {**override, "extractor": {**ext, "name": EXTRACTOR_NAMES[0]}}
    return override


class CompareSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    extractors: list[str] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    gpus_per_trial: float = Field(default=1.0, gt=0)
    cpus_per_trial: float = Field(default=1.0, ge=0)
    metric: str = "test.accuracy"
    mode: Literal["max", "min"] = "max"
    epoch: Literal["best", "last"] = "best"
    run: str | None = Field(default=None, pattern=_FUNCTION)
    overrides: dict[str, Annotated[dict, Table(TrainConfig, partial=_with_extractor_name)]] = Field(
        default_factory=dict
    )

    @field_validator("extractors")
    @classmethod
    def _extractors(cls, v: list[str]) -> list[str]:
        for i, name in enumerate(v):
            if name in v[:i]:
                raise ConfigValueError(f"{name!r} is listed twice", key=i)
            if not name or not all(c.isalnum() or c in "._-" for c in name):
                raise ConfigValueError(
                    f"{name!r}: extractor names use letters, digits, '.', '_', '-'", key=i
                )
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        for i, seed in enumerate(v):
            if seed in v[:i]:
                raise ConfigValueError(f"seed {seed} is listed twice", key=i)
            if seed < 0:
                raise ConfigValueError(f"seeds are >= 0 (got {seed})", key=i)
        return v

    @model_validator(mode="after")
    def _names(self) -> CompareSpec:
        if self.run is None:
            for i, name in enumerate(self.extractors):
                if name not in EXTRACTOR_NAMES:
                    raise ConfigValueError(
                        f"unknown extractor {name!r}: the built-in training has "
                        f"{', '.join(EXTRACTOR_NAMES)} (or set run = 'module:function' to "
                        "compare your own code)",
                        key=("extractors", i),
                    )
            if self.metric not in BUILTIN_METRICS:
                raise ConfigValueError(
                    f"unknown metric {self.metric!r}: the built-in trials report "
                    f"{', '.join(BUILTIN_METRICS)}",
                    key="metric",
                )
        for name in self.overrides:
            if name not in self.extractors:
                raise ConfigValueError(
                    f"overrides for {name!r}, which is not in extractors "
                    f"({', '.join(self.extractors)})",
                    key=("overrides", name),
                )
        return self

    def trials(self, *, train: dict) -> list[TrialSpec]:
        """Every trial, extractor-major (i3d-s0, i3d-s1, ..., slowfast-s0, ...)."""
        return [
            TrialSpec(
                name=trial_id(extractor=extractor, seed=seed),
                extractor=extractor,
                seed=seed,
                overrides=self.overrides.get(extractor, {}),
                config=self._config(extractor=extractor, seed=seed, train=train),
            )
            for extractor in self.extractors
            for seed in self.seeds
        ]

    def check_trials(self, *, train: dict) -> None:
        """Raise ConfigValueError (at ``compare.overrides.<name>``) when an extractor's merged
        config is not a valid TrainConfig."""
        for extractor in self.extractors:
            try:
                self._config(extractor=extractor, seed=self.seeds[0], train=train)
            except MLError as exc:
                key = ("overrides", extractor) if extractor in self.overrides else "extractors"
                raise ConfigValueError(
                    f"the trial config of {extractor!r} ([train] with its overrides) is not "
                    f"valid: {exc.message}",
                    key=key,
                ) from None

    def _config(self, *, extractor: str, seed: int, train: dict) -> dict:
        cfg = _merge(train, self.overrides.get(extractor, {}))
        if self.run is not None:
            return cfg
        cfg["extractor"] = {**cfg.get("extractor", {}), "name": extractor}
        cfg["seed"] = seed
        cfg["test_weights"] = self.epoch
        return TrainConfig.from_dict(cfg).to_dict()  # full, with the defaults


def _merge(base: dict, over: dict) -> dict:
    """``over`` on ``base``, tables merged key by key (copies; neither is changed)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
