"""A video transformer (ViViT-style tubelets) with frame-causal attention.

Tubelets span 2 frames and ``patch_size`` x ``patch_size`` pixels; the tubelet conv is padded
by one frame in the past, so there is one token grid per frame and frame ``t``'s tokens see
frames ``t-1`` and ``t``. Learned time and space positions are added, a transformer encoder
with a frame-causal mask mixes the tokens, and each frame's tokens are averaged.
"""

from __future__ import annotations

import torch

from .base import CausalConv3d, FeatureExtractor, token_encoder
from .config import ExtractorConfig

TUBELET_FRAMES = 2


class TransformerExtractor(FeatureExtractor):
    """Tubelet embedding -> positions -> frame-causal transformer -> per-frame mean -> linear."""

    def __init__(self, *, config: ExtractorConfig) -> None:
        super().__init__(config=config)
        spec, p = config.spec, config.patch_size
        self.embed = CausalConv3d(
            in_channels=config.in_channels,
            out_channels=spec.dim,
            kernel=(TUBELET_FRAMES, p, p),
            stride=(1, p, p),
            padding=(0, 0),
        )
        tokens = (config.height // p) * (config.width // p)
        self.positions, self.transformer, self.proj = token_encoder(
            config=config, tokens_per_frame=tokens
        )

    def extract(self, clip: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(clip).flatten(3).permute(0, 2, 3, 1)  # (B, T, N, D)
        tokens = self.transformer(self.positions(tokens))
        return self.proj(tokens.mean(dim=2))
