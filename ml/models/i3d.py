"""I3D: a 2D ConvNet inflated to causal 3D convolutions (Carreira & Zisserman, 2017).

Every 3D conv here is built by inflating a 2D conv: the k x k kernel is repeated over
``time_kernel`` frames and divided by ``time_kernel``, so on a static clip the 3D conv answers
exactly like the 2D conv on one frame (away from the causal padding at the clip start). That
is how I3D starts from ImageNet weights; here it also fixes the initial scale.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import MLError
from .base import CausalConv3d, FeatureExtractor, FrameGroupNorm, pool_frames, spatial_strides
from .config import ExtractorConfig


def inflate_conv2d(conv2d: nn.Conv2d, *, time_kernel: int) -> CausalConv3d:
    """A causal Conv3d whose kernel is ``conv2d``'s repeated over time / ``time_kernel``.

    Stride, padding, dilation, groups and bias carry over spatially; the time stride is 1.
    """
    if not isinstance(conv2d, nn.Conv2d):
        raise MLError(f"inflate_conv2d needs an nn.Conv2d, got {type(conv2d).__name__}")
    if isinstance(time_kernel, bool) or not isinstance(time_kernel, int) or time_kernel < 1:
        raise MLError(f"time_kernel must be an integer >= 1 (got {time_kernel!r})")
    if isinstance(conv2d.padding, str) or conv2d.padding_mode != "zeros":
        raise MLError(
            "inflate_conv2d needs a Conv2d with explicit integer zero padding "
            f"(got padding={conv2d.padding!r}, padding_mode={conv2d.padding_mode!r})"
        )
    conv3d = CausalConv3d(
        in_channels=conv2d.in_channels,
        out_channels=conv2d.out_channels,
        kernel=(time_kernel, *conv2d.kernel_size),
        stride=(1, *conv2d.stride),
        padding=tuple(conv2d.padding),
        dilation=tuple(conv2d.dilation),
        groups=conv2d.groups,
        bias=conv2d.bias is not None,
    ).to(device=conv2d.weight.device, dtype=conv2d.weight.dtype)
    with torch.no_grad():
        weight = conv2d.weight.unsqueeze(2).expand(-1, -1, time_kernel, -1, -1)
        conv3d.weight.copy_(weight / time_kernel)
        if conv2d.bias is not None:
            conv3d.bias.copy_(conv2d.bias)
    return conv3d


class I3DExtractor(FeatureExtractor):
    """Inflated 3D ConvNet: stem (5x5 stride 2, inflated to 3 frames), then ``depth`` blocks
    of inflated 3x3 convs (3 frames), each FrameGroupNorm + ReLU, channels doubling and space
    halving down to 4x4; spatial mean and max per frame; linear to ``feature_dim``."""

    def __init__(self, *, config: ExtractorConfig) -> None:
        super().__init__(config=config)
        spec = config.spec
        strides = spatial_strides(height=config.height, width=config.width, steps=spec.depth + 1)
        stem = nn.Conv2d(
            config.in_channels, spec.width, 5, stride=strides[0], padding=2, bias=False
        )
        layers: list[nn.Module] = [
            inflate_conv2d(stem, time_kernel=3),
            FrameGroupNorm(channels=spec.width),
            nn.ReLU(),
        ]
        channels = spec.width
        for stride in strides[1:]:
            out = min(2 * channels, 8 * spec.width)
            conv = nn.Conv2d(channels, out, 3, stride=stride, padding=1, bias=False)
            layers += [inflate_conv2d(conv, time_kernel=3), FrameGroupNorm(channels=out), nn.ReLU()]
            channels = out
        self.body = nn.Sequential(*layers)
        self.proj = nn.Linear(2 * channels, config.feature_dim)

    def extract(self, clip: torch.Tensor) -> torch.Tensor:
        return self.proj(pool_frames(self.body(clip)))
