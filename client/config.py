"""``tether.toml``: profiles, results directory, sync rules, heartbeat settings.

The file is optional; without it tether runs on the embedded ``local`` profile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from tether.ml.tomlfile import load_model

from .errors import ConfigError

CONFIG_NAME = "tether.toml"

DEFAULT_INCLUDE = [
    "*.json", "*.jsonl", "*.csv", "*.txt", "*.md", "*.html",
    "*.png", "*.svg", "*.log", "*.yaml", "*.toml",
]  # fmt: skip
DEFAULT_EXCLUDE = ["*.pt", "*.pth", "*.ckpt", "*.safetensors", "*.bin", "*.npz"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Port = Annotated[int, Field(ge=1, le=65535)]
# `ray start` defaults (--min-worker-port, --max-worker-port): Ray hands these to its workers,
# so a dashboard there can collide with a worker's port and fail to start or be unreachable.
RAY_WORKER_PORTS = (10002, 19999)


def _outside_worker_ports(port: int) -> int:
    low, high = RAY_WORKER_PORTS
    if low <= port <= high:
        raise ValueError(
            f"{port} is inside Ray's worker port range {low}-{high} (Ray hands those ports to "
            "workers); pick one outside it, e.g. 8265"
        )
    return port


DashboardPort = Annotated[Port, AfterValidator(_outside_worker_ports)]


class LocalProfile(_Strict):
    """The embedded default: the head node is this machine."""

    kind: Literal["local"] = "local"
    dashboard_port: DashboardPort = 8265
    num_gpus: int | None = Field(
        default=None, ge=0, description="logical GPUs for the embedded cluster (None: detect)"
    )


class SSHProfile(_Strict):
    """A head node reached over SSH, named as a Host in ~/.ssh/config."""

    kind: Literal["ssh"]
    host: str = Field(min_length=1, description="Host alias from the SSH config")
    repo_path: str = "~/tether.git"
    runs_path: str = Field(default="~/tether-runs", description="run worktrees on the head")
    python: str = "~/tether-venv/bin/python"
    dashboard_port: DashboardPort = 8265
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

    @field_validator("stall_timeout_s")
    @classmethod
    def _stall_after_beat(cls, value: float, info: ValidationInfo) -> float:
        beat = info.data.get("interval_s")
        if beat is not None and value < beat:
            raise ValueError(f"stall_timeout_s must be at least interval_s ({beat})")
        return value


class WatchSettings(_Strict):
    """``tether watch``'s windows per run (``client/watch/model.py`` ``Caps``): the raw
    events it keeps on screen. The per-epoch metric series (the charts) keep every epoch."""

    log_lines: int = Field(default=2000, ge=10, le=1_000_000)
    alerts: int = Field(default=500, ge=10, le=100_000)
    steps_per_trial: int = Field(default=300, ge=10, le=100_000)


class TetherConfig(_Strict):
    # `profiles` comes first so the check of `default_profile` can see it.
    profiles: dict[str, Profile] = Field(default_factory=dict)
    default_profile: str = "local"
    results_dir: str = "results"
    sync: SyncRules = Field(default_factory=SyncRules)
    heartbeat: HeartbeatSettings = Field(default_factory=HeartbeatSettings)
    watch: WatchSettings = Field(default_factory=WatchSettings)

    @field_validator("default_profile")
    @classmethod
    def _known_default(cls, value: str, info: ValidationInfo) -> str:
        profiles = info.data.get("profiles", {})
        if value != "local" and value not in profiles:
            known = ", ".join(sorted({"local", *profiles}))
            raise ValueError(f"no profile {value!r} under [profiles]; known: {known}")
        return value

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
    config = load_model(
        path,
        TetherConfig,
        what="config",
        error=ConfigError,
        hint=f"fix {path.name} at that line; the keys are in docs/configuration.md",
    )
    return config, path
