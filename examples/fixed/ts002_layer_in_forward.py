"""TS002 layer-in-forward, fixed: the classifier is created once, in __init__.

``nn.LazyLinear`` infers its input size from the first batch, so nobody has to
work out the flattened feature size by hand, and the layer is built once, owned
by the model, and trained. The first call is made before the optimizer is
built, so the optimizer sees the materialised parameters.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class SmallCNN(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.LazyLinear(classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


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
    with torch.no_grad():
        model(torch.zeros(1, 1, 12, 12))  # materialise the lazy classifier before building the optimizer
    loss = train(model, make_loader(96, seed=1), epochs=2)
    print(f"final training loss {loss:.3f}")


if __name__ == "__main__":
    main()
