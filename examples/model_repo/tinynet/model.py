"""The model: every layer is created once, in ``__init__``, so the optimizer sees all of them."""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, in_features: int = 8, hidden: int = 32, classes: int = 3, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))
