"""TS015 params-not-in-optimizer, fixed: the head is swapped before the optimizer is built.

The optimizer is built from the finished model, so it holds the new head's
parameters and trains them.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class FeatureNet(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
        self.fc = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def make_loader(samples: int = 128) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, 16, generator=generator)
    y = (x[:, :3] + 0.1 * torch.randn(samples, 3, generator=generator)).argmax(dim=1)
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=generator)


def finetune(epochs: int = 2) -> float:
    torch.manual_seed(0)
    model = FeatureNet()
    model.fc = nn.Linear(64, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    loader = make_loader()
    model.train()
    for epoch in range(epochs):
        total = 0.0
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            total += loss.item()
        print(f"epoch {epoch}: mean loss {total / len(loader):.4f}")
    return total / len(loader)


def main() -> None:
    finetune()


if __name__ == "__main__":
    main()
