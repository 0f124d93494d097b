"""SlowFast (Feichtenhofer et al., 2019), made causal.

The slow pathway sees every ``alpha``-th frame (frames 0, alpha, 2*alpha, ...) with many
channels; the fast pathway sees every frame with ``beta`` times as many channels. After each
stage a lateral connection (a conv over ``alpha`` fast frames with time stride ``alpha``)
carries fast features into the slow pathway. Slow step ``k`` depends on frames ``<= k*alpha``
and is broadcast to frames ``k*alpha .. k*alpha + alpha - 1``, so every frame's features
depend only on frames up to it.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import CausalConv3d, FeatureExtractor, conv_block, pool_frames, spatial_strides
from .config import ExtractorConfig


class SlowFastExtractor(FeatureExtractor):
    """Two causal 3D conv pathways with fast->slow lateral fusion; per-frame pooled (mean and
    max over space), concatenated, linear to ``feature_dim``.

    Stages: a stem (5x5 spatial, stride 2) plus ``depth`` 3x3 stages. The slow pathway uses
    no temporal kernel in its first two stages (as in the paper) and 3 slow steps after.
    """

    def __init__(self, *, config: ExtractorConfig) -> None:
        super().__init__(config=config)
        spec = config.spec
        self.alpha = config.alpha
        stages = spec.depth + 1
        strides = spatial_strides(height=config.height, width=config.width, steps=stages)
        slow = [min(spec.width * 2**i, 8 * spec.width) for i in range(stages)]
        fast = [max(2, round(config.beta * c)) for c in slow]
        self.slow = nn.ModuleList()
        self.fast = nn.ModuleList()
        self.lateral = nn.ModuleList()
        slow_in, fast_in = config.in_channels, config.in_channels
        for i, s in enumerate(strides):
            k = 5 if i == 0 else 3
            self.slow.append(
                conv_block(
                    in_channels=slow_in,
                    out_channels=slow[i],
                    kernel=(1 if i < 2 else 3, k, k),
                    stride=(1, s, s),
                )
            )
            self.fast.append(
                conv_block(
                    in_channels=fast_in, out_channels=fast[i], kernel=(3, k, k), stride=(1, s, s)
                )
            )
            slow_in, fast_in = slow[i], fast[i]
            if i < stages - 1:
                self.lateral.append(
                    CausalConv3d(
                        in_channels=fast[i],
                        out_channels=2 * fast[i],
                        kernel=(config.alpha, 1, 1),
                        stride=(config.alpha, 1, 1),
                    )
                )
                slow_in += 2 * fast[i]
        self.proj = nn.Linear(2 * (slow[-1] + fast[-1]), config.feature_dim)

    def extract(self, clip: torch.Tensor) -> torch.Tensor:
        t = clip.shape[2]
        slow, fast = clip[:, :, :: self.alpha], clip
        for i in range(len(self.slow)):
            slow, fast = self.slow[i](slow), self.fast[i](fast)
            if i < len(self.lateral):
                slow = torch.cat([slow, self.lateral[i](fast)], dim=1)
        slow_frames = pool_frames(slow).repeat_interleave(self.alpha, dim=1)[:, :t]
        return self.proj(torch.cat([slow_frames, pool_frames(fast)], dim=-1))
