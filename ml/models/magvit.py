"""MAGVIT-style extractor: a causal 3D-conv tokenizer, vector quantisation, a causal transformer.

The tokenizer (causal 3D convs, FrameGroupNorm, SiLU) turns each frame into a grid of
``patch_size``-downsampled vectors; ``VectorQuantizer`` snaps each vector to its nearest
codebook entry (straight-through gradients; codebook + commitment loss as ``aux_loss``); the
code embeddings plus learned positions go through a transformer where frame ``t``'s tokens
attend only tokens of frames ``<= t``; each frame's tokens are averaged.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .base import (
    CausalConv3d,
    FeatureExtractor,
    conv_block,
    token_encoder,
)
from .config import ExtractorConfig


class VQOutput(NamedTuple):
    """What ``VectorQuantizer`` returns."""

    quantized: torch.Tensor  # (..., code_dim): codes in the forward pass, identity gradient
    indices: torch.Tensor  # (...,) long: the chosen code of each vector
    loss: torch.Tensor  # scalar: codebook loss + commitment * commitment loss


class VectorQuantizer(nn.Module):
    """Nearest-code vector quantisation on the unit sphere (l2-normalised codes and inputs).

    ``quantized = z + sg(q - z)`` passes gradients straight through to the encoder. The loss
    is ``|sg(z) - q|^2 + commitment * |z - sg(q)|^2`` (codebook + commitment, VQ-VAE) plus
    ``entropy_weight *`` an entropy penalty (as in MAGVIT-v2): soft assignments
    ``softmax(cos / temperature)`` should be confident per token (low entropy) and spread
    over the codebook across the batch (high entropy); without it a classifier's codebook
    collapses onto one code. The penalty is offset by log(codebook_size), so the loss is >= 0.

    ``usage`` counts each code's picks in the last forward; ``perplexity()`` is exp(entropy)
    of that distribution (1 = one code, up to ``codebook_size`` = all used evenly).
    """

    def __init__(
        self,
        *,
        codebook_size: int,
        code_dim: int,
        commitment: float,
        entropy_weight: float = 0.1,
        temperature: float = 0.1,
    ) -> None:
        super().__init__()
        self.commitment = commitment
        self.entropy_weight = entropy_weight
        self.temperature = temperature
        self.codebook = nn.Parameter(torch.randn(codebook_size, code_dim))
        self.register_buffer("usage", torch.zeros(codebook_size), persistent=False)

    @property
    def codebook_size(self) -> int:
        return self.codebook.shape[0]

    def forward(self, z: torch.Tensor) -> VQOutput:
        shape = z.shape
        flat = F.normalize(z.reshape(-1, shape[-1]).float(), dim=-1)
        codes = F.normalize(self.codebook.float(), dim=-1)
        cosine = flat @ codes.t()
        indices = cosine.argmax(dim=-1)  # max cosine = nearest on the sphere
        q = F.embedding(indices, codes)  # deterministic backward, unlike codes[indices]
        loss = F.mse_loss(q, flat.detach()) + self.commitment * F.mse_loss(flat, q.detach())
        if self.entropy_weight > 0:
            log_p = torch.log_softmax(cosine / self.temperature, dim=-1)
            per_token = -(log_p.exp() * log_p).sum(dim=-1).mean()
            mean = log_p.exp().mean(dim=0)
            spread = -(mean * mean.clamp_min(1e-12).log()).sum()
            penalty = per_token + math.log(self.codebook_size) - spread
            loss = loss + self.entropy_weight * penalty
        quantized = flat + (q - flat).detach()
        with torch.no_grad():
            self.usage.copy_(torch.bincount(indices, minlength=self.codebook_size).float())
        return VQOutput(quantized.view(shape), indices.view(shape[:-1]), loss)

    def perplexity(self) -> float:
        """exp(entropy) of the code usage of the last forward (0.0 before any forward)."""
        total = float(self.usage.sum())
        if total == 0:
            return 0.0
        p = self.usage / total
        p = p[p > 0]
        return math.exp(float(-(p * p.log()).sum()))


class MagvitExtractor(FeatureExtractor):
    """Causal conv tokenizer -> VQ -> frame-causal transformer -> per-frame mean -> linear."""

    def __init__(self, *, config: ExtractorConfig) -> None:
        super().__init__(config=config)
        spec, p = config.spec, config.patch_size
        downsamples = int(math.log2(p))
        layers: list[nn.Module] = []
        channels = config.in_channels
        for i in range(downsamples):
            out = min(spec.width * 2**i, 4 * spec.width)
            layers.append(
                conv_block(
                    in_channels=channels,
                    out_channels=out,
                    kernel=(3, 3, 3),
                    stride=(1, 2, 2),
                    activation=nn.SiLU,
                )
            )
            channels = out
        layers.append(
            CausalConv3d(in_channels=channels, out_channels=config.code_dim, kernel=(1, 1, 1))
        )
        self.encoder = nn.Sequential(*layers)
        self.quantizer = VectorQuantizer(
            codebook_size=config.codebook_size,
            code_dim=config.code_dim,
            commitment=config.commitment,
            entropy_weight=config.entropy_weight,
        )
        self.embed = nn.Linear(config.code_dim, spec.dim)
        tokens = (config.height // p) * (config.width // p)
        self.positions, self.transformer, self.proj = token_encoder(
            config=config, tokens_per_frame=tokens
        )

    def tokenize(self, clip: torch.Tensor) -> VQOutput:
        """Quantised tokens of a clip: quantized (B, T, h, w, code_dim), indices (B, T, h, w)."""
        self.check_clip(clip)
        return self.quantizer(self.encoder(clip).permute(0, 2, 3, 4, 1))

    def extract(self, clip: torch.Tensor) -> torch.Tensor:
        vq = self.tokenize(clip)
        self._aux_loss = vq.loss
        b, t, h, w, _ = vq.quantized.shape
        tokens = self.embed(vq.quantized).reshape(b, t, h * w, -1)
        tokens = self.transformer(self.positions(tokens))
        return self.proj(tokens.mean(dim=2))
