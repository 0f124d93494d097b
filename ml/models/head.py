"""The early-decision head and the rule that turns per-frame logits into an early decision.

``EarlyDecisionHead`` gives a prediction at every frame from frames ``<= t`` only (causal
attention pooling), so the logits at frame ``t`` are what a streaming deployment would see
after ``t + 1`` frames. ``decide`` stops at the first frame that is confident enough.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MLError
from .base import frame_causal_mask
from .config import HeadConfig


class HeadOutput(NamedTuple):
    """Per-frame logits (B, T, K) and the causal pooling weights (B, T, T).

    ``attention[b, t]`` is the distribution over frames ``s <= t`` pooled for frame ``t``:
    rows sum to 1 and everything above the diagonal is 0.
    """

    logits: torch.Tensor
    attention: torch.Tensor


class Decision(NamedTuple):
    """One early decision per clip."""

    pred: torch.Tensor  # (B,) long: predicted class at the decision frame
    frame: torch.Tensor  # (B,) long: index of the decision frame
    early: torch.Tensor  # (B,) bool: True when the threshold was reached (else last frame)


class EarlyDecisionHead(nn.Module):
    """Causal attention pooling over per-frame features, then an MLP, at every frame.

    For frame ``t``: scores ``q_t . k_s / sqrt(hidden)`` for ``s <= t`` (masked above the
    diagonal), softmax -> weights, context = weighted sum of values, logits = MLP(context).
    """

    def __init__(self, *, feature_dim: int, config: HeadConfig) -> None:
        super().__init__()
        if isinstance(feature_dim, bool) or not isinstance(feature_dim, int) or feature_dim < 1:
            raise MLError(f"feature_dim must be an integer >= 1 (got {feature_dim!r})")
        self.config = config
        self.feature_dim = feature_dim
        self.norm = nn.LayerNorm(feature_dim)
        self.query = nn.Linear(feature_dim, config.hidden)
        self.key = nn.Linear(feature_dim, config.hidden)
        self.value = nn.Linear(feature_dim, config.hidden)
        self.mlp = nn.Sequential(
            nn.Linear(config.hidden, config.hidden),
            nn.GELU(),
            nn.Linear(config.hidden, config.num_classes),
        )

    def forward(self, features: torch.Tensor) -> HeadOutput:
        """features (B, T, feature_dim) -> HeadOutput(logits (B, T, K), attention (B, T, T))."""
        if features.dim() != 3 or features.shape[-1] != self.feature_dim:
            raise MLError(
                f"the head expects features (B, T, {self.feature_dim}), got "
                f"{tuple(features.shape)}; check that the extractor's feature_dim matches"
            )
        x = self.norm(features)
        scores = self.query(x) @ self.key(x).transpose(1, 2) / math.sqrt(self.config.hidden)
        allowed = frame_causal_mask(frames=x.shape[1], device=x.device)
        scores = scores.float().masked_fill(~allowed, float("-inf"))
        attention = torch.softmax(scores, dim=-1)
        context = attention.to(x.dtype) @ self.value(x)
        return HeadOutput(logits=self.mlp(context), attention=attention)


def decide(logits: torch.Tensor, *, threshold: float) -> Decision:
    """The first frame whose top softmax probability is ``>= threshold``, else the last frame.

    logits (B, T, K). The prediction is the argmax at the chosen frame.
    """
    if logits.dim() != 3:
        raise MLError(f"decide expects logits (B, T, K), got {tuple(logits.shape)}")
    if isinstance(threshold, bool) or not 0 < float(threshold) <= 1:
        raise MLError(f"threshold is a softmax confidence in (0, 1] (got {threshold!r})")
    confidence, classes = F.softmax(logits.detach().float(), dim=-1).max(dim=-1)  # (B, T)
    confident = confidence >= threshold
    early = confident.any(dim=1)
    first = confident.to(torch.uint8).argmax(dim=1)  # first True (0 when none)
    frame = torch.where(early, first, torch.full_like(first, logits.shape[1] - 1))
    pred = classes.gather(1, frame.view(-1, 1)).squeeze(1)
    return Decision(pred=pred, frame=frame, early=early)
