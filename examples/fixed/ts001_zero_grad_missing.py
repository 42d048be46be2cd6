"""TS001 zero-grad-missing, fixed: ``optimizer.zero_grad()`` runs once per optimizer step.

It sits at the start of the batch loop, so each ``step()`` applies only the
gradient of its own batch.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_loader(samples: int = 128, features: int = 10, classes: int = 3) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, features, generator=generator)
    y = (x[:, :classes] + 0.1 * torch.randn(samples, classes, generator=generator)).argmax(dim=1)
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=generator)


def train(epochs: int = 3) -> float:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    loss_fn = nn.CrossEntropyLoss()
    loader = make_loader()

    model.train()
    for epoch in range(epochs):
        total = 0.0
        for x, y in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), max_norm=5.0)
            optimizer.step()
            total += loss.item()
        scheduler.step()
        print(f"epoch {epoch}: mean loss {total / len(loader):.4f}")
    return total / len(loader)


def main() -> None:
    train()


if __name__ == "__main__":
    main()
