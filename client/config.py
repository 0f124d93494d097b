"""``tether.toml``: profiles, results directory, sync rules, heartbeat settings.

The file is optional; without it tether runs on the embedded ``local`` profile.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .errors import ConfigError
from .tomlfile import load_model

CONFIG_NAME = "tether.toml"

DEFAULT_INCLUDE = [
    "*.json", "*.jsonl", "*.csv", "*.txt", "*.md", "*.html",
    "*.png", "*.svg", "*.log", "*.yaml", "*.toml",
]  # fmt: skip
DEFAULT_EXCLUDE = ["*.pt", "*.pth", "*.ckpt", "*.safetensors", "*.bin", "*.npz"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProfileKind(str, Enum):
    LOCAL = "local"
    SSH = "ssh"


Port = Annotated[int, Field(ge=1, le=65535)]


class LocalProfile(_Strict):
    """The embedded default: the head node is this machine."""

    kind: Literal[ProfileKind.LOCAL] = ProfileKind.LOCAL
    dashboard_port: Port = 8265
    num_gpus: int | None = Field(
        default=None, ge=0, description="logical GPUs for the embedded cluster (None: detect)"
    )


class SSHProfile(_Strict):
    """A head node reached over SSH, named as a Host in ~/.ssh/config."""

    kind: Literal[ProfileKind.SSH]
    host: str = Field(min_length=1, description="Host alias from the SSH config")
    repo_path: str = "~/tether.git"
    python: str = "~/tether-venv/bin/python"
    dashboard_port: Port = 8265
    ssh_config: str | None = Field(
        default=None, description="SSH config file; default ~/.ssh/config"
    )
    connect_timeout_s: float = Field(default=10.0, gt=0)


Profile = Annotated[LocalProfile | SSHProfile, Field(discriminator="kind")]


class SyncRules(_Strict):
    include: list[str] = Field(default_factory=lambda: list(DEFAULT_INCLUDE))
    exclude: list[str] = Field(default_factory=lambda: list(DEFAULT_EXCLUDE))
    max_file_mb: float = Field(default=50.0, gt=0)
    interval_s: float = Field(default=60.0, ge=1)


class HeartbeatSettings(_Strict):
    interval_s: float = Field(default=30.0, ge=1)
    stall_timeout_s: float = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _stall_after_beat(self) -> HeartbeatSettings:
        if self.stall_timeout_s < self.interval_s:
            raise ValueError("stall_timeout_s must be at least interval_s")
        return self


class TetherConfig(_Strict):
    default_profile: str = "local"
    results_dir: str = "results"
    profiles: dict[str, Profile] = Field(default_factory=dict)
    sync: SyncRules = Field(default_factory=SyncRules)
    heartbeat: HeartbeatSettings = Field(default_factory=HeartbeatSettings)

    @model_validator(mode="after")
    def _known_default(self) -> TetherConfig:
        if self.default_profile != "local" and self.default_profile not in self.profiles:
            raise ValueError(
                f"default_profile {self.default_profile!r} is not defined under [profiles]"
            )
        return self

    def profile(self, name: str | None = None) -> tuple[str, LocalProfile | SSHProfile]:
        """The named profile (default: ``default_profile``); ``local`` always exists."""
        name = name or self.default_profile
        if name in self.profiles:
            return name, self.profiles[name]
        if name == "local":
            return name, LocalProfile()
        known = ", ".join(sorted({"local", *self.profiles})) or "local"
        raise ConfigError(
            f"no profile named {name!r}", hint=f"use one of: {known}, or add [profiles.{name}]"
        )


def find_config(start: Path) -> Path | None:
    """``tether.toml`` in ``start`` or the nearest parent that has one."""
    start = start.resolve()
    for folder in (start, *start.parents):
        candidate = folder / CONFIG_NAME
        if candidate.is_file():
            return candidate
    return None


def load_config(
    *, path: Path | None = None, cwd: Path | None = None
) -> tuple[TetherConfig, Path | None]:
    """Load ``path`` (or the nearest ``tether.toml`` above ``cwd``); defaults when none."""
    if path is None:
        path = find_config(cwd or Path.cwd())
        if path is None:
            return TetherConfig(), None
    return load_model(path, TetherConfig, what="config"), path
