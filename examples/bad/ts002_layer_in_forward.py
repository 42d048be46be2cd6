"""TS002 layer-in-forward: the classifier layer is built inside forward().

A small CNN trained on synthetic images. Its author did not want to work out the
flattened feature size by hand, so ``forward()`` builds the classifier from the
shape it sees. Every call creates a new ``nn.Linear`` with fresh random weights:
the optimizer, built from ``model.parameters()`` before the first call, never
holds them, and whatever one step learned is thrown away by the next call. The
loss stays at chance level while the convolutions train for nothing.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class SmallCNN(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.classes = classes
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x).flatten(1)
        self.classifier = nn.Linear(features.shape[1], self.classes).to(x.device)  # expect: TS002
        return self.classifier(features)


def make_loader(samples: int, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, 1, 12, 12, generator=generator)
    y = (x.mean(dim=(1, 2, 3)) * 8).clamp(-1.99, 1.99).add(2).long()
    return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=generator)


def train(model: nn.Module, loader: DataLoader, epochs: int) -> float:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    last = 0.0
    for _ in range(epochs):
        model.train()
        total = 0.0
        for images, labels in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(images), labels)
            loss.backward()
            optimizer.step()
            total += loss.item()
        last = total / len(loader)
    return last


def main() -> None:
    torch.manual_seed(0)
    model = SmallCNN()
    loss = train(model, make_loader(96, seed=1), epochs=2)
    print(f"final training loss {loss:.3f}")


if __name__ == "__main__":
    main()
