"""TS007 train-mode-not-restored, fixed: ``model.train()`` at the start of every epoch.

``evaluate()`` still switches the model to eval mode; the training loop switches it back
before each epoch's first step.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class SmallCNN(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.25), nn.Linear(16, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def make_loaders(samples: int = 160, classes: int = 4):
    generator = torch.Generator().manual_seed(0)
    y = torch.randint(0, classes, (samples,), generator=generator)
    x = torch.randn(samples, 1, 12, 12, generator=generator) * 0.5
    x[torch.arange(samples), 0, y * 3, y * 3] += 3.0  # a class-dependent bright pixel
    train = TensorDataset(x[:128], y[:128])
    val = TensorDataset(x[128:], y[128:])
    return DataLoader(train, batch_size=32, shuffle=True, generator=generator), DataLoader(val, batch_size=32)


def evaluate(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(dim=1) == y).sum().item()
    return correct / len(loader.dataset)


def main() -> None:
    torch.manual_seed(0)
    model = SmallCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    train_loader, val_loader = make_loaders()
    for epoch in range(3):
        model.train()
        running = 0.0
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            running += loss.item()
        accuracy = evaluate(model, val_loader)
        print(f"epoch {epoch}: loss {running / len(train_loader):.3f}  val accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
