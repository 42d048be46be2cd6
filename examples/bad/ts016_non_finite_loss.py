"""TS016 non-finite-loss: a learning rate too high for unnormalised data drives the loss to NaN.

A house-price style linear regression: features in the hundreds, a target in
the thousands, plain SGD with momentum. Every step overshoots further, the
weights grow without bound, and within a few steps the gradients are infinite,
then NaN; the loop keeps "training" on NaN weights.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_loader(samples: int = 256) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = 100 * torch.rand(samples, 6, generator=generator)
    y = x @ torch.tensor([[3.0], [1.5], [-2.0], [0.5], [4.0], [1.0]]) + 50
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
            optimizer.step()  # TS016 reported here: the gradients are no longer finite
            total += loss.item()
        print(f"epoch {epoch}: mean loss {total / len(loader):.4g}")
    return total / len(loader)


def main() -> None:
    train()


if __name__ == "__main__":
    main()
