"""The frequency-extraction model: an LSTM that regresses one value per time step."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import MLError
from .config import LSTMConfig


class FrequencyLSTM(nn.Module):
    """x (B, L, input_size) -> LSTM (batch first) -> linear -> per-step output (B, L)."""

    def __init__(self, *, config: LSTMConfig) -> None:
        super().__init__()
        self.config = config
        self.lstm = nn.LSTM(
            input_size=config.input_size,
            hidden_size=config.hidden,
            num_layers=config.layers,
            dropout=config.dropout if config.layers > 1 else 0.0,
            batch_first=True,
        )
        self.out = nn.Linear(config.hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.config.input_size:
            raise MLError(
                f"FrequencyLSTM expects (B, L, {self.config.input_size}) sequences, got "
                f"{tuple(x.shape)}; set LSTMConfig.input_size to the number of input features"
            )
        hidden, _ = self.lstm(x)
        return self.out(hidden).squeeze(-1)
