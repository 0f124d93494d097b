"""Configs of the built-in synthetic workloads (see ``ml.data`` for the generators).

Torch-free, so a spec's ``[train]`` table can be checked where torch is not installed (the
laptop side). Frozen dataclasses of plain values; bad values raise ``ConfigValueError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import ConfigValueError

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
TRACK_CLASSES = ("transient", "persistent")


@dataclass(frozen=True)
class TrackConfig:
    frames: int = 16
    height: int = 32
    width: int = 32
    tracks: int = 1  # moving blobs per clip; in a transient clip one of them comes and goes
    clutter: int = 2  # at most this many distractor blobs, each visible 1-2 frames
    noise: float = 0.25  # std of the Gaussian pixel noise
    blob_sigma: tuple[float, float] = (1.5, 2.5)
    max_speed: float = 1.5  # pixels per frame
    min_visible: float = 0.25  # a transient track is visible for this fraction of frames ...
    max_visible: float = 0.75  # ... up to this fraction
    train_size: int = 2000
    val_size: int = 400
    test_size: int = 400
    seed: int = 0

    def __post_init__(self) -> None:
        if self.frames < 4 or self.height < 8 or self.width < 8:
            raise ConfigValueError("track clips need frames >= 4 and height, width >= 8")
        if self.tracks < 1 or self.clutter < 0 or self.noise < 0:
            raise ConfigValueError("tracks must be >= 1, clutter and noise >= 0")
        if not 0 < self.min_visible <= self.max_visible < 1:
            raise ConfigValueError(
                "need 0 < min_visible <= max_visible < 1 (fractions of the clip)"
            )
        if min(self.train_size, self.val_size, self.test_size) < 1:
            raise ConfigValueError("every split needs at least one sample")

    def size(self, split: Split) -> int:
        return {"train": self.train_size, "val": self.val_size, "test": self.test_size}[split]


@dataclass(frozen=True)
class FrequencyConfig:
    freqs: tuple[float, ...] = (1.0, 3.0, 5.0, 7.0)  # Hz
    steps: int = 200  # samples per sequence
    sample_rate: float = 100.0  # Hz
    noise: float = 0.1  # std of additive noise on the mixed signal
    amplitude_jitter: float = 0.2  # each component's amplitude is 1 +- this
    train_size: int = 2000
    val_size: int = 400
    test_size: int = 400
    seed: int = 0

    def __post_init__(self) -> None:
        if len(self.freqs) < 2:
            raise ConfigValueError(
                "frequency extraction needs at least two frequencies", key="freqs"
            )
        nyquist = self.sample_rate / 2
        if any(not 0 < f < nyquist for f in self.freqs):
            raise ConfigValueError(
                f"every frequency must lie in (0, {nyquist}) Hz (half the sample rate)", key="freqs"
            )
        if self.steps < 8 or self.noise < 0 or not 0 <= self.amplitude_jitter < 1:
            raise ConfigValueError("need steps >= 8, noise >= 0 and 0 <= amplitude_jitter < 1")
        if min(self.train_size, self.val_size, self.test_size) < 1:
            raise ConfigValueError("every split needs at least one sample")

    @property
    def input_size(self) -> int:
        return 1 + len(self.freqs)

    def size(self, split: Split) -> int:
        return {"train": self.train_size, "val": self.val_size, "test": self.test_size}[split]
