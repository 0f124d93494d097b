"""A video classifier with early decisions: a causal feature extractor plus the causal head."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import MLError
from .base import FeatureExtractor
from .head import Decision, EarlyDecisionHead, HeadOutput, decide


class VideoClassifier(nn.Module):
    """clip (B, C, T, H, W) -> HeadOutput(per-frame logits (B, T, K), attention (B, T, T)).

    Causal end to end: the logits at frame ``t`` depend only on frames ``<= t``. Add
    ``aux_loss`` (the extractor's, e.g. magvit's VQ loss) to the task loss when training.
    """

    def __init__(self, *, extractor: FeatureExtractor, head: EarlyDecisionHead) -> None:
        super().__init__()
        if head.feature_dim != extractor.feature_dim:
            raise MLError(
                f"the head takes {head.feature_dim}-d features but the extractor gives "
                f"{extractor.feature_dim}-d; build both with the same feature_dim"
            )
        self.extractor = extractor
        self.head = head

    def forward(self, clip: torch.Tensor) -> HeadOutput:
        return self.head(self.extractor(clip))

    @property
    def aux_loss(self) -> torch.Tensor:
        """The extractor's auxiliary loss from the last forward (a zero tensor for most)."""
        return self.extractor.aux_loss

    @torch.no_grad()
    def decide(self, clip: torch.Tensor, *, threshold: float | None = None) -> Decision:
        """Early decisions for a batch of clips (threshold defaults to the head config's)."""
        limit = self.head.config.threshold if threshold is None else threshold
        return decide(self(clip).logits, threshold=limit)

    def config_dict(self) -> dict[str, Any]:
        """{"extractor": ..., "head": ...} as plain dicts, for storing in checkpoints."""
        return {"extractor": self.extractor.config.to_dict(), "head": self.head.config.to_dict()}
