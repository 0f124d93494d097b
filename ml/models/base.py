"""The feature-extractor base class and the causal building blocks the models share.

Causality is the contract: the features of frame ``t`` depend only on frames ``<= t``. The
pieces here keep it: ``CausalConv3d`` pads only the past in time, ``FrameGroupNorm``
normalises each frame on its own (BatchNorm and plain GroupNorm would mix statistics across
frames and leak the future), and ``FrameCausalTransformer`` masks attention so tokens of frame
``t`` attend only tokens of frames ``<= t``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MLError
from .config import ExtractorConfig


class FeatureExtractor(nn.Module):
    """Base of the video extractors: clip (B, C, T, H, W) -> causal per-frame features (B, T, D).

    Subclasses implement ``extract``; ``forward`` checks the clip first. ``aux_loss`` is the
    extra training loss of the last forward (zero except for magvit's VQ loss); add it to the
    task loss.
    """

    def __init__(self, *, config: ExtractorConfig) -> None:
        super().__init__()
        self.config = config
        self.feature_dim = config.feature_dim
        self._aux_loss: torch.Tensor | None = None

    @property
    def aux_loss(self) -> torch.Tensor:
        """Scalar auxiliary loss from the last forward (a zero tensor when there is none)."""
        if self._aux_loss is not None:
            return self._aux_loss
        return torch.zeros((), device=next(self.parameters()).device)

    def __getstate__(self) -> dict:
        """Copies and pickles leave out the last forward's aux loss (a graph, not state)."""
        state = self.__dict__.copy()
        state["_aux_loss"] = None
        return state

    def check_clip(self, clip: torch.Tensor) -> None:
        """Raise MLError unless ``clip`` is a float (B, in_channels, T<=frames, height, width)."""
        cfg = self.config
        if not isinstance(clip, torch.Tensor) or clip.dim() != 5 or not clip.is_floating_point():
            got = tuple(clip.shape) if isinstance(clip, torch.Tensor) else type(clip).__name__
            raise MLError(
                f"{cfg.name} expects float clips shaped (B, C, T, H, W), got {got}; add the "
                f"channel axis with clip.unsqueeze(1) if it is missing"
            )
        _, c, t, h, w = clip.shape
        if c != cfg.in_channels or h != cfg.height or w != cfg.width or not 1 <= t <= cfg.frames:
            raise MLError(
                f"{cfg.name} was built for clips (B, {cfg.in_channels}, T<={cfg.frames}, "
                f"{cfg.height}, {cfg.width}) but got {tuple(clip.shape)}; build it with an "
                f"ExtractorConfig that matches the data"
            )

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        self.check_clip(clip)
        return self.extract(clip)

    def extract(self, clip: torch.Tensor) -> torch.Tensor:
        """Features (B, T, feature_dim) of a checked clip; implemented by each model."""
        raise NotImplementedError


class CausalConv3d(nn.Module):
    """Conv3d that pads only the past in time: output frame ``t`` sees input frames ``<= t``.

    ``kernel`` and ``stride`` are (time, height, width). With time stride ``s`` the output has
    ``ceil(T / s)`` frames and output ``k`` covers input frames ``k*s - kt + 1 .. k*s``.
    Spatial padding defaults to ``kernel // 2`` (same size at stride 1).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int],
        stride: tuple[int, int, int] = (1, 1, 1),
        padding: tuple[int, int] | None = None,
        dilation: tuple[int, int] = (1, 1),
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        kt, kh, kw = kernel
        if padding is None:
            padding = (dilation[0] * (kh - 1) // 2, dilation[1] * (kw - 1) // 2)
        self.time_pad = kt - 1
        self.conv = nn.Conv3d(
            in_channels,
            out_channels,
            kernel_size=kernel,
            stride=stride,
            padding=(0, *padding),
            dilation=(1, *dilation),
            groups=groups,
            bias=bias,
        )

    @property
    def weight(self) -> nn.Parameter:
        return self.conv.weight

    @property
    def bias(self) -> nn.Parameter | None:
        return self.conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.time_pad:
            x = F.pad(x, (0, 0, 0, 0, self.time_pad, 0))
        return self.conv(x)


def _groups_for(channels: int, *, max_groups: int = 8, min_per_group: int = 4) -> int:
    for groups in range(min(max_groups, max(channels // min_per_group, 1)), 0, -1):
        if channels % groups == 0:
            return groups
    return 1


class FrameGroupNorm(nn.Module):
    """GroupNorm over (channels of a group, H, W) of each frame separately; input (B, C, T, H, W).

    Statistics never cross frames or clips, so the layer is causal in time in training and in
    evaluation alike (unlike BatchNorm3d or GroupNorm over the whole clip).
    """

    def __init__(self, *, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.groups = _groups_for(channels)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        g = x.float().view(b, self.groups, c // self.groups, t, h, w)
        var, mean = torch.var_mean(g, dim=(2, 4, 5), keepdim=True, unbiased=False)
        g = ((g - mean) * torch.rsqrt(var + self.eps)).view(b, c, t, h, w).to(x.dtype)
        return g * self.weight.view(1, c, 1, 1, 1) + self.bias.view(1, c, 1, 1, 1)


def conv_block(
    *,
    in_channels: int,
    out_channels: int,
    kernel: tuple[int, int, int],
    stride: tuple[int, int, int] = (1, 1, 1),
    activation: type[nn.Module] = nn.ReLU,
) -> nn.Sequential:
    """CausalConv3d (no bias) -> FrameGroupNorm -> activation."""
    return nn.Sequential(
        CausalConv3d(
            in_channels=in_channels,
            out_channels=out_channels,
            kernel=kernel,
            stride=stride,
            bias=False,
        ),
        FrameGroupNorm(channels=out_channels),
        activation(),
    )


def spatial_strides(*, height: int, width: int, steps: int, min_size: int = 4) -> list[int]:
    """Spatial stride (2 or 1) of each of ``steps`` convs: halve while the map is > min_size."""
    strides = []
    for _ in range(steps):
        stride = 2 if min(height, width) > min_size else 1
        strides.append(stride)
        height, width = math.ceil(height / stride), math.ceil(width / stride)
    return strides


def pool_frames(x: torch.Tensor) -> torch.Tensor:
    """Global spatial mean and max per frame, concatenated: (B, C, T, H, W) -> (B, T, 2C).

    The max keeps a small object visible (a mean over the frame dilutes it by its area).
    """
    flat = x.flatten(3)
    return torch.cat([flat.mean(dim=3), flat.amax(dim=3)], dim=1).transpose(1, 2)


def frame_causal_mask(
    *, frames: int, tokens_per_frame: int = 1, device: torch.device | str | None = None
) -> torch.Tensor:
    """Boolean (L, L) mask, L = frames * tokens_per_frame, True where attention is ALLOWED.

    Tokens are ordered frame by frame; token ``i`` of frame ``f(i)`` may attend token ``j``
    iff ``f(j) <= f(i)``. This is the ``attn_mask`` convention of
    ``F.scaled_dot_product_attention`` (the opposite of ``nn.MultiheadAttention``'s).
    """
    frame_of = torch.arange(frames, device=device).repeat_interleave(tokens_per_frame)
    return frame_of.view(1, -1) <= frame_of.view(-1, 1)


class SpaceTimePositions(nn.Module):
    """Learned positional embeddings, one per frame plus one per spatial token, added up."""

    def __init__(self, *, frames: int, tokens_per_frame: int, dim: int) -> None:
        super().__init__()
        self.time = nn.Parameter(torch.zeros(frames, dim))
        self.space = nn.Parameter(torch.zeros(tokens_per_frame, dim))
        nn.init.trunc_normal_(self.time, std=0.02)
        nn.init.trunc_normal_(self.space, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T, N, D), T <= frames -> tokens + positions."""
        t = tokens.shape[1]
        return tokens + self.time[:t].unsqueeze(1) + self.space.unsqueeze(0)


class TransformerBlock(nn.Module):
    """Pre-norm transformer encoder layer (multi-head self-attention + MLP) with a mask."""

    def __init__(self, *, dim: int, heads: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise MLError(f"token width {dim} is not a multiple of heads={heads}")
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, *, mask: torch.Tensor) -> torch.Tensor:
        """x (B, L, D); mask (L, L) bool, True where attention is allowed."""
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.drop(self.proj(attn.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.mlp(self.norm2(x)))


class FrameCausalTransformer(nn.Module):
    """Transformer encoder over (B, T, N, D) tokens where frame ``t`` attends frames ``<= t``."""

    def __init__(self, *, dim: int, depth: int, heads: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TransformerBlock(dim=dim, heads=heads, mlp_ratio=mlp_ratio, dropout=dropout)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, t, n, d = tokens.shape
        mask = frame_causal_mask(frames=t, tokens_per_frame=n, device=tokens.device)
        x = tokens.reshape(b, t * n, d)
        for block in self.blocks:
            x = block(x, mask=mask)
        return self.norm(x).view(b, t, n, d)


def token_encoder(
    *, config: ExtractorConfig, tokens_per_frame: int
) -> tuple[SpaceTimePositions, FrameCausalTransformer, nn.Linear]:
    """Positions, frame-causal transformer and output projection shared by the token models
    (magvit, transformer), sized by ``config.size``."""
    spec = config.spec
    positions = SpaceTimePositions(
        frames=config.frames, tokens_per_frame=tokens_per_frame, dim=spec.dim
    )
    transformer = FrameCausalTransformer(
        dim=spec.dim,
        depth=spec.depth,
        heads=spec.heads,
        mlp_ratio=spec.mlp_ratio,
        dropout=config.dropout,
    )
    return positions, transformer, nn.Linear(spec.dim, config.feature_dim)
