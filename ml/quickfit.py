"""The smallest real training there is: an MLP on a synthetic two-spiral problem.

It really trains (CPU, seconds) and is evaluated on held-out data; the embedded demo runs a
few of these as Ray tasks until the full pipeline lands.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .errors import MLError


@dataclass(frozen=True)
class QuickFitConfig:
    hidden: int = 64
    epochs: int = 200
    lr: float = 0.01
    n_train: int = 800
    n_test: int = 400
    noise: float = 0.15
    seed: int = 0


@dataclass(frozen=True)
class QuickFitResult:
    config: QuickFitConfig
    train_loss: list[float]
    test_accuracy: float
    seconds: float

    def to_dict(self) -> dict:
        return {**asdict(self), "config": asdict(self.config)}


def two_spirals(*, n: int, noise: float, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """``n`` points on two interleaved spirals, labels 0/1."""
    t = torch.rand(n, generator=generator) * 3 * math.pi + 0.5
    label = torch.randint(0, 2, (n,), generator=generator)
    sign = label.float() * 2 - 1
    x = torch.stack([sign * t * torch.cos(t), sign * t * torch.sin(t)], dim=1) / (3 * math.pi)
    x = x + noise * torch.randn(n, 2, generator=generator) / 3
    return x, label


def fit(*, config: QuickFitConfig) -> QuickFitResult:
    if config.hidden < 1 or config.epochs < 1:
        raise MLError(f"hidden and epochs must be >= 1 (got {config.hidden}, {config.epochs})")
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    x_train, y_train = two_spirals(n=config.n_train, noise=config.noise, generator=gen)
    x_test, y_test = two_spirals(n=config.n_test, noise=config.noise, generator=gen)
    model = nn.Sequential(
        nn.Linear(2, config.hidden),
        nn.Tanh(),
        nn.Linear(config.hidden, config.hidden),
        nn.Tanh(),
        nn.Linear(config.hidden, 2),
    )
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    losses = []
    for _ in range(config.epochs):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x_train), y_train)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        acc = float((model(x_test).argmax(dim=1) == y_test).float().mean())
    return QuickFitResult(
        config=config,
        train_loss=losses,
        test_accuracy=acc,
        seconds=time.perf_counter() - start,
    )
