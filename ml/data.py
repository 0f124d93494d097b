"""Built-in synthetic workloads, generated on the fly and deterministic from a seed.

- Track persistence (classification): short grey-scale clips with moving Gaussian blobs,
  flickering clutter and noise. ``persistent`` when every track is visible in every frame,
  ``transient`` when a track appears late or vanishes early.
- Frequency extraction (regression): a noisy sum of sinusoids plus a one-hot selector; the
  target is the selected pure sinusoid, reported per frequency.

Sample ``i`` of a split is generated from its own generator seeded by (seed, split, i), so
any sample can be rebuilt alone, on any machine, in any order.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import MLError
from .workloads import SPLITS, TRACK_CLASSES, FrequencyConfig, Split, TrackConfig

__all__ = [
    "SPLITS",
    "TRACK_CLASSES",
    "DatasetInfo",
    "FrequencyConfig",
    "FrequencyDataset",
    "Split",
    "TrackConfig",
    "TrackPersistenceDataset",
    "dataset_info",
    "make_frequency_sample",
    "make_track_clip",
]

_SPLIT_SALT = {"train": 1, "val": 2, "test": 3}


def _generator(seed: int, split: Split, index: int) -> torch.Generator:
    # A fixed mix (not hash(), which is salted per process) of seed, split and index.
    mixed = (seed * 1_000_003 + _SPLIT_SALT[split] * 998_244_353 + index * 2_654_435_761) % 2**63
    return torch.Generator().manual_seed(mixed)


def _check_split(split: str) -> Split:
    if split not in SPLITS:
        raise MLError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    return split  # type: ignore[return-value]


# --------------------------------------------------------------------------- track persistence


def _blob_frames(
    *, xs: torch.Tensor, ys: torch.Tensor, sigma: float, amp: float, height: int, width: int
) -> torch.Tensor:
    """(T, H, W) frames with one Gaussian blob at (xs[t], ys[t]).

    Computed with numpy in float64: on this CPU build, torch's elementwise kernels sometimes
    return different values on their first call in a process than on later calls (up to
    1e-4 apart, in about a third of fresh processes), which made the same sample differ
    between two calls; numpy's results are the same every time.
    """
    yy = np.arange(height, dtype=np.float64).reshape(1, height, 1)
    xx = np.arange(width, dtype=np.float64).reshape(1, 1, width)
    x = xs.double().numpy().reshape(-1, 1, 1)
    y = ys.double().numpy().reshape(-1, 1, 1)
    d2 = (xx - x) ** 2 + (yy - y) ** 2
    return torch.from_numpy((amp * np.exp(-d2 / (2 * sigma**2))).astype(np.float32))


def _bounce(start: torch.Tensor, velocity: float, frames: int, low: float, high: float):
    """Positions over ``frames`` moving at ``velocity``, reflecting off [low, high]."""
    span = high - low
    raw = start - low + velocity * torch.arange(frames, dtype=torch.float32)
    folded = torch.remainder(raw, 2 * span)
    return low + torch.where(folded > span, 2 * span - folded, folded)


def make_track_clip(config: TrackConfig, split: Split, index: int) -> tuple[torch.Tensor, int]:
    """Clip ``index`` of ``split``: (1, T, H, W) float32 and its label (1 = persistent)."""
    g = _generator(config.seed, split, index)
    T, H, W = config.frames, config.height, config.width
    label = index % 2  # exactly balanced; the loader shuffles
    clip = torch.zeros(T, H, W)

    def rand(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=g))

    transient_track = int(torch.randint(config.tracks, (), generator=g)) if label == 0 else -1
    for k in range(config.tracks):
        sigma = rand(*config.blob_sigma)
        margin = 2 * sigma
        xs = _bounce(
            torch.tensor(rand(margin, W - margin)), rand(-config.max_speed, config.max_speed),
            T, margin, W - 1 - margin,
        )  # fmt: skip
        ys = _bounce(
            torch.tensor(rand(margin, H - margin)), rand(-config.max_speed, config.max_speed),
            T, margin, H - 1 - margin,
        )  # fmt: skip
        frames = _blob_frames(xs=xs, ys=ys, sigma=sigma, amp=rand(0.8, 1.2), height=H, width=W)
        if k == transient_track:
            lo = max(1, math.ceil(config.min_visible * T))
            hi = max(lo, math.floor(config.max_visible * T))
            length = int(torch.randint(lo, hi + 1, (), generator=g))
            start = int(torch.randint(0, T - length + 1, (), generator=g))
            visible = torch.zeros(T)
            visible[start : start + length] = 1.0
            frames = frames * visible.view(T, 1, 1)
        clip += frames
    for _ in range(int(torch.randint(config.clutter + 1, (), generator=g))):
        sigma = rand(*config.blob_sigma)
        t0 = int(torch.randint(T, (), generator=g))
        length = int(torch.randint(1, 3, (), generator=g))
        x, y = rand(0, W - 1), rand(0, H - 1)
        for t in range(t0, min(T, t0 + length)):
            clip[t] += _blob_frames(
                xs=torch.tensor([x]), ys=torch.tensor([y]), sigma=sigma, amp=rand(0.6, 1.2),
                height=H, width=W,
            )[0]  # fmt: skip
    clip += config.noise * torch.randn(T, H, W, generator=g)
    return clip.unsqueeze(0), label


class TrackPersistenceDataset(Dataset):
    """Items: (clip (1, T, H, W) float32, label int); labels index ``TRACK_CLASSES``."""

    def __init__(self, *, config: TrackConfig, split: str) -> None:
        self.config = config
        self.split = _check_split(split)

    def __len__(self) -> int:
        return self.config.size(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        return make_track_clip(self.config, self.split, index)


# --------------------------------------------------------------------------- frequency


def make_frequency_sample(
    config: FrequencyConfig, split: Split, index: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(x (L, 1+K), target (L,), selected frequency index)."""
    g = _generator(config.seed, split, index)
    k = len(config.freqs)
    selected = index % k  # balanced over frequencies
    t = torch.arange(config.steps, dtype=torch.float32) / config.sample_rate
    freqs = torch.tensor(config.freqs, dtype=torch.float32).view(k, 1)
    phases = 2 * math.pi * torch.rand(k, 1, generator=g)
    amps = 1 + config.amplitude_jitter * (2 * torch.rand(k, 1, generator=g) - 1)
    pure = torch.sin(2 * math.pi * freqs * t + phases)  # (K, L)
    mixed = (amps * pure).mean(dim=0) + config.noise * torch.randn(config.steps, generator=g)
    onehot = torch.zeros(config.steps, k)
    onehot[:, selected] = 1.0
    x = torch.cat([mixed.unsqueeze(1), onehot], dim=1)
    return x, pure[selected].clone(), selected


class FrequencyDataset(Dataset):
    """Items: (x (L, 1+K) float32, target (L,) float32, group int = frequency index)."""

    def __init__(self, *, config: FrequencyConfig, split: str) -> None:
        self.config = config
        self.split = _check_split(split)

    def __len__(self) -> int:
        return self.config.size(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        return make_frequency_sample(self.config, self.split, index)


# --------------------------------------------------------------------------- info


@dataclass(frozen=True)
class DatasetInfo:
    """What a run trained on, stored in training_results.json."""

    task: str  # "track_persistence" | "frequency_extraction"
    kind: str  # "classification" | "regression"
    splits: dict[str, int]
    groups: list[str]  # class names, or frequency labels
    group_counts: dict[str, dict[str, int]]  # split -> group -> samples
    input_shape: list[int]
    seed: int
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain JSON types (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))


def dataset_info(config: TrackConfig | FrequencyConfig) -> DatasetInfo:
    if isinstance(config, TrackConfig):
        groups = list(TRACK_CLASSES)
        shape = [1, config.frames, config.height, config.width]
        task, kind = "track_persistence", "classification"
    elif isinstance(config, FrequencyConfig):
        groups = [f"{f:g}Hz" for f in config.freqs]
        shape = [config.steps, config.input_size]
        task, kind = "frequency_extraction", "regression"
    else:
        raise MLError(f"no dataset for config type {type(config).__name__}")
    n = len(groups)
    counts = {
        s: {g: len(range(i, config.size(s), n)) for i, g in enumerate(groups)} for s in SPLITS
    }
    return DatasetInfo(
        task=task,
        kind=kind,
        splits={s: config.size(s) for s in SPLITS},
        groups=groups,
        group_counts=counts,
        input_shape=shape,
        seed=config.seed,
        config=asdict(config),
    )
