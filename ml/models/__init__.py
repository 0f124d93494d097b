"""Small, trainable video models with causal per-frame features, an early-decision head, and
the frequency LSTM. Build them from configs::

    model = build_video_classifier(extractor=ExtractorConfig(name="i3d"), head=HeadConfig())
    out = model(clips)                 # clips (B, 1, 16, 32, 32) -> logits (B, 16, 2)
    loss = ce(out.logits) + model.aux_loss
    decision = decide(out.logits, threshold=0.9)
"""

from __future__ import annotations

from torch import nn

from .base import (
    CausalConv3d,
    FeatureExtractor,
    FrameCausalTransformer,
    FrameGroupNorm,
    frame_causal_mask,
)
from .classifier import VideoClassifier
from .config import (
    EXTRACTOR_NAMES,
    SIZE_NAMES,
    SIZES,
    ExtractorConfig,
    HeadConfig,
    LSTMConfig,
    SizeSpec,
)
from .head import Decision, EarlyDecisionHead, HeadOutput, decide
from .i3d import I3DExtractor, inflate_conv2d
from .lstm import FrequencyLSTM
from .magvit import MagvitExtractor, VectorQuantizer, VQOutput
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


__all__ = [
    "EXTRACTORS",
    "EXTRACTOR_NAMES",
    "SIZES",
    "SIZE_NAMES",
    "CausalConv3d",
    "Decision",
    "EarlyDecisionHead",
    "ExtractorConfig",
    "FeatureExtractor",
    "FrameCausalTransformer",
    "FrameGroupNorm",
    "FrequencyLSTM",
    "HeadConfig",
    "HeadOutput",
    "I3DExtractor",
    "LSTMConfig",
    "MagvitExtractor",
    "SizeSpec",
    "SlowFastExtractor",
    "TransformerExtractor",
    "VQOutput",
    "VectorQuantizer",
    "VideoClassifier",
    "build_extractor",
    "build_lstm",
    "build_video_classifier",
    "count_parameters",
    "decide",
    "frame_causal_mask",
    "inflate_conv2d",
]
