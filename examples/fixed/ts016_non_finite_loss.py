"""TS016 non-finite-loss, fixed: inputs and targets standardised, gradients clipped.

With features and target scaled to unit variance, the same SGD settings
converge; clipping the gradient norm bounds any remaining overshoot.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_loader(samples: int = 256) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = 100 * torch.rand(samples, 6, generator=generator)
    y = x @ torch.tensor([[3.0], [1.5], [-2.0], [0.5], [4.0], [1.0]]) + 50
    x = (x - x.mean(dim=0)) / x.std(dim=0)
    y = (y - y.mean()) / y.std()
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=generator)


def train(epochs: int = 3) -> float:
    torch.manual_seed(0)
    model = nn.Linear(6, 1)  # a linear regression
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    criterion = nn.MSELoss()
    loader = make_loader()
    for epoch in range(epochs):
        total = 0.0
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
            optimizer.step()
            total += loss.item()
        print(f"epoch {epoch}: mean loss {total / len(loader):.4g}")
    return total / len(loader)


def main() -> None:
    train()


if __name__ == "__main__":
    main()
