"""TS011 loss-accumulated-with-graph: the epoch's loss is summed as tensors, graphs and all.

A small regression MLP with a validation pass and a learning-rate schedule. The
training loop sums ``loss * batch_size`` to report the epoch's mean loss, but
``loss`` is the tensor that was just backpropagated: every step's graph stays
reachable from ``epoch_loss`` until the epoch ends.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_loaders(samples: int = 192, features: int = 8) -> tuple:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, features, generator=generator)
    y = x @ torch.randn(features, 1, generator=generator) + 0.1 * torch.randn(samples, 1, generator=generator)
    train = TensorDataset(x[:160], y[:160])
    val = TensorDataset(x[160:], y[160:])
    return (DataLoader(train, batch_size=16, shuffle=True, generator=generator),
            DataLoader(val, batch_size=32))


def train(epochs: int = 2) -> float:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    criterion = nn.MSELoss()
    train_loader, val_loader = make_loaders()

    for epoch in range(epochs):
        model.train()
        epoch_loss, seen = 0.0, 0
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            epoch_loss += loss * x.size(0)  # expect: TS011
            seen += x.size(0)
        scheduler.step()

        model.eval()
        val_loss = 0.0
        with torch.no_grad():
            for x, y in val_loader:
                val_loss += criterion(model(x), y).item() * x.size(0)
        print(f"epoch {epoch}: train {float(epoch_loss) / seen:.4f}  val {val_loss / 32:.4f}")
    return float(epoch_loss) / seen


def main() -> None:
    train()


if __name__ == "__main__":
    main()
