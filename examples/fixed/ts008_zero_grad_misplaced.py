"""TS008 zero-grad-misplaced, fixed: ``zero_grad()`` comes first in ``train_step()``.

Each step clears the previous step's gradients, then runs forward, backward, clipping
and the optimizer step, which now sees this batch's gradients.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Regressor(nn.Module):
    def __init__(self, features: int = 6) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, 32), nn.Tanh(), nn.Linear(32, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class Trainer:
    def __init__(self, model: nn.Module, lr: float = 1e-2) -> None:
        self.model = model
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        self.loss_fn = nn.MSELoss()

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self.optimizer.zero_grad()
        loss = self.loss_fn(self.model(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=1.0)
        self.optimizer.step()
        return loss.item()

    def fit(self, loader: DataLoader, epochs: int) -> float:
        self.model.train()
        mean = 0.0
        for epoch in range(epochs):
            mean = sum(self.train_step(x, y) for x, y in loader) / len(loader)
            print(f"epoch {epoch}: mse {mean:.4f}")
        return mean


def make_loader(samples: int = 192, features: int = 6) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, features, generator=generator)
    y = x @ torch.linspace(-1.0, 1.0, features) + 0.1 * torch.randn(samples, generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=generator)


def main() -> None:
    torch.manual_seed(0)
    Trainer(Regressor()).fit(make_loader(), epochs=3)


if __name__ == "__main__":
    main()
