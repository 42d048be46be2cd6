"""TS013 module-init-broken: a model's ``__init__`` never calls ``super().__init__()``.

A small convolutional classifier on synthetic images. Its ``__init__`` assigns
layers without first initialising ``nn.Module``, so building the model fails with
"cannot assign module before Module.__init__() call", a message that does not say
which line to fix.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvNet(nn.Module):
    def __init__(self, classes: int = 4) -> None:  # expect: TS013
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def main() -> None:
    torch.manual_seed(0)
    images = torch.randn(32, 1, 8, 8)
    labels = torch.randint(0, 4, (32,))
    model = ConvNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(5):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
    print(f"loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
