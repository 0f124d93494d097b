"""Small, trainable video models with causal per-frame features, an early-decision head, and
the frequency LSTM. Build them from configs::

    model = build_video_classifier(extractor=ExtractorConfig(name="i3d"), head=HeadConfig())
    out = model(clips)                 # clips (B, 1, 16, 32, 32) -> logits (B, 16, 2)
    loss = ce(out.logits) + model.aux_loss
    decision = decide(out.logits, threshold=0.9)
"""

from __future__ import annotations

import importlib
from typing import Any

# The configs are torch-free and always loaded; everything that needs torch is imported on
# first use (PEP 562), so `from tether.ml.models.config import ...` and the spec validation of the
# laptop side never load torch.
from .config import (
    EXTRACTOR_NAMES,
    SIZE_NAMES,
    SIZES,
    ExtractorConfig,
    HeadConfig,
    LSTMConfig,
    SizeSpec,
)

_LAZY = {
    "CausalConv3d": "base",
    "FeatureExtractor": "base",
    "FrameCausalTransformer": "base",
    "FrameGroupNorm": "base",
    "frame_causal_mask": "base",
    "VideoClassifier": "classifier",
    "Decision": "head",
    "EarlyDecisionHead": "head",
    "HeadOutput": "head",
    "decide": "head",
    "I3DExtractor": "i3d",
    "inflate_conv2d": "i3d",
    "FrequencyLSTM": "lstm",
    "MagvitExtractor": "magvit",
    "VectorQuantizer": "magvit",
    "VQOutput": "magvit",
    "SlowFastExtractor": "slowfast",
    "TransformerExtractor": "transformer",
    "EXTRACTORS": "build",
    "build_extractor": "build",
    "build_lstm": "build",
    "build_video_classifier": "build",
    "count_parameters": "build",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


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
