"""Experiment specs: the TOML file ``tether submit`` validates before anything remote happens.

```toml
name = "extractors"                 # used in the run branch: tether/<name>/<run-id>
# branch = "tether/mine"            # optional: a fixed run branch
allow_failing_tests = false         # a red `test` stage stops the run unless true
targets = ["val_loss<0.2", "accuracy=0.85:0.95"]
milestones = ["epoch 5: val_loss < 0.4, red flag > 0.6"]
include_untracked = false           # snapshot untracked (not ignored) files too
llm = false                         # LLM commentary in the report (ANTHROPIC_API_KEY on the head)
# checkpoint_uri = "s3://bucket/prefix"   # default: the head's disk

[train]                             # ml.train.TrainConfig fields for the built-in stages
epochs = 8
extractor = { name = "i3d", size = "small" }

[[stages]]
name = "test"                       # built-in: runs pytest in the run's worktree
[[stages]]
name = "train"
num_gpus = 1
max_retries = 2
[[stages]]
name = "sweep"                      # user-defined: a function or a shell command
run = "experiments.sweep:main"      # or: command = "python sweep.py --fast"
timeout_s = 3600
```

Stages run in the order given; built-in names are ``setup test train evaluate visualize
analyze report compare``; ``compare`` runs the trials of the ``[compare]`` table
(``cluster.compare_spec``), one Ray task each. Errors name the file, the line and the dotted
key, one line each (``x.toml:14: train.epochz: unknown key (did you mean 'epochs'?)``),
``[train]`` included: it is checked against ``TrainConfig``'s fields down to the nested tables.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tether.ml.diagnose import DiagnosisError, Milestone, Target
from tether.ml.errors import ConfigValueError
from tether.ml.tomlfile import Table, load_model, parse_model
from tether.ml.train_config import TrainConfig

from .compare_spec import CompareSpec
from .errors import ClusterRuntimeError

BUILTIN_STAGES = ("setup", "test", "train", "evaluate", "visualize", "analyze", "report", "compare")
NEEDS_TRAIN = ("evaluate", "visualize", "analyze", "report")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_FUNCTION = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
# The one branch-name rule, for the spec here and for the laptop (client.branches): characters
# a shell cannot misread, and nothing `git check-ref-format` refuses.
BRANCH_CHARS = re.compile(r"[A-Za-z0-9._/-]+")
BRANCH_BAD = re.compile(r"(\.\.|[\s~^:?*\[\\]|@\{|//|^/|/$|\.lock$|^-|\.$)")


class SpecError(ClusterRuntimeError):
    """The experiment spec is missing, malformed or invalid."""


def is_safe_branch_name(name: object) -> bool:
    """Whether ``name`` is a branch name no shell can misread and git does not refuse: letters,
    digits, ``.``, ``_``, ``-`` and ``/``; no ``..``, ``//``, leading ``-`` or ``/``, trailing
    ``/``, ``.`` or ``.lock``."""
    return (
        isinstance(name, str)
        and BRANCH_CHARS.fullmatch(name) is not None
        and not BRANCH_BAD.search(name)
    )


def check_branch_name(name: str) -> str:
    """Refuse branch names git would refuse or a shell could misread (``..``, spaces, ``;``)."""
    if not is_safe_branch_name(name):
        raise ValueError(
            f"{name!r} is not a safe branch name: use letters, digits, '.', '_', '-' and '/' "
            "(no '..', spaces or shell characters)"
        )
    return name


class StageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    run: str | None = None  # "package.module:function"
    command: str | None = None  # a shell command, run in the worktree
    num_gpus: float = Field(default=0, ge=0)
    num_cpus: float = Field(default=1, ge=0)
    memory_mb: int | None = Field(default=None, gt=0)
    max_retries: int = Field(default=2, ge=0, description="retries after worker/node death")
    retry_exceptions: bool = False  # also retry on application exceptions
    timeout_s: float | None = Field(default=None, gt=0)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("stage names use letters, digits, '.', '_', '-' (max 63 chars)")
        return v

    @field_validator("run")
    @classmethod
    def _run(cls, v: str | None) -> str | None:
        if v is not None and not _FUNCTION.match(v):
            raise ValueError("run must be 'package.module:function'")
        return v

    @model_validator(mode="after")
    def _kind(self) -> StageSpec:
        if self.run and self.command:
            raise ConfigValueError(
                f"stage {self.name!r}: give run or command, not both", key="command"
            )
        if not (self.run or self.command) and self.name not in BUILTIN_STAGES:
            close = difflib.get_close_matches(self.name, BUILTIN_STAGES, n=1)
            maybe = f"did you mean {close[0]!r}? otherwise " if close else ""
            raise ConfigValueError(
                f"stage {self.name!r} is not built in ({', '.join(BUILTIN_STAGES)}): "
                f"{maybe}give it run = 'module:function' or command = '...'",
                key="name",
            )
        return self

    @property
    def builtin(self) -> bool:
        return not (self.run or self.command)


class ExperimentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1)]
    branch: str | None = None
    allow_failing_tests: bool = False
    targets: list[str] = Field(default_factory=list)
    milestones: list[str] = Field(default_factory=list)
    checkpoint_uri: str | None = None
    include_untracked: bool = False  # the run's snapshot also takes untracked, unignored files
    llm: bool = False  # LLM commentary in the report stage (needs ANTHROPIC_API_KEY on the head)
    # ml.train.TrainConfig fields, checked as TrainConfig, kept as the table (sent to the job)
    train: Annotated[dict, Table(TrainConfig)] = Field(default_factory=dict)
    compare: CompareSpec | None = None  # the trials of the compare stage (cluster.compare_spec)
    stages: list[StageSpec] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("name uses letters, digits, '.', '_', '-' (it goes in a branch name)")
        return v

    @field_validator("branch")
    @classmethod
    def _branch(cls, v: str | None) -> str | None:
        return check_branch_name(v) if v is not None else v

    @field_validator("targets", "milestones")
    @classmethod
    def _parseable(cls, v: list[str], info) -> list[str]:
        parse = Target.parse if info.field_name == "targets" else Milestone.parse
        for i, text in enumerate(v):
            try:
                parse(text)
            except DiagnosisError as exc:
                raise ConfigValueError(str(exc), key=i) from None
        return v

    @field_validator("checkpoint_uri")
    @classmethod
    def _uri(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^(s3|file|gs)://.+", v):
            raise ValueError("checkpoint_uri must be an s3://, gs:// or file:// URI")
        return v

    @field_validator("stages")
    @classmethod
    def _order(cls, stages: list[StageSpec]) -> list[StageSpec]:
        names = [s.name for s in stages]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ConfigValueError(
                    f"stage names must be unique; repeated: {name}", key=(i, "name")
                )
        seen_train = False
        for i, s in enumerate(stages):
            if s.builtin and s.name in NEEDS_TRAIN and not seen_train:
                raise ConfigValueError(
                    f"the built-in {s.name} stage reads the train stage's results: "
                    "list a train stage before it",
                    key=(i, "name"),
                )
            seen_train = seen_train or s.name == "train"
        return stages

    @model_validator(mode="after")
    def _compare(self) -> ExperimentSpec:
        at = next((i for i, s in enumerate(self.stages) if s.builtin and s.name == "compare"), None)
        if at is not None and self.compare is None:
            raise ConfigValueError(
                "the compare stage needs a [compare] table (extractors, seeds, ...)",
                key=("stages", at, "name"),
            )
        if at is None and self.compare is not None:
            raise ConfigValueError(
                '[compare] is set but no stage runs it: add [[stages]] name = "compare"',
                key=("compare",),
            )
        if self.compare is not None:
            try:
                self.compare.check_trials(train=self.train)
            except ConfigValueError as exc:
                raise ConfigValueError(exc.message, key=("compare", *exc.key)) from None
        return self

    def run_branch(self, run_id: str) -> str:
        return self.branch or f"tether/{self.name}/{run_id}"


def load_spec(path: Path) -> ExperimentSpec:
    return load_model(Path(path), ExperimentSpec, what="experiment spec", error=SpecError)


def parse_spec(text: str, *, source: str = "spec.toml") -> ExperimentSpec:
    return parse_model(text, ExperimentSpec, source=source, error=SpecError)
