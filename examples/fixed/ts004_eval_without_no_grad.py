"""TS004 eval-without-no-grad, fixed: the validation pass runs under ``@torch.no_grad()``.

The same small CNN as in ``examples/bad``. ``validate()`` is decorated with
``@torch.no_grad()``: eval mode for dropout and batch-norm, and no autograd graph
for outputs that are never backpropagated.
"""

from __future__ import annotations

from typing import Tuple

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
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.25), nn.Linear(16, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def make_loader(samples: int, seed: int, shuffle: bool) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, 1, 12, 12, generator=generator)
    y = (x.mean(dim=(1, 2, 3)) * 8).clamp(-1.99, 1.99).add(2).long()
    return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=shuffle, generator=generator)


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    loss_fn: nn.Module) -> float:
    model.train()
    total = 0.0
    for images, labels in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
        total += loss.item()
    return total / len(loader)


@torch.no_grad()
def validate(model: nn.Module, loader: DataLoader, loss_fn: nn.Module) -> Tuple[float, float]:
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for images, labels in loader:
        logits = model(images)
        total_loss += loss_fn(logits, labels).item() * labels.size(0)
        correct += (logits.argmax(dim=1) == labels).sum().item()
        seen += labels.size(0)
    return total_loss / seen, correct / seen


def main() -> None:
    torch.manual_seed(0)
    model = SmallCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    train_loader = make_loader(96, seed=1, shuffle=True)
    val_loader = make_loader(48, seed=2, shuffle=False)
    for epoch in range(2):
        train_loss = train_one_epoch(model, train_loader, optimizer, loss_fn)
        val_loss, accuracy = validate(model, val_loader, loss_fn)
        print(f"epoch {epoch}: train loss {train_loss:.3f}, val loss {val_loss:.3f}, val acc {accuracy:.2f}")


if __name__ == "__main__":
    main()
