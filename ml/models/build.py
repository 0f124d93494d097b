"""Build the models from their configs (imports torch; ``ml.models`` loads it lazily)."""

from __future__ import annotations

from torch import nn

from .base import FeatureExtractor
from .classifier import VideoClassifier
from .config import ExtractorConfig, HeadConfig, LSTMConfig
from .head import EarlyDecisionHead
from .i3d import I3DExtractor
from .lstm import FrequencyLSTM
from .magvit import MagvitExtractor
from .slowfast import SlowFastExtractor
from .transformer import TransformerExtractor

EXTRACTORS: dict[str, type[FeatureExtractor]] = {
    "i3d": I3DExtractor,
    "slowfast": SlowFastExtractor,
    "magvit": MagvitExtractor,
    "transformer": TransformerExtractor,
}


def build_extractor(*, config: ExtractorConfig) -> FeatureExtractor:
    """The extractor ``config.name`` names, built from ``config``."""
    return EXTRACTORS[config.name](config=config)


def build_video_classifier(*, extractor: ExtractorConfig, head: HeadConfig) -> VideoClassifier:
    """Extractor + early-decision head, wired with the extractor's feature_dim."""
    features = build_extractor(config=extractor)
    return VideoClassifier(
        extractor=features,
        head=EarlyDecisionHead(feature_dim=features.feature_dim, config=head),
    )


def build_lstm(*, config: LSTMConfig) -> FrequencyLSTM:
    """The frequency-extraction LSTM."""
    return FrequencyLSTM(config=config)


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (elements) of ``model``; only trainable ones if asked."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
