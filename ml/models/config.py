"""Typed configs of the video models, the early-decision head and the frequency LSTM.

Every config is a frozen dataclass of plain scalars, so ``dataclasses.asdict(config)`` is
JSON-serialisable and can be stored inside a checkpoint; ``Config.from_dict`` reads it back.
Bad values raise :class:`ml.errors.ConfigValueError` (an ``MLError``) with a message that says
what to change and the field it is about (so a spec error points at that key's line).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import ConfigValueError, MLError

EXTRACTOR_NAMES = ("i3d", "slowfast", "magvit", "transformer")
SIZE_NAMES = ("tiny", "small", "base")

C = TypeVar("C")


@dataclass(frozen=True)
class SizeSpec:
    """The widths and depths one ``size`` name stands for (shared by all extractors)."""

    width: int  # channels of the first 3D conv (conv models and the magvit tokenizer)
    depth: int  # conv blocks after the stem (i3d, slowfast) or transformer layers
    dim: int  # token width of the transformer models
    heads: int  # attention heads; ``dim`` is a multiple of it
    mlp_ratio: int  # hidden width of a transformer MLP, as a multiple of ``dim``


SIZES: dict[str, SizeSpec] = {
    "tiny": SizeSpec(width=8, depth=2, dim=32, heads=2, mlp_ratio=2),
    "small": SizeSpec(width=16, depth=3, dim=64, heads=4, mlp_ratio=2),
    "base": SizeSpec(width=32, depth=4, dim=128, heads=4, mlp_ratio=4),
}


def _int(owner: str, name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigValueError(
            f"{owner}.{name} must be an integer >= {minimum} (got {value!r})", key=name
        )


def _number(owner: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigValueError(f"{owner}.{name} must be a number (got {value!r})", key=name)
    return float(value)


def _from_dict(cls: type[C], data: Any) -> C:
    """Build ``cls`` from a dict such as ``dataclasses.asdict`` wrote; unknown keys are errors."""
    if not isinstance(data, dict):
        raise MLError(f"{cls.__name__} needs a dict of fields (got {type(data).__name__})")
    known = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise MLError(
            f"unknown {cls.__name__} field(s) {', '.join(unknown)}; known fields: "
            f"{', '.join(known)}"
        )
    try:
        return cls(**data)
    except TypeError as exc:  # a required field is missing
        raise MLError(f"cannot build {cls.__name__} from {data!r}: {exc}") from None


@dataclass(frozen=True)
class ExtractorConfig:
    """A causal video feature extractor: clips (B, C, T, H, W) -> per-frame features (B, T, D).

    ``size`` picks widths and depths (see ``SIZES``); the other knobs apply to one model each:
    ``alpha``/``beta`` to slowfast, ``codebook_size``/``code_dim``/``commitment``/
    ``entropy_weight`` to magvit, ``patch_size``/``dropout`` to magvit and transformer.
    Clips may be shorter than ``frames`` (a prefix, for streaming) but not longer, and must
    have exactly ``in_channels``, ``height`` and ``width``.
    """

    name: str
    in_channels: int = 1
    frames: int = 16
    height: int = 32
    width: int = 32
    size: str = "small"
    feature_dim: int = 64
    # slowfast: the slow pathway sees every ``alpha``-th frame; fast channels = beta * slow
    alpha: int = 4
    beta: float = 0.25
    # magvit: vector-quantised tokens
    codebook_size: int = 128
    code_dim: int = 32
    commitment: float = 0.25
    entropy_weight: float = 0.1  # keeps the codebook in use (see VectorQuantizer)
    # magvit and transformer: tokens cover patch_size x patch_size pixels of a frame
    patch_size: int = 8
    dropout: float = 0.0

    def __post_init__(self) -> None:
        owner = "ExtractorConfig"
        if self.name not in EXTRACTOR_NAMES:
            raise ConfigValueError(
                f"unknown extractor {self.name!r}: set name to one of {', '.join(EXTRACTOR_NAMES)}",
                key="name",
            )
        if self.size not in SIZE_NAMES:
            raise ConfigValueError(
                f"unknown size {self.size!r}: set size to one of {', '.join(SIZE_NAMES)}",
                key="size",
            )
        for name in ("in_channels", "frames", "height", "width", "feature_dim", "alpha"):
            _int(owner, name, getattr(self, name), minimum=1)
        _int(owner, "codebook_size", self.codebook_size, minimum=2)
        _int(owner, "code_dim", self.code_dim, minimum=2)
        _int(owner, "patch_size", self.patch_size, minimum=1)
        if self.name == "slowfast" and self.alpha > self.frames:
            raise ConfigValueError(
                f"ExtractorConfig.alpha={self.alpha} exceeds frames={self.frames}: the slow "
                f"pathway would see one frame; use alpha <= frames (4 is typical)",
                key="alpha",
            )
        if not 0 < _number(owner, "beta", self.beta) <= 1:
            raise ConfigValueError(
                f"ExtractorConfig.beta must lie in (0, 1]: it is the fast pathway's share of the "
                f"slow pathway's channels (got {self.beta!r}; 0.25 is typical)",
                key="beta",
            )
        if _number(owner, "commitment", self.commitment) < 0:
            raise ConfigValueError(
                f"ExtractorConfig.commitment must be >= 0 (got {self.commitment!r})",
                key="commitment",
            )
        if _number(owner, "entropy_weight", self.entropy_weight) < 0:
            raise ConfigValueError(
                f"ExtractorConfig.entropy_weight must be >= 0 (got {self.entropy_weight!r}; 0 "
                f"turns the codebook-usage penalty off, 0.1 is typical)",
                key="entropy_weight",
            )
        if not 0 <= _number(owner, "dropout", self.dropout) < 1:
            raise ConfigValueError(
                f"ExtractorConfig.dropout must lie in [0, 1) (got {self.dropout!r})", key="dropout"
            )
        if self.name in ("magvit", "transformer"):
            p = self.patch_size
            if p & (p - 1) or p < 2:
                raise ConfigValueError(
                    f"ExtractorConfig.patch_size must be a power of two >= 2 for {self.name} "
                    f"(got {p}; 4 or 8 are typical)",
                    key="patch_size",
                )
            if self.height % p or self.width % p:
                raise ConfigValueError(
                    f"{self.name} cuts frames into {p}x{p} patches, but height={self.height} and "
                    f"width={self.width} are not both multiples of {p}: change patch_size or "
                    f"the frame size",
                    key="patch_size",
                )

    @property
    def spec(self) -> SizeSpec:
        """Widths and depths of ``size``."""
        return SIZES[self.size]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExtractorConfig:
        """Inverse of ``to_dict``; raises MLError on unknown or missing fields."""
        return _from_dict(cls, data)


@dataclass(frozen=True)
class HeadConfig:
    """The early-decision head: causal attention pooling over frames, then an MLP.

    ``threshold`` is the softmax confidence at which a clip is decided early (see ``decide``).
    """

    num_classes: int = 2
    hidden: int = 64
    threshold: float = 0.9

    def __post_init__(self) -> None:
        _int("HeadConfig", "num_classes", self.num_classes, minimum=2)
        _int("HeadConfig", "hidden", self.hidden, minimum=1)
        if not 0 < _number("HeadConfig", "threshold", self.threshold) <= 1:
            raise ConfigValueError(
                f"HeadConfig.threshold is a softmax confidence and must lie in (0, 1] "
                f"(got {self.threshold!r}; 0.9 is typical)",
                key="threshold",
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadConfig:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class LSTMConfig:
    """The frequency-extraction LSTM: (B, L, input_size) -> one regression value per step."""

    input_size: int = 5
    hidden: int = 64
    layers: int = 1
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("input_size", "hidden", "layers"):
            _int("LSTMConfig", name, getattr(self, name), minimum=1)
        if not 0 <= _number("LSTMConfig", "dropout", self.dropout) < 1:
            raise ConfigValueError(
                f"LSTMConfig.dropout must lie in [0, 1) (got {self.dropout!r})", key="dropout"
            )
        if self.dropout > 0 and self.layers == 1:
            raise ConfigValueError(
                "LSTMConfig.dropout acts between stacked LSTM layers: set layers >= 2 "
                "or dropout = 0",
                key="dropout",
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LSTMConfig:
        return _from_dict(cls, data)
